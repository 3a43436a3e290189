#!/usr/bin/env bash
# Start a real Kubernetes control plane on loopback (the envtest approach):
# etcd + kube-apiserver + kube-controller-manager, no kubelet, no scheduler.
# cluster-up.sh uses it for a whole one-node cluster, with these settings (env):
#   GUESSGAME_K8S_NETNS=<name>     run all three inside /run/netns/<name> (nsenter --net)
#   GUESSGAME_K8S_API_BIND=<ip>    the apiserver's bind and advertise address (default 127.0.0.1)
#   GUESSGAME_K8S_SERVICE_CIDR     default 10.0.0.0/24; the `kubernetes` Service gets its first IP
#   GUESSGAME_K8S_NODES=1          real nodes will join: Node,RBAC authorization + NodeRestriction,
#                                  the `kubernetes` Endpoints kept (lease reconciler), a client
#                                  certificate for the apiserver's calls to kubelets, and
#                                  <workdir>/{kubelet,kube-scheduler,kube-proxy}.kubeconfig
#   GUESSGAME_K8S_NODE_NAME        the node whose kubelet identity that is (with _NODES=1)
#
#   eval "$(tests/k8s/start-control-plane.sh /tmp/cp)"   # sets KUBECONFIG and PATH
#   kubectl get ns
#   tests/k8s/stop-control-plane.sh /tmp/cp
#
# stdout carries only `export ...` lines (KUBECONFIG, PATH, GUESSGAME_K8S_WORKDIR);
# progress goes to stderr. Logs: <workdir>/logs/, pids: <workdir>/pids/.
# Writes <workdir>/admin.kubeconfig (client-certificate user "guessgame-admin" in
# system:masters) and <workdir>/env (the same export lines, for `source`).
# Builds the binaries first if needed (cached: seconds), see build-control-plane.sh.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -eq 1 ]] || die "usage: $0 <workdir>"
mkdir -p "$1"
WORK="$(cd "$1" && pwd)"
PKI="$WORK/pki" LOGS="$WORK/logs" PIDS="$WORK/pids"

if compgen -G "$PIDS/*.pid" >/dev/null; then
  die "$WORK already has a running control plane (pids/); stop it first: $K8S_HARNESS_DIR/stop-control-plane.sh $WORK"
fi

command -v openssl >/dev/null || die "openssl is required"
NETNS="${GUESSGAME_K8S_NETNS:-}"
API_BIND="${GUESSGAME_K8S_API_BIND:-127.0.0.1}"
SERVICE_CIDR="${GUESSGAME_K8S_SERVICE_CIDR:-10.0.0.0/24}"
WITH_NODES="${GUESSGAME_K8S_NODES:-0}"
NODE_NAME="${GUESSGAME_K8S_NODE_NAME:-}"
((WITH_NODES == 0)) || [[ -n $NODE_NAME ]] || die "GUESSGAME_K8S_NODES=1 needs GUESSGAME_K8S_NODE_NAME"
[[ -z $NETNS || -e /run/netns/$NETNS ]] || die "GUESSGAME_K8S_NETNS=$NETNS: no /run/netns/$NETNS"
[[ $SERVICE_CIDR =~ ^([0-9]+\.[0-9]+\.[0-9]+)\.0/([0-9]+)$ ]] ||
  die "GUESSGAME_K8S_SERVICE_CIDR=$SERVICE_CIDR: expected a.b.c.0/n"
KUBERNETES_SVC_IP="${BASH_REMATCH[1]}.1"
# innet <cmd...>: run in the control plane's network namespace (nsenter --net, not `ip netns
# exec`: that one also remounts /sys, which breaks runc for a kubelet started the same way).
INNET=()
[[ -z $NETNS ]] || INNET=(nsenter --net="/run/netns/$NETNS")
innet() { "${INNET[@]}" "$@"; }
command -v curl >/dev/null || die "curl is required"

