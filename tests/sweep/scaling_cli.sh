#!/bin/bash
# The scaling study end to end on a tiny dataset, without Slurm: jobs/scaling-study.sh --local 2
# --series dp runs one point on 1 rank and on 2 ranks (ranks_per_run 2); the results files hold
# /timing (per-rank compute and communication, steps, gradient bytes, idle), positive, with
# compute + comm <= wall per rank; a3fta info prints the new columns (and still reads a file
# without /timing); the dry run lists the strong and weak series' grids; tools/scaling-report
# writes its tables and plots from the study folder.
# Usage: scaling_cli.sh MPIEXEC MAKE_DATASET_BIN   (A3FTA_BIN set by CTest)
set -u
export MPIEXEC=$1
make_dataset=$2
bin=${A3FTA_BIN:?}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
PY=/usr/bin/python3 # Debian's h5py, numpy, matplotlib belong to it
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-scaling-XXXXXX")
fail=0
failed() { echo "FAILED: $*" >&2; fail=1; }
# Leak checks cost seconds per process under ASan; the sweeps themselves are leak-checked by the
# other sweep tests.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"

"$PY" -c "import matplotlib" 2>/dev/null ||
  { echo "FAILED: python3-matplotlib is missing (tools/lib/common.sh installs it)" >&2; exit 1; }
"$make_dataset" "$dir/data.h5" || exit 1
cat >"$dir/c.yaml" <<YAML
model:
  arch: {sample_size: 16, in_channels: 1, out_channels: 1, block_out_channels: [8, 16],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}
data: {path: $dir/data.h5, classes: [1], shots: 6, hflip: true}
strategy: {name: a3fta, adapter: {rank: 4}}
train: {steps: 3, batch_size: 4, lr: 1.0e-3, lr_schedule: constant, warmup: 0, log_every: 100,
        checkpoint_every: 100}
output: {dir: $dir/unused, samples_per_run: 0}
sweep:
  grid: {train.lr: [1.0e-3, 1.0e-2]}
YAML

# The three series on up to 4 ranks, listed only: strong 8 points at every count, weak 2, 4, 8.
"$root/jobs/scaling-study.sh" --local 4 --dry-run "$dir/c.yaml" "$dir/dry" >"$dir/dry.out" 2>&1 ||
  failed "scaling-study.sh --dry-run: $(cat "$dir/dry.out")"
for want in "strong-ranks1: 8 point" "strong-ranks4: 8 point" "weak-ranks1: 2 point" \
  "weak-ranks2: 4 point" "weak-ranks4: 8 point" "dp-ranks4: 1 point(s) on 4 rank"; do
  grep -q "$want" "$dir/dry.out" || failed "dry run lists '$want': $(cat "$dir/dry.out")"
done
[ "$(wc -l <"$dir/dry/scaling.tsv")" = 10 ] || failed "manifest of 9 members: $(cat "$dir/dry/scaling.tsv")"
[ ! -e "$dir/dry/strong-ranks1/results.h5" ] || failed "--dry-run ran a sweep"

# The data-parallel series for real: one point on 1 rank, then on 2 ranks of one group.
"$root/jobs/scaling-study.sh" --local 2 --series dp "$dir/c.yaml" "$dir/study" >"$dir/study.out" 2>&1 ||
  failed "scaling-study.sh --local 2: $(cat "$dir/study.out"; tail -20 "$dir"/study/*/sweep.log)"
trains=$(sed -n 's/.*strategy a3fta trains \([0-9]*\) .*/\1/p' "$dir/study/dp-ranks2/sweep.log" | head -1)
"$PY" - "$dir/study/dp-ranks1/results.h5" "$dir/study/dp-ranks2/results.h5" "${trains:-0}" \
  >"$dir/timing.out" 2>&1 <<'PY' || failed "timing datasets: $(cat "$dir/timing.out")"
