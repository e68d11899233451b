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
// probs is NULL in the forward, dP / dS in the backward), in fp32; with bf16
// activations a bf16 copy of the chunk's P or dS follows, rounded for the
// products that multiply it by an activation (as the GEMMs round weights).
// The chunk keeps the workspace under ATTN_WS_MAX bytes and holds at least
// one image.
#include "cuda_internal.h"

#include <math.h>

enum { ROWS_PER_BLOCK = 8 }; // warps per block of the row kernels

#define ATTN_WS_MAX ((size_t)256 << 20)

// Bytes of an image's blocks: fp32, and bf16 copies with bf16 activations.
static size_t image_bytes(const a3_backend *be, int T, int NH) {
  const size_t per = sizeof(float) + (cu_act_bf16(be) ? sizeof(__nv_bfloat16) : 0);
  return (size_t)NH * T * T * per;
}

// Images per chunk: all of them when their blocks fit ATTN_WS_MAX.
static int chunk_images(const a3_backend *be, int B, int T, int NH) {
  const size_t per_image = image_bytes(be, T, NH);
  size_t nb = per_image ? ATTN_WS_MAX / per_image : (size_t)B;
  if (nb < 1) nb = 1;
  return nb > (size_t)B ? B : (int)nb;
}

// The fp32 blocks' bytes, rounded so that the bf16 copy after them stays
// 256-byte aligned (exact without a copy).
static size_t fp32_part(const a3_backend *be, int nb, int T, int NH) {
  const size_t bytes = (size_t)nb * NH * T * T * sizeof(float);
  return cu_act_bf16(be) ? (bytes + 255) / 256 * 256 : bytes;
}

size_t cuda_attention_workspace_size(const a3_backend *be, int B, int T, int C, int NH) {
  (void)C;
  const int nb = chunk_images(be, B, T, NH);
  const size_t copy = cu_act_bf16(be) ? (size_t)nb * NH * T * T * sizeof(__nv_bfloat16) : 0;
  return fp32_part(be, nb, T, NH) + copy;
}

// The workspace's bf16 copy, after its fp32 part, where activations (Act)
// are bf16; NULL for fp32.
template <typename Act> static Act *copy_part(void *, size_t) { return NULL; }
template <> __nv_bfloat16 *copy_part<__nv_bfloat16>(void *workspace, size_t fp32_bytes) {
  return (__nv_bfloat16 *)((char *)workspace + fp32_bytes);
}

// An fp32 block (P or dS) as the products read it: itself, or its bf16 copy.
static const float *block_operand(const float *p, const float *) { return p; }
static const __nv_bfloat16 *block_operand(const float *, const __nv_bfloat16 *copy) { return copy; }

// Each of the rows of s (rows, T) becomes its softmax; copy (rows, T), when
// not NULL, gets it rounded to bf16.
template <typename Act>
__global__ static void softmax_rows_kernel(float *s, Act *copy, size_t rows, int T) {
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
    for (int j = lane; j < T; j += 32) {
      r[j] *= inv;
      if (copy) cu_st(copy + row * T + j, r[j]);
    }
  }
}

// dP (rows, T) becomes dS = P * (dP - rowsum(dP * P)): in place, or, when
// copy is not NULL, rounded into copy (rows, T) alone.
template <typename Act>
__global__ static void softmax_bwd_rows_kernel(float *dp, Act *copy, const float *p, size_t rows,
                                               int T) {
  const int lane = threadIdx.x & 31;
  const size_t warps = (size_t)gridDim.x * ROWS_PER_BLOCK;
  for (size_t row = (size_t)blockIdx.x * ROWS_PER_BLOCK + (threadIdx.x >> 5); row < rows;
       row += warps) {
    float *dr = dp + row * T;
    const float *pr = p + row * T;
    double dot = 0.0;
    for (int j = lane; j < T; j += 32) dot += (double)dr[j] * pr[j];
    const float fdot = (float)cu_warp_sum(dot);
    for (int j = lane; j < T; j += 32) {
      const float ds = pr[j] * (dr[j] - fdot);
      if (copy)
        cu_st(copy + row * T + j, ds);
      else
        dr[j] = ds;
    }
  }
}

