#!/bin/bash
# tools/report on a tiny sweep with evaluation and the held-out loss: 2 strategies x 2 shot
# counts x 2 seeds (train.seed and data.subset_seed zipped) x 2 learning rates on real
# Fashion-MNIST images. Checks the results file's per-point datasets (/trainable_params as
# `a3fta info --model` counts them, /total_params, /heldout_curve, /memorized), index.md (one
# table row per strategy and shot count, mean and std over 2 seeds, the lr chosen, the
# trainable parameters), index.html (every section heading, every <img> an existing PNG), the
# verdict line, the choice of lr around diverged points, and a report of an older file
# without the new datasets ("not recorded").
# With A3FTA_REPORT_KEEP set, the report folder is copied there (the fixture of
# report_browser.sh; a SKIPPED file there when this test skips).
# Usage: report_test.sh MPIEXEC   (A3FTA_BIN, A3FTA_SOURCE_DIR set by CTest)
set -u
MPIEXEC=$1
bin=${A3FTA_BIN:?}
src=${A3FTA_SOURCE_DIR:?}
PY=/usr/bin/python3
keep=${A3FTA_REPORT_KEEP:-}
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-report-XXXXXX")
fail=0
failed() { echo "FAILED: $*" >&2; fail=1; }
[ -z "$keep" ] || rm -rf "$keep"

"$PY" "$src/tests/eval/make_eval_dataset.py" "$dir/data.h5" 40 60 7 9
rc=$?
if [ $rc = 77 ]; then
  [ -z "$keep" ] || { mkdir -p "$keep" && echo "make_eval_dataset.py skipped" > "$keep/SKIPPED"; }
  rm -rf "$dir"
  exit 77
fi
[ $rc = 0 ] || { echo "cannot make the dataset" >&2; exit 1; }
cat > "$dir/s.yaml" <<YAML
model:
  arch: {sample_size: 32, in_channels: 1, out_channels: 1, block_out_channels: [8, 16],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}
data: {path: $dir/data.h5, classes: [9], shots: 6, hflip: true}
strategy: {name: a3fta, adapter: {rank: 4}}
train: {steps: 3, batch_size: 4, lr: 1.0e-3, lr_schedule: constant, warmup: 0, log_every: 100}
eval: {samples: 8, sampler: ddim, sampler_steps: 2, heldout_every: 1, heldout_images: 6,
       heldout_timesteps: 2}
output: {dir: $dir/out, samples_per_run: 4}
sweep:
  grid: {strategy.name: [a3fta, full], train.lr: [1.0e-3, 1.0e-2], data.shots: [4, 6]}
  zip: {train.seed: [0, 1], data.subset_seed: [0, 1]}
YAML
"$MPIEXEC" -np 2 --oversubscribe "$bin" sweep "$dir/s.yaml" > "$dir/sweep.out" 2>&1 ||
  { failed "sweep: $(tail -5 "$dir/sweep.out")"; }
grep -q "sweep: 16 done, 0 failed" "$dir/sweep.out" || failed "sweep: $(tail -3 "$dir/sweep.out")"
"$bin" info --model "$dir/s.yaml" > "$dir/model.out" 2>&1 || failed "info --model: $(cat "$dir/model.out")"
"$bin" info "$dir/out/results.h5" --csv > "$dir/info.csv" 2>&1 || failed "info --csv: $(cat "$dir/info.csv")"

# The results file's new datasets.
"$PY" - "$dir/out/results.h5" "$dir/model.out" "$dir/info.csv" > "$dir/check-h5" 2>&1 <<'PY' ||
import sys, re, csv, math, h5py, numpy as np
f = h5py.File(sys.argv[1], "r")
n = f["status"].shape[0]
assert (f["status"][:] == 1).all()
# trainable_params: what `a3fta info --model` lists for the point's strategy
listed = {m.group(1): int(m.group(2)) for m in
          re.finditer(r"^\s+(\w+)\s+(\d+) \(", open(sys.argv[2]).read(), re.M)}
