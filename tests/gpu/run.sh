#!/usr/bin/env bash
# The GPU check, one command for a machine with one NVIDIA GPU:
#   tests/gpu/run.sh OUTDIR
# 1. normal: configure + build into build-gpu/ (CUDA ON, sm_90, warnings as
#    errors; A3FTA_GPU_BUILD overrides the folder), then run the checks;
# 2. prebuilt: with A3FTA_GPU_PREBUILT=DIR (set by tests/gpu/unbundle.sh),
#    DIR holds the built a3fta and the test programs (DIR/tests/gpu/test_*,
#    DIR/tests/test_* or DIR/test_*): nothing is built.
# Checks, each with a timeout: test_cuda_probe, test_cuda_ops (fp32),
# test_cuda_ops --precision tf32 and bf16, test_cuda_unet (fp32 and bf16), test_cuda_sample
# (32 images, 50 DDIM steps, GPU vs CPU, max pixel diff <= 1), test_cuda_fault (an
# allocation beyond the device fails alone; a faulting kernel is reported as a
# lost device), test_cuda_nccl (1 rank;
# with 2+ GPUs and mpirun also on every GPU, and --peer-missing, which must
# abort the job), test_cuda_ops (fp32) and test_cuda_unet again with
# A3FTA_CONV=im2col (the convolutions' path without cuDNN), "sweep 1-GPU NCCL": a 2-point `a3fta sweep` of 20
# steps each with parallel.backend cuda and A3FTA_GRAD_COMM=nccl on
# data/fashion-mnist.h5 (A3FTA_GPU_DATA overrides; SKIPPED when missing),
# PASS when both points are done, the log names the NCCL sum and point 2 took over
# point 1's NCCL communicator; "memcheck: 2 full bf16 steps": two full
# fine-tuning steps of a small U-Net with 1x1 shortcuts in bf16 under
# compute-sanitizer's memcheck (SKIPPED without it, or on a device it cannot
# use); "fine-tune per
# strategy": tests/gpu/finetune_check.sh (30 steps of each strategy on CPU and
# GPU, losses within 1e-3; full and a3fta also in bf16, within 5e-2); then the benchmark against PyTorch,
# tools/bench/run_step_gpu.sh (--max-time $A3FTA_GPU_BENCH_S, default 240;
# --reps $A3FTA_GPU_BENCH_REPS, default 2), then once more with
# A3FTA_CONV=im2col (one repetition; A3FTA_GPU_BENCH_IM2COL=0 skips it), both
# SKIPPED without a python3 holding
# torch with CUDA; then one traced cifar step per precision whose cuDNN plan
# goes to OUTDIR/conv-trace-PRECISION.txt (the row counts the directions on cuDNN); the fp32
# cuDNN-backward comparison; and a per-op GPU profile of the cifar full step
# in fp32, tf32 and bf16 (OUTDIR/op-profile-PRECISION.txt, A3FTA_PROFILE=1;
# PyTorch's under torch.profiler in OUTDIR/torch-op-profile-PRECISION.txt). All output goes to
# OUTDIR/gpu-check.log; OUTDIR/summary.md gets a table | check | result |
# seconds | (PASS / FAIL / SKIPPED) and the GPU from nvidia-smi.
# A3FTA_GPU_ONLY="SECTION ..." runs only those sections, for short device
# leases (the others are left out of the table): ops unet sample nccl faults
# im2col sweep memcheck finetune bench plan fp32cmp profile.
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

sections="ops unet sample nccl faults im2col sweep memcheck finetune bench plan fp32cmp profile"
only=${A3FTA_GPU_ONLY:-}
only=${only//[$'\t\n,']/ } # spaces, tabs, newlines or commas between names
set -f                      # no globbing of the names
for sec in $only; do
  case " $sections " in *" $sec "*) ;; *)
    echo "A3FTA_GPU_ONLY: unknown section '$sec' (sections: $sections)" >&2
    exit 2
    ;;
  esac
