#!/usr/bin/env bash
# A real one-node Kubernetes cluster on this machine, offline — what `kind create cluster`
# gives on a laptop, without the node container:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#   (all built from Go modules, see build-control-plane.sh), containerd + runc + CNI
#   bridge/host-local/portmap (Debian), CoreDNS (cluster DNS at 10.96.0.10) and
#   local-path-provisioner (default StorageClass `standard`, as kind ships) running as pods
#   from images made here (addon-images.sh), the pause image built from source.
#
#   sudo tests/k8s/cluster-up.sh <workdir>              # ~20 s once built; prints `export` lines
#   eval "$(sudo tests/k8s/cluster-up.sh /tmp/gg-k8s)"  # KUBECONFIG, PATH, GUESSGAME_K8S_CLUSTER
#   tests/k8s/cluster-load.sh /tmp/gg-k8s guessgame-node:0.1.0 x.tar   # = kind load docker-image
#   sudo tests/k8s/cluster-down.sh /tmp/gg-k8s          # stops and removes all of it
#
# Everything runs inside one network namespace that this script creates (`gg-<name>`): the
# node's address is 10.200.0.2 on a veth whose other end (10.200.0.1) is in the root namespace,
# which has routes for the pod (10.244.0.0/16) and Service (10.96.0.0/16) ranges through it —
# and `unreachable` routes behind those, so nothing sent to those ranges can ever take the
# default route. The namespace has no default route: nothing in the cluster can reach any
# address outside it. Every pid started is recorded (<workdir>/pids, <workdir>/cp/pids); every
# host setting the kubelet changes is saved first (<workdir>/baseline) and restored by
# cluster-down.sh, which also checks that no process, mount, cgroup, namespace or link is left.
#
# Env: GUESSGAME_K8S_CLUSTER_NAME (default guessgame: node guessgame-control-plane, netns
# gg-guessgame), GUESSGAME_K8S_NODE_NET (default 10.200.0), GUESSGAME_K8S_POD_NET (default
# 10.244.0); plus build-control-plane.sh's variables. Needs root, cgroups, overlayfs, iptables.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 1 ]] || die "usage: $0 <workdir>"
[[ $(id -u) == 0 ]] || die "run as root (network namespace, containerd, kubelet)"
mkdir -p "$1"
W="$(cd "$1" && pwd)"
[[ ! -e $W/cluster.env ]] || die "$W already holds a cluster; stop it first: $K8S_HARNESS_DIR/cluster-down.sh $W"
t0=$SECONDS
phase() { log "+$((SECONDS - t0))s $*"; }

"$K8S_HARNESS_DIR/install-node-deps.sh"
"$K8S_HARNESS_DIR/build-control-plane.sh" >/dev/null
BIN="$K8S_BIN_DIR"
IMAGES="$("$K8S_HARNESS_DIR/addon-images.sh" "$K8S_CACHE_ROOT/images")"
IMAGES="${IMAGES##*$'\n'}"
phase "binaries and add-on images ready"

