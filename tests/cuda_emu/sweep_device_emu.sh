#!/bin/bash
# The device over a sweep, on the CUDA emulator:
# - a 1,000-point sweep must not need more GPU memory than a 2-point one.
#   Two sweeps of the same tiny U-Net on 2 ranks (one group, NCCL gradient
#   sum, the communicator reused point after point), of 2 and of 6 points;
#   the emulator reports each rank's peak and what was still allocated at
#   exit (A3FTA_EMU_MEMORY). PASS when both sweeps finish every point,
#   nothing is left allocated at exit, and the 6-point sweep's peak is the
#   2-point one's on every rank;
# - a point that runs out of GPU memory fails alone: on a 16 MiB device
#   (A3FTA_EMU_DEVICE_MB), batch sizes 4, 512 and 8 (run largest first: 512,
#   8, 4): 512 fails with a reason that says out of GPU memory and names
#   train.batch_size; 8 and 4 are done (the failed cudaMalloc must not stay
#   the thread's last error for the next point's first launch check),
#   nothing left at exit; the same with 2 ranks in the group, only one of
#   them short of memory: the point fails on both, no hang;
# - a GPU that faults for good (a sticky error: every later CUDA call fails)
#   must not fail every later point: the emulator makes the Nth kernel of
#   the process fault (A3FTA_EMU_FAULT_KERNEL), N in the middle of the second
#   point (from the kernels one point runs). One group, 3 points: point 0
#   done, 1 failed, 2 left pending, exit 1 naming the lost device and the
#   pending point; the same command again (no fault) runs 1 and 2. Two
#   groups (the fault on rank 0 only, in its first point, whichever that
#   is), 6 points: the other group runs the rest, 5 done and 1 failed, exit
#   0 with a warning. Then the fault on one rank of a 2-rank group, with
#   the MPI and the NCCL gradient sum: the other rank is let go (no hang,
#   no MPI_Abort), the point fails with the lost rank's reason, the group
#   retires (exit 1, 2 pending); the rerun runs them.
# Usage: sweep_device_emu.sh MAKE_DATASET_BIN   (A3FTA_BIN set by CTest)
set -u
make_dataset=$1
bin=${A3FTA_BIN:?}
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-sweep-device-XXXXXX")
trap 'rm -rf "$dir"' EXIT
fail=0
"$make_dataset" "$dir/data.h5" >/dev/null || exit 1

sweep() { # POINTS: runs the sweep, the emulator's reports in $dir/memory-POINTS.txt
  local n=$1 seeds
  seeds=$(seq -s, 1 "$n")
  cat >"$dir/sweep-$n.yaml" <<YAML
model:
  arch: {sample_size: 16, in_channels: 1, out_channels: 1, block_out_channels: [8, 16],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}
data: {path: $dir/data.h5, classes: [1], shots: 6, hflip: true}
strategy: {name: a3fta, adapter: {rank: 4}}
train: {steps: 2, batch_size: 4, lr: 1.0e-3, lr_schedule: constant, warmup: 0, log_every: 1,
        checkpoint_every: 0}
output: {dir: $dir/out-$n, samples_per_run: 0}
sweep:
  grid: {train.seed: [$seeds]}
parallel: {backend: cuda, ranks_per_run: 2}
YAML
  A3FTA_EMU_MEMORY=1 A3FTA_GRAD_COMM=nccl mpirun -np 2 --oversubscribe "$bin" sweep \
    "$dir/sweep-$n.yaml" --no-eval >"$dir/sweep-$n.log" 2>&1
  local rc=$? done_points
  done_points=$("$bin" info "$dir/out-$n/results.h5" --csv 2>/dev/null | grep -c ',done,')
  grep '^cuda emulator memory:' "$dir/sweep-$n.log" | sort >"$dir/memory-$n.txt"
  if [ $rc -ne 0 ] || [ "$done_points" != "$n" ] || [ "$(wc -l <"$dir/memory-$n.txt")" != 2 ]; then
    echo "FAILED: the $n-point sweep: exit $rc, $done_points of $n points done, $(wc -l \
      <"$dir/memory-$n.txt") memory report(s) of 2:" >&2
    tail -5 "$dir/sweep-$n.log" >&2
    fail=1
  fi
  echo "$n points:"
  sed 's/^/  /' "$dir/memory-$n.txt"
}
sweep 2
sweep 6

if grep -v ' 0 blocks, 0 bytes live at exit' "$dir/memory-2.txt" "$dir/memory-6.txt" >&2; then
  echo "FAILED: device memory left allocated at exit (above)" >&2
  fail=1
fi
peaks() { sed -n 's/.*; peak \([0-9]*\) bytes.*/\1/p' "$1" | sort -n | tr '\n' ' '; }
if [ "$(peaks "$dir/memory-2.txt")" != "$(peaks "$dir/memory-6.txt")" ]; then
  echo "FAILED: the peak grows with the points: 2 points $(peaks "$dir/memory-2.txt")bytes," \
    "6 points $(peaks "$dir/memory-6.txt")bytes" >&2
  fail=1
