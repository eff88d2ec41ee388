#!/usr/bin/env bash
# The Dockerfile's two bases, made from Debian's packages by debootstrap: no image is pulled.
#
#   localhost/lbspeaker-base:SUITE-KEY        BASE: minbase + python3, Debian's security and point
#                                             updates applied, then trimmed (no apt lists, caches,
#                                             logs, man pages, translations, docs but the copyrights)
#   localhost/lbspeaker-base:SUITE-KEY-build  BUILD_BASE: the same before the trim, plus python3-venv
#                                             (ensurepip, so that the build stage can make a venv)
#
# KEY is a hash of this script: while it is unchanged the two images in containers-storage are reused
# (a fresh machine pays 2-3 min of debootstrap and updates once; later runs nothing). Prints
# "BASE BUILD_BASE".
# The Debian mirror is the one this machine's apt uses (apt-get indextargets); MIRROR overrides it.
#
#   hack/image/base.sh            # SUITE=bookworm (Python 3.11, the version the project is tested on)
#   REFRESH=1 hack/image/base.sh  # rebuild even if the images exist (to take newer security updates)
set -euo pipefail

SUITE=${SUITE:-bookworm}
CACHE=${LBSPEAKER_IMAGE_CACHE:-/var/cache/lbspeaker-image}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/image/engine.sh
. "$HERE/engine.sh"

KEY=$(sha256sum <"${BASH_SOURCE[0]}" | cut -c1-12)
RUNTIME="localhost/lbspeaker-base:${SUITE}-${KEY}"
BUILD="${RUNTIME}-build"

log() { printf '%s base: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
have() { podman image exists "$1"; }

mkdir -p "$CACHE/debs"
exec 9>"$CACHE/base.lock"
flock 9  # another build on this machine may be making the same base

if [[ ${REFRESH:-0} != 1 ]] && have "$RUNTIME" && have "$BUILD"; then
  echo "$RUNTIME $BUILD"
  exit 0
fi

# The machine's own Debian sources for SUITE, SUITE-updates and SUITE-security.
# shellcheck disable=SC2016  # apt's own $(FIELD) placeholders
sources=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' 2>/dev/null \
  | awk -v s="$SUITE" '$3 == "main" && ($2 == s || $2 == s "-updates" || $2 == s "-security") {print $1, $2}' \
  | sort -u || true)
MIRROR=${MIRROR:-$(awk -v s="$SUITE" '$2 == s {print $1; exit}' <<<"$sources")}
[[ -n $MIRROR ]] || { echo "base: no Debian mirror for $SUITE in apt's sources; set MIRROR" >&2; exit 1; }
[[ -n $sources ]] || sources="$MIRROR $SUITE"

WORK=$(mktemp -d "$CACHE/work.XXXXXX")
cleanup() {
  for m in "$WORK"/*/proc; do mountpoint -q "$m" 2>/dev/null && umount "$m"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
ROOT="$WORK/build"

log "debootstrap $SUITE (minbase, python3, python3-venv) from $MIRROR"
t0=$SECONDS
debootstrap --variant=minbase --include=python3,python3-venv --cache-dir="$CACHE/debs" \
  "$SUITE" "$ROOT" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 30 "$WORK/debootstrap.log" >&2; exit 1; }

log "applying $SUITE's updates"
awk '{printf "deb %s %s main\n", $1, $2}' <<<"$sources" >"$ROOT/etc/apt/sources.list"
mount -t proc proc "$ROOT/proc"
chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get -qq update && apt-get -qq -y --no-install-recommends dist-upgrade && apt-get -qq clean' \
  >"$WORK/upgrade.log" 2>&1 || { tail -n 30 "$WORK/upgrade.log" >&2; exit 1; }
umount "$ROOT/proc"
rm -f "$ROOT/etc/resolv.conf" "$ROOT/etc/hostname"
log "debootstrap and updates: $((SECONDS - t0)) s"

import() {  # import DIR NAME
  tar -C "$1" --numeric-owner --xattrs -cf - . \
    | podman import --quiet \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' - "$2" >/dev/null
}
import "$ROOT" "$BUILD"

# The runtime base: no pip wheels, no package lists or caches, no documentation but the copyrights.
RUN="$WORK/runtime"
cp -a "$ROOT" "$RUN"
# shellcheck disable=SC2016  # dpkg-query's own ${Field} placeholder
venv_pkgs=$(chroot "$RUN" dpkg-query -W -f '${Package}\n' 'python3*-venv' 'python3-pip-whl' 'python3-setuptools-whl')
# shellcheck disable=SC2086
chroot "$RUN" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg --purge $venv_pkgs >/dev/null
rm -rf "$RUN"/var/lib/apt/lists/* "$RUN"/var/cache/apt/* "$RUN"/var/cache/debconf/*-old "$RUN"/var/log/* \
  "$RUN"/usr/share/man "$RUN"/usr/share/info "$RUN"/usr/share/locale "$RUN"/usr/share/lintian \
  "$RUN"/usr/share/bash-completion "$RUN"/var/lib/dpkg/*-old
find "$RUN/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
find "$RUN/usr/share/doc" -mindepth 1 -type d -empty -delete
import "$RUN" "$RUNTIME"
# Bases of other versions of this script, a day old (a checkout still using one has had its build):
podman images --format '{{.Repository}}:{{.Tag}}' --filter reference=localhost/lbspeaker-base --filter until=24h \
  | grep -v -e "^$RUNTIME\$" -e "^$BUILD\$" | xargs -r podman rmi >/dev/null 2>&1 || true
log "bases: $RUNTIME ($(podman image inspect --format '{{.Size}}' "$RUNTIME") bytes), $BUILD"
echo "$RUNTIME $BUILD"
