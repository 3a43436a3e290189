#!/usr/bin/env bash
# The generated manifests are current (CI fails when they are stale):
#   - manifests/crd.yaml and charts/guessgame/crds/guessgames.yaml == `crdgen` output
#     (the operator's unit test `committed_crds_are_up_to_date` checks the same);
#   - manifests/operator.yaml == the header comment + `helm template guessgame charts/guessgame
#     --namespace guessgame-system` (helm from build-control-plane.sh: cached, else built).
# Regenerate:
#   cargo run -q -p guessgame-operator --bin crdgen > manifests/crd.yaml
#   cp manifests/crd.yaml charts/guessgame/crds/guessgames.yaml
#   { sed '/^---$/q' manifests/operator.yaml | sed '$d'
#     helm template guessgame charts/guessgame --namespace guessgame-system; } > operator.yaml.new
#   mv operator.yaml.new manifests/operator.yaml
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT="$(cd "$K8S_HARNESS_DIR/../.." && pwd)"
cd "$ROOT"

bin="$("$K8S_HARNESS_DIR/build-control-plane.sh" | tail -n1)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
passed=0 stale=0

cargo run -q -p guessgame-operator --bin crdgen >"$tmp/crd.yaml"
for f in manifests/crd.yaml charts/guessgame/crds/guessgames.yaml; do
  if diff -u "$f" "$tmp/crd.yaml" >"$tmp/diff"; then
    log "ok: $f is the crdgen output"
    passed=$((passed + 1))
  else
    log "STALE: $f differs from the crdgen output:"
    head -n 40 "$tmp/diff" >&2
    log "regenerate: cargo run -q -p guessgame-operator --bin crdgen > $f"
    stale=$((stale + 1))
  fi
done

export HELM_CACHE_HOME="$tmp/helm/cache" HELM_CONFIG_HOME="$tmp/helm/config" HELM_DATA_HOME="$tmp/helm/data"
"$bin/helm" template guessgame charts/guessgame --namespace guessgame-system >"$tmp/operator.yaml"
# The committed file: a header of comment lines, then the rendered chart from its first `---`.
awk 'f || /^---$/ { f = 1 } f' manifests/operator.yaml >"$tmp/committed.yaml"
if diff -u "$tmp/committed.yaml" "$tmp/operator.yaml" >"$tmp/diff"; then
  log "ok: manifests/operator.yaml is the helm template output"
  passed=$((passed + 1))
else
  log "STALE: manifests/operator.yaml differs from 'helm template guessgame charts/guessgame --namespace guessgame-system':"
  head -n 60 "$tmp/diff" >&2
  log "regenerate it with the commands at the top of $0"
  stale=$((stale + 1))
fi

echo "check-manifests: $passed passed, $stale failed"
((stale == 0))
