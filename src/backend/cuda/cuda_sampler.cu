// The DDPM / DDIM sampler step on the GPU, with the CPU backend's arithmetic
// (src/backend/cpu/sampler_ops.c): explicitly rounded intrinsics, so that nvcc
// cannot fuse a multiply and an add, and each element takes exactly the
// CPU's roundings. Given the same eps, a GPU step is bitwise the CPU's.
#include "cuda_internal.h"

__device__ static inline float clip1(float x) {
  return x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x); // NaN passes, as torch.clamp
}

__global__ static void k_sampler_step(float *x_prev, const float *eps, const float *x_t,
                                      const float *noise, size_t n, a3_sampler_scalars c) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x) {
    const float xt = x_t[i], e = eps[i];
    const float scaled = __fmul_rn(c.sqrt_beta_prod_t, e);
    const float x0 = clip1(__fdiv_rn(__fsub_rn(xt, scaled), c.sqrt_acp_t));
    const float a = __fmul_rn(c.c_x0, x0), b = __fmul_rn(c.c_dir, c.dir_is_eps ? e : xt);
    float prev = __fadd_rn(a, b);
    if (c.add_noise) prev = __fadd_rn(prev, __fmul_rn(c.std, noise[i]));
    x_prev[i] = prev;
  }
}

void cu_sampler_step(const a3_backend *be, float *x_prev, // (n)
                     const float *eps,                    // (n)
                     const float *x_t,                    // (n)
                     const float *noise,                  // (n) or NULL
                     size_t n, const a3_sampler_scalars *s) {
  if (n == 0) return;
  k_sampler_step<<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(x_prev, eps, x_t,
                                                                             noise, n, *s);
  CU_LAUNCHED(be);
}
