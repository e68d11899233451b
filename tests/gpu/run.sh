#!/usr/bin/env bash
# GPU check: build with CUDA into build-gpu/ and run every test labelled gpu
# (plus the whole suite, so CPU and GPU builds agree). Meant for a machine
# with one NVIDIA GPU; prints a summary table at the end.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${A3FTA_GPU_BUILD:-$root/build-gpu}
echo "== configure + build ($build, CUDA ON, architectures 90)"
cmake -S "$root" -B "$build" -DA3FTA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DA3FTA_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)" >/dev/null
"$build/a3fta" --version
echo "== gpu tests"
ctest --test-dir "$build" -L gpu --output-on-failure
echo "== summary"
ctest --test-dir "$build" -L gpu 2>&1 | grep -E "Test +#|tests passed|Skipped" || true
