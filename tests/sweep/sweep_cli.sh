#!/bin/bash
# a3fta sweep on the command line with the real trainer on a tiny dataset:
# help, --dry-run, a sweep on 4 ranks (ranks_per_run 2), the rerun that skips
# everything, the same per-point results with np 1 and 2 (ranks_per_run 1,
# static and dynamic) and close ones with ranks_per_run 2, SIGUSR1 mid-sweep
# (exit 0, message) and the resume, another sweep's file, --force-new;
# a3fta info on a results file (table and --csv), a checkpoint and other HDF5 files.
# Usage: sweep_cli.sh MPIEXEC MAKE_DATASET_BIN   (A3FTA_BIN set by CTest)
# Exit 77 (skipped) while main.c does not start MPI for 'sweep'.
set -u
MPIEXEC=$1 make_dataset=$2
bin=${A3FTA_BIN:?}
PY=/usr/bin/python3 # Debian's h5py belongs to it
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-sweep-cli-XXXXXX")
. "$(dirname "$0")/../lib/script_test.sh"

"$make_dataset" "$dir/data.h5" || exit 1
write_config() { # FILE OUTDIR RANKS_PER_RUN SCHEDULE STEPS
  cat > "$1" <<YAML
model:
  arch: {sample_size: 16, in_channels: 1, out_channels: 1, block_out_channels: [8, 16],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}
data: {path: $dir/data.h5, classes: [1], shots: 6, hflip: true}
strategy: {name: a3fta, adapter: {rank: 4}}
train: {steps: $5, batch_size: 4, lr: 1.0e-3, lr_schedule: constant, warmup: 0, log_every: 100,
        checkpoint_every: 2}
eval: {sampler: ddim, sampler_steps: 2}
output: {dir: $2, samples_per_run: 2}
sweep:
  grid: {strategy.name: [a3fta, lora], train.lr: [1.0e-3, 1.0e-2]}
parallel: {ranks_per_run: $3, schedule: $4}
YAML
}

run 1 "$dir/help" sweep --help
expect 0 "sweep --help" "$dir/help"
grep -q -- "--force-new" "$dir/help" || failed "help names --force-new"

write_config "$dir/a.yaml" "$dir/a" 2 dynamic 4
run 2 "$dir/dry" sweep "$dir/a.yaml" --dry-run
expect 0 "--dry-run" "$dir/dry"
grep -q "^3	strategy.name=lora, train.lr=0.01$" "$dir/dry" || failed "--dry-run lists point 3"
[ ! -e "$dir/a" ] || failed "--dry-run wrote $dir/a"

# 4 ranks, groups of 2.
run 4 "$dir/a.out" sweep "$dir/a.yaml"
expect 0 "sweep np 4 rpr 2" "$dir/a.out"
grep -q "sweep: 4 done, 0 failed, 0 pending of 4 points" "$dir/a.out" || failed "summary line"
for f in config.yaml losses.csv checkpoint.h5 samples.h5; do
  [ -s "$dir/a/point-000003/$f" ] || failed "point-000003/$f written"
done
run 2 "$dir/a2.out" sweep "$dir/a.yaml"
expect 0 "rerun" "$dir/a2.out"
grep -q "resuming: 4 done, 0 to run" "$dir/a2.out" || failed "rerun skips the done points"

# np 1 and 2 with ranks_per_run 1 (static, dynamic): identical per-point results.
# (The runs above and the SIGUSR1 one are leak-checked under ASan; these need
# not be, and an ASan job's leak check costs seconds.)
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
write_config "$dir/b.yaml" "$dir/b" 1 static 4
write_config "$dir/c.yaml" "$dir/c" 1 dynamic 4
run 1 "$dir/b.out" sweep "$dir/b.yaml"
expect 0 "sweep np 1" "$dir/b.out"
run 2 "$dir/c.out" sweep "$dir/c.yaml" --no-samples
expect 0 "sweep np 2" "$dir/c.out"
"$PY" - "$dir/a/results.h5" "$dir/b/results.h5" "$dir/c/results.h5" > "$dir/cmp" 2>&1 <<'PY' ||
import sys, h5py, numpy as np
a, b, c = (h5py.File(p, "r") for p in sys.argv[1:4])
for f in (a, b, c):
    assert (f["status"][:] == 1).all(), f["status"][:]
for name in ("final_loss", "loss_curve", "loss_curve_step"):
    assert np.array_equal(b[name][:], c[name][:], equal_nan=True), name  # 1 rank per run
    # 2 ranks per run: the gradient sum's order differs, so fp32 rounding does
    assert np.allclose(a[name][:], b[name][:], rtol=1e-4, atol=1e-6, equal_nan=True), name
assert (b["n_samples"][:] == 2).all() and (c["n_samples"][:] == 0).all()
assert b["samples"][:].any() and not c["samples"][:].any()
assert list(b["points/train.lr"][:]) == [1e-3, 1e-2, 1e-3, 1e-2]
print("ok")
PY
  failed "per-point results across np/ranks_per_run/schedule: $(cat "$dir/cmp")"

