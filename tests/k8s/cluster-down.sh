#!/usr/bin/env bash
# Stop the cluster that cluster-up.sh started in <workdir>, remove what it made on the host,
# restore the host settings it saved, and check that nothing is left behind.
#
#   sudo tests/k8s/cluster-down.sh <workdir> [--clean]   # --clean also removes <workdir>
#
# Order matters: the scheduler, kube-proxy and kubelet first (so nothing recreates pods), the
# pods through the CRI while containerd still runs, containerd, then the control plane (before
# the namespace goes), whatever still runs in the node's cgroups (by pid, read from those
# cgroups only), mounts under <workdir> deepest first, the cgroup subtrees, the namespace (its
# bridge, veths, iptables rules and sysctls go with it), the host routes, host paths that did
# not exist before, and the saved sysctls. Processes are signalled only if recorded by
# cluster-up.sh and their command line still names <workdir>, or if they sit in its cgroups.
# Ends with "cluster-down: clean" or a list of what is left (exit 1). Idempotent.
set -uo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 <workdir> [--clean]"
[[ -d $1 ]] || { log "no such workdir $1; nothing to stop"; exit 0; }
W="$(cd "$1" && pwd)"
clean=0
[[ ${2:-} == --clean ]] && clean=1
[[ -f $W/cluster.env ]] || { log "$W holds no cluster (no cluster.env); nothing to stop"; ((clean)) && rm -rf "$W"; exit 0; }
[[ $(id -u) == 0 ]] || die "run as root"
# shellcheck source=/dev/null
source "$W/cluster.env"
t0=$SECONDS

