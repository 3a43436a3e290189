#!/usr/bin/env bash
# shellcheck disable=SC2016 # bash -c snippets expand in the child shell
# Smoke test of the offline control-plane harness: build (cached), start etcd +
# kube-apiserver + kube-controller-manager on loopback, exercise kubectl, a CRD, a
# StatefulSet (Pods created by the controller-manager, status patched by hand since no
# kubelet runs), helm, and ServiceAccount RBAC; then stop and clean up.
# Exits non-zero on any failure. Ends with "smoke: N passed, M failed".
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

t_start=$SECONDS
passed=0 failed=0
ok() { passed=$((passed + 1)); log "PASS: $*"; }
fail() { failed=$((failed + 1)); log "FAIL: $*"; }
# check <description> <command...>
check() { local d=$1; shift; if "$@" >/dev/null 2>&1; then ok "$d"; else fail "$d"; fi; }
# eventually <timeout> <description> <command...>
eventually() {
  local t=$1 d=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS - start >= t)); then fail "$d (not within ${t}s)"; return 0; fi
    sleep 0.5
  done
  ok "$d (after $((SECONDS - start))s)"
}

t0=$SECONDS
"$K8S_HARNESS_DIR/build-control-plane.sh" >/dev/null
t_build=$((SECONDS - t0))

WORK="$(mktemp -d "${TMPDIR:-/tmp}/guessgame-k8s-smoke.XXXXXX")"
cleanup() {
  local rc=$?
  "$K8S_HARNESS_DIR/stop-control-plane.sh" "$WORK" --clean || rc=1
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

t0=$SECONDS
env_lines="$("$K8S_HARNESS_DIR/start-control-plane.sh" "$WORK")" || die "start-control-plane.sh failed"
eval "$env_lines"
t_up=$((SECONDS - t0))
[[ $KUBECONFIG == "$WORK/admin.kubeconfig" ]] || die "start-control-plane.sh did not export KUBECONFIG"
[[ "$(command -v kubectl)" == "$K8S_BIN_DIR/kubectl" ]] || die "kubectl on PATH is not the built one"
t0=$SECONDS

# --- versions -------------------------------------------------------------------------------
server_version="$(kubectl version -o json | sed -n '/serverVersion/,/}/s/.*"gitVersion": "\([^"]*\)".*/\1/p')"
client_version="$(kubectl version --client -o json | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p' | sed -n 1p)"
check "kubectl version: server $server_version == $KUBERNETES_VERSION" [ "$server_version" = "$KUBERNETES_VERSION" ]
check "kubectl version: client $client_version == $KUBERNETES_VERSION" [ "$client_version" = "$KUBERNETES_VERSION" ]
helm_version="$(helm version --short)"
check "helm version $helm_version is $HELM_VERSION" grep -q "^$HELM_VERSION" <<<"$helm_version"
etcd_version="$(etcd --version)"
etcd_version="${etcd_version%%$'\n'*}"
check "etcd version '$etcd_version' is $ETCD_VERSION" grep -q "${ETCD_VERSION#v}" <<<"$etcd_version"

# --- a tiny CRD with a status subresource ------------------------------------------------------
kubectl apply -f - >/dev/null <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.smoke.guessgame.dev
spec:
  group: smoke.guessgame.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              replicas: {type: integer, minimum: 1, maximum: 9}
          status:
            type: object
            properties:
              ready: {type: integer}
EOF
check "CRD established" kubectl wait --for=condition=Established --timeout=30s crd/widgets.smoke.guessgame.dev
kubectl apply -f - >/dev/null <<'EOF'
apiVersion: smoke.guessgame.dev/v1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {replicas: 3}
EOF
check "custom resource created and read back by short name" \
  test "$(kubectl get wdg w1 -o jsonpath='{.spec.replicas}')" = 3
check "CRD schema is enforced (replicas: 10 refused)" \
  bash -c '! kubectl patch widget w1 --type=merge -p "{\"spec\":{\"replicas\":10}}"'
kubectl patch widget w1 --subresource=status --type=merge -p '{"status":{"ready":2}}' >/dev/null
check "custom resource status subresource patched" \
  test "$(kubectl get widget w1 -o jsonpath='{.status.ready}')" = 2

# --- StatefulSet: the controller-manager creates Pods (and PVCs) ---------------------------------
kubectl create namespace smoke >/dev/null
kubectl apply -n smoke -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Service
metadata: {name: sts-smoke}
spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector: {app: sts-smoke}
  ports: [{name: grpc, port: 7000}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: sts-smoke}
spec:
  serviceName: sts-smoke
  replicas: 3
  podManagementPolicy: Parallel
  selector: {matchLabels: {app: sts-smoke}}
  template:
    metadata: {labels: {app: sts-smoke}}
    spec:
      containers:
      - name: node
        image: guessgame-node:smoke
        imagePullPolicy: IfNotPresent
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 1Mi}}
EOF
count_pods() { test "$(kubectl get pods -n smoke -l app=sts-smoke -o name | wc -l)" -eq "$1"; }
eventually 60 "controller-manager created 3 StatefulSet pods" count_pods 3
check "pods are owned by the StatefulSet" \
  test "$(kubectl get pod -n smoke sts-smoke-0 -o jsonpath='{.metadata.ownerReferences[0].kind}')" = StatefulSet
check "PVCs created from volumeClaimTemplates" \
  test "$(kubectl get pvc -n smoke -o name | wc -l)" -eq 3
eventually 30 "pods got the default ServiceAccount token volume (admission)" \
  bash -c 'kubectl get pod -n smoke sts-smoke-0 -o jsonpath="{.spec.volumes[*].name}" | grep -q kube-api-access'

# No kubelet: drive pod status by patching the status subresource.
now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
kubectl patch pod -n smoke sts-smoke-0 --subresource=status --type=merge -p "$(cat <<EOF
{"status":{"phase":"Running","podIP":"127.0.0.1","podIPs":[{"ip":"127.0.0.1"}],"startTime":"$now",
 "conditions":[{"type":"Ready","status":"True","lastTransitionTime":"$now"},
               {"type":"ContainersReady","status":"True","lastTransitionTime":"$now"}],
 "containerStatuses":[{"name":"node","image":"guessgame-node:smoke","imageID":"","ready":true,
   "restartCount":0,"started":true,"state":{"running":{"startedAt":"$now"}}}]}}
EOF
)" >/dev/null
check "pod status patched to Running/Ready" \
  test "$(kubectl get pod -n smoke sts-smoke-0 -o jsonpath='{.status.phase}/{.status.conditions[?(@.type=="Ready")].status}')" = "Running/True"
