#!/usr/bin/env bash
# A short fine-tuning run per strategy on the GPU whose loss curve must track
# the CPU one: configs/fewshot-fmnist.yaml (the committed base, 10 shots) for
# STEPS steps (default 30) with each of the six strategies, once with
# parallel.backend cpu and once with cuda (fp32), losses compared step by step.
#   tests/gpu/finetune_check.sh A3FTA_BINARY OUTDIR [STEPS]
# Writes OUTDIR/finetune-check.md: | strategy | steps | CPU s | CUDA s |
# first loss | last loss | max rel. diff |. Exit 1 when a run fails or any
# step's losses differ by more than 1e-3 relative (fp32 on both sides; the
# differences are summation order, which 30 AdamW steps do not amplify past
# ~1e-5 on this model). Then full and a3fta once more on cuda in bf16 against
# the same CPU runs, bound 5e-2: bf16 operands move each step's loss by
# ~1e-2 at most, a broken bf16 product by O(1).
set -uo pipefail
bin=${1:?usage: finetune_check.sh A3FTA_BINARY OUTDIR [STEPS]}
out=${2:?usage: finetune_check.sh A3FTA_BINARY OUTDIR [STEPS]}
steps=${3:-30}
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out/finetune" || exit 1
report=$out/finetune-check.md
cd "$root" || exit 1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}
fail=0

train() { # NAME BACKEND STRATEGY [PRECISION]: prints wall seconds, 1 on failure
  local dir=$out/finetune/$1 t0=$SECONDS
  timeout --signal=INT 120 "$bin" train configs/fewshot-fmnist.yaml -o "strategy.name=$3" \
    -o "parallel.backend=$2" -o "train.precision=${4:-fp32}" -o "train.steps=$steps" -o train.warmup=5 \
    -o train.checkpoint_every=0 -o output.samples_per_run=0 -o "output.dir=$dir" >"$dir.log" 2>&1 ||
    return 1
  echo $((SECONDS - t0))
}

{
  echo "| strategy | steps | CPU s | CUDA s | first loss | last loss | max rel. diff (bound) |"
  echo "|---|---|---|---|---|---|---|"
} >"$report"
# compare NAME CPU_S GPU_S CPU_DIR GPU_DIR BOUND: a report row; 1 past the bound.
compare() {
  env -u LD_LIBRARY_PATH python3 - "$1" "$steps" "$2" "$3" "$out/finetune/$4/losses.csv" \
    "$out/finetune/$5/losses.csv" "$6" >>"$report" <<'PY'
import csv, sys
name, steps, cpu_s, gpu_s, a_path, b_path, bound = sys.argv[1:]
def load(p):
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(p))}
a, b = load(a_path), load(b_path)
worst = max((abs(a[k] - b.get(k, float("nan"))) / abs(a[k]) for k in a), default=float("nan"))
last = max(a)
ok = len(a) == len(b) == int(steps) and worst <= float(bound)
print(f"| {name} | {len(a)}/{len(b)} | {cpu_s} | {gpu_s} | {a[1]:.6f} / {b[1]:.6f} | "
      f"{a[last]:.6f} / {b[last]:.6f} | {worst:.2e} ({bound}){'' if ok else ' FAIL'} |")
sys.exit(0 if ok else 1)
PY
}
declare -A cpu_seconds
for s in full attention a3fta adapter lora bitfit; do
  cpu_s=$(train "$s-cpu" cpu "$s") || { echo "| $s | FAILED on cpu: $(tail -2 "$out/finetune/$s-cpu.log" | tr '\n' ' ') |" >>"$report"; fail=1; continue; }
  cpu_seconds[$s]=$cpu_s
  gpu_s=$(train "$s-cuda" cuda "$s") || { echo "| $s | FAILED on cuda: $(tail -2 "$out/finetune/$s-cuda.log" | tr '\n' ' ') |" >>"$report"; fail=1; continue; }
  compare "$s" "$cpu_s" "$gpu_s" "$s-cpu" "$s-cuda" 1e-3 || fail=1
done
for s in full a3fta; do
  [ -n "${cpu_seconds[$s]:-}" ] || continue
  gpu_s=$(train "$s-cuda-bf16" cuda "$s" bf16) || { echo "| $s (bf16) | FAILED on cuda: $(tail -2 "$out/finetune/$s-cuda-bf16.log" | tr '\n' ' ') |" >>"$report"; fail=1; continue; }
  compare "$s (bf16)" "${cpu_seconds[$s]}" "$gpu_s" "$s-cpu" "$s-cuda-bf16" 5e-2 || fail=1
done
cat "$report"
exit $fail
