#!/bin/bash
# Which GPU each rank takes, on the CUDA emulator with A3FTA_EMU_DEVICES GPUs
# per node (tests/cuda_emu/README.md):
# - a sweep of 1-rank groups on a node of 2 GPUs: the 2 ranks take devices 0
#   and 1 (their rank on the node in the whole job, not in their group,
#   where each is rank 0), each logged with its own PCI bus id;
# - 2 ranks that see 1 GPU each (Slurm's --gpus-per-task=1): no warning; 3
#   ranks that see 2 GPUs: devices 0, 1, 0, and each warns, once;
# - one group of 2 ranks where rank 0 sees no GPU (A3FTA_EMU_DEVICES=0) and
#   rank 1 sees one: with backend auto the points are done (rank 0 on the
#   CPU, saying so), with backend cuda they fail naming cudaErrorNoDevice on
#   both ranks; neither hangs (no collective in the pick, and the group
#   agrees on its setup's outcome before the gradient sum's collectives).
# Usage: device_pick_emu.sh MAKE_DATASET_BIN   (A3FTA_BIN set by CTest)
set -u
make_dataset=$1
bin=${A3FTA_BIN:?}
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-device-pick-XXXXXX")
trap 'rm -rf "$dir"' EXIT
fail=0
"$make_dataset" "$dir/data.h5" >/dev/null || exit 1

config() { # BACKEND RANKS_PER_RUN OUT: a 2-point sweep of 1 step each
  cat <<YAML
model:
  arch: {sample_size: 16, in_channels: 1, out_channels: 1, block_out_channels: [8, 16],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}
data: {path: $dir/data.h5, classes: [1], shots: 6, hflip: true}
strategy: {name: a3fta, adapter: {rank: 4}}
train: {steps: 1, batch_size: 2, lr: 1.0e-3, lr_schedule: constant, warmup: 0, log_every: 1,
        checkpoint_every: 0}
output: {dir: $dir/$3, samples_per_run: 0}
sweep:
  grid: {train.seed: [1, 2]}
parallel: {backend: $1, ranks_per_run: $2}
YAML
}
# mpirun_to NAME ARGS...: mpirun ARGS with each rank's output in a file of
# its own (interleaved on one stream, the ranks' lines break each other),
# then theirs in $dir/NAME.log, rank by rank (mpirun's own in NAME.term);
# mpirun's exit status.
mpirun_to() {
  local name=$1 rc
  shift
  timeout 120 mpirun --oversubscribe --output-filename "$dir/$name.out" "$@" >"$dir/$name.term" 2>&1
  rc=$?
  cat "$dir/$name.out"/*/rank.*/std* >"$dir/$name.log" 2>/dev/null
  return $rc
}
# The "backend:" line of each rank, sorted by rank
backends() { grep -o '^\[rank [0-9]/2\] backend: .*' "$1" | sort -u; }

config cuda 1 two >"$dir/two.yaml"
A3FTA_EMU_DEVICES=2 mpirun_to two -np 2 "$bin" sweep "$dir/two.yaml" --no-eval
rc=$?
if [ $rc -ne 0 ] || ! backends "$dir/two.log" | head -1 | grep -q 'rank 0/2.*cuda device 0 of 2.*PCI 0000:10:00.0' ||
  ! backends "$dir/two.log" | tail -1 | grep -q 'rank 1/2.*cuda device 1 of 2.*PCI 0000:11:00.0'; then
  echo "FAILED: 1-rank groups on a node of 2 GPUs must take devices 0 and 1: exit $rc" >&2
  backends "$dir/two.log" >&2
  tail -3 "$dir/two.log" >&2
  fail=1
else
  echo "1-rank groups, 2 GPUs: rank 0 on device 0, rank 1 on device 1"
fi

