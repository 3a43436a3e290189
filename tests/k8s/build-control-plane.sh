#!/usr/bin/env bash
# Build (or reuse from cache) pinned kube-apiserver, kube-controller-manager, kube-scheduler,
# kubelet, kube-proxy, kubectl, etcd and helm from Go modules only - no container registry, no GitHub;
# and the one-node cluster's add-ons: coredns, local-path-provisioner, crictl (Go modules) and
# pause (gcc -static from the pause.c in the k8s.io/kubernetes module).
#
#   tests/k8s/build-control-plane.sh            # build what is missing/stale, print bin dir
#   tests/k8s/build-control-plane.sh --force    # rebuild everything
#
# Versions are pinned by the committed wrapper modules in tests/k8s/modules/*/go.mod (+ go.sum).
# Output: ${GUESSGAME_K8S_CACHE:-$HOME/.cache/guessgame-k8s}/<kubernetes version>/bin
# The bin dir is printed alone on the last line of stdout.
# Env: GUESSGAME_K8S_CACHE, GUESSGAME_K8S_BIN (use prebuilt binaries, build nothing),
#      GUESSGAME_K8S_BUILD_JOBS (go build -p, default: number of cores, at most 4).
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

force=0
for a in "$@"; do
  case $a in
    --force) force=1 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) die "unknown argument: $a" ;;
  esac
done

if [[ -n ${GUESSGAME_K8S_BIN:-} ]]; then
  for b in "${K8S_BINARIES[@]}"; do
    [[ -x $K8S_BIN_DIR/$b ]] || die "GUESSGAME_K8S_BIN=$K8S_BIN_DIR has no executable $b"
  done
  # The add-ons are only needed by the one-node cluster (cluster-up.sh / addon-images.sh).
  for b in "${ADDON_BINARIES[@]}"; do
    [[ -x $K8S_BIN_DIR/$b ]] || log "warning: GUESSGAME_K8S_BIN=$K8S_BIN_DIR has no $b (the one-node cluster needs it)"
  done
  log "using prebuilt binaries in $K8S_BIN_DIR (GUESSGAME_K8S_BIN)"
  echo "$K8S_BIN_DIR"
  exit 0
fi

JOBS="${GUESSGAME_K8S_BUILD_JOBS:-$(n=$(nproc 2>/dev/null || echo 2); ((n > 4)) && n=4; echo "$n")}"
KUBE_MINOR="$(echo "$KUBERNETES_VERSION" | cut -d. -f2)"
KUBE_MAJOR="$(echo "$KUBERNETES_VERSION" | cut -d. -f1 | tr -d v)"
# Same tags as upstream's hack/lib/golang.sh for non-debug builds.
KUBE_TAGS="selinux,notest,grpcnotrace"