assert {"a3fta", "full"} <= set(listed), listed
strat = [s.decode() for s in f["points/strategy.name"][:]]
tp, tot = f["trainable_params"][:], f["total_params"][:]
assert tp.dtype == np.int64 and tot.dtype == np.int64 and tp.shape == (n,), (tp.dtype, tp.shape)
for i in range(n):
    assert tp[i] == listed[strat[i]], (i, strat[i], tp[i], listed)
    assert 0 < tp[i] <= tot[i], (i, tp[i], tot[i])
    if strat[i] == "full":
        assert tp[i] == tot[i], (i, tp[i], tot[i])
    else:
        assert tp[i] < tot[i], (i, tp[i], tot[i])
# all parameters of the point's model: the base model's for full, plus the adapters for a3fta
by = {s: {int(tot[i]) for i in range(n) if strat[i] == s} for s in ("a3fta", "full")}
assert len(by["a3fta"]) == 1 and len(by["full"]) == 1, by
assert min(by["a3fta"]) > min(by["full"]), by
# a3fta info: the counts (CSV: trainable_params, total_params after the metrics)
rows = list(csv.DictReader(open(sys.argv[3], newline="")))
assert [int(r["trainable_params"]) for r in rows] == list(tp), rows[0]
assert [int(r["total_params"]) for r in rows] == list(tot), rows[0]
# held-out curve: steps 1, 2, 3 (heldout_every 1, 3 steps), finite there, NaN / -1 elsewhere
hc, hs = f["heldout_curve"][:], f["heldout_curve_step"][:]
K = f["loss_curve"].shape[1]
assert hc.shape == (n, K) and hs.shape == (n, K) and hs.dtype == np.int64, (hc.shape, hs.dtype)
for i in range(n):
    used = hs[i] >= 0
    assert list(hs[i][used]) == [1, 2, 3], hs[i][:5]
    assert np.isfinite(hc[i][used]).all() and (hc[i][used] > 0).all(), hc[i][:5]
    assert np.isnan(hc[i][~used]).all() and (hs[i][~used] == -1).all()
    # losses.csv keeps 9 digits; /metrics/heldout_loss is the trainer's last value
    assert math.isclose(hc[i][2], f["metrics/heldout_loss"][i], rel_tol=1e-7), \
        (hc[i][:3], f["metrics/heldout_loss"][i])
# memorized pairs: 8 samples -> 8 pairs, d1 <= d2, pixels there, zeros and NaN after
pairs, d1, d2 = f["memorized/pairs"], f["memorized/d1"][:], f["memorized/d2"][:]
assert pairs.shape == (n, 16, 2, 28, 28) and pairs.dtype == np.uint8, (pairs.shape, pairs.dtype)
assert d1.shape == (n, 16) and d2.shape == (n, 16)
for i in range(n):
    p = pairs[i]
    assert np.isfinite(d1[i, :8]).all() and np.isfinite(d2[i, :8]).all(), d1[i]
    assert (d1[i, :8] <= d2[i, :8]).all(), (d1[i], d2[i])
    ratio = d1[i, :8] / d2[i, :8]
    assert (np.diff(ratio) >= -1e-12).all(), ratio  # most memorized first
    assert np.isnan(d1[i, 8:]).all() and np.isnan(d2[i, 8:]).all()
    assert (p[8:] == 0).all() and all(p[k, j].any() for k in range(8) for j in range(2))
    # d1 is the pixel distance of the sample to the training image beside it
    a, b = p[0, 0].astype(float), p[0, 1].astype(float)
    assert math.isclose(np.sqrt(((a - b) ** 2).sum()), d1[i, 0], rel_tol=1e-4), (i, d1[i, 0])
print("ok")
PY
  failed "results datasets: $(cat "$dir/check-h5")"

"$src/tools/report" "$dir/out/results.h5" "$dir/rep" > "$dir/report.out" 2>&1 ||
  failed "tools/report: $(cat "$dir/report.out")"
for f in index.md index.html fid.png kid_mean.png diversity.png memorization.png final_loss.png \
         heldout_loss.png fid_vs_shots.png kid_vs_shots.png diversity_vs_memorization.png \
         loss-4.png loss-6.png heldout-4.png heldout-6.png memorized-4-a3fta.png \
         memorized-6-full.png samples-4-a3fta.png samples-6-full.png; do
  [ -s "$dir/rep/$f" ] || failed "report wrote $f"