# Each rank sees one GPU (Slurm's --gpus-per-task=1): no warning. Three
# ranks that each see 2: devices 0, 1, 0, and each rank that ran a point
# warns, once.
config cuda 1 one >"$dir/one.yaml"
A3FTA_EMU_DEVICES=1 mpirun_to one -np 2 "$bin" sweep "$dir/one.yaml" --no-eval
rc=$?
warned=$(grep -c "GPUs are shared" "$dir/one.log")
if [ $rc -ne 0 ] || [ "$warned" != 0 ] || [ "$(backends "$dir/one.log" | grep -c 'cuda device 0 of 1')" != 2 ]; then
  echo "FAILED: 2 ranks seeing 1 GPU each: exit $rc, $warned warning(s) (want none):" >&2
  backends "$dir/one.log" >&2
  fail=1
else
  echo "2 ranks seeing 1 GPU each: both on (their) device 0, no warning"
fi
config cuda 1 three >"$dir/three.yaml"
sed -i 's|train.seed: \[1, 2\]|train.seed: [1, 2, 3, 4, 5, 6]|' "$dir/three.yaml"
A3FTA_EMU_DEVICES=2 mpirun_to three -np 3 "$bin" sweep "$dir/three.yaml" --no-eval
rc=$?
warned=$(grep -c "3 ranks on this node but 2 GPU(s) visible to each: GPUs are shared" "$dir/three.log")
picked=$(grep -o '^\[rank [0-9]/3\] backend: cuda device [0-9]' "$dir/three.log" | sort -u | tr '\n' ' ')
if [ $rc -ne 0 ] || [ "$warned" != 3 ] || [ "$picked" != "[rank 0/3] backend: cuda device 0 [rank 1/3] backend: cuda device 1 [rank 2/3] backend: cuda device 0 " ]; then
  echo "FAILED: 3 ranks on 2 GPUs: exit $rc, $warned warning(s) (want 3, one per rank), devices: $picked" >&2
  fail=1
else
  echo "3 ranks on 2 GPUs: devices 0, 1, 0, each rank warned once"
fi

# One group of 2; rank 0 sees no GPU.
mixed() { # BACKEND: the run's exit status
  config "$1" 2 "mixed-$1" >"$dir/mixed-$1.yaml"
  A3FTA_ABORT_GRACE_S=10 mpirun_to "mixed-$1" -np 1 env A3FTA_EMU_DEVICES=0 "$bin" sweep \
    "$dir/mixed-$1.yaml" --no-eval : -np 1 "$bin" sweep "$dir/mixed-$1.yaml" --no-eval
}
mixed auto
rc=$?
if [ $rc -ne 0 ] || ! grep -q 'rank 0/2.*backend: auto -> cpu (no usable GPU (cudaErrorNoDevice))' \
  "$dir/mixed-auto.log" || ! backends "$dir/mixed-auto.log" | grep -q 'rank 1/2.*cuda device 0 of 1'; then
  echo "FAILED: backend auto, rank 0 without a GPU: exit $rc (want 0; 124: it hung)" >&2
  grep -E 'backend|error|rank' "$dir/mixed-auto.log" | head -8 >&2
  fail=1
else
  echo "backend auto, rank 0 without a GPU: rank 0 on the CPU, rank 1 on the GPU, done"
fi
mixed cuda
rc=$?
failed=$("$bin" info "$dir/mixed-cuda/results.h5" --csv 2>/dev/null | grep -c ',failed,.*no usable GPU (cudaErrorNoDevice)')
if [ $rc -eq 124 ] || [ "$failed" != 2 ]; then
  echo "FAILED: backend cuda, rank 0 without a GPU: exit $rc (124: it hung), $failed of 2 points" \
    "failed naming cudaErrorNoDevice (want 2)" >&2
  grep -E 'error|rank' "$dir/mixed-cuda.log" | head -8 >&2
  fail=1
else
  echo "backend cuda, rank 0 without a GPU: both points failed naming cudaErrorNoDevice, no hang"
fi

[ "$fail" = 0 ] && echo "device_pick_emu: each rank on its node's GPU, whatever its sweep group"
exit "$fail"
