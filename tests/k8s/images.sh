#!/usr/bin/env bash
# Builds and runs the node and operator images offline (no container registry here):
#   1. installs docker.io + debootstrap (Debian packages) when missing, starts dockerd when
#      no daemon answers (and stops it again at the end);
#   2. makes a minimal Debian base image locally: debootstrap --variant=minbase <host suite>
#      from the Debian mirror in the host's apt sources, then `docker import` (cached: the
#      rootfs tarball in $GUESSGAME_IMAGES_CACHE and the image in docker's store);
#   3. builds the workspace binaries on the host (cargo; same glibc as the base) and the images
#      from node/Dockerfile and operator/Dockerfile with BINARIES=prebuilt and the base image
#      as RUNTIME_IMAGE (the Dockerfiles' multi-stage path needs a Rust image: online only);
#      with IMAGES_SAVE_DIR, saves both as tars there (for `ctr -n k8s.io images import`);
#   4. runs them: versions and help as the non-root users, a one-node ensemble in a container
#      (read-only root, no capabilities, a volume at /data) that `docker exec … guessgame`
#      plays against and `docker stop` stops (SIGTERM to PID 1), the node on a local-path-like
#      volume (root-owned, 0777) and on an unwritable one (a clear error), and the operator
#      failing cleanly without a cluster.
#
#   sudo tests/k8s/images.sh       # needs root (apt-get, dockerd)
#
# Env: GUESSGAME_IMAGES_CACHE (default ~/.cache/guessgame-images), IMAGES_PROFILE=release
# (default: debug binaries, stripped), IMAGES_TAG (default: the workspace version),
# IMAGES_KEEP_DOCKERD=1 (leave a dockerd this script started running), IMAGES_SAVE_DIR (also
# `docker save` each image to <dir>/<image>-<tag>.tar, for `ctr -n k8s.io images import`).
# Ends with "images: N passed, M failed"; exits non-zero on the first failure.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(cd "$K8S_HARNESS_DIR/../.." && pwd)"
cd "$ROOT"

t_start=$SECONDS
TEST_NAME=images
# shellcheck source=assert.sh source-path=SCRIPTDIR
source "$K8S_HARNESS_DIR/assert.sh" # pass, fail, check, expect
declare -A took=()
phase() { took[$1]=$((SECONDS - phase_t0)); phase_t0=$SECONDS; }

[[ $(id -u) == 0 ]] || die "run as root (apt-get, dockerd)"
CACHE="${GUESSGAME_IMAGES_CACHE:-$HOME/.cache/guessgame-images}"
mkdir -p "$CACHE"
VERSION="$(cargo metadata -q --format-version 1 --no-deps | jq -r '.packages[] | select(.name == "guessgame-node") | .version')"
TAG="${IMAGES_TAG:-$VERSION}"
SUITE="$(sed -n "s/^VERSION_CODENAME=//p" /etc/os-release)"
SUITE="${SUITE:-bookworm}"
BASE="guessgame-base:$SUITE-minbase"

# --- docker.io, debootstrap ------------------------------------------------------------------------
phase_t0=$SECONDS
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null || [[ ! -x /usr/bin/docker ]]; then
  log "installing docker.io and debootstrap (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends docker.io debootstrap >"$CACHE/apt-get.log" 2>&1 ||
    { tail -n 20 "$CACHE/apt-get.log" >&2; die "apt-get install docker.io debootstrap failed"; }
fi
# The docker.io client (it drives BuildKit itself; a newer CLI without the buildx plugin can
# only use the legacy builder, which cannot parse RUN --mount).
DOCKER=/usr/bin/docker
[[ -x $DOCKER ]] || DOCKER="$(command -v docker)"
phase install

