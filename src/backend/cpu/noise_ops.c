// A training batch's ops on the CPU: training_noise with the formulas of
// a3fta/backend_noise.h, which the host functions of src/diffusion/noise.c
// use too, so the op gives bitwise what a3_diffusion_training_batch gives
// (tests/diffusion/test_noise_op.c); batch_images, which the trainer's CPU
// path runs too (the host's batches, items from a3_train_batch_items).
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

// One image (C, S, S) -> [-1, 1], mirrored left-right when flip.
static void image_row(float *x, const uint8_t *img, int C, int S, int flip) {
  for (int r = 0; r < C * S; r++) {
    const uint8_t *src = img + (size_t)r * S;
    float *dst = x + (size_t)r * S;
    for (int w = 0; w < S; w++) dst[w] = a3_batch_pixel(src[flip ? S - 1 - w : w]);
  }
}

void cpu_batch_images(const a3_backend *be, float *x, const uint8_t *images, const uint32_t *items,
                      int count, int C, int S) {
  (void)be;
  const size_t per = (size_t)C * S * S;
  for (int i = 0; i < count; i++)
    image_row(x + (size_t)i * per, images + (size_t)(items[i] >> 1) * per, C, S,
              (int)(items[i] & 1u));
}
