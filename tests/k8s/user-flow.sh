#!/usr/bin/env bash
# The user's flow, exactly as the README tells it, on a real one-node cluster (cluster-up.sh:
# kubelet, containerd, kube-proxy, CoreDNS, local-path-provisioner) with the images that
# images.sh builds, loaded the way `kind load docker-image` does:
#   1. helm install the chart: the operator runs as a pod from its image, with the chart's RBAC;
#   2. kubectl apply -f manifests/guessgame.yaml: five node pods, scheduled, PVCs bound by the
#      provisioner, peers found through CoreDNS, readiness from the kubelet's gRPC probe;
#   3. play through kubectl exec;
#   4. kubectl delete pod <leader> (graceful), then kill -9 of the leader's node process: a new
#      leader, writes commit, the pod comes back on its PVC with its log, as a follower;
#   5. scale 5 -> 7 -> 5 with real pods, the operator pod deleted during the scale-up;
#   6. bad paths: an image not on the node, a claim that cannot bind, RBAC missing a verb, the
#      CRD missing;
#   7. helm uninstall, kubectl delete gg, the documented PVC clean-up; then cluster-down.sh
#      must leave nothing behind.
#
#   sudo tests/k8s/user-flow.sh      # ends with "user-flow: N passed, M failed"; the figures
#                                    # are printed as "FIGURE <name> <value>" lines
# Env: USER_FLOW_KEEP=1 (leave the cluster running on failure; stop it with cluster-down.sh),
# IMAGES_PROFILE (images.sh), GUESSGAME_K8S_* as for the other harness scripts.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
TEST_NAME=user-flow
# shellcheck source=assert.sh source-path=SCRIPTDIR
source "$K8S_HARNESS_DIR/assert.sh"
ROOT="$(cd "$K8S_HARNESS_DIR/../.." && pwd)"
cd "$ROOT"
[[ $(id -u) == 0 ]] || die "run as root (the cluster needs it)"

t_start=$SECONDS
OPNS=guessgame-system GG=demo NS=default
FIGURES=()
figure() { FIGURES+=("$1 $2"); log "FIGURE $1 $2"; }

# A run that was killed (no EXIT trap) leaves its cluster up, and its network namespace would
# stop this one from starting: take such clusters down first (their user-flow.sh is gone).
for stale in "${TMPDIR:-/tmp}"/guessgame-user-flow.*/; do
  [[ -f $stale/cluster/cluster.env ]] || continue
  owner="$(cat "$stale/user-flow.pid" 2>/dev/null || true)"
  [[ -n $owner ]] && tr '\0' ' ' 2>/dev/null <"/proc/$owner/cmdline" | grep user-flow.sh >/dev/null && continue
  log "taking down the cluster a killed run left in $stale"
  "$K8S_HARNESS_DIR/cluster-down.sh" "$stale/cluster" --clean >&2 && rm -rf "$stale"
