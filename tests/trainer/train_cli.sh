#!/bin/bash
# a3fta train / sample on the command line: files written, exit codes, help.
# (Each a3fta start costs ~1.5 s under ASan: the library tests check the rest.)
# Usage: train_cli.sh MAKE_DATASET_BIN   (A3FTA_BIN set by CTest)
set -u
make_dataset=$1
bin=${A3FTA_BIN:?}
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-train-cli-XXXXXX")
trap 'rm -rf "$dir"' EXIT
. "$(dirname "$0")/../lib/script_test.sh"

"$make_dataset" "$dir/data.h5" || exit 1
cat >"$dir/tiny.yaml" <<YAML
model:
  arch: {sample_size: 16, in_channels: 1, out_channels: 1, block_out_channels: [8, 16],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}
data: {path: $dir/data.h5, classes: [1], shots: 6, hflip: true}
strategy: {name: a3fta, adapter: {rank: 4}}
train: {steps: 6, batch_size: 4, lr: 1.0e-3, lr_schedule: constant, warmup: 0, log_every: 2,
        checkpoint_every: 3}
eval: {sampler: ddim, sampler_steps: 3}
output: {dir: $dir/run, samples_per_run: 4}
YAML

expect_rc 0 "train --help" "$bin" train --help
check "train --help names --resume" grep -q -- "--resume" "$dir/out"

expect_rc 0 "train" "$bin" train "$dir/tiny.yaml"
check "log line with loss" grep -q "step 6/6  loss" "$dir/out"
check "a3fta trains attention and adapters" grep -q "strategy a3fta trains" "$dir/out"
trains=$(grep -o "strategy a3fta trains [0-9]*" "$dir/out")
for f in checkpoint.h5 losses.csv config.yaml samples.png samples.h5; do
  check "run/$f written" test -s "$dir/run/$f"
done
check "losses.csv has 6 rows" test "$(wc -l <"$dir/run/losses.csv")" = 7
check "no temporary files left" test -z "$(ls "$dir/run" | grep '\.tmp$')"
expect_rc 0 "train --resume of a finished run (logging more often is the same run)" "$bin" train \
  "$dir/tiny.yaml" --resume --no-samples -o train.log_every=1
check "resume says where it continues" grep -q "continuing from step 6" "$dir/out"

# a3fta info on the checkpoint: its step, what the strategy trains (the count the
# training log gave), every group finite; --config is the config the run was trained with
# (run/config.yaml now has the resume's train.log_every).
expect_rc 0 "info on a checkpoint" "$bin" info "$dir/run/checkpoint.h5"
check "info: step" grep -q "^step        6 of train.steps 6$" "$dir/out"
check "info: trainable count as the training log ('${trains##* }')" \
  grep -q "^trainable   [0-9]* tensors, ${trains##* } parameters" "$dir/out"
check "info: adapter rank" grep -q "strategy.adapter.rank  4" "$dir/out"
check "info: EMA and both moments, all finite" test "$(grep -cE '^  /(params|ema|optimizer/[mv]) .* 0$' "$dir/out")" = 4
check "info: all finite" grep -q "^values      all finite" "$dir/out"
expect_rc 0 "info on a run's folder" "$bin" info "$dir/run"
check "info on a run's folder reads its checkpoint" grep -q "^checkpoint  $dir/run/checkpoint.h5" "$dir/out"
mkdir -p "$dir/empty"
expect_rc 2 "info on a folder without results or checkpoint" "$bin" info "$dir/empty"
check "info names the folder's problem" grep -q "is a folder without results.h5 or checkpoint.h5" "$dir/out"
"$bin" config show "$dir/tiny.yaml" >"$dir/shown.yaml"
expect_rc 0 "info --config" "$bin" info "$dir/run/checkpoint.h5" --config
check "info --config is the trained config" diff -q "$dir/out" "$dir/shown.yaml"

# A base with a NaN weight: info names it; training from it stops at the first loss
# it reads (exit 1, the step named), before writing a checkpoint.
/usr/bin/python3 - "$dir/run/checkpoint.h5" "$dir/nan.h5" <<'PY' || failed "writing nan.h5 with h5py"
import shutil, sys, h5py
shutil.copy(sys.argv[1], sys.argv[2])
with h5py.File(sys.argv[2], "r+") as f:
    w = f["params/conv_in.weight"]
    w[0, 0, 0, 0] = float("nan")
