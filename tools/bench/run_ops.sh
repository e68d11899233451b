#!/usr/bin/env bash
# Op-level benchmark, a3fta's CPU backend vs PyTorch 1.13, side by side on the
# same machine and threads: runs build/tools/bench/a3fta_bench_ops and
# tools/bench/peer_ops.py alternately REPS times (interleaved, so that drift
# of a shared machine hits both alike) and prints, per op and direction, the
# median over the repetitions of each program's median time per call:
#   op, a3fta ms, torch ms, ratio = torch / a3fta (> 1: a3fta faster), GFLOP/s of both.
#
# usage: tools/bench/run_ops.sh [--reps N] [--threads T] [--batch B] [--iters N]
#                               [--only SUBSTRING] [--im2col] [--bin PATH]
#   --im2col  also runs a3fta with A3FTA_CONV=gemm (the im2col + sgemm convs)
#             and adds its column: the "before" of the oneDNN convs.
# Threads: --threads, else OMP_NUM_THREADS, else the core count; both sides use it.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
reps=5 threads=${OMP_NUM_THREADS:-$(nproc)} batch=64 iters=10 only="" im2col=0
bin=${A3FTA_BENCH_BIN:-$root/build/tools/bench/a3fta_bench_ops}
while (($#)); do
  case $1 in
    --reps) reps=$2; shift 2 ;;
    --threads) threads=$2; shift 2 ;;
    --batch) batch=$2; shift 2 ;;
    --iters) iters=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --im2col) im2col=1; shift ;;
    --bin) bin=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "run_ops.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [[ ! -x $bin ]]; then
  echo "run_ops.sh: $bin not found; build it: cmake -S $root -B $root/build -DCMAKE_BUILD_TYPE=Release && cmake --build $root/build --target a3fta_bench_ops (or pass --bin)" >&2
  exit 1
fi
py=/usr/bin/python3 # Debian's torch lives there; another python3 may come first on PATH
export OMP_NUM_THREADS=$threads
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
args=(--batch "$batch" --iters "$iters")
[[ -n $only ]] && args+=(--only "$only")
for ((r = 0; r < reps; r++)); do
  echo "repetition $((r + 1))/$reps ..." >&2
  "$bin" "${args[@]}" >"$tmp/a3.$r"
  "$py" "$here/peer_ops.py" "${args[@]}" --threads "$threads" >"$tmp/torch.$r"
  if ((im2col)); then A3FTA_CONV=gemm "$bin" "${args[@]}" >"$tmp/im2col.$r"; fi
done
head -1 "$tmp/a3.0"
head -1 "$tmp/torch.0"
"$py" - "$tmp" "$reps" "$im2col" <<'PY'
import statistics, sys, glob, os
tmp, reps, im2col = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
def load(prefix):
    rows, order = {}, []
    for r in range(reps):
        for line in open(os.path.join(tmp, f"{prefix}.{r}")):
            f = line.split()
            if not f or f[0] != "ROW":
                continue
            key = (f[1], f[2])
            if key not in rows:
                rows[key] = []
                order.append(key)
            rows[key].append((float(f[3]), float(f[4]), int(f[5])))
    return rows, order
a3, order = load("a3")
pt, _ = load("torch")
old = load("im2col")[0] if im2col else {}
med = lambda v: statistics.median(x[0] for x in v)
hdr = f"{'op':<26}{'dir':<4}{'a3fta ms':>10}{'torch ms':>10}{'ratio':>7}{'a3 GF/s':>9}{'pt GF/s':>9}"
if im2col:
    hdr += f"{'im2col ms':>11}{'speedup':>9}"
print(hdr + f"{'ws MB':>8}")
tot_a = tot_p = tot_o = 0.0
for key in order:
    ta, gf, ws = med(a3[key]), a3[key][0][1], a3[key][0][2]
    tp = med(pt[key]) if key in pt else float("nan")
    line = f"{key[0]:<26}{key[1]:<4}{ta:>10.3f}{tp:>10.3f}{tp / ta:>7.2f}"
    line += f"{gf / ta * 1e3:>9.0f}{gf / tp * 1e3:>9.0f}" if gf > 0 else f"{'-':>9}{'-':>9}"
    if im2col:
        to = med(old[key]) if key in old else float("nan")
        line += f"{to:>11.3f}{to / ta:>9.2f}"
        if not key[0].startswith("gn_silu_fused"): tot_o += to
    print(line + f"{ws / 2**20:>8.2f}")
    if not key[0].startswith("gn_silu_fused"):  # the unfused rows stand for GroupNorm+SiLU
        tot_a += ta
        tot_p += tp
print(f"{'sum (unfused gn rows)':<30}{tot_a:>10.3f}{tot_p:>10.3f}{tot_p / tot_a:>7.2f}"
      + (f"{'':>18}{tot_o:>11.3f}{tot_o / tot_a:>9.2f}" if im2col else ""))
print(f"medians of {reps} interleaved repetitions; ratio = torch ms / a3fta ms (> 1: a3fta faster)")
PY
