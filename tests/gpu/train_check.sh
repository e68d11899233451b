#!/usr/bin/env bash
# Training on the GPU, checked against the CPU, then the Fashion-MNIST
# few-shot experiment's GPU runs. For a machine with one NVIDIA GPU and
# data/fashion-mnist.h5 (`a3fta import fashion-mnist`).
#   tests/gpu/train_check.sh OUTDIR [PRETRAIN_STEPS [FINETUNE_STEPS]]
# (A3FTA_CHECK_BACKEND=cpu runs the "GPU" side on the CPU: a dry run of this
# script on a machine without a GPU.)
# 1. The first 30 steps of configs/pretrain-fmnist.yaml on the CPU backend and
#    on CUDA (fp32): losses side by side, max relative difference.
# 2. Pretraining on CUDA (PRETRAIN_STEPS, default the config's 3000), then
#    `a3fta export` of its EMA weights: OUTDIR/base-ema.safetensors, the base
#    configs/fewshot-fmnist.yaml fine-tunes.
# 3. A 300-step fine-tune per strategy on CUDA from that base.
# Writes OUTDIR/train-check.md (tables), OUTDIR/train-runs.tar.gz (losses.csv,
# samples.png and logs of every run). Exit 1 if a run failed or the CPU/GPU
# losses differ by more than 1e-3 relative at any of the first 30 steps.
set -uo pipefail
out=${1:?usage: train_check.sh OUTDIR [PRETRAIN_STEPS]}
steps=${2:-3000}
ft_steps=${3:-300}
dev=${A3FTA_CHECK_BACKEND:-cuda}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${A3FTA_GPU_PREBUILT:-$root/build-gpu}/a3fta
work=$(mktemp -d)
mkdir -p "$out"
report=$out/train-check.md
fail=0
cd "$root" || exit 1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(nproc)}

run() { # NAME LIMIT_S ARGS...: a3fta train, log in $work/NAME.log; prints seconds
  local name=$1 limit=$2 t0 rc
  shift 2
  t0=$(date +%s%N)
  timeout --signal=INT "$limit" "$bin" train "$@" -o "output.dir=$work/$name" >"$work/$name.log" 2>&1
  rc=$?
  local ms=$((($(date +%s%N) - t0) / 1000000))
  printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
  if ((rc != 0)); then
    echo " (FAILED rc=$rc: $(tail -3 "$work/$name.log" | tr '\n' ' '))"
    return 1
  fi
}

echo "# Training on the GPU ($(date -u +%FT%TZ))" >"$report"
echo "## CPU vs CUDA, configs/pretrain-fmnist.yaml, first 30 steps" >>"$report"
cmp_args=(configs/pretrain-fmnist.yaml -o train.steps=30 -o train.warmup=10 -o train.log_every=10
  -o output.samples_per_run=0 -o train.checkpoint_every=0)
cpu_s=$(run cmp-cpu 120 "${cmp_args[@]}" -o parallel.backend=cpu) || fail=1
gpu_s=$(run cmp-gpu 120 "${cmp_args[@]}" -o "parallel.backend=$dev") || fail=1
echo "CPU ($OMP_NUM_THREADS threads) ${cpu_s}s, CUDA ${gpu_s}s (process wall time)" >>"$report"
python3 - "$work/cmp-cpu/losses.csv" "$work/cmp-gpu/losses.csv" >>"$report" <<'PY' || fail=1
import csv, sys
def load(p):
    return {int(r["step"]): float(r["loss"]) for r in csv.DictReader(open(p))}
a, b = load(sys.argv[1]), load(sys.argv[2])
worst = 0.0
print("| step | CPU loss | CUDA loss | rel. diff |\n|---|---|---|---|")
for s in sorted(a):
    d = abs(a[s] - b[s]) / abs(a[s])
    worst = max(worst, d)
    if s in (1, 2, 5, 10, 20, 30):
        print(f"| {s} | {a[s]:.6f} | {b[s]:.6f} | {d:.2e} |")
print(f"\nmax relative difference over {len(a)} steps: {worst:.2e} (bound 1e-3)")
sys.exit(0 if worst <= 1e-3 and len(a) == len(b) == 30 else 1)
PY

echo -e "\n## Pretraining on CUDA ($steps steps)" >>"$report"
pre_s=$(run pretrain 300 configs/pretrain-fmnist.yaml -o "train.steps=$steps" \
  -o "train.warmup=$((steps < 100 ? 1 : 100))" -o "parallel.backend=$dev") || fail=1
echo "wall ${pre_s}s; $(grep -E '^step' "$work/pretrain.log" | tail -1)" >>"$report"
# After a timeout the last periodic checkpoint (every 500 steps) is exported.
"$bin" export "$work/pretrain/checkpoint.h5" --out "$out/base-ema.safetensors" >>"$work/pretrain.log" 2>&1 || fail=1

echo -e "\n## Fine-tuning on CUDA from that base (configs/fewshot-fmnist.yaml, $ft_steps steps)" >>"$report"
echo "| strategy | wall s | first loss | last loss | mean of last 50 |" >>"$report"
echo "|---|---|---|---|---|" >>"$report"
for s in full attention a3fta adapter lora bitfit; do
  t=$(run "ft-$s" 120 configs/fewshot-fmnist.yaml -o "strategy.name=$s" -o "parallel.backend=$dev" -o "train.steps=$ft_steps" \
    -o "train.warmup=$((ft_steps < 30 ? 1 : 30))" \
    -o "model.init=$out/base-ema.safetensors") || fail=1
  python3 - "$s" "$t" "$work/ft-$s/losses.csv" >>"$report" <<'PY' || fail=1
import csv, sys
rows = [float(r["loss"]) for r in csv.DictReader(open(sys.argv[3]))]
tail = rows[-50:]
print(f"| {sys.argv[1]} | {sys.argv[2]} | {rows[0]:.4f} | {rows[-1]:.4f} | {sum(tail) / len(tail):.4f} |")
PY
done
tar -C "$work" -czf "$out/train-runs.tar.gz" --exclude='*.h5' . 2>/dev/null
cat "$report"
rm -rf "$work"
exit $fail
