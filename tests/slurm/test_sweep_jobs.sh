#!/usr/bin/env bash
# ctest (label slurm): the sweep job scripts on a real single-host Slurm.
#
#   test_sweep_jobs.sh MODE MAKE_DATASET_BIN      (A3FTA_BIN set by ctest)
#
# MODE:
#   cpu      jobs/sweep-cpu.sbatch on 2 tasks (srun --mpi=pmix) runs a tiny sweep to the end:
#            the job COMPLETED 0:0 and every point of the results file is done.
#   preempt  the same job, stopped with 'scancel --signal=USR1 --batch' after its first point:
#            the batch shell forwards USR1 to the ranks, the sweep exits 3 (points left), the
#            script requeues the job itself (scontrol requeue), the second start resumes and
#            completes, and every point equals an uninterrupted run's (tests/slurm/
#            compare_results.py: every per-point dataset, timings aside). Slurm delays the
#            start of a requeued batch job by 120 s; the test then sets its StartTime to now
#            (2 s after the requeue, once the old run's credential is revoked) so as not to wait.
#   array    jobs/sweep-array.sbatch as --array=0-2 (slices 0/3..2/3, each its own results
#            file), then 'a3fta merge' in a job that depends on it (--dependency=afterok, the
#            pattern the README shows): the merged file equals a single sweep's.
# The uninterrupted reference runs outside Slurm (mpirun). Each mode starts its own cluster
# (tests/slurm/cluster.sh) and stops it by a trap, also on failure; exit 77 (skip) without
# root, Slurm or h5py. A3FTA_SLURM_KEEP=1 keeps the cluster folder for a look.
set -u
mode=${1:?usage: test_sweep_jobs.sh cpu|preempt|array MAKE_DATASET_BIN}
make_dataset=${2:?usage: test_sweep_jobs.sh MODE MAKE_DATASET_BIN}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=${A3FTA_SOURCE_DIR:-$(cd "$here/../.." && pwd)}
bin=${A3FTA_BIN:?A3FTA_BIN must name the a3fta binary}
PY=/usr/bin/python3 # Debian's h5py belongs to it
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
outs=()
fail() {
  echo "FAIL ($mode, after $(elapsed)): $*"
  local o
  for o in "${outs[@]}"; do
    [ -f "$o" ] && { echo "----- job output $o -----"; cat "$o"; }
  done
  slurm_cluster_logs
  exit 1
}

"$PY" -c 'import h5py' 2>/dev/null || { echo "SKIP: $PY has no h5py (apt-get install python3-h5py)"; exit 77; }
slurm_cluster_start
rc=$?
[ "$rc" = 77 ] && { echo "SKIP: no usable Slurm here (see above)"; exit 77; }
[ "$rc" = 0 ] || fail "the cluster did not start"
[ "$SLURM_CLUSTER_MPI" = pmix ] || fail "Slurm's pmix plugin is missing, so srun --mpi=pmix cannot work"
tmp=$SLURM_CLUSTER_DIR/test
mkdir -p "$tmp"
"$make_dataset" "$tmp/data.h5" >/dev/null || fail "making the test dataset"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1

# The preemption test needs points that outlast the USR1's way from scancel to
# the ranks, ~2.5 s each: 40 steps in a Debug ASan build, 64 in an optimised
# ASan one (~0.04 s a step), 400 in an optimised build (~0.1 s for 40).
version=$("$bin" --version 2>/dev/null | head -1)
case $version in
  *"Debug build"*) preempt_steps=40 ;;
  *ASan*) preempt_steps=64 ;;
  *) preempt_steps=400 ;;
esac

# A tiny sweep: 6 points (2 strategies x 3 learning rates), STEPS training steps each.
write_config() { # FILE STEPS
  cat >"$1" <<YAML
model:
  arch: {sample_size: 16, in_channels: 1, out_channels: 1, block_out_channels: [8, 16],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}
data: {path: $tmp/data.h5, classes: [1], shots: 6, hflip: true}
strategy: {name: a3fta, adapter: {rank: 4}}
train: {steps: $2, batch_size: 4, lr: 1.0e-3, lr_schedule: constant, warmup: 0, log_every: 100,
        checkpoint_every: 10}
eval: {sampler: ddim, sampler_steps: 2}
output: {dir: $tmp/unused, samples_per_run: 2}
sweep:
  grid: {strategy.name: [a3fta, lora], train.lr: [1.0e-3, 1.0e-2, 2.0e-3]}
parallel: {ranks_per_run: 1, schedule: dynamic}
YAML
}

