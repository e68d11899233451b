#!/bin/bash
# tools/report on a tiny sweep with evaluation: 2 strategies x 2 seeds (train.seed
# and data.subset_seed zipped) x 2 learning rates on real Fashion-MNIST images;
# checks index.md (one table row per strategy, mean and std over 2 seeds, the lr
# chosen), the chart and sample PNGs and the verdict line.
# Usage: report_test.sh MPIEXEC   (A3FTA_BIN, A3FTA_SOURCE_DIR set by CTest)
set -u
MPIEXEC=$1
bin=${A3FTA_BIN:?}
src=${A3FTA_SOURCE_DIR:?}
PY=/usr/bin/python3
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-report-XXXXXX")
fail=0
failed() { echo "FAILED: $*" >&2; fail=1; }

"$PY" "$src/tests/eval/make_eval_dataset.py" "$dir/data.h5" 40 60 7 9
rc=$?
[ $rc = 77 ] && { rm -rf "$dir"; exit 77; }
[ $rc = 0 ] || { echo "cannot make the dataset" >&2; exit 1; }
cat > "$dir/s.yaml" <<YAML
model:
  arch: {sample_size: 32, in_channels: 1, out_channels: 1, block_out_channels: [8, 16],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}
data: {path: $dir/data.h5, classes: [9], shots: 6, hflip: true}
strategy: {name: a3fta, adapter: {rank: 4}}
train: {steps: 2, batch_size: 4, lr: 1.0e-3, lr_schedule: constant, warmup: 0, log_every: 100}
eval: {samples: 8, sampler: ddim, sampler_steps: 2}
output: {dir: $dir/out, samples_per_run: 4}
sweep:
  grid: {strategy.name: [a3fta, full], train.lr: [1.0e-3, 1.0e-2]}
  zip: {train.seed: [0, 1], data.subset_seed: [0, 1]}
YAML
"$MPIEXEC" -np 2 --oversubscribe "$bin" sweep "$dir/s.yaml" > "$dir/sweep.out" 2>&1 ||
  { failed "sweep: $(tail -5 "$dir/sweep.out")"; }
grep -q "sweep: 8 done, 0 failed" "$dir/sweep.out" || failed "sweep: $(tail -3 "$dir/sweep.out")"

"$src/tools/report" "$dir/out/results.h5" "$dir/rep" > "$dir/report.out" 2>&1 ||
  failed "tools/report: $(cat "$dir/report.out")"
for f in index.md fid.png kid_mean.png diversity.png memorization.png final_loss.png; do
  [ -s "$dir/rep/$f" ] || failed "report wrote $f"
done
"$PY" - "$dir/rep/index.md" "$dir/out/results.h5" > "$dir/check" 2>&1 <<'PY' ||
import sys, os, math, h5py, numpy as np
md = open(sys.argv[1]).read().splitlines()
f = h5py.File(sys.argv[2], "r")
head = next(i for i, l in enumerate(md) if l.startswith("| method"))
cols = [c.strip() for c in md[head].strip("|").split("|")]
assert cols[:3] == ["method", "seeds", "lr"] and "fid" in cols and "memorization" in cols, cols
rows = [[c.strip() for c in l.strip("|").split("|")] for l in md[head + 2:head + 4]]
assert sorted(r[0] for r in rows) == ["a3fta", "full"], rows
assert not md[head + 4].startswith("|"), "two rows only"
strat = [s.decode() for s in f["points/strategy.name"][:]]
lr = f["points/train.lr"][:]
fid = f["metrics/fid"][:]
for r in rows:
    assert r[1] == "2", r
    # the lr with the lowest mean FID over the 2 seeds, and that mean +- std
    means = {l: fid[[i for i in range(8) if strat[i] == r[0] and lr[i] == l]] for l in set(lr)}
    best = min(means, key=lambda l: means[l].mean())
    assert float(r[2]) == best, (r, means)
    m, s = means[best].mean(), means[best].std(ddof=1)
    assert r[cols.index("fid")] == f"{m:.4g} ± {s:.2g}", (r, m, s)
assert any(l.startswith("**Verdict:** best FID: **") and "A3FTA" in l and "full on FID" in l
           for l in md), [l for l in md if "Verdict" in l]
imgs = [l for l in md if "![" in l and "samples-" in l]
assert len(imgs) == 2, imgs
for l in imgs:
    png = l.split("](")[1].rstrip(")")
    assert os.path.getsize(os.path.join(os.path.dirname(sys.argv[1]), png)) > 0, png
print("ok")
PY
  failed "index.md: $(cat "$dir/check")"

if [ $fail = 0 ]; then rm -rf "$dir"; else echo "kept $dir" >&2; fi
exit $fail
