// Scaled-dot-product attention on CUDA: each product is one
// cublasGemmStridedBatched over many (image, head) pairs at once, and the
// row softmax one launch over a whole chunk of images.
//
// Head h of image b of q, k, v, out (B, T, C) is the column block
// [h*d, (h+1)*d) of the image's (T, C) matrix: cuBLAS reads it in place with
// leading dimension C, so heads are never copied out or merged back. One
// stride cannot step over both images (T*C apart) and heads (d apart), so a
// product loops over one of the two and batches the other: over the heads,
// batching the images, when there are fewer heads than images (the usual
// case: a U-Net's attention has one or a few heads and a batch of dozens),
// else over the images, batching the heads. Batching the images turned
// 128 launches of a 256x256x256 product per op into one.
//   forward:  S = Q K^T / sqrt(d) (T, T); P = softmax(S) by rows; O = P V
//   backward: dP = dO V^T; dV = P^T dO; dS = P * (dP - rowsum(dP * P));
//             dQ = dS K / sqrt(d); dK = dS^T Q / sqrt(d)
// Row-major (T, T) blocks are column-major transposes to cuBLAS, so each
// row-major product X = A B is asked for as X^T = B^T A^T (see cuda_linear.cu).
// Softmax rows: one warp per row, max subtracted, the sum in double.
//
// Workspace: the (nb, NH, T, T) blocks of a chunk of nb images (S when
// probs is NULL in the forward, dP / dS in the backward); the chunk keeps
// it under ATTN_WS_MAX bytes and holds at least one image.
#include "cuda_internal.h"

#include <math.h>

enum { ROWS_PER_BLOCK = 8 }; // warps per block of the row kernels

#define ATTN_WS_MAX ((size_t)256 << 20)

// Images per chunk: all of them when their score blocks fit ATTN_WS_MAX.
static int chunk_images(int B, int T, int NH) {
  const size_t per_image = (size_t)NH * T * T * sizeof(float);
  size_t nb = per_image ? ATTN_WS_MAX / per_image : (size_t)B;
  if (nb < 1) nb = 1;
  return nb > (size_t)B ? B : (int)nb;
}

