#!/usr/bin/env bash
# Training-step benchmark, a3fta vs PyTorch 1.13, side by side on the same
# machine and threads: runs build/tools/bench/a3fta_bench_step and
# tools/bench/peer_step.py alternately REPS times (interleaved, so that drift
# of a shared machine hits both alike), each timing STEPS steps after WARMUP,
# and prints, per strategy (full, attention, a3fta, adapter, lora, bitfit: each
# side builds the strategy's modules and trains what a3fta's strategy trains;
# a WARNING when the two trainable parameter counts, the added modules or the
# forward MAC counts differ):
#   ms/step of both (median over all timed steps of all repetitions, and the
#   spread), ratio = torch / a3fta (> 1: a3fta faster), achieved GFLOP/s, the
#   fraction of the machine's sgemm peak (best 1024^3 sgemm measured in the
#   same runs: OpenBLAS and oneDNN in a3fta's process, torch.mm in torch's),
#   CPU time per step of each process (all threads, spinning included),
#   and peak memory (max RSS of each process, measured separately; a3fta's
#   planned arena + parameters, gradients and AdamW state; RSS growth over
#   the process before the model was built);
# then a summary: per strategy the trainable parameters, ms/step of both, the
# ratio, and a3fta's step time (wall and CPU) relative to a3fta's full step.
#
# usage: tools/bench/run_step.sh [--reps N] [--steps N] [--warmup N] [--threads T]
#                                [--batch B] [--config PATH] [--strategies "full lora ..."]
#                                [-o KEY=VALUE]... [--wait-policy active|passive] [--bin PATH]
# --strategies: default "full attention a3fta adapter lora bitfit". -o sets a
# strategy.adapter.* / strategy.lora.* key for both sides (e.g. -o
# strategy.adapter.rank=16; default: the config's, else a3fta's schema defaults).
# --wait-policy exports OMP_WAIT_POLICY to both programs (default: unset, each
# runtime's own default). On a machine that other jobs keep busy, libgomp's
# default (spin ~3 ms before sleeping) costs both sides several times their
# CPU work; passive shows the work without that (see README.md).
# Threads: --threads, else OMP_NUM_THREADS, else the core count; both sides use it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
reps=5 steps=10 warmup=3 threads=${OMP_NUM_THREADS:-$(nproc)} batch=64
config=$root/configs/fmnist-unet.yaml strategies="full attention a3fta adapter lora bitfit"
wait_policy="" overrides=()
bin=${A3FTA_BENCH_BIN:-$root/build/tools/bench/a3fta_bench_step}
while (($#)); do
  case $1 in
    --reps) reps=$2; shift 2 ;;
    --steps) steps=$2; shift 2 ;;
    --warmup) warmup=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --config) config=$2; shift 2 ;;
    --strategies) strategies=$2; shift 2 ;;
    -o) overrides+=(-o "$2"); shift 2 ;;
    --wait-policy) wait_policy=$2; shift 2 ;;
    --bin) bin=$2; shift 2 ;;
    -h|--help) sed -n '2,31p' "$0"; exit 0 ;;
    *) echo "run_step.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [[ ! -x $bin ]]; then
  echo "run_step.sh: $bin not found; build it: cmake -S $root -B $root/build -DCMAKE_BUILD_TYPE=Release && cmake --build $root/build --target a3fta_bench_step (or pass --bin)" >&2
  exit 1
fi
py=/usr/bin/python3 # Debian's torch lives there; another python3 may come first on PATH
export OMP_NUM_THREADS=$threads
if [[ -n $wait_policy ]]; then export OMP_WAIT_POLICY=$wait_policy; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "# $(date -u +%FT%TZ) $(uname -n); $(nproc) cores; load average at start: $(cut -d' ' -f1-3 /proc/loadavg); OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-(unset)}"
for s in $strategies; do
  args=(--config "$config" --batch "$batch" --steps "$steps" --warmup "$warmup" --strategy "$s"
        ${overrides[@]+"${overrides[@]}"})
  for ((r = 0; r < reps; r++)); do
    echo "$s: repetition $((r + 1))/$reps ..." >&2
    "$bin" "${args[@]}" --threads "$threads" >"$tmp/a3.$s.$r"
    "$py" "$here/peer_step.py" "${args[@]}" --threads "$threads" >"$tmp/torch.$s.$r"
  done
done
echo "# load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"
head -1 "$tmp/a3.${strategies%% *}.0"
head -1 "$tmp/torch.${strategies%% *}.0"
"$py" - "$tmp" "$reps" "$strategies" <<'PY'
import statistics, sys, os
tmp, reps, strategies = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()

def load(prefix, s):
    d = {"STEP": [], "CPU": [], "SGEMM": [], "MEM": [], "FLOPS": None, "PARAMS": None,
         "LOSS": [], "EXTRAS": None}
    for r in range(reps):
        for line in open(os.path.join(tmp, f"{prefix}.{s}.{r}")):
            f = line.split()
            if not f or f[0] not in d:
                continue
            if f[0] == "STEP":
                d["STEP"].append(float(f[1]))
                d["CPU"].append(float(f[2]))
            elif f[0] == "EXTRAS":
                d["EXTRAS"] = " ".join(f[1:])
            elif f[0] in ("SGEMM", "MEM", "LOSS"):
                d[f[0]].append([float(x) for x in f[1:]])
            else:
                d[f[0]] = [float(x) for x in f[1:]]
    return d

MB = 2.0 ** 20
peak = 0.0
res = {}
for s in strategies:
    a, t = load("a3", s), load("torch", s)
    res[s] = (a, t)
    for v in a["SGEMM"]:
        peak = max(peak, *v)
    for v in t["SGEMM"]:
        peak = max(peak, v[0])
