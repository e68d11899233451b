#!/bin/bash
# A3FTA_PROFILE=1 on the CUDA backend (here the emulator's; tests/cuda_emu):
# a3fta_bench_step's steps on a small U-Net must print the CUDA backend's
# per-op table (events on its stream, backend/op_profile.h), with rows for
# the convolutions, GroupNorm, linears and attention, and a total between
# 40% and 110% of the steps' own wall time (the table leaves out the
# optimizer and copies; above 100% would mean events that time more than
# the ops). On the CPU backend the same run prints the CPU's table, with the
# same rows (its first calls' setup makes its total no measure of the steps).
# Usage: profile_emu.sh BENCH_BIN
set -u
bench=${1:?usage: profile_emu.sh BENCH_BIN}
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-profile-emu-XXXXXX")
trap 'rm -rf "$dir"' EXIT
fail=0
cat >"$dir/tiny.yaml" <<YAML
model:
  arch: {sample_size: 16, in_channels: 1, out_channels: 1, block_out_channels: [8, 16],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}
YAML

# profile BACKEND TITLE: runs the bench, checks the table titled TITLE.
profile() {
  local out=$dir/$1.txt
  if ! A3FTA_PROFILE=1 OMP_NUM_THREADS=1 "$bench" --backend "$1" --config "$dir/tiny.yaml" \
    --batch 2 --steps 2 --warmup 1 --sgemm-reps 0 >"$out" 2>&1; then
    echo "FAIL: $1: the bench failed:"
    cat "$out"
    fail=1
    return
  fi
  # The table titled TITLE: its rows up to its total.
  awk -v t="$2" 'index($0, "A3FTA_PROFILE: " t) == 1 {on = 1; next}
                 on && /^total/ {print; exit} on' "$out" >"$dir/$1.table"
  local op
  for op in conv_fwd conv_bwd gn_silu_fwd gn_silu_bwd linear_fwd linear_bwd attention_fwd \
    attention_bwd; do
    grep -q "^$op" "$dir/$1.table" || {
      echo "FAIL: $1: no $op row in the table \"$2\""
      fail=1
    }
  done
  [ "$1" = cuda ] || return
  # Steps profiled: the timed steps (STEP lines) and as many queued ones
  # (PIPE, ms each); the warm-up step is left out of the profile
  # (a3_op_profile_reset).
  awk -v name="$1" '
    /^STEP / {steps += $2; n++}
    /^PIPE / {pipe = $2}
    END {
      while ((getline line < FILENAME_T) > 0) if (line ~ /^total/) {split(line, f); total = f[2]}
      wall = steps + n * pipe
      ratio = wall > 0 ? total / wall : 0
      printf "%s: profiled %.1f ms of %.1f ms of steps (%.2f)\n", name, total, wall, ratio
      exit !(ratio >= 0.4 && ratio <= 1.1)
    }' FILENAME_T="$dir/$1.table" "$out" || {
    echo "FAIL: $1: the profiled total is not 40-110% of the steps' time"
    cat "$out"
    fail=1
  }
}
profile cuda "CUDA backend ops, GPU time between events on its stream"
profile cpu "CPU backend ops, wall time"
[ $fail -eq 0 ] && echo "profile_emu: PASS"
exit $fail