# Fingerprint of what determines a binary: its wrapper module (go.mod + go.sum, and the
# module's own .go files: modules/coredns/main.go), the build recipe below (this script), and
# the component name. pause is compiled from the k8s.io/kubernetes module's pause.c.
fingerprint() { # <module> <binary>
  local d="$K8S_MODULES_DIR/$1" f
  [[ $1 == pause ]] && d="$K8S_MODULES_DIR/kubernetes"
  local -a files=("$d/go.mod" "$d/go.sum")
  for f in "$d"/*.go; do [[ -f $f ]] && files+=("$f"); done
  cat "${files[@]}" "$K8S_HARNESS_DIR/build-control-plane.sh" |
    { sha256sum; echo "$2"; } | sha256sum | cut -c1-32
}
is_fresh() { # <module> <binary>
  [[ -x $K8S_BIN_DIR/$2 && -f $K8S_BIN_DIR/.stamp-$2 ]] &&
    [[ "$(cat "$K8S_BIN_DIR/.stamp-$2")" == "$(fingerprint "$1" "$2")" ]]
}

declare -A MODULE_OF=(
  [kube-apiserver]=kubernetes [kube-controller-manager]=kubernetes [kubectl]=kubernetes
  [kube-scheduler]=kubernetes [kubelet]=kubernetes [kube-proxy]=kubernetes
  [etcd]=etcd [helm]=helm
  [coredns]=coredns [local-path-provisioner]=local-path-provisioner [crictl]=cri-tools [pause]=pause
)
MODULES=(kubernetes etcd helm coredns local-path-provisioner cri-tools pause)
ALL_BINARIES=("${K8S_BINARIES[@]}" "${ADDON_BINARIES[@]}")
compute_todo() {
  todo_modules=()
  local m b
  for m in "${MODULES[@]}"; do
    for b in "${ALL_BINARIES[@]}"; do
      [[ ${MODULE_OF[$b]} == "$m" ]] || continue
      if ((force)) || ! is_fresh "$m" "$b"; then
        todo_modules+=("$m")
        break
      fi
    done
  done
  if ((${#todo_modules[@]} == 0)); then
    log "cached: kubernetes $KUBERNETES_VERSION, etcd $ETCD_VERSION, helm $HELM_VERSION," \
      "coredns $COREDNS_VERSION, local-path-provisioner $LOCAL_PATH_VERSION, crictl $CRI_TOOLS_VERSION, pause in $K8S_BIN_DIR"
    echo "$K8S_BIN_DIR"
    exit 0
  fi
}
compute_todo

command -v go >/dev/null || die "go is required to build the control plane (Go >= 1.26)"
mkdir -p "$K8S_BIN_DIR"
exec 9>"$K8S_CACHE_ROOT/.build.lock"
if ! flock -n 9; then
  log "another build holds $K8S_CACHE_ROOT/.build.lock; waiting"
  flock 9
  ((force)) || compute_todo # it may have built what we need
fi

export CGO_ENABLED=0 GOWORK=off
go_proxy_offline_safe
export GOFLAGS="-trimpath -mod=readonly -buildvcs=false"
tmp="$(mktemp -d "$K8S_CACHE_ROOT/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

build_start=$SECONDS
declare -A took=()

install_bins() { # <module> <binaries...>: move from $tmp into bin dir with stamps
  local m=$1 b
  shift
  for b in "$@"; do
    [[ -x $tmp/$b ]] || die "build produced no $b"
    mv -f "$tmp/$b" "$K8S_BIN_DIR/$b"
    fingerprint "$m" "$b" >"$K8S_BIN_DIR/.stamp-$b"
  done
}

for m in "${todo_modules[@]}"; do
  t0=$SECONDS
  if [[ $m == pause ]]; then cd "$K8S_MODULES_DIR/kubernetes"; else cd "$K8S_MODULES_DIR/$m"; fi
  case $m in
    kubernetes)
      log "downloading modules for k8s.io/kubernetes $KUBERNETES_VERSION"
      go mod download
      # The release's tag time, so the binaries are reproducible (upstream uses the build time).
      build_date="$(go list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
      ldflags=(-s -w)
      for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
        ldflags+=(
          "-X '$pkg.gitVersion=$KUBERNETES_VERSION'"
          "-X '$pkg.gitMajor=$KUBE_MAJOR'"
          "-X '$pkg.gitMinor=$KUBE_MINOR'"
          "-X '$pkg.buildDate=${build_date:-1970-01-01T00:00:00Z}'"
        )
      done
      log "building ${KUBE_BINARIES[*]} $KUBERNETES_VERSION (-p $JOBS; this takes long on 2 cores)"
      # One `go build` for all of them: they share most packages, so each is compiled once.
      go build -p "$JOBS" -tags "$KUBE_TAGS" -ldflags "${ldflags[*]}" -o "$tmp/" \
        "${KUBE_BINARIES[@]/#/k8s.io/kubernetes/cmd/}"
      install_bins kubernetes "${KUBE_BINARIES[@]}"
      ;;
    etcd)
      log "building etcd $ETCD_VERSION"
      go mod download
      # version.Version is a constant in go.etcd.io/etcd/api/v3; GitSHA is the only variable.
      go build -p "$JOBS" \
        -ldflags "-s -w -X 'go.etcd.io/etcd/api/v3/version.GitSHA=module-$ETCD_VERSION'" \
        -o "$tmp/etcd" go.etcd.io/etcd/server/v3
      install_bins etcd etcd
      ;;
    helm)
      log "building helm $HELM_VERSION"
      go mod download
      # Same variables as helm's Makefile; the Kubernetes version helm assumes when not
      # talking to a cluster (helm template/lint) comes from its k8s.io/client-go version.
      cg="$(go list -m -f '{{.Version}}' k8s.io/client-go)" # v0.MINOR.PATCH
      hmaj=$(($(echo "$cg" | cut -d. -f1 | tr -d v) + 1))
      hmin="$(echo "$cg" | cut -d. -f2)"
      hl="-s -w -X 'helm.sh/helm/v3/internal/version.version=$HELM_VERSION'"
      hl+=" -X 'helm.sh/helm/v3/internal/version.gitTreeState=clean'"
      for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
        hl+=" -X '$pkg.k8sVersionMajor=$hmaj' -X '$pkg.k8sVersionMinor=$hmin'"
      done
      go build -p "$JOBS" -ldflags "$hl" -o "$tmp/helm" helm.sh/helm/v3/cmd/helm
      install_bins helm helm
      ;;
    coredns)
      # modules/coredns/main.go: CoreDNS with a trimmed plugin set. coremain.CoreVersion is a
      # constant; the Makefile sets only GitCommit (a module zip has no commit: module-<version>).
      log "building coredns $COREDNS_VERSION"
      go mod download
      go build -p "$JOBS" \
        -ldflags "-s -w -X 'github.com/coredns/coredns/coremain.GitCommit=module-$COREDNS_VERSION'" \
        -o "$tmp/coredns" .
      install_bins coredns coredns
      ;;
    local-path-provisioner)
      # As its scripts/build: -X main.VERSION=<tag> (+ -s -w).
      log "building local-path-provisioner $LOCAL_PATH_VERSION"
      go mod download
      go build -p "$JOBS" -ldflags "-s -w -X 'main.VERSION=$LOCAL_PATH_VERSION'" \
        -o "$tmp/local-path-provisioner" github.com/rancher/local-path-provisioner
      install_bins local-path-provisioner local-path-provisioner
      ;;
    cri-tools)
      # As its Makefile: -X sigs.k8s.io/cri-tools/pkg/version.Version=<tag without v>.
      log "building crictl $CRI_TOOLS_VERSION"
      go mod download
      go build -p "$JOBS" \
        -ldflags "-s -w -X 'sigs.k8s.io/cri-tools/pkg/version.Version=${CRI_TOOLS_VERSION#v}'" \
        -o "$tmp/crictl" sigs.k8s.io/cri-tools/cmd/crictl
      install_bins cri-tools crictl
      ;;
    pause)
      # As build/pause/Makefile: CFLAGS = -Os -Wall -Werror -static -DVERSION=v$(TAG)-$(REV),
      # from the pause.c of the pinned k8s.io/kubernetes module (REV: its version here).
      command -v gcc >/dev/null || die "gcc is required to build pause (apt-get install gcc libc6-dev)"
      go mod download k8s.io/kubernetes
      kdir="$(go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
      pause_tag="$(sed -n 's/^TAG ?= *//p' "$kdir/build/pause/Makefile")"
      [[ -n $pause_tag && -f $kdir/build/pause/linux/pause.c ]] || die "no build/pause in $kdir"
      log "building pause $pause_tag (gcc -static)"
      gcc -Os -Wall -Werror -static -s -DVERSION="v$pause_tag-$KUBERNETES_VERSION" \
        -o "$tmp/pause" "$kdir/build/pause/linux/pause.c"
      install_bins pause pause
      ;;
  esac
  took[$m]=$((SECONDS - t0))
  log "built $m in ${took[$m]}s"
done

# The binaries must report their real versions (not v0.0.0).
check_version() { # <expected substring> <cmd...>
  local want=$1 out
  shift
  out="$("$@" 2>&1)" || die "'$*' failed: $out"
  [[ $out == *"$want"* ]] || die "'$*' reports '$out', expected $want"
  log "version ok: $(basename "$1") -> ${out%%$'\n'*}"
}
check_version "$KUBERNETES_VERSION" "$K8S_BIN_DIR/kube-apiserver" --version
check_version "$KUBERNETES_VERSION" "$K8S_BIN_DIR/kube-controller-manager" --version
check_version "$KUBERNETES_VERSION" "$K8S_BIN_DIR/kube-scheduler" --version
check_version "$KUBERNETES_VERSION" "$K8S_BIN_DIR/kubelet" --version
check_version "$KUBERNETES_VERSION" "$K8S_BIN_DIR/kube-proxy" --version
check_version "$KUBERNETES_VERSION" "$K8S_BIN_DIR/kubectl" version --client
check_version "${ETCD_VERSION#v}" "$K8S_BIN_DIR/etcd" --version
check_version "$HELM_VERSION" "$K8S_BIN_DIR/helm" version --short
check_version "CoreDNS-${COREDNS_VERSION#v}" "$K8S_BIN_DIR/coredns" -version
check_version "$LOCAL_PATH_VERSION" "$K8S_BIN_DIR/local-path-provisioner" --version
check_version "${CRI_TOOLS_VERSION#v}" "$K8S_BIN_DIR/crictl" --version
check_version "pause.c v" "$K8S_BIN_DIR/pause" -v
# The trimmed CoreDNS must still have what the cluster's Corefile uses.
coredns_plugins=$'\n'"$("$K8S_BIN_DIR/coredns" -plugins)"$'\n' # one plugin per line
for p in kubernetes errors health ready log cache loop reload loadbalance prometheus hosts; do
  [[ $coredns_plugins == *$'\n'"$p"$'\n'* ]] || die "coredns lacks the $p plugin"
done
[[ $coredns_plugins != *$'\n'forward$'\n'* ]] || die "coredns has the forward plugin (the cluster is offline)"

summary=""
for m in "${todo_modules[@]}"; do summary+=" $m=${took[$m]}s"; done
log "build finished in $((SECONDS - build_start))s (${summary# }) -> $K8S_BIN_DIR"
echo "$K8S_BIN_DIR"
