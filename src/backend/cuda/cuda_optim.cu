// The optimizer ops on the GPU: squared norms for clipping, AdamW and the
// EMA, with the CPU backend's arithmetic (src/backend/cpu/optim_ops.c).
// The elementwise updates use explicitly rounded intrinsics (__fmul_rn,
// __fadd_rn, ...) so that nvcc cannot fuse a multiply and an add into one
// FMA: each element then takes exactly the CPU's (and torch's) roundings,
// and a GPU run's weights follow the CPU run's as long as the gradients do.
#include "cuda_internal.h"

// One block sums x^2 in a fixed order (thread i takes i, i + T, ...), in
// double: segments are at most a few million floats, and one block per
// segment keeps the norm independent of the device's size.
__device__ static double block_sum_squares(const float *x, size_t n) {
  double acc = 0.0;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) acc += (double)x[i] * (double)x[i];
  return cu_block_sum(acc);
}

__global__ static void k_sum_squares(double *out, const float *x, size_t n) {
  const double sum = block_sum_squares(x, n);
  if (threadIdx.x == 0) out[0] = sum;
}

void cu_sum_squares(const a3_backend *be, double *out, // (1)
                    const float *x,                    // (n)
                    size_t n) {
  k_sum_squares<<<1, 1024, 0, cu_stream(be)>>>(out, x, n);
  CU_LAUNCHED(be);
}

__global__ static void k_clip_scale(float *scale, double *norm, const double *partials, int n,
                                    double max_norm) {
  if (threadIdx.x != 0) return;
  double total = 0.0;
  for (int k = 0; k < n; k++) total += partials[k];
  const double nrm = sqrt(total);
  norm[0] = nrm;
  const double factor = max_norm > 0 ? max_norm / (nrm + 1e-6) : 1.0;
  scale[0] = factor < 1.0 ? (float)factor : 1.0f;
}

void cu_clip_scale(const a3_backend *be, float *scale, // (1)
                   double *norm,                       // (1)
                   const double *partials,             // (n_partials)
                   int n_partials, double max_norm) {
  k_clip_scale<<<1, 32, 0, cu_stream(be)>>>(scale, norm, partials, n_partials, max_norm);
  CU_LAUNCHED(be);
}

// One element's AdamW step (the CPU's cpu_adamw_update, line for line).
__device__ static void adamw_element(float *param, float grad, float *m, float *v,
                                     const a3_adamw_scalars &s, bool decay,
                                     const float *grad_scale) {
  const float gi = grad_scale ? __fmul_rn(grad, grad_scale[0]) : grad;
  float pi = decay ? __fmul_rn(*param, s.decay_mul) : *param;
  const float mi = __fadd_rn(__fmul_rn(*m, s.beta1), __fmul_rn(s.one_minus_beta1, gi));
  const float vi =
      __fadd_rn(__fmul_rn(*v, s.beta2), __fmul_rn(__fmul_rn(s.one_minus_beta2, gi), gi));
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
  pi = __fadd_rn(pi, __fdiv_rn(__fmul_rn(s.neg_step_size, mi), denom));
  *param = pi;
  *m = mi;
  *v = vi;
}

__global__ static void k_adamw(float *param, const float *grad, float *m, float *v, size_t n,
                               a3_adamw_scalars s, int decay, const float *grad_scale) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    adamw_element(param + i, grad[i], m + i, v + i, s, decay, grad_scale);
}

void cu_adamw_update(const a3_backend *be, float *param, // (n)
                     const float *grad,                  // (n)
                     float *m,                           // (n)
                     float *v,                           // (n)
                     size_t n, const a3_adamw_scalars *s, int decay,
                     const float *grad_scale) { // (1) or NULL
  if (n == 0) return;
  k_adamw<<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(param, grad, m, v, n, *s,
                                                                      decay, grad_scale);
  CU_LAUNCHED(be);
}

__global__ static void k_ema(float *ema, const float *param, size_t n, float one_minus_decay) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const float diff = __fsub_rn(ema[i], param[i]);
    ema[i] = __fsub_rn(ema[i], __fmul_rn(one_minus_decay, diff));
  }
}

void cu_ema_update(const a3_backend *be, float *ema, // (n)
                   const float *param,               // (n)
                   size_t n, float one_minus_decay) {
  if (n == 0) return;
  k_ema<<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(ema, param, n, one_minus_decay);
  CU_LAUNCHED(be);
}

// ---------------------------------------------------------------- over every segment
// One launch each instead of one per segment (a full fine-tune has hundreds:
// weights and biases alternate). The norm's block k sums segment k exactly
// as k_sum_squares does, so the segments now run side by side on the SMs;
// the updates walk the compact index, each element finding its segment
// with a3_run_at, with the arithmetic of k_adamw and k_ema.

__global__ static void k_sum_squares_segments(double *partials, const float *grads,
                                              a3_segment_table t) {
  const int k = blockIdx.x;
  const double sum = block_sum_squares(grads + t.offset[k], (size_t)(t.begin[k + 1] - t.begin[k]));
  if (threadIdx.x == 0) partials[k] = sum;
}

void cu_sum_squares_segments(const a3_backend *be, double *partials, const float *grads,
                             const a3_segment_table *t) {
  if (t->n == 0) return;
  k_sum_squares_segments<<<t->n, 1024, 0, cu_stream(be)>>>(partials, grads, *t);
  CU_LAUNCHED(be);
}

// Segment k of compact element i, and the element's place in the flat buffer.
__device__ static int64_t flat_index(const a3_segment_table &t, int64_t i, int *k) {
  *k = a3_run_at(t.begin, 0, t.n, i);
  return t.offset[*k] + (i - t.begin[*k]);
}

__global__ static void k_adamw_segments(float *params, const float *grads, float *m, float *v,
                                        a3_segment_table t, a3_adamw_scalars s, int decay,
                                        const float *grad_scale) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < t.total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int k = 0;
    const int64_t j = flat_index(t, i, &k);
    adamw_element(params + j, grads[j], m + i, v + i, s, decay && t.decay[k], grad_scale);
  }
}

void cu_adamw_update_segments(const a3_backend *be, float *params, const float *grads, float *m,
                              float *v, const a3_segment_table *t, const a3_adamw_scalars *s,
                              int decay, const float *grad_scale) {
  if (t->total == 0) return;
  k_adamw_segments<<<cu_blocks((size_t)t->total, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(
      params, grads, m, v, *t, *s, decay, grad_scale);
  CU_LAUNCHED(be);
}

__global__ static void k_ema_segments(float *ema, const float *params, a3_segment_table t,
                                      float one_minus_decay) {
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < t.total;
       i += (int64_t)gridDim.x * blockDim.x) {
    int k = 0;
    const float diff = __fsub_rn(ema[i], params[flat_index(t, i, &k)]);
    ema[i] = __fsub_rn(ema[i], __fmul_rn(one_minus_decay, diff));
  }
}

void cu_ema_update_segments(const a3_backend *be, float *ema, const float *params,
                            const a3_segment_table *t, float one_minus_decay) {
  if (t->total == 0) return;
  k_ema_segments<<<cu_blocks((size_t)t->total, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(
      ema, params, *t, one_minus_decay);
  CU_LAUNCHED(be);
}
