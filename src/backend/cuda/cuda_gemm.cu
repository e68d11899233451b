// The backend's matrix products: every GEMM of the CUDA ops goes through
// these two, so train.precision is decided here. Results and accumulation
// are fp32 in every mode:
//   fp32: fp32 operands, CUBLAS_COMPUTE_32F (default math mode: no TF32);
//   tf32: fp32 operands, CUBLAS_COMPUTE_32F_FAST_TF32 (the tensor cores
//         round them to 10-bit mantissas);
//   bf16: the operands are first rounded (to nearest even) into bf16 copies
//         in the backend's scratch, then multiplied by the bf16 tensor cores
//         with fp32 accumulation (CUBLAS_COMPUTE_32F on CUDA_R_16BF inputs),
//         as torch's autocast does for its matmuls. Asking cuBLAS for
//         CUBLAS_COMPUTE_32F_FAST_16BF on fp32 operands instead measured
//         like tf32 on an H100 (tf32's errors and 410 TFLOP/s at 4096^3,
//         where bf16 operands reach ~770).
// The copies cost a read of 4 and a write of 2 bytes per operand element,
// which the 2x faster bf16 products repay on the large matrices.
#include "cuda_internal.h"

cublasComputeType_t cu_compute_type(a3_precision p) {
  switch (p) {
  case A3_PRECISION_TF32: return CUBLAS_COMPUTE_32F_FAST_TF32;
  case A3_PRECISION_BF16: return CUBLAS_COMPUTE_32F_FAST_16BF; // marks bf16: see as_bf16
  default: return CUBLAS_COMPUTE_32F;
  }
}

int cu_bf16_operands(const a3_backend *be) {
  return cu_state(be)->compute == CUBLAS_COMPUTE_32F_FAST_16BF;
}

__global__ static void k_round_bf16(__nv_bfloat16 *dst, const float *src, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    dst[i] = __float2bfloat16_rn(src[i]);
}

int cu_round_bf16(const a3_backend *be, __nv_bfloat16 *dst, const float *src, size_t n) {
  if (n) k_round_bf16<<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(dst, src, n);
  return CU_LAUNCHED(be);
}

// dst = src (beta 0: dst is not read, so it may hold anything) or src + beta * dst.
__global__ static void k_widen_bf16(float *dst, const __nv_bfloat16 *src, size_t n, float beta) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const float v = __bfloat162float(src[i]);
    dst[i] = beta == 0.0f ? v : v + beta * dst[i];
  }
}

int cu_widen_bf16(const a3_backend *be, float *dst, const __nv_bfloat16 *src, size_t n,
                  float beta) {
  if (n)
    k_widen_bf16<<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(dst, src, n, beta);
  return CU_LAUNCHED(be);
}

// Elements a column-major operand spans: `batch` matrices `stride` apart,
// each `cols` columns of `rows` floats, `ld` apart. Its copy keeps the
// offsets, so overlapping or interleaved matrices stay right.
static size_t operand_span(int rows, int cols, int ld, long long stride, int batch) {
  if (rows <= 0 || cols <= 0 || batch <= 0) return 0;
  return (size_t)(batch - 1) * (size_t)stride + (size_t)(cols - 1) * (size_t)ld + (size_t)rows;
}

// src's n elements rounded to bf16 in scratch `slot` (0: A, 1: B), or NULL
// (recorded).
static const __nv_bfloat16 *as_bf16(const a3_backend *be, int slot, const float *src, size_t n) {
  __nv_bfloat16 *dst = (__nv_bfloat16 *)cu_scratch_get(be, &cu_state(be)->bf16[slot],
                                                       (n ? n : 1) * sizeof(__nv_bfloat16));
  return dst && cu_round_bf16(be, dst, src, n) ? dst : NULL;
}

// The operands' types, pointers and compute type for this backend's
// precision: A and B themselves, or their bf16 copies.
typedef struct {
  const void *A, *B;
  cudaDataType_t type;
  cublasComputeType_t compute;
} gemm_operands;

static int gemm_operands_for(const a3_backend *be, cublasOperation_t ta, cublasOperation_t tb,
                             int m, int n, int k, const float *A, int lda, long long stride_a,
                             const float *B, int ldb, long long stride_b, int batch,
                             gemm_operands *o) {
  *o = (gemm_operands){A, B, CUDA_R_32F, cu_state(be)->compute};
  if (!cu_bf16_operands(be)) return 1;
  const int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
  const int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
  o->A = as_bf16(be, 0, A, operand_span(a_rows, a_cols, lda, stride_a, batch));
  o->B = as_bf16(be, 1, B, operand_span(b_rows, b_cols, ldb, stride_b, batch));
  o->type = CUDA_R_16BF;
  o->compute = CUBLAS_COMPUTE_32F;
  return o->A && o->B;
}

cublasStatus_t cu_sgemm(const a3_backend *be, cublasOperation_t ta, cublasOperation_t tb, int m,
                        int n, int k, const float *alpha, const float *A, int lda, const float *B,
                        int ldb, const float *beta, float *C, int ldc) {
  gemm_operands o;
  if (!gemm_operands_for(be, ta, tb, m, n, k, A, lda, 0, B, ldb, 0, 1, &o))
    return CUBLAS_STATUS_ALLOC_FAILED; // the cause is recorded already
  return cublasGemmEx(cu_blas(be), ta, tb, m, n, k, alpha, o.A, o.type, lda, o.B, o.type, ldb, beta,
                      C, CUDA_R_32F, ldc, o.compute, CUBLAS_GEMM_DEFAULT);
}

cublasStatus_t cu_sgemm_batched(const a3_backend *be, cublasOperation_t ta, cublasOperation_t tb,
                                int m, int n, int k, const float *alpha, const float *A, int lda,
                                long long stride_a, const float *B, int ldb, long long stride_b,
                                const float *beta, float *C, int ldc, long long stride_c,
                                int batch) {
  gemm_operands o;
  if (!gemm_operands_for(be, ta, tb, m, n, k, A, lda, stride_a, B, ldb, stride_b, batch, &o))
    return CUBLAS_STATUS_ALLOC_FAILED;
  return cublasGemmStridedBatchedEx(cu_blas(be), ta, tb, m, n, k, alpha, o.A, o.type, lda, stride_a,
                                    o.B, o.type, ldb, stride_b, beta, C, CUDA_R_32F, ldc, stride_c,
                                    batch, o.compute, CUBLAS_GEMM_DEFAULT);
}