blas = max((max(v[0] for v in res[s][0]["SGEMM"]) for s in strategies), default=0)
dnnl = max((max(v[1] for v in res[s][0]["SGEMM"]) for s in strategies), default=0)
tmm = max((max(v[0] for v in res[s][1]["SGEMM"]) for s in strategies), default=0)
print(f"sgemm 1024^3, best of the runs (GFLOP/s): OpenBLAS {blas:.0f}, oneDNN {dnnl:.0f}, "
      f"torch.mm {tmm:.0f} -> peak {peak:.0f}")
q = lambda v, p: sorted(v)[min(len(v) - 1, int(p * len(v)))]
for s in strategies:
    a, t = res[s]
    fa, ft = a["FLOPS"], t["FLOPS"]
    gflop = fa[1]
    print(f"\n== strategy {s}: {int(a['PARAMS'][1]):,} of {int(a['PARAMS'][0]):,} parameters "
          f"trainable (torch: {int(t['PARAMS'][1]):,}); forward {fa[0]:.2f} GMAC "
          f"(torch hooks: {ft[0]:.2f}), step {gflop:.1f} GFLOP counted")
    print(f"   added modules: {a['EXTRAS']}")
    if a["PARAMS"] != t["PARAMS"]:
        print(f"   WARNING: the parameter counts differ: a3fta {int(a['PARAMS'][0]):,} total, "
              f"{int(a['PARAMS'][1]):,} trainable; torch {int(t['PARAMS'][0]):,} total, "
              f"{int(t['PARAMS'][1]):,} trainable")
    if a["EXTRAS"] != t["EXTRAS"]:
        print(f"   WARNING: the added modules differ: a3fta {a['EXTRAS']}, torch {t['EXTRAS']}")
    if abs(fa[0] - ft[0]) > 1e-3 * fa[0]:
        print("   WARNING: the two forward MAC counts differ")
    ma, mt = statistics.median(a["STEP"]), statistics.median(t["STEP"])
    ca, ct = statistics.median(a["CPU"]), statistics.median(t["CPU"])
    print(f"{'':<10}{'ms/step':>9}{'p25':>9}{'p75':>9}{'GFLOP/s':>9}{'of peak':>9}"
          f"{'CPU ms':>9}{'max RSS MB':>12}{'RSS growth':>12}  steps")
    for name, d, m, c in (("a3fta", a, ma, ca), ("torch", t, mt, ct)):
        rss = max(v[4] for v in d["MEM"]) / MB
        grow = max(v[4] - v[5] for v in d["MEM"]) / MB
        print(f"{name:<10}{m:>9.1f}{q(d['STEP'], .25):>9.1f}{q(d['STEP'], .75):>9.1f}"
              f"{gflop / m * 1e3:>9.1f}{gflop / m * 1e3 / peak:>9.1%}{c:>9.1f}{rss:>12.1f}"
              f"{grow:>12.1f}  {len(d['STEP'])}")
    print(f"ratio torch/a3fta = {mt / ma:.2f}   (> 1: a3fta faster; CPU time ratio {ct / ca:.2f})")
    m = a["MEM"][0]
    print(f"a3fta memory: planned arena {m[0] / MB:.1f} MB + params {m[1] / MB:.1f} + grads "
          f"{m[2] / MB:.1f} + AdamW {m[3] / MB:.1f} = {(m[0] + m[1] + m[2] + m[3]) / MB:.1f} MB; "
          f"RSS before the model {statistics.median(v[5] for v in a['MEM']) / MB:.1f} MB, "
          f"torch {statistics.median(v[5] for v in t['MEM']) / MB:.1f} MB")
    la = statistics.median(v[1] for v in a["LOSS"])
    lt = statistics.median(v[1] for v in t["LOSS"])
    print(f"last loss (sanity, different random init and data): a3fta {la:.3f}, torch {lt:.3f}")
full = statistics.median(res["full"][0]["STEP"]) if "full" in res else None
full_cpu = statistics.median(res["full"][0]["CPU"]) if "full" in res else None
print("\n== summary (medians; ms per step; vs full: a3fta's step / a3fta's full step, wall "
      "and CPU time)")
print(f"{'strategy':<10}{'trainable':>11}{'a3fta ms':>10}{'torch ms':>10}{'ratio':>7}"
      f"{'vs full':>9}{'CPU vs full':>13}{'GFLOP':>8}")
for s in strategies:
    a, t = res[s]
    ma, mt = statistics.median(a["STEP"]), statistics.median(t["STEP"])
    ca = statistics.median(a["CPU"])
    same = a["PARAMS"] == t["PARAMS"] and a["EXTRAS"] == t["EXTRAS"]
    rel = f"{ma / full:.2f}x" if full else "-"
    rel_cpu = f"{ca / full_cpu:.2f}x" if full_cpu else "-"
    print(f"{s:<10}{int(a['PARAMS'][1]):>11,}{ma:>10.1f}{mt:>10.1f}{mt / ma:>7.2f}{rel:>9}"
          f"{rel_cpu:>13}{a['FLOPS'][1]:>8.1f}"
          + ("" if same else "  WARNING: torch's model or trainable set differs"))
print(f"\nmedians over {reps} interleaved repetitions; ratio = torch ms / a3fta ms (> 1: a3fta faster)")
print("CPU ms: CPU time of all the process's threads per step (spin-waiting included): on a busy")
print("machine wall times swing with the other load, CPU time much less")
PY