import sys, h5py, numpy as np
trains = int(sys.argv[3])
for path, ranks in ((sys.argv[1], 1), (sys.argv[2], 2)):
    f = h5py.File(path, "r")
    assert (f["status"][:] == 1).all() and len(f["status"]) == 1, f["status"][:]
    t = f["timing"]
    for name in ("compute_s", "comm_s", "steps", "grad_bytes", "idle_s"):
        assert "description" in t[name].attrs, name
    c, m, w = t["compute_s"][:], t["comm_s"][:], f["wall_s"][:]
    assert c.shape == (1, ranks) and m.shape == (1, ranks), (c.shape, m.shape)
    assert (c > 0).all(), c
    assert (m > 0).all() if ranks > 1 else (m >= 0).all(), m
    assert (c + m <= w[:, None]).all(), (c, m, w)
    assert (t["steps"][:] == 3).all(), t["steps"][:]
    assert trains > 0 and (t["grad_bytes"][:] == 4 * trains).all(), (t["grad_bytes"][:], trains)
    idle = t["idle_s"][:]
    assert np.isfinite(idle).all() and (idle >= 0).all() and (idle <= m.max()).all(), (idle, m)
    if ranks == 1:
        assert (idle == 0).all(), idle
print("ok")
PY

# a3fta info: the new columns (CSV: per rank); a file without /timing still prints.
"$bin" info "$dir/study/dp-ranks2/results.h5" --csv >"$dir/info.csv" 2>&1 || failed "info --csv: $(cat "$dir/info.csv")"
head -1 "$dir/info.csv" | grep -q "wall_s,steps,grad_bytes,step_compute_s,step_compute_s_r0,step_compute_s_r1,step_comm_s,step_comm_s_r0,step_comm_s_r1,idle_s," ||
  failed "info --csv header: $(head -1 "$dir/info.csv")"
"$bin" info "$dir/study/dp-ranks2/results.h5" >"$dir/info.txt" 2>&1 || failed "info: $(cat "$dir/info.txt")"
grep -q "wall_s  *step_compute_s  *step_comm_s  *idle_s" "$dir/info.txt" || failed "info table: $(cat "$dir/info.txt")"
cp "$dir/study/dp-ranks2/results.h5" "$dir/old.h5"
"$PY" -c "import h5py, sys; f = h5py.File(sys.argv[1], 'r+'); del f['timing']" "$dir/old.h5"
"$bin" info "$dir/old.h5" --csv >"$dir/old.csv" 2>&1 || failed "info on a file without /timing: $(cat "$dir/old.csv")"
head -1 "$dir/old.csv" | grep -q "wall_s,fid," || failed "info without /timing: $(head -1 "$dir/old.csv")"

# The report: tables and plots (full vs a3fta traffic of the tiny config when the bench tool is built).
model=()
[ ! -x "$(dirname "$bin")/tools/bench/a3fta_bench_step" ] || model=(--model "$dir/c.yaml")
"$root/tools/scaling-report" "$dir/study" "${model[@]}" "$dir/report" >"$dir/report.out" 2>&1 ||
  failed "scaling-report: $(cat "$dir/report.out")"
md=$dir/report/scaling-report.md
grep -q "^## Data-parallel scaling of one run" "$md" || failed "report: dp table: $(cat "$md")"
grep -q "^| 2 ranks | 2 | " "$md" || failed "report: the 2-rank row: $(cat "$md")"
grep -q "^## Ring all-reduce model" "$md" || failed "report: model section"
[ ${#model[@]} = 0 ] || grep -q "^| c.yaml | a3fta | " "$md" || failed "report: traffic table: $(cat "$md")"
for png in speedup.png split.png allreduce_model.png; do
  if [ ! -s "$dir/report/$png" ] || ! grep -q "($png)" "$md"; then failed "report: $png"; fi
done

if [ "$fail" = 0 ]; then rm -rf "$dir"; else echo "kept $dir" >&2; fi
exit "$fail"