# The uninterrupted reference, outside Slurm.
reference() { # CONFIG OUTDIR
  mpirun -np 2 --oversubscribe "$bin" sweep "$1" -o "output.dir=$2" >"$2.log" 2>&1 ||
    { cat "$2.log"; fail "the reference sweep failed"; }
}

compare() { # A.h5 B.h5 DIR_A DIR_B
  "$PY" "$here/compare_results.py" "$@" || fail "the results differ (above)"
}

# Bounded wait until every task of a job (array or not) has ended; prints their states.
wait_all() { # JOBID TIMEOUT_S
  local i st
  for i in $(seq 1 $(($2 * 5))); do
    st=$(timeout 10 scontrol -o show job "$1" 2>/dev/null | grep -o 'JobState=[^ ]*' | sort | uniq -c | tr -s ' ')
    if [ -n "$st" ] && ! grep -qE 'PENDING|RUNNING|CONFIGURING|COMPLETING|REQUEUE|SUSPENDED' <<<"$st"; then
      echo "$st"
      return 0
    fi
    sleep 0.2
  done
  echo "not ended after $2 s: $st"
  return 124
}

# Submits a job script with the cluster's limits (2 CPUs, 10 minutes) and A3FTA_BIN.
submit() { # OUT_PATTERN SBATCH_ARGS... SCRIPT ARGS...
  local out=$1
  shift
  timeout 30 sbatch --parsable --time=5 --signal=B:USR1@10 --output="$out" \
    --export=ALL,A3FTA_BIN="$bin" "$@"
}

sweep_opts=(--ntasks-per-node=2 --cpus-per-task=1)
case $mode in
cpu)
  write_config "$tmp/s.yaml" 4
  jobid=$(submit "$tmp/cpu-%j.out" "${sweep_opts[@]}" "$root/jobs/sweep-cpu.sbatch" \
            "$tmp/s.yaml" "$tmp/out") || fail "sbatch did not submit"
  jobid=${jobid%%;*}
  outs+=("$tmp/cpu-$jobid.out")
  end=$(slurm_cluster_wait_job "$jobid" 100)
  echo "job $jobid ended after $(elapsed): $end"
  [ "$end" = "COMPLETED 0:0" ] || fail "job $jobid ended '$end', not COMPLETED 0:0"
  grep -q "a3fta job: the sweep exited 0" "$tmp/cpu-$jobid.out" || fail "no exit line in the output"
  grep -q "sweep: 6 done, 0 failed, 0 pending of 6 points" "$tmp/cpu-$jobid.out" ||
    fail "the sweep's summary line is missing"
  grep -q "2 groups of 1 rank" "$tmp/cpu-$jobid.out" || fail "the 2 tasks did not form one world"
  "$bin" info "$tmp/out/results.h5" --csv >"$tmp/info.csv" || fail "a3fta info on the results"
  [ "$(tail -n +2 "$tmp/info.csv" | cut -d, -f2 | sort | uniq -c | tr -s ' ')" = " 6 done" ] ||
    fail "not every point is done: $(cat "$tmp/info.csv")"
  ;;
