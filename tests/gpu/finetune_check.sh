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
# ~1e-5 on this model).
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

train() { # NAME BACKEND STRATEGY: prints wall seconds, 1 on failure
  local dir=$out/finetune/$1 t0=$SECONDS
  timeout --signal=INT 120 "$bin" train configs/fewshot-fmnist.yaml -o "strategy.name=$3" \
    -o "parallel.backend=$2" -o train.precision=fp32 -o "train.steps=$steps" -o train.warmup=5 \
    -o train.checkpoint_every=0 -o output.samples_per_run=0 -o "output.dir=$dir" >"$dir.log" 2>&1 ||
    return 1
  echo $((SECONDS - t0))
}

{
  echo "| strategy | steps | CPU s | CUDA s | first loss | last loss | max rel. diff (bound 1e-3) |"
  echo "|---|---|---|---|---|---|---|"
} >"$report"
for s in full attention a3fta adapter lora bitfit; do
  cpu_s=$(train "$s-cpu" cpu "$s") || { echo "| $s | FAILED on cpu: $(tail -2 "$out/finetune/$s-cpu.log" | tr '\n' ' ') |" >>"$report"; fail=1; continue; }
  gpu_s=$(train "$s-cuda" cuda "$s") || { echo "| $s | FAILED on cuda: $(tail -2 "$out/finetune/$s-cuda.log" | tr '\n' ' ') |" >>"$report"; fail=1; continue; }
  env -u LD_LIBRARY_PATH python3 - "$s" "$steps" "$cpu_s" "$gpu_s" "$out/finetune/$s-cpu/losses.csv" \
    "$out/finetune/$s-cuda/losses.csv" >>"$report" <<'PY' || fail=1
import csv, sys
name, steps, cpu_s, gpu_s, a_path, b_path = sys.argv[1:]
def load(p):
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(p))}
a, b = load(a_path), load(b_path)
worst = max((abs(a[k] - b.get(k, float("nan"))) / abs(a[k]) for k in a), default=float("nan"))
last = max(a)
ok = len(a) == len(b) == int(steps) and worst <= 1e-3
print(f"| {name} | {len(a)}/{len(b)} | {cpu_s} | {gpu_s} | {a[1]:.6f} / {b[1]:.6f} | "
      f"{a[last]:.6f} / {b[last]:.6f} | {worst:.2e}{'' if ok else ' FAIL'} |")
sys.exit(0 if ok else 1)
PY
done
cat "$report"
exit $fail
