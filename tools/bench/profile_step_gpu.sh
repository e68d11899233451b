#!/usr/bin/env bash
# Where a GPU training step's time goes, kernel by kernel: Nsight Compute
# (ncu) times every kernel of one a3fta_bench_step step (--warmup 0
# --steps 1: the step's kernels, plus the few of the setup) and the kernels
# are summed by name into a table: kernel, launches, total us, share.
#   tools/bench/profile_step_gpu.sh BENCH_BIN OUTDIR [CONFIG [BATCH [STRATEGY [PRECISION]]]]
# (defaults configs/ddpm-cifar10-32.yaml 128 a3fta tf32). Writes
# OUTDIR/ncu.csv (one row per launch) and OUTDIR/kernels.md (the table; its
# first 25 rows are printed). ncu replays each kernel, so the whole takes
# about a minute for the cifar U-Net; times are those of each kernel alone
# (no overlap), with the GPU's clocks left as they are (--clock-control none).
set -uo pipefail
bin=${1:?usage: profile_step_gpu.sh BENCH_BIN OUTDIR [CONFIG [BATCH [STRATEGY [PRECISION]]]]}
out=${2:?usage: profile_step_gpu.sh BENCH_BIN OUTDIR [CONFIG [BATCH [STRATEGY [PRECISION]]]]}
root=$(cd "$(dirname "$0")/../.." && pwd)
config=${3:-$root/configs/ddpm-cifar10-32.yaml}
batch=${4:-128} strategy=${5:-a3fta} precision=${6:-tf32}
ncu_bin=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
if [[ -z $ncu_bin ]]; then
  echo "profile_step_gpu.sh: ncu not found" >&2
  exit 77
fi
mkdir -p "$out" || exit 1
# ncu itself must not load the libraries LD_LIBRARY_PATH points the bench at
# (tests/gpu/unbundle.sh's older libstdc++): only the profiled process gets them.
env -u LD_LIBRARY_PATH "$ncu_bin" --clock-control none --metrics gpu__time_duration.sum --csv \
  --page raw --target-processes all env LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}" "$bin" \
  --config "$config" --batch "$batch" --steps 1 --warmup 0 --sgemm-reps 0 --backend cuda \
  --precision "$precision" --strategy "$strategy" >"$out/ncu.raw" 2>"$out/ncu.err"
rc=$?
grep '^"' "$out/ncu.raw" >"$out/ncu.csv"
env -u LD_LIBRARY_PATH "${PYTHON:-python3}" - "$out/ncu.csv" "$out/kernels.md" "$config $batch $strategy $precision" <<'PY'
import csv, sys, collections
rows = list(csv.DictReader(open(sys.argv[1])))
total = collections.defaultdict(float)
count = collections.Counter()
for r in rows:
    t = r.get("gpu__time_duration.sum", "")
    try:
        v = float(t.replace(",", ""))
    except ValueError:
        continue  # the units row
    name = r.get("Kernel Name", "?")[:90]
    total[name] += v
    count[name] += 1
unit = next((r.get("gpu__time_duration.sum") for r in rows if r.get("ID", "") == ""), "ns")
scale = 1e-3 if unit in ("ns", "nsecond") else (1.0 if unit in ("us", "usecond") else 1e3)
grand = sum(total.values()) * scale
lines = [f"# kernels of one step: {sys.argv[3]}; {sum(count.values())} launches, "
         f"{grand:.0f} us of kernel time (each kernel alone)", "",
         "| kernel | launches | total us | share |", "|---|---|---|---|"]
for name, v in sorted(total.items(), key=lambda kv: -kv[1]):
    lines.append(f"| {name} | {count[name]} | {v * scale:.0f} | {100 * v * scale / grand:.1f}% |")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines[:29]))
PY
py_rc=$?
if ((rc != 0)); then
  echo "profile_step_gpu.sh: ncu exited $rc; stderr:" >&2
  tail -5 "$out/ncu.err" >&2
fi
exit $((rc != 0 || py_rc != 0))
