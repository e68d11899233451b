// The DDPM / DDIM sampler step's elementwise arithmetic: the one place it is
// written, used by the host sampler (src/diffusion/sampler.c, whose steps
// match diffusers' trajectories to the bit) and compared with the CUDA
// backend's kernel (src/backend/cuda/cuda_sampler.cu).
//
// No CPU_FP_CONTRACT here: every line must keep its own fp32 rounding, as
// torch's tensor ops do, for the bitwise match with the fixture.
#include "cpu_ops.h"

// clamp(-1, 1), letting NaN through as torch does.
static inline float clip1(float x) { return x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x); }

CPU_CLONES static void step_range(float *x_prev, const float *eps, const float *x_t,
                                  const float *noise, a3_sampler_scalars c, size_t lo, size_t hi) {
  for (size_t i = lo; i < hi; i++) {
    const float xt = x_t[i], e = eps[i];
    const float scaled = c.sqrt_beta_prod_t * e;
    const float x0 = clip1((xt - scaled) / c.sqrt_acp_t); // pred_original_sample
    const float a = c.c_x0 * x0, b = c.c_dir * (c.dir_is_eps ? e : xt);
    float prev = a + b;
    if (c.add_noise) {
      const float z = c.std * noise[i];
      prev = prev + z;
    }
    x_prev[i] = prev;
  }
}

void cpu_sampler_step(const a3_backend *be, float *x_prev, const float *eps, const float *x_t,
                      const float *noise, size_t n, const a3_sampler_scalars *s) {
  (void)be;
  const a3_sampler_scalars c = *s;
  CPU_PAR_CHUNKS(n, step_range(x_prev, eps, x_t, noise, c, lo, hi));
}