PY
expect_rc 0 "info on a checkpoint holding a NaN" "$bin" info "$dir/nan.h5"
check "info: names the NaN" grep -q "NOT FINITE: /params holds 1 NaN or infinite values in 1 tensors (first: conv_in.weight)" "$dir/out"
expect_rc 1 "training from a NaN base" "$bin" train "$dir/tiny.yaml" --no-samples \
  -o model.init="$dir/nan.h5" -o output.dir="$dir/nanrun"
check "train: says the run diverged at step 1" grep -q "training diverged: train: the loss is nan at step 1 (output.dir .*Lower train.lr" "$dir/out"
check "train: no checkpoint of NaN weights" test ! -e "$dir/nanrun/checkpoint.h5"
# In a sweep the same point is marked diverged (status 4, the step in its reason), the
# others go on, and a rerun does not retry it (the same run diverges again).
cat >"$dir/sweep.yaml" <<YAML
sweep: {grid: {model.init: [$dir/run/checkpoint.h5, $dir/nan.h5]}}
output: {dir: $dir/sw}
YAML
expect_rc 0 "sweep with a diverging point" "$bin" sweep "$dir/tiny.yaml" --no-samples --no-eval \
  -o "sweep=$(sed -n 's/^sweep: //p' "$dir/sweep.yaml")" -o output.dir="$dir/sw"
check "sweep: point 1 diverged" grep -q "point 1 diverged after .*the loss is nan at step 1" "$dir/out"
check "sweep: summary counts it" grep -q "sweep: 1 done, 1 failed (1 diverged), 0 pending of 2 points" "$dir/out"
check "sweep: says it is not retried" grep -q "a rerun does not retry them" "$dir/out"
expect_rc 0 "rerun of a sweep with a diverged point" "$bin" sweep "$dir/tiny.yaml" --no-samples \
  --no-eval -o "sweep=$(sed -n 's/^sweep: //p' "$dir/sweep.yaml")" -o output.dir="$dir/sw"
check "rerun: runs nothing" grep -q "1 not retried (1 diverged, 0 failed 3 times), 0 to run" "$dir/out"
check "rerun: ran 0" grep -q "(0 run now)" "$dir/out"
expect_rc 0 "rerun with --retry-failed" "$bin" sweep "$dir/tiny.yaml" --no-samples --no-eval \
  --retry-failed -o "sweep=$(sed -n 's/^sweep: //p' "$dir/sweep.yaml")" -o output.dir="$dir/sw"
check "--retry-failed: runs the diverged point again" grep -q "(1 run now)" "$dir/out"
check "--retry-failed: it diverges again" grep -q "point 1 diverged after" "$dir/out"
expect_rc 0 "info on the sweep" "$bin" info "$dir/sw"
check "info: counts the diverged point" grep -q "2 points: 1 done, 0 failed, 1 diverged, 0 pending" "$dir/out"
check "info: its row says diverged, with the step" grep -qE "^1 +diverged .*loss is nan at step 1" "$dir/out"
expect_rc 0 "info --status diverged" "$bin" info "$dir/sw" --status failed,diverged
check "info --status: only the diverged row" test "$(grep -cE '^[0-9]+ +(done|failed|diverged|pending|running) ' "$dir/out")" = 1 -a \
  "$(grep -cE '^1 +diverged ' "$dir/out")" = 1
expect_rc 2 "info --status with a wrong name" "$bin" info "$dir/sw" --status done,faild
check "info --status: names the wrong name and the choices" grep -q "'faild' is not a point status; give" "$dir/out"
expect_rc 0 "merge keeps the diverged point" "$bin" merge "$dir/merged.h5" "$dir/sw/results.h5"
check "merge: counts it" grep -q "2 points, 1 done, 1 failed (1 diverged), 0 pending" "$dir/out"
expect_rc 0 "info on the merged file" "$bin" info "$dir/merged.h5" --status diverged
check "merge: status 4 kept" grep -qE "^1 +diverged " "$dir/out"
# --dry-run on the sweep's folder: each point's state and what a run would do.
sweep_o="sweep=$(sed -n 's/^sweep: //p' "$dir/sweep.yaml")"
expect_rc 0 "sweep --dry-run with results" "$bin" sweep "$dir/tiny.yaml" --dry-run -o "$sweep_o" \
  -o output.dir="$dir/sw"
