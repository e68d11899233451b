// Scaled-dot-product attention on CUDA, one batch image at a time, all of
// its NH heads in one cublasSgemmStridedBatched per product.
//
// Head h of q, k, v, out (B, T, C) is the column block [h*d, (h+1)*d) of the
// image's (T, C) matrix: cuBLAS reads it in place with leading dimension C,
// and consecutive heads are d floats apart (the batch stride), so heads are
// never copied out or merged back. (Images are T*C apart, heads d: no single
// stride covers both, hence the loop over images.)
//   forward:  S = Q K^T / sqrt(d) (T, T); P = softmax(S) by rows; O = P V
//   backward: dP = dO V^T; dV = P^T dO; dS = P * (dP - rowsum(dP * P));
//             dQ = dS K / sqrt(d); dK = dS^T Q / sqrt(d)
// Row-major (T, T) blocks are column-major transposes to cuBLAS, so each
// row-major product X = A B is asked for as X^T = B^T A^T (see cuda_linear.cu).
// Softmax rows: one warp per row, max subtracted, the sum in double.
//
// Workspace: the image's NH (T, T) blocks: S when probs is NULL (forward),
// dP / dS in the backward.
#include "cuda_internal.h"

#include <math.h>

enum { ROWS_PER_BLOCK = 8 }; // warps per block of the row kernels

size_t cuda_attention_workspace_size(const a3_backend *be, int B, int T, int C, int NH) {
  (void)be, (void)B, (void)C;
  return (size_t)NH * T * T * sizeof(float);
}

// Each of the rows of s (rows, T) becomes its softmax.
__global__ static void softmax_rows_kernel(float *s, size_t rows, int T) {
  const int lane = threadIdx.x & 31;
  const size_t warps = (size_t)gridDim.x * ROWS_PER_BLOCK;
  for (size_t row = (size_t)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5); row < rows;
       row += warps) {
    float *r = s + row * T;
    float mx = -INFINITY;
    for (int j = lane; j < T; j += 32) mx = fmaxf(mx, r[j]);
    mx = cu_warp_max(mx);
    double sum = 0.0;
    for (int j = lane; j < T; j += 32) {
      const float e = expf(r[j] - mx);
      r[j] = e;
      sum += e;
    }
    const float inv = (float)(1.0 / cu_warp_sum(sum));
    for (int j = lane; j < T; j += 32) r[j] *= inv;
  }
}

// dP (rows, T) becomes dS = P * (dP - rowsum(dP * P)).
__global__ static void softmax_bwd_rows_kernel(float *dp, const float *p, size_t rows, int T) {
  const int lane = threadIdx.x & 31;
  const size_t warps = (size_t)gridDim.x * ROWS_PER_BLOCK;
  for (size_t row = (size_t)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5); row < rows;
       row += warps) {
    float *dr = dp + row * T;
    const float *pr = p + row * T;
    double dot = 0.0;
    for (int j = lane; j < T; j += 32) dot += (double)dr[j] * pr[j];
    const float fdot = (float)cu_warp_sum(dot);
    for (int j = lane; j < T; j += 32) dr[j] = pr[j] * (dr[j] - fdot);
  }
}