fi
# Out of memory in one point of three.
sed -e "s|train.seed: \[1,2\]|train.batch_size: [4, 512, 8]|" -e "s|out-2|out-oom|" \
  -e "s|ranks_per_run: 2|ranks_per_run: 1|" "$dir/sweep-2.yaml" >"$dir/oom.yaml"
A3FTA_EMU_MEMORY=1 A3FTA_EMU_DEVICE_MB=16 "$bin" sweep "$dir/oom.yaml" --no-eval >"$dir/oom.log" 2>&1
"$bin" info "$dir/out-oom/results.h5" --csv >"$dir/oom.csv" 2>&1
status() { awk -F, -v b="$1" '$3 == b {print $2}' "$dir/oom.csv"; }
if [ "$(status 4)" != done ] || [ "$(status 8)" != done ] || [ "$(status 512)" != failed ] ||
  ! grep -q "^1,failed,512,.*out of GPU memory.*train.batch_size" "$dir/oom.csv" ||
  ! grep -q ' 0 blocks, 0 bytes live at exit' "$dir/oom.log"; then
  echo "FAILED: out of memory in one point: batch 4 $(status 4), 512 $(status 512), 8 $(status 8):" >&2
  cat "$dir/oom.csv" >&2
  grep -E "warning|failed|emulator memory" "$dir/oom.log" >&2
  fail=1
else
  echo "out of memory at batch 512 on a 16 MiB device: that point failed ($(grep -o 'out of GPU memory[^;]*' \
    "$dir/oom.csv")); batches 4 and 8 done, nothing left at exit"
fi

# Out of memory on one rank of a 2-rank group (the other's device is larger):
# the point fails on both, the group goes on. Before the trainer agreed on
# its setup, the failed rank went on to the sweep's collectives while the
# other waited in the gradient sum's first one: hung for good.
sed -e "s|ranks_per_run: 1|ranks_per_run: 2|" -e "s|out-oom|out-oom2|" "$dir/oom.yaml" >"$dir/oom2.yaml"
A3FTA_GRAD_COMM=nccl timeout 120 mpirun --oversubscribe -np 1 env A3FTA_EMU_DEVICE_MB=16 "$bin" sweep \
  "$dir/oom2.yaml" --no-eval : -np 1 "$bin" sweep "$dir/oom2.yaml" --no-eval >"$dir/oom2.log" 2>&1
rc=$?
"$bin" info "$dir/out-oom2/results.h5" --csv >"$dir/oom.csv" 2>&1
if [ $rc -ne 0 ] || [ "$(status 4)" != done ] || [ "$(status 8)" != done ] || [ "$(status 512)" != failed ] ||
  ! grep -q "^1,failed,512,.*out of GPU memory" "$dir/oom.csv"; then
  echo "FAILED: out of memory on one rank of a 2-rank group: exit $rc (124: hung), batch 4" \
    "$(status 4), 512 $(status 512), 8 $(status 8)" >&2
  grep -E "warning|failed" "$dir/oom2.log" >&2
  fail=1
else
  echo "out of memory on one rank of a 2-rank group: batch 512 failed on both, 4 and 8 done"
fi

# A device lost in the middle of a point.
seeds() { sed -e "s|train.batch_size: \[4, 512, 8\]|train.seed: [$1]|" -e "s|out-oom|$2|" "$dir/oom.yaml"; }
seeds 1 out-one >"$dir/one.yaml"
A3FTA_EMU_MEMORY=1 "$bin" sweep "$dir/one.yaml" --no-eval >"$dir/one.log" 2>&1
per_point=$(sed -n 's/.*; \([0-9]*\) kernels run/\1/p' "$dir/one.log")
if ! [ "${per_point:-0}" -gt 10 ] 2>/dev/null; then
  echo "FAILED: no kernel count from a 1-point sweep (A3FTA_EMU_MEMORY): '$per_point'" >&2
  grep -E "emulator|a3fta:" "$dir/one.log" >&2
  exit 1
fi
at=$((per_point + per_point / 2))
statuses() { "$bin" info "$1/results.h5" --csv 2>/dev/null | awk -F, 'NR > 1 {print $2}' | sort | uniq -c |
  awk '{printf "%s %s, ", $1, $2}'; }
seeds "1, 2, 3" out-lost >"$dir/lost.yaml"
A3FTA_EMU_FAULT_KERNEL=$at "$bin" sweep "$dir/lost.yaml" --no-eval >"$dir/lost.log" 2>&1
rc=$?
got=$("$bin" info "$dir/out-lost/results.h5" --csv 2>/dev/null | awk -F, 'NR > 1 {printf "%s ", $2}')
if [ $rc -ne 1 ] || [ "$got" != "done failed pending " ] ||
  ! grep -q "can run no more points: cudaErrorIllegalAddress.*1 point(s) left pending: rerun" \
    "$dir/lost.log"; then
  echo "FAILED: a device lost in point 1 of 3 (kernel $at of $per_point per point): exit $rc" \
    "(want 1), points: $got(want done failed pending)" >&2
  grep -E "warning|a3fta:|emulator" "$dir/lost.log" >&2
  fail=1
else
  echo "device lost at kernel $at (of $per_point per point): point 1 failed, point 2 left pending, exit 1"
