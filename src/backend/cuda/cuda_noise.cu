// A training batch on the GPU: its images from the subset kept in device
// memory (batch_images) and its timesteps, noise and x_t (training_noise),
// so that a device step uploads nothing. The kernels call the host's own
// formulas (a3fta/backend_noise.h): images and timesteps are bitwise the
// CPU's, and noise and x_t are too except where CUDA's double log/sin/cos
// round differently from glibc's (see a3_noise_randn_pair).
#include "cuda_internal.h"

#include "a3fta/backend_noise.h"

#include <string.h>

__global__ static void k_timesteps(float *tf, uint64_t seed, uint64_t step, uint64_t sample0,
                                   int batch, uint32_t T) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < batch; i += gridDim.x * blockDim.x)
    tf[i] = (float)a3_noise_timestep(seed, step, sample0 + (uint64_t)i, T);
}

// One thread per Box-Muller pair: elements 2 slot and 2 slot + 1 of sample
// i, whose timestep k_timesteps wrote (exact as a float: T < 2^24).
__global__ static void k_noise(float *x_t, float *noise, const float *tf, const float *x0,
                               const float *acp, uint64_t seed, uint64_t step, uint64_t sample0,
                               int batch, int per_sample) {
  const size_t pairs = ((size_t)per_sample + 1) / 2, n = pairs * (size_t)batch;
  for (size_t p = blockIdx.x * (size_t)blockDim.x + threadIdx.x; p < n;
       p += (size_t)gridDim.x * blockDim.x) {
    const size_t i = p / pairs, slot = p % pairs, j = (size_t)per_sample * i + 2 * slot;
    float a, b, z[2];
    a3_noise_coefs(acp[(int)tf[i]], &a, &b);
    a3_noise_randn_pair(seed, A3_NOISE_STREAM_TRAIN, step, sample0 + i, slot, z);
    noise[j] = z[0];
    x_t[j] = a3_noise_mix(a, x0[j], b, z[0]); // x_t may be x0: read, then written
    if (2 * slot + 1 < (size_t)per_sample) {
      noise[j + 1] = z[1];
      x_t[j + 1] = a3_noise_mix(a, x0[j + 1], b, z[1]);
    }
  }
}

void cu_training_noise(const a3_backend *be, float *x_t, // (batch, per_sample)
                       float *noise,                     // (batch, per_sample)
                       float *tf,                        // (batch)
                       const float *x0,                  // (batch, per_sample)
                       const float *alphas_cumprod,      // (T)
                       uint64_t seed, uint64_t step, uint64_t sample0, int batch, int per_sample,
                       int T) {
  if (batch <= 0) return;
  cudaStream_t st = cu_stream(be);
  k_timesteps<<<cu_blocks((size_t)batch, CU_THREADS), CU_THREADS, 0, st>>>(tf, seed, step, sample0,
                                                                           batch, (uint32_t)T);
  if (!CU_LAUNCHED(be) || per_sample <= 0) return;
  const size_t pairs = ((size_t)per_sample + 1) / 2 * (size_t)batch;
  k_noise<<<cu_blocks(pairs, CU_THREADS), CU_THREADS, 0, st>>>(
      x_t, noise, tf, x0, alphas_cumprod, seed, step, sample0, batch, per_sample);
  CU_LAUNCHED(be);
}

// ---------------------------------------------------------------- images

// A launch's share of the items, passed by value as a kernel argument (the
// host array needs no copy): 3840 bytes, under the 4 KB a kernel's
// arguments may take on every architecture.
enum { BATCH_ITEMS_PER_LAUNCH = 960 };
typedef struct {
  uint32_t item[BATCH_ITEMS_PER_LAUNCH];
} batch_items_arg;

// One thread per output float of `count` images of per = C * S * S.
__global__ static void k_batch_images(float *x, const uint8_t *images, batch_items_arg items,
                                      int count, int S, size_t per) {
  const size_t n = per * (size_t)count;
  for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < n;
       e += (size_t)gridDim.x * blockDim.x) {
    const size_t i = e / per, within = e % per, row = within / (size_t)S;
    const int w = (int)(within % (size_t)S);
    const uint32_t item = items.item[i];
    const int src_w = (item & 1u) ? S - 1 - w : w;
    x[e] = a3_batch_pixel(images[(size_t)(item >> 1) * per + row * (size_t)S + (size_t)src_w]);
  }
}

void cu_batch_images(const a3_backend *be, float *x, // (count, C, S, S)
                     const uint8_t *images,          // (n, C, S, S)
                     const uint32_t *items,          // (count) host
                     int count, int C, int S) {
  const size_t per = (size_t)C * S * S;
  for (int first = 0; first < count && per > 0; first += BATCH_ITEMS_PER_LAUNCH) {
    const int k = count - first < BATCH_ITEMS_PER_LAUNCH ? count - first : BATCH_ITEMS_PER_LAUNCH;
    batch_items_arg arg;
    memcpy(arg.item, items + first, (size_t)k * sizeof(uint32_t));
    k_batch_images<<<cu_blocks(per * (size_t)k, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(
        x + (size_t)first * per, images, arg, k, S, per);
    if (!CU_LAUNCHED(be)) return;
  }
}