# --- dockerd ------------------------------------------------------------------------------------------
DOCKERD_PID=""
WORK="$(mktemp -d "${TMPDIR:-/tmp}/guessgame-images.XXXXXX")"
CONTAINERS=() VOLUMES=()
cleanup() {
  local rc=$? c
  trap - EXIT INT TERM
  ((rc != 0 && FAILED == 0)) && log "FAIL: aborted (exit $rc)" && echo "images: $passed passed, 1 failed"
  for c in "${CONTAINERS[@]}"; do
    ((rc != 0)) && { log "--- logs of container $c"; "$DOCKER" logs --tail 30 "$c" >&2 2>&1 || true; }
    "$DOCKER" rm -f "$c" >/dev/null 2>&1 || true
  done
  for c in "${VOLUMES[@]}"; do "$DOCKER" volume rm -f "$c" >/dev/null 2>&1 || true; done
  if [[ -n $DOCKERD_PID && -z ${IMAGES_KEEP_DOCKERD:-} ]]; then
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    for ((i = 0; i < 150; i++)); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$DOCKERD_PID" 2>/dev/null || true
    log "stopped dockerd (pid $DOCKERD_PID)"
  fi
  rm -rf "$WORK"
  log "images.sh took $((SECONDS - t_start))s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if ! "$DOCKER" info >/dev/null 2>&1; then
  # No bridge and no iptables rules: the containers here need no network (--network none),
  # and the host's firewall stays untouched. overlay2 when the kernel allows it, else vfs.
  for driver in overlay2 vfs; do
    log "starting dockerd (storage driver $driver, log $CACHE/dockerd.log)"
    dockerd --storage-driver="$driver" --bridge=none --iptables=false --ip6tables=false \
      --ip-forward=false --ip-masq=false >"$CACHE/dockerd.log" 2>&1 </dev/null &
    DOCKERD_PID=$!
    for ((i = 0; i < 120; i++)); do
      "$DOCKER" info >/dev/null 2>&1 && break
      kill -0 "$DOCKERD_PID" 2>/dev/null || break
      sleep 0.5
    done
    "$DOCKER" info >/dev/null 2>&1 && break
    log "dockerd with $driver did not come up: $(tail -n 3 "$CACHE/dockerd.log" | tr '\n' ' ')"
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    wait "$DOCKERD_PID" 2>/dev/null || true
    DOCKERD_PID=""
  done
  [[ -n $DOCKERD_PID ]] || die "could not start dockerd, see $CACHE/dockerd.log"
fi
log "docker: client $("$DOCKER" version -f '{{.Client.Version}}' 2>/dev/null), server $("$DOCKER" version -f '{{.Server.Version}}'), storage $("$DOCKER" info -f '{{.Driver}}')"
phase dockerd

# --- the base image: debootstrap minbase + docker import -------------------------------------------------
# The Debian mirror the host's apt uses (deb822 .sources or one-line sources.list).
debian_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    awk -v suite="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }
      {
        uri = ""; ok = 0
        for (i = 1; i <= NF; i++) {
          if ($i ~ /^URIs:/) { split($i, a, /[ \t]+/); uri = a[2] }
          if ($i ~ /^Suites:/ && $i ~ ("[ \t]" suite "([ \t]|$)")) ok = 1
          if ($i ~ /^Enabled:[ \t]*no/) ok = 0
        }
        if (ok && uri != "") { print uri; exit }
      }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    awk -v suite="$SUITE" '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/) break;
      if ($(i + 1) == suite) { print $i; exit } }' "$f"
  done
}
ROOTFS_TAR="$CACHE/debian-$SUITE-minbase.tar"
if "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
  log "base image $BASE: cached"
