#!/usr/bin/env bash
# Mint a kubeconfig that authenticates as a ServiceAccount (bearer token from the
# TokenRequest API, i.e. `kubectl create token`), so a process runs with exactly the RBAC
# that the ServiceAccount is bound to - e.g. the operator with its Helm chart's RBAC.
#
#   tests/k8s/sa-kubeconfig.sh <workdir> <namespace> <serviceaccount> <out-kubeconfig>
#
# <workdir> is the one given to start-control-plane.sh. The ServiceAccount must exist.
# Env: SA_TOKEN_DURATION (default 24h).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 4 ]] || die "usage: $0 <workdir> <namespace> <serviceaccount> <out-kubeconfig>"
WORK="$(cd "$1" && pwd)"
NS=$2 SA=$3 OUT=$4
ADMIN="$WORK/admin.kubeconfig"
[[ -f $ADMIN ]] || die "$ADMIN not found; start the control plane first"
KUBECTL="$K8S_BIN_DIR/kubectl"
[[ -x $KUBECTL ]] || KUBECTL="$(command -v kubectl)" || die "kubectl not found"

token="$("$KUBECTL" --kubeconfig="$ADMIN" create token "$SA" -n "$NS" --duration="${SA_TOKEN_DURATION:-24h}")" ||
  die "could not create a token for serviceaccount $NS/$SA"
server="$("$KUBECTL" --kubeconfig="$ADMIN" config view --raw -o jsonpath='{.clusters[0].cluster.server}')"
ca="$("$KUBECTL" --kubeconfig="$ADMIN" config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"

mkdir -p "$(dirname "$OUT")"
umask 077
cat >"$OUT" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: guessgame-test
  cluster:
    server: $server
    certificate-authority-data: $ca
users:
- name: system:serviceaccount:$NS:$SA
  user:
    token: $token
contexts:
- name: $SA@guessgame-test
  context:
    cluster: guessgame-test
    user: system:serviceaccount:$NS:$SA
    namespace: $NS
current-context: $SA@guessgame-test
EOF
log "wrote $OUT (serviceaccount $NS/$SA, namespace $NS)"
