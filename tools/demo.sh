#!/usr/bin/env bash
# The main job on the embedded default: installs what is missing, builds
# build/a3fta, imports Fashion-MNIST from Debian's dataset-fashion-mnist into
# data/fashion-mnist.h5, summarises it with a parallel read on 2 local MPI
# ranks, and prints the resolved default config. (Later issues extend this to
# the few-shot sweep and its report.)
#   tools/demo.sh [OUTPUT_DIR]     default OUTPUT_DIR: demo-out/
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

step "done: $out/dataset-info.txt, $out/config.yaml"
