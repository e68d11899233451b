// Elementwise CUDA ops: zero, accumulate, SiLU, GELU, ReLU, residual add,
// per-channel add, gated add. Grid-stride loops with size_t indices, so any
// n works with a bounded grid. Each element is computed as the CPU backend
// computes it (src/backend/cpu/elementwise.c, activation.c); the few sums
// (add_channel's dt, gated_add's dgate) are fixed-order reductions in double.
#include "cuda_internal.h"

#define GRID_STRIDE(i, n)                                                                          \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                          \
       i += (size_t)gridDim.x * blockDim.x)

// Launches kernel over n elements on the backend's stream and checks it.
#define LAUNCH_1D(be, n, kernel, ...)                                                              \
  do {                                                                                             \
    if ((n) == 0) break;                                                                           \
    kernel<<<cu_blocks((n), CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(__VA_ARGS__);             \
    CU_LAUNCHED(be);                                                                               \
  } while (0)

// ---------------------------------------------------------------- zero, accumulate

void cuda_zero(const a3_backend *be, float *x, size_t n) {
  if (n) CU_CHECK(be, cudaMemsetAsync(x, 0, n * sizeof(float), cu_stream(be)));
}

__global__ static void accumulate_kernel(float *dst, const float *src, size_t n) {
  GRID_STRIDE(i, n) dst[i] += src[i];
}

void cuda_accumulate(const a3_backend *be, float *dst, // (n) +=
                     const float *src,                 // (n)
                     size_t n) {
  LAUNCH_1D(be, n, accumulate_kernel, dst, src, n);
}

// ---------------------------------------------------------------- SiLU

__global__ static void silu_kernel(float *out, const float *inp, size_t n) {
  GRID_STRIDE(i, n) {
    const float x = inp[i];
    out[i] = x * cu_sigmoid(x);
  }
}

void cuda_silu_forward(const a3_backend *be, float *out, // (n), may equal inp
                       const float *inp,                 // (n)
                       size_t n) {
  LAUNCH_1D(be, n, silu_kernel, out, inp, n);
}

// d/dx x s(x) = s (1 + x (1 - s)); dout is read before dinp is written
// (they may be the same buffer).
__global__ static void silu_bwd_kernel(float *dinp, const float *dout, const float *inp, size_t n) {
  GRID_STRIDE(i, n) {
    const float x = inp[i], s = cu_sigmoid(x);
    dinp[i] = dout[i] * (s * (1.0f + x * (1.0f - s)));
  }
}

void cuda_silu_backward(const a3_backend *be, float *dinp, // (n), may equal dout
                        const float *dout,                 // (n)
                        const float *inp,                  // (n)
                        size_t n) {
  LAUNCH_1D(be, n, silu_bwd_kernel, dinp, dout, inp, n);
}

// ---------------------------------------------------------------- GELU (exact)

// Phi(x) = erfc(-x / sqrt 2) / 2, which does not cancel for negative x.
__device__ static inline float normal_cdf(float x) {
  return 0.5f * erfcf(-x * 0.70710678118654752f);
}

__global__ static void gelu_kernel(float *out, const float *inp, size_t n) {
  GRID_STRIDE(i, n) {
    const float x = inp[i];
    out[i] = x * normal_cdf(x);
  }
}

void cuda_gelu_forward(const a3_backend *be, float *out, // (n), may equal inp
                       const float *inp,                 // (n)
                       size_t n) {
  LAUNCH_1D(be, n, gelu_kernel, out, inp, n);
}

// d/dx x Phi(x) = Phi(x) + x phi(x), phi(x) = e^(-x^2 / 2) / sqrt(2 pi).
__global__ static void gelu_bwd_kernel(float *dinp, const float *dout, const float *inp, size_t n) {
  GRID_STRIDE(i, n) {
    const float x = inp[i];
    const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    dinp[i] = dout[i] * (normal_cdf(x) + x * pdf);
  }
}

void cuda_gelu_backward(const a3_backend *be, float *dinp, // (n), may equal dout
                        const float *dout,                 // (n)
                        const float *inp,                  // (n)
                        size_t n) {
  LAUNCH_1D(be, n, gelu_bwd_kernel, dinp, dout, inp, n);
}

// ---------------------------------------------------------------- ReLU

__global__ static void relu_kernel(float *out, const float *inp, size_t n) {
  GRID_STRIDE(i, n) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void cuda_relu_forward(const a3_backend *be, float *out, // (n), may equal inp
                       const float *inp,                 // (n)
                       size_t n) {
  LAUNCH_1D(be, n, relu_kernel, out, inp, n);
}

// The derivative at 0 is 0 (PyTorch's threshold_backward).
__global__ static void relu_bwd_kernel(float *dinp, const float *dout, const float *inp, size_t n) {
  GRID_STRIDE(i, n) dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
}

void cuda_relu_backward(const a3_backend *be, float *dinp, // (n), may equal dout
                        const float *dout,                 // (n)
                        const float *inp,                  // (n)
                        size_t n) {
  LAUNCH_1D(be, n, relu_bwd_kernel, dinp, dout, inp, n);
}

// ---------------------------------------------------------------- residual add

__global__ static void add_kernel(float *out, const float *a, const float *b, float scale,
                                  size_t n) {
  GRID_STRIDE(i, n) out[i] = (a[i] + b[i]) * scale; // * 1 is exact: no special case needed
}

void cuda_add_forward(const a3_backend *be, float *out, // (n), may equal a or b
                      const float *a,                   // (n)
                      const float *b,                   // (n)
                      float scale, size_t n) {
  LAUNCH_1D(be, n, add_kernel, out, a, b, scale, n);
}

// dout[i] is read once before either write: da or db may be dout itself.
__global__ static void add_bwd_kernel(float *da, float *db, const float *dout, float scale,
                                      size_t n) {
  GRID_STRIDE(i, n) {
    const float g = dout[i] * scale;
    if (da) da[i] = g;
    if (db) db[i] = g;
  }
}

void cuda_add_backward(const a3_backend *be, float *da, // (n) or NULL
                       float *db,                       // (n) or NULL
                       const float *dout,               // (n)
                       float scale, size_t n) {
  if (!da && !db) return;
  LAUNCH_1D(be, n, add_bwd_kernel, da, db, dout, scale, n);
}

// ---------------------------------------------------------------- per-channel add

__global__ static void add_channel_kernel(float *out, const float *inp, const float *t, size_t n,
                                          int HW) {
  GRID_STRIDE(i, n) out[i] = inp[i] + t[i / (size_t)HW];
}

void cuda_add_channel_forward(const a3_backend *be, float *out, // (B, C, HW), may equal inp
                              const float *inp,                 // (B, C, HW)
                              const float *t,                   // (B, C)
                              int B, int C, int HW) {
  const size_t n = (size_t)B * C * HW;
  LAUNCH_1D(be, n, add_channel_kernel, out, inp, t, n, HW);
}

// dt[b, c] = sum over HW of dout[b, c, :]: per plane (cu_plane_sums), in double.
void cuda_add_channel_backward(const a3_backend *be, float *dt, // (B, C) overwritten
                               const float *dout,               // (B, C, HW)
                               int B, int C, int HW) {
  if (HW <= 0) {
    cuda_zero(be, dt, (size_t)B * C);
    return;
  }
  cu_plane_sums(be, dt, dout, B * C, 1, 0, HW, 0);
}

// ---------------------------------------------------------------- gated residual

// a + g * b with the product rounded on its own (no FMA), bit for bit the
// CPU's (activation.c is compiled without FP contraction).
__global__ static void gated_add_kernel(float *out, const float *a, const float *b,
                                        const float *gate, size_t n) {
  const float g = gate[0];
  GRID_STRIDE(i, n) out[i] = __fadd_rn(a[i], __fmul_rn(g, b[i]));
}

void cuda_gated_add_forward(const a3_backend *be, float *out, // (n), may equal a or b
                            const float *a,                   // (n)
                            const float *b,                   // (n)
                            const float *gate,                // (1) device
                            size_t n) {
  LAUNCH_1D(be, n, gated_add_kernel, out, a, b, gate, n);
}

// part[block] = this block's share of sum(x * y), in double; the grid is a
// function of n only (cu_red_blocks), so the sum's order is fixed.
__global__ static void dot_partial_kernel(double *part, const float *x, const float *y, size_t n) {
  double s = 0.0;
  GRID_STRIDE(i, n) s += (double)x[i] * y[i];
  s = cu_block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ static void scale_kernel(float *out, const float *in, const float *gate, size_t n) {
  const float g = gate[0];
  GRID_STRIDE(i, n) out[i] = __fmul_rn(g, in[i]);
}

void cuda_gated_add_backward(const a3_backend *be, float *db, // (n) or NULL, may equal dout
                             float *dgate,                    // (1) +=, or NULL
                             const float *dout,               // (n)
                             const float *b,                  // (n)
                             const float *gate,               // (1) device
                             size_t n) {
  if (dgate) { // queued before db: db may be dout itself
    const unsigned blocks = cu_red_blocks(n);
    double *part = cu_state(be)->red;
    dot_partial_kernel<<<blocks, CU_THREADS, 0, cu_stream(be)>>>(part, dout, b, n);
    if (CU_LAUNCHED(be)) cu_finish_sum(be, dgate, part, blocks, 1.0, 1.0, 1);
  }
  if (db) LAUNCH_1D(be, n, scale_kernel, db, dout, gate, n);
}
