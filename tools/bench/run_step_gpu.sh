#!/usr/bin/env bash
# Training-step benchmark on one GPU, a3fta's CUDA backend vs PyTorch: for
# configs/fmnist-unet.yaml at batch 64 and configs/ddpm-cifar10-32.yaml at
# batch 128, strategies full and a3fta, precisions fp32, tf32 and bf16 (a3fta's
# bf16: bf16 tensor-core GEMM operands with fp32 storage; torch's: autocast), runs
# a3fta_bench_step --backend cuda (one process per case) and
# tools/bench/peer_step.py --device cuda (one process per config and
# repetition, all its cases in it: the torch import costs seconds),
# interleaved per config, REPS times, each timing STEPS steps after WARMUP,
# then prints one table:
#   config batch strategy precision a3fta-ms torch-ms ratio(torch/a3fta)
#   pipe-a3fta pipe-torch pipe-ratio a3fta-GFLOP/s MFU MFU-peak a3fta-MB torch-MB
# ms: median over all timed steps of all repetitions (each step timed up to
# a device synchronize); pipe: ms per step of STEPS more steps queued back to
# back with one synchronize at the end (the trainer's way: launch overhead
# hidden behind the GPU's work); GFLOP/s: a3fta's architecture-derived step count
# (bench_step.c count_flops) / a3fta's ms; MB: device memory, a3fta's planned
# arena + params + grads + AdamW moments, torch's max_memory_allocated. A
# WARNING follows a row whose two models differ (trainable parameters, added
# modules, forward MACs).
#
# usage: tools/bench/run_step_gpu.sh [--bin PATH] [--reps N] [--steps N] [--warmup N]
#                                    [--out DIR] [--timeout S] [--budget S] [--max-time S]
# --bin: a3fta_bench_step built with -DA3FTA_CUDA=ON (default
#   $A3FTA_BENCH_BIN, else build/tools/bench/a3fta_bench_step). Python:
#   ${PYTHON:-python3} from PATH (torch 2.x with CUDA), run with PYTHONUNBUFFERED=1.
# --out DIR: also write there the log (log.txt), the table (table.txt) and
#   every process's raw output (raw/).
# Time limits (the defaults, reps 2, warmup 3, steps 10, should take ~2-3 minutes
# on an H100): a process is killed after --timeout s (default 90); a
# repetition after the first skips a process that would not end within
# --budget s of the start (default 170, judged by its first run); nothing
# runs past --max-time s (default 420): the table then shows what finished.
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
reps=2 steps=10 warmup=3 out="" proc_timeout=90 budget=170 max_time=420
bin=${A3FTA_BENCH_BIN:-$root/build/tools/bench/a3fta_bench_step}
py=${PYTHON:-python3}
while (($#)); do
  case $1 in
    --bin) bin=$2; shift 2 ;;
    --reps) reps=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --timeout) proc_timeout=$2; shift 2 ;;
    --budget) budget=$2; shift 2 ;;
    --max-time) max_time=$2; shift 2 ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "run_step_gpu.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [[ ! -x $bin ]]; then
  echo "run_step_gpu.sh: $bin not found; build it: cmake -S $root -B $root/build -DCMAKE_BUILD_TYPE=Release -DA3FTA_CUDA=ON && cmake --build $root/build --target a3fta_bench_step (or pass --bin)" >&2
  exit 1
fi
export PYTHONUNBUFFERED=1
if [[ -n $out ]]; then
  mkdir -p "$out/raw" || exit 1
  raw=$(cd "$out/raw" && pwd)
  exec > >(tee "$out/log.txt") 2>&1
  tee_pid=$!
else
  raw=$(mktemp -d)
  trap 'rm -rf "$raw"' EXIT
fi

# config:batch, in the order run (the quick one first).
cases="fmnist-unet:64 ddpm-cifar10-32:128"
strategies="full a3fta" a3_precisions="fp32 tf32 bf16" torch_precisions="fp32,tf32,bf16"
SECONDS=0
declare -A took # a process's wall seconds in its first repetition

echo "# $(date -u +%FT%TZ) $(uname -n); reps $reps, warmup $warmup, steps $steps; bin $bin"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader |
    sed 's/^/# GPU: /'
fi

# run NAME CMD...: CMD's stdout to $raw/NAME (stderr to $raw/NAME.err), under
# the time limits; records its wall time.
run() {
  local name=$1 r=$2
  shift 2
  local left=$((max_time - SECONDS)) limit=$proc_timeout
  if ((left < 5)); then
    echo "  $name: skipped (--max-time $max_time s reached)" >&2
    return
  fi
  if ((r > 0)) && [[ -n ${took[$name]:-} ]] && ((SECONDS + took[$name] > budget)); then
    echo "  $name: repetition $((r + 1)) skipped (--budget $budget s)" >&2
    return
  fi
  ((limit > left)) && limit=$left
  local t0=$SECONDS rc=0
  timeout -k 5 "$limit" "$@" >"$raw/$name.$r" 2>"$raw/$name.$r.err" || rc=$?
  ((r == 0)) && took[$name]=$((SECONDS - t0))
  if ((rc != 0)); then
    echo "  $name: exit $rc$( ((rc == 124)) && echo " (killed after $limit s)"); stderr:" >&2
    tail -5 "$raw/$name.$r.err" | sed 's/^/    /' >&2
  else
    echo "  $name: $((SECONDS - t0)) s" >&2
  fi
}