fi
"$bin" sweep "$dir/lost.yaml" --no-eval >"$dir/lost-again.log" 2>&1
rc=$?
if [ $rc -ne 0 ] || [ "$(statuses "$dir/out-lost")" != "3 done, " ]; then
  echo "FAILED: the rerun after the lost device: exit $rc, $(statuses "$dir/out-lost")" >&2
  fail=1
else
  echo "the same command again: 3 done, exit 0"
fi
seeds "1, 2, 3, 4, 5, 6" out-two >"$dir/two.yaml"
mpirun --oversubscribe -np 1 env A3FTA_EMU_FAULT_KERNEL=$((per_point / 2)) "$bin" sweep \
  "$dir/two.yaml" --no-eval : \
  -np 1 "$bin" sweep "$dir/two.yaml" --no-eval >"$dir/two.log" 2>&1
rc=$?
if [ $rc -ne 0 ] || [ "$(statuses "$dir/out-two")" != "5 done, 1 failed, " ] ||
  ! grep -q "can run no more points.*the other groups ran its share" "$dir/two.log"; then
  echo "FAILED: a device lost in one of 2 groups: exit $rc (want 0), $(statuses "$dir/out-two")" \
    "(want 5 done, 1 failed)" >&2
  grep -E "warning|a3fta:|emulator" "$dir/two.log" >&2
  fail=1
else
  echo "device lost in one of 2 groups: the other ran the rest (5 done, 1 failed), exit 0"
fi

# A device lost on one rank of a 2-rank group, with either gradient sum: the
# other rank must not wait for it for good (MPI: it completes the step's
# sums and the group agrees on each step; NCCL: its watchdog fires after
# nccl_timeout_s and the failed rank meets it). The point fails with the
# lost rank's reason, the group retires, exit 1 with 2 points pending, and
# no MPI_Abort; the same command then runs them. Before: MPI hung for good,
# NCCL aborted the whole job without the reason.
group_fault() { # COMM AT: the fault at rank 0's kernel AT; 1 when the outcome is wrong
  local comm=$1 at=$2 rc got
  rm -rf "$dir/out-group-$comm"
  A3FTA_ABORT_GRACE_S=5 A3FTA_GRAD_COMM=$comm timeout 120 mpirun --oversubscribe -np 1 \
    env A3FTA_EMU_FAULT_KERNEL=$at "$bin" sweep "$dir/group-$comm.yaml" --no-eval : \
    -np 1 "$bin" sweep "$dir/group-$comm.yaml" --no-eval >"$dir/group-$comm.log" 2>&1
  rc=$?
  got=$("$bin" info "$dir/out-group-$comm/results.h5" --csv 2>/dev/null | awk -F, 'NR > 1 {printf "%s ", $2}')
  if [ $rc -ne 1 ] || [ "$got" != "failed pending pending " ] ||
    ! grep -q "can run no more points: cudaErrorIllegalAddress.*2 point(s) left pending" "$dir/group-$comm.log" ||
    ! "$bin" info "$dir/out-group-$comm/results.h5" --csv | grep -q "^0,failed,.*cudaErrorIllegalAddress" ||
    grep -q "aborting the MPI job" "$dir/group-$comm.log"; then
    echo "FAILED: a device lost on one rank of a 2-rank group ($comm sum, kernel $at): exit $rc" \
      "(want 1; 124: hung), points: $got(want failed pending pending)" >&2
    grep -E "warning|a3fta:|error|abort|emulator" "$dir/group-$comm.log" | head -8 >&2
    return 1
  fi
}
for comm in mpi nccl; do
  sed -e "s|ranks_per_run: 1|ranks_per_run: 2, nccl_timeout_s: 3|" -e "s|out-lost|out-group-$comm|" \
    "$dir/lost.yaml" >"$dir/group-$comm.yaml"
  # in the forward, the backward and the update of the first point
  ok=1
  for at in $((per_point / 4)) $((per_point * 3 / 4)) $((per_point / 2)); do
    group_fault "$comm" "$at" || ok=0
  done
  [ $ok = 1 ] || { fail=1; continue; }
  A3FTA_GRAD_COMM=$comm timeout 120 mpirun --oversubscribe -np 2 "$bin" sweep "$dir/group-$comm.yaml" \
    --no-eval >"$dir/group-$comm-again.log" 2>&1
  rc=$?
  if [ $rc -ne 0 ] || [ "$(statuses "$dir/out-group-$comm")" != "3 done, " ]; then
    echo "FAILED: the rerun after a device lost in a 2-rank group ($comm): exit $rc," \
      "$(statuses "$dir/out-group-$comm")" >&2
    fail=1
  else
    echo "device lost on one rank of a 2-rank group ($comm sum; kernels $((per_point / 4)), $((per_point * 3 / 4)), $((per_point / 2)) of $per_point): point failed with its reason, group retired, exit 1; the rerun: 3 done"
  fi
done

[ "$fail" = 0 ] && echo "sweep_device_emu: the peak is the same for 2 and 6 points, nothing left at exit; an out-of-memory point fails alone; a lost device stops its group only"
exit "$fail"
