#!/usr/bin/env bash
# Stop the control plane that start-control-plane.sh started in <workdir>.
#   tests/k8s/stop-control-plane.sh <workdir> [--clean]   # --clean also removes <workdir>
# Only the processes recorded in <workdir>/pids are signalled, and only if their command
# line still mentions <workdir> (so a recycled pid is never hit). Idempotent.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -ge 1 && $# -le 2 ]] || die "usage: $0 <workdir> [--clean]"
[[ -d $1 ]] || { log "no such workdir $1; nothing to stop"; exit 0; }
WORK="$(cd "$1" && pwd)"
clean=0
[[ ${2:-} == --clean ]] && clean=1

rc=0
for name in kube-controller-manager kube-apiserver etcd; do
  stop_recorded "$WORK/pids/$name.pid" "$name" "$WORK" || rc=1
done

if ((clean && rc == 0)); then
  rm -rf "$WORK"
  log "removed $WORK"
fi
exit $rc