preempt)
  write_config "$tmp/s.yaml" "$preempt_steps"
  jobid=$(submit "$tmp/pre-%j.out" "${sweep_opts[@]}" "$root/jobs/sweep-cpu.sbatch" \
            "$tmp/s.yaml" "$tmp/out") || fail "sbatch did not submit"
  jobid=${jobid%%;*}
  out=$tmp/pre-$jobid.out
  outs+=("$out")
  for _ in $(seq 1 300); do grep -q "point [0-9]* done" "$out" 2>/dev/null && break; sleep 0.2; done
  grep -q "point [0-9]* done" "$out" || fail "no point done within 60 s"
  timeout 10 scancel --signal=USR1 --batch "$jobid" || fail "scancel --signal=USR1 --batch"
  echo "USR1 sent to the batch shell of job $jobid after $(elapsed)"
  restarted=""
  for _ in $(seq 1 300); do
    st=$(slurm_cluster_job_state "$jobid")
    timeout 10 scontrol -o show job "$jobid" | grep -q 'Restarts=1' && { restarted=1; break; }
    case $st in COMPLETED* | FAILED* | CANCELLED* | TIMEOUT*) break ;; esac
    sleep 0.2
  done
  [ -n "$restarted" ] || fail "job $jobid was not requeued (state $st)"
  echo "requeued by its script after $(elapsed)"
  grep -q "a3fta job: SIGUSR1" "$out" || fail "the batch shell did not take USR1"
  grep -q "interrupted: [1-9][0-9]* points remain" "$out" || fail "the sweep did not stop cleanly"
  # srun reports the two tasks on one line ("tasks 0-1: ...") or, when they end
  # apart, on two ("task 0: ...", "task 1: ...").
  grep -q "tasks 0-1: Exited with exit code 3" "$out" ||
    { grep -q "task 0: Exited with exit code 3" "$out" &&
      grep -q "task 1: Exited with exit code 3" "$out"; } || fail "the ranks did not exit 3"
  grep -q "requeueing job $jobid" "$out" || fail "the script did not requeue"
  # Slurm makes a requeued job eligible 120 s later; start it now instead (not before the
  # old run's credential was revoked, else the start fails: 'Job credential revoked').
  sleep 2
  timeout 10 scontrol update JobId="$jobid" StartTime=now || fail "scontrol update StartTime=now"
  write_config "$tmp/ref.yaml" "$preempt_steps"
  reference "$tmp/ref.yaml" "$tmp/ref" # meanwhile
  end=$(slurm_cluster_wait_job "$jobid" 100)
  echo "job $jobid ended after $(elapsed): $end"
  [ "$end" = "COMPLETED 0:0" ] || fail "job $jobid ended '$end', not COMPLETED 0:0"
  [ "$(grep -c "a3fta job: job $jobid, start" "$out")" = 2 ] || fail "not exactly 2 starts"
  grep -q "resuming: [1-9][0-9]* done, [1-9][0-9]* to run" "$out" || fail "the second start did not resume"
  grep -q "a3fta job: the sweep exited 0" "$out" || fail "the second start did not complete"
  compare "$tmp/out/results.h5" "$tmp/ref/results.h5" "$tmp/out" "$tmp/ref"
  ;;
array)
  write_config "$tmp/s.yaml" 4
  jobid=$(submit "$tmp/arr-%A_%a.out" --array=0-2 --ntasks-per-node=1 --cpus-per-task=1 \
            "$root/jobs/sweep-array.sbatch" "$tmp/s.yaml" "$tmp/out") || fail "sbatch did not submit"
  jobid=${jobid%%;*}
  outs+=("$tmp/arr-${jobid}_0.out" "$tmp/arr-${jobid}_1.out" "$tmp/arr-${jobid}_2.out")
  merge=$(timeout 30 sbatch --parsable --time=5 --dependency=afterok:"$jobid" \
            --output="$tmp/merge-%j.out" \
            --wrap "$bin merge $tmp/out/results.h5 $tmp/out/results-slice-0-of-3.h5 $tmp/out/results-slice-1-of-3.h5 $tmp/out/results-slice-2-of-3.h5") ||
    fail "sbatch of the merge job"
  merge=${merge%%;*}
  outs+=("$tmp/merge-$merge.out")
  write_config "$tmp/ref.yaml" 4
  reference "$tmp/ref.yaml" "$tmp/ref" # meanwhile
  st=$(wait_all "$jobid" 100) || fail "array job $jobid: $st"
  echo "array job $jobid ended after $(elapsed): $st"
  [ "$st" = " 3 JobState=COMPLETED" ] || fail "array job $jobid: $st"
  for i in 0 1 2; do
    grep -q "slice $i/3: 2 of the 6 points" "$tmp/arr-${jobid}_$i.out" || fail "task $i did not run slice $i/3"
  done
  end=$(slurm_cluster_wait_job "$merge" 60)
  echo "merge job $merge ended after $(elapsed): $end"
  [ "$end" = "COMPLETED 0:0" ] || fail "merge job $merge ended '$end'"
  grep -q "merged 3 files into $tmp/out/results.h5: 6 points, 6 done" "$tmp/merge-$merge.out" ||
    fail "the merge job's summary line is missing"
  compare "$tmp/out/results.h5" "$tmp/ref/results.h5" "$tmp/out" "$tmp/ref"
  ;;
*) fail "unknown mode $mode" ;;
esac

# Stop here (not only in the trap) to check that nothing of the cluster outlives it.
pids=$(_sc_cluster_pids "$SLURM_CLUSTER_DIR")
slurm_cluster_stop
left=""
for p in $pids; do _sc_pid_alive "$p" && left="$left $p"; done
[ -z "$left" ] || fail "processes left after stopping the cluster:$left"
echo "PASS ($mode) in $(elapsed)"
