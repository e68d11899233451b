#!/bin/bash
# a3fta sweep --slice and a3fta merge, without Slurm: a tiny sweep (real trainer) run as
# slices 0/2 and 1/2 and merged equals the same sweep run at once; then merge's errors, each
# exit 2 naming the file (and dataset): a missing input, a file that is not a results file,
# inputs of different sweeps, overlapping slices, another shape of a dataset, an existing
# output; bad --slice values (exit 2); an input locked by another writer (the message says
# HDF5_USE_FILE_LOCKING=FALSE, which then works). The datasets added later (/trainable_params,
# /total_params, /heldout_curve*, /memorized) are merged; files of an older a3fta without them
# merge among themselves, not with newer ones, and a sweep resumes one with a single warning.
# Usage: merge_cli.sh MPIEXEC MAKE_DATASET_BIN   (A3FTA_BIN set by CTest)
set -u
MPIEXEC=$1 make_dataset=$2
bin=${A3FTA_BIN:?}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=/usr/bin/python3 # Debian's h5py belongs to it
"$PY" -c 'import h5py' 2>/dev/null || { echo "SKIP: $PY has no h5py"; exit 77; }
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-merge-XXXXXX")
fail=0
failed() { echo "FAILED: $*" >&2; fail=1; }
run() { # run OUTFILE a3fta-args... ; sets rc (one process: merge is serial)
  local out=$1
  shift
  timeout 120 "$bin" "$@" >"$out" 2>&1
  rc=$?
}
expect() { # expect RC WHAT OUTFILE [TEXT...]: exit code and each text in the output
  local want=$1 what=$2 out=$3 t
  shift 3
  [ "$rc" = "$want" ] || { failed "$what: exit $rc, expected $want: $(tail -5 "$out")"; return; }
  for t in "$@"; do grep -qF -- "$t" "$out" || failed "$what: the output lacks '$t': $(tail -5 "$out")"; done
}
# Leak checks cost seconds per process under ASan; one merge below keeps them.
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"

"$make_dataset" "$dir/data.h5" >/dev/null || exit 1
write_config() { # FILE OUTDIR GRID
  cat >"$1" <<YAML
model:
  arch: {sample_size: 16, in_channels: 1, out_channels: 1, block_out_channels: [8, 16],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}
data: {path: $dir/data.h5, classes: [1], shots: 6, hflip: true}
strategy: {name: a3fta, adapter: {rank: 4}}
train: {steps: 3, batch_size: 4, lr: 1.0e-3, lr_schedule: constant, warmup: 0, log_every: 100}
eval: {sampler: ddim, sampler_steps: 2}
output: {dir: $2, samples_per_run: 2}
sweep:
  grid: $3
parallel: {ranks_per_run: 1, schedule: dynamic}
YAML
}
grid='{strategy.name: [a3fta, lora], train.lr: [1.0e-3, 1.0e-2, 2.0e-3]}'
write_config "$dir/s.yaml" "$dir/s" "$grid"
write_config "$dir/full.yaml" "$dir/full" "$grid"

# --slice: bad values are usage errors; --dry-run lists the slice.
for bad in 2/2 -1/2 1/0 a/2 1/2/3 1 " 0/2" 0/+2; do
  run "$dir/bad" sweep "$dir/s.yaml" --slice "$bad"
  expect 2 "--slice '$bad'" "$dir/bad" "--slice expects I/N with 0 <= I < N" "got '$bad'"
done
[ ! -e "$dir/s" ] || failed "a bad --slice wrote $dir/s"
run "$dir/dry" sweep "$dir/s.yaml" --slice 1/2 --dry-run
expect 0 "--slice --dry-run" "$dir/dry" "slice 1/2: the points with index % 2 == 1"
if [ "$(grep -c '^[0-9]' "$dir/dry")" != 3 ] || ! grep -q '^5	strategy.name=lora, train.lr=0.002$' "$dir/dry"; then
  failed "--dry-run lists points 1, 3, 5: $(cat "$dir/dry")"
fi

# Slices (slice 1/2 on 2 ranks), the whole sweep at once, the merge.
run "$dir/s0" sweep "$dir/s.yaml" --slice 0/2
expect 0 "slice 0/2" "$dir/s0" "sweep: 3 done, 0 failed, 0 pending of 3 points (slice 0/2 of the sweep's 6)"
timeout 120 "$MPIEXEC" -np 2 --oversubscribe "$bin" sweep "$dir/s.yaml" --slice 1/2 >"$dir/s1" 2>&1
rc=$?
expect 0 "slice 1/2 on 2 ranks" "$dir/s1" "sweep: 3 done, 0 failed, 0 pending of 3 points (slice 1/2"
timeout 120 "$MPIEXEC" -np 2 --oversubscribe "$bin" sweep "$dir/full.yaml" >"$dir/full.out" 2>&1 ||
  failed "the whole sweep: $(tail -5 "$dir/full.out")"
