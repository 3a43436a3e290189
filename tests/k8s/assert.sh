# shellcheck shell=bash
# shellcheck disable=SC2034 # FAILED and passed are read by the scripts that source this
# Assertions for the end-to-end scripts (sourced after lib.sh). Set TEST_NAME first; a failure
# prints "<TEST_NAME>: N passed, 1 failed" and exits 1 (the caller's EXIT trap then prints
# diagnostics and cleans up).
passed=0 FAILED=0 FAILED_WHAT=""
step() { log "== $*"; }
pass() { passed=$((passed + 1)); log "PASS: $*"; }
fail() {
  log "FAIL: $*"
  echo "${TEST_NAME:-test}: $passed passed, 1 failed"
  FAILED=1 # read by the callers' EXIT traps
  FAILED_WHAT="$*" # repeated by them after their diagnostics, which push this line far up
  exit 1
}
# check <description> <command...>
check() {
  local d=$1 out
  shift
  if out="$("$@" 2>&1)"; then pass "$d"; else fail "$d${out:+: $(tail -n 8 <<<"$out")}"; fi
}
# eventually <timeout s> <description> <command...>: retried every 0.3 s.
eventually() {
  local t=$1 d=$2 start=$SECONDS
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS - start >= t)) && fail "$d (not within ${t}s)"
    sleep 0.3
  done
  pass "$d (after $((SECONDS - start))s)"
}
# expect <description> <actual> <expected>
expect() {
  if [[ $2 == "$3" ]]; then pass "$1 = $3"; else fail "$1: got '$2', expected '$3'"; fi
}
# now_ms: wall clock in milliseconds (for the figures a test prints)
now_ms() { date +%s%3N; }
# secs_since <start ms>: seconds with two decimals
secs_since() { local d=$(($(now_ms) - $1)); printf '%d.%02d' $((d / 1000)) $((d % 1000 / 10)); }
