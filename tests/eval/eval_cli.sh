#!/bin/bash
# a3fta eval and the evaluation at the end of each a3fta sweep point, on a tiny
# model (sample_size 32) fine-tuned on real Fashion-MNIST images:
#  - a sweep whose evaluation fails (no feature network) marks the point failed
#    with the reason; the rerun retries it and fills every /metrics slot;
#  - a3fta eval on that point's checkpoint prints and writes (JSON) exactly the
#    numbers of the results file, and the memorized-pairs PNG;
#  - the point's stored samples are the images a3fta sample draws;
#  - 2 ranks give the same metrics up to rounding; usage errors exit 2;
#  - output.save_weights: false removes a done point's checkpoint after its
#    evaluation and samples, and keeps a failed one's.
# Usage: eval_cli.sh MPIEXEC   (A3FTA_BIN, A3FTA_SOURCE_DIR set by CTest)
set -u
MPIEXEC=$1
bin=${A3FTA_BIN:?}
src=${A3FTA_SOURCE_DIR:?}
PY=/usr/bin/python3 # Debian's h5py belongs to it
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-eval-cli-XXXXXX")
. "$(dirname "$0")/../lib/script_test.sh"

"$PY" "$src/tests/eval/make_eval_dataset.py" "$dir/data.h5" 40 60 7 9
rc=$?
[ $rc = 77 ] && { rm -rf "$dir"; exit 77; }
[ $rc = 0 ] || { echo "cannot make the dataset" >&2; exit 1; }
cat > "$dir/a.yaml" <<YAML
model:
  arch: {sample_size: 32, in_channels: 1, out_channels: 1, block_out_channels: [8, 16],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}
data: {path: $dir/data.h5, classes: [9], shots: 6, subset_seed: 3, hflip: true}
strategy: {name: a3fta, adapter: {rank: 4}}
train: {steps: 3, batch_size: 4, lr: 1.0e-3, lr_schedule: constant, warmup: 0, log_every: 100,
        seed: 5}
eval: {samples: 12, sampler: ddim, sampler_steps: 2,
       metrics: [fid, kid, diversity, memorization, precision_recall]}
output: {dir: $dir/a, samples_per_run: 4}
YAML

# 1. The evaluation fails (no feature network): the point fails with the reason.
A3FTA_FEATURES=$dir/no-such-net.h5 run 1 "$dir/s1.out" sweep "$dir/a.yaml"
expect 0 "sweep with a failing evaluation" "$dir/s1.out"
grep -q "sweep: 0 done, 1 failed" "$dir/s1.out" || failed "the point fails: $(tail -3 "$dir/s1.out")"
"$PY" - "$dir/a/results.h5" "$dir/no-such-net.h5" > "$dir/c1" 2>&1 <<'PY' ||
import sys, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
assert f["status"][0] == 2, f["status"][:]
reason = f["reason"][0].decode()
assert reason.startswith("evaluation failed: ") and sys.argv[2] in reason, reason
assert np.isfinite(f["final_loss"][0]), "training results are kept"
print("ok")
PY
  failed "failed evaluation: $(cat "$dir/c1")"

# 2. The rerun retries it: done, every slot of eval.metrics filled.
run 1 "$dir/s2.out" sweep "$dir/a.yaml"
expect 0 "sweep rerun" "$dir/s2.out"
grep -q "sweep: 1 done, 0 failed" "$dir/s2.out" || failed "rerun: $(tail -3 "$dir/s2.out")"
for f in eval.json memorized.png samples.h5 samples.png; do
  [ -s "$dir/a/point-000000/$f" ] || failed "point-000000/$f written"
done

# 3. a3fta eval on the checkpoint: the same numbers, bit for bit.
ck=$dir/a/point-000000/checkpoint.h5
run 1 "$dir/e1.out" eval "$ck" --json "$dir/e1.json" --png-memorized "$dir/e1.png" --backend cpu
expect 0 "a3fta eval" "$dir/e1.out"
grep -q "^  fid  " "$dir/e1.out" || failed "eval prints a table: $(cat "$dir/e1.out")"
[ -s "$dir/e1.png" ] || failed "eval --png-memorized writes the PNG"
run 1 "$dir/sa.out" sample "$ck" --out "$dir/sa.h5" --num 4 --seed 5
expect 0 "a3fta sample" "$dir/sa.out"
"$PY" - "$dir/a/results.h5" "$dir/e1.json" "$dir/a/point-000000/eval.json" "$dir/sa.h5" \
    > "$dir/c3" 2>&1 <<'PY' ||
