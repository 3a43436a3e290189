# shellcheck shell=bash
# Shared helpers for the offline real-control-plane harness (tests/k8s/*.sh).
# Sourced, not executed.

K8S_HARNESS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_MODULES_DIR="$K8S_HARNESS_DIR/modules"

log() { printf '[k8s-harness %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# The pinned versions are the ones required by the committed wrapper go.mod files
# (single source of truth); read them without invoking go so cached runs stay instant.
_mod_version() { # <go.mod> <module path>
  awk -v m="$2" '($1 == "require" && $2 == m) { print $3; exit } ($1 == m && $2 ~ /^v/) { print $2; exit }' "$1"
}
KUBERNETES_VERSION="$(_mod_version "$K8S_MODULES_DIR/kubernetes/go.mod" k8s.io/kubernetes)"
ETCD_VERSION="$(_mod_version "$K8S_MODULES_DIR/etcd/go.mod" go.etcd.io/etcd/server/v3)"
HELM_VERSION="$(_mod_version "$K8S_MODULES_DIR/helm/go.mod" helm.sh/helm/v3)"
COREDNS_VERSION="$(_mod_version "$K8S_MODULES_DIR/coredns/go.mod" github.com/coredns/coredns)"
LOCAL_PATH_VERSION="$(_mod_version "$K8S_MODULES_DIR/local-path-provisioner/go.mod" github.com/rancher/local-path-provisioner)"
CRI_TOOLS_VERSION="$(_mod_version "$K8S_MODULES_DIR/cri-tools/go.mod" sigs.k8s.io/cri-tools)"
[[ -n $KUBERNETES_VERSION && -n $ETCD_VERSION && -n $HELM_VERSION && -n $COREDNS_VERSION &&
  -n $LOCAL_PATH_VERSION && -n $CRI_TOOLS_VERSION ]] ||
  die "could not read pinned versions from $K8S_MODULES_DIR/*/go.mod"

K8S_CACHE_ROOT="${GUESSGAME_K8S_CACHE:-$HOME/.cache/guessgame-k8s}"
# Binaries: ${GUESSGAME_K8S_CACHE:-~/.cache/guessgame-k8s}/<kubernetes version>/bin,
# unless GUESSGAME_K8S_BIN points at a directory of prebuilt binaries.
# shellcheck disable=SC2034 # used by the scripts that source this file
K8S_BIN_DIR="${GUESSGAME_K8S_BIN:-$K8S_CACHE_ROOT/$KUBERNETES_VERSION/bin}"
# shellcheck disable=SC2034
KUBE_BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
# shellcheck disable=SC2034
K8S_BINARIES=("${KUBE_BINARIES[@]}" etcd helm)
# The one-node cluster's add-ons, built into the same bin dir by build-control-plane.sh (from
# modules/{coredns,local-path-provisioner,cri-tools} and Kubernetes' pause.c). Not needed by
# the API-server-only tests, so a GUESSGAME_K8S_BIN dir without them is only warned about.
# shellcheck disable=SC2034
ADDON_BINARIES=(coredns local-path-provisioner crictl pause)

# Pick a free TCP port on 127.0.0.1 that is not in the space-separated list $1.
# Chosen below the kernel's ephemeral range, so outgoing connections (which take their local
# port from that range) cannot grab it between the choice and the bind; a port with any
# socket on it, in any state, is skipped. Callers still retry on "address already in use".
free_port() {
  local exclude=" ${1:-} " port i lo=32768 hi=60999 base span
  read -r lo hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || true
  if ((lo > 12000)); then base=10000 span=$((lo - 10000)); else base=$((hi + 1)) span=$((65535 - hi)); fi
  for ((i = 0; i < 200; i++)); do
    port=$((base + (RANDOM * 32768 + RANDOM) % span))
    [[ $exclude == *" $port "* ]] && continue
    [[ -n "$(ss -Htan "sport = :$port" 2>/dev/null)" ]] && continue
    (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    echo "$port"
    return 0
  done
  die "no free loopback port found"
}

# The module proxy only: a `direct` fallback would try the module's own host (DNS lookups
# that cannot succeed here, and traffic we do not want from a test build).
go_proxy_offline_safe() {
  local p
  p="$(go env GOPROXY)"
  p="${p%,direct}" p="${p%|direct}"
  [[ -n $p && $p != direct && $p != off ]] || die "GOPROXY ($p) names no module proxy"
  export GOPROXY="$p"
}

# --- the one-node cluster (cluster-up.sh, cluster-down.sh, cluster-load.sh) ---------------------
# Images made here and imported into the node (addon-images.sh); `localhost/` on purpose: should
# anything ever try to pull one, it would ask loopback.
# shellcheck disable=SC2034
PAUSE_IMAGE=localhost/guessgame-k8s/pause:3.10
# shellcheck disable=SC2034
COREDNS_IMAGE=localhost/guessgame-k8s/coredns:$COREDNS_VERSION
# shellcheck disable=SC2034
LOCAL_PATH_IMAGE=localhost/guessgame-k8s/local-path-provisioner:$LOCAL_PATH_VERSION
# shellcheck disable=SC2034
BUSYBOX_IMAGE=localhost/guessgame-k8s/busybox:1.35
# Host-wide settings a kubelet, kube-proxy or containerd may change (most network settings are
# per namespace, these are not): saved by cluster-up.sh, restored and checked by cluster-down.sh.
# shellcheck disable=SC2034
HOST_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes fs.inotify.max_user_watches
  fs.inotify.max_user_instances net.netfilter.nf_conntrack_max net.ipv4.ip_forward
  net.bridge.bridge-nf-call-iptables net.ipv4.conf.all.route_localnet)
# Host paths they write outside the work directory (removed again if they did not exist before).
# shellcheck disable=SC2034
HOST_PATHS=(/var/lib/kubelet /var/log/containers /var/log/pods /var/lib/cni /run/containerd
  /etc/cni /opt/cni /var/lib/containerd /run/netns)

# --- processes the harness started ---------------------------------------------------------------
# names_dir <pid> <dir>: the process is alive and its command line names <dir> (so a recycled
# pid is never taken for ours; an exited process not yet reaped has an empty command line).
names_dir() {
  local cmd
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" || return 1
  [[ $cmd == *"$2"* ]]
}
# stop_recorded <pidfile> <name> <dir>: SIGTERM the recorded process if it is still ours,
# SIGKILL after 10 s; removes the pid file once it is gone. Fails if it could not be stopped.
stop_recorded() {
  local f=$1 name=$2 dir=$3 pid i
  [[ -f $f ]] || return 0
  pid="$(cat "$f")"
  if [[ $pid =~ ^[0-9]+$ ]] && names_dir "$pid" "$dir"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do names_dir "$pid" "$dir" || break; sleep 0.1; done
    if names_dir "$pid" "$dir"; then
      log "$name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do names_dir "$pid" "$dir" || break; sleep 0.1; done
    fi
    if names_dir "$pid" "$dir"; then
      log "could not stop $name (pid $pid)"
      return 1
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f"
}
