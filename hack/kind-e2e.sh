#!/usr/bin/env bash
# End-to-end on kind: build the image, install lbspeaker with `kubectl apply -k deploy/`, give a
# LoadBalancer Service an address from the kind network, reach it from this host, kill the speaker
# that announces it and reach it again.
#
#   hack/kind-e2e.sh             # creates the cluster "lbspeaker-e2e", deletes it at the end
#   KEEP=1 hack/kind-e2e.sh      # leaves the cluster running (kubectl --context kind-lbspeaker-e2e)
# A cluster of that name that already exists is reused and never deleted.
#
# Environment: CLUSTER (cluster name), KEEP=1, IMAGE (default lbspeaker:dev), NGINX_IMAGE,
# TIMEOUT (seconds for each wait, default 180), ARCHIVE (the image archive, default
# build/lbspeaker-image.tar, as `make image` writes it), BUILDER: how the archive is made, with this
# docker engine (docker, the default: docker build + docker save), with buildah (buildah: what
# `make image` runs, as root) or not at all (none: load an existing ARCHIVE).
#
# Needs Linux: the host must be on the kind docker network's bridge for ARP to reach the nodes
# (Docker Desktop on macOS/Windows runs the bridge inside a VM, where this host cannot curl it).
set -euo pipefail

CLUSTER=${CLUSTER:-lbspeaker-e2e}
KEEP=${KEEP:-0}
IMAGE=${IMAGE:-lbspeaker:dev}
BUILDER=${BUILDER:-docker}
NGINX_IMAGE=${NGINX_IMAGE:-nginx:1.27-alpine}
TIMEOUT=${TIMEOUT:-180}
NS=lbspeaker-system
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ARCHIVE=${ARCHIVE:-$ROOT/build/lbspeaker-image.tar}
CONTEXT="kind-${CLUSTER}"
CREATED=0

die() { echo "kind-e2e: $*" >&2; exit 1; }
log() { printf '%s kind-e2e: %s\n' "$(date +%H:%M:%S)" "$*"; }
k() { kubectl --context "$CONTEXT" "$@"; }
now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 is not installed; $2"
}
need docker "see https://docs.docker.com/engine/install/"
need kind "install it with: go install sigs.k8s.io/kind@latest (or see https://kind.sigs.k8s.io/)"
need kubectl "see https://kubernetes.io/docs/tasks/tools/"
need curl "apt-get install curl"
need python3 "apt-get install python3 (used to compute the pool range)"
case $BUILDER in
  docker | none) ;;
  buildah) need buildah "apt-get install buildah podman runc debootstrap (or make deps)" ;;
  *) die "BUILDER must be docker, buildah or none, got $BUILDER" ;;
esac
if [[ $BUILDER == none && ! -s $ARCHIVE ]]; then
  die "BUILDER=none, but there is no image archive at $ARCHIVE (make image writes it)"
fi
[[ -n ${EPOCHREALTIME:-} ]] || die "needs bash 5 or later"
docker info >/dev/null 2>&1 || die "the docker engine is not reachable (is dockerd running, may you use it?)"
WORK=$(mktemp -d)

cleanup() {
  local code=$?
  if [[ $code -ne 0 ]] && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    log "failed; lbspeaker's state for the record:"
    k -n "$NS" get pods -o wide || true
    k -n "$NS" logs deploy/controller --tail=50 || true
    k get events -A --field-selector involvedObject.kind=Service || true
  fi
  rm -rf "$WORK"
  if [[ $KEEP == 1 || $CREATED == 0 ]]; then
    log "cluster $CLUSTER left running (kubectl --context $CONTEXT)"
  else
    log "deleting cluster $CLUSTER (KEEP=1 keeps it)"
    kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
  fi
  exit "$code"
}
trap cleanup EXIT

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND every 0.2 s until it succeeds.
wait_for() {
  local seconds=$1 what=$2 deadline
  shift 2
  deadline=$(( $(now_ms) + seconds * 1000 ))
  until "$@" >/dev/null 2>&1; do
    (( $(now_ms) < deadline )) || die "timed out after ${seconds}s waiting for $what"
    sleep 0.2
  done
}