for ((r = 0; r < reps; r++)); do
  for c in $cases; do
    cfg=${c%%:*} batch=${c##*:}
    common=(--config "$root/configs/$cfg.yaml" --batch "$batch" --steps "$steps" --warmup "$warmup")
    echo "repetition $((r + 1))/$reps, $cfg at batch $batch ($SECONDS s) ..." >&2
    for s in $strategies; do
      for p in $a3_precisions; do
        run "a3.$cfg.$s.$p" "$r" "$bin" "${common[@]}" --backend cuda --precision "$p" --strategy "$s"
      done
    done
    run "torch.$cfg" "$r" "$py" "$here/peer_step.py" "${common[@]}" --device cuda \
      --strategy "${strategies// /,}" --precision "$torch_precisions"
  done
done
echo "# done in $SECONDS s"
for f in "$raw"/a3.*.0 "$raw"/torch.*.0; do
  [[ -s $f ]] && grep -m1 '^#' "$f"
done | sed 's/; precision.*//' | sort -u

gpu_name=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
"$py" - "$raw" "$reps" "$cases" "$strategies" "$a3_precisions" "$torch_precisions" \
  "${out:+$out/table.txt}" "$gpu_name" <<'PY'
import glob, os, statistics, sys
raw, reps, cases, strategies = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
a3_prec, torch_prec, table_path = sys.argv[5].split(), sys.argv[6].split(","), sys.argv[7]
gpu_name = sys.argv[8] if len(sys.argv) > 8 else ""

# The card's datasheet peak, dense (half the "with sparsity" figures),
# TFLOP/s per precision, by the first name nvidia-smi's contains: H100 SXM5
# (and H200, the same chip) 66.9 / 494.7 / 989.4, H100 PCIe 51 / 378 / 756.5,
# A100 19.5 / 156 / 312; other cards (the H100 NVL among them): unknown.
DATASHEET = [("H200", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}),
             ("H100 PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.5}),
             ("H100 NVL", None),
             ("H100", {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4}),
             ("A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0})]
card_peak = next((p for name, p in DATASHEET if name in gpu_name), None)

def parse(lines):
    d = {"STEP": [], "PIPE": [], "MEM": None, "FLOPS": None, "PARAMS": None, "EXTRAS": None,
         "SGEMM": None}
    for line in lines:
        f = line.split()
        if not f or f[0] not in d:
            continue
        if f[0] in ("STEP", "PIPE"):
            d[f[0]].append(float(f[1]))
        elif f[0] == "EXTRAS":
            d["EXTRAS"] = " ".join(f[1:])
        else:
            d[f[0]] = [float(x) for x in f[1:]]
    return d

def merge(runs):
    d = {"STEP": [], "PIPE": [], "MEM": None, "FLOPS": None, "PARAMS": None, "EXTRAS": None,
         "SGEMM": None}
    for x in runs:
        d["STEP"] += x["STEP"]
        d["PIPE"] += x["PIPE"]
        for k in ("MEM", "FLOPS", "PARAMS", "EXTRAS", "SGEMM"):
            d[k] = d[k] or x[k]
    return d

def read(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except OSError:
        return []

a3, torch = {}, {}
for c in cases:
    cfg = c.split(":")[0]
    for s in strategies:
        for p in a3_prec:
            a3[cfg, s, p] = merge(parse(read(f"{raw}/a3.{cfg}.{s}.{p}.{r}")) for r in range(reps))
    blocks = {}
    for r in range(reps):
        key = None
        for line in read(f"{raw}/torch.{cfg}.{r}"):
            if line.startswith("COMBO "):
                key = tuple(line.split()[1:3])
                blocks.setdefault(key, []).append([])
            elif key:
                blocks[key][-1].append(line)
    for (s, p), runs in blocks.items():
        torch[cfg, s, p] = merge(parse(b) for b in runs)

MB = 2.0 ** 20
rows = [("config", "batch", "strategy", "precision", "a3fta-ms", "torch-ms", "ratio",
         "pipe-a3fta", "pipe-torch", "pipe-ratio", "a3fta-GFLOP/s", "MFU", "MFU-peak", "a3fta-MB",
         "torch-MB")]
# The card's matrix rate, measured in this run: a3fta's 4096^3 GEMM per precision.
gemm_peak = {}
for (cfg, s, p), d in a3.items():
    if d["SGEMM"]:
        gemm_peak[p] = max(gemm_peak.get(p, 0.0), d["SGEMM"][0])
notes = []
for c in cases:
    cfg, batch = c.split(":")
    for s in strategies:
        for p in torch_prec + [q for q in a3_prec if q not in torch_prec]:
            a, t = a3.get((cfg, s, p)), torch.get((cfg, s, p))
            ma = statistics.median(a["STEP"]) if a and a["STEP"] else None
            mt = statistics.median(t["STEP"]) if t and t["STEP"] else None
            pa = statistics.median(a["PIPE"]) if a and a["PIPE"] else None
            pt = statistics.median(t["PIPE"]) if t and t["PIPE"] else None
            fmt = lambda v, f: "-" if v is None else format(v, f)
            gf = a["FLOPS"][1] / ma * 1e3 if ma and a["FLOPS"] else None
            amb = sum(a["MEM"][:4]) / MB if a and a["MEM"] else None
            tmb = t["MEM"][0] / MB if t and t["MEM"] else None
            mfu = gf / gemm_peak[p] if gf and gemm_peak.get(p) else None
            mfu_peak = gf / (card_peak[p] * 1e3) if gf and card_peak and p in card_peak else None
            rows.append((cfg, batch, s, p, fmt(ma, ".2f"), fmt(mt, ".2f"),
                         fmt(mt / ma if ma and mt else None, ".2f"), fmt(pa, ".2f"),
                         fmt(pt, ".2f"), fmt(pt / pa if pa and pt else None, ".2f"), fmt(gf, ".0f"),
                         fmt(mfu, ".1%"), fmt(mfu_peak, ".1%"), fmt(amb, ".0f"), fmt(tmb, ".0f")))
            if a and t and a["PARAMS"] and t["PARAMS"]:
                if a["PARAMS"] != t["PARAMS"] or a["EXTRAS"] != t["EXTRAS"]:
                    notes.append(f"WARNING {cfg} {s}: the models differ: a3fta PARAMS "
                                 f"{a['PARAMS']} {a['EXTRAS']}, torch {t['PARAMS']} {t['EXTRAS']}")
                if a["FLOPS"] and t["FLOPS"] and abs(a["FLOPS"][0] - t["FLOPS"][0]) > 1e-3 * a["FLOPS"][0]:
                    notes.append(f"WARNING {cfg} {s}: forward GMAC a3fta {a['FLOPS'][0]}, "
                                 f"torch hooks {t['FLOPS'][0]}")
            if p in a3_prec and not (a and a["STEP"]):
                notes.append(f"no a3fta result for {cfg} {s} {p} (see the log)")
            if not (t and t["STEP"]):
                notes.append(f"no torch result for {cfg} {s} {p} (see the log)")
w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
lines = ["  ".join(v.rjust(w[i]) if i > 3 else v.ljust(w[i]) for i, v in enumerate(r)).rstrip()
         for r in rows]
peaks = {}
for who, res in (("a3fta linear_forward", a3), ("torch.mm", torch)):
    for (cfg, s, p), d in res.items():
        if d["SGEMM"]:
            peaks[who, p] = max(peaks.get((who, p), 0.0), d["SGEMM"][0])
lines.append("")
lines.append("ms: median over all timed steps of all repetitions; ratio = torch ms / a3fta ms "
             "(> 1: a3fta faster); bf16: a3fta's bf16 copies of the GEMM and cuDNN conv operands "
             "with fp32 storage, torch's autocast")
lines.append("pipe: ms per step of --steps steps queued back to back with one synchronize "
             "at the end (as a3fta's trainer runs them, reading the loss only when it logs); "
             "pipe-ratio = torch / a3fta")
lines.append("MFU: a3fta GFLOP/s over the 4096^3 GEMM rate a3fta measured in this run at that "
             "precision (below); MFU-peak: over the card's datasheet peak, dense"
             + (f" ({gpu_name}: " + ", ".join(f"{k} {v:g}" for k, v in card_peak.items())
                + " TFLOP/s)" if card_peak else f" (unknown for '{gpu_name}': '-')"))
lines.append("GFLOP/s: a3fta's counted step FLOPs / a3fta ms; MB: device memory (a3fta: arena + "
             "params + grads + AdamW; torch: max_memory_allocated)")
if peaks:
    lines.append("4096^3 GEMM GFLOP/s: " + ", ".join(f"{k[0]} {k[1]} {v:.0f}"
                                                     for k, v in sorted(peaks.items())))
lines += notes
text = "\n".join(lines)
print(text)
if table_path:
    with open(table_path, "w") as f:
        f.write(text + "\n")
PY
status=$?
if [[ -n $out ]]; then
  exec >&- 2>&- # let tee see the end of the log, then wait for it
  wait "$tee_pid" 2>/dev/null
fi
exit $status