done
"$PY" - "$dir/rep" "$dir/out/results.h5" "$src/tools/report" > "$dir/check" 2>&1 <<'PY' ||
import sys, os, re, math, h5py, numpy as np
rep = sys.argv[1]
md = open(os.path.join(rep, "index.md")).read().splitlines()
f = h5py.File(sys.argv[2], "r")
strat = [s.decode() for s in f["points/strategy.name"][:]]
lr, shots = f["points/train.lr"][:], f["points/data.shots"][:]
fid, tp, tot = f["metrics/fid"][:], f["trainable_params"][:], f["total_params"][:]
heads = [i for i, l in enumerate(md) if l.startswith("| method")]
assert len(heads) == 2, heads  # one table per shot count
for head, sh in zip(heads, (4, 6)):
    assert md[head - 2] == f"### shots = {sh}", md[head - 2]
    cols = [c.strip() for c in md[head].strip("|").split("|")]
    assert cols[:5] == ["method", "seeds", "lr", "trainable", "trainable %"], cols
    assert "fid" in cols and "memorization" in cols and "heldout_loss" in cols, cols
    rows = [[c.strip() for c in l.strip("|").split("|")] for l in md[head + 2:head + 4]]
    assert sorted(r[0] for r in rows) == ["a3fta", "full"], rows
    assert not md[head + 4].startswith("|"), "two rows only"
    for r in rows:
        assert r[1] == "2", r
        pts = lambda l: [i for i in range(len(strat)) if strat[i] == r[0] and lr[i] == l and
                         shots[i] == sh]
        # the lr with the lowest mean FID over the 2 seeds, and that mean +- std
        means = {l: fid[pts(l)] for l in set(lr)}
        best = min(means, key=lambda l: means[l].mean())
        assert float(r[2]) == best, (r, means)
        m, s = means[best].mean(), means[best].std(ddof=1)
        assert r[cols.index("fid")] == f"{m:.4g} ± {s:.2g}", (r, m, s)
        i = pts(best)[0]
        assert r[3].replace(",", "") == str(tp[i]), (r, tp[i])
        assert r[4] == f"{100.0 * tp[i] / tot[i]:.3g}", (r, tp[i], tot[i])
assert sum(l.startswith("**Verdict:** best FID: **") and "A3FTA" in l and "full on FID" in l
           for l in md) == 2, [l for l in md if "Verdict" in l]