declare -A TIMING=()
T0=$(now_ms)

# -- cluster -----------------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  log "using the existing cluster $CLUSTER"
else
  log "creating kind cluster $CLUSTER (1 control plane, 2 workers)"
  cat >"$WORK/kind.yaml" <<'EOF'
kind: Cluster
apiVersion: kind.x-k8s.io/v1alpha4
nodes:
- role: control-plane
- role: worker
- role: worker
EOF
  CREATED=1
  kind create cluster --name "$CLUSTER" --config "$WORK/kind.yaml" --wait 120s
fi
TIMING[cluster]=$(( $(now_ms) - T0 ))

# -- image and install -------------------------------------------------------------------------------
# The archive `make image` writes and the README loads: ARCHIVE (build/lbspeaker-image.tar), put on
# every node with `kind load image-archive`.
t=$(now_ms)
case $BUILDER in
  docker)
    log "building $IMAGE into $ARCHIVE (docker build, docker save)"
    docker build -t "$IMAGE" "$ROOT"
    mkdir -p "$(dirname "$ARCHIVE")"
    docker save "$IMAGE" -o "$ARCHIVE"
    ;;
  buildah)
    log "building $IMAGE into $ARCHIVE (hack/image/build.sh, as make image does)"
    IMAGE=$IMAGE "$ROOT/hack/image/build.sh" "$ARCHIVE"
    ;;
  none)
    log "loading $ARCHIVE as it is"
    ;;
esac
kind load image-archive "$ARCHIVE" --name "$CLUSTER"
TIMING[image]=$(( $(now_ms) - t ))

t=$(now_ms)
log "installing lbspeaker (kubectl apply -k deploy/)"
if [[ $IMAGE != lbspeaker:dev ]]; then
  # Apply a copy of deploy/ with the image swapped, leaving the repository untouched.
  [[ $IMAGE == *:* ]] || die "IMAGE must be NAME:TAG, got $IMAGE"
  cp -r "$ROOT/deploy" "$WORK/deploy"
  sed -i -e "s|^\(  newName:\).*|\1 ${IMAGE%:*}|" -e "s|^\(  newTag:\).*|\1 ${IMAGE##*:}|" \
    "$WORK/deploy/kustomization.yaml"
  k apply -k "$WORK/deploy"
else
  k apply -k "$ROOT/deploy"
fi
# The heartbeat key: random per cluster, never in a manifest.
if ! k -n "$NS" get secret lbspeaker-memberlist >/dev/null 2>&1; then
  k -n "$NS" create secret generic lbspeaker-memberlist \
    --from-literal=secretkey="$(head -c 32 /dev/urandom | base64)"
fi

# A layer2 pool at the top of the kind network's IPv4 subnet, far from the nodes (docker hands out
# addresses from the bottom).
subnets=$(docker network inspect kind -f '{{range .IPAM.Config}}{{.Subnet}} {{end}}')
range=$(python3 - "$subnets" <<'EOF'
import ipaddress
import sys

nets = [ipaddress.ip_network(s) for s in sys.argv[1].split()]
v4 = [n for n in nets if n.version == 4 and n.num_addresses >= 64]
if not v4:
    sys.exit("the kind network has no IPv4 subnet of /26 or larger")
top = v4[0].broadcast_address
print(f"{top - 20}-{top - 5}")
EOF
) || die "could not compute a pool from the kind network's subnets: $subnets"
log "pool: $range (kind network: $subnets)"
cat >"$WORK/pool.yaml" <<EOF
apiVersion: v1
kind: ConfigMap
metadata:
  name: config
  namespace: $NS
