#!/usr/bin/env bash
# End-to-end test of the GuessGame operator, its Helm chart and manifests/ against a real
# kube-apiserver + kube-controller-manager (built offline, see README.md here). No kubelet
# runs: the test acts as one, running the members as real `guessgame-node` processes in pod
# mode on loopback and patching the pods' status; the operator runs on the host with the
# RBAC of the chart's ServiceAccount (a token kubeconfig), so a missing permission fails.
#
#   tests/k8s/operator-e2e.sh          # exits non-zero on the first failed assertion
#
# Env: E2E_PROFILE=release (default: debug binaries), E2E_KEEP_LOGS=<dir> (copy the logs
# there at the end), GUESSGAME_K8S_* as for the other harness scripts.
# Ends with "operator-e2e: N passed, M failed" and the time taken.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(cd "$K8S_HARNESS_DIR/../.." && pwd)"
cd "$ROOT"

t_start=$SECONDS
NS=games      # the GuessGame's namespace
GG=demo       # its name (pods demo-0..2)
REPLICAS=3
OPNS=guessgame-system RELEASE=guessgame SA=guessgame-operator
UNRESPONSIVE=5 # seconds: restart threshold, and the minimum time between two restarts

TEST_NAME=operator-e2e
# shellcheck source=assert.sh source-path=SCRIPTDIR
source "$K8S_HARNESS_DIR/assert.sh" # step, pass, fail, check, eventually, expect
jp() { # <kind/name> <jsonpath> [namespace]
  kubectl get "$1" -n "${3:-$NS}" -o jsonpath="$2"
}

# --- build -----------------------------------------------------------------------------------
step "building guessgame-node, guessgame, guessgame-operator (cargo, ${E2E_PROFILE:-debug})"
t0=$SECONDS
profile_flag=()
[[ ${E2E_PROFILE:-debug} == release ]] && profile_flag=(--release)
cargo build -q "${profile_flag[@]}" -p guessgame-node -p guessgame-client -p guessgame-operator --bins
TARGET="$(cargo metadata -q --format-version 1 --no-deps | jq -r .target_directory)/${E2E_PROFILE:-debug}"
NODE_BIN="$TARGET/guessgame-node" CLIENT_BIN="$TARGET/guessgame" OPERATOR_BIN="$TARGET/guessgame-operator"
for b in "$NODE_BIN" "$CLIENT_BIN" "$OPERATOR_BIN"; do [[ -x $b ]] || die "no $b after cargo build"; done
t_cargo=$((SECONDS - t0))
t0=$SECONDS
"$K8S_HARNESS_DIR/build-control-plane.sh" >/dev/null
t_cp_build=$((SECONDS - t0))

