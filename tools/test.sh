#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine or an old checkout:
# installs what is missing, checks formatting, builds build/ (warnings are
# errors; CUDA when nvcc exists) and build-asan/ (ASan + UBSan, CPU only),
# and runs every ctest test in both. Exits non-zero on any failure.
#   tools/test.sh            everything
#   tools/test.sh --fast     skip the sanitizer build
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

run_suite() { # build_dir
  step "ctest in $1"
  ctest --test-dir "$1" --output-on-failure -j"$(nproc)" "${ctest_args[@]}" || failed=1
}

if configure_and_build build -DA3FTA_WERROR=ON; then run_suite build; else failed=1; fi
if [ "$fast" = 0 ]; then
  if configure_and_build build-asan -DA3FTA_WERROR=ON -DA3FTA_SANITIZE=ON -DA3FTA_CUDA=OFF \
       -DCMAKE_BUILD_TYPE=Debug; then
    run_suite build-asan
  else
    failed=1
  fi
fi

# The CUDA backend's own code on the CPU emulator (tests/cuda_emu/README.md),
# under ASan + UBSan: only the targets the emu tests need.
if [ "$fast" = 0 ]; then
  step "configure build-emu (the CUDA backend on the CPU emulator)"
  if cmake -S . -B build-emu -DA3FTA_WERROR=ON -DA3FTA_SANITIZE=ON -DA3FTA_CUDA=OFF \
       -DA3FTA_CUDA_EMU=ON >build-emu.configure.log 2>&1 &&
     cmake --build build-emu -j"$(nproc)" --target test_cuda_ops test_cuda_unet test_cuda_sample a3fta \
       test_unet_golden \
       trainer_make_dataset test_trainer_train test_cuda_nccl test_cuda_fault test_emu_streams \
       test_emu_barriers \
       a3fta_bench_step \
       >build-emu.build.log 2>&1; then
    step "ctest in build-emu"
    ctest --test-dir build-emu --output-on-failure -j"$(nproc)" -L emu "${ctest_args[@]}" || failed=1
  else
    cat build-emu.configure.log >&2
    grep -E -B2 -A6 'error|Error' build-emu.build.log | head -80 >&2
    failed=1
  fi
fi

if [ "$failed" = 0 ]; then step "all tests passed"; else step "FAILED"; fi
exit "$failed"
