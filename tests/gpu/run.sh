#!/usr/bin/env bash
# The GPU check, one command for a machine with one NVIDIA GPU:
#   tests/gpu/run.sh OUTDIR
# 1. normal: configure + build into build-gpu/ (CUDA ON, sm_90, warnings as
#    errors; A3FTA_GPU_BUILD overrides the folder), then run the checks;
# 2. prebuilt: with A3FTA_GPU_PREBUILT=DIR (set by tests/gpu/unbundle.sh),
#    DIR holds the built a3fta and the test programs (DIR/tests/gpu/test_*,
#    DIR/tests/test_* or DIR/test_*): nothing is built.
# Checks, each with a timeout: test_cuda_probe, test_cuda_ops (fp32),
# test_cuda_ops --precision tf32, test_cuda_unet. All output goes to
# OUTDIR/gpu-check.log; OUTDIR/summary.md gets a table | check | result |
# seconds | (PASS / FAIL / SKIPPED) and the GPU from nvidia-smi.
# Exit status: 0 when no check failed (SKIPPED is not a failure), else 1.
set -u
root=$(cd "$(dirname "$0")/../.." && pwd)
if [ $# -ne 1 ]; then
  echo "usage: $0 OUTDIR" >&2
  exit 2
fi
out=$1
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
log=$out/gpu-check.log
: >"$log"
timeout_s=${A3FTA_GPU_TIMEOUT:-300}

say() { echo "$*" | tee -a "$log"; }

checks=()
results=()
seconds=()
record() { # name result seconds
  checks+=("$1")
  results+=("$2")
  seconds+=("$3")
}

say "== a3fta GPU check, $(date -u +%Y-%m-%dT%H:%M:%SZ), source $root"
gpu_info=""
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_info=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1)
  say "$gpu_info"
else
  say "nvidia-smi: not found"
fi

# ---------------------------------------------------------------- binaries
bin_a3fta=""
testdir=""
configs=$root/configs
if [ -n "${A3FTA_GPU_PREBUILT:-}" ]; then
  pre=$A3FTA_GPU_PREBUILT
  say "== prebuilt binaries from $pre"
  bin_a3fta=$pre/a3fta
  for d in "$pre/tests/gpu" "$pre/tests" "$pre"; do
    if [ -x "$d/test_cuda_ops" ]; then
      testdir=$d
      break
    fi
  done
  [ -d "$configs" ] || configs=$pre/../configs
  if [ -z "$testdir" ]; then
    say "no test_cuda_ops under $pre (tests/gpu/, tests/ or the folder itself)"
    record build FAIL 0
  else
    record "build (prebuilt: $pre)" SKIPPED 0
  fi
else
  build=${A3FTA_GPU_BUILD:-$root/build-gpu}
  say "== configure + build ($build, CUDA ON, architectures 90)"
  t0=$SECONDS
  if cmake -S "$root" -B "$build" -DA3FTA_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DA3FTA_WERROR=ON >>"$log" 2>&1 &&
    cmake --build "$build" -j"$(nproc)" >>"$log" 2>&1; then
    record build PASS $((SECONDS - t0))
    bin_a3fta=$build/a3fta
    testdir=$build/tests/gpu
  else
    say "build failed: see $log"
    record build FAIL $((SECONDS - t0))
  fi
fi
if [ -n "$bin_a3fta" ] && [ -x "$bin_a3fta" ]; then
  "$bin_a3fta" --version 2>&1 | tee -a "$log"
fi

# ---------------------------------------------------------------- checks
run_check() { # name program args...
  local name=$1 prog=$2
  shift 2
  say "== $name"
  if [ -z "$testdir" ] || [ ! -x "$testdir/$prog" ]; then
    say "$name: ${testdir:-(no build)}/$prog not found"
    record "$name" FAIL 0
    return
  fi
  local t0=$SECONDS rc
  timeout --kill-after=30 "$timeout_s" "$testdir/$prog" "$@" 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  local dt=$((SECONDS - t0)) result
  case $rc in
  0) result=PASS ;;
  77) result=SKIPPED ;;
  124 | 137) result="FAIL (timeout ${timeout_s}s)" ;;
  *) result="FAIL (exit $rc)" ;;
  esac
  say "$name: $result (${dt}s)"
  record "$name" "$result" "$dt"
}

run_check test_cuda_probe test_cuda_probe
run_check "test_cuda_ops (fp32)" test_cuda_ops
run_check "test_cuda_ops (tf32)" test_cuda_ops --precision tf32
run_check test_cuda_unet test_cuda_unet --configs "$configs"

# ---------------------------------------------------------------- summary
failed=0
{
  echo "# a3fta GPU check"
  echo
  echo "| check | result | seconds |"
  echo "|---|---|---|"
  for i in "${!checks[@]}"; do
    echo "| ${checks[$i]} | ${results[$i]} | ${seconds[$i]} |"
  done
  echo
  if [ -n "$gpu_info" ]; then
    echo '```'
    echo "$gpu_info"
    echo '```'
  else
    echo "nvidia-smi: not available"
  fi
  echo
  echo "Log: gpu-check.log"
} >"$out/summary.md"
for r in "${results[@]}"; do
  case $r in FAIL*) failed=1 ;; esac
done
echo "== summary" | tee -a "$log"
tee -a "$log" <"$out/summary.md"
exit $failed