s0=$dir/s/results-slice-0-of-2.h5 s1=$dir/s/results-slice-1-of-2.h5
run "$dir/part" merge "$dir/part.h5" "$s1"
expect 0 "merge of one slice" "$dir/part" "3 done, 0 failed, 3 pending (3 run by no input)" \
  "3 of 6 points are not done"
ASAN_OPTIONS=${ASAN_OPTIONS%:detect_leaks=0} run "$dir/merge" merge "$dir/merged.h5" "$s0" "$s1"
expect 0 "merge" "$dir/merge" "merged 2 files into $dir/merged.h5: 6 points, 6 done, 0 failed, 0 pending"
"$PY" "$here/../slurm/compare_results.py" "$dir/merged.h5" "$dir/full/results.h5" "$dir/s" "$dir/full" >"$dir/cmp" 2>&1 ||
  failed "merged vs whole sweep: $(cat "$dir/cmp")"
# The merged file is the sweep's resume state: as results.h5 the sweep has nothing to do.
cp "$dir/merged.h5" "$dir/s/results.h5"
run "$dir/resume" sweep "$dir/s.yaml"
expect 0 "sweep on the merged file" "$dir/resume" "resuming: 6 done, 0 to run"
# The per-point datasets added after the first format-1 files, merged: the parameter counts
# (fewer trained than the model holds, the same for each strategy), an all-NaN held-out curve
# (eval.heldout_every 0), no memorized pairs (16-pixel models are not evaluated).
"$PY" - "$dir/merged.h5" >"$dir/new.out" 2>&1 <<'PY' || failed "merged file's new datasets: $(cat "$dir/new.out")"
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
tp, tot = f["trainable_params"][:], f["total_params"][:]
assert (tp > 0).all() and (tp < tot).all(), (tp, tot)
strat = [s.decode() for s in f["points/strategy.name"][:]]
for s in ("a3fta", "lora"):
    assert len({int(tp[i]) for i in range(6) if strat[i] == s}) == 1, (s, tp)
assert f["heldout_curve"].shape == (6, 100) and np.isnan(f["heldout_curve"][:]).all()
assert (f["heldout_curve_step"][:] == -1).all()
assert f["memorized/pairs"].shape == (6, 16, 2, 28, 28) and not f["memorized/pairs"][:].any()
assert np.isnan(f["memorized/d1"][:]).all() and np.isnan(f["memorized/d2"][:]).all()
print("ok")
PY
# Files of an older a3fta lack them: such slices merge (the merged file lacks them too), an old
# and a new slice do not; a sweep resumes an old file, warning once, and writes its points
# without them.
strip_new() { # FILE [STATUS_OF_POINT_5]: deletes the new datasets
  "$PY" - "$@" <<'PY' || failed "stripping $1"
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    for name in ("trainable_params", "total_params", "heldout_curve", "heldout_curve_step",
                 "memorized"):
        del f[name]
    if len(sys.argv) > 2:
        f["status"][5] = int(sys.argv[2])
PY
}
cp "$s0" "$dir/old0.h5"
cp "$s1" "$dir/old1.h5"
strip_new "$dir/old0.h5"
strip_new "$dir/old1.h5"
run "$dir/old-merge" merge "$dir/old-merged.h5" "$dir/old0.h5" "$dir/old1.h5"
expect 0 "merge of old slices" "$dir/old-merge" "6 points, 6 done"
"$PY" -c "import h5py, sys; f = h5py.File(sys.argv[1], 'r'); assert 'memorized' not in f and 'trainable_params' not in f and (f['status'][:] == 1).all()" \
  "$dir/old-merged.h5" || failed "merged old slices"
run "$dir/e" merge "$dir/x.h5" "$s0" "$dir/old1.h5"
expect 2 "an old and a new slice" "$dir/e" "$dir/old1.h5: dataset /heldout_curve is missing ($s0 has it)"
strip_new "$dir/s/results.h5" 0
run "$dir/resume-old" sweep "$dir/s.yaml"
expect 0 "resuming an old file" "$dir/resume-old" "resuming: 5 done, 1 to run" \
  "was written by an older a3fta and lacks /trainable_params, /total_params, /heldout_curve, /heldout_curve_step, /memorized/pairs, /memorized/d1, /memorized/d2" \
  "sweep: 6 done, 0 failed"