done
set +f
# Whether section $1 runs (A3FTA_GPU_ONLY unset or empty: every one).
wanted() { [ -z "${only// /}" ] || case " $only " in *" $1 "*) true ;; *) false ;; esac; }

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
    # test_unet_golden lives with the model tests; the bundle puts it beside these
    ln -sf ../model/test_unet_golden "$testdir/test_unet_golden"
  else
    say "build failed: see $log"
    record build FAIL $((SECONDS - t0))
  fi
fi
if [ -n "$bin_a3fta" ] && [ -x "$bin_a3fta" ]; then
  "$bin_a3fta" --version 2>&1 | tee -a "$log"
fi

# ---------------------------------------------------------------- checks
launch=() # run_check runs "${launch[@]}" PROGRAM ARGS... (mpirun -np N for several ranks)
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
  timeout --kill-after=30 "$timeout_s" "${launch[@]}" "$testdir/$prog" "$@" 2>&1 | tee -a "$log"
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
if wanted ops; then
  run_check "test_cuda_ops (fp32)" test_cuda_ops
  run_check "test_cuda_ops (tf32)" test_cuda_ops --precision tf32
  run_check "test_cuda_ops (bf16)" test_cuda_ops --precision bf16
fi
if wanted unet; then
  run_check test_cuda_unet test_cuda_unet --configs "$configs"
  run_check "test_cuda_unet (bf16: bf16 activations)" test_cuda_unet --configs "$configs" \
    --precision bf16
  run_check "test_unet_golden (cuda fp32)" test_unet_golden "$root/tests/model/golden_unet.h5" \
    --cuda fp32
  run_check "test_unet_golden (cuda bf16 against torch's bf16)" test_unet_golden \
    "$root/tests/model/golden_unet.h5" --cuda bf16
fi
wanted sample && run_check test_cuda_sample test_cuda_sample --configs "$configs"
wanted nccl && run_check "test_cuda_nccl (1 rank)" test_cuda_nccl
# Out of memory fails alone; a kernel fault is a lost device, reported, never
# a crash (the sweep's handling of both rests on these; last, as the fault
# breaks that process's context).
wanted faults && run_check "test_cuda_fault (out of memory; a kernel fault)" test_cuda_fault
# The same op and model checks with cuDNN's convolutions turned off: the
# im2col + cuBLAS path must stay right for machines without cuDNN.
launch=(env A3FTA_CONV=im2col)
if wanted im2col; then
  run_check "test_cuda_ops (fp32, im2col convs)" test_cuda_ops
  run_check "test_cuda_unet (im2col convs)" test_cuda_unet --configs "$configs"
fi
# Exact fp32 with its backward on im2col (the default until 2026-11-27: see
# fp32_dnn_backward below and cuda_conv2d_dnn.cu's plan_shape).
launch=(env A3FTA_CONV=cudnn-fwd)
wanted unet && run_check "test_cuda_unet (fp32 backward on im2col, A3FTA_CONV=cudnn-fwd)" \
  test_cuda_unet --configs "$configs"
launch=()

# ---------------------------------------------------------------- NCCL on several GPUs
gpus=1
if command -v nvidia-smi >/dev/null 2>&1; then
  gpus=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU') || gpus=1
  [ "$gpus" -ge 1 ] || gpus=1
fi
mpirun_cmd=()
if command -v mpirun >/dev/null 2>&1; then
  mpirun_cmd=(env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 mpirun --oversubscribe)
fi
if ! wanted nccl; then
  : # left out (A3FTA_GPU_ONLY)
