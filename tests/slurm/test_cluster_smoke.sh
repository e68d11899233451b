#!/usr/bin/env bash
# ctest (label slurm): a real single-host Slurm runs jobs/smoke.sbatch.
#
# Starts a throw-away cluster (tests/slurm/cluster.sh), imports Fashion-MNIST, submits
# jobs/smoke.sbatch, waits for it with a bound, and checks from the job's output file and from
# 'scontrol show job' that the job completed with exit 0 and that its 2 tasks formed one MPI
# world of size SLURM_NTASKS through both 'srun --mpi=pmix' and 'mpirun', while launches
# without PMI ('srun --mpi=none') were caught (the one MPI does not notice by a3fta's launch
# check). The cluster is stopped by a trap, also when the
# test fails or is interrupted; exit 77 (skip) without root or without Slurm installed.
#
# Needs A3FTA_BIN (set by ctest). A3FTA_SLURM_KEEP=1 keeps the cluster folder for a look.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${A3FTA_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
bin=${A3FTA_BIN:?A3FTA_BIN must name the a3fta binary}
t0=$(date +%s.%N)
# shellcheck source-path=SCRIPTDIR
source "$here/cluster.sh"

cleanup() {
  trap - EXIT INT TERM HUP
  slurm_cluster_stop # also removes $tmp, which lies in the cluster folder
}
trap cleanup EXIT
trap 'echo "interrupted"; exit 130' INT HUP
trap 'echo "terminated"; exit 143' TERM

elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f s", b - a }'; }
out=""
fail() {
  echo "FAIL: $*"
  if [ -n "$out" ] && [ -f "$out" ]; then
    echo "----- job output $out -----"
    cat "$out"
  fi
  slurm_cluster_logs
  exit 1
}

slurm_cluster_start
rc=$?
[ "$rc" = 77 ] && { echo "SKIP: no usable Slurm here (see above)"; exit 77; }
[ "$rc" = 0 ] || fail "the cluster did not start"
# Scratch space inside the cluster folder, so that a killed run's leftovers go with it.
tmp=$SLURM_CLUSTER_DIR/test
mkdir -p "$tmp"
[ "$SLURM_CLUSTER_MPI" = pmix ] || fail "Slurm's pmix plugin is missing, so srun --mpi=pmix cannot work"
"$bin" import fashion-mnist --out "$tmp/f.h5" || fail "a3fta import fashion-mnist"
echo "cluster up and dataset imported after $(elapsed)"

# Submit, then a bounded wait (slurm_cluster_wait_job polls every 0.2 s; 'sbatch --wait'
# polls every 2 to 10 s, which made this test 8 s slower). Slurm's view of the end comes
# from scontrol: this cluster has no accounting, so no sacct.
jobid=$(timeout 30 sbatch --parsable --output="$tmp/smoke-%j.out" \
          --export=ALL,A3FTA_BIN="$bin" "$root/jobs/smoke.sbatch" "$tmp/f.h5") ||
  fail "sbatch did not submit the job"
jobid=${jobid%%;*}
out=$tmp/smoke-$jobid.out
end=$(slurm_cluster_wait_job "$jobid" 150)
rc=$?
echo "job $jobid ended after $(elapsed): $end"
[ "$rc" = 124 ] && fail "job $jobid did not end within 150 s"
[ -f "$out" ] || fail "job $jobid wrote no output file $out"
[ "$end" = "COMPLETED 0:0" ] || fail "job $jobid ended $end, not COMPLETED 0:0"
cat "$out"

expect() { grep -qF -- "$1" "$out" || { out=""; fail "the job output (above) lacks: $1"; }; }
expect "SLURM_NTASKS=2"
expect "smoke: srun --mpi=pmix: 2 tasks formed one MPI world: MPI size 2 == SLURM_NTASKS 2 ("
expect "smoke: mpirun: 2 tasks formed one MPI world: MPI size 2 == SLURM_NTASKS 2 ("
expect "smoke: srun --mpi=none: detected as expected"
expect "smoke: srun --mpi=none, launch hidden from MPI: N copies of rank 0 of 1, each stopped by a3fta's launch check (exit 2): 2 tasks each saw MPI size 1 != SLURM_NTASKS 2 ("
expect "smoke: srun --mpi=none, launch hidden from MPI: detected as expected"
expect "train         60000   1    28    28"
expect "smoke: PASS (4 launches)"
grep -q WRONG "$out" && { out=""; fail "a launch went wrong"; }

# Stop here (not only in the trap) to check that nothing of the cluster outlives it.
pids=$(_sc_cluster_pids "$SLURM_CLUSTER_DIR")
slurm_cluster_stop
left=""
for p in $pids; do _sc_pid_alive "$p" && left="$left $p"; done
[ -z "$left" ] || { ps -o pid,args -p "${left# }" | cut -c1-200; fail "processes left after stopping the cluster:$left"; }
echo "PASS in $(elapsed)"
