// The backend's matrix products: every GEMM of the CUDA ops goes through
// these two, so train.precision is decided here. Accumulation is fp32 in
// every mode:
//   fp32: fp32 operands and results, CUBLAS_COMPUTE_32F (default math mode:
//         no TF32);
//   tf32: the same with CUBLAS_COMPUTE_32F_FAST_TF32 (the tensor cores
//         round the operands to 10-bit mantissas);
//   bf16: bf16 operands on the bf16 tensor cores (CUBLAS_COMPUTE_32F on
//         CUDA_R_16BF inputs), as torch's autocast runs its matmuls.
//         Activations are bf16 already; an fp32 operand (a weight, attention
//         probabilities) is first rounded (to nearest even) into a bf16 copy
//         in the backend's scratch. A result is stored in its own type: an
//         activation in bf16 (CUDA_R_16BF C, which cuBLAS also reads in bf16
//         when beta is 1), a parameter gradient in fp32. Asking cuBLAS for
//         CUBLAS_COMPUTE_32F_FAST_16BF on fp32 operands instead measured like
//         tf32 on an H100 (tf32's errors and 410 TFLOP/s at 4096^3, where
//         bf16 operands reach ~770).
// A weight's copy costs a read of 4 and a write of 2 bytes per element,
// which the 2x faster bf16 products repay on the large matrices.
#include "cuda_internal.h"

cublasComputeType_t cu_compute_type(a3_precision p) {
  switch (p) {
  case A3_PRECISION_TF32: return CUBLAS_COMPUTE_32F_FAST_TF32;
  case A3_PRECISION_BF16: return CUBLAS_COMPUTE_32F_FAST_16BF; // marks bf16: see gemm_call_for
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
// each `cols` columns of `rows` elements, `ld` apart. Its copy keeps the
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

static int is_bf16(const a3_backend *be, cu_mat_type t) {
  return t == CU_MAT_BF16 || (t == CU_MAT_ACT && cu_act_bf16(be));
}

// What cuBLAS gets of a product: its operands (A and B themselves, or an
// fp32 one's bf16 copy), their types and C's, and the compute type.
typedef struct {
  const void *A, *B;
  cudaDataType_t a_type, b_type, c_type;
  cublasComputeType_t compute;
} gemm_call;

// Operand x (rows x cols, `batch` matrices) as cuBLAS reads it, copied into
// scratch `slot` when it must be; *p NULL after a recorded failure.
static void operand(const a3_backend *be, int slot, cu_mat x, int rows, int cols, int batch,
                    const void **p, cudaDataType_t *type) {
  *p = x.p;
  *type = is_bf16(be, x.type) ? CUDA_R_16BF : CUDA_R_32F;
  if (*type == CUDA_R_16BF || !cu_bf16_operands(be)) return;
  *p = as_bf16(be, slot, (const float *)x.p, operand_span(rows, cols, x.ld, x.stride, batch));
  *type = CUDA_R_16BF;
}

static int gemm_call_for(const a3_backend *be, cublasOperation_t ta, cublasOperation_t tb, int m,
                         int n, int k, cu_mat A, cu_mat B, cu_mat_out C, int batch, gemm_call *g) {
  const int a_rows = ta == CUBLAS_OP_N ? m : k, a_cols = ta == CUBLAS_OP_N ? k : m;
  const int b_rows = tb == CUBLAS_OP_N ? k : n, b_cols = tb == CUBLAS_OP_N ? n : k;
  operand(be, 0, A, a_rows, a_cols, batch, &g->A, &g->a_type);
  operand(be, 1, B, b_rows, b_cols, batch, &g->B, &g->b_type);
  g->c_type = is_bf16(be, C.type) ? CUDA_R_16BF : CUDA_R_32F;
  // bf16 operands need the plain fp32 compute type (the state's marks bf16).
  g->compute = cu_bf16_operands(be) ? CUBLAS_COMPUTE_32F : cu_state(be)->compute;
  return g->A && g->B;
}

cublasStatus_t cu_gemm(const a3_backend *be, cublasOperation_t ta, cublasOperation_t tb, int m,
                       int n, int k, float alpha, cu_mat A, cu_mat B, float beta, cu_mat_out C) {
  gemm_call g;
  if (!gemm_call_for(be, ta, tb, m, n, k, A, B, C, 1, &g))
    return CUBLAS_STATUS_ALLOC_FAILED; // the cause is recorded already
  return cublasGemmEx(cu_blas(be), ta, tb, m, n, k, &alpha, g.A, g.a_type, A.ld, g.B, g.b_type,
                      B.ld, &beta, C.p, g.c_type, C.ld, g.compute, CUBLAS_GEMM_DEFAULT);
}

cublasStatus_t cu_gemm_batched(const a3_backend *be, cublasOperation_t ta, cublasOperation_t tb,
                               int m, int n, int k, float alpha, cu_mat A, cu_mat B, float beta,
                               cu_mat_out C, int batch) {
  gemm_call g;
  if (!gemm_call_for(be, ta, tb, m, n, k, A, B, C, batch, &g)) return CUBLAS_STATUS_ALLOC_FAILED;
  return cublasGemmStridedBatchedEx(cu_blas(be), ta, tb, m, n, k, &alpha, g.A, g.a_type, A.ld,
                                    A.stride, g.B, g.b_type, B.ld, B.stride, &beta, C.p, g.c_type,
                                    C.ld, C.stride, batch, g.compute, CUBLAS_GEMM_DEFAULT);
}
