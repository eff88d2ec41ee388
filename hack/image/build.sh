#!/usr/bin/env bash
# Build the lbspeaker image without a docker daemon (buildah, the Dockerfile as users build it) on the
# Debian bases of hack/image/base.sh, and write it as a docker archive (docker save's format), which
# `kind load image-archive`, `k3s ctr images import`, `ctr images import` and `docker load` all take.
#
#   hack/image/build.sh [ARCHIVE]   # default build/lbspeaker-image.tar; `make image` runs this
#
# Environment: IMAGE, the name:tag inside the archive (default lbspeaker:dev, which containerd stores
# as docker.io/library/lbspeaker:dev, the name deploy/'s `image: lbspeaker:dev` resolves to);
# BASE and BUILD_BASE to build on other bases (default: hack/image/base.sh's); IIDFILE, a file to
# write the image id to; LOCAL_TAG, the image's name in containers-storage (default localhost/IMAGE). Intermediate layers are cached in containers-storage, so an unchanged
# pyproject.toml reuses the installed dependencies (untagged images are pruned after a day). Prints
# the image's unpacked size.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ARCHIVE=${1:-$ROOT/build/lbspeaker-image.tar}
IMAGE=${IMAGE:-lbspeaker:dev}
[[ $IMAGE == *:* && $IMAGE != *@* ]] || { echo "build: IMAGE must be NAME:TAG, got $IMAGE" >&2; exit 2; }
# shellcheck source=hack/image/engine.sh
. "$HERE/engine.sh"

log() { printf '%s image: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

t0=$SECONDS
if [[ -z ${BASE:-} ]]; then
  read -r BASE BUILD_BASE < <("$HERE/base.sh")
fi
BUILD_BASE=${BUILD_BASE:-$BASE}
log "bases ready in $((SECONDS - t0)) s: $BASE, $BUILD_BASE"

t1=$SECONDS
mkdir -p "$(dirname "$ARCHIVE")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
iid="$tmp/iid"
# pip in the build trusts this machine's CA bundle (so a TLS-intercepting proxy's CA too); the bundle
# and the pip.conf naming it are mounted for the RUN steps only and never land in a layer.
mounts=()
if [[ -s /etc/ssl/certs/ca-certificates.crt ]]; then
  printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$tmp/pip.conf"
  mounts=(--volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro
          --volume "$tmp/pip.conf:/etc/pip.conf:ro")
fi
log "building $IMAGE from $ROOT/Dockerfile"
buildah build --quiet --layers --force-rm --pull=never --network host \
  --build-arg "BASE=$BASE" --build-arg "BUILD_BASE=$BUILD_BASE" \
  "${mounts[@]}" --iidfile "$iid" -f "$ROOT/Dockerfile" "$ROOT" >&2
id=$(cat "$iid")
[[ -z ${IIDFILE:-} ]] || cp "$iid" "$IIDFILE"
log "built in $((SECONDS - t1)) s: ${id#sha256:}"

t2=$SECONDS
rm -f "$ARCHIVE"
buildah push --quiet "$id" "docker-archive:$ARCHIVE:$IMAGE" >&2
log "wrote $ARCHIVE ($(du -m "$ARCHIVE" | cut -f1) MB) in $((SECONDS - t2)) s"

# The result keeps a tag in containers-storage (LOCAL_TAG, default localhost/IMAGE; `podman run` it),
# so that the prune below cannot take it. Builds leave untagged images behind (earlier results,
# cached steps): those a day old go, so the store stays bounded while today's cache is kept.
podman tag "$id" "${LOCAL_TAG:-localhost/$IMAGE}"
podman image prune --force --filter until=24h >/dev/null 2>&1 || true

size=$(podman image inspect --format '{{.Size}}' "$id")
base_size=$(podman image inspect --format '{{.Size}}' "$BASE")
printf 'image %s: %d MB unpacked (base %d MB, lbspeaker and its dependencies %d MB)\n' "$IMAGE" \
  $((size / 1000000)) $((base_size / 1000000)) $(((size - base_size) / 1000000))
