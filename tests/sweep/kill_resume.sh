#!/bin/bash
# Process-level sweep tests with real mpirun jobs of sweep_driver (fake runs):
#   kill_resume.sh MPIEXEC DRIVER signal            SIGUSR1 to mpirun, then SIGTERM to the
#                                                   ranks themselves (as Slurm does): exit 0
#                                                   within a bound, file consistent, rerun
#                                                   completes, nothing done twice
#   kill_resume.sh MPIEXEC DRIVER kill9 SEED TRIALS kill -9 the whole job at seeded random
#                                                   moments, rerun: the file always opens,
#                                                   every point ends done with the values of
#                                                   the fake run, done points are not redone
set -u
MPIEXEC=$1 DRIVER=$2 MODE=$3 SEED=${4:-1} TRIALS=${5:-5}
NP=4
[ -x "$DRIVER" ] || { echo "no driver at $DRIVER (build first)" >&2; exit 1; }
tmp=$(mktemp -d /tmp/a3fta-sweep-kill-XXXXXX)
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }

write_config() { # dir
  cat > "$1/sweep.yaml" <<EOF
train: {steps: 30, warmup: 0}
output: {dir: $1/out, samples_per_run: 2}
model: {arch: {sample_size: 8, block_out_channels: [8, 8], down_block_types: [DownBlock2D, AttnDownBlock2D], up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}}
sweep:
  grid: {train.lr: [1.0e-4, 2.0e-4, 3.0e-4, 4.0e-4], train.seed: [0, 1, 2, 3, 4]}
parallel: {ranks_per_run: 1, schedule: dynamic}
EOF
}
N_POINTS=20

logged() { cat "$1"/out/log.* 2>/dev/null | wc -l; }

# Starts the sweep in the background (its own process group); sets $job.
start() { # dir sleep_ms
  FAKE_SLEEP_MS=$2 setsid "$MPIEXEC" -np $NP --oversubscribe "$DRIVER" "$1/sweep.yaml" run \
    > "$1/run.out" 2>&1 &
  job=$!
}

wait_logged() { # dir count timeout_s
  local t=0
  while [ "$(logged "$1")" -lt "$2" ] && [ $t -lt $(($3 * 20)) ]; do sleep 0.05; t=$((t + 1)); done
}

# Every process of the job: mpirun and its ranks share its session (each rank
# has a process group of its own, so killing mpirun's group is not enough).
job_pids() { ps -e -o pid=,sid= | awk -v s="$job" '$2 == s { print $1 }'; }

# kill -9 of the whole job at once; fails if a process lives on.
kill_job() {
  local pids
  pids=$(job_pids)
  [ -n "$pids" ] && kill -9 $pids 2>/dev/null
  wait "$job" 2>/dev/null
  sleep 0.2
  for p in $pids; do
    st=$(ps -o stat= -p "$p" 2>/dev/null)
    case "$st" in "" | Z*) ;; *) fail "process $p survived kill -9 ($st)" ;; esac
  done
}

# Waits for $job up to $1 seconds; sets $rc to its exit code (124: it had to be killed).
wait_job() { # timeout_s
  local t=0
  while kill -0 "$job" 2>/dev/null && [ $t -lt $(($1 * 20)) ]; do sleep 0.05; t=$((t + 1)); done
  if kill -0 "$job" 2>/dev/null; then
    kill_job
    rc=124
    return
  fi
  wait "$job"
  rc=$?
}

check() { # dir -> prints the driver's check output; fails on a bad file
  if ! "$DRIVER" "$1/sweep.yaml" check > "$1/check.out" 2>&1; then
    fail "$(basename "$1"): check failed: $(cat "$1/check.out")"
  fi
}

done_points() { grep '^done:' "$1/check.out" | cut -d: -f2; }

# A rerun to completion: no point done before it is done again; all done after.
rerun_and_verify() { # dir
  local before
  before=$(done_points "$1")
  rm -f "$1"/out/log.*
  start "$1" 1
  wait_job 30
  [ "$rc" = 0 ] || fail "$(basename "$1"): rerun exited $rc: $(tail -5 "$1/run.out")"
  for p in $before; do
    if grep -qx "point $p" "$1"/out/log.* 2>/dev/null; then fail "point $p was done and ran again"; fi
  done
  check "$1"
  grep -q '^complete' "$1/check.out" || fail "$(basename "$1"): not complete after rerun: $(cat "$1/check.out")"
  local n
  n=$(cat "$1"/out/log.* 2>/dev/null | sort | uniq -d | wc -l)
  [ "$n" = 0 ] || fail "$(basename "$1"): a point ran twice in one rerun"
}

if [ "$MODE" = signal ]; then
  for how in usr1-mpirun term-ranks; do
    d=$tmp/$how
    mkdir -p "$d"
    write_config "$d"
    start "$d" 150
    wait_logged "$d" 4 20
    t0=$(date +%s.%N)
    if [ $how = usr1-mpirun ]; then
      kill -USR1 "$job"
    else
      kill -TERM $(job_pids | grep -vx "$job") # the ranks, not mpirun (as Slurm signals each task)
    fi
    # The sweep stops within a bound (its message); the processes then end
    # (MPI_Finalize; slow under ASan's leak check, hence the wider bound).
    t=0
    while ! grep -q interrupted "$d/run.out" && [ $t -lt 200 ]; do sleep 0.05; t=$((t + 1)); done
    stop_s=$(echo "$(date +%s.%N) - $t0" | bc)
    wait_job 60
    secs=$(echo "$(date +%s.%N) - $t0" | bc)
    echo "$how: stopped after $stop_s s, exit $rc after $secs s: $(grep -h interrupted "$d/run.out")"
    [ "$rc" = 0 ] || fail "$how: exit code $rc (want 0): $(tail -5 "$d/run.out")"
    grep -q 'interrupted: [0-9]* points remain; rerun the same command to resume' "$d/run.out" ||
      fail "$how: no 'interrupted' message: $(tail -5 "$d/run.out")"
    (($(echo "$stop_s < 3" | bc))) || fail "$how: took $stop_s s to stop (points take 0.15 s)"
    check "$d"
    grep -q '^complete' "$d/check.out" && fail "$how: the sweep completed before the signal"
    rerun_and_verify "$d"
  done
elif [ "$MODE" = kill9 ]; then
  # Killed processes never reach a leak check; the reruns' clean exits are
  # covered by the signal mode. Without it an ASan build takes ~8 s per job.
  export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
  RANDOM=$SEED
  for trial in $(seq 1 "$TRIALS"); do
    d=$tmp/trial$trial
    mkdir -p "$d"
    write_config "$d"
    # Odd trials: 0 to 1.4 s after the job starts (start-up, file creation, the
    # first points); even ones: 0 to 0.5 s after the first point ended (mid-sweep).
    start "$d" 120
    if [ $((trial % 2)) = 1 ]; then
      delay_ms=$((RANDOM % 1400))
      when="start"
    else
      delay_ms=$((RANDOM % 500))
      when="first point"
      wait_logged "$d" 1 20
    fi
    sleep "$(printf '%d.%03d' $((delay_ms / 1000)) $((delay_ms % 1000)))"
    kill_job
    check "$d"
    echo "trial $trial: killed ${delay_ms} ms after the $when with $(done_points "$d" | wc -w) points done"
    rerun_and_verify "$d"
  done
else
  echo "unknown mode $MODE" >&2
  exit 2
fi

if [ $failures = 0 ]; then rm -rf "$tmp"; else echo "kept $tmp" >&2; fi
echo "kill_resume $MODE: $failures failures"
[ $failures = 0 ]
