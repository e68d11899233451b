// The CUDA emulator's cuBLAS (tests/cuda_emu/README.md): column-major GEMMs
// through OpenBLAS, after cuBLAS's argument checks; the operands are first
// rounded as the compute type would (tf32: 10-bit mantissas; bf16 inputs:
// widened). A bf16 C is widened (when beta is not 0), the product added in
// fp32, and the sum rounded to nearest even, as cuBLAS's epilogue does.
// With beta = 0, C is not read, as cuBLAS promises. A product is checked
// when called and runs on the handle's stream (emu_streams.cpp).
#include "cublas_v2.h"

#include "cuda_bf16.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

struct emu_blas {
  cudaStream_t stream;
  cublasMath_t math;
};

cublasStatus_t cublasCreate(cublasHandle_t *h) {
  *h = (cublasHandle_t)calloc(1, sizeof(emu_blas));
  return *h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}
cublasStatus_t cublasDestroy(cublasHandle_t h) {
  free(h);
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->stream = s;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetMathMode(cublasHandle_t h, cublasMath_t mode) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  h->math = mode;
  return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetPointerMode(cublasHandle_t h, cublasPointerMode_t mode) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  return mode == CUBLAS_POINTER_MODE_HOST ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_SUPPORTED;
}

const char *cublasGetStatusName(cublasStatus_t s) {
  switch (s) {
  case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
  case CUBLAS_STATUS_NOT_INITIALIZED: return "CUBLAS_STATUS_NOT_INITIALIZED";
  case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
  case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
  case CUBLAS_STATUS_ARCH_MISMATCH: return "CUBLAS_STATUS_ARCH_MISMATCH";
  case CUBLAS_STATUS_EXECUTION_FAILED: return "CUBLAS_STATUS_EXECUTION_FAILED";
  case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
  }
  return "CUBLAS_STATUS_UNKNOWN";
}
const char *cublasGetStatusString(cublasStatus_t s) { return cublasGetStatusName(s); }

namespace {

// One operand: `batch` column-major matrices of rows x cols, ld apart,
// stride elements between matrices.
struct operand {
  const void *p;
  cudaDataType_t type;
  int rows, cols, ld;
  long long stride;
};

size_t span(const operand &o, int batch) {
  if (o.rows <= 0 || o.cols <= 0 || batch <= 0) return 0;
  return (size_t)(batch - 1) * (size_t)o.stride + (size_t)(o.cols - 1) * (size_t)o.ld +
         (size_t)o.rows;
}

// The operand as fp32 values the product may use directly: itself, or a
// rounded or widened copy in `keep`.
const float *as_fp32(const operand &o, int batch, cublasComputeType_t compute,
                     std::vector<float> &keep) {
  const size_t n = span(o, batch);
  const bool tf32 = compute == CUBLAS_COMPUTE_32F_FAST_TF32,
             bf16 = compute == CUBLAS_COMPUTE_32F_FAST_16BF;
  if (o.type == CUDA_R_32F && !tf32 && !bf16) return (const float *)o.p;
  keep.resize(n ? n : 1);
  for (size_t i = 0; i < n; i++) {
    float v = o.type == CUDA_R_16BF ? __bfloat162float(((const __nv_bfloat16 *)o.p)[i])
                                    : ((const float *)o.p)[i];
    if (tf32) v = emu_round_tf32(v);
    if (bf16) v = __bfloat162float(__float2bfloat16_rn(v));
    keep[i] = v;
  }
  return keep.data();
}

// cublasGemmEx's table, of the types this header has: bf16 A and B with a
// bf16 or fp32 C in CUBLAS_COMPUTE_32F; fp32 A, B and C in 32F or its fast
// modes. Anything else (mixed A and B, bf16 C from fp32 operands, a fast
// mode on bf16) is CUBLAS_STATUS_NOT_SUPPORTED there.
bool types_supported(cudaDataType_t a, cudaDataType_t b, cudaDataType_t c,
                     cublasComputeType_t compute) {
  if (a != b) return false;
  if (a == CUDA_R_16BF)
    return (c == CUDA_R_16BF || c == CUDA_R_32F) && compute == CUBLAS_COMPUTE_32F;
  return a == CUDA_R_32F && c == CUDA_R_32F &&
         (compute == CUBLAS_COMPUTE_32F || compute == CUBLAS_COMPUTE_32F_FAST_TF32 ||
          compute == CUBLAS_COMPUTE_32F_FAST_16BF);
}

// One m x n matrix of C (column-major, ld apart) as fp32 for the product:
// itself, or for bf16 a dense copy (ld m) in `keep`, widened when beta reads
// it and zero otherwise.
float *c_as_fp32(void *c, cudaDataType_t type, int m, int n, int ldc, float beta,
                 std::vector<float> &keep) {
  if (type == CUDA_R_32F) return (float *)c;
  keep.assign((size_t)m * n, 0.0f);
  if (beta != 0.0f)
    for (int j = 0; j < n; j++)
      for (int i = 0; i < m; i++)
        keep[(size_t)j * m + i] = __bfloat162float(((const __nv_bfloat16 *)c)[(size_t)j * ldc + i]);
  return keep.data();
}

// A bf16 C (ld apart) = its fp32 result in `keep` (ld m), rounded.
void store_bf16(void *c, int m, int n, int ldc, const std::vector<float> &keep) {
  for (int j = 0; j < n; j++)
    for (int i = 0; i < m; i++)
      ((__nv_bfloat16 *)c)[(size_t)j * ldc + i] = __float2bfloat16_rn(keep[(size_t)j * m + i]);
}

size_t type_size(cudaDataType_t t) { return t == CUDA_R_16BF ? 2 : 4; }

int max1(int v) { return v > 1 ? v : 1; }

cublasStatus_t gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                    int k, float alpha, operand A, operand B, float beta, void *C, int ldc,
                    long long stride_c, int batch, cudaDataType_t c_type,
                    cublasComputeType_t compute) {
  if (!h) return CUBLAS_STATUS_NOT_INITIALIZED;
  if (ta == CUBLAS_OP_C || tb == CUBLAS_OP_C) return CUBLAS_STATUS_NOT_SUPPORTED;
  if (!types_supported(A.type, B.type, c_type, compute)) return CUBLAS_STATUS_NOT_SUPPORTED;
  A.rows = ta == CUBLAS_OP_N ? m : k, A.cols = ta == CUBLAS_OP_N ? k : m;
  B.rows = tb == CUBLAS_OP_N ? k : n, B.cols = tb == CUBLAS_OP_N ? n : k;
  if (m < 0 || n < 0 || k < 0 || batch < 0 || A.ld < max1(A.rows) || B.ld < max1(B.rows) ||
      ldc < max1(m))
    return CUBLAS_STATUS_INVALID_VALUE;
  if (!emu_is_device_pointer(A.p) || !emu_is_device_pointer(B.p) || !emu_is_device_pointer(C)) {
    fprintf(stderr, "cuda emulator: a GEMM's A, B or C (%p, %p, %p) is not device memory\n", A.p,
            B.p, C);
    return CUBLAS_STATUS_EXECUTION_FAILED;
  }
  if (m == 0 || n == 0 || batch == 0) return CUBLAS_STATUS_SUCCESS;
  emu_enqueue(h->stream, [=] {
    std::vector<float> keep_a, keep_b, keep_c;
    const float *a = as_fp32(A, batch, compute, keep_a), *b = as_fp32(B, batch, compute, keep_b);
    const bool bf16_c = c_type == CUDA_R_16BF;
    const int ld = bf16_c ? m : ldc;
    for (int i = 0; i < batch; i++) {
      void *ci = (char *)C + (size_t)i * (size_t)stride_c * type_size(c_type);
      float *c = c_as_fp32(ci, c_type, m, n, ldc, beta, keep_c);
      if (beta == 0.0f)
        for (int j = 0; j < n; j++) memset(c + (size_t)j * ld, 0, sizeof(float) * (size_t)m);
      cblas_sgemm(CblasColMajor, ta == CUBLAS_OP_N ? CblasNoTrans : CblasTrans,
                  tb == CUBLAS_OP_N ? CblasNoTrans : CblasTrans, m, n, k, alpha,
                  a + (size_t)i * (size_t)A.stride, A.ld, b + (size_t)i * (size_t)B.stride, B.ld,
                  beta, c, ld);
      if (bf16_c) store_bf16(ci, m, n, ldc, keep_c);
    }
  });
  return CUBLAS_STATUS_SUCCESS;
}

} // namespace