check "--dry-run: point 0 done" grep -qP "^0\tmodel.init=.*\tdone$" "$dir/out"
check "--dry-run: point 1 diverged, not retried" grep -qP "^1\tmodel.init=$dir/nan.h5\tdiverged: not retried$" "$dir/out"
check "--dry-run: a run would run nothing" grep -q "^# a run now would run 0 of these 2 points$" "$dir/out"
expect_rc 0 "sweep --dry-run --retry-failed" "$bin" sweep "$dir/tiny.yaml" --dry-run --retry-failed \
  -o "$sweep_o" -o output.dir="$dir/sw"
check "--dry-run --retry-failed: would run the diverged point" grep -q "^# a run now would run 1 of these 2 points$" "$dir/out"
expect_rc 2 "sweep --dry-run on another sweep's results" "$bin" sweep "$dir/tiny.yaml" --dry-run \
  -o "$sweep_o" -o output.dir="$dir/sw" -o train.steps=7
check "--dry-run: another sweep's results is the run's error" grep -q "results file belongs to a different sweep" "$dir/out"
expect_rc 0 "tools/report on the sweep" "$(dirname "$0")/../../tools/report" "$dir/sw/results.h5" "$dir/rep"
check "report: counts the diverged point" grep -q "1 failed (1 diverged" "$dir/rep/index.md"
check "report: lists it" grep -q "^- point 1 (init=$dir/nan.h5): diverged, not retried" "$dir/rep/index.md"

# output.save_weights: false: the run samples from its checkpoint, then removes it.
expect_rc 0 "train without saved weights" "$bin" train "$dir/tiny.yaml" \
  -o output.save_weights=false -o output.dir="$dir/nosave"
check "nosave: says it removed the checkpoint" grep -q "removed $dir/nosave/checkpoint.h5" "$dir/out"
check "nosave: no checkpoint" test ! -e "$dir/nosave/checkpoint.h5"
check "nosave: samples and losses written" test -s "$dir/nosave/samples.h5" -a -s "$dir/nosave/losses.csv"

expect_rc 0 "sample" "$bin" sample "$dir/run/checkpoint.h5" --out "$dir/s.h5" --num 3 --steps 2 \
  --png "$dir/s.png" --seed 4
check "sample files" test -s "$dir/s.h5" -a -s "$dir/s.png"
expect_rc 0 "sample ddpm to a png only" "$bin" sample "$dir/run/checkpoint.h5" --out "$dir/g.png" \
  -n 2 --sampler ddpm --steps 2
check "png only" test -s "$dir/g.png"
expect_rc 2 "not a checkpoint" "$bin" sample "$dir/data.h5" --out "$dir/x.h5" --sampler ddpm
check "says what the file is" grep -q "a3fta-dataset" "$dir/out"
# --backend overrides the checkpoint config's parallel.backend: cpu gives the default's
# images here (no GPU picked), a bad name is a usage error, cuda without a GPU is a clear
# CUDA error (exit 1), with one it samples.
expect_rc 0 "sample --backend cpu" "$bin" sample "$dir/run/checkpoint.h5" --out "$dir/c.h5" \
  --num 3 --steps 2 --seed 4 --backend cpu
check "--backend cpu: the same images" h5diff "$dir/s.h5" "$dir/c.h5" /samples
expect_rc 2 "sample --backend gpu" "$bin" sample "$dir/run/checkpoint.h5" --out "$dir/x.h5" \
  --backend gpu
check "names the choices" grep -q "auto, cpu or cuda" "$dir/out"
"$bin" sample "$dir/run/checkpoint.h5" --out "$dir/g.h5" -n 2 --steps 2 --backend cuda \
  >"$dir/out" 2>&1
rc=$?
if [ $rc -eq 0 ]; then
  check "--backend cuda on a GPU writes the samples" test -s "$dir/g.h5"
elif "$bin" --version | grep -q "^cuda: *off"; then
  # a build without CUDA cannot do what the config asks: a usage error
  check "--backend cuda in a build without CUDA: exit 2 (got $rc)" test $rc -eq 2
  check "--backend cuda in a build without CUDA says so" grep -q "built without CUDA" "$dir/out"
  expect_rc 2 "train, parallel.backend: cuda in a build without CUDA" "$bin" train \
    "$dir/tiny.yaml" -o "output.dir=$dir/nocuda" -o parallel.backend=cuda
  check "train says how to fix it" grep -q "set parallel.backend: auto or cpu" "$dir/out"
else
  check "--backend cuda without a GPU: exit 1 (got $rc)" test $rc -eq 1
  check "--backend cuda without a GPU names the CUDA error" grep -qi "cuda" "$dir/out"
fi

exit $fail
