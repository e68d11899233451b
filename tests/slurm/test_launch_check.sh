#!/usr/bin/env bash
# ctest (labels slurm, cli; no cluster needed): a3fta's launch check (a3_world_check_launch)
# with Slurm's variables set by hand, and the job scripts' shared block.
#   - SLURM_STEP_NUM_TASKS=2 around a 1-rank world (N copies of rank 0 of 1: srun without
#     PMI): exit 2, naming both numbers and srun --mpi=pmix / srun --mpi=list, promptly
#   - SLURM_NTASKS=3 and no step count around a 2-rank world launched otherwise: exit 2
#   - the same variables with the check off (A3FTA_LAUNCH_CHECK=0), a matching count, one
#     process in a batch shell (SLURM_NTASKS=2, no step count), and ranks that Open MPI's
#     mpirun started (their Slurm variables describe mpirun's daemons): no error
#   - the "a3fta sweep step" block is the same in jobs/sweep*.sbatch
# Usage: test_launch_check.sh MPIEXEC   (A3FTA_BIN set by ctest)
set -u
MPIEXEC=$1
bin=${A3FTA_BIN:?}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${A3FTA_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-launch-XXXXXX")
trap 'rm -rf "$dir"' EXIT
fail=0
failed() { echo "FAILED: $*" >&2; fail=1; }
for v in $(compgen -e | grep -E '^(SLURM|SBATCH|SRUN|SALLOC)_'); do unset "$v"; done

# Any command that starts MPI runs the check; 'a3fta info' on a missing file exits 1 after it
# (its message differs), so the check's own message tells the cases apart.
run() { # EXPECT_RC LABEL [VAR=VALUE...] -- [launcher...]
  local expect=$1 label=$2 rc
  shift 2
  local vars=()
  while [ "$1" != -- ]; do vars+=("$1"); shift; done
  shift
  env "${vars[@]}" timeout 60 "$@" "$bin" info "$dir/none.h5" >"$dir/out" 2>&1
  rc=$?
  if [ "$rc" != "$expect" ]; then failed "$label: exit $rc, expected $expect: $(cat "$dir/out")"; fi
}

run 2 "1-rank world, step of 2" SLURM_JOB_ID=7 SLURM_STEP_NUM_TASKS=2 SLURM_NTASKS=2 --
grep -q "launch check: MPI sees a world of 1 rank, but Slurm started 2 tasks (SLURM_STEP_NUM_TASKS=2, job 7)" "$dir/out" ||
  failed "message names both numbers: $(cat "$dir/out")"
if ! grep -q "srun --mpi=pmix" "$dir/out" || ! grep -q "srun --mpi=list" "$dir/out"; then
  failed "message names the fix: $(cat "$dir/out")"
fi
[ "$(grep -c "launch check" "$dir/out")" = 1 ] || failed "one message: $(cat "$dir/out")"

run 2 "2-rank world, 3 tasks (no step count)" SLURM_JOB_ID=7 SLURM_NTASKS=3 -- \
  env -u OMPI_COMM_WORLD_SIZE "$MPIEXEC" -np 2 --oversubscribe -x SLURM_JOB_ID -x SLURM_NTASKS \
  env -u OMPI_COMM_WORLD_SIZE
# (mpirun sets OMPI_COMM_WORLD_SIZE for its ranks; without it they look like another launcher's)
grep -q "launch check: MPI sees a world of 2 ranks, but Slurm started 3 tasks (SLURM_NTASKS=3" "$dir/out" ||
  failed "2 vs 3: $(cat "$dir/out")"

for case in "check off:A3FTA_LAUNCH_CHECK=0 SLURM_STEP_NUM_TASKS=2" \
            "matching count:SLURM_STEP_NUM_TASKS=1 SLURM_NTASKS=2" \
            "one process in a batch shell:SLURM_NTASKS=2"; do
  # shellcheck disable=SC2086 # the variables are split on purpose
  run 1 "${case%%:*}" SLURM_JOB_ID=7 ${case#*:} --
  grep -q "launch check" "$dir/out" && failed "${case%%:*}: $(cat "$dir/out")"
  grep -q "none.h5" "$dir/out" || failed "${case%%:*}: info did not run: $(cat "$dir/out")"
done
run 1 "ranks of mpirun" SLURM_JOB_ID=7 SLURM_STEP_NUM_TASKS=1 SLURM_NTASKS=1 -- \
  "$MPIEXEC" -np 2 --oversubscribe -x SLURM_JOB_ID -x SLURM_STEP_NUM_TASKS -x SLURM_NTASKS
grep -q "launch check" "$dir/out" && failed "ranks of mpirun: $(cat "$dir/out")"

# The shared block of the three sweep job scripts.
block() { sed -n '/^# ---- a3fta sweep step: begin/,/^# ---- a3fta sweep step: end/p' "$1"; }
block "$root/jobs/sweep.sbatch" >"$dir/block"
[ "$(wc -l <"$dir/block")" -gt 20 ] || failed "jobs/sweep.sbatch has no sweep step block"
for f in sweep-cpu.sbatch sweep-array.sbatch; do
  block "$root/jobs/$f" | diff -u "$dir/block" - >/dev/null ||
    failed "jobs/$f: its 'a3fta sweep step' block differs from jobs/sweep.sbatch's"
done

[ "$fail" = 0 ] && echo "PASS"
exit "$fail"