cublasStatus_t cublasSgemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                           int n, int k, const float *alpha, const float *A, int lda,
                           const float *B, int ldb, const float *beta, float *C, int ldc) {
  const cublasComputeType_t compute = h && h->math == CUBLAS_TF32_TENSOR_OP_MATH
                                          ? CUBLAS_COMPUTE_32F_FAST_TF32
                                          : CUBLAS_COMPUTE_32F;
  return gemm(h, ta, tb, m, n, k, *alpha, operand{A, CUDA_R_32F, 0, 0, lda, 0},
              operand{B, CUDA_R_32F, 0, 0, ldb, 0}, *beta, C, ldc, 0, 1, CUDA_R_32F, compute);
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t h, cublasOperation_t ta,
                                         cublasOperation_t tb, int m, int n, int k,
                                         const float *alpha, const float *A, int lda,
                                         long long stride_a, const float *B, int ldb,
                                         long long stride_b, const float *beta, float *C, int ldc,
                                         long long stride_c, int batch) {
  const cublasComputeType_t compute = h && h->math == CUBLAS_TF32_TENSOR_OP_MATH
                                          ? CUBLAS_COMPUTE_32F_FAST_TF32
                                          : CUBLAS_COMPUTE_32F;
  return gemm(h, ta, tb, m, n, k, *alpha, operand{A, CUDA_R_32F, 0, 0, lda, stride_a},
              operand{B, CUDA_R_32F, 0, 0, ldb, stride_b}, *beta, C, ldc, stride_c, batch,
              CUDA_R_32F, compute);
}

cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m,
                            int n, int k, const void *alpha, const void *A, cudaDataType_t a_type,
                            int lda, const void *B, cudaDataType_t b_type, int ldb,
                            const void *beta, void *C, cudaDataType_t c_type, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t) {
  return gemm(h, ta, tb, m, n, k, *(const float *)alpha, operand{A, a_type, 0, 0, lda, 0},
              operand{B, b_type, 0, 0, ldb, 0}, *(const float *)beta, C, ldc, 0, 1, c_type,
              compute);
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t h, cublasOperation_t ta,
                                          cublasOperation_t tb, int m, int n, int k,
                                          const void *alpha, const void *A, cudaDataType_t a_type,
                                          int lda, long long stride_a, const void *B,
                                          cudaDataType_t b_type, int ldb, long long stride_b,
                                          const void *beta, void *C, cudaDataType_t c_type, int ldc,
                                          long long stride_c, int batch,
                                          cublasComputeType_t compute, cublasGemmAlgo_t) {
  return gemm(h, ta, tb, m, n, k, *(const float *)alpha, operand{A, a_type, 0, 0, lda, stride_a},
              operand{B, b_type, 0, 0, ldb, stride_b}, *(const float *)beta, C, ldc, stride_c,
              batch, c_type, compute);
}