[ "$(grep -c "older a3fta" "$dir/resume-old")" = 1 ] || failed "one warning: $(grep "older" "$dir/resume-old")"
"$PY" -c "import h5py, sys; f = h5py.File(sys.argv[1], 'r'); assert 'memorized' not in f and (f['status'][:] == 1).all()" \
  "$dir/s/results.h5" || failed "the resumed old file"
run "$dir/info-old" info "$dir/s/results.h5"
expect 0 "info on the old file" "$dir/info-old" "6 points: 6 done"

# Errors: exit 2, the file named.
run "$dir/e" merge "$dir/x.h5" "$s0" "$dir/missing.h5"
expect 2 "missing input" "$dir/e" "$dir/missing.h5: cannot read this input: No such file or directory"
"$PY" -c "import h5py, sys; h5py.File(sys.argv[1], 'w')['x'] = [1]" "$dir/plain.h5"
run "$dir/e" merge "$dir/x.h5" "$s0" "$dir/plain.h5"
expect 2 "plain HDF5 input" "$dir/e" "$dir/plain.h5: not an a3fta results file"
run "$dir/e" merge "$dir/x.h5" "$s0" "$dir/data.h5"
expect 2 "dataset file as input" "$dir/e" "$dir/data.h5: not an a3fta results file"
write_config "$dir/o.yaml" "$dir/o" '{train.lr: [0.1, 0.2]}'
run "$dir/o.out" sweep "$dir/o.yaml" --slice 1/2 --no-samples
expect 0 "another sweep's slice" "$dir/o.out"
run "$dir/e" merge "$dir/x.h5" "$s0" "$dir/o/results-slice-1-of-2.h5"
expect 2 "different sweeps" "$dir/e" "$dir/o/results-slice-1-of-2.h5: root attribute sweep_hash is" \
  "but $s0's is" "not slices of one sweep"
cp "$s0" "$dir/s0-copy.h5"
run "$dir/e" merge "$dir/x.h5" "$s0" "$s1" "$dir/s0-copy.h5"
expect 2 "overlapping slices" "$dir/e" \
  "$dir/s0-copy.h5: /status: 3 points were also run in $s0: points 0 (done there, done here), 2 (done there, done here), 4"
run "$dir/e" merge "$dir/x.h5" "$s0" "$dir/full/results.h5"
expect 2 "a slice and the whole sweep" "$dir/e" "$dir/full/results.h5: /status: 3 points were also run in $s0"
cp "$s1" "$dir/s1-shape.h5"
"$PY" - "$dir/s1-shape.h5" <<'PY' || failed "editing the shape copy"
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    del f["metrics/fid"]
    f["metrics/fid"] = [0.0] * 7
PY
run "$dir/e" merge "$dir/x.h5" "$s0" "$dir/s1-shape.h5"
expect 2 "another shape" "$dir/e" "$dir/s1-shape.h5: dataset /metrics/fid has shape 7, but $s0's has shape 6"
run "$dir/e" merge "$dir/merged.h5" "$s0" "$s1"
expect 2 "existing output" "$dir/e" "$dir/merged.h5 exists; remove it or pass --force"
run "$dir/e" merge --force "$dir/merged.h5" "$s0" "$s1"
expect 0 "--force" "$dir/e"
run "$dir/e" merge "$s0" "$s0" "$s1"
expect 2 "output is an input" "$dir/e" "$s0 is both the output and an input"
run "$dir/e" merge "$dir/x.h5"
expect 2 "no input" "$dir/e" "missing argument"
if [ -e "$dir/x.h5" ] || [ -e "$dir/x.h5.partial" ]; then failed "a failed merge left $dir/x.h5*"; fi

# An input another process holds open for writing (HDF5's file lock).
"$PY" - "$s1" "$dir/locked" <<'PY' &
import sys, time, h5py, os
f = h5py.File(sys.argv[1], "r+")
open(sys.argv[2], "w").close()
time.sleep(30)
PY
holder=$!
for _ in $(seq 100); do [ -e "$dir/locked" ] && break; sleep 0.1; done
run "$dir/e" merge "$dir/y.h5" "$s0" "$s1"
if grep -q "lock" "$dir/e"; then
  expect 1 "locked input" "$dir/e" "cannot open $s1" "HDF5_USE_FILE_LOCKING=FALSE"
  HDF5_USE_FILE_LOCKING=FALSE run "$dir/e" merge "$dir/y.h5" "$s0" "$s1"
  expect 0 "locked input, HDF5_USE_FILE_LOCKING=FALSE" "$dir/e" "6 done"
else
  echo "note: HDF5 here does not lock files (merge exit $rc); lock message not checked"
fi
kill "$holder" 2>/dev/null
wait "$holder" 2>/dev/null

if [ $fail = 0 ]; then rm -rf "$dir"; echo PASS; else echo "kept $dir" >&2; fi
exit $fail