eventually 30 "StatefulSet controller counts the Ready pod (readyReplicas=1)" \
  bash -c 'test "$(kubectl get sts -n smoke sts-smoke -o jsonpath="{.status.readyReplicas}")" = 1'
kubectl patch pod -n smoke sts-smoke-1 --subresource=status --type=merge -p "$(cat <<EOF
{"status":{"phase":"Running","startTime":"$now",
 "conditions":[{"type":"Ready","status":"False","lastTransitionTime":"$now"}],
 "containerStatuses":[{"name":"node","image":"guessgame-node:smoke","imageID":"","ready":false,
   "restartCount":5,"started":false,
   "state":{"waiting":{"reason":"CrashLoopBackOff","message":"back-off restarting failed container"}},
   "lastState":{"terminated":{"exitCode":1,"reason":"Error","startedAt":"$now","finishedAt":"$now"}}}]}}
EOF
)" >/dev/null
check "pod status patched to CrashLoopBackOff" \
  test "$(kubectl get pod -n smoke sts-smoke-1 -o jsonpath='{.status.containerStatuses[0].state.waiting.reason}')" = CrashLoopBackOff
old_uid="$(kubectl get pod -n smoke sts-smoke-1 -o jsonpath='{.metadata.uid}')"
# No kubelet confirms the deletion: force it, as a test of the operator's restart rule would.
kubectl delete pod -n smoke sts-smoke-1 --grace-period=0 --force >/dev/null 2>&1
recreated() { local u; u="$(kubectl get pod -n smoke sts-smoke-1 -o jsonpath='{.metadata.uid}')" && [[ -n $u && $u != "$old_uid" ]]; }
eventually 30 "deleted pod is recreated by the StatefulSet controller" recreated
eventually 30 "StatefulSet controller recorded SuccessfulCreate Events" \
  bash -c 'kubectl get events -n smoke --field-selector reason=SuccessfulCreate -o name | grep -q .'
kubectl apply --server-side --field-manager=guessgame-smoke -n smoke -f - >/dev/null <<'EOF'
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata: {name: sts-smoke}
spec: {maxUnavailable: 1, selector: {matchLabels: {app: sts-smoke}}}
EOF
check "server-side apply of a PodDisruptionBudget records its field manager" \
  bash -c 'kubectl get pdb -n smoke sts-smoke -o jsonpath="{.metadata.managedFields[*].manager}" | grep -qw guessgame-smoke'
