// a3fta backend: the formulas of a training batch's randomness (timesteps,
// Gaussian noise), of add_noise and of its images' pixels, as inline
// functions for the host and the device. Part of the backend module
// (backend.h's training_noise and batch_images ops): one definition serves
// the host functions (src/diffusion/noise.c), the CPU backend's ops
// (src/backend/cpu/noise_ops.c) and the CUDA kernels
// (src/backend/cuda/cuda_noise.cu), so that they can differ only where the
// device's math library does (a3_noise_randn_pair).
#ifndef A3FTA_BACKEND_NOISE_H
#define A3FTA_BACKEND_NOISE_H

#include "a3fta/core.h"

#include <math.h>
#include <stdint.h>

// The RNG streams of a training batch (diffusion.h names them
// A3_STREAM_TIMESTEP and A3_STREAM_TRAIN_NOISE; they live here because the
// backend's op draws them).
#define A3_NOISE_STREAM_TIMESTEP 16
#define A3_NOISE_STREAM_TRAIN 17

#define A3_NOISE_TWO_PI 6.28318530717958647692

// fp32 operations with one rounding each, as torch's tensor ops: on the
// device explicit intrinsics, or nvcc would fuse a * b + c into an FMA (and
// sqrtf must stay IEEE whatever the flags); on the host plain C, which ISO C
// mode (-std=c11: -ffp-contract=off) never fuses.
#ifdef __CUDA_ARCH__
#define A3_NOISE_FMUL(a, b) __fmul_rn((a), (b))
#define A3_NOISE_FADD(a, b) __fadd_rn((a), (b))
#define A3_NOISE_FSUB(a, b) __fsub_rn((a), (b))
#define A3_NOISE_FSQRT(a) __fsqrt_rn(a)
#else
#define A3_NOISE_FMUL(a, b) ((a) * (b))
#define A3_NOISE_FADD(a, b) ((a) + (b))
#define A3_NOISE_FSUB(a, b) ((a) - (b))
#define A3_NOISE_FSQRT(a) sqrtf(a)
#endif

// One Philox block per (stream, step, sample, slot): the 128-bit counter holds
// all four, so no two uses ever share a block.
static inline A3_HD a3_philox_block a3_noise_block(uint64_t seed, uint64_t stream, uint64_t step,
                                                   uint64_t sample, uint64_t slot) {
  return a3_philox4x32_hd(seed, (stream << 32) | (step & 0xffffffffu),
                          (sample << 32) | (slot & 0xffffffffu));
}

// The timestep of global sample `sample` of step `step`, uniform in [0, T).
// Rejecting the lowest 2^32 mod T values removes the modulo bias; with
// T = 1000 a block of four candidates is almost never exhausted.
static inline A3_HD int32_t a3_noise_timestep(uint64_t seed, uint64_t step, uint64_t sample,
                                              uint32_t T) {
  const uint32_t threshold = (uint32_t)(0u - T) % T;
  for (uint64_t attempt = 0;; attempt++) {
    const a3_philox_block b = a3_noise_block(seed, A3_NOISE_STREAM_TIMESTEP, step, sample, attempt);
    for (int k = 0; k < 4; k++)
      if (b.v[k] >= threshold) return (int32_t)(b.v[k] % T);
  }
}

// Uniform in (0, 1) from 53 random bits: never 0, so log() is finite.
static inline A3_HD double a3_noise_unit_open(uint32_t hi, uint32_t lo) {
  const uint64_t bits = (((uint64_t)hi << 32) | lo) >> 11;
  return ((double)bits + 0.5) * (1.0 / 9007199254740992.0);
}

// Elements 2 slot and 2 slot + 1 of a sample's standard normal noise: one
// Philox block, Box-Muller in double, each value rounded once to fp32 (no
// a * b + c here, so nothing a compiler could fuse). The host's log, sqrt,
// cos and sin are glibc's; CUDA's double sqrt is correctly rounded but its
// log (1 ulp) and sin/cos (2 ulp) may differ from glibc's in the last
// double bits, which survives the rounding to fp32 only when the double
// lies within a few ulp of a float rounding boundary: a GPU value then
// differs from the host's by one float ulp (rarely; the host result is the
// reference the golden tests check).
static inline A3_HD void a3_noise_randn_pair(uint64_t seed, uint64_t stream, uint64_t step,
                                             uint64_t sample, uint64_t slot, float z[2]) {
  const a3_philox_block b = a3_noise_block(seed, stream, step, sample, slot);
  const double r = sqrt(-2.0 * log(a3_noise_unit_open(b.v[0], b.v[1])));
  const double theta = A3_NOISE_TWO_PI * a3_noise_unit_open(b.v[2], b.v[3]);
  z[0] = (float)(r * cos(theta));
  z[1] = (float)(r * sin(theta));
}

// add_noise's coefficients of a sample with alphas_cumprod[t] = acp, in fp32
// like diffusers: *a = acp ** 0.5, *b = (1 - acp) ** 0.5.
static inline A3_HD void a3_noise_coefs(float acp, float *a, float *b) {
  *a = A3_NOISE_FSQRT(acp);
  *b = A3_NOISE_FSQRT(A3_NOISE_FSUB(1.0f, acp));
}

// One element of x_t = a x0 + b eps: two products and one sum, each rounded.
static inline A3_HD float a3_noise_mix(float a, float x0, float b, float eps) {
  return A3_NOISE_FADD(A3_NOISE_FMUL(a, x0), A3_NOISE_FMUL(b, eps));
}

// A training image's pixel p in [0, 255] -> [-1, 1]: one division and one
// subtraction, each rounded (the batch_images op and the host's batches).
static inline A3_HD float a3_batch_pixel(uint8_t p) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(__fdiv_rn((float)p, 127.5f), 1.0f);
#else
  return (float)p / 127.5f - 1.0f;
#endif
}

#endif