"$K8S_HARNESS_DIR/build-control-plane.sh" >/dev/null
BIN="$K8S_BIN_DIR"
rm -rf "$PKI" "$LOGS" "$WORK/etcd-data" "$WORK/kcm-certs"
mkdir -p "$PKI" "$LOGS" "$PIDS" "$WORK/kcm-certs"

# --- stop everything we started if this script fails half way --------------------------
started_ok=0
cleanup_on_failure() {
  if ((started_ok == 0)); then
    log "start failed; stopping what was started (logs kept in $LOGS)"
    for f in "$LOGS"/{etcd,kube-apiserver,kube-controller-manager}.log; do
      [[ -f $f ]] && { log "--- tail $f"; tail -n 15 "$f" >&2; }
    done
    "$K8S_HARNESS_DIR/stop-control-plane.sh" "$WORK" >&2 || true
  fi
}
trap cleanup_on_failure EXIT

# --- PKI --------------------------------------------------------------------------------
log "generating CA, serving, client and service-account keys in $PKI"
ossl() { openssl "$@" 2>>"$LOGS/openssl.log"; }
ossl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout "$PKI/ca.key" -out "$PKI/ca.crt" \
  -subj "/CN=guessgame-test-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"

# sign <name> <subject> <extendedKeyUsage> [subjectAltName]
sign() {
  local name=$1 subj=$2 eku=$3 san=${4:-}
  ossl req -newkey rsa:2048 -nodes -sha256 -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n $san ]] && echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  ossl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt"
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
api_san="DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:$KUBERNETES_SVC_IP"
[[ $API_BIND == 127.0.0.1 ]] || api_san+=",IP:$API_BIND"
sign apiserver "/CN=kube-apiserver" serverAuth "$api_san"
# The apiserver's identity towards kubelets (logs, exec, port-forward), as kubeadm makes it.
sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
# Users are client certificates: CN = user name, O = groups.
sign admin "/O=system:masters/CN=guessgame-admin" clientAuth
sign kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
if ((WITH_NODES)); then
  # The Node authorizer + NodeRestriction give the first exactly a kubelet's rights; the
  # bootstrap RBAC binds the other two (system:kube-proxy to system:node-proxier).
  sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  sign kube-scheduler "/CN=system:kube-scheduler" clientAuth
  sign kube-proxy "/CN=system:kube-proxy" clientAuth
fi
# Front proxy (aggregation layer) CA and client, as kubeadm sets up; without it the
# controller-manager's authenticator keeps logging a missing requestheader CA bundle.
ossl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 -keyout "$PKI/front-proxy-ca.key" \
  -out "$PKI/front-proxy-ca.crt" -subj "/CN=guessgame-test-front-proxy-ca" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
ossl req -newkey rsa:2048 -nodes -sha256 -keyout "$PKI/front-proxy-client.key" \
  -out "$PKI/front-proxy-client.csr" -subj "/CN=front-proxy-client"
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' \
  >"$PKI/front-proxy-client.ext"
ossl x509 -req -in "$PKI/front-proxy-client.csr" -CA "$PKI/front-proxy-ca.crt" -CAkey "$PKI/front-proxy-ca.key" \
  -CAcreateserial -days 3650 -sha256 -extfile "$PKI/front-proxy-client.ext" -out "$PKI/front-proxy-client.crt"
