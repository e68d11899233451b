#!/usr/bin/env bash
# A failure on one rank never hangs the job: either every rank agrees on the
# exit code, or the failed rank aborts the job after the grace period.
set -u
: "${PROBE_BIN:?}" "${MPIEXEC:=mpirun}"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

out=$(timeout 60 "$MPIEXEC" -np 3 --oversubscribe "$PROBE_BIN" agree 2>&1); rc=$?
[ "$rc" = 2 ] || fail "agree: expected exit 2, got $rc"
grep -q '\[rank 1/3\] a3fta: config error: probe.yaml:3:5: train.lr: injected' <<<"$out" \
  || fail "agree: rank 1's error not printed with its rank: $out"

start=$(date +%s)
out=$(A3FTA_ABORT_GRACE_S=2 timeout 60 "$MPIEXEC" -np 2 --oversubscribe "$PROBE_BIN" stuck 2>&1); rc=$?
took=$(( $(date +%s) - start ))
[ "$rc" != 0 ] && [ "$rc" != 124 ] || fail "stuck: expected an aborted job, got exit $rc"
[ "$took" -lt 30 ] || fail "stuck: took ${took}s, the abort did not happen after the 2 s grace"
grep -q 'aborting the job' <<<"$out" || fail "stuck: no abort message: $out"

echo "rank_failure: $failures failure(s)"
[ "$failures" = 0 ]
