#!/usr/bin/env bash
# The main job, reduced to fit a 2-core machine: installs what is missing,
# builds build/a3fta, imports Fashion-MNIST from Debian's dataset-fashion-mnist
# into data/fashion-mnist.h5 (summarised with a parallel read on 2 MPI ranks),
# then runs a reduced few-shot benchmark on 2 ranks and writes its report:
# configs/fewshot-fmnist-sweep.yaml (the committed pretrained base, class 9
# held out; six strategies with their learning rates) with 10 shots, 2
# subsets, 150 steps, 64 samples of 25 DDIM steps per point: 12 points. The
# full benchmark is the same command without the -o overrides (README).
#   tools/demo.sh [OUTPUT_DIR]     default OUTPUT_DIR: demo-out/
# Rerunning resumes the sweep (finished points are kept).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$A3FTA_ROOT"
out=${1:-demo-out}
mkdir -p "$out" data

ensure_debian_packages
configure_and_build build -DA3FTA_BUILD_TESTS=OFF
a3fta=$A3FTA_ROOT/build/a3fta
"$a3fta" --version

step "import Fashion-MNIST -> data/fashion-mnist.h5"
"$a3fta" import fashion-mnist --out data/fashion-mnist.h5

step "a3fta info (2 MPI ranks, each reading its shard)"
mpirun -np 2 --oversubscribe "$a3fta" info data/fashion-mnist.h5 | tee "$out/dataset-info.txt"

step "resolved default config -> $out/config.yaml"
"$a3fta" config show | tee "$out/config.yaml"
echo "config hash: $("$a3fta" config hash)"

step "reduced few-shot benchmark: 12 points on 2 MPI ranks -> $out/bench"
OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive} mpirun -np 2 --oversubscribe "$a3fta" sweep \
  configs/fewshot-fmnist-sweep.yaml -o "output.dir=$out/bench" \
  -o 'sweep.grid={data.shots: [10], data.subset_seed: [0, 1]}' \
  -o train.steps=150 -o train.warmup=15 -o train.checkpoint_every=150 \
  -o eval.samples=64 -o eval.sampler_steps=25
"$a3fta" info "$out/bench/results.h5" | tee "$out/bench-info.txt"

step "report -> $out/bench/report"
tools/report "$out/bench/results.h5" "$out/bench/report"

step "done: $out/dataset-info.txt, $out/config.yaml, $out/bench/results.h5"
echo "report: $A3FTA_ROOT/$out/bench/report/index.html (and index.md)"
