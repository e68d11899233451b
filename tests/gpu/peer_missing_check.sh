#!/usr/bin/env bash
# The NCCL watchdog must not let a missing peer hang the job:
#   tests/gpu/peer_missing_check.sh LOG LAUNCHER... TEST_CUDA_NCCL
# runs `LAUNCHER... TEST_CUDA_NCCL --peer-missing` (LAUNCHER: an mpirun of 2
# ranks), in which rank 1 never starts its sums. Rank 0's sum must time out
# after its 2 s limit and, its peer not failing within that limit plus
# A3FTA_ABORT_GRACE_S (5 s here), abort the MPI job. PASS (exit 0) when the job ends non-zero
# within 120 s, not by returning from the sum (exit 3), and the log (LOG)
# names parallel.nccl_timeout_s and says "aborting the MPI job"; else FAIL
# (exit 1). Used by tests/gpu/run.sh on 2+ GPUs and by CTest on the CUDA
# emulator (tests/cuda_emu).
set -u
if [ $# -lt 2 ]; then
  echo "usage: $0 LOG LAUNCHER... TEST_CUDA_NCCL" >&2
  exit 2
fi
log=$1
shift
t0=$SECONDS
A3FTA_ABORT_GRACE_S=5 timeout --kill-after=10 120 "$@" --peer-missing >"$log" 2>&1
rc=$?
dt=$((SECONDS - t0))
why=""
case $rc in
0) why="the job ended with exit 0" ;;
3) why="the sum returned instead of aborting the job (exit 3)" ;;
124 | 137) why="the job hung: killed after 120 s" ;;
esac
[ -z "$why" ] && ! grep -q "aborting the MPI job" "$log" && why="no \"aborting the MPI job\" in the log"
[ -z "$why" ] && ! grep -q "parallel.nccl_timeout_s" "$log" && why="the log does not name parallel.nccl_timeout_s"
if [ -z "$why" ]; then
  echo "peer missing: PASS (exit $rc after ${dt}s; see $log)"
  exit 0
fi
echo "peer missing: FAIL: $why (exit $rc after ${dt}s); the log ($log):"
cat "$log"
exit 1