data:
  config: |
    address-pools:
    - name: kind
      protocol: layer2
      addresses:
      - $range
EOF
k apply -f "$WORK/pool.yaml"
k -n "$NS" rollout status deploy/controller --timeout="${TIMEOUT}s"
k -n "$NS" rollout status ds/speaker --timeout="${TIMEOUT}s"
TIMING[install]=$(( $(now_ms) - t ))

# -- a LoadBalancer Service --------------------------------------------------------------------------
log "deploying nginx with a LoadBalancer Service"
k create deployment nginx --image="$NGINX_IMAGE" --replicas=2 --dry-run=client -o yaml | k apply -f -
k rollout status deploy/nginx --timeout="${TIMEOUT}s"
t=$(now_ms)
k expose deployment nginx --type=LoadBalancer --port=80 --dry-run=client -o yaml | k apply -f -
external_ip() { k get svc nginx -o jsonpath='{.status.loadBalancer.ingress[0].ip}'; }
has_ip() { [[ -n $(external_ip) ]]; }
wait_for "$TIMEOUT" "the Service's EXTERNAL-IP" has_ip
IP=$(external_ip)
TIMING[assign]=$(( $(now_ms) - t ))
log "EXTERNAL-IP $IP"

reach() { curl -fsS --max-time 1 -o /dev/null "http://$IP/"; }
t=$(now_ms)
wait_for "$TIMEOUT" "http://$IP/ from this host" reach
TIMING[first-curl]=$(( $(now_ms) - t ))
log "http://$IP/ answers"

# The announcing node, from the speaker's latest nodeAssigned Event on the Service:
#   announcing from node 'kind-worker', layer2, interface eth0
announcer() {
  k get events --field-selector involvedObject.kind=Service,involvedObject.name=nginx,reason=nodeAssigned \
    --sort-by=.lastTimestamp -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' \
    | sed -n "s/^announcing from node '\([^']*\)'.*/\1/p" | tail -n 1
}
has_announcer() { [[ -n $(announcer) ]]; }
wait_for 30 "a nodeAssigned Event on the Service" has_announcer
OWNER=$(announcer)
POD=$(k -n "$NS" get pods -l app.kubernetes.io/component=speaker --field-selector "spec.nodeName=$OWNER" \
  -o jsonpath='{.items[0].metadata.name}')
[[ -n $POD ]] || die "no speaker pod on node $OWNER"
log "$IP is announced by node $OWNER (pod $POD)"

# -- failover ----------------------------------------------------------------------------------------
log "deleting $POD"
t=$(now_ms)
k -n "$NS" delete pod "$POD" --wait=false
# Any takeover by another node counts: the restarted speaker may win the IP back afterwards.
announcers() {
  k get events --field-selector involvedObject.kind=Service,involvedObject.name=nginx,reason=nodeAssigned \
    -o jsonpath='{range .items[*]}{.message}{"\n"}{end}' | sed -n "s/^announcing from node '\([^']*\)'.*/\1/p"
}
moved() { local a; a=$(announcers); grep -vqx "$OWNER" <<<"$a"; }
# A graceful speaker hands the IP over before it exits; curl until the new owner answers.
sleep 0.5
wait_for "$TIMEOUT" "http://$IP/ after deleting $POD" reach
TIMING[failover-curl]=$(( $(now_ms) - t ))
wait_for 30 "a nodeAssigned Event from a node other than $OWNER" moved
log "$IP was taken over by node $(announcers | grep -vx "$OWNER" | tail -n 1)"
k -n "$NS" rollout status ds/speaker --timeout="${TIMEOUT}s"

echo
echo "kind-e2e: PASS"
printf '  %-16s %8s ms\n' cluster "${TIMING[cluster]}" image "${TIMING[image]}" install "${TIMING[install]}" \
  assign "${TIMING[assign]}" first-curl "${TIMING[first-curl]}" failover-curl "${TIMING[failover-curl]}"