done
WORK="$(mktemp -d "${TMPDIR:-/tmp}/guessgame-user-flow.XXXXXX")"
echo $$ >"$WORK/user-flow.pid"
CL="$WORK/cluster"
diagnostics() {
  log "--- diagnostics"
  {
    kubectl get nodes -o wide
    kubectl get all,pvc,pv,gg -A -o wide
    kubectl get events -A --sort-by=.lastTimestamp | tail -n 40
    for p in $(kubectl get pods -A -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.name}{" "}{end}'); do
      echo "--- describe pod $p"
      kubectl describe pod -n "${p%/*}" "${p#*/}" | tail -n 25
      echo "--- logs $p"
      kubectl logs -n "${p%/*}" "${p#*/}" --all-containers --tail=25 2>&1
    done
    kubectl get gg -A -o yaml | sed -n '/^  status:/,$p' | head -n 80
  } >&2 2>&1 || true
}
# What the host looks like outside the cluster's own directories: taken before cluster-up.sh
# and after cluster-down.sh, and compared (no process, mount, cgroup, namespace, link, route,
# firewall rule or sysctl left behind or changed). Counters that move by themselves are left out.
host_snapshot() (
  set +e +o pipefail # a section with nothing to list is fine
  {
    echo "## sysctl"
    sysctl -a 2>/dev/null | grep -Ev '^(kernel\.random\.|fs\.(dentry-state|inode-nr|inode-state|file-nr|aio-nr)|kernel\.ns_last_pid|kernel\.pty\.nr|net\.netfilter\.nf_conntrack_count|kernel\.sched_domain|fs\.quota\.|kernel\.perf_event_max_sample_rate|net\.ipv4\.tcp_mem|net\.ipv4\.udp_mem|vm\.stat_refresh)'
    echo "## links"; ip -o link show | sed 's/^[0-9]*: //; s/ link\/.*//'
    echo "## routes"; ip route show table all
    echo "## netns"; ip netns list
    echo "## mounts"; awk '{ print $5, $9 }' /proc/self/mountinfo | sort
    echo "## cgroups"; find /sys/fs/cgroup -mindepth 2 -maxdepth 2 -type d | sort
    echo "## nft"; nft list ruleset 2>/dev/null || iptables-save 2>/dev/null | grep -v '^#'
    # (exited ones not yet reaped by this machine's init are not processes any more)
    echo "## processes"; ps -eo stat=,comm= | awk '$1 !~ /^Z/ { print $2 }' | grep -E 'kube|etcd|containerd|coredns|local-path|guessgame|pause|runc' | sort
  } 2>&1
)
exec 3>&1 4>&2 # the script's own stdout and stderr, for cleanup (it may run inside a redirection)
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  exec 1>&3 2>&4
  if ((rc != 0)); then
    ((FAILED)) || { log "FAIL: aborted (exit $rc)"; echo "user-flow: $passed passed, 1 failed"; }
    [[ -n ${KUBECONFIG:-} ]] && diagnostics
  fi
  if ((rc != 0)) && [[ -n ${USER_FLOW_KEEP:-} ]]; then
    log "USER_FLOW_KEEP: cluster left running: source $CL/env; stop: $K8S_HARNESS_DIR/cluster-down.sh $CL --clean"
  else
    if "$K8S_HARNESS_DIR/cluster-down.sh" "$CL" --clean >&2; then
      host_snapshot >"$WORK/host-after.txt"
      if diff "$WORK/host-before.txt" "$WORK/host-after.txt" >"$WORK/host.diff"; then
        pass "cluster-down.sh left the host as it was (sysctls, links, routes, namespaces, mounts, cgroups, firewall, processes)"
      else
        log "FAIL: the host differs after cluster-down.sh:"
        cat "$WORK/host.diff" >&2
        rc=1
      fi
    else
      log "FAIL: cluster-down.sh reports leftovers"
      rc=1
    fi
    ((rc == 0)) && echo "user-flow: $passed passed, 0 failed"
    rm -rf "$WORK"
  fi
  log "user-flow took $((SECONDS - t_start))s"
  [[ -n $FAILED_WHAT ]] && log "the failure (above the diagnostics): $FAILED_WHAT"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- images and the cluster --------------------------------------------------------------------
step "images (images.sh) and a one-node cluster (cluster-up.sh)"
t0=$SECONDS
IMAGES_SAVE_DIR="$WORK/images" "$K8S_HARNESS_DIR/images.sh" >"$WORK/images.log" 2>&1 ||
  { tail -n 30 "$WORK/images.log" >&2; fail "images.sh"; }
