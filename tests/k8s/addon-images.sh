#!/usr/bin/env bash
# Write the cluster add-on images as `docker save`-format tars (no registry, no container engine),
# ready for `ctr -n k8s.io images import` on the node:
#
#   tests/k8s/addon-images.sh <outdir>      # prints <outdir> (absolute) alone on stdout
#
#   <outdir>/pause.tar                   $PAUSE_IMAGE       pause built from Kubernetes' pause.c
#   <outdir>/coredns.tar                 $COREDNS_IMAGE     CoreDNS (trimmed plugin set), uid 65532
#   <outdir>/local-path-provisioner.tar  $LOCAL_PATH_IMAGE  rancher's local-path-provisioner
#   <outdir>/busybox.tar                 $BUSYBOX_IMAGE     Debian's busybox-static (helper pods)
#
# (refs from lib.sh). The binaries come from build-control-plane.sh (cached: 0.1 s); busybox
# from the busybox-static Debian package (install-node-deps.sh installs it when missing). Each
# tar is rebuilt only when its inputs change (a key of mkimage.py, the image spec and the input files' sha256 in
# <outdir>/.<name>.key), so a cached run only hashes the inputs. Every new tar is checked with
# `mkimage.py --verify`. All binaries must be static: the images have no libc.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 1 && $1 != -* ]] || { sed -n '2,16p' "$0" >&2; exit 2; }
out=$1
mkdir -p "$out"
out="$(cd "$out" && pwd)"
exec 8>"$out/.addon-images.lock"
flock 8

bin_dir="$("$K8S_HARNESS_DIR/build-control-plane.sh")"
bin_dir="${bin_dir##*$'\n'}"
for b in "${ADDON_BINARIES[@]}"; do
  [[ -x $bin_dir/$b ]] || die "$bin_dir has no $b (build-control-plane.sh builds it)"
done

# busybox: Debian's statically linked build (busybox-static, installed when missing).
"$K8S_HARNESS_DIR/install-node-deps.sh"
busybox=/bin/busybox
[[ -x $busybox ]] || die "busybox-static installed but $busybox is missing"
bb_version="$("$busybox" 2>&1 | sed -n '1s/^BusyBox v\([0-9][0-9.]*\).*/\1/p' || true)"
[[ -n $bb_version && ${BUSYBOX_IMAGE##*:} == "${bb_version%.*}"* ]] ||
  log "warning: $busybox is BusyBox v${bb_version:-?}, the image is tagged ${BUSYBOX_IMAGE##*:}"

gen="$(mktemp -d)"
trap 'rm -rf "$gen"' EXIT
# Minimal account files (numeric users run without them; `id`, `ls -l` and friends like them).
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' \
  >"$gen/passwd-busybox"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$gen/group-busybox"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$gen/passwd-nonroot"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' >"$gen/group-nonroot"
bb_links=()
while read -r applet; do
  [[ -n $applet && $applet != busybox ]] && bb_links+=("--link=bin/$applet:busybox")
done < <("$busybox" --list)
((${#bb_links[@]} > 100)) || die "$busybox --list gave only ${#bb_links[@]} applets"

mkimage="$K8S_HARNESS_DIR/mkimage.py"
built=0 cached=0
# image <name> <ref> <mkimage args...>: --file sources are hashed into the key.
image() {
  local name=$1 ref=$2 key a src
  shift 2
  key="$({
    sha256sum "$mkimage" | cut -d' ' -f1
    printf '%s\n' "$ref" "${@//"$gen"/@gen}" # (the temp dir's name changes every run)
    for a in "$@"; do
      if [[ $a == --file=* ]]; then
        src=${a#--file=} src=${src%%:*}
        sha256sum "$src" | cut -d' ' -f1
      fi
    done
  } | sha256sum | cut -d' ' -f1)"
  if [[ -f $out/$name.tar && "$(cat "$out/.$name.key" 2>/dev/null)" == "$key" ]]; then
    cached=$((cached + 1))
  else
    rm -f "$out/.$name.key"
    python3 "$mkimage" "$out/$name.tar" "$ref" --static "$@" >&2
    python3 "$mkimage" --verify "$out/$name.tar" "$ref" >&2
    echo "$key" >"$out/.$name.key"
    built=$((built + 1))
  fi
}

# As build/pause/Dockerfile: /pause, user 65535:65535.
image pause "$PAUSE_IMAGE" --file="$bin_dir/pause:/pause" --user=65535:65535 --entrypoint='["/pause"]'
# As coredns' Dockerfile: /coredns with cap_net_bind_service=+ep (so the non-root server can
# bind port 53), user nonroot (65532) as in the distroless static:nonroot base image.
image coredns "$COREDNS_IMAGE" --file="$bin_dir/coredns:/coredns" --cap=/coredns:cap_net_bind_service \
  --user=65532:65532 --entrypoint='["/coredns"]' --expose=53/tcp --expose=53/udp \
  --file="$gen/passwd-nonroot:/etc/passwd:0644" --file="$gen/group-nonroot:/etc/group:0644" \
  --dir=tmp:1777
# As rancher's package/Dockerfile: /usr/bin/local-path-provisioner, CMD local-path-provisioner
# (root: upstream's image runs as root too; the helper pods do the host-side work).
image local-path-provisioner "$LOCAL_PATH_IMAGE" \
  --file="$bin_dir/local-path-provisioner:/usr/bin/local-path-provisioner" \
  --cmd='["local-path-provisioner"]' --dir=tmp:1777 \
  --file="$gen/passwd-busybox:/etc/passwd:0644" --file="$gen/group-busybox:/etc/group:0644"
# busybox: /bin/busybox, one symlink per applet, the usual empty mount points.
image busybox "$BUSYBOX_IMAGE" --file="$busybox:/bin/busybox:0755" "${bb_links[@]}" --cmd='["sh"]' \
  --dir=tmp:1777 --dir=etc --dir=proc --dir=sys --dir=dev --dir=root:0700 --dir=var \
  --file="$gen/passwd-busybox:/etc/passwd:0644" --file="$gen/group-busybox:/etc/group:0644"

log "add-on images in $out: $built built, $cached cached"
echo "$out"