import sys, json, math, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
j, jp = json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
assert j["samples"] == 12 and j["seed"] == 5 and j["weights"] == "ema", j
assert j["data"]["n_reference"] == 60 and j["data"]["n_train"] == 6, j["data"]
names = ["fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage",
         "diversity", "intra_cluster_diversity", "memorization"]
for m in names:
    v = f["metrics/" + m][0]
    assert math.isfinite(v), (m, v)
    assert j["metrics"][m] == v, (m, j["metrics"][m], v)
    assert jp["metrics"][m] == v, (m, jp["metrics"][m], v)
assert math.isnan(f["metrics/heldout_loss"][0])
assert 0 <= j["metrics"]["memorization"] <= 1 and j["metrics"]["fid"] > 0
assert len(j["most_memorized"]) == 12
r = [x["d1_over_d2"] for x in j["most_memorized"]]
assert r == sorted(r), r
# the stored samples: the first 4 of the evaluation's, = a3fta sample's
s = h5py.File(sys.argv[4], "r")["samples"][:]
assert f["n_samples"][0] == 4 and np.array_equal(f["samples"][0], s), "samples differ"
print("ok")
PY
  failed "eval = sweep: $(cat "$dir/c3")"

# 4. Two ranks: the same metrics up to the rounding of other batch shapes.
run 2 "$dir/e2.out" eval "$ck" --json "$dir/e2.json"
expect 0 "a3fta eval on 2 ranks" "$dir/e2.out"
"$PY" - "$dir/e1.json" "$dir/e2.json" > "$dir/c4" 2>&1 <<'PY' ||
import sys, json, math
a, b = (json.load(open(p))["metrics"] for p in sys.argv[1:3])
for m, v in a.items():
    if v is None:
        assert b[m] is None, m
    else:
        assert math.isclose(v, b[m], rel_tol=1e-3, abs_tol=1e-6), (m, v, b[m])
print("ok")
PY
  failed "eval np 2: $(cat "$dir/c4")"

# 5. Errors: too few samples (usage, 2), a missing feature network (1).
run 1 "$dir/e3.out" eval "$ck" --samples 3
expect 2 "eval --samples 3" "$dir/e3.out"
run 1 "$dir/e4.out" eval "$ck" --features "$dir/none.h5"
[ "$rc" != 0 ] && grep -q "none.h5" "$dir/e4.out" || failed "missing --features: $(cat "$dir/e4.out")"

# 6. output.save_weights: false: the point is evaluated and sampled from its checkpoint,
# which is then removed; a failed evaluation keeps it (the retry resumes from it).
A3FTA_FEATURES=$dir/no-such-net.h5 run 1 "$dir/n1.out" sweep "$dir/a.yaml" \
  -o output.save_weights=false -o output.dir="$dir/nosave"
expect 0 "sweep without saved weights, evaluation failing" "$dir/n1.out"
[ -s "$dir/nosave/point-000000/checkpoint.h5" ] || failed "a failed point keeps its checkpoint"
run 1 "$dir/n2.out" sweep "$dir/a.yaml" -o output.save_weights=false -o output.dir="$dir/nosave"
expect 0 "sweep without saved weights" "$dir/n2.out"
grep -q "sweep: 1 done, 0 failed" "$dir/n2.out" || failed "nosave: $(tail -3 "$dir/n2.out")"
grep -q "removed $dir/nosave/point-000000/checkpoint.h5 (output.save_weights: false)" \
  "$dir/n2.out" || failed "nosave: says it removed the checkpoint"
[ ! -e "$dir/nosave/point-000000/checkpoint.h5" ] || failed "nosave: the checkpoint is removed"
for f in eval.json samples.h5 losses.csv; do
  [ -s "$dir/nosave/point-000000/$f" ] || failed "nosave: point-000000/$f written"
done
"$PY" -c 'import sys, h5py, math; f = h5py.File(sys.argv[1], "r")
assert f["status"][0] == 1 and math.isfinite(f["metrics/fid"][0]) and f["n_samples"][0] == 4' \
  "$dir/nosave/results.h5" || failed "nosave: the point has its metrics and samples"

if [ $fail = 0 ]; then rm -rf "$dir"; else echo "kept $dir" >&2; fi
exit $fail
