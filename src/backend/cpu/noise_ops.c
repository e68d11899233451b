// The training_noise op on the CPU: the formulas of a3fta/backend_noise.h,
// which the host functions of src/diffusion/noise.c use too, so the op gives
// bitwise what a3_diffusion_training_batch gives (tests/diffusion/test_noise_op.c).
//
// No CPU_FP_CONTRACT: add_noise's products and sum keep their own fp32
// roundings, as diffusers' tensor ops do.
#include "cpu_ops.h"

#include "a3fta/backend_noise.h"

// Sample i's noise and x_t (x_t may equal x0: each element is read, then written).
static void noise_row(float *x_t, float *noise, const float *x0, float acp, uint64_t seed,
                      uint64_t step, uint64_t sample, int per_sample) {
  float a, b;
  a3_noise_coefs(acp, &a, &b);
  for (int j = 0; j < per_sample; j += 2) {
    float z[2];
    a3_noise_randn_pair(seed, A3_NOISE_STREAM_TRAIN, step, sample, (uint64_t)j / 2, z);
    noise[j] = z[0];
    x_t[j] = a3_noise_mix(a, x0[j], b, z[0]);
    if (j + 1 < per_sample) {
      noise[j + 1] = z[1];
      x_t[j + 1] = a3_noise_mix(a, x0[j + 1], b, z[1]);
    }
  }
}

void cpu_training_noise(const a3_backend *be, float *x_t, float *noise, float *tf, const float *x0,
                        const float *alphas_cumprod, uint64_t seed, uint64_t step, uint64_t sample0,
                        int batch, int per_sample, int T) {
  (void)be;
  for (int i = 0; i < batch; i++)
    tf[i] = (float)a3_noise_timestep(seed, step, sample0 + (uint64_t)i, (uint32_t)T);
  const size_t n = (size_t)batch * (size_t)per_sample, per = (size_t)per_sample;
#pragma omp parallel for schedule(static) if (n >= CPU_PAR_MIN)
  for (int i = 0; i < batch; i++) {
    const size_t o = (size_t)i * per;
    noise_row(x_t + o, noise + o, x0 + o, alphas_cumprod[(int)tf[i]], seed, step,
              sample0 + (uint64_t)i, per_sample);
  }
}