# a3fta info on b's results file: the table, --csv (with a failed point, a
# metric and a reason that needs quoting written in by h5py), other files.
cp "$dir/b/results.h5" "$dir/info.h5"
run 1 "$dir/info.out" info "$dir/b/results.h5"
expect 0 "info on a results file" "$dir/info.out"
run 1 "$dir/info-dir.out" info "$dir/b"
expect 0 "info on a sweep's folder" "$dir/info-dir.out"
cmp -s "$dir/info.out" "$dir/info-dir.out" || failed "info on a sweep's folder differs from its results.h5's"
"$PY" - "$dir/b/results.h5" "$dir/info.out" > "$dir/info.cmp" 2>&1 <<'PY' ||
import sys, math, h5py
f = h5py.File(sys.argv[1], "r")
lines = open(sys.argv[2]).read().splitlines()
head = lines.index(next(l for l in lines if l.startswith("point ")))
cols = lines[head].split()
assert cols[:4] == ["point", "status", "strategy.name", "train.lr"], cols
assert cols[4:6] == ["final_loss", "wall_s"] and "fid" in cols and cols[-1] == "reason", cols
rows = [l.split() for l in lines[head + 1:] if l.strip()]
assert len(rows) == 4, rows
for i, r in enumerate(rows):
    assert r[0] == str(i) and r[1] == "done", r
    assert math.isclose(float(r[4]), f["final_loss"][i], rel_tol=1e-5), (r, f["final_loss"][i])
    assert r[cols.index("fid")] == "-", r  # NaN metric
print("ok")
PY
  failed "info table: $(cat "$dir/info.cmp")"
"$PY" - "$dir/info.h5" <<'PY' || failed "editing the info copy"
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    f["status"][1] = 2
    f["reason"][1] = b'loss is "NaN", at step 3'
    f["metrics/fid"][0] = 12.5
PY
run 1 "$dir/csv.out" info "$dir/info.h5" --csv
expect 0 "info --csv" "$dir/csv.out"
"$PY" - "$dir/info.h5" "$dir/csv.out" > "$dir/csv.cmp" 2>&1 <<'PY' ||
import sys, csv, h5py
f = h5py.File(sys.argv[1], "r")
rows = list(csv.DictReader(open(sys.argv[2], newline="")))
assert len(rows) == 4, rows
head = list(rows[0].keys())
assert head[:4] == ["point", "status", "strategy.name", "train.lr"], head
for m in f["metrics"]:
    assert m in head, (m, head)
assert [r["status"] for r in rows] == ["done", "failed", "done", "done"], rows
assert rows[1]["reason"] == 'loss is "NaN", at step 3' and rows[0]["reason"] == "", rows
assert float(rows[0]["fid"]) == 12.5 and rows[2]["fid"] == "", rows
for i, r in enumerate(rows):
    assert float(r["final_loss"]) == f["final_loss"][i], r  # exact in CSV
    assert float(r["train.lr"]) == f["points/train.lr"][i], r
    assert r["strategy.name"] == f["points/strategy.name"][i].decode(), r
print("ok")
PY
  failed "info --csv: $(cat "$dir/csv.cmp")"
"$PY" -c "import h5py, sys; h5py.File(sys.argv[1], 'w')['x'] = [1]" "$dir/plain.h5"
run 2 "$dir/plain.out" info "$dir/plain.h5" --csv
expect 2 "info on a plain HDF5 file" "$dir/plain.out"
[ "$(grep -c "not an a3fta file (no 'format' attribute)" "$dir/plain.out")" = 1 ] ||
  failed "info on a plain HDF5 file, 2 ranks: one message: $(cat "$dir/plain.out")"
run 2 "$dir/ckpt.out" info "$dir/a/point-000003/checkpoint.h5"
expect 0 "info on a checkpoint" "$dir/ckpt.out"
[ "$(grep -c "^values      all finite" "$dir/ckpt.out")" = 1 ] ||
  failed "info on a checkpoint, 2 ranks: printed once: $(cat "$dir/ckpt.out")"

# SIGUSR1 while points run: exit 0 with the message, then the rerun finishes.
# 8 points on 2 groups: when the first is done, at least 4 have not started,
# however fast the machine is (in-flight points are finished, not abandoned).
export ASAN_OPTIONS="${ASAN_OPTIONS%:detect_leaks=0}"
write_config "$dir/d.yaml" "$dir/d" 1 dynamic 60
sed -i 's/train.lr: \[1.0e-3, 1.0e-2\]/train.lr: [1.0e-3, 2.0e-3, 5.0e-3, 1.0e-2]/' "$dir/d.yaml"
"$MPIEXEC" -np 2 --oversubscribe "$bin" sweep "$dir/d.yaml" --no-samples > "$dir/d.out" 2>&1 &
job=$!
for _ in $(seq 200); do grep -q "point .* done" "$dir/d.out" && break; sleep 0.05; done
kill -USR1 $job
wait $job
rc=$?
expect 0 "sweep after SIGUSR1" "$dir/d.out"
grep -q "interrupted: [1-9][0-9]* points remain; rerun the same command to resume" "$dir/d.out" ||
  failed "interrupted message: $(tail -3 "$dir/d.out")"
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
run 2 "$dir/d2.out" sweep "$dir/d.yaml" --no-samples
expect 0 "rerun after SIGUSR1" "$dir/d2.out"
grep -q "sweep: 8 done, 0 failed, 0 pending" "$dir/d2.out" || failed "rerun completes"

# Another sweep in a's folder; --force-new replaces its file.
run 2 "$dir/e.out" sweep "$dir/a.yaml" -o 'sweep.grid={train.lr: [0.1]}'
expect 2 "another sweep's file" "$dir/e.out"
grep -q "results file belongs to a different sweep (hash" "$dir/e.out" || failed "names the hash"
run 2 "$dir/f.out" sweep "$dir/a.yaml" -o 'sweep.grid={train.lr: [0.1]}' --force-new --no-samples
expect 0 "--force-new" "$dir/f.out"
grep -q "sweep: 1 done, 0 failed, 0 pending of 1 points" "$dir/f.out" || failed "--force-new runs"

if [ $fail = 0 ]; then rm -rf "$dir"; else echo "kept $dir" >&2; fi
exit $fail
