// The timestep embedding, mean-squared error and softmax cross-entropy on
// CUDA. Scalar results (the losses) are two-stage reductions in double:
// a grid fixed by the shape writes partial sums into the state's scratch,
// and one block adds them in order (cu_finish_sum).
#include "cuda_internal.h"

#include <math.h>

#define GRID_STRIDE(i, n)                                                                          \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                          \
       i += (size_t)gridDim.x * blockDim.x)

// ---------------------------------------------------------------- timestep embedding

// One thread per (n, i < half). The exponent, the frequency and the argument
// are rounded to fp32 as PyTorch (and the CPU backend) compute them; exp,
// sin and cos run in double and are rounded once, which gives the correctly
// rounded fp32 value that the CPU's libm returns (CUDA's expf / sinf may be
// 1-2 ulp off, and an ulp of the frequency moves sin(t * freq) by up to
// t * 6e-8 ~ 6e-5 at t = 1000). out is an activation: T its storage type.
template <typename T>
__global__ static void timestep_kernel(T *out, const float *t, int N, int dim, int half, int flip,
                                       float freq_shift, float log_period) {
  const size_t total = (size_t)N * half;
  GRID_STRIDE(idx, total) {
    const int n = (int)(idx / half), i = (int)(idx % half);
    T *row = out + (size_t)n * dim;
    const float exponent = __fdiv_rn(__fmul_rn(log_period, (float)i), (float)half - freq_shift);
    const float freq = (float)exp((double)exponent);
    const float arg = __fmul_rn(t[n], freq);
    const float sv = (float)sin((double)arg), cv = (float)cos((double)arg);
    cu_st(&row[(flip ? half : 0) + i], sv);
    cu_st(&row[(flip ? 0 : half) + i], cv);
  }
}

// An odd dim's last column is zero (torch pads it).
template <typename T> __global__ static void zero_last_column_kernel(T *out, int N, int dim) {
  GRID_STRIDE(n, (size_t)N) cu_st(&out[n * dim + dim - 1], 0.0f);
}

// The launches for storage type T.
template <typename T>
static void timestep_embedding(const a3_backend *be, T *out, // (N, dim)
                               const float *t,               // (N) timesteps
                               int N, int dim, int flip_sin_to_cos, float freq_shift,
                               float max_period) {
  const int half = dim / 2;
  const float log_period = (float)-log((double)max_period); // as the CPU, on the host
  const cudaStream_t stream = cu_stream(be);
  if (half > 0) {
    const size_t total = (size_t)N * half;
    timestep_kernel<T><<<cu_blocks(total, CU_THREADS), CU_THREADS, 0, stream>>>(
        out, t, N, dim, half, flip_sin_to_cos, freq_shift, log_period);
    if (!CU_LAUNCHED(be)) return;
  }
  if (dim % 2) {
    const unsigned blocks = cu_blocks((size_t)N, CU_THREADS);
    zero_last_column_kernel<T><<<blocks, CU_THREADS, 0, stream>>>(out, N, dim);
    CU_LAUNCHED(be);
  }
}

void cuda_timestep_embedding(const a3_backend *be, a3_act *out, // (N, dim)
                             const float *t,                    // (N) timesteps
                             int N, int dim, int flip_sin_to_cos, float freq_shift,
                             float max_period) {
  if (N <= 0 || dim <= 0) return;
  CU_ACT_DISPATCH(be, {
    timestep_embedding<T>(be, cu_t<T>(out), t, N, dim, flip_sin_to_cos, freq_shift, max_period);
  });
}

// ---------------------------------------------------------------- mean-squared error