ours() { names_dir "$1" "$W"; } # <pid>: still a process of this cluster?
cgroup_dirs() { # the node's cgroup subtrees that exist, in every hierarchy
  local h
  for h in /sys/fs/cgroup/*/; do
    [[ -d $h${CGROUP_ROOT#/} ]] && echo "$h${CGROUP_ROOT#/}"
    [[ -d ${h}kubepods ]] && ! grep -qxF "${h}kubepods" "$W/baseline/cgroups.txt" 2>/dev/null && echo "${h}kubepods"
  done
}
cgroup_pids() { # every process in those subtrees
  local d
  for d in $(cgroup_dirs); do find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null; done | sort -un
}

# 1. What would recreate or reschedule pods.
for d in kube-scheduler kube-proxy kubelet; do stop_recorded "$W/pids/$d.pid" "$d" "$W"; done
# 2. The pods, through the CRI, while containerd runs.
if [[ -f $W/pids/containerd.pid ]] && ours "$(cat "$W/pids/containerd.pid")"; then
  timeout 60 "$K8S_BIN_DIR/crictl" --config "$W/crictl.yaml" rmp -af >/dev/null 2>&1 ||
    log "crictl rmp -af failed (what remains is stopped through the cgroups below)"
fi
stop_recorded "$W/pids/containerd.pid" containerd "$W"
# 3. The control plane (inside the namespace, so before it goes).
[[ -d $W/cp ]] && "$K8S_HARNESS_DIR/stop-control-plane.sh" "$W/cp" >/dev/null 2>&1
# 4. Whatever still runs in the node's cgroups (shims, containers), then shims of our containerd.
for round in 1 2 3; do
  pids="$(cgroup_pids)"
  [[ -z $pids ]] && break
  log "round $round: killing $(wc -w <<<"$pids") processes left in the node's cgroups"
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null
  sleep 0.5
done
for pid in $(ps -eo pid=); do
  cmd="$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline")" || continue
  [[ $cmd == *containerd-shim* && $cmd == *"$W/containerd/containerd.sock"* ]] && kill -KILL "$pid" 2>/dev/null &&
    log "killed leftover shim $pid"
done
sleep 0.2
# 5. Mounts under the work dir (overlay rootfs, shm, tokens, netns files, the kubelet's bind).
for _ in 1 2 3 4; do
  mps="$(awk -v w="$W/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo | sort -ru)"
  [[ -z $mps ]] && break
  for m in $mps; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done
# 6. cgroup subtrees, deepest first.
for d in $(cgroup_dirs); do find "$d" -depth -type d -exec rmdir {} + 2>/dev/null; done
# 7. The namespace (bridge, pod veths, iptables, per-namespace sysctls go with it), the veth,
#    the host routes.
if [[ -e /run/netns/$NETNS ]]; then
  ip netns del "$NETNS" && log "deleted network namespace $NETNS"
fi
ip link del "$VETH" 2>/dev/null
for net in "$CLUSTER_CIDR" "$SERVICE_CIDR" "$NODE_SUBNET"; do
  while ip route del unreachable "$net" metric 4000 2>/dev/null; do :; done
  ip route del "$net" via "$NODE_IP" 2>/dev/null
done
if [[ ! -e $W/baseline/run-netns-mounted ]] && [[ -d /run/netns ]] && [[ -z "$(ls -A /run/netns)" ]]; then
  umount /run/netns 2>/dev/null
fi
# 8. Host paths that did not exist before the cluster (the kubelet's device-plugin socket and
#    container log links, libcni's cache, containerd's shim socket dir).
for p in "${HOST_PATHS[@]}"; do
  [[ -e $p ]] || continue
  grep -qxF "$p" "$W/baseline/paths.txt" 2>/dev/null && continue
  rm -rf "$p" && log "removed $p (made by the cluster)"
done
# 9. Host sysctls back to what they were.
while IFS='=' read -r k v; do
  [[ "$(sysctl -n "$k" 2>/dev/null)" == "$v" ]] || { sysctl -qw "$k=$v" && log "restored $k=$v"; }
done <"$W/baseline/sysctl.txt"

# --- check: nothing left ------------------------------------------------------------------------------
left=()
# This script and its callers (cluster-up.sh on a failed start) name the work dir too.
declare -A mine=()
p=$$
while ((p > 1)); do
  mine[$p]=1
  p="$(awk '$1 == "PPid:" { print $2 }' "/proc/$p/status" 2>/dev/null)"
  [[ -n $p ]] || break
done
for pid in $(ps -eo pid=); do
  [[ -n ${mine[$pid]:-} ]] && continue
  ours "$pid" && left+=("process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" | cut -c1-100)")
done
for pid in $(cgroup_pids); do left+=("process $pid in the node's cgroups"); done
while read -r m; do [[ -n $m ]] && left+=("mount $m"); done < <(awk -v w="$W/" 'index($5, w) == 1 { print $5 }' /proc/self/mountinfo)
for d in $(cgroup_dirs); do left+=("cgroup $d"); done
[[ -e /run/netns/$NETNS ]] && left+=("network namespace $NETNS")
ip link show "$VETH" >/dev/null 2>&1 && left+=("link $VETH")
for net in "$CLUSTER_CIDR" "$SERVICE_CIDR" "$NODE_SUBNET"; do
  r="$(ip -4 route show "$net")"
  [[ -n $r ]] && left+=("route $r")
done
while IFS='=' read -r k v; do
  [[ "$(sysctl -n "$k" 2>/dev/null)" == "$v" ]] || left+=("sysctl $k=$(sysctl -n "$k") (was $v)")
done <"$W/baseline/sysctl.txt"
for p in "${HOST_PATHS[@]}"; do
  [[ -e $p ]] && ! grep -qxF "$p" "$W/baseline/paths.txt" && left+=("path $p")
done

log "cluster $NAME stopped in $((SECONDS - t0))s"
if ((${#left[@]})); then
  printf 'cluster-down: left behind: %s\n' "${left[@]}" >&2
  exit 1
fi
rm -f "$W/cluster.env" "$W/env"
((clean)) && rm -rf "$W"
echo "cluster-down: clean"
