# shellcheck shell=bash
# Sourced by the image scripts: buildah and podman with lbspeaker's containers.conf, and a clear error
# when they are missing. `make deps` installs them (Debian packages buildah, podman, runc).
HERE=${HERE:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
export CONTAINERS_CONF="$HERE/containers.conf"
for tool in buildah podman runc debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || { echo "$tool is not installed (apt-get install $tool, or make deps)" >&2; exit 1; }
done
[[ $(id -u) == 0 ]] || { echo "the image scripts run as root (debootstrap, containers-storage)" >&2; exit 1; }
