// A training batch's timesteps, noise and x_t on the GPU (the training_noise
// op), so that a device step needs only its images from the host. The
// kernels call the host's own formulas (a3fta/backend_noise.h): timesteps
// are bitwise the CPU's, and noise and x_t are too except where CUDA's
// double log/sin/cos round differently from glibc's (see a3_noise_randn_pair).
#include "cuda_internal.h"

#include "a3fta/backend_noise.h"

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