size_t cuda_attention_workspace_size(const a3_backend *be, int B, int T, int C, int NH) {
  (void)be, (void)C;
  return (size_t)chunk_images(B, T, NH) * NH * T * T * sizeof(float);
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

// The products of a chunk of nb images, as `outer` calls of a batch of
// `inner` (image, head) pairs each. x_* are offsets and strides in the
// (nb, T, C) matrices q, k, v, o; s_* in the (nb, NH, T, T) score blocks.
typedef struct {
  int T, C, d, NH;
  int outer, inner;
  long long x_outer, x_inner, s_outer, s_inner;
} attn_plan;

static attn_plan plan_chunk(int nb, int T, int C, int NH) {
  attn_plan a = {T, C, C / NH, NH, 0, 0, 0, 0, 0, 0};
  const long long img = (long long)T * C, blk = (long long)T * T;
  if (NH <= nb) { // loop over heads, batch the images
    a.outer = NH, a.inner = nb;
    a.x_outer = a.d, a.x_inner = img, a.s_outer = blk, a.s_inner = blk * NH;
  } else { // loop over images, batch the heads
    a.outer = nb, a.inner = NH;
    a.x_outer = img, a.x_inner = a.d, a.s_outer = blk * NH, a.s_inner = blk;
  }
  return a;
}

// S_h (T, T) = alpha Q_h K_h^T: S^T = K Q^T to cuBLAS.
static int gemm_qkt(const a3_backend *be, const attn_plan *a, float alpha, const float *q,
                    const float *k, float *s) {
  const float zero = 0.0f;
  for (int o = 0; o < a->outer; o++) {
    const long long x = o * a->x_outer;
    if (!CU_BLAS(be, cu_sgemm_batched(be, CUBLAS_OP_T, CUBLAS_OP_N, a->T, a->T, a->d, &alpha, k + x,
                                      a->C, a->x_inner, q + x, a->C, a->x_inner, &zero,
                                      s + o * a->s_outer, a->T, a->s_inner, a->inner)))
      return 0;
  }
  return 1;
}

// X_h (T, d) = alpha op(P_h) (T, T) Y_h (T, d), op(P) = P or P^T:
// X^T = Y^T op(P)^T, P's buffer being P^T to cuBLAS (so op N gives P, T gives P^T).
static int gemm_p(const a3_backend *be, const attn_plan *a, float alpha, const float *p,
                  cublasOperation_t op_p, const float *y, float *x_out) {
  const float zero = 0.0f;
  for (int o = 0; o < a->outer; o++) {
    const long long x = o * a->x_outer;
    if (!CU_BLAS(be, cu_sgemm_batched(be, CUBLAS_OP_N, op_p, a->d, a->T, a->T, &alpha, y + x, a->C,
                                      a->x_inner, p + o * a->s_outer, a->T, a->s_inner, &zero,
                                      x_out + x, a->C, a->x_inner, a->inner)))
      return 0;
  }
  return 1;
}

void cuda_attention_forward(const a3_backend *be,
                            float *out,     // (B, T, C)
                            float *probs,   // (B, NH, T, T) or NULL
                            const float *q, // (B, T, C)
                            const float *k, // (B, T, C)
                            const float *v, // (B, T, C)
                            int B, int T, int C, int NH, void *workspace) {
  const float scale = 1.0f / sqrtf((float)(C / NH));
  const int chunk = chunk_images(B, T, NH);
  const size_t img = (size_t)T * C, block = (size_t)NH * T * T;
  for (int b0 = 0; b0 < B; b0 += chunk) {
    const int nb = B - b0 < chunk ? B - b0 : chunk;
    const attn_plan a = plan_chunk(nb, T, C, NH);
    const size_t o = b0 * img, rows = (size_t)nb * NH * T;
    float *p = probs ? probs + b0 * block : (float *)workspace; // (nb, NH, T, T)
    if (!gemm_qkt(be, &a, scale, q + o, k + o, p)) return;
    softmax_rows_kernel<<<row_blocks(rows), ROWS_PER_BLOCK * 32, 0, cu_stream(be)>>>(p, rows, T);
    if (!CU_LAUNCHED(be)) return;
    if (!gemm_p(be, &a, 1.0f, p, CUBLAS_OP_N, v + o, out + o)) return;
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
  const float scale = 1.0f / sqrtf((float)(C / NH));
  const int chunk = chunk_images(B, T, NH);
  const size_t img = (size_t)T * C, block = (size_t)NH * T * T;
  float *ds = (float *)workspace; // (nb, NH, T, T)
  for (int b0 = 0; b0 < B; b0 += chunk) {
    const int nb = B - b0 < chunk ? B - b0 : chunk;
    const attn_plan a = plan_chunk(nb, T, C, NH);
    const size_t o = b0 * img, rows = (size_t)nb * NH * T;
    const float *p = probs + b0 * block;
    if (dv && !gemm_p(be, &a, 1.0f, p, CUBLAS_OP_T, dout + o, dv + o)) return; // dV = P^T dO
    if (!dq && !dk) continue;
    if (!gemm_qkt(be, &a, 1.0f, dout + o, v + o, ds)) return; // dP = dO V^T
    softmax_bwd_rows_kernel<<<row_blocks(rows), ROWS_PER_BLOCK * 32, 0, cu_stream(be)>>>(ds, p,
                                                                                         rows, T);
    if (!CU_LAUNCHED(be)) return;
    if (dq && !gemm_p(be, &a, scale, ds, CUBLAS_OP_N, k + o, dq + o)) return; // dQ = dS K
    if (dk && !gemm_p(be, &a, scale, ds, CUBLAS_OP_T, q + o, dk + o)) return; // dK = dS^T Q
  }
}