static unsigned row_blocks(size_t rows) {
  const size_t b = (rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
  return (unsigned)(b < CU_MAX_BLOCKS ? b : CU_MAX_BLOCKS);
}

// One image's products; q, k, v, o point at the image's (T, C) matrices,
// s at its NH (T, T) blocks. NH batches, head stride d.
typedef struct {
  int T, C, d, NH;
} attn_dims;

// S_h (T, T) = alpha Q_h K_h^T: S^T = K Q^T to cuBLAS.
static int gemm_qkt(const a3_backend *be, const attn_dims *a, float alpha, const float *q,
                    const float *k, float *s) {
  const float zero = 0.0f;
  return CU_BLAS(be, cu_sgemm_batched(be, CUBLAS_OP_T, CUBLAS_OP_N, a->T, a->T, a->d, &alpha, k,
                                      a->C, a->d, q, a->C, a->d, &zero, s, a->T,
                                      (long long)a->T * a->T, a->NH));
}

// O_h (T, d) = alpha P_h (T, T) V_h (T, d): O^T = V^T P^T, P^T being P's buffer as is.
static int gemm_pv(const a3_backend *be, const attn_dims *a, float alpha, const float *p,
                   const float *v, float *o) {
  const float zero = 0.0f;
  return CU_BLAS(be, cu_sgemm_batched(be, CUBLAS_OP_N, CUBLAS_OP_N, a->d, a->T, a->T, &alpha, v,
                                      a->C, a->d, p, a->T, (long long)a->T * a->T, &zero, o, a->C,
                                      a->d, a->NH));
}

// X_h (T, d) = alpha P_h^T (T, T) Y_h (T, d): X^T = Y^T P, P from its buffer transposed.
static int gemm_ptv(const a3_backend *be, const attn_dims *a, float alpha, const float *p,
                    const float *y, float *x) {
  const float zero = 0.0f;
  return CU_BLAS(be, cu_sgemm_batched(be, CUBLAS_OP_N, CUBLAS_OP_T, a->d, a->T, a->T, &alpha, y,
                                      a->C, a->d, p, a->T, (long long)a->T * a->T, &zero, x, a->C,
                                      a->d, a->NH));
}

void cuda_attention_forward(const a3_backend *be,
                            float *out,     // (B, T, C)
                            float *probs,   // (B, NH, T, T) or NULL
                            const float *q, // (B, T, C)
                            const float *k, // (B, T, C)
                            const float *v, // (B, T, C)
                            int B, int T, int C, int NH, void *workspace) {
  const attn_dims a = {T, C, C / NH, NH};
  const float scale = 1.0f / sqrtf((float)a.d);
  const size_t img = (size_t)T * C, block = (size_t)NH * T * T, rows = (size_t)NH * T;
  for (int b = 0; b < B; b++) {
    float *p = probs ? probs + b * block : (float *)workspace;
    if (!gemm_qkt(be, &a, scale, q + b * img, k + b * img, p)) return;
    softmax_rows_kernel<<<row_blocks(rows), ROWS_PER_BLOCK * 32, 0, cu_stream(be)>>>(p, rows, T);
    if (!CU_LAUNCHED(be)) return;
    if (!gemm_pv(be, &a, 1.0f, p, v + b * img, out + b * img)) return;
  }
}

void cuda_attention_backward(const a3_backend *be,
                             float *dq,          // (B, T, C) overwritten, or NULL
                             float *dk,          // (B, T, C) overwritten, or NULL
                             float *dv,          // (B, T, C) overwritten, or NULL
                             const float *dout,  // (B, T, C)
                             const float *q,     // (B, T, C)
                             const float *k,     // (B, T, C)
                             const float *v,     // (B, T, C)
                             const float *probs, // (B, NH, T, T)
                             int B, int T, int C, int NH, void *workspace) {
  const attn_dims a = {T, C, C / NH, NH};
  const float scale = 1.0f / sqrtf((float)a.d);
  const size_t img = (size_t)T * C, block = (size_t)NH * T * T, rows = (size_t)NH * T;
  float *ds = (float *)workspace;
  for (int b = 0; b < B; b++) {
    const float *p = probs + b * block;
    const size_t o = b * img;
    if (dv && !gemm_ptv(be, &a, 1.0f, p, dout + o, dv + o)) return; // dV = P^T dO
    if (!dq && !dk) continue;
    if (!gemm_qkt(be, &a, 1.0f, dout + o, v + o, ds)) return; // dP = dO V^T
    softmax_bwd_rows_kernel<<<row_blocks(rows), ROWS_PER_BLOCK * 32, 0, cu_stream(be)>>>(ds, p,
                                                                                         rows, T);
    if (!CU_LAUNCHED(be)) return;
    if (dq && !gemm_pv(be, &a, scale, ds, k + o, dq + o)) return;  // dQ = dS K
    if (dk && !gemm_ptv(be, &a, scale, ds, q + o, dk + o)) return; // dK = dS^T Q
  }
}
