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

ours() { # <pid>: still our process?
  local cmd
  cmd="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" || return 1
  [[ $cmd == *"$WORK"* ]]
}

rc=0
for name in kube-controller-manager kube-apiserver etcd; do
  pidfile="$WORK/pids/$name.pid"
  [[ -f $pidfile ]] || continue
  pid="$(cat "$pidfile")"
  if [[ $pid =~ ^[0-9]+$ ]] && ours "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do ours "$pid" || break; sleep 0.1; done
    if ours "$pid"; then
      log "$name (pid $pid) ignored SIGTERM for 10s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do ours "$pid" || break; sleep 0.1; done
    fi
    if ours "$pid"; then
      log "could not stop $name (pid $pid)"
      rc=1
      continue
    fi
    log "stopped $name (pid $pid)"
  fi
  rm -f "$pidfile"
done

if ((clean && rc == 0)); then
  rm -rf "$WORK"
  log "removed $WORK"
fi
exit $rc