static unsigned row_blocks(size_t rows) {
  const size_t b = (rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
  return (unsigned)(b < CU_MAX_BLOCKS ? b : CU_MAX_BLOCKS);
}

// The products of a chunk of nb images, as `outer` calls of a batch of
// `inner` (image, head) pairs each. x_* are offsets and strides in the
// (nb, T, C) matrices q, k, v, o; s_* in the (nb, NH, T, T) score blocks
// (both in elements).
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

// S_h (T, T) = alpha Q_h K_h^T, in fp32: S^T = K Q^T to cuBLAS.
template <typename Act>
static int gemm_qkt(const a3_backend *be, const attn_plan *a, float alpha, const Act *q,
                    const Act *k, float *s) {
  for (int o = 0; o < a->outer; o++) {
    const long long x = o * a->x_outer;
    if (!CU_BLAS(be, cu_gemm_batched(be, CUBLAS_OP_T, CUBLAS_OP_N, a->T, a->T, a->d, alpha,
                                     cu_in(k + x, a->C, a->x_inner), cu_in(q + x, a->C, a->x_inner),
                                     0.0f, cu_out(s + o * a->s_outer, a->T, a->s_inner), a->inner)))
      return 0;
  }
  return 1;
}

// X_h (T, d) = alpha op(P_h) (T, T) Y_h (T, d), op(P) = P or P^T:
// X^T = Y^T op(P)^T, P's buffer being P^T to cuBLAS (so op N gives P, T gives P^T).
// P is fp32 with fp32 activations, else its bf16 copy.
template <typename Act>
static int gemm_p(const a3_backend *be, const attn_plan *a, float alpha, const Act *p,
                  cublasOperation_t op_p, const Act *y, Act *x_out) {
  for (int o = 0; o < a->outer; o++) {
    const long long x = o * a->x_outer;
    if (!CU_BLAS(be, cu_gemm_batched(be, CUBLAS_OP_N, op_p, a->d, a->T, a->T, alpha,
                                     cu_in(y + x, a->C, a->x_inner),
                                     cu_in(p + o * a->s_outer, a->T, a->s_inner), 0.0f,
                                     cu_out(x_out + x, a->C, a->x_inner), a->inner)))
      return 0;
  }
  return 1;
}

template <typename Act>
static void forward(const a3_backend *be,
                    Act *out,     // (B, T, C)
                    float *probs, // (B, NH, T, T) or NULL
                    const Act *q, // (B, T, C)
                    const Act *k, // (B, T, C)
                    const Act *v, // (B, T, C)
                    int B, int T, int C, int NH, void *workspace) {
  const float scale = 1.0f / sqrtf((float)(C / NH));
  const int chunk = chunk_images(be, B, T, NH);
  const size_t img = (size_t)T * C, block = (size_t)NH * T * T;
  Act *copy = copy_part<Act>(workspace, fp32_part(be, chunk, T, NH)); // (nb, NH, T, T)
  for (int b0 = 0; b0 < B; b0 += chunk) {
    const int nb = B - b0 < chunk ? B - b0 : chunk;
    const attn_plan a = plan_chunk(nb, T, C, NH);
    const size_t o = b0 * img, rows = (size_t)nb * NH * T;
    float *p = probs ? probs + b0 * block : (float *)workspace; // (nb, NH, T, T)
    if (!gemm_qkt(be, &a, scale, q + o, k + o, p)) return;
    const dim3 grid(row_blocks(rows)), threads(ROWS_PER_BLOCK * 32);
    softmax_rows_kernel<Act><<<grid, threads, 0, cu_stream(be)>>>(p, copy, rows, T);
    if (!CU_LAUNCHED(be)) return;
    if (!gemm_p(be, &a, 1.0f, block_operand(p, copy), CUBLAS_OP_N, v + o, out + o)) return;
  }
}

// P's chunk (n) as dV's product reads it: itself, or rounded into copy.
static const float *round_block(const a3_backend *, const float *p, float *, size_t) { return p; }
static const __nv_bfloat16 *round_block(const a3_backend *be, const float *p, __nv_bfloat16 *copy,
                                        size_t n) {
  return cu_round_bf16(be, copy, p, n) ? copy : NULL;
}

template <typename Act>
static void backward(const a3_backend *be,
                     Act *dq,            // (B, T, C) overwritten, or NULL
                     Act *dk,            // (B, T, C) overwritten, or NULL
                     Act *dv,            // (B, T, C) overwritten, or NULL
                     const Act *dout,    // (B, T, C)
                     const Act *q,       // (B, T, C)
                     const Act *k,       // (B, T, C)
                     const Act *v,       // (B, T, C)
                     const float *probs, // (B, NH, T, T)
                     int B, int T, int C, int NH, void *workspace) {
  const float scale = 1.0f / sqrtf((float)(C / NH));
  const int chunk = chunk_images(be, B, T, NH);
  const size_t img = (size_t)T * C, block = (size_t)NH * T * T;
  float *ds = (float *)workspace;                                     // (nb, NH, T, T)
  Act *copy = copy_part<Act>(workspace, fp32_part(be, chunk, T, NH)); // (nb, NH, T, T)
  for (int b0 = 0; b0 < B; b0 += chunk) {
    const int nb = B - b0 < chunk ? B - b0 : chunk;
    const attn_plan a = plan_chunk(nb, T, C, NH);
    const size_t o = b0 * img, rows = (size_t)nb * NH * T;
    const float *p = probs + b0 * block;
    if (dv) { // dV = P^T dO
      const Act *pp = round_block(be, p, copy, (size_t)nb * block);
      if (!pp || !gemm_p(be, &a, 1.0f, pp, CUBLAS_OP_T, dout + o, dv + o)) return;
    }
    if (!dq && !dk) continue;
    if (!gemm_qkt(be, &a, 1.0f, dout + o, v + o, ds)) return; // dP = dO V^T
    // The copy is free again: dV's product is queued before on the same stream.
    const dim3 grid(row_blocks(rows)), threads(ROWS_PER_BLOCK * 32);
    softmax_bwd_rows_kernel<Act><<<grid, threads, 0, cu_stream(be)>>>(ds, copy, p, rows, T);
    if (!CU_LAUNCHED(be)) return;
    const Act *dsp = block_operand(ds, copy);
    if (dq && !gemm_p(be, &a, scale, dsp, CUBLAS_OP_N, k + o, dq + o)) return; // dQ = dS K
    if (dk && !gemm_p(be, &a, scale, dsp, CUBLAS_OP_T, q + o, dk + o)) return; // dK = dS^T Q
  }
}

void cuda_attention_forward(const a3_backend *be,
                            a3_act *out,     // (B, T, C)
                            float *probs,    // (B, NH, T, T) or NULL
                            const a3_act *q, // (B, T, C)
                            const a3_act *k, // (B, T, C)
                            const a3_act *v, // (B, T, C)
                            int B, int T, int C, int NH, void *workspace) {
  // (No CU_ACT_DISPATCH: its type T would hide the sequence length T.)
  if (cu_act_bf16(be))
    forward(be, cu_t<__nv_bfloat16>(out), probs, cu_t<__nv_bfloat16>(q), cu_t<__nv_bfloat16>(k),
            cu_t<__nv_bfloat16>(v), B, T, C, NH, workspace);
  else
    forward(be, cu_t<float>(out), probs, cu_t<float>(q), cu_t<float>(k), cu_t<float>(v), B, T, C,
            NH, workspace);
}

void cuda_attention_backward(const a3_backend *be,
                             a3_act *dq,         // (B, T, C) overwritten, or NULL
                             a3_act *dk,         // (B, T, C) overwritten, or NULL
                             a3_act *dv,         // (B, T, C) overwritten, or NULL
                             const a3_act *dout, // (B, T, C)
                             const a3_act *q,    // (B, T, C)
                             const a3_act *k,    // (B, T, C)
                             const a3_act *v,    // (B, T, C)
                             const float *probs, // (B, NH, T, T)
                             int B, int T, int C, int NH, void *workspace) {
  typedef __nv_bfloat16 bf;
  if (cu_act_bf16(be))
    backward(be, cu_t<bf>(dq), cu_t<bf>(dk), cu_t<bf>(dv), cu_t<bf>(dout), cu_t<bf>(q), cu_t<bf>(k),
             cu_t<bf>(v), probs, B, T, C, NH, workspace);
  else
    backward(be, cu_t<float>(dq), cu_t<float>(dk), cu_t<float>(dv), cu_t<float>(dout),
             cu_t<float>(q), cu_t<float>(k), cu_t<float>(v), probs, B, T, C, NH, workspace);
}
