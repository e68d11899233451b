// The CUDA emulator's block barriers (emu_threads.cpp) hold kernels to
// CUDA's rules, each case in a process of its own (a failed launch poisons
// the context):
//   test_emu_barriers uniform     a __syncthreads in a loop, some threads of
//                                 the block already returned: the launch
//                                 runs, and the block reverses its values
//                                 through shared memory;
//   test_emu_barriers divergent   half the block waits at one __syncthreads,
//                                 half at another: the launch fails with
//                                 cudaErrorLaunchFailure (an emulator that
//                                 counted them as one barrier would pass it);
//   test_emu_barriers stuck       half a warp waits at a __syncthreads, the
//                                 other half at a shuffle: it can never open,
//                                 and the launch fails.
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

enum { THREADS = 64, ROUNDS = 3 };

// Threads at or past `live` return first; the others reverse x's first
// `live` values ROUNDS times (an odd count: reversed once in the end).
__global__ void reverse_kernel(float *x, int live) {
  __shared__ float tile[THREADS];
  const int t = threadIdx.x;
  if (t >= live) return;
  for (int r = 0; r < ROUNDS; r++) {
    tile[t] = x[t];
    __syncthreads(); // every value is in the tile
    x[t] = tile[live - 1 - t];
    __syncthreads(); // every value is read before the next round's writes
  }
}

__global__ void divergent_kernel(float *x) {
  const int t = threadIdx.x;
  if (t < THREADS / 2) {
    x[t] = 1.0f;
    __syncthreads();
  } else {
    x[t] = 2.0f;
    __syncthreads();
  }
}

__global__ void stuck_kernel(float *x) {
  const int t = threadIdx.x;
  if (t < 16)
    __syncthreads();
  else
    x[t] = __shfl_xor_sync(0xffffffffu, (float)t, 1);
}

static int uniform_case(float *d) {
  const int live = THREADS - 5;
  float h[THREADS];
  for (int i = 0; i < THREADS; i++) h[i] = (float)i;
  CHECK(cudaMemcpy(d, h, sizeof h, cudaMemcpyHostToDevice) == cudaSuccess);
  reverse_kernel<<<1, THREADS>>>(d, live);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
  CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
  int wrong = 0;
  for (int i = 0; i < THREADS; i++) wrong += h[i] != (float)(i < live ? live - 1 - i : i);
  CHECK_MSG(wrong == 0, "%d of %d values wrong after the reversal", wrong, THREADS);
  return TEST_DONE("test_emu_barriers uniform");
}

static int failing_case(const char *name, float *d) {
  if (!strcmp(name, "divergent"))
    divergent_kernel<<<1, THREADS>>>(d);
  else
    stuck_kernel<<<1, 32>>>(d);
  const cudaError_t e = cudaDeviceSynchronize();
  CHECK_MSG(e == cudaErrorLaunchFailure, "%s barriers: %s, not cudaErrorLaunchFailure", name,
            cudaGetErrorName(e));
  return TEST_DONE(name);
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "uniform") && strcmp(mode, "divergent") && strcmp(mode, "stuck")) {
    fprintf(stderr, "usage: test_emu_barriers uniform|divergent|stuck\n");
    return 2;
  }
  float *d = NULL;
  if (cudaMalloc(&d, THREADS * sizeof(float)) != cudaSuccess) return 1;
  const int rc = !strcmp(mode, "uniform") ? uniform_case(d) : failing_case(mode, d);
  cudaFree(d); // (after a failed launch it reports that failure, and frees)
  return rc;
}
