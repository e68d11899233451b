// The optimizer ops on the GPU: squared norms for clipping, AdamW and the
// EMA, with the CPU backend's arithmetic (src/backend/cpu/optim_ops.c).
// The elementwise updates use explicitly rounded intrinsics (__fmul_rn,
// __fadd_rn, ...) so that nvcc cannot fuse a multiply and an add into one
// FMA: each element then takes exactly the CPU's (and torch's) roundings,
// and a GPU run's weights follow the CPU run's as long as the gradients do.
#include "cuda_internal.h"

// One block sums x^2 in a fixed order (thread i takes i, i + T, ...), in
// double: segments are at most a few million floats, and one launch per
// segment keeps the norm independent of the device's size.
__global__ static void k_sum_squares(double *out, const float *x, size_t n) {
  double acc = 0.0;
  for (size_t i = threadIdx.x; i < n; i += blockDim.x) acc += (double)x[i] * (double)x[i];
  acc = cu_block_sum(acc);
  if (threadIdx.x == 0) out[0] = acc;
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

__global__ static void k_adamw(float *param, const float *grad, float *m, float *v, size_t n,
                               a3_adamw_scalars s, int decay, const float *grad_scale) {
  const float gs = grad_scale ? grad_scale[0] : 1.0f;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const float gi = grad_scale ? __fmul_rn(grad[i], gs) : grad[i];
    float pi = decay ? __fmul_rn(param[i], s.decay_mul) : param[i];
    const float mi = __fadd_rn(__fmul_rn(m[i], s.beta1), __fmul_rn(s.one_minus_beta1, gi));
    const float vi =
        __fadd_rn(__fmul_rn(v[i], s.beta2), __fmul_rn(__fmul_rn(s.one_minus_beta2, gi), gi));
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), s.bc2_sqrt), s.eps);
    pi = __fadd_rn(pi, __fdiv_rn(__fmul_rn(s.neg_step_size, mi), denom));
    param[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
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
