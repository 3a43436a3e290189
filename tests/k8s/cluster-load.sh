#!/usr/bin/env bash
# Put images onto the cluster's node the way `kind load docker-image` does: on the node,
# `ctr -n k8s.io images import --all-platforms --digests --snapshotter=overlayfs` of a
# `docker save` archive. Nothing is pulled from any registry.
#
#   sudo tests/k8s/cluster-load.sh <workdir> guessgame-node:0.1.0 ...   # from the docker engine
#   sudo tests/k8s/cluster-load.sh <workdir> /path/image.tar ...        # an archive (docker save)
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($# >= 2)) || die "usage: $0 <workdir> <image or docker-save tar>..."
W="$(cd "$1" && pwd)"
shift
[[ -f $W/cluster.env ]] || die "$W holds no cluster (run cluster-up.sh first)"
sock="$W/containerd/containerd.sock"
[[ -S $sock ]] || die "the node's containerd is not running ($sock)"
import=(ctr -a "$sock" -n k8s.io images import --all-platforms --digests --snapshotter=overlayfs)
for img in "$@"; do
  if [[ -f $img ]]; then
    "${import[@]}" "$img" >/dev/null || die "could not import $img"
  else
    command -v docker >/dev/null || die "$img is not a file and there is no docker to save it from"
    docker image inspect "$img" >/dev/null 2>&1 || die "image: \"$img\" not present locally"
    docker save "$img" | "${import[@]}" - >/dev/null || die "could not import $img"
  fi
  log "loaded $img onto the node"
done