rm -f "$PKI/front-proxy-client.csr" "$PKI/front-proxy-client.ext"
ossl genrsa -out "$PKI/sa.key" 2048
ossl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub"
chmod 600 "$PKI"/*.key

# --- process helpers --------------------------------------------------------------------------
# daemon <name> <binary> <args...>: start in its own session, detached from our stdio.
daemon() {
  local name=$1
  shift
  setsid "${INNET[@]}" "$@" </dev/null >"$LOGS/$name.log" 2>&1 &
  echo $! >"$PIDS/$name.pid"
  log "started $name (pid $!), log $LOGS/$name.log"
}
alive() { kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }
# wait_up <timeout> <name> <probe...>: 0 when the probe passes, 1 when the process exited
# (its pid file is removed), dies on timeout.
wait_up() {
  local timeout=$1 name=$2 start=$SECONDS
  shift 2
  while true; do
    if alive "$name" && "$@" >/dev/null 2>&1; then
      log "$name is up after $((SECONDS - start))s"
      return 0
    fi
    if ! alive "$name"; then
      rm -f "$PIDS/$name.pid"
      return 1
    fi
    ((SECONDS - start >= timeout)) && die "$name not up after ${timeout}s, see $LOGS/$name.log"
    sleep 0.3
  done
}
# start_daemon <name> <timeout> <start function> <probe...>: start it and wait until it is up.
# Ports are chosen free, but another process can take one before the bind: on "address
# already in use" the start function is run again (it picks new ports), up to 3 times.
start_daemon() {
  local name=$1 timeout=$2 fn=$3 attempt
  shift 3
  for attempt in 1 2 3; do
    "$fn"
    wait_up "$timeout" "$name" "$@" && return 0
    if grep -q 'address already in use' "$LOGS/$name.log" && ((attempt < 3)); then
      log "$name: port taken meanwhile ($(grep -m1 -o 'listen tcp [0-9.:]*[0-9]' "$LOGS/$name.log")); retrying on other ports"
      mv "$LOGS/$name.log" "$LOGS/$name.attempt$attempt.log"
      continue
    fi
    die "$name exited during start-up, see $LOGS/$name.log"
  done
}
PORTS_TAKEN=""
pick_port() { # <variable>: set it to a free port never handed out before in this run
  local p
  p=$(free_port "$PORTS_TAKEN")
  PORTS_TAKEN+=" $p"
  printf -v "$1" '%s' "$p"
}
save_ports() {
  printf 'ETCD_PORT=%s\nETCD_PEER_PORT=%s\nAPI_PORT=%s\nKCM_PORT=%s\n' \
    "${ETCD_PORT:-}" "${ETCD_PEER_PORT:-}" "${API_PORT:-}" "${KCM_PORT:-}" >"$WORK/ports"
}

# --- etcd -------------------------------------------------------------------------------------
ETCD_NO_FSYNC=()
etcd_help="$("$BIN/etcd" --help 2>&1 || true)" # no `| grep -q`: SIGPIPE + pipefail
if [[ $etcd_help == *--unsafe-no-fsync* ]]; then
  ETCD_NO_FSYNC=(--unsafe-no-fsync=true)
fi
run_etcd() {
  pick_port ETCD_PORT
  pick_port ETCD_PEER_PORT
  ETCD_URL="http://127.0.0.1:$ETCD_PORT"
  save_ports
  rm -rf "$WORK/etcd-data"
  daemon etcd "$BIN/etcd" \
    --name=guessgame-test \
    --data-dir="$WORK/etcd-data" \
    --listen-client-urls="$ETCD_URL" \
    --advertise-client-urls="$ETCD_URL" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="guessgame-test=http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --log-level=warn \
    "${ETCD_NO_FSYNC[@]}"
}
etcd_healthy() { innet curl -fsS --max-time 2 "$ETCD_URL/health"; }
start_daemon etcd 60 run_etcd etcd_healthy

# --- kube-apiserver ---------------------------------------------------------------------------
if ((WITH_NODES)); then
  # The `kubernetes` Service's endpoint is this apiserver (kube-proxy routes pods to it).
  # shellcheck disable=SC2054 # Node,RBAC is one value
  API_NODE_ARGS=(
    --authorization-mode=Node,RBAC
    --enable-admission-plugins=NodeRestriction
    --endpoint-reconciler-type=lease
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt"
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key"
    --kubelet-preferred-address-types=InternalIP,Hostname
  )
else
  API_NODE_ARGS=(--authorization-mode=RBAC --endpoint-reconciler-type=none)
fi
run_apiserver() {
  pick_port API_PORT
  API_URL="https://$API_BIND:$API_PORT"
  save_ports
  daemon kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers="$ETCD_URL" \
    --bind-address="$API_BIND" \
    --advertise-address="$API_BIND" \
    --secure-port="$API_PORT" \
    --cert-dir="$WORK/apiserver-certs" \
    --tls-cert-file="$PKI/apiserver.crt" \
    --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    "${API_NODE_ARGS[@]}" \
    --allow-privileged=true \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" \
    --service-account-signing-key-file="$PKI/sa.key" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User \
    --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" \
    --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --profiling=false \
    --v=1
}
apiserver_ready() {
  curl -fsS --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$API_URL/readyz"
}
start_daemon kube-apiserver 120 run_apiserver apiserver_ready

# --- kubeconfigs ------------------------------------------------------------------------
b64() { base64 -w0 <"$1"; }
write_kubeconfig() { # <file> <user name> <cert> <key>
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: guessgame-test
  cluster:
    server: $API_URL
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(b64 "$3")
    client-key-data: $(b64 "$4")
contexts:
- name: guessgame-test
  context:
    cluster: guessgame-test
    user: $2
    namespace: default
current-context: guessgame-test
EOF
  chmod 600 "$1"
}
write_kubeconfig "$WORK/admin.kubeconfig" guessgame-admin "$PKI/admin.crt" "$PKI/admin.key"
write_kubeconfig "$WORK/kube-controller-manager.kubeconfig" system:kube-controller-manager \
  "$PKI/kube-controller-manager.crt" "$PKI/kube-controller-manager.key"
if ((WITH_NODES)); then
  write_kubeconfig "$WORK/kubelet.kubeconfig" "system:node:$NODE_NAME" "$PKI/kubelet.crt" "$PKI/kubelet.key"
  for c in kube-scheduler kube-proxy; do
    write_kubeconfig "$WORK/$c.kubeconfig" "system:$c" "$PKI/$c.crt" "$PKI/$c.key"
  done
fi

# --- kube-controller-manager ------------------------------------------------------------------
# All on-by-default controllers except node IPAM (needs --allocate-node-cidrs and a pod CIDR;
# there are no nodes anyway). The cloud controllers are no longer part of kube-controller-manager.
run_kcm() {
  pick_port KCM_PORT
  save_ports
  daemon kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$WORK/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$WORK/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$WORK/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 \
    --secure-port="$KCM_PORT" \
    --cert-dir="$WORK/kcm-certs" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" \
    --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --allocate-node-cidrs=false \
    --controllers='*,-node-ipam-controller' \
    --profiling=false \
    --v=1
}
kcm_healthy() { innet curl -fsSk --max-time 5 "https://127.0.0.1:$KCM_PORT/healthz"; }
start_daemon kube-controller-manager 120 run_kcm kcm_healthy

# The serviceaccount controller creates "default" in each namespace; Pods are refused until
# it exists, so wait for it before handing the cluster over.
KUBECTL=("$BIN/kubectl" --kubeconfig="$WORK/admin.kubeconfig")
log "waiting for the serviceaccount controller to create default/default"
wait_up 60 kube-controller-manager "${KUBECTL[@]}" get serviceaccount default -n default ||
  die "kube-controller-manager exited, see $LOGS/kube-controller-manager.log"

cat >"$WORK/env" <<EOF
export KUBECONFIG=$WORK/admin.kubeconfig
export PATH=$BIN:\$PATH
export GUESSGAME_K8S_WORKDIR=$WORK
EOF
started_ok=1
log "control plane up: apiserver $API_URL, etcd $ETCD_URL, kube-controller-manager :$KCM_PORT"
log "stop with: $K8S_HARNESS_DIR/stop-control-plane.sh $WORK"
cat "$WORK/env"