# --- the cluster's shape: one place, saved for cluster-down.sh and cluster-load.sh -------------
NAME="${GUESSGAME_K8S_CLUSTER_NAME:-guessgame}"
[[ $NAME =~ ^[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?$ ]] ||
  die "GUESSGAME_K8S_CLUSTER_NAME=$NAME: 1-12 characters, a-z 0-9 - (it names a network link)"
NODE_NET="${GUESSGAME_K8S_NODE_NET:-10.200.0}"
POD_NET="${GUESSGAME_K8S_POD_NET:-10.244.0}"
cat >"$W/cluster.env" <<EOF
NAME=$NAME
NETNS=gg-$NAME
VETH=gg-$NAME
BRIDGE=cni0
NODE_NAME=$NAME-control-plane
HOST_IP=$NODE_NET.1
NODE_IP=$NODE_NET.2
NODE_SUBNET=$NODE_NET.0/24
POD_CIDR=$POD_NET.0/24
CLUSTER_CIDR=${POD_NET%.*}.0.0/16
SERVICE_CIDR=10.96.0.0/16
DNS_IP=10.96.0.10
CGROUP_ROOT=/gg-$NAME
EOF
# shellcheck source=/dev/null
source "$W/cluster.env"
[[ ! -e /run/netns/$NETNS ]] || die "network namespace $NETNS exists already (another cluster named $NAME?)"
! ip link show "$VETH" >/dev/null 2>&1 || die "link $VETH exists already (another cluster named $NAME?)"
for net in "$NODE_SUBNET" "$CLUSTER_CIDR" "$SERVICE_CIDR"; do
  ! ip -4 route show to match "${net%/*}" | grep -v '^default' >/dev/null ||
    die "the root namespace already routes $net: $(ip -4 route show to match "${net%/*}")"
done
mkdir -p "$W"/{pids,logs,baseline,containerd/cni,kubelet/manifests,kubelet/pod-logs,kube-proxy,volumes}

# If anything below fails, take down what was started (logs stay in $W/logs).
up_ok=0
on_exit() {
  ((up_ok)) && return
  log "cluster start failed; tails of the logs:"
  for f in "$W"/logs/*.log "$W"/cp/logs/kube-apiserver.log; do
    [[ -f $f ]] && { log "--- $f"; tail -n 12 "$f" >&2; }
  done
  if [[ -z ${GUESSGAME_K8S_KEEP_FAILED:-} ]]; then
    "$K8S_HARNESS_DIR/cluster-down.sh" "$W" >&2 || true
  else
    log "GUESSGAME_K8S_KEEP_FAILED is set: left running; stop with $K8S_HARNESS_DIR/cluster-down.sh $W"
  fi
}
trap on_exit EXIT

# --- what this machine looks like before: restored and checked by cluster-down.sh ---------------
for k in "${HOST_SYSCTLS[@]}"; do
  v="$(sysctl -n "$k" 2>/dev/null)" && echo "$k=$v"
done >"$W/baseline/sysctl.txt"
for p in "${HOST_PATHS[@]}"; do [[ -e $p ]] && echo "$p"; done >"$W/baseline/paths.txt"
awk '$5 == "/run/netns" { found = 1 } END { exit !found }' /proc/self/mountinfo && touch "$W/baseline/run-netns-mounted"
for h in /sys/fs/cgroup/*/; do [[ -d $h/kubepods ]] && echo "$h/kubepods"; done >"$W/baseline/cgroups.txt"

# --- network namespace, veth, routes ------------------------------------------------------------
ip netns add "$NETNS"
ip link add "$VETH" type veth peer name eth0 netns "$NETNS"
ip addr add "$HOST_IP/24" dev "$VETH"
ip link set "$VETH" up
innode() { nsenter --net="/run/netns/$NETNS" "$@"; }
innode ip link set lo up
innode ip addr add "$NODE_IP/24" dev eth0
innode ip link set eth0 up
# Routes to the cluster's ranges before anything can send there; the unreachable ones (higher
# metric) stay when the link goes, so such traffic fails here instead of leaving the machine.
for net in "$CLUSTER_CIDR" "$SERVICE_CIDR"; do
  ip route add unreachable "$net" metric 4000
  ip route add "$net" via "$NODE_IP" dev "$VETH"
done
ip route add unreachable "$NODE_SUBNET" metric 4000
# The namespace has no default route, so the node's own connections to a Service IP need a
# route to exist before kube-proxy's DNAT picks the endpoint (pods route through their bridge).
innode ip route add "$SERVICE_CIDR" dev eth0
# Pod traffic crossing the node's bridge goes through iptables (kube-proxy's Service NAT), as on
# a kind node; per namespace, so the root namespace keeps its own setting.
innode sysctl -qw net.bridge.bridge-nf-call-iptables=1
phase "network namespace $NETNS: node $NODE_IP, host side $HOST_IP ($VETH)"

# --- control plane, inside the namespace --------------------------------------------------------
# (it also writes the kubelet's, the scheduler's and kube-proxy's kubeconfigs: client
# certificates from the cluster CA)
GUESSGAME_K8S_NETNS="$NETNS" GUESSGAME_K8S_API_BIND="$NODE_IP" GUESSGAME_K8S_SERVICE_CIDR="$SERVICE_CIDR" \
  GUESSGAME_K8S_NODES=1 GUESSGAME_K8S_NODE_NAME="$NODE_NAME" "$K8S_HARNESS_DIR/start-control-plane.sh" "$W/cp" >"$W/cp.env"
# shellcheck source=/dev/null
source "$W/cp.env"
API_URL="https://$NODE_IP:$(. "$W/cp/ports" && echo "$API_PORT")"
KUBECTL=("$BIN/kubectl" --kubeconfig="$W/cp/admin.kubeconfig")
phase "control plane up at $API_URL"

# --- node configuration files (templates in cluster/) -------------------------------------------
export GG_WORK="$W" GG_NODE_NAME="$NODE_NAME" GG_NODE_IP="$NODE_IP" GG_POD_CIDR="$POD_CIDR" \
  GG_CLUSTER_CIDR="$CLUSTER_CIDR" GG_DNS_IP="$DNS_IP" GG_CGROUP_ROOT="$CGROUP_ROOT" GG_BRIDGE="$BRIDGE" \
  GG_PAUSE_IMAGE="$PAUSE_IMAGE" GG_VOLUMES_DIR="$W/volumes" GG_COREDNS_IMAGE="$COREDNS_IMAGE" \
  GG_LOCAL_PATH_IMAGE="$LOCAL_PATH_IMAGE" GG_BUSYBOX_IMAGE="$BUSYBOX_IMAGE"
render() { # <template> <out>: only GG_* variables are replaced (the files hold shell scripts too)
  envsubst "$(compgen -v GG_ | sed 's/^/$/' | tr '\n' ' ')" <"$K8S_HARNESS_DIR/cluster/$1" >"$2"
}
render containerd.toml "$W/containerd/config.toml"
render cni.conflist "$W/containerd/cni/10-guessgame-k8s.conflist"
render kubelet.yaml "$W/kubelet/config.yaml"
render kube-proxy.yaml "$W/kube-proxy/config.yaml"
# No nameserver outside the node: names that are not the cluster's fail at once.
echo "nameserver $NODE_IP" >"$W/kubelet/resolv.conf"
cat >"$W/crictl.yaml" <<EOF
runtime-endpoint: unix://$W/containerd/containerd.sock
image-endpoint: unix://$W/containerd/containerd.sock
timeout: 10
EOF

# --- cgroups: the kubelet's own subtree in every hierarchy ----------------------------------------
for h in /sys/fs/cgroup/*/; do
  mkdir -p "$h${CGROUP_ROOT#/}"
  if [[ -f $h/cpuset.cpus ]]; then
    cat "$h/cpuset.cpus" >"$h${CGROUP_ROOT#/}/cpuset.cpus"
    cat "$h/cpuset.mems" >"$h${CGROUP_ROOT#/}/cpuset.mems"
  fi
done

# --- daemons -----------------------------------------------------------------------------------
node_daemon() { # <name> <cmd...>: in the node's namespace, own session, pid recorded
  local name=$1
  shift
  setsid nsenter --net="/run/netns/$NETNS" "$@" </dev/null >"$W/logs/$name.log" 2>&1 &
  echo $! >"$W/pids/$name.pid"
}
wait_for() { # <timeout s> <what> <cmd...>
  local timeout=$1 what=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - start < timeout)) || die "$what: not within ${timeout}s"
    sleep 0.2
  done
}
CTR=(ctr -a "$W/containerd/containerd.sock" -n k8s.io)
node_daemon containerd containerd --config "$W/containerd/config.toml"
wait_for 30 "containerd answers" "${CTR[@]}" version
# What `kind load docker-image` runs on a node.
for tar in "$IMAGES"/*.tar; do
  "${CTR[@]}" images import --all-platforms --digests --snapshotter=overlayfs "$tar" >/dev/null
done
"${CTR[@]}" images label "$PAUSE_IMAGE" io.cri-containerd.pinned=pinned >/dev/null
phase "containerd up, $(find "$IMAGES" -name '*.tar' | wc -l) add-on images imported"

node_daemon kubelet "$BIN/kubelet" --config="$W/kubelet/config.yaml" \
  --kubeconfig="$W/cp/kubelet.kubeconfig" --root-dir="$W/kubelet/root" --cert-dir="$W/kubelet/pki" \
  --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
node_daemon kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$W/cp/kube-scheduler.kubeconfig" \
  --authentication-kubeconfig="$W/cp/kube-scheduler.kubeconfig" \
  --authorization-kubeconfig="$W/cp/kube-scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port=10259 --leader-elect=false --v=1
node_daemon kube-proxy "$BIN/kube-proxy" --config="$W/kube-proxy/config.yaml" --v=1
wait_for 60 "node $NODE_NAME registers" "${KUBECTL[@]}" get node "$NODE_NAME"
"${KUBECTL[@]}" wait --for=condition=Ready "node/$NODE_NAME" --timeout=90s >/dev/null
phase "node $NODE_NAME Ready"

# --- add-ons: cluster DNS and the volume provisioner, as pods -------------------------------------
for m in coredns.yaml local-path-storage.yaml; do
  render "$m" "$W/$m"
  "${KUBECTL[@]}" apply -f "$W/$m" >/dev/null
done
"${KUBECTL[@]}" -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null
"${KUBECTL[@]}" -n local-path-storage rollout status deployment/local-path-provisioner --timeout=120s >/dev/null
wait_for 30 "kube-proxy serves the DNS Service" innode bash -c "exec 3<>/dev/tcp/$DNS_IP/53"
phase "CoreDNS at $DNS_IP and local-path-provisioner (StorageClass standard) running"

cat >"$W/env" <<EOF
export KUBECONFIG=$W/cp/admin.kubeconfig
export PATH=$BIN:\$PATH
export GUESSGAME_K8S_CLUSTER=$W
export CONTAINER_RUNTIME_ENDPOINT=unix://$W/containerd/containerd.sock
EOF
up_ok=1
log "cluster $NAME up in $((SECONDS - t0))s: node $NODE_NAME ($NODE_IP), API $API_URL"
log "crictl: crictl --config $W/crictl.yaml ps; stop: $K8S_HARNESS_DIR/cluster-down.sh $W"
cat "$W/env"
