#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine or an old checkout:
# installs what is missing, checks formatting, builds build/ (warnings are
# errors; CUDA when nvcc exists) and build-asan/ (ASan + UBSan, CPU only),
# and runs every ctest test in both; then the CUDA backend's tests on the CPU
# emulator (build-emu/ under ASan + UBSan, build-emu-long/ without). Each
# phase's start time is printed. Exits non-zero on any failure.
#   tools/test.sh            everything
#   tools/test.sh --fast     skip the sanitizer and emulator builds
#   tools/test.sh -L mpi     pass options on to ctest (both builds)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$A3FTA_ROOT" || exit 1

fast=0
ctest_args=()
for a in "$@"; do
  if [ "$a" = --fast ]; then fast=1; else ctest_args+=("$a"); fi
done

ensure_debian_packages || exit 1
failed=0

step "clang-format check"
unformatted=$(git ls-files '*.c' '*.h' '*.cu' '*.cpp' | xargs -r clang-format --dry-run -Werror 2>&1 | grep -c 'error:')
if [ "$unformatted" != 0 ]; then
  git ls-files '*.c' '*.h' '*.cu' '*.cpp' | xargs -r clang-format --dry-run -Werror 2>&1 | grep 'error:' | head -20
  echo "clang-format: $unformatted problem(s); run: clang-format -i \$(git ls-files '*.c' '*.h' '*.cu' '*.cpp')" >&2
  failed=1
fi

run_suite() { # build_dir [ctest options]
  local dir=$1
  shift
  step "ctest in $dir $*"
  ctest --test-dir "$dir" --output-on-failure -j"$(nproc)" "$@" "${ctest_args[@]}" || failed=1
}

if configure_and_build build -DA3FTA_WERROR=ON; then run_suite build; else failed=1; fi
if [ "$fast" = 0 ]; then
  # -O2 (RelWithDebInfo), as ASan's authors advise: the same checks, and
  # compute-bound tests run 1.5-5x faster than at -O0 (test_ops 24 s -> 5 s).
  # Tests labelled `repeat` (tests/README.md) run in build/ only.
  if configure_and_build build-asan -DA3FTA_WERROR=ON -DA3FTA_SANITIZE=ON -DA3FTA_CUDA=OFF \
       -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
    run_suite build-asan -LE repeat
  else
    failed=1
  fi
fi

# The CUDA backend's own code on the CPU emulator (tests/cuda_emu/README.md),
# in two builds. Under ASan + UBSan: every op, the golden U-Nets, the NCCL sum
# on one rank and the emulator's own tests, which reach every kernel and its
# bounds on buffers of their own. Without sanitizers, 4-5x faster: the tests
# labelled emu_long, whole models, training runs and sweeps (their tensors
# are slices of one arena, where ASan sees no bounds anyway).
if [ "$fast" = 0 ]; then
  emu=(-DA3FTA_WERROR=ON -DA3FTA_CUDA=OFF -DA3FTA_CUDA_EMU=ON)
  if configure_and_build build-emu "${emu[@]}" -DA3FTA_SANITIZE=ON -- test_cuda_ops \
       test_unet_golden test_cuda_nccl test_cuda_fault test_emu_streams test_emu_barriers \
       a3fta_bench_step; then
    step "ctest in build-emu (ASan + UBSan)"
    ctest --test-dir build-emu --output-on-failure -j"$(nproc)" -L emu -LE emu_long \
      "${ctest_args[@]}" || failed=1
  else
    failed=1
  fi
  if configure_and_build build-emu-long "${emu[@]}" -DA3FTA_SANITIZE=OFF -- test_cuda_unet \
       test_cuda_sample a3fta trainer_make_dataset test_trainer_train test_cuda_nccl; then
    step "ctest in build-emu-long"
    ctest --test-dir build-emu-long --output-on-failure -j"$(nproc)" -L emu_long \
      "${ctest_args[@]}" || failed=1
  else
    failed=1
  fi
fi

if [ "$failed" = 0 ]; then step "all tests passed"; else step "FAILED"; fi
exit "$failed"
