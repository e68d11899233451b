// The backend's matrix products: every GEMM of the CUDA ops goes through
// these two, so train.precision is one choice of cuBLAS compute type here.
// Storage stays fp32 in every mode (operands, results and accumulators);
// tf32 and bf16 round the operands inside the tensor cores:
//   fp32: CUBLAS_COMPUTE_32F (with the default math mode: no TF32),
//   tf32: CUBLAS_COMPUTE_32F_FAST_TF32 (10-bit mantissa operands),
//   bf16: CUBLAS_COMPUTE_32F_FAST_16BF (8-bit mantissa operands, in principle:
//         on an H100 with CUDA 13 cuBLAS ran it like tf32, with tf32's errors
//         and speed; true bf16 needs the operands stored as bf16).
#include "cuda_internal.h"

cublasComputeType_t cu_compute_type(a3_precision p) {
  switch (p) {
  case A3_PRECISION_TF32: return CUBLAS_COMPUTE_32F_FAST_TF32;
  case A3_PRECISION_BF16: return CUBLAS_COMPUTE_32F_FAST_16BF;
  default: return CUBLAS_COMPUTE_32F;
  }
}

cublasStatus_t cu_sgemm(const a3_backend *be, cublasOperation_t ta, cublasOperation_t tb, int m,
                        int n, int k, const float *alpha, const float *A, int lda, const float *B,
                        int ldb, const float *beta, float *C, int ldc) {
  return cublasGemmEx(cu_blas(be), ta, tb, m, n, k, alpha, A, CUDA_R_32F, lda, B, CUDA_R_32F, ldb,
                      beta, C, CUDA_R_32F, ldc, cu_state(be)->compute, CUBLAS_GEMM_DEFAULT);
}

cublasStatus_t cu_sgemm_batched(const a3_backend *be, cublasOperation_t ta, cublasOperation_t tb,
                                int m, int n, int k, const float *alpha, const float *A, int lda,
                                long long stride_a, const float *B, int ldb, long long stride_b,
                                const float *beta, float *C, int ldc, long long stride_c,
                                int batch) {
  return cublasGemmStridedBatchedEx(cu_blas(be), ta, tb, m, n, k, alpha, A, CUDA_R_32F, lda,
                                    stride_a, B, CUDA_R_32F, ldb, stride_b, beta, C, CUDA_R_32F,
                                    ldc, stride_c, batch, cu_state(be)->compute,
                                    CUBLAS_GEMM_DEFAULT);
}
