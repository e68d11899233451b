#!/usr/bin/env bash
# Sweep-overhead benchmark: runs a3fta_bench_sweep (bench_sweep.c: the real
# sweep engine, each point trained by a3_train) on RANKS ranks, one rank per
# point (ranks_per_run 1), with a tiny U-Net on Fashion-MNIST, and prints a
# table of fractions of ranks x sweep wall time:
#   busy       inside the points' run function (a3_train: data, model, steps, checkpoint)
#   machinery  the sweep engine: plan, agreement, results file (create, per-point HDF5
#              writes, close), scheduling, the group's outcome reduction
#   idle       ranks waiting at the end for the last point of another group
# Sweeps:
#   uniform-16        16 points of equal cost (train.seed 0..15, STEPS steps each), dynamic
#   mixed-16/dynamic  16 points of 4, 16 or 64 steps in a fixed shuffled order, dynamic
#   mixed-16/static   the same, static round robin
#   alt-16/...        16 points alternating 64 and 4 steps (cost follows the index parity:
#                     the worst case of round robin on 2 groups), dynamic and static
#
# usage: tools/bench/run_sweep.sh [--ranks N] [--steps N] [--reps N] [--data PATH] [--bin PATH]
# Needs data/fashion-mnist.h5 (a3fta import fashion-mnist, see README.md) and
#   cmake --build build --target a3fta_bench_sweep
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
ranks=2 steps=40 reps=1 data=$root/data/fashion-mnist.h5
bin=${A3FTA_BENCH_BIN:-$root/build/tools/bench/a3fta_bench_sweep}
while (($#)); do
  case $1 in
    --ranks) ranks=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --data) data=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "run_sweep.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -x $bin ]] || { echo "run_sweep.sh: $bin not found; build the target a3fta_bench_sweep (or pass --bin)" >&2; exit 1; }
[[ -f $data ]] || { echo "run_sweep.sh: $data not found (a3fta import fashion-mnist; or --data)" >&2; exit 1; }
cores=$(nproc --all)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
if [[ $(id -u) == 0 ]]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

# The tiny run every point shares: 28x28 images padded to 32, channels 16/32,
# attention at 16x16; 16 shots of class 9, batch 8, no samples, no evaluation.
base() {
  cat <<YAML
model:
  init: random
  arch: {sample_size: 32, in_channels: 1, out_channels: 1, block_out_channels: [16, 32],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 8}
data: {path: $data, classes: [9], shots: 16, subset_seed: 0}
strategy: {name: full}
train: {steps: $steps, batch_size: 8, lr: 1.0e-4, lr_schedule: constant, warmup: 0, ema: true,
        seed: 0, log_every: 1000, checkpoint_every: 0}
output: {dir: $tmp/out, samples_per_run: 0}
parallel: {ranks_per_run: 1}
YAML
}
{ base; echo "sweep: {grid: {train.seed: [$(seq -s ', ' 0 15)]}}"; } >"$tmp/uniform.yaml"
# 16 costs from {4, 16, 64} in a fixed shuffled order (sum 400 steps); and alternating.
mixed=(16 4 64 4 16 64 4 16 4 64 16 4 16 4 64 16)
points() { local s i=0; for s in "$@"; do echo "    - {train.steps: $s, train.seed: $i}"; i=$((i + 1)); done; }
{ base; echo "sweep:"; echo "  points:"; points "${mixed[@]}"; } >"$tmp/mixed.yaml"
{ base; echo "sweep:"; echo "  points:"; points 64 4 64 4 64 4 64 4 64 4 64 4 64 4 64 4; } >"$tmp/alt.yaml"

run() { # label config schedule
  BENCH_LABEL=$1 mpirun --oversubscribe -np "$ranks" "$bin" "$2" "parallel.schedule=$3" 2>"$tmp/err" |
    grep '^label=' || { cat "$tmp/err" >&2; exit 1; }
}
echo "# $(date -u +%FT%TZ) $(uname -n); $cores cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg); $ranks ranks, OMP_NUM_THREADS=$OMP_NUM_THREADS"
for ((r = 0; r < reps; r++)); do
  run uniform-16/dynamic "$tmp/uniform.yaml" dynamic
  run mixed-16/dynamic "$tmp/mixed.yaml" dynamic
  run mixed-16/static "$tmp/mixed.yaml" static
  run alt-16/dynamic "$tmp/alt.yaml" dynamic
  run alt-16/static "$tmp/alt.yaml" static
done >"$tmp/lines"
# One row per sweep (the median of the repetitions' values), in percent of ranks x wall.
awk '
  { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
    L = v["label"]; if (!(L in n)) order[++m] = L
    k = ++n[L]; W[L, k] = v["wall_s"]; B[L, k] = v["busy"]; M[L, k] = v["machinery"]
    G[L, k] = v["setup_and_gaps"]; C[L, k] = v["close"]; I[L, k] = v["idle"]; T[L, k] = v["train_loop"] }
  function med(A, L, c,   i, j, t, x) { for (i = 1; i <= c; i++) x[i] = A[L, i]
    for (i = 1; i <= c; i++) for (j = i + 1; j <= c; j++) if (x[j] < x[i]) { t = x[i]; x[i] = x[j]; x[j] = t }
    return c % 2 ? x[(c + 1) / 2] : (x[c / 2] + x[c / 2 + 1]) / 2 }
  END {
    printf "| sweep | wall s | busy %% | (train loop %%) | machinery %% | (setup+gaps / close) | idle %% |\n"
    printf "|---|---|---|---|---|---|---|\n"
    for (o = 1; o <= m; o++) { L = order[o]; c = n[L]
      printf "| %s | %.2f | %.2f | %.2f | %.2f | %.2f / %.2f | %.2f |\n", L, med(W, L, c),
        100 * med(B, L, c), 100 * med(T, L, c), 100 * med(M, L, c), 100 * med(G, L, c),
        100 * med(C, L, c), 100 * med(I, L, c) }
  }' "$tmp/lines"