imgs = [l for l in md if "![" in l and "samples-" in l]
assert len(imgs) == 4, imgs
# index.html: every section, every image an existing PNG (relative links)
page = open(os.path.join(rep, "index.html")).read()
assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
sections = re.search(r"^SECTIONS = \((.*?)\)$", open(sys.argv[3]).read(), re.M | re.S).group(1)
sections = re.findall(r'"([^"]+)"', sections)
assert len(sections) == 7, sections
h2 = re.findall(r"<h2>(.*?)</h2>", page)
assert h2 == sections, (h2, sections)
srcs = re.findall(r'<img src="([^"]+)"', page)
assert len(srcs) >= 20, srcs
for s in srcs:
    assert not s.startswith(("/", "http:", "https:", "file:")) and s.endswith(".png"), s
    assert os.path.getsize(os.path.join(rep, s)) > 0, s
    with open(os.path.join(rep, s), "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n", s
pngs = sorted(p for p in os.listdir(rep) if p.endswith(".png"))
assert sorted(set(srcs)) == pngs, (sorted(set(srcs)), pngs)  # every PNG is shown
assert "not recorded" not in page, re.findall(r".{80}not recorded.{80}", page)
for want in ("fid_vs_shots.png", "kid_vs_shots.png", "diversity_vs_memorization.png",
             "heldout-6.png", "memorized-6-a3fta.png", "d1/d2"):
    assert want in page, want
print("ok")
PY
  failed "index.md / index.html: $(cat "$dir/check")"

# Diverged points (status 4): an lr at which a seed diverged does not win while another lr
# has none (a3fta at 4 shots: its best lr loses a seed, the other lr wins); where every lr
# lost one (full at 4 shots), the best of them wins and "seeds" says so; both are listed.
cp "$dir/out/results.h5" "$dir/div.h5"
"$PY" - "$dir/div.h5" "$src/tools/report" "$dir/rep-div" > "$dir/check-div" 2>&1 <<'PY' ||
import sys, subprocess, h5py, numpy as np
with h5py.File(sys.argv[1], "r+") as f:
    strat = [s.decode() for s in f["points/strategy.name"][:]]
    lr, shots, fid = f["points/train.lr"][:], f["points/data.shots"][:], f["metrics/fid"][:]
    seed = f["points/train.seed"][:]
    pts = lambda st, l: [i for i in range(len(strat)) if strat[i] == st and lr[i] == l and
                         shots[i] == 4]
    best = min(set(lr), key=lambda l: fid[pts("a3fta", l)].mean())
    other = [l for l in set(lr) if l != best][0]
    hit = [pts("a3fta", best)[0]] + [pts("full", l)[0] for l in set(lr)]
    status = f["status"][:]
    status[hit] = 4
    f["status"][:] = status
    reason = f["reason"][:]
    for i in hit:
        reason[i] = b"training diverged: train: the loss is nan at step 2"
    f["reason"][:] = reason
    # full's winner: the lr with the lower FID over its remaining seed
    full_best = min(set(lr), key=lambda l: fid[pts("full", l)[1]])
subprocess.run([sys.argv[2], sys.argv[1], sys.argv[3]], check=True, capture_output=True)
md = open(sys.argv[3] + "/index.md").read().splitlines()
head = [i for i, l in enumerate(md) if l.startswith("| method")][0]
assert md[head - 2] == "### shots = 4", md[head - 2]
rows = {r[0]: r for r in ([c.strip() for c in l.strip("|").split("|")]
                          for l in md[head + 2:head + 4])}
assert float(rows["a3fta"][2]) == other and rows["a3fta"][1] == "2", (rows, best, other)
assert float(rows["full"][2]) == full_best and rows["full"][1] == "1 (+1 diverged)", rows
assert any(l.startswith("16 points: 13 done, 3 failed (3 diverged") for l in md), md[:4]
listed = [l for l in md if l.startswith("- point ") and "diverged, not retried" in l]
assert len(listed) == 3 and all("lr=" in l and "seed=" in l for l in listed), listed
print("ok")
PY
  failed "report with diverged points: $(cat "$dir/check-div")"

# A results file of an older a3fta (no parameter counts, held-out curve, pairs): the report
# says "not recorded" where they would be; a3fta info prints it without the counts.
cp "$dir/out/results.h5" "$dir/old.h5"
"$PY" - "$dir/old.h5" <<'PY' || failed "making the old file"
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    for name in ("trainable_params", "total_params", "heldout_curve", "heldout_curve_step",
                 "memorized"):
        del f[name]
PY
"$src/tools/report" "$dir/old.h5" "$dir/rep-old" > "$dir/report-old.out" 2>&1 ||
  failed "tools/report on an old file: $(cat "$dir/report-old.out")"
for t in "Trainable parameters: not recorded" "Held-out loss, shots = 4: not recorded" \
         "Most-memorized pairs: not recorded"; do
  grep -qF "$t" "$dir/rep-old/index.html" || failed "old-file report lacks '$t'"
done
[ -s "$dir/rep-old/fid_vs_shots.png" ] || failed "old-file report: no fid_vs_shots.png"
"$bin" info "$dir/old.h5" --csv > "$dir/old.csv" 2>&1 || failed "info on the old file: $(cat "$dir/old.csv")"
if grep -q trainable_params "$dir/old.csv" || ! head -1 "$dir/old.csv" | grep -q ",coverage,reason$"; then
  failed "info on the old file: $(head -1 "$dir/old.csv")"
fi

if [ -n "$keep" ] && [ $fail = 0 ]; then
  mkdir -p "$(dirname "$keep")" && cp -r "$dir/rep" "$keep" || failed "copying the report to $keep"
fi
if [ $fail = 0 ]; then rm -rf "$dir"; else echo "kept $dir" >&2; fi
exit $fail