else
  if [[ ! -s $ROOTFS_TAR ]]; then
    MIRROR="$(debian_mirror)" # no `| head`: SIGPIPE + pipefail
    MIRROR="${MIRROR%%$'\n'*}"
    [[ -n $MIRROR ]] || die "no Debian mirror for $SUITE in the apt sources"
    log "debootstrap --variant=minbase $SUITE from the host's Debian mirror"
    rootfs="$WORK/rootfs"
    debootstrap --variant=minbase --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
      "$SUITE" "$rootfs" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
      { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed, see $CACHE/debootstrap.log"; }
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/log/*.log \
      "$rootfs"/tmp/* "$rootfs"/debootstrap
    tar --numeric-owner -C "$rootfs" -cf "$ROOTFS_TAR.tmp" .
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    rm -rf "$rootfs"
  fi
  log "docker import $ROOTFS_TAR as $BASE"
  "$DOCKER" import -c 'CMD ["/bin/bash"]' -m "debootstrap --variant=minbase $SUITE" "$ROOTFS_TAR" "$BASE" >/dev/null
fi
check "base image $BASE runs (Debian $SUITE)" "$DOCKER" run --rm --network none "$BASE" grep -q "$SUITE" /etc/os-release
phase base

# --- binaries, images -----------------------------------------------------------------------------------
profile="${IMAGES_PROFILE:-debug}"
log "cargo build ($profile) guessgame-node, guessgame, guessgame-operator"
flags=()
[[ $profile == release ]] && flags=(--release)
cargo build -q "${flags[@]}" -p guessgame-node -p guessgame-client -p guessgame-operator --bins
target="$(cargo metadata -q --format-version 1 --no-deps | jq -r .target_directory)/$profile"
for ctx in node operator; do mkdir -p "$WORK/ctx-$ctx/bin"; done
# Stripped: debug info is most of a debug binary's size.
strip -o "$WORK/ctx-node/bin/guessgame-node" "$target/guessgame-node"
strip -o "$WORK/ctx-node/bin/guessgame" "$target/guessgame"
strip -o "$WORK/ctx-operator/bin/guessgame-operator" "$target/guessgame-operator"
phase cargo

build() { # <name> <dockerfile>
  local out
  if out="$(DOCKER_BUILDKIT=1 "$DOCKER" build -q -f "$2" --build-arg BINARIES=prebuilt \
    --build-arg RUNTIME_IMAGE="$BASE" -t "$1:$TAG" "$WORK/ctx-${2%%/*}" 2>&1)"; then
    pass "docker build -f $2 (BINARIES=prebuilt, RUNTIME_IMAGE=$BASE) -> $1:$TAG"
  else
    fail "docker build -f $2: $(tail -n 15 <<<"$out")"
  fi
}
build guessgame-node node/Dockerfile
build guessgame-operator operator/Dockerfile
log "sizes: $("$DOCKER" image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E "^(guessgame-node|guessgame-operator|guessgame-base):" | tr '\n' ' ')"
# For a cluster without a registry: `ctr -n k8s.io images import <tar>` on the node (what
# `kind load docker-image` does) makes them available to pods with pullPolicy IfNotPresent.
if [[ -n ${IMAGES_SAVE_DIR:-} ]]; then
  mkdir -p "$IMAGES_SAVE_DIR"
  for image in guessgame-node guessgame-operator; do
    tar="$IMAGES_SAVE_DIR/$image-$TAG.tar"
    check "docker save $image:$TAG -> $tar" "$DOCKER" save -o "$tar.tmp" "$image:$TAG"
    mv "$tar.tmp" "$tar"
    check "$tar names $image:$TAG" bash -c "tar -xOf '$tar' manifest.json | grep -q '\"$image:$TAG\"'"
  done
fi
phase build

# --- run them ---------------------------------------------------------------------------------------------
NODE="guessgame-node:$TAG" OPERATOR="guessgame-operator:$TAG"
run() { "$DOCKER" run --rm --network none "$@"; }
expect "node image: guessgame-node --version" "$(run "$NODE" --version)" "guessgame-node $VERSION"
check "node image: guessgame --help" bash -c "$DOCKER run --rm --network none --entrypoint guessgame $NODE --help | grep -q 'Client for a guessgame ensemble'"
expect "node image: user" "$(run --entrypoint id "$NODE" -u):$(run --entrypoint id "$NODE" -g)" 10001:10001
expect "node image: /data owner" "$(run --entrypoint stat "$NODE" -c %u:%g /data)" 10001:10001
expect "node image: GUESSGAME_DATA_DIR" "$(run --entrypoint printenv "$NODE" GUESSGAME_DATA_DIR)" /data

# A one-member ensemble as its StatefulSet pod would run it: pod-mode environment, read-only
# root filesystem, no capabilities, a volume at /data (a fresh volume takes /data's owner).
c="guessgame-images-node-$$" v="guessgame-images-data-$$"
VOLUMES+=("$v")
CONTAINERS+=("$c")
"$DOCKER" run -d --name "$c" --hostname demo-0 --network none --read-only --tmpfs /tmp \
  --cap-drop ALL --security-opt no-new-privileges -v "$v:/data" \
  -e GUESSGAME_REPLICAS=1 -e POD_NAME=demo-0 -e POD_NAMESPACE=games -e GUESSGAME_STATEFULSET=demo \
  -e GUESSGAME_SERVICE=demo-headless -e GUESSGAME_PEER_TEMPLATE='127.0.0.1:{port}' "$NODE" >/dev/null
pass "started a one-node ensemble in container $c (pod mode, read-only root, cap-drop ALL)"
served() { "$DOCKER" exec "$c" guessgame status 2>&1 | grep -qx "leader: demo-0"; }
start=$SECONDS
until served; do
  ((SECONDS - start < 60)) || fail "docker exec $c guessgame status: no leader within 60s: $("$DOCKER" logs --tail 10 "$c" 2>&1)"
  "$DOCKER" inspect -f '{{.State.Running}}' "$c" 2>/dev/null | grep -q true || fail "container $c exited: $("$DOCKER" logs --tail 20 "$c" 2>&1)"
  sleep 0.5
done
pass "docker exec guessgame status: demo-0 leads (after $((SECONDS - start))s)"
check "docker exec guessgame write 42" "$DOCKER" exec "$c" guessgame write 42
check "docker exec guessgame guess 40" "$DOCKER" exec -e GUESSGAME_CLIENT_ID=player1 "$c" guessgame guess 40
check "docker exec guessgame read: round 1, target 42, 1 guess" \
  bash -c "$DOCKER exec $c guessgame read | tee /dev/stderr | grep -q '^round 1: target 42, 1 guess(es)'"
check "the node's log is on the volume (SQLite at /data)" "$DOCKER" exec "$c" test -s /data/logs_demo-0.db
expect "the node runs as" "$("$DOCKER" exec "$c" id -u)" 10001
# The node is PID 1 in its container (no init): SIGTERM only stops it if it handles the
# signal itself; `docker stop` (like the kubelet) waits 10 s, then sends SIGKILL (exit 137).
expect "the node is PID 1 in its container" "$("$DOCKER" exec "$c" cat /proc/1/comm)" guessgame-node
t0=${EPOCHREALTIME/./}
"$DOCKER" stop -t 10 "$c" >/dev/null
stop_ms=$(((${EPOCHREALTIME/./} - t0) / 1000))
expect "docker stop (SIGTERM): the node's exit code" "$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$c")" 0
check "docker stop (SIGTERM): the node exited within 3 s (${stop_ms} ms)" test "$stop_ms" -lt 3000
check "the node logged the graceful stop" bash -c "$DOCKER logs $c 2>&1 | grep -q 'shutting down.*SIGTERM'"

pod_env=(-e GUESSGAME_REPLICAS=1 -e POD_NAME=demo-0 -e POD_NAMESPACE=games -e GUESSGAME_STATEFULSET=demo
  -e GUESSGAME_SERVICE=demo-headless -e GUESSGAME_PEER_TEMPLATE='127.0.0.1:{port}')
# A volume like local-path-provisioner's (a root-owned directory of mode 0777 on the host,
# fsGroup ignored): the node creates its log there.
pv="$WORK/local-path-pv"
mkdir -m 0777 "$pv"
c2="guessgame-images-node-pv-$$"
CONTAINERS+=("$c2")
"$DOCKER" run -d --name "$c2" --network none --read-only --tmpfs /tmp --cap-drop ALL \
  --security-opt no-new-privileges -v "$pv:/data" "${pod_env[@]}" "$NODE" >/dev/null
for ((i = 0; i < 100; i++)); do [[ -s $pv/logs_demo-0.db ]] && break; sleep 0.2; done
check "a root-owned 0777 volume (local-path): the node created its log there" test -s "$pv/logs_demo-0.db"
expect "the log's owner" "$(stat -c %u "$pv/logs_demo-0.db")" 10001
"$DOCKER" stop -t 10 "$c2" >/dev/null
expect "its exit code after docker stop" "$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$c2")" 0
# A volume the node may not write to (root-owned, 0755): a clear error, not a panic.
set +e
out="$(run --read-only --tmpfs /tmp --tmpfs /data:mode=0755 --cap-drop ALL "${pod_env[@]}" "$NODE" 2>&1)"
rc=$?
set -e
check "an unwritable /data: exit code 1, the directory, the errno, the uid (code $rc)" \
  bash -c "(($rc == 1)) && grep -q 'cannot create files in the data directory /data: Permission denied (os error 13); this process runs as uid 10001' <<<\"\$1\"" _ "$out"
check "an unwritable /data: no panic" bash -c "! grep -q panicked <<<\"\$1\"" _ "$out"

expect "operator image: --version" "$(run "$OPERATOR" --version)" "guessgame-operator $VERSION"
check "operator image: --help" bash -c "$DOCKER run --rm --network none $OPERATOR --help | grep -q -- --member-address"
expect "operator image: user" "$(run --entrypoint id "$OPERATOR" -u)" 65532
set +e
out="$(run -e GUESSGAME_OPERATOR_LOG_FORMAT=text "$OPERATOR" 2>&1)"
rc=$?
set -e
check "operator image without a cluster exits non-zero with a clear error (code $rc)" \
  bash -c "(($rc != 0)) && grep -q 'no Kubernetes configuration' <<<\"\$1\"" _ "$out"
phase run

log "times: install ${took[install]}s, dockerd ${took[dockerd]}s, base image ${took[base]}s, cargo ${took[cargo]}s, docker build ${took[build]}s, runs ${took[run]}s"
echo "images: $passed passed, 0 failed"