elif [ "$gpus" -ge 2 ] && [ ${#mpirun_cmd[@]} -gt 0 ] && [ -x "$testdir/test_cuda_nccl" ]; then
  np=$((gpus < 8 ? gpus : 8))
  launch=("${mpirun_cmd[@]}" -np "$np")
  run_check "test_cuda_nccl ($np ranks)" test_cuda_nccl
  launch=()
  # Rank 1 never sums: rank 0 times out after 2 s and, its peers not failing
  # within the 2 s plus A3FTA_ABORT_GRACE_S (5 s), must abort the job: exit non-zero with
  # the message, well before the check's timeout.
  say "== test_cuda_nccl --peer-missing (2 ranks)"
  t0=$SECONDS
  if "$root/tests/gpu/peer_missing_check.sh" "$out/peer-missing.log" "${mpirun_cmd[@]}" -np 2 \
    "$testdir/test_cuda_nccl" >>"$log" 2>&1; then
    result=PASS
    cat "$out/peer-missing.log" >>"$log" # (a failure's check prints it itself)
  else
    result="FAIL (see peer-missing.log)"
  fi
  dt=$((SECONDS - t0))
  say "test_cuda_nccl --peer-missing: $result (${dt}s)"
  record "test_cuda_nccl --peer-missing (2 ranks)" "$result" "$dt"
else
  if [ ${#mpirun_cmd[@]} -gt 0 ]; then have_mpirun=found; else have_mpirun="not found"; fi
  say "== test_cuda_nccl on several GPUs: $gpus GPU(s), mpirun $have_mpirun"
  record "test_cuda_nccl (several GPUs)" SKIPPED 0
fi

# ---------------------------------------------------------------- sweep 1-GPU NCCL
# need_binary_and_data NAME DATA: records NAME as FAIL (no a3fta) or SKIPPED (no
# data, no usable GPU) and returns 1 when a check that runs a3fta on DATA cannot run.
need_binary_and_data() {
  if [ -z "$bin_a3fta" ] || [ ! -x "$bin_a3fta" ]; then
    say "$1: no a3fta binary"
    record "$1" FAIL 0
    return 1
  fi
  if [ ! -s "$2" ]; then
    say "$1: $2 not found (a3fta import fashion-mnist --out $2)"
    record "$1" SKIPPED 0
    return 1
  fi
  ! skipped_without_gpu "$1"
}

# Records NAME as SKIPPED and returns 0 when test_cuda_probe finds no usable GPU.
skipped_without_gpu() {
  if [ -x "$testdir/test_cuda_probe" ] && { "$testdir/test_cuda_probe" >/dev/null 2>&1; [ $? -eq 77 ]; }; then
    say "$1: no usable GPU (test_cuda_probe)"
    record "$1" SKIPPED 0
    return 0
  fi
  return 1
}
# The model and data lines of the small runs' configs (a U-Net with 1x1
# shortcuts and attention, 10 images of one class of DATA).
small_model_yaml() {
  cat <<YAML
model:
  arch: {sample_size: 32, in_channels: 1, out_channels: 1, block_out_channels: [16, 32],
         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],
         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}
data: {path: $1, classes: [9], shots: 10, hflip: true}
YAML
}
sweep_nccl() {
  local name="sweep 1-GPU NCCL" data=${A3FTA_GPU_DATA:-$root/data/fashion-mnist.h5}
  local dir=$out/sweep-nccl
  say "== $name"
  need_binary_and_data "$name" "$data" || return
  rm -rf "$dir" && mkdir -p "$dir"
  { small_model_yaml "$data" && cat <<YAML; } >"$dir/sweep.yaml"
strategy: {name: a3fta, adapter: {rank: 4}}
train: {steps: 20, batch_size: 8, lr: 1.0e-3, lr_schedule: constant, warmup: 0, log_every: 10,
        checkpoint_every: 0}
output: {dir: $dir/out, samples_per_run: 0}
sweep:
  grid: {strategy.name: [a3fta, lora]}
parallel: {backend: cuda, ranks_per_run: 1}
YAML
  local one=()
  [ ${#mpirun_cmd[@]} -gt 0 ] && one=("${mpirun_cmd[@]}" -np 1)
  local t0=$SECONDS rc result
  A3FTA_GRAD_COMM=nccl timeout --kill-after=30 "$timeout_s" "${one[@]}" "$bin_a3fta" sweep \
    "$dir/sweep.yaml" --no-eval >"$dir/sweep.log" 2>&1
  rc=$?
  "$bin_a3fta" info "$dir/out/results.h5" --csv >"$dir/info.csv" 2>&1
  cat "$dir/sweep.log" "$dir/info.csv" >>"$log"
  local done_points
  done_points=$(grep -c ',done,' "$dir/info.csv")
  # The second point takes over the first one's communicator (one per group).
  local reused
  reused=$(grep -c "NCCL communicator reused" "$dir/sweep.log")
  # and the communicator left at the end goes in MPI_Finalize without a timeout.
  if [ $rc -eq 0 ] && [ "$done_points" -eq 2 ] && grep -q "gradient sum: nccl" "$dir/sweep.log" &&
    [ "$reused" -eq 1 ] && ! grep -q "ncclCommFinalize" "$dir/sweep.log"; then
    result="PASS (communicator reused by point 2)"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    result="FAIL (timeout ${timeout_s}s)"
  else
    result="FAIL (exit $rc, $done_points of 2 points done, communicator reused $reused time(s)$(
      grep -q 'gradient sum: nccl' "$dir/sweep.log" || echo ', no NCCL sum in the log')$(
      grep -q 'ncclCommFinalize' "$dir/sweep.log" && echo ', ncclCommFinalize failed at the end'))"
  fi
  local dt=$((SECONDS - t0))
  say "$name: $result (${dt}s)"
  record "$name" "$result" "$dt"
}
wanted sweep && sweep_nccl

# ---------------------------------------------------------------- memcheck of a training step
# Two full fine-tuning steps in bf16 (cuDNN's convolutions, the 1x1
# shortcuts' weight gradients on im2col, the model arena and workspace) under
# compute-sanitizer's memcheck: PASS with "ERROR SUMMARY: 0 errors";
# SKIPPED where compute-sanitizer is missing or cannot use the device (gVisor).
memcheck_step() {
  local name="memcheck: 2 full bf16 steps" data=${A3FTA_GPU_DATA:-$root/data/fashion-mnist.h5}
  local dir=$out/memcheck
  say "== $name"
  need_binary_and_data "$name" "$data" || return
  if ! command -v compute-sanitizer >/dev/null 2>&1; then
    say "$name: compute-sanitizer not found"
    record "$name" SKIPPED 0
    return
  fi
  rm -rf "$dir" && mkdir -p "$dir"
  { small_model_yaml "$data" && cat <<YAML; } >"$dir/train.yaml"
strategy: {name: full}
train: {steps: 2, batch_size: 8, lr: 1.0e-3, lr_schedule: constant, warmup: 0, log_every: 1,
        checkpoint_every: 0, precision: bf16}
output: {dir: $dir/out, samples_per_run: 0}
parallel: {backend: cuda}
YAML
  local t0=$SECONDS rc result
  timeout --kill-after=30 "$timeout_s" compute-sanitizer --tool memcheck --leak-check no \
    --error-exitcode 3 "$bin_a3fta" train "$dir/train.yaml" >"$dir/memcheck.log" 2>&1
  rc=$?
  cat "$dir/memcheck.log" >>"$log"
  if grep -q "Device not supported\|Target application not supported" "$dir/memcheck.log"; then
    result="SKIPPED (compute-sanitizer cannot use this device)"
  elif [ $rc -eq 0 ] && grep -q "ERROR SUMMARY: 0 errors" "$dir/memcheck.log"; then
    result=PASS
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    result="FAIL (timeout ${timeout_s}s)"
  else
    result="FAIL (exit $rc, $(grep -o 'ERROR SUMMARY: [0-9]* error' "$dir/memcheck.log" | head -1 ||
      echo 'no summary'); see memcheck/memcheck.log)"
  fi
  local dt=$((SECONDS - t0))
  say "$name: $result (${dt}s)"
  record "$name" "$result" "$dt"
}
wanted memcheck && memcheck_step

# ---------------------------------------------------------------- fine-tuning per strategy, CPU vs GPU
finetune() {
  local name="fine-tune per strategy (CPU vs GPU, 30 steps)" data=$root/data/fashion-mnist.h5
  say "== $name"
  need_binary_and_data "$name" "$data" || return
  local t0=$SECONDS rc
  "$root/tests/gpu/finetune_check.sh" "$bin_a3fta" "$out" 30 2>&1 | tee -a "$log"
  rc=${PIPESTATUS[0]}
  # The trainer's "backend: cuda device ..., convolutions: ENGINE" line.
  conv_engine=$(sed -n 's/.*backend: .*, convolutions: \([^,]*\).*/\1/p' "$out"/finetune/*-cuda.log 2>/dev/null |
    head -1)
  say "GPU convolutions: ${conv_engine:-unknown}"
  if [ "$rc" -eq 0 ]; then record "$name" PASS $((SECONDS - t0)); else
    record "$name" "FAIL (see finetune-check.md)" $((SECONDS - t0)); fi
}
wanted finetune && finetune

# ---------------------------------------------------------------- benchmark against PyTorch
# torch must not see the bundle's older libstdc++ and friends (LD_LIBRARY_PATH
# from tests/gpu/unbundle.sh): its Python runs through a wrapper without them
# (the benchmark and the op profiles).
printf '#!/bin/sh\nunset LD_LIBRARY_PATH\nexec %s "$@"\n' "${PYTHON:-python3}" >"$out/python-without-bundle" &&
  chmod +x "$out/python-without-bundle"
bench_bin=""
for b in "${A3FTA_GPU_PREBUILT:-/nonexistent}/tools/bench/a3fta_bench_step" \
  "${build:-/nonexistent}/tools/bench/a3fta_bench_step"; do
  [ -x "$b" ] && bench_bin=$b && break
done
# Records NAME as FAIL and returns 0 when a3fta_bench_step was not built.
bench_bin_missing() {
  [ -n "$bench_bin" ] && return 1
  say "$1: a3fta_bench_step not built"
  record "$1" FAIL 0
}
bench() {
  local name="benchmark vs PyTorch (tools/bench/run_step_gpu.sh)"
  say "== $name"
  bench_bin_missing "$name" && return
  local py=$out/python-without-bundle
  if ! "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    say "$name: no python3 with torch and CUDA"
    record "$name" SKIPPED 0
    return
  fi
  local t0=$SECONDS
  PYTHON=$py "$root/tools/bench/run_step_gpu.sh" --bin "$bench_bin" --out "$out/bench" \
    --reps "${A3FTA_GPU_BENCH_REPS:-2}" \
    --max-time "${A3FTA_GPU_BENCH_S:-240}" >>"$log" 2>&1
  if [ -s "$out/bench/table.txt" ]; then record "$name" "PASS (table below)" $((SECONDS - t0)); else
    record "$name" "FAIL (no table; see bench/log.txt)" $((SECONDS - t0)); fi
  # The same without cuDNN (one repetition): what the im2col path costs
  # (A3FTA_GPU_BENCH_IM2COL=0 skips it).
  [ "${A3FTA_GPU_BENCH_IM2COL:-1}" = 0 ] && return
  t0=$SECONDS
  A3FTA_CONV=im2col PYTHON=$py "$root/tools/bench/run_step_gpu.sh" --bin "$bench_bin" --reps 1 \
    --out "$out/bench-im2col" --max-time "${A3FTA_GPU_BENCH_S:-240}" >>"$log" 2>&1
  if [ -s "$out/bench-im2col/table.txt" ]; then
    record "$name, im2col convs" "PASS (table below)" $((SECONDS - t0))
  else
    record "$name, im2col convs" "FAIL (no table; see bench-im2col/log.txt)" $((SECONDS - t0))
  fi
}
wanted bench && bench

# ---------------------------------------------------------------- the cuDNN plan of the cifar step
# One traced step of ddpm-cifar10-32 (full, batch 128: every conv trainable,
# so every direction planned) in fp32, tf32 and bf16:
# OUTDIR/conv-trace-PRECISION.txt lists each shape's engine per direction;
# the row counts the directions on cuDNN.
conv_plan() { # precision
  local p=$1 name="cuDNN plan, ddpm-cifar10-32 full $1 (A3FTA_CONV_TRACE=1)"
  say "== $name"
  bench_bin_missing "$name" && return
  skipped_without_gpu "$name" && return
  local t0=$SECONDS trace=$out/conv-trace-$p.txt
  A3FTA_CONV_TRACE=1 timeout "$timeout_s" "$bench_bin" --backend cuda --precision "$p" \
    --strategy full --config "$root/configs/ddpm-cifar10-32.yaml" --batch 128 --steps 1 \
    --warmup 0 >/dev/null 2>"$trace.err"
  local rc=$?
  grep '^conv ' "$trace.err" >"$trace"
  local shapes dnn total
  shapes=$(wc -l <"$trace")
  dnn=$(grep -o 'cuDNN algo' "$trace" | wc -l)
  total=$((shapes * 3))
  say "conv plan ($p): $shapes shapes, $dnn of $total directions on cuDNN (see conv-trace-$p.txt)"
  if [ "$rc" -eq 0 ]; then
    record "$name" "PASS: $shapes shapes, $dnn of $total directions on cuDNN" $((SECONDS - t0))
  else
    record "$name" "FAIL (exit $rc; see conv-trace-$p.txt.err)" $((SECONDS - t0))
  fi
}
if wanted plan; then
  for p in fp32 tf32 bf16; do conv_plan "$p"; done
fi

# ---------------------------------------------------------------- fp32's backward on cuDNN
# The case that once failed with an illegal address (ddpm-cifar10-32, full,
# fp32, batch 128, cuDNN's backward), now the default: 3 steps of it against
# A3FTA_CONV=cudnn-fwd (backward on im2col). PASS when both run and their
# last losses agree to 1e-4; the row gives both step times.
fp32_dnn_backward() {
  local name="cifar full fp32 step, backward on cuDNN (default) vs im2col (A3FTA_CONV=cudnn-fwd)"
  say "== $name"
  bench_bin_missing "$name" && return
  skipped_without_gpu "$name" && return
  local t0=$SECONDS mode rc=0 args=(--backend cuda --precision fp32 --strategy full
    --config "$root/configs/ddpm-cifar10-32.yaml" --batch 128 --steps 3 --warmup 1)
  for mode in default cudnn-fwd; do
    local conv="" # empty: the default plan
    [ $mode = cudnn-fwd ] && conv=cudnn-fwd
    A3FTA_CONV=$conv timeout "$timeout_s" "$bench_bin" "${args[@]}" >"$out/fp32-$mode.txt" 2>&1 ||
      rc=$?
    cat "$out/fp32-$mode.txt" >>"$log"
  done
  local a b ms_a ms_b
  a=$(awk '/^LOSS/ {print $3}' "$out/fp32-default.txt")
  b=$(awk '/^LOSS/ {print $3}' "$out/fp32-cudnn-fwd.txt")
  ms_a=$(awk '/^STEP/ {s += $2; n++} END {if (n) printf "%.1f", s / n}' "$out/fp32-default.txt")
  ms_b=$(awk '/^STEP/ {s += $2; n++} END {if (n) printf "%.1f", s / n}' "$out/fp32-cudnn-fwd.txt")
  local result="FAIL (exit $rc; see fp32-default.txt, fp32-cudnn-fwd.txt)"
  if [ $rc -eq 0 ] && [ -n "$a" ] && [ -n "$b" ] &&
    awk -v a="$a" -v b="$b" 'BEGIN {d = a - b; if (d < 0) d = -d; exit !(d <= 1e-4 * (a < 0 ? -a : a))}'; then
    result="PASS: loss $a vs $b; $ms_a ms/step (cuDNN backward) vs $ms_b (im2col)"
  elif [ $rc -eq 0 ]; then
    result="FAIL: loss $a (cuDNN backward) vs $b (im2col)"
  fi
  say "$name: $result"
  record "$name" "$result" $((SECONDS - t0))
}
wanted fp32cmp && fp32_dnn_backward

# ---------------------------------------------------------------- where the step's time goes
# Per-op GPU times (A3FTA_PROFILE=1: events around each op on the backend's
# stream, backend/op_profile.h) of ddpm-cifar10-32, full, batch 128, in each
# precision of A3FTA_GPU_PROFILE_PRECISIONS (default "fp32 tf32 bf16"),
# the warm-up step left out: OUTDIR/op-profile-PRECISION.txt, and the five
# largest rows in the summary; then PyTorch's same step under torch.profiler
# (OUTDIR/torch-op-profile-PRECISION.txt). PASS when a3fta's run ends with
# its table.
profile_summary=""
op_profile() { # precision
  local p=$1 name="op profile, cifar full $1 batch 128 (A3FTA_PROFILE=1)"
  say "== $name"
  bench_bin_missing "$name" && return
  skipped_without_gpu "$name" && return
  local t0=$SECONDS prof=$out/op-profile-$p.txt rc=0
  A3FTA_PROFILE=1 timeout "$timeout_s" "$bench_bin" --backend cuda --precision "$p" --strategy full \
    --config "$root/configs/ddpm-cifar10-32.yaml" --batch 128 --steps 3 --warmup 1 \
    --sgemm-reps 0 >"$prof" 2>&1 || rc=$?
  cat "$prof" >>"$log"
  # The CUDA table's first five rows (after its title and header), and its total.
  local top
  top=$(awk '/^A3FTA_PROFILE: CUDA/ {on = 1; skip = 1; next} on && skip {skip = 0; next}
             on && n < 5 {print; n++} on && /^total/ {print; exit}' "$prof")
  local result="FAIL (exit $rc; see op-profile-$p.txt)"
  if [ $rc -eq 0 ] && grep -q '^A3FTA_PROFILE: CUDA' "$prof" && grep -q '^total' "$prof"; then
    result="PASS (largest rows below; op-profile-$p.txt)"
    profile_summary+=$'\n'"## Largest ops of the cifar full $p step (op-profile-$p.txt, 3 steps + 3 queued)"
    profile_summary+=$'\n\n```\n'"$top"$'\n```\n'
  fi
  # PyTorch's peer of the same step under torch.profiler (peer_step.py
  # --profile), where bench() found torch with CUDA.
  local py=$out/python-without-bundle tprof=$out/torch-op-profile-$p.txt
  if [ -x "$py" ] && "$py" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' \
    2>/dev/null; then
    timeout "$timeout_s" "$py" "$root/tools/bench/peer_step.py" --device cuda --precision "$p" \
      --strategy full --config "$root/configs/ddpm-cifar10-32.yaml" --batch 128 --steps 3 \
      --warmup 1 --sgemm-reps 0 --profile 3 >"$tprof" 2>&1
    # Its table's first five rows (between its second and third rule lines).
    local torch_top
    torch_top=$(awk '/^---/ {rules++; next} rules == 2 && n < 5 {print; n++}' "$tprof")
    if [ -n "$torch_top" ]; then
      profile_summary+=$'\n'"## PyTorch's largest ops of the same step (torch-op-profile-$p.txt, 3 steps)"
      profile_summary+=$'\n\n```\n'"$torch_top"$'\n```\n'
    else
      result="$result; torch's profile failed (torch-op-profile-$p.txt)"
    fi
  fi
  say "$name: $result"
  record "$name" "$result" $((SECONDS - t0))
}
if wanted profile; then
  for p in ${A3FTA_GPU_PROFILE_PRECISIONS:-fp32 tf32 bf16}; do op_profile "$p"; done
fi

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
  if [ -s "$out/finetune-check.md" ]; then
    echo "## Fine-tuning per strategy, CPU vs GPU"
    echo
    cat "$out/finetune-check.md"
    echo
  fi
  for b in bench bench-im2col; do
    [ -s "$out/$b/table.txt" ] || continue
    echo "## Training step vs PyTorch ($b: convolutions $([ $b = bench ] && echo "${conv_engine:-?}" || echo "im2col + cuBLAS"))"
    echo
    echo '```'
    cat "$out/$b/table.txt"
    echo '```'
    echo
  done
  [ -n "$profile_summary" ] && echo "$profile_summary"
  echo "Log: gpu-check.log"
} >"$out/summary.md"
for r in "${results[@]}"; do
  case $r in FAIL*) failed=1 ;; esac
done
echo "== summary" | tee -a "$log"
tee -a "$log" <"$out/summary.md"
exit $failed