eventually 30 "disruption controller computed the PDB status" \
  bash -c 'test -n "$(kubectl get pdb -n smoke sts-smoke -o jsonpath="{.status.observedGeneration}")"'
kubectl scale sts -n smoke sts-smoke --replicas=1 >/dev/null
eventually 30 "scale down to 1 removes pods" count_pods 1

# --- helm against the real API server ----------------------------------------------------------
hdir="$WORK/helm"
mkdir -p "$hdir"
export HELM_CACHE_HOME="$hdir/cache" HELM_CONFIG_HOME="$hdir/config" HELM_DATA_HOME="$hdir/data"
helm create "$hdir/smokechart" >/dev/null
check "helm lint" helm lint "$hdir/smokechart"
check "helm install" helm install smoke "$hdir/smokechart" -n helm-smoke --create-namespace
check "helm list shows the release deployed" \
  bash -c 'helm list -n helm-smoke -o json | grep -q "\"status\":\"deployed\""'
check "helm installed a Deployment" kubectl get deployment -n helm-smoke smoke-smokechart
eventually 30 "controller-manager created the Deployment's ReplicaSet pod" \
  bash -c 'test "$(kubectl get pods -n helm-smoke -o name | wc -l)" -ge 1'
check "helm uninstall" helm uninstall smoke -n helm-smoke

# --- a ServiceAccount kubeconfig has exactly its RBAC ---------------------------------------------
kubectl create namespace rbac-smoke >/dev/null
kubectl create serviceaccount reader -n rbac-smoke >/dev/null
kubectl create role cm-reader -n rbac-smoke --verb=get,list,watch --resource=configmaps >/dev/null
kubectl create rolebinding cm-reader -n rbac-smoke --role=cm-reader --serviceaccount=rbac-smoke:reader >/dev/null
kubectl create configmap hello -n rbac-smoke --from-literal=k=v >/dev/null
SAK="$WORK/reader.kubeconfig"
"$K8S_HARNESS_DIR/sa-kubeconfig.sh" "$WORK" rbac-smoke reader "$SAK"
check "SA whoami is system:serviceaccount:rbac-smoke:reader" \
  bash -c "kubectl --kubeconfig='$SAK' auth whoami -o jsonpath='{.status.userInfo.username}' | grep -qx system:serviceaccount:rbac-smoke:reader"
check "SA may list configmaps in its namespace" kubectl --kubeconfig="$SAK" get configmaps -n rbac-smoke
check "SA may get configmap hello" kubectl --kubeconfig="$SAK" get configmap hello -n rbac-smoke
forbidden() { local out; out="$("$@" 2>&1)" && return 1; grep -q Forbidden <<<"$out"; }
check "SA is Forbidden to list secrets in its namespace" forbidden kubectl --kubeconfig="$SAK" get secrets -n rbac-smoke
check "SA is Forbidden to list configmaps in another namespace" forbidden kubectl --kubeconfig="$SAK" get configmaps -n default
check "SA is Forbidden to delete the configmap" forbidden kubectl --kubeconfig="$SAK" delete configmap hello -n rbac-smoke
check "SA is Forbidden to patch pod status" forbidden \
  kubectl --kubeconfig="$SAK" patch pod -n smoke sts-smoke-0 --subresource=status --type=merge -p '{"status":{"phase":"Failed"}}'
check "admin auth can-i patch pods/status" kubectl auth can-i patch pods --subresource=status -n smoke
t_tests=$((SECONDS - t0))

# --- stop: every process goes away ------------------------------------------------------------------
pids="$(cat "$WORK"/pids/*.pid | tr '\n' ' ')"
t0=$SECONDS
"$K8S_HARNESS_DIR/stop-control-plane.sh" "$WORK"
t_down=$((SECONDS - t0))
gone() { # none of the pids is still a live process of this workdir (zombies have no cmdline)
  local p cmd
  for p in $pids; do
    cmd="$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" || continue
    [[ $cmd == *"$WORK"* ]] && return 1
  done
  return 0
}
check "stop-control-plane.sh stopped etcd, kube-apiserver, kube-controller-manager ($pids)" gone

log "times: build(cached check) ${t_build}s, start ${t_up}s, tests ${t_tests}s, stop ${t_down}s, total $((SECONDS - t_start))s"
echo "smoke: $passed passed, $failed failed"
((failed == 0))