# --- control plane, and cleanup ------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/guessgame-operator-e2e.XXXXXX")"
mkdir -p "$WORK/e2e"
LOGS="$WORK/e2e"
PIDS=() # the processes this script started (nodes, operators)
FAILED=0
diagnostics() {
  log "---- diagnostics (workdir $WORK)"
  {
    kubectl get gg -A -o wide
    kubectl get gg "$GG" -n "$NS" -o jsonpath='{.status}' | jq . 2>/dev/null || true
    kubectl get sts,pods,pvc,svc,cm,pdb -n "$NS" -o wide
    kubectl get events -n "$NS" --sort-by=.lastTimestamp 2>/dev/null | tail -n 25
  } >&2 2>/dev/null || true
  for f in "$LOGS"/*.log; do
    [[ -f $f ]] || continue
    log "--- tail $f"
    tail -n 25 "$f" >&2
  done
}
stop_pid() { # <pid>: TERM, then KILL after 5 s
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  ((rc != 0 && FAILED == 0)) && log "FAIL: aborted (exit $rc)" && echo "operator-e2e: $passed passed, 1 failed"
  ((rc != 0)) && [[ -f $WORK/env ]] && diagnostics
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [[ -n ${E2E_KEEP_LOGS:-} ]]; then
    { mkdir -p "$E2E_KEEP_LOGS" && cp -r "$LOGS" "$WORK/logs" "$E2E_KEEP_LOGS/"; } 2>/dev/null || true
    log "logs copied to $E2E_KEEP_LOGS"
  fi
  "$K8S_HARNESS_DIR/stop-control-plane.sh" "$WORK" --clean >/dev/null 2>&1 || {
    log "could not stop the control plane in $WORK"
    rc=1
  }
  log "operator-e2e took $((SECONDS - t_start))s"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "starting the control plane in $WORK"
t0=$SECONDS
env_lines="$("$K8S_HARNESS_DIR/start-control-plane.sh" "$WORK")" || die "start-control-plane.sh failed"
eval "$env_lines"
t_cp_up=$((SECONDS - t0))
export HELM_CACHE_HOME="$WORK/helm/cache" HELM_CONFIG_HOME="$WORK/helm/config" HELM_DATA_HOME="$WORK/helm/data"
t_tests0=$SECONDS

# --- the chart, statically ------------------------------------------------------------------------
step "helm lint"
check "helm lint --strict charts/guessgame" helm lint --strict charts/guessgame
check "helm lint --strict with example.enabled and watchNamespace" \
  helm lint --strict charts/guessgame --set example.enabled=true --set operator.watchNamespace="$NS"
rendered="$(helm template "$RELEASE" charts/guessgame -n "$OPNS" --set operator.watchNamespace="$NS")"
# shellcheck disable=SC2016 # expanded by the child shell
check "watchNamespace renders a namespaced Role + RoleBinding, no ClusterRole" \
  bash -c 'grep -qx "kind: Role" <<<"$1" && grep -qx "kind: RoleBinding" <<<"$1" && ! grep -q "kind: ClusterRole" <<<"$1"' _ "$rendered"

# --- no CRD: the operator says so and exits ------------------------------------------------------------
step "operator against a cluster without the CRD"
set +e
timeout 60 env RUST_BACKTRACE=0 GUESSGAME_OPERATOR_HTTP_ADDR="127.0.0.1:$(free_port "")" GUESSGAME_OPERATOR_LOG_FORMAT=text \
  "$OPERATOR_BIN" >"$LOGS/operator-no-crd.log" 2>&1
rc=$?
set -e
((rc != 0 && rc != 124)) || fail "operator without the CRD: exit code $rc (expected a quick non-zero exit)"
pass "operator without the CRD exits with code $rc"
check "its error names the missing CRD" grep -q "is the CRD installed" "$LOGS/operator-no-crd.log"
log "   $(grep -m1 'is the CRD installed' "$LOGS/operator-no-crd.log" | cut -c1-220)"

# --- helm install --------------------------------------------------------------------------------------
step "helm install"
check "helm install $RELEASE charts/guessgame -n $OPNS" \
  helm install "$RELEASE" charts/guessgame -n "$OPNS" --create-namespace
check "release deployed" bash -c "helm status $RELEASE -n $OPNS -o json | jq -e '.info.status == \"deployed\"'"
check "CRD guessgames.guessgame.dev established" \
  kubectl wait --for=condition=Established --timeout=30s crd/guessgames.guessgame.dev
expect "CRD short name" "$(kubectl get crd guessgames.guessgame.dev -o jsonpath='{.spec.names.shortNames[0]}')" gg
expect "CRD status subresource" "$(kubectl get crd guessgames.guessgame.dev -o jsonpath='{.spec.versions[0].subresources.status}')" "{}"
check "ServiceAccount, ClusterRole, ClusterRoleBinding, Deployment exist" \
  kubectl get -n "$OPNS" serviceaccount/$SA clusterrole/$SA clusterrolebinding/$SA deployment/$SA
expect "Deployment serviceAccountName" "$(jp deployment/$SA '{.spec.template.spec.serviceAccountName}' "$OPNS")" $SA
expect "Deployment runAsNonRoot" "$(jp deployment/$SA '{.spec.template.spec.securityContext.runAsNonRoot}' "$OPNS")" true
eventually 30 "controller-manager created the operator Deployment's pod (Pending: no kubelet)" \
  bash -c "kubectl get pods -n $OPNS -l app.kubernetes.io/name=guessgame-operator -o name | grep -q ."
check "the sample manifests/guessgame.yaml passes the CRD's schema (server dry run)" \
  kubectl apply --dry-run=server -n default -f manifests/guessgame.yaml
refused() { # <replicas>: the API server refuses the sample with this spec.replicas
  local out
  out="$(sed "s/^  replicas: 5$/  replicas: $1/" manifests/guessgame.yaml | kubectl apply --dry-run=server -n default -f - 2>&1)" &&
    return 1
  grep -q "spec.replicas" <<<"$out"
}
check "the schema refuses spec.replicas 4 (even)" refused 4
check "the schema refuses spec.replicas 11 (> 9)" refused 11

# --- the operator, with the chart's ServiceAccount RBAC ---------------------------------------------------
step "ServiceAccount kubeconfig"
OPKC="$WORK/operator.kubeconfig"
"$K8S_HARNESS_DIR/sa-kubeconfig.sh" "$WORK" "$OPNS" "$SA" "$OPKC" 2>/dev/null
can() { kubectl --kubeconfig="$OPKC" auth can-i "$@" >/dev/null 2>&1; }
cannot() { ! can "$@"; }
check "SA may list guessgames in all namespaces" can list guessgames.guessgame.dev -A
check "SA may patch guessgames/status" can patch guessgames.guessgame.dev --subresource=status -n "$NS"
check "SA may delete pods" can delete pods -n "$NS"
check "SA may create events.k8s.io events" can create events.events.k8s.io -n "$NS"
check "SA may NOT patch guessgames (spec)" cannot patch guessgames.guessgame.dev -n "$NS"
check "SA may NOT delete statefulsets" cannot delete statefulsets.apps -n "$NS"
check "SA may NOT read secrets" cannot get secrets -n "$NS"
check "SA may NOT patch pod status" cannot patch pods --subresource=status -n "$NS"

step "starting $REPLICAS guessgame-node processes in pod mode on loopback"
# Ports <prefix>0..<prefix>2: the operator reaches member i at 127.0.0.1:<prefix>i.
port_free() { ! ss -Htan "sport = :$1" 2>/dev/null | grep -q . && ! (: <"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
read -r eph_lo _ </proc/sys/net/ipv4/ip_local_port_range
PREFIX=""
for ((try = 0; try < 100; try++)); do
  p=$((1100 + RANDOM % 1900)) # ports 11000..29999
  (((p + 1) * 10 > eph_lo)) && continue
  ok=1
  for ((i = 0; i < 10; i++)); do port_free "$p$i" || ok=0; done # ordinals 0..8 (scaling), 9: spare
  ((ok)) && PREFIX=$p && break
done
[[ -n $PREFIX ]] || die "no free block of loopback ports for the nodes"
TEMPLATE="127.0.0.1:${PREFIX}{ordinal}"
NODE_PID=()
start_node() { # <ordinal>: the pod's container, in pod mode (GUESSGAME_REPLICAS: the bootstrap size;
  # a pod past it starts outside the configuration and waits for the operator to add it)
  local i=$1
  mkdir -p "$WORK/nodes/$GG-$i"
  GUESSGAME_REPLICAS=$REPLICAS POD_NAME="$GG-$i" POD_NAMESPACE=$NS GUESSGAME_PEER_TEMPLATE="$TEMPLATE" \
    GUESSGAME_HEARTBEAT_INTERVAL_MS=100 GUESSGAME_ELECTION_TIMEOUT_MS=1000 \
    "$NODE_BIN" --listen "127.0.0.1:$PREFIX$i" --data-dir "$WORK/nodes/$GG-$i" \
    </dev/null >>"$LOGS/node-$i.log" 2>&1 &
  NODE_PID[i]=$!
  PIDS+=("$!")
}
for ((i = 0; i < REPLICAS; i++)); do start_node "$i"; done
log "members at $TEMPLATE (pids ${NODE_PID[*]})"

step "starting guessgame-operator with the ServiceAccount kubeconfig"
OP_PID="" OP_LOG="" OP_HTTP=""
start_operator() { # <log file name>: an operator process on the host (the first one, or a
  # fresh one after an interruption: the same environment); sets OP_PID, OP_LOG, OP_HTTP
  OP_LOG="$LOGS/$1"
  OP_HTTP="127.0.0.1:$(free_port "$(for ((i = 0; i < 10; i++)); do printf '%s ' "$PREFIX$i"; done)")"
  KUBECONFIG="$OPKC" GUESSGAME_MEMBER_ADDRESS="$TEMPLATE" GUESSGAME_OPERATOR_HTTP_ADDR="$OP_HTTP" \
    GUESSGAME_OPERATOR_LOG_FORMAT=json GUESSGAME_OPERATOR_UNRESPONSIVE_SECONDS=$UNRESPONSIVE \
    GUESSGAME_OPERATOR_REQUEUE_SECONDS=2 RUST_LOG=info,guessgame_operator=debug \
    "$OPERATOR_BIN" </dev/null >"$OP_LOG" 2>&1 &
  OP_PID=$!
  PIDS+=("$OP_PID")
}
OP_RC=""
term_operator() { # SIGTERM the operator and wait for it to exit (10 s at most); sets OP_RC
  local i
  kill -TERM "$OP_PID"
  for ((i = 0; i < 100; i++)); do kill -0 "$OP_PID" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$OP_PID" 2>/dev/null && fail "operator (pid $OP_PID) still running 10s after SIGTERM"
  set +e
  wait "$OP_PID"
  OP_RC=$?
  set -e
}
start_operator operator.log
eventually 30 "operator /readyz (CRD served, controller running)" curl -fsS "http://$OP_HTTP/readyz"
check "operator /healthz" curl -fsS "http://$OP_HTTP/healthz"
check "operator logs are JSON lines" bash -c "head -n 3 '$OP_LOG' | jq -e . >/dev/null"

# --- the GuessGame -------------------------------------------------------------------------------------
step "kubectl apply a GuessGame ($REPLICAS replicas: manifests/guessgame.yaml with replicas changed)"
kubectl create namespace "$NS" >/dev/null
sed "s/^  replicas: 5$/  replicas: $REPLICAS/" manifests/guessgame.yaml >"$WORK/guessgame.yaml"
grep -q "^  replicas: $REPLICAS$" "$WORK/guessgame.yaml" || die "could not set replicas in the sample"
check "kubectl apply -f guessgame.yaml" kubectl apply -n "$NS" -f "$WORK/guessgame.yaml"
UID_GG="$(jp gg/$GG '{.metadata.uid}')"

step "owned objects"
eventually 30 "operator applied ConfigMap, Services, StatefulSet, PodDisruptionBudget" \
  kubectl get -n "$NS" configmap/$GG-config service/$GG-headless service/$GG statefulset/$GG poddisruptionbudget/$GG
for obj in configmap/$GG-config service/$GG-headless service/$GG statefulset/$GG poddisruptionbudget/$GG; do
  expect "$obj owner" "$(jp "$obj" '{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].uid}/{.metadata.ownerReferences[0].controller}/{.metadata.ownerReferences[0].blockOwnerDeletion}')" \
    "GuessGame/$GG/$UID_GG/true/true"
  check "$obj is server-side applied by guessgame-operator" \
    bash -c "kubectl get $obj -n $NS -o jsonpath='{.metadata.managedFields[?(@.operation==\"Apply\")].manager}' | grep -qw guessgame-operator"
done
expect "ConfigMap GUESSGAME_REPLICAS" "$(jp configmap/$GG-config '{.data.GUESSGAME_REPLICAS}')" "$REPLICAS"
expect "ConfigMap GUESSGAME_SERVICE" "$(jp configmap/$GG-config '{.data.GUESSGAME_SERVICE}')" "$GG-headless"
expect "headless Service clusterIP" "$(jp service/$GG-headless '{.spec.clusterIP}')" None
expect "headless Service publishNotReadyAddresses" "$(jp service/$GG-headless '{.spec.publishNotReadyAddresses}')" true
expect "headless Service port" "$(jp service/$GG-headless '{.spec.ports[0].port}')" 7100
check "client Service has a cluster IP" bash -c "[[ \$(kubectl get svc $GG -n $NS -o jsonpath='{.spec.clusterIP}') =~ ^10\\. ]]"
expect "client Service publishes Ready members only" "$(jp service/$GG '{.spec.publishNotReadyAddresses}')" ""
expect "StatefulSet replicas" "$(jp sts/$GG '{.spec.replicas}')" "$REPLICAS"
expect "StatefulSet podManagementPolicy" "$(jp sts/$GG '{.spec.podManagementPolicy}')" Parallel
expect "StatefulSet serviceName" "$(jp sts/$GG '{.spec.serviceName}')" "$GG-headless"
expect "StatefulSet PVC retention (whenDeleted/whenScaled)" "$(jp sts/$GG '{.spec.persistentVolumeClaimRetentionPolicy.whenDeleted}/{.spec.persistentVolumeClaimRetentionPolicy.whenScaled}')" Retain/Delete
expect "volumeClaimTemplate" "$(jp sts/$GG '{.spec.volumeClaimTemplates[0].metadata.name}/{.spec.volumeClaimTemplates[0].spec.resources.requests.storage}/{.spec.volumeClaimTemplates[0].spec.accessModes[0]}')" data/1Gi/ReadWriteOnce
C='{.spec.template.spec.containers[0]'
expect "container image, pull policy" "$(jp sts/$GG "$C.image}/$C.imagePullPolicy}")" guessgame-node:0.1.0/IfNotPresent
expect "readiness probe: gRPC health on 7100" "$(jp sts/$GG "$C.readinessProbe.grpc.port}")" 7100
expect "liveness probe: TCP on the grpc port" "$(jp sts/$GG "$C.livenessProbe.tcpSocket.port}")" grpc
expect "data volume mount" "$(jp sts/$GG "$C.volumeMounts[?(@.name==\"data\")].mountPath}")" /data
expect "container securityContext (readOnlyRootFilesystem/allowPrivilegeEscalation/drop)" \
  "$(jp sts/$GG "$C.securityContext.readOnlyRootFilesystem}/$C.securityContext.allowPrivilegeEscalation}/$C.securityContext.capabilities.drop[0]}")" true/false/ALL
P='{.spec.template.spec.securityContext'
expect "pod securityContext (runAsNonRoot/runAsUser/fsGroup/seccomp)" \
  "$(jp sts/$GG "$P.runAsNonRoot}/$P.runAsUser}/$P.fsGroup}/$P.seccompProfile.type}")" true/10001/10001/RuntimeDefault
expect "POD_NAME from the downward API" "$(jp sts/$GG "$C.env[?(@.name==\"POD_NAME\")].valueFrom.fieldRef.fieldPath}")" metadata.name
expect "envFrom the ConfigMap" "$(jp sts/$GG "$C.envFrom[0].configMapRef.name}")" "$GG-config"
expect "PDB maxUnavailable (3 members: quorum 2)" "$(jp pdb/$GG '{.spec.maxUnavailable}')" 1
expect "PDB unhealthyPodEvictionPolicy" "$(jp pdb/$GG '{.spec.unhealthyPodEvictionPolicy}')" AlwaysAllow

step "pods and claims, created by the controller-manager"
pod_count() { kubectl get pods -n "$NS" -l guessgame.dev/instance=$GG -o name | wc -l; }
eventually 60 "StatefulSet controller created $REPLICAS pods (Parallel)" bash -c "[[ \$(kubectl get pods -n $NS -l guessgame.dev/instance=$GG -o name | wc -l) == $REPLICAS ]]"
expect "pod owner" "$(jp pod/$GG-0 '{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}')" "StatefulSet/$GG"
eventually 30 "PVCs data-$GG-0..$((REPLICAS - 1)) created from the claim template" \
  bash -c "[[ \$(kubectl get pvc -n $NS -o name | grep -c 'data-$GG-') == $REPLICAS ]]"
expect "PDB status computed by the disruption controller (expected pods)" \
  "$(kubectl wait pdb/$GG -n "$NS" --for=jsonpath='{.status.expectedPods}'=$REPLICAS --timeout=30s >/dev/null 2>&1 && jp pdb/$GG '{.status.expectedPods}')" "$REPLICAS"

# As the kubelet: the containers run and the readiness probe passes. No pod IP: the operator
# reaches the members through its address template, and the endpoints controllers refuse
# loopback addresses anyway.
pod_status() { # <pod> <ready: true|false> [crash]
  local now pod=$1 cond=True state
  now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  [[ $2 == true ]] || cond=False
  state="{\"running\":{\"startedAt\":\"$now\"}}"
  local restarts=0 phase=Running
  if [[ ${3:-} == crash ]]; then
    state='{"waiting":{"reason":"CrashLoopBackOff","message":"back-off 40s restarting failed container"}}'
    restarts=5
  fi
  kubectl patch pod "$pod" -n "$NS" --subresource=status --type=merge -p "$(
    cat <<EOF
{"status":{"phase":"$phase","startTime":"$now",
 "conditions":[{"type":"Ready","status":"$cond","lastTransitionTime":"$now"},
               {"type":"ContainersReady","status":"$cond","lastTransitionTime":"$now"}],
 "containerStatuses":[{"name":"node","image":"guessgame-node:0.1.0","imageID":"","ready":$2,
   "restartCount":$restarts,"started":$([[ ${3:-} == crash ]] && echo false || echo true),"state":$state}]}}
EOF
  )" >/dev/null
}
for ((i = 0; i < REPLICAS; i++)); do pod_status "$GG-$i" true; done
eventually 30 "StatefulSet readyReplicas = $REPLICAS (pods patched Running/Ready)" \
  bash -c "[[ \$(kubectl get sts $GG -n $NS -o jsonpath='{.status.readyReplicas}') == $REPLICAS ]]"

# --- status with real members ------------------------------------------------------------------------
step "status from the real members"
st() { jp gg/$GG "{.status.$1}"; }
cond() { jp gg/$GG "{.status.conditions[?(@.type==\"$1\")].status}"; }
cond_is() { [[ $(cond "$1") == "$2" ]]; } # <type> <status>
st_is() { [[ $(st "$1") == "$2" ]]; }     # <field> <value>
healthy() {
  [[ -n $(st leader) && $(st readyReplicas) == "$REPLICAS" && $(cond Available) == True ]]
}
eventually 60 "status: a leader, readyReplicas $REPLICAS, Available=True" healthy
LEADER="$(st leader)" EPOCH="$(st epoch)"
log "   leader $LEADER, epoch $EPOCH"
check "status.epoch > 0" test "$EPOCH" -gt 0
expect "status.replicas" "$(st replicas)" "$REPLICAS"
expect "status.observedGeneration" "$(st observedGeneration)" "$(jp gg/$GG '{.metadata.generation}')"
expect "status.members roles" "$(jp gg/$GG '{range .status.members[*]}{.role}{"\n"}{end}' | sort | tr '\n' ' ')" "follower follower leader "
expect "status.members pods" "$(jp gg/$GG '{.status.members[*].pod}')" "$GG-0 $GG-1 $GG-2"
expect "status.members all ready" "$(jp gg/$GG '{.status.members[*].ready}')" "true true true"
expect "status.members node ids are the pod names" "$(jp gg/$GG '{.status.members[*].nodeId}')" "$GG-0 $GG-1 $GG-2"
expect "the leader's member entry" "$(jp gg/$GG "{.status.members[?(@.pod==\"$LEADER\")].role}")" leader
check "status.round and status.lastCommitted are set" bash -c "[[ -n \$(kubectl get gg $GG -n $NS -o jsonpath='{.status.round}') && -n \$(kubectl get gg $GG -n $NS -o jsonpath='{.status.lastCommitted}') ]]"
expect "Degraded" "$(cond Degraded)" False
eventually 15 "Progressing=False (all members serve, rollout complete)" cond_is Progressing False
check "kubectl get gg shows Leader and Epoch columns" bash -c "kubectl get gg -n $NS | tee /dev/stderr | grep -E \"^$GG +$REPLICAS +$REPLICAS +$LEADER +$EPOCH \""
events() { # <reason>: the notes of this GuessGame's Events with that reason
  kubectl get events -n "$NS" -o json |
    jq -r --arg r "$1" --arg n "$GG" '.items[] | select(.reason == $r and .involvedObject.name == $n) | .message'
}
has_event() { events "$1" | grep -F -- "$2" >/dev/null; } # <reason> <text> (grep reads all: no SIGPIPE)
eventually 15 "Event LeaderElected: $LEADER leads" has_event LeaderElected "$LEADER leads in epoch $EPOCH"
# What `kubectl exec demo-0 -- guessgame read` runs: the client in a member's environment.
in_pod() { # <ordinal> <command...>
  local i=$1
  shift
  env GUESSGAME_REPLICAS=$REPLICAS GUESSGAME_STATEFULSET=$GG GUESSGAME_SERVICE=$GG-headless POD_NAME="$GG-$i" \
    POD_NAMESPACE=$NS GUESSGAME_PEER_TEMPLATE="$TEMPLATE" timeout 30 "$@"
}
check "guessgame read, as with kubectl exec in a member pod" bash -c "$(declare -f in_pod); $(declare -p REPLICAS GG NS TEMPLATE); in_pod 1 '$CLIENT_BIN' read | grep -i round"

# --- leader kill ------------------------------------------------------------------------------------------
step "killing the leader's process ($LEADER)"
L_ORD="${LEADER##*-}"
t_kill=${EPOCHREALTIME/./}
kill -KILL "${NODE_PID[L_ORD]}"
wait "${NODE_PID[L_ORD]}" 2>/dev/null || true
pod_status "$LEADER" false # the kubelet's readiness probe fails
new_leader() { local l; l="$(st leader)"; [[ -n $l && $l != "$LEADER" ]]; }
eventually 20 "a new leader in status.leader" new_leader
t_new_leader_ms=$(((${EPOCHREALTIME/./} - t_kill) / 1000))
t_new_leader="$((t_new_leader_ms / 1000)).$(printf %03d $((t_new_leader_ms % 1000)))"
NEW_LEADER="$(st leader)" NEW_EPOCH="$(st epoch)"
log "   new leader $NEW_LEADER in epoch $NEW_EPOCH, shown ${t_new_leader}s after the kill"
check "new epoch $NEW_EPOCH > $EPOCH" test "$NEW_EPOCH" -gt "$EPOCH"
expect "the killed member's role" "$(jp gg/$GG "{.status.members[?(@.pod==\"$LEADER\")].role}")" unreachable
# "(previously demo-2)" only when no pass saw the election under way (then: LeaderLost first).
eventually 15 "Event LeaderElected: $NEW_LEADER leads in epoch $NEW_EPOCH" \
  has_event LeaderElected "$NEW_LEADER leads in epoch $NEW_EPOCH"
eventually 15 "Available=True again with 2 of 3 serving" \
  bash -c "[[ \$(kubectl get gg $GG -n $NS -o jsonpath='{.status.conditions[?(@.type==\"Available\")].status}/{.status.readyReplicas}') == True/2 ]]"

step "restart rule: the killed member's pod is Running but silent for ${UNRESPONSIVE}s"
UID_KILLED="$(jp pod/"$LEADER" '{.metadata.uid}')"
recreated() { local u; u="$(jp pod/"$1" '{.metadata.uid}' 2>/dev/null)" && [[ -n $u && $u != "$2" ]]; }
eventually $((UNRESPONSIVE + 30)) "operator deleted $LEADER and the StatefulSet recreated it" recreated "$LEADER" "$UID_KILLED"
expect "status.restarts" "$(st restarts)" 1
eventually 15 "Event MemberRestarted for $LEADER (not answering)" \
  has_event MemberRestarted "deleted pod $LEADER (running but not answering"
# As the kubelet: the new pod's container starts (the same data directory: its volume).
start_node "$L_ORD"
pod_status "$LEADER" true
eventually 30 "the restarted member rejoins: readyReplicas $REPLICAS, Available" healthy
expect "$LEADER rejoined as" "$(jp gg/$GG "{.status.members[?(@.pod==\"$LEADER\")].role}")" follower

# --- scaling ------------------------------------------------------------------------------------------------
# As the kubelet: a node process for every member pod the controller-manager creates, none for
# the ones it deletes. A pod's volume is its data directory, kept while its PVC is the same.
# The ordinals in KUBELET_HOLD (space-separated) are left Pending: their container does not start.
KUBELET_HOLD=""
declare -A POD_UID=() PVC_UID=()
for ((i = 0; i < REPLICAS; i++)); do
  POD_UID[$i]="$(jp pod/$GG-$i '{.metadata.uid}')"
  PVC_UID[$i]="$(jp pvc/data-$GG-$i '{.metadata.uid}')"
done
kubelet_sync() {
  local i uid pvc
  for ((i = 0; i < 6; i++)); do
    uid="$(jp pod/$GG-$i '{.metadata.uid}' 2>/dev/null || true)"
    if [[ -n $uid ]]; then
      [[ " $KUBELET_HOLD " == *" $i "* ]] && continue
      if [[ -z ${NODE_PID[i]:-} ]] || ! kill -0 "${NODE_PID[i]}" 2>/dev/null; then
        pvc="$(jp pvc/data-$GG-$i '{.metadata.uid}' 2>/dev/null || true)"
        if [[ ${PVC_UID[$i]:-} != "$pvc" ]]; then
          rm -rf "$WORK/nodes/$GG-$i" # a new claim: an empty volume
          PVC_UID[$i]=$pvc
        fi
        start_node "$i"
        log "   kubelet: started $GG-$i (pid ${NODE_PID[i]})"
      fi
      if [[ ${POD_UID[$i]:-} != "$uid" ]]; then
        pod_status "$GG-$i" true
        POD_UID[$i]=$uid
      fi
    elif [[ -n ${NODE_PID[i]:-} ]] && kill -0 "${NODE_PID[i]}" 2>/dev/null; then
      stop_pid "${NODE_PID[i]}"
      log "   kubelet: stopped $GG-$i (pod deleted)"
      NODE_PID[i]=""
      POD_UID[$i]=""
    fi
  done
}
# synced <timeout s> <description> <command...>: eventually, acting as the kubelet meanwhile.
synced() {
  local t=$1 d=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - start >= t)) && fail "$d (not within ${t}s)"
    kubelet_sync
    sleep 0.3
  done
  pass "$d (after $((SECONDS - start))s)"
}
members_json() { # <ordinal>: `guessgame members` against that member
  timeout 30 "$CLIENT_BIN" members --node "127.0.0.1:$PREFIX$1" --output json
}
voters_at() { # <ordinal>: the committed configuration's voters, as that member reports them
  members_json "$1" | jq -r '[.committed_members[] | select(.kind == "voter") | .id] | sort | join(" ")'
}
target_at() { # <ordinal>: the open round's target, read through that member
  timeout 30 "$CLIENT_BIN" read --node "127.0.0.1:$PREFIX$1" --output json | jq -r .target
}
# Every status the operator writes, as a line: scaling from/to/step, Progressing's reason (a
# scaling step can be shorter than a poll).
WATCH_PID=""
watch_status() { # <file>
  kubectl get gg $GG -n "$NS" -w -o jsonpath='{.status.scaling.from}/{.status.scaling.to}/{.status.scaling.step}/{.status.conditions[?(@.type=="Progressing")].reason}{"\n"}' \
    >"$1" 2>/dev/null &
  WATCH_PID=$!
  PIDS+=("$WATCH_PID")
}
seen() { grep -q "$2" "$1"; } # <file> <regex>
scaled_to() { # <voters>: scaling cleared, status.replicas and readyReplicas at <voters>, Available
  [[ -z $(jp gg/$GG '{.status.scaling}') && $(st replicas) == "$1" && $(st readyReplicas) == "$1" && $(cond Available) == True ]]
}

step "a write before scaling"
check "guessgame write 77 (closes the round, opens one with target 77)" \
  bash -c "$(declare -f in_pod); $(declare -p REPLICAS GG NS TEMPLATE); in_pod 0 '$CLIENT_BIN' write 77"
expect "target read through $GG-0" "$(target_at 0)" 77
expect "members: 3 voters" "$(voters_at 0)" "$GG-0 $GG-1 $GG-2"

step "scale up: spec.replicas $REPLICAS -> 5"
t_up=$SECONDS
watch_status "$LOGS/status-scale-up.txt"
check "kubectl patch gg spec.replicas=5" kubectl patch gg $GG -n "$NS" --type=merge -p '{"spec":{"replicas":5}}'
check "kubectl get gg shows the Scaling column" bash -c "kubectl get gg $GG -n $NS | tee /dev/stderr | head -n1 | grep -qw SCALING"
synced 120 "scaled up: status.scaling cleared, 5 voters ready, Available" scaled_to 5
t_up=$((SECONDS - t_up))
sleep 1
stop_pid "$WATCH_PID"
log "   statuses seen (scaling from/to/step/Progressing reason): $(uniq "$LOGS/status-scale-up.txt" | tr '\n' ' ')"
check "status.scaling was 3 -> 5, waiting for $GG-3" seen "$LOGS/status-scale-up.txt" "^$REPLICAS/5/wait $GG-3/Scaling$"
check "status.scaling was 3 -> 5, waiting for $GG-4" seen "$LOGS/status-scale-up.txt" "^$REPLICAS/5/wait $GG-4/Scaling$"
check "status.scaling cleared at the end, Progressing not Scaling" bash -c "tail -n1 '$LOGS/status-scale-up.txt' | grep -qE '^///[A-Za-z]+$' && ! tail -n1 '$LOGS/status-scale-up.txt' | grep -q Scaling"
expect "StatefulSet replicas" "$(jp sts/$GG '{.spec.replicas}')" 5
expect "ConfigMap GUESSGAME_REPLICAS (the bootstrap size) unchanged" "$(jp configmap/$GG-config '{.data.GUESSGAME_REPLICAS}')" "$REPLICAS"
expect "status.bootstrapReplicas" "$(st bootstrapReplicas)" "$REPLICAS"
expect "PDB maxUnavailable (5 voters: quorum 3)" "$(jp pdb/$GG '{.spec.maxUnavailable}')" 2
expect "status.members membership" "$(jp gg/$GG '{.status.members[*].membership}')" "voter voter voter voter voter"
expect "guessgame members (via $GG-0): 5 voters" "$(voters_at 0)" "$GG-0 $GG-1 $GG-2 $GG-3 $GG-4"
expect "guessgame members (via the new $GG-4): 5 voters" "$(members_json 4 | jq -r .voters)" 5
eventually 15 "Event ScalingStarted" has_event ScalingStarted "scaling from $REPLICAS to 5 voters"
eventually 15 "Event StatefulSetResized to 4" has_event StatefulSetResized "$REPLICAS -> 4 replicas (pod $GG-3"
eventually 15 "Event MemberAdded $GG-3" has_event MemberAdded "$GG-3 (127.0.0.1:${PREFIX}3) added"
eventually 15 "Event StatefulSetResized to 5" has_event StatefulSetResized "4 -> 5 replicas (pod $GG-4"
eventually 15 "Event MemberAdded $GG-4" has_event MemberAdded "$GG-4 (127.0.0.1:${PREFIX}4) added"
eventually 15 "Event ScalingDone (5 voters)" has_event ScalingDone "the ensemble has 5 voters"
expect "one MemberAdded Event per member" "$(events MemberAdded | wc -l)" 2
expect "the write before scaling, read through the new $GG-4" "$(target_at 4)" 77
expect "no pod restarted by scaling" "$(st restarts)" 1

step "scale down: spec.replicas 5 -> $REPLICAS"
t_down=$SECONDS
PVC4="$(jp pvc/data-$GG-4 '{.metadata.uid}')"
watch_status "$LOGS/status-scale-down.txt"
check "kubectl patch gg spec.replicas=$REPLICAS" kubectl patch gg $GG -n "$NS" --type=merge -p "{\"spec\":{\"replicas\":$REPLICAS}}"
synced 120 "scaled down: status.scaling cleared, $REPLICAS voters ready, Available" scaled_to "$REPLICAS"
only_members_run() { # <voters>: no pods, and no node processes, past the first <voters>
  local i
  [[ $(kubectl get pods -n "$NS" -l guessgame.dev/instance=$GG -o name | wc -l) == "$1" ]] || return 1
  for ((i = $1; i < 6; i++)); do [[ -z ${NODE_PID[i]:-} ]] || ! kill -0 "${NODE_PID[i]}" 2>/dev/null || return 1; done
}
synced 30 "pods $GG-3, $GG-4 deleted, and their nodes stopped" only_members_run "$REPLICAS"
t_down=$((SECONDS - t_down))
sleep 1
stop_pid "$WATCH_PID"
log "   statuses seen (scaling from/to/step/Progressing reason): $(uniq "$LOGS/status-scale-down.txt" | tr '\n' ' ')"
check "status.scaling was 5 -> 3 (after removing $GG-4: its pod next)" seen "$LOGS/status-scale-down.txt" "^5/$REPLICAS/statefulset 4/Scaling$"
check "status.scaling cleared at the end" bash -c "tail -n1 '$LOGS/status-scale-down.txt' | grep -qE '^///[A-Za-z]+$'"
expect "StatefulSet replicas" "$(jp sts/$GG '{.spec.replicas}')" "$REPLICAS"
expect "PDB maxUnavailable (3 voters: quorum 2)" "$(jp pdb/$GG '{.spec.maxUnavailable}')" 1
expect "guessgame members: $REPLICAS voters" "$(voters_at 0)" "$GG-0 $GG-1 $GG-2"
eventually 15 "Event ScalingStarted" has_event ScalingStarted "scaling from 5 to $REPLICAS voters"
eventually 15 "Event MemberRemoved $GG-4" has_event MemberRemoved "$GG-4 removed from the configuration"
eventually 15 "Event StatefulSetResized to 4" has_event StatefulSetResized "5 -> 4 replicas"
eventually 15 "Event MemberRemoved $GG-3" has_event MemberRemoved "$GG-3 removed from the configuration"
eventually 15 "Event StatefulSetResized to $REPLICAS" has_event StatefulSetResized "4 -> $REPLICAS replicas"
eventually 15 "Event ScalingDone ($REPLICAS voters)" has_event ScalingDone "the ensemble has $REPLICAS voters"
first_removed="$(kubectl get events -n "$NS" -o json | jq -r --arg n "$GG" '[.items[] | select(.involvedObject.name == $n and .reason == "MemberRemoved")] | sort_by(.eventTime // .firstTimestamp) | .[0].message')"
check "the highest ordinal ($GG-4) was removed first" grep -q "^$GG-4 removed" <<<"$first_removed"
eventually 60 "PVC data-$GG-4 deleted with its pod (whenScaled: Delete)" \
  bash -c "[[ \$(kubectl get pvc data-$GG-4 -n $NS -o jsonpath='{.metadata.uid}' 2>/dev/null) != $PVC4 ]]"
expect "the write before scaling, read through $GG-0" "$(target_at 0)" 77
expect "no pod restarted by scaling" "$(st restarts)" 1
log "   scale up 3 -> 5 took ${t_up}s, scale down 5 -> 3 ${t_down}s"

# --- crash loop ----------------------------------------------------------------------------------------------
# (No `| head`: with pipefail, kubectl killed by SIGPIPE would abort the script.)
CRASH="$(jp gg/$GG '{range .status.members[?(@.role=="follower")]}{.pod}{"\n"}{end}')"
CRASH="${CRASH%%$'\n'*}"
step "restart rule: $CRASH in CrashLoopBackOff"
declare -A UID_BEFORE=()
for ((i = 0; i < REPLICAS; i++)); do UID_BEFORE[$GG-$i]="$(jp pod/$GG-$i '{.metadata.uid}')"; done
pod_status "$CRASH" false crash
eventually $((UNRESPONSIVE + 30)) "operator deleted $CRASH and the StatefulSet recreated it" recreated "$CRASH" "${UID_BEFORE[$CRASH]}"
eventually 10 "status.restarts = 2" st_is restarts 2
eventually 15 "Event MemberRestarted for $CRASH (CrashLoopBackOff)" \
  has_event MemberRestarted "deleted pod $CRASH (CrashLoopBackOff)"
sleep $((UNRESPONSIVE + 2)) # past the one-restart-per-period window: nothing else may go
for ((i = 0; i < REPLICAS; i++)); do
  [[ $GG-$i == "$CRASH" ]] && continue
  expect "pod $GG-$i not deleted" "$(jp pod/$GG-$i '{.metadata.uid}')" "${UID_BEFORE[$GG-$i]}"
done
expect "status.restarts still 2 (one pod deleted)" "$(st restarts)" 2
expect "MemberRestarted Events" "$(events MemberRestarted | wc -l)" 2
pod_status "$CRASH" true # the recreated pod's container runs again
eventually 30 "healthy again" healthy
check "metrics: guessgame_operator restarts counted" \
  bash -c "curl -fsS http://$OP_HTTP/metrics | tee '$LOGS/metrics.txt' | grep -E '^guessgame_operator_member_restarts_total(\\{[^}]*\\})? 2$'"
check "no reconcile failures for Forbidden (RBAC) in the operator log" bash -c "! grep -q 'Forbidden\\|forbidden' '$LOGS/operator.log'"

# --- an interrupted operator resumes scaling ---------------------------------------------------------------------
# The scaling steps follow the ensemble's committed configuration (and status.scaling), not the
# operator's memory: a fresh operator process continues where the previous one stopped, without
# repeating a step.
count_events() { events "$1" | grep -cF -- "$2" || true; }     # <reason> <text>
more_events() { (($(count_events "$1" "$2") > $3)); }           # <reason> <text> <count before>
step "operator stopped while scaling up: spec.replicas $REPLICAS -> 5, $GG-3's container held back"
before_added3="$(count_events MemberAdded "$GG-3 (")" before_added4="$(count_events MemberAdded "$GG-4 (")"
before_started="$(count_events ScalingStarted "scaling from $REPLICAS to 5 voters")"
before_done="$(count_events ScalingDone "the ensemble has 5 voters")"
before_failed="$(count_events ReconfigFailed "")"
KUBELET_HOLD=3 # as the kubelet: demo-3's pod stays Pending (an image pull that takes long)
watch_status "$LOGS/status-resume-up.txt"
check "kubectl patch gg spec.replicas=5" kubectl patch gg $GG -n "$NS" --type=merge -p '{"spec":{"replicas":5}}'
synced 60 "the operator waits for $GG-3 (status.scaling.step)" st_is scaling.step "wait $GG-3"
expect "StatefulSet replicas (a pod for $GG-3)" "$(jp sts/$GG '{.spec.replicas}')" 4
expect "pod $GG-3 phase (its container held back)" "$(jp pod/$GG-3 '{.status.phase}')" Pending
sleep 3 # a few passes (requeued every second while scaling): nothing moves without demo-3
expect "status.scaling 3s later" "$(st scaling.from)/$(st scaling.to)/$(st scaling.step)" "$REPLICAS/5/wait $GG-3"
expect "members: still $REPLICAS voters" "$(voters_at 0)" "$GG-0 $GG-1 $GG-2"
term_operator
expect "operator exit code after SIGTERM mid-scale" "$OP_RC" 0
expect "status.scaling kept with the operator stopped" "$(st scaling.from)/$(st scaling.to)/$(st scaling.step)" "$REPLICAS/5/wait $GG-3"
KUBELET_HOLD=""
kubelet_sync # demo-3's container starts
start_operator operator-resumed-up.log
log "   fresh operator pid $OP_PID (log $(basename "$OP_LOG"))"
eventually 30 "fresh operator /readyz" curl -fsS "http://$OP_HTTP/readyz"
synced 120 "the fresh operator finished the scale-up: status.scaling cleared, 5 voters ready, Available" scaled_to 5
sleep 1
stop_pid "$WATCH_PID"
log "   statuses seen (scaling from/to/step/Progressing reason): $(uniq "$LOGS/status-resume-up.txt" | tr '\n' ' ')"
check "status.scaling.from kept across the restart ($REPLICAS -> 5, waiting for $GG-4)" seen "$LOGS/status-resume-up.txt" "^$REPLICAS/5/wait $GG-4/Scaling$"
expect "guessgame members (via $GG-0): 5 voters" "$(voters_at 0)" "$GG-0 $GG-1 $GG-2 $GG-3 $GG-4"
expect "guessgame members (via $GG-3): 5 voters" "$(members_json 3 | jq -r .voters)" 5
expect "StatefulSet replicas" "$(jp sts/$GG '{.spec.replicas}')" 5
expect "status.members membership" "$(jp gg/$GG '{.status.members[*].membership}')" "voter voter voter voter voter"
eventually 15 "Event ScalingDone (5 voters)" more_events ScalingDone "the ensemble has 5 voters" "$before_done"
expect "MemberAdded Events for $GG-3 in this scaling (no double add)" $(($(count_events MemberAdded "$GG-3 (") - before_added3)) 1
expect "MemberAdded Events for $GG-4 in this scaling" $(($(count_events MemberAdded "$GG-4 (") - before_added4)) 1
expect "ScalingStarted Events in this scaling (the fresh operator continued it)" $(($(count_events ScalingStarted "scaling from $REPLICAS to 5 voters") - before_started)) 1
expect "ReconfigFailed Events in this scaling" $(($(count_events ReconfigFailed "") - before_failed)) 0
check "the fresh operator added $GG-3" grep -qF "$GG-3 (127.0.0.1:${PREFIX}3) added to the configuration" "$OP_LOG"
expect "the write before scaling, read through $GG-3" "$(target_at 3)" 77
expect "no pod restarted by scaling" "$(st restarts)" 2

step "operator killed (SIGKILL) while scaling down: spec.replicas 5 -> $REPLICAS, right after its first MemberRemoved"
before_removed3="$(count_events MemberRemoved "$GG-3 removed")" before_removed4="$(count_events MemberRemoved "$GG-4 removed")"
before_started="$(count_events ScalingStarted "scaling from 5 to $REPLICAS voters")"
before_done="$(count_events ScalingDone "the ensemble has $REPLICAS voters")"
before_failed="$(count_events ReconfigFailed "")"
log_lines="$(wc -l <"$OP_LOG")"
watch_status "$LOGS/status-resume-down.txt"
check "kubectl patch gg spec.replicas=$REPLICAS" kubectl patch gg $GG -n "$NS" --type=merge -p "{\"spec\":{\"replicas\":$REPLICAS}}"
# The kill: at the end of the pass that removed demo-4 (its Event published, its status written),
# read from the operator's log as it is written; the next steps (the StatefulSet to 4, removing
# demo-3) are passes away. (A read loop, not awk: mawk would wait for a full input buffer.)
killed=0 seen_removal=0
while IFS= read -r line; do
  [[ $line == *"$GG-4 removed from the configuration"* ]] && seen_removal=1
  if ((seen_removal)) && [[ $line == *'"message":"reconciled"'* ]]; then
    kill -KILL "$OP_PID"
    killed=1
    break
  fi
done < <(timeout 60 tail -n "+$((log_lines + 1))" -F --pid="$OP_PID" "$OP_LOG" 2>/dev/null)
((killed)) || fail "no pass removing $GG-4 in the operator log within 60s (removal seen: $seen_removal)"
{ wait "$OP_PID" || true; } 2>/dev/null # (and no "Killed" line from the shell)
L_NOW="$(st leader)"
DOWN_VOTERS="$(voters_at "${L_NOW##*-}")" DOWN_STS="$(jp sts/$GG '{.spec.replicas}')"
log "   killed with: voters '$DOWN_VOTERS' (via $L_NOW), StatefulSet $DOWN_STS replicas, status.scaling '$(st scaling.step)'"
expect "the configuration when the operator was killed ($GG-4 removed, $GG-3 not yet)" "$DOWN_VOTERS" "$GG-0 $GG-1 $GG-2 $GG-3"
check "the StatefulSet not shrunk to $REPLICAS yet" test "$DOWN_STS" -gt "$REPLICAS"
expect "status.scaling kept with the operator killed" "$(st scaling.from)/$(st scaling.to)" "5/$REPLICAS"
start_operator operator-resumed-down.log
log "   fresh operator pid $OP_PID (log $(basename "$OP_LOG"))"
eventually 30 "fresh operator /readyz" curl -fsS "http://$OP_HTTP/readyz"
synced 120 "the fresh operator finished the scale-down: status.scaling cleared, $REPLICAS voters ready, Available" scaled_to "$REPLICAS"
synced 30 "pods $GG-3, $GG-4 deleted, and their nodes stopped" only_members_run "$REPLICAS"
sleep 1
stop_pid "$WATCH_PID"
log "   statuses seen (scaling from/to/step/Progressing reason): $(uniq "$LOGS/status-resume-down.txt" | tr '\n' ' ')"
expect "guessgame members: $REPLICAS voters" "$(voters_at 0)" "$GG-0 $GG-1 $GG-2"
expect "StatefulSet replicas" "$(jp sts/$GG '{.spec.replicas}')" "$REPLICAS"
expect "PDB maxUnavailable (3 voters: quorum 2)" "$(jp pdb/$GG '{.spec.maxUnavailable}')" 1
eventually 15 "Event ScalingDone ($REPLICAS voters)" more_events ScalingDone "the ensemble has $REPLICAS voters" "$before_done"
expect "MemberRemoved Events for $GG-4 in this scaling" $(($(count_events MemberRemoved "$GG-4 removed") - before_removed4)) 1
expect "MemberRemoved Events for $GG-3 in this scaling" $(($(count_events MemberRemoved "$GG-3 removed") - before_removed3)) 1
expect "ScalingStarted Events in this scaling (the fresh operator continued it)" $(($(count_events ScalingStarted "scaling from 5 to $REPLICAS voters") - before_started)) 1
expect "ReconfigFailed Events in this scaling" $(($(count_events ReconfigFailed "") - before_failed)) 0
check "the fresh operator removed $GG-3" grep -qF "$GG-3 removed from the configuration" "$OP_LOG"
eventually 60 "PVCs data-$GG-3, data-$GG-4 deleted with their pods (whenScaled: Delete)" \
  bash -c "[[ \$(kubectl get pvc -n $NS -o name | grep -c 'data-$GG-') == $REPLICAS ]]"
expect "the write before scaling, read through $GG-0" "$(target_at 0)" 77
expect "no pod restarted by scaling" "$(st restarts)" 2
check "no Forbidden (RBAC) in the fresh operators' logs" \
  bash -c "! grep -q 'Forbidden\\|forbidden' '$LOGS/operator-resumed-up.log' '$LOGS/operator-resumed-down.log'"

# --- deletion: garbage collection through the owner references ------------------------------------------------
step "deleting the GuessGame"
check "kubectl delete gg $GG" kubectl delete gg $GG -n "$NS" --wait=true --timeout=30s
gone() { [[ -z $(kubectl get -n "$NS" statefulset,service,configmap,poddisruptionbudget -l guessgame.dev/instance=$GG -o name 2>/dev/null) ]]; }
eventually 60 "garbage collector deleted the owned objects" gone
expect "PVCs of the members retained (whenDeleted: Retain)" "$(kubectl get pvc -n "$NS" -o name | grep -c "data-$GG-")" "$REPLICAS"

step "operator shutdown"
term_operator
expect "operator exit code after SIGTERM" "$OP_RC" 0
check "operator logged a graceful stop" grep -q "controller stopped" "$OP_LOG"
t_tests=$((SECONDS - t_tests0))

log "times: cargo build ${t_cargo}s, control-plane build/cache check ${t_cp_build}s, control plane start ${t_cp_up}s, tests ${t_tests}s; new leader shown ${t_new_leader}s after the kill"
echo "operator-e2e: $passed passed, 0 failed"