pass "images.sh built and ran both images ($(tail -n 1 "$WORK/images.log"))"
figure images_s $((SECONDS - t0))
VERSION="$(cargo metadata -q --format-version 1 --no-deps | jq -r '.packages[] | select(.name == "guessgame-node") | .version')"
t0=$SECONDS
host_snapshot >"$WORK/host-before.txt"
eval "$("$K8S_HARNESS_DIR/cluster-up.sh" "$CL")"
figure cluster_up_s $((SECONDS - t0))
# shellcheck source=/dev/null
source "$CL/cluster.env"
"$K8S_HARNESS_DIR/cluster-load.sh" "$CL" "$WORK"/images/*.tar
crictl_() { "$K8S_BIN_DIR/crictl" --config "$CL/crictl.yaml" "$@"; }
check "the node has guessgame-node:$VERSION and guessgame-operator:$VERSION (crictl images)" \
  bash -c "out=\$(\"$K8S_BIN_DIR/crictl\" --config $CL/crictl.yaml images); grep -q 'guessgame-node .*$VERSION' <<<\"\$out\" && grep -q 'guessgame-operator .*$VERSION' <<<\"\$out\""
expect "node Ready" "$(kubectl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" True
expect "default StorageClass" "$(kubectl get storageclass -o jsonpath='{.items[?(@.metadata.annotations.storageclass\.kubernetes\.io/is-default-class=="true")].metadata.name}')" standard

jp() { kubectl get "$1" -n "${3:-$NS}" -o jsonpath="$2"; } # <kind/name> <jsonpath> [namespace]
st() { jp "gg/$GG" "{.status.$1}"; }
is() { [[ "$(jp "$1" "$2" "${4:-$NS}")" == "$3" ]]; } # <kind/name> <jsonpath> <value> [namespace]
# scaled_to <n>: n voters, all ready, no scaling under way, and n pods in the StatefulSet
scaled_to() { is "gg/$GG" '{.status.replicas}/{.status.readyReplicas}/{.status.scaling}' "$1/$1/" && is "sts/$GG" '{.status.replicas}' "$1"; }
cond() { jp "gg/$GG" "{.status.conditions[?(@.type==\"$1\")].status}"; }
events() { # <reason> [object name] [namespace]: the notes of the Events with that reason
  kubectl get events -n "${3:-$NS}" -o json |
    jq -r --arg r "$1" --arg n "${2:-$GG}" '.items[] | select(.reason == $r and .involvedObject.name == $n) | .message'
}
has_event() { events "$1" "${3:-$GG}" "${4:-$NS}" | grep -F -- "$2" >/dev/null; } # <reason> <text> [object] [ns]
gg_exec() { kubectl exec -n "$NS" "$1" -- guessgame "${@:2}"; } # <pod> <guessgame args...>

# --- 1. helm install ---------------------------------------------------------------------------
step "1. helm install guessgame charts/guessgame -n $OPNS --create-namespace"
check "helm install" helm install guessgame charts/guessgame -n "$OPNS" --create-namespace
eventually 90 "the operator Deployment is available (its pod Ready by the kubelet's probe)" \
  kubectl -n "$OPNS" wait deployment/guessgame-operator --for=condition=Available --timeout=2s
OP_POD="$(kubectl -n "$OPNS" get pods -l app.kubernetes.io/name=guessgame-operator -o jsonpath='{.items[0].metadata.name}')"
expect "operator pod image" "$(jp "pod/$OP_POD" '{.spec.containers[0].image}' "$OPNS")" "guessgame-operator:$VERSION"
expect "operator pod ServiceAccount (the chart's)" "$(jp "pod/$OP_POD" '{.spec.serviceAccountName}' "$OPNS")" guessgame-operator
expect "operator pod placed by the scheduler on" "$(jp "pod/$OP_POD" '{.spec.nodeName}' "$OPNS")" "$NODE_NAME"
expect "operator container running as" "$(kubectl -n "$OPNS" exec "$OP_POD" -- id -u 2>/dev/null || jp "pod/$OP_POD" '{.spec.containers[0].securityContext.runAsUser}' "$OPNS")" 65532

# --- 2. kubectl apply a GuessGame --------------------------------------------------------------
step "2. kubectl apply -f manifests/guessgame.yaml"
t_apply=$(now_ms)
check "kubectl apply -f manifests/guessgame.yaml" kubectl apply -f manifests/guessgame.yaml
eventually 120 "GuessGame $GG Available (5 ready, a leader)" \
  is "gg/$GG" '{.status.conditions[?(@.type=="Available")].status}' True
figure apply_to_available_s "$(secs_since "$t_apply")"
eventually 60 "5 ready members in status" is "gg/$GG" '{.status.readyReplicas}' 5
# (Right after Available the status may still move — a member's readiness, a leader's epoch
# — so the checks on a state that settles by itself are retried for a while, not sampled once.)
get_gg_matches_status() { kubectl get gg | grep -E "^$GG +5 +5 +$(st leader) +$(st epoch) "; }
eventually 30 "kubectl get gg shows 5 ready, the leader and epoch of its status" get_gg_matches_status
LEADER="$(st leader)" EPOCH="$(st epoch)"
log "leader $LEADER, epoch $EPOCH: $(kubectl get gg | tail -n 1)"
for i in 0 1 2 3 4; do
  p="$GG-$i"
  expect "$p placed by the scheduler on" "$(jp "pod/$p" '{.spec.nodeName}')" "$NODE_NAME"
  expect "$p image" "$(jp "pod/$p" '{.spec.containers[0].image}')" "guessgame-node:$VERSION"
  eventually 30 "$p Ready (the kubelet's gRPC readiness probe)" is "pod/$p" '{.status.conditions[?(@.type=="Ready")].status}' True
  expect "PVC data-$p bound by the provisioner (StorageClass standard)" \
    "$(jp "pvc/data-$p" '{.status.phase} {.spec.storageClassName}')" "Bound standard"
done
check "the readiness probe is the kubelet's gRPC probe" bash -c "[[ -n \$(kubectl get pod $GG-0 -o jsonpath='{.spec.containers[0].readinessProbe.grpc.port}') ]]"
check "Scheduled Events from default-scheduler" bash -c "kubectl get events -o json | jq -e '[.items[] | select(.reason == \"Scheduled\" and (.source.component // .reportingComponent) == \"default-scheduler\" and (.involvedObject.name | startswith(\"$GG-\")))] | length >= 5'"
eventually 30 "a peer's name resolves through CoreDNS ($GG-1.$GG-headless.$NS.svc.cluster.local, from $GG-0)" \
  kubectl exec "$GG-0" -- getent hosts "$GG-1.$GG-headless.$NS.svc.cluster.local"
check "a PV's data is a directory the provisioner made under the cluster's volumes" \
  bash -c "ls -d $CL/volumes/pvc-*_${NS}_data-$GG-0 && ls $CL/volumes/pvc-*_${NS}_data-$GG-0/logs_$GG-0.db"

# --- 3. play -----------------------------------------------------------------------------------
step "3. play through kubectl exec (README)"
check "kubectl exec $GG-0 -- guessgame write 50" gg_exec "$GG-0" write 50
check "kubectl exec $GG-1 -- guessgame --client-id alice guess 42" gg_exec "$GG-1" --client-id alice guess 42
check "kubectl exec $GG-2 -- guessgame --client-id bob guess 53" gg_exec "$GG-2" --client-id bob guess 53
check "kubectl exec $GG-3 -- guessgame write 70 (closes round 1)" gg_exec "$GG-3" write 70
winner_on() { # <pod> <round> <winner>: the pod's own node (a local read) shows that result
  gg_exec "$1" read --output json |
    jq -e --arg p "$1" --argjson r "$2" --arg w "$3" '.node == $p and .last_result.round == $r and .last_result.winner == $w'
}
same_state() { # <pod>: its own node's state (local read) is the leader's (linearizable read)
  local mine theirs
  mine="$(gg_exec "$1" read --output json | jq -ce --arg p "$1" 'select(.node == $p) | del(.node)')" || return 1
  theirs="$(gg_exec "$1" read --linearizable --output json | jq -c 'del(.node)')" || return 1
  [[ $mine == "$theirs" ]]
}
for i in 0 1 2 3 4; do
  eventually 10 "$GG-$i reads round 1's winner bob" winner_on "$GG-$i" 1 bob
done
ROUND="$(gg_exec "$GG-4" read --linearizable --output json | jq -r .round)"
expect "linearizable read: open round" "$ROUND" 2

# --- 4. the leader dies ------------------------------------------------------------------------
other_than() { local i; for i in 0 1 2 3 4; do [[ $GG-$i == "$1" ]] || { echo "$GG-$i"; return; }; done; }
# A new leadership: a leader in a higher epoch than <epoch>. After a kill -9 the kubelet restarts
# the container at once, and the restarted node may win the election again (it has the highest
# id among the most up-to-date), so the leader's name alone does not tell.
new_leader_since() { local l e; l="$(st leader)" e="$(st epoch)"; [[ -n $l && -n $e ]] && ((e > $1)); } # <old epoch>
writes_ok=0
write_commits() { # <pod> <value>: one write through that pod committed
  if gg_exec "$1" --timeout-ms 2000 write "$2" >/dev/null 2>&1; then writes_ok=$((writes_ok + 1)); return 0; fi
  return 1
}
member_log_entries() { # <pod>: entries the node loaded from its SQLite file when it started
  # The whole log first: `kubectl logs | grep -m1` lets grep exit while kubectl still writes,
  # and under pipefail its SIGPIPE (exit 141) aborted the flow.
  local logs
  logs="$(kubectl logs "$1")"
  grep -m1 '"starting"\|starting' <<<"$logs" | grep -o 'entries[=":]*[0-9]*' | grep -o '[0-9]*$'
}
failover() { # <how> <figure prefix>: the leader dies as <how> says; new leader, writes, rejoin
  local how=$1 name=$2 old old_epoch pvc_uid pod_uid t via round_before round_after entries
  old="$(st leader)" old_epoch="$(st epoch)"
  DIED=$old
  via="$(other_than "$old")"
  pvc_uid="$(jp "pvc/data-$old" '{.metadata.uid}')" pod_uid="$(jp "pod/$old" '{.metadata.uid}')"
  round_before="$(gg_exec "$via" read --linearizable --output json | jq -r .round)"
  writes_ok=0
  t=$(now_ms)
  case $how in
    delete)
      log "   kubectl delete pod $old (graceful: SIGTERM)"
      kubectl delete pod "$old" --wait=false >/dev/null
      ;;
    kill9)
      local cid pid
      cid="$(crictl_ ps -q --name '^node$' --label "io.kubernetes.pod.name=$old")"
      pid="$(crictl_ inspect "$cid" | jq -r 'if type == "array" then .[0] else . end | .info.pid')"
      [[ $(cat "/proc/$pid/comm") == guessgame-node ]] || fail "pid $pid of $old's container is not guessgame-node"
      log "   kill -9 $pid: $old's node process (container ${cid:0:12}, found with crictl)"
      kill -KILL "$pid"
      ;;
  esac
  eventually 30 "a new leader (epoch > $old_epoch) in kubectl get gg after $how of $old" new_leader_since "$old_epoch"
  figure "${name}_new_leader_s" "$(secs_since "$t")"
  eventually 30 "a write through $via commits" write_commits "$via" 60
  figure "${name}_write_commits_s" "$(secs_since "$t")"
  if [[ $how == kill9 ]]; then
    eventually 30 "the kubelet restarted $old's container in place" \
      bash -c "(( \$(kubectl get pod $old -o jsonpath='{.status.containerStatuses[0].restartCount}') >= 1 ))"
  fi
  NEW_LEADER="$(st leader)"
  log "   leader $NEW_LEADER in epoch $(st epoch) (was $old in epoch $old_epoch)"
  local role=follower
  [[ $NEW_LEADER == "$old" ]] && role=leader # re-elected after its restart (see new_leader_since)
  # delete: a new pod (the StatefulSet recreates it); kill -9: the same pod, its container restarted
  eventually 90 "$old is back ($([[ $how == kill9 ]] && echo same || echo new) pod), Ready, and a $role" \
    bash -c "[[ \$(kubectl get pod $old -o jsonpath='{.metadata.uid}') $([[ $how == kill9 ]] && echo '==' || echo '!=') $pod_uid && \
      \$(kubectl get pod $old -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}') == True && \
      \$(kubectl get gg $GG -o jsonpath='{.status.members[?(@.pod==\"$old\")].role}') == $role ]]"
  figure "${name}_rejoined_s" "$(secs_since "$t")"
  expect "$old came back on the same PVC" "$(jp "pvc/data-$old" '{.metadata.uid}')" "$pvc_uid"
  entries="$(member_log_entries "$old")"
  check "$old started from its log on the PVC ($entries entries)" test "${entries:-0}" -gt 0
  round_after="$(gg_exec "$old" read --linearizable --output json | jq -r .round)"
  check "no committed round lost: round $round_before + $writes_ok committed write(s) <= $round_after" \
    test "$round_after" -ge $((round_before + writes_ok))
  eventually 15 "$old's own node has the leader's state (round, target, last result, applied zxid)" same_state "$old"
  eventually 60 "5 ready members again" is "gg/$GG" '{.status.readyReplicas}' 5
}
step "4a. kubectl delete pod <leader> ($LEADER)"
failover delete delete_pod
step "4b. kill -9 of the leader's node process ($(st leader))"
failover kill9 kill9
expect "the killed leader's container restarted in place, in the same pod (restartCount)" \
  "$(jp "pod/$DIED" '{.status.containerStatuses[0].restartCount}')" 1

# --- 5. scaling with real pods, the operator pod deleted during the scale-up ----------------------
step "5. kubectl patch gg $GG 5 -> 7 -> 5 (operator pod deleted during the scale-up)"
check "patch replicas 7" kubectl patch gg "$GG" --type=merge -p '{"spec":{"replicas":7}}'
eventually 60 "status.scaling 5 -> 7 appears" is "gg/$GG" '{.status.scaling.to}' 7
eventually 90 "$GG-5 added (Event MemberAdded)" has_event MemberAdded "$GG-5 ("
OP_POD="$(kubectl -n "$OPNS" get pods -l app.kubernetes.io/name=guessgame-operator -o jsonpath='{.items[0].metadata.name}')"
check "kubectl delete pod $OP_POD (the operator, mid-scaling)" kubectl -n "$OPNS" delete pod "$OP_POD"
eventually 90 "a new operator pod is available" kubectl -n "$OPNS" wait deployment/guessgame-operator --for=condition=Available --timeout=2s
eventually 180 "the new operator finished the scaling: 7 voters, 7 pods, no status.scaling" scaled_to 7
eventually 15 "Event ScalingDone (7 voters)" has_event ScalingDone "the ensemble has 7 voters"
expect "one MemberAdded Event per new member" "$(events MemberAdded | sort -u | wc -l)" 2
expect "voters in the committed configuration" "$(gg_exec "$GG-6" members --output json | jq '[.committed_members[] | select(.kind == "voter")] | length')" 7
check "patch replicas 5" kubectl patch gg "$GG" --type=merge -p '{"spec":{"replicas":5}}'
eventually 180 "scaled back: 5 voters, 5 pods, no status.scaling" scaled_to 5
eventually 15 "Events MemberRemoved for $GG-6 and $GG-5" bash -c "[[ \$(kubectl get events -o json | jq '[.items[] | select(.reason == \"MemberRemoved\")] | length') -ge 2 ]]"
eventually 60 "the removed members' PVCs are deleted (whenScaled: Delete)" \
  bash -c "! kubectl get pvc data-$GG-5 data-$GG-6 -o name 2>/dev/null | grep -q ."
for i in 0 1 2 3 4; do
  eventually 15 "$GG-$i's own node has the leader's state after the scaling" same_state "$GG-$i"
done

# --- 6. bad paths ------------------------------------------------------------------------------------
step "6a. an image tag that is not on the node"
kubectl create namespace bad >/dev/null
bad_gg() { # <name> <extra spec json>
  kubectl apply -n bad -f - <<EOF >/dev/null
apiVersion: guessgame.dev/v1alpha1
kind: GuessGame
metadata: {name: $1}
spec: $(jq -c --argjson x "$2" '{replicas: 1, image: {repository: "guessgame-node", tag: "'"$VERSION"'", pullPolicy: "IfNotPresent"}} * $x' <<<'{}')
EOF
}
bad_gg noimage '{"image": {"tag": "0.0.0-not-on-the-node"}}'
pods_healthy() { kubectl get gg "$1" -n bad -o jsonpath='{.status.conditions[?(@.type=="PodsHealthy")].status} {.status.conditions[?(@.type=="PodsHealthy")].reason}'; }
pods_healthy_is() { [[ "$(pods_healthy "$1")" =~ ^$2$ ]]; } # <GuessGame in ns bad> <"status reason" regex>
eventually 60 "noimage: PodsHealthy=False, reason ImagePullBackOff" pods_healthy_is noimage 'False ImagePullBackOff'
eventually 30 "noimage: a Warning Event ImagePullBackOff" has_event ImagePullBackOff "noimage-0" noimage bad
uid="$(jp pod/noimage-0 '{.metadata.uid}' bad)"
sleep 10
expect "noimage-0: the same pod 10 s later (the operator does not restart it)" "$(jp pod/noimage-0 '{.metadata.uid}' bad)" "$uid"
expect "noimage: status.restarts" "$(kubectl get gg noimage -n bad -o jsonpath='{.status.restarts}')" 0
log "   $(pods_healthy noimage)"

step "6b. a PVC that cannot bind (no such StorageClass)"
bad_gg nostorage '{"storage": {"size": "1Gi", "storageClassName": "no-such-class"}}'
eventually 60 "nostorage: PVC Pending" is pvc/data-nostorage-0 '{.status.phase}' Pending bad
eventually 60 "nostorage: PodsHealthy=False (VolumeUnbound or Unschedulable)" \
  pods_healthy_is nostorage 'False (VolumeUnbound|Unschedulable)'
expect "nostorage: status.restarts" "$(kubectl get gg nostorage -n bad -o jsonpath='{.status.restarts}')" 0
check "delete the bad GuessGames" kubectl delete gg -n bad noimage nostorage --wait=true
check "delete their PVCs and namespace" kubectl delete namespace bad --wait=true

step "6c. RBAC missing a verb (the operator may not patch guessgames/status)"
CR="$(kubectl get clusterrole -l app.kubernetes.io/name=guessgame-operator -o jsonpath='{.items[0].metadata.name}')"
kubectl get clusterrole "$CR" -o json >"$WORK/clusterrole.json"
jq '.rules |= map(if (.resources | index("guessgames/status")) then .verbs -= ["patch", "update"] else . end)' \
  "$WORK/clusterrole.json" | kubectl replace -f - >/dev/null
OP_POD="$(kubectl -n "$OPNS" get pods -l app.kubernetes.io/name=guessgame-operator -o jsonpath='{.items[0].metadata.name}')"
# The operator patches the status only when it changes: a move changes status.round.
check "a move while the operator may not patch the status" gg_exec "$GG-0" write 33
eventually 60 "the operator logs the refused status patch (forbidden, naming the resource)" \
  bash -c "kubectl -n $OPNS logs $OP_POD | grep -i forbidden | grep -q guessgames"
jq 'del(.metadata.resourceVersion)' "$WORK/clusterrole.json" | kubectl replace -f - >/dev/null
pass "ClusterRole $CR restored"

# --- 7. uninstall, clean-up ----------------------------------------------------------------------
step "7. helm uninstall, kubectl delete gg, PVC clean-up"
check "helm uninstall guessgame -n $OPNS" helm uninstall guessgame -n "$OPNS" --wait
eventually 60 "the operator pod is gone" bash -c "[[ -z \$(kubectl -n $OPNS get pods -o name) ]]"
check "kubectl delete gg $GG" kubectl delete gg "$GG" --wait=true
eventually 90 "the StatefulSet and its pods are garbage-collected" \
  bash -c "[[ -z \$(kubectl get sts,pods -l guessgame.dev/instance=$GG -o name) ]]"
expect "PVCs kept after kubectl delete gg (whenDeleted: Retain)" "$(kubectl get pvc -l guessgame.dev/instance=$GG -o name | wc -l)" 5
check "kubectl delete pvc -l guessgame.dev/instance=$GG" kubectl delete pvc -l "guessgame.dev/instance=$GG" --wait=true
eventually 90 "the provisioner deleted the PVs and their directories" \
  bash -c "[[ -z \$(kubectl get pv -o name) ]] && ! ls -d $CL/volumes/pvc-* 2>/dev/null | grep -q ."

step "6d. the CRD missing: the operator from the chart without its CRD"
check "kubectl delete crd guessgames.guessgame.dev" kubectl delete crd guessgames.guessgame.dev
check "helm install --skip-crds" helm install guessgame charts/guessgame -n "$OPNS" --skip-crds
eventually 90 "the operator pod says the CRD is missing" \
  bash -c "kubectl -n $OPNS logs -l app.kubernetes.io/name=guessgame-operator --tail=50 | grep -qi 'is the CRD installed'"
check "helm uninstall" helm uninstall guessgame -n "$OPNS" --wait

step "the figures"
for f in "${FIGURES[@]}"; do echo "FIGURE $f"; done
# The summary line comes from cleanup, after cluster-down.sh and the host comparison.
