// Training batches for epsilon prediction: counter-based timesteps and
// Gaussian noise, and diffusers' add_noise. The formulas are those of
// a3fta/backend_noise.h, which the backends' training_noise op uses too.
#include "a3fta/diffusion.h"

void a3_diffusion_sample_timesteps(uint64_t seed, uint64_t step, uint64_t sample0, int64_t batch,
                                   int64_t T, int32_t *t) {
  for (int64_t i = 0; i < batch; i++)
    t[i] = a3_noise_timestep(seed, step, sample0 + (uint64_t)i, (uint32_t)T);
}

void a3_diffusion_randn(uint64_t seed, uint64_t stream, uint64_t step, uint64_t sample0,
                        int64_t batch, int64_t per_sample, float *out) {
  for (int64_t i = 0; i < batch; i++) {
    float *row = out + i * per_sample;
    for (int64_t j = 0; j < per_sample; j += 2) {
      // One block gives the pair (j, j + 1); an odd row drops the last one's second.
      float z[2];
      a3_noise_randn_pair(seed, stream, step, sample0 + (uint64_t)i, (uint64_t)j / 2, z);
      row[j] = z[0];
      if (j + 1 < per_sample) row[j + 1] = z[1];
    }
  }
}

a3_status a3_diffusion_add_noise(const a3_noise_schedule_table *s, const int32_t *t, int64_t batch,
                                 int64_t per_sample, const float *x0, const float *noise,
                                 float *x_t) {
  for (int64_t i = 0; i < batch; i++) {
    if (t[i] < 0 || t[i] >= s->T) {
      return A3_FAIL(A3_ERR_INTERNAL, "add_noise: timestep %d of sample %lld outside [0, %lld)",
                     (int)t[i], (long long)i, (long long)s->T);
    }
  }
  for (int64_t i = 0; i < batch; i++) {
    float a, b;
    a3_noise_coefs(s->alphas_cumprod[t[i]], &a, &b);
    const int64_t o = i * per_sample;
    for (int64_t j = 0; j < per_sample; j++)
      x_t[o + j] = a3_noise_mix(a, x0[o + j], b, noise[o + j]);
  }
  return A3_OK;
}

a3_status a3_diffusion_training_batch(const a3_noise_schedule_table *s, uint64_t seed,
                                      uint64_t step, uint64_t sample0, int64_t batch,
                                      int64_t per_sample, const float *x0, int32_t *t, float *noise,
                                      float *x_t) {
  a3_diffusion_sample_timesteps(seed, step, sample0, batch, s->T, t);
  a3_diffusion_randn(seed, A3_STREAM_TRAIN_NOISE, step, sample0, batch, per_sample, noise);
  A3_TRY(a3_diffusion_add_noise(s, t, batch, per_sample, x0, noise, x_t));
  return A3_OK;
}
