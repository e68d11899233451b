#!/usr/bin/env bash
# tools/check_cuda_calls.py on the tree (every CUDA / cuBLAS / cuDNN / NCCL call
# checked, every kernel launch followed by CU_LAUNCHED) must pass; on a copy
# with one unchecked launch and one dropped cudaMemcpyAsync result planted it
# must fail and name both lines.
set -u
root=${A3FTA_SOURCE_DIR:?}
checker=$root/tools/check_cuda_calls.py
fail=0
if ! python3 "$checker" "$root"; then
  echo "FAIL: the tree has unchecked CUDA calls (above)"
  fail=1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src/backend" "$tmp/src"
cp -r "$root/src/backend/cuda" "$tmp/src/backend/" && cp -r "$root/src/dist" "$tmp/src/" || exit 1
cat >>"$tmp/src/backend/cuda/cuda_noise.cu" <<'CU'

void planted(const a3_backend *be, float *dst, const float *src, size_t n) {
  k_planted<<<1, 32, 0, cu_stream(be)>>>(dst, n);
  cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToDevice, cu_stream(be));
}
CU
out=$(python3 "$checker" "$tmp")
rc=$?
echo "$out" | tail -3
if [ $rc -eq 0 ] || ! grep -q "kernel launch without CU_LAUNCHED" <<<"$out" ||
  ! grep -q "the result of cudaMemcpyAsync is not checked (in planted)" <<<"$out"; then
  echo "FAIL: the planted unchecked launch and call were not both reported"
  fail=1
fi
[ $fail -eq 0 ] && echo "check_cuda_calls: PASS"
exit $fail