__global__ static void sq_err_partial_kernel(double *part, const float *pred, const float *target,
                                             size_t n) {
  double s = 0.0;
  GRID_STRIDE(i, n) {
    const double e = (double)pred[i] - target[i];
    s += e * e;
  }
  s = cu_block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

void cuda_mse_forward(const a3_backend *be, float *loss, // (1) device
                      const float *pred,                 // (n)
                      const float *target,               // (n)
                      size_t n) {
  const unsigned blocks = cu_red_blocks(n);
  double *part = cu_state(be)->red;
  sq_err_partial_kernel<<<blocks, CU_THREADS, 0, cu_stream(be)>>>(part, pred, target, n);
  if (CU_LAUNCHED(be)) cu_finish_sum(be, loss, part, blocks, 1.0, (double)n, 0);
}

__global__ static void mse_bwd_kernel(float *dpred, const float *pred, const float *target, float g,
                                      size_t n) {
  GRID_STRIDE(i, n) dpred[i] = g * (pred[i] - target[i]);
}

void cuda_mse_backward(const a3_backend *be, float *dpred, // (n) overwritten
                       const float *pred,                  // (n)
                       const float *target,                // (n)
                       size_t n, float dloss) {
  if (!n) return;
  const float g = (float)(2.0 * dloss / (double)n); // as the CPU
  mse_bwd_kernel<<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(dpred, pred, target, g,
                                                                             n);
  CU_LAUNCHED(be);
}

// ---------------------------------------------------------------- softmax cross-entropy

// One warp per block, rows grid-strided over the blocks: each row's softmax
// (max subtracted, the sum in double) into probs, and the block's rows'
// losses logsumexp - z[label], summed in row order, into part[block].
// A label outside [0, K) gives a NaN loss instead of reading out of bounds.
__global__ static void xent_rows_kernel(double *part, float *probs, const float *logits,
                                        const int32_t *labels, int N, int K) {
  const int lane = threadIdx.x;
  double total = 0.0;
  for (int i = blockIdx.x; i < N; i += gridDim.x) {
    const float *z = logits + (size_t)i * K;
    float *p = probs + (size_t)i * K;
    float mx = -INFINITY;
    for (int k = lane; k < K; k += 32) mx = fmaxf(mx, z[k]);
    mx = cu_warp_max(mx);
    double sum = 0.0;
    for (int k = lane; k < K; k += 32) sum += exp((double)z[k] - mx);
    sum = cu_warp_sum(sum);
    const double inv = 1.0 / sum;
    for (int k = lane; k < K; k += 32) p[k] = (float)(exp((double)z[k] - mx) * inv);
    const int y = labels[i];
    const double zy = y >= 0 && y < K ? (double)z[y] : (double)NAN;
    total += (double)mx + log(sum) - zy;
  }
  if (lane == 0) part[blockIdx.x] = total;
}

void cuda_softmax_xent_forward(const a3_backend *be, float *loss, // (1) device
                               float *probs,                      // (N, K) saved
                               const float *logits,               // (N, K)
                               const int32_t *labels,             // (N) device
                               int N, int K, float scale) {
  const unsigned blocks = (unsigned)(N < (int)CU_RED_BLOCKS ? cu_grid(N) : CU_RED_BLOCKS);
  double *part = cu_state(be)->red;
  xent_rows_kernel<<<blocks, 32, 0, cu_stream(be)>>>(part, probs, logits, labels, N, K);
  if (CU_LAUNCHED(be)) cu_finish_sum(be, loss, part, blocks, (double)scale, 1.0, 0);
}

__global__ static void xent_bwd_kernel(float *dlogits, const float *probs, const int32_t *labels,
                                       int K, float scale, size_t total) {
  GRID_STRIDE(i, total) {
    const int k = (int)(i % K), row = (int)(i / K);
    dlogits[i] = scale * (probs[i] - (k == labels[row] ? 1.0f : 0.0f));
  }
}

void cuda_softmax_xent_backward(const a3_backend *be, float *dlogits, // (N, K) overwritten
                                const float *probs,                   // (N, K)
                                const int32_t *labels,                // (N) device
                                int N, int K, float scale) {
  const size_t total = (size_t)N * K;
  if (!total) return;
  xent_bwd_kernel<<<cu_blocks(total, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(
      dlogits, probs, labels, K, scale, total);
  CU_LAUNCHED(be);
}
