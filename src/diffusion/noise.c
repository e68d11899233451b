// Training batches for epsilon prediction: counter-based timesteps and
// Gaussian noise, and diffusers' add_noise.
#include "a3fta/diffusion.h"

#include <math.h>

#define A3_TWO_PI 6.28318530717958647692

// One Philox block per (stream, step, sample, slot): the 128-bit counter holds
// all four, so no two uses ever share a block.
static a3_philox_block noise_block(uint64_t seed, uint64_t stream, uint64_t step, uint64_t sample,
                                   uint64_t slot) {
  return a3_philox4x32(seed, (stream << 32) | (step & 0xffffffffu),
                       (sample << 32) | (slot & 0xffffffffu));
}

void a3_diffusion_sample_timesteps(uint64_t seed, uint64_t step, uint64_t sample0, int64_t batch,
                                   int64_t T, int32_t *t) {
  // Rejecting the lowest 2^32 mod T values removes the modulo bias; with
  // T = 1000 a block of four candidates is almost never exhausted.
  const uint32_t n = (uint32_t)T, threshold = (uint32_t)(0u - n) % n;
  for (int64_t i = 0; i < batch; i++) {
    int32_t value = -1;
    for (uint64_t attempt = 0; value < 0; attempt++) {
      a3_philox_block b =
          noise_block(seed, A3_STREAM_TIMESTEP, step, sample0 + (uint64_t)i, attempt);
      for (int k = 0; k < 4 && value < 0; k++) {
        if (b.v[k] >= threshold) value = (int32_t)(b.v[k] % n);
      }
    }
    t[i] = value;
  }
}

// Uniform in (0, 1) from 53 random bits: never 0, so log() is finite.
static double unit_open(uint32_t hi, uint32_t lo) {
  const uint64_t bits = (((uint64_t)hi << 32) | lo) >> 11;
  return ((double)bits + 0.5) * (1.0 / 9007199254740992.0);
}

void a3_diffusion_randn(uint64_t seed, uint64_t stream, uint64_t step, uint64_t sample0,
                        int64_t batch, int64_t per_sample, float *out) {
  for (int64_t i = 0; i < batch; i++) {
    float *row = out + i * per_sample;
    for (int64_t j = 0; j < per_sample; j += 2) {
      // Box-Muller: one block gives the pair (2 * slot, 2 * slot + 1).
      a3_philox_block b = noise_block(seed, stream, step, sample0 + (uint64_t)i, (uint64_t)j / 2);
      const double r = sqrt(-2.0 * log(unit_open(b.v[0], b.v[1])));
      const double theta = A3_TWO_PI * unit_open(b.v[2], b.v[3]);
      row[j] = (float)(r * cos(theta));
      if (j + 1 < per_sample) row[j + 1] = (float)(r * sin(theta));
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
    // fp32 like diffusers: acp ** 0.5 and (1 - acp) ** 0.5, two products, one sum.
    const float acp = s->alphas_cumprod[t[i]];
    const float a = sqrtf(acp), b = sqrtf(1.0f - acp);
    const int64_t o = i * per_sample;
    for (int64_t j = 0; j < per_sample; j++) {
      const float signal = a * x0[o + j], eps = b * noise[o + j];
      x_t[o + j] = signal + eps;
    }
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
