#!/usr/bin/env bash
# Installs the Debian packages the one-node cluster needs, when missing (needs root):
# containerd, runc, containernetworking-plugins (bridge, host-local, portmap, loopback in
# /usr/lib/cni), iptables and conntrack (kube-proxy, kubelet), busybox-static (the image the
# volume provisioner's helper pods run), gettext-base (envsubst), gcc (the pause binary).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

declare -A need=(
  [containerd]=/usr/bin/containerd [runc]=/usr/sbin/runc
  [containernetworking-plugins]=/usr/lib/cni/bridge [iptables]=/usr/sbin/iptables
  [conntrack]=/usr/sbin/conntrack [busybox-static]=/bin/busybox [gettext-base]=/usr/bin/envsubst
  [gcc]=/usr/bin/gcc [libc6-dev]=/usr/include/stdio.h [openssl]=/usr/bin/openssl [curl]=/usr/bin/curl
  [util-linux]=/usr/bin/nsenter [iproute2]=/usr/sbin/ip
)
missing=()
for pkg in "${!need[@]}"; do [[ -e ${need[$pkg]} ]] || missing+=("$pkg"); done
((${#missing[@]})) || exit 0
[[ $(id -u) == 0 ]] || die "missing packages (${missing[*]}); install them as root"
log "installing ${missing[*]} (apt-get)"
export DEBIAN_FRONTEND=noninteractive
logf="$(mktemp)"
{ apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$logf" 2>&1 ||
  { tail -n 20 "$logf" >&2; die "apt-get install ${missing[*]} failed"; }
rm -f "$logf"
# Debian's containerd package would start a system instance under systemd; none runs here, and
# the cluster uses its own instance (own root, state and socket) in any case.
