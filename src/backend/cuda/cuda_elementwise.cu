// Elementwise CUDA ops: zero, accumulate, the fp32 <-> activation
// conversions, SiLU, GELU, ReLU, residual add, per-channel add, gated add.
// Grid-stride loops with size_t indices, so any n works with a bounded grid.
// Kernels are templated on the activation storage type T (cuda_internal.h):
// each element is computed in fp32 as the CPU backend computes it
// (src/backend/cpu/elementwise.c, activation.c) and rounded once when
// stored; the few sums (add_channel's dt, gated_add's dgate) are
// fixed-order reductions in double.
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

// LAUNCH_1D of kernel<T>, T the backend's storage type; the arguments may
// name T (cu_t<T>(x)).
#define LAUNCH_ACT(be, n, kernel, ...)                                                             \
  CU_ACT_DISPATCH(be, LAUNCH_1D(be, n, kernel<T>, __VA_ARGS__);)

// ---------------------------------------------------------------- zero, accumulate, conversions

void cuda_zero(const a3_backend *be, float *x, size_t n) {
  if (n) CU_CHECK(be, cudaMemsetAsync(x, 0, n * sizeof(float), cu_stream(be)));
}

// All-zero bits are +0 in fp32 and in bf16 alike.
void cuda_act_zero(const a3_backend *be, a3_act *x, // (n)
                   size_t n) {
  if (n) CU_CHECK(be, cudaMemsetAsync(x, 0, n * be->act_bytes, cu_stream(be)));
}

void cuda_act_from_f32(const a3_backend *be, a3_act *dst, // (n)
                       const float *src,                  // (n)
                       size_t n) {
  if (cu_act_bf16(be)) {
    cu_round_bf16(be, cu_t<__nv_bfloat16>(dst), src, n); // records its own failure
  } else if (n && (const void *)dst != (const void *)src) {
    CU_CHECK(be,
             cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, cu_stream(be)));
  }
}

void cuda_act_to_f32(const a3_backend *be, float *dst, // (n)
                     const a3_act *src,                // (n)
                     size_t n) {
  if (cu_act_bf16(be)) {
    cu_widen_bf16(be, dst, cu_t<__nv_bfloat16>(src), n, 0.0f); // records its own failure
  } else if (n && (const void *)dst != (const void *)src) {
    CU_CHECK(be,
             cudaMemcpyAsync(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice, cu_stream(be)));
  }
}

template <typename T> __global__ static void accumulate_kernel(T *dst, const T *src, size_t n) {
  GRID_STRIDE(i, n) cu_st(&dst[i], cu_ld(&dst[i]) + cu_ld(&src[i]));
}

void cuda_accumulate(const a3_backend *be, a3_act *dst, // (n) +=
                     const a3_act *src,                 // (n)
                     size_t n) {
  LAUNCH_ACT(be, n, accumulate_kernel, cu_t<T>(dst), cu_t<T>(src), n);
}

// ---------------------------------------------------------------- SiLU

template <typename T> __global__ static void silu_kernel(T *out, const T *inp, size_t n) {
  GRID_STRIDE(i, n) {
    const float x = cu_ld(&inp[i]);
    cu_st(&out[i], x * cu_sigmoid(x));
  }
}

void cuda_silu_forward(const a3_backend *be, a3_act *out, // (n), may equal inp
                       const a3_act *inp,                 // (n)
                       size_t n) {
  LAUNCH_ACT(be, n, silu_kernel, cu_t<T>(out), cu_t<T>(inp), n);
}

// d/dx x s(x) = s (1 + x (1 - s)); dout is read before dinp is written
// (they may be the same buffer).
template <typename T>
__global__ static void silu_bwd_kernel(T *dinp, const T *dout, const T *inp, size_t n) {
  GRID_STRIDE(i, n) {
    const float x = cu_ld(&inp[i]), s = cu_sigmoid(x);
    cu_st(&dinp[i], cu_ld(&dout[i]) * (s * (1.0f + x * (1.0f - s))));
  }
}

void cuda_silu_backward(const a3_backend *be, a3_act *dinp, // (n), may equal dout
                        const a3_act *dout,                 // (n)
                        const a3_act *inp,                  // (n)
                        size_t n) {
  LAUNCH_ACT(be, n, silu_bwd_kernel, cu_t<T>(dinp), cu_t<T>(dout), cu_t<T>(inp), n);
}

// ---------------------------------------------------------------- GELU (exact)

// Phi(x) = erfc(-x / sqrt 2) / 2, which does not cancel for negative x.
__device__ static inline float normal_cdf(float x) {
  return 0.5f * erfcf(-x * 0.70710678118654752f);
}

template <typename T> __global__ static void gelu_kernel(T *out, const T *inp, size_t n) {
  GRID_STRIDE(i, n) {
    const float x = cu_ld(&inp[i]);
    cu_st(&out[i], x * normal_cdf(x));
  }
}

void cuda_gelu_forward(const a3_backend *be, a3_act *out, // (n), may equal inp
                       const a3_act *inp,                 // (n)
                       size_t n) {
  LAUNCH_ACT(be, n, gelu_kernel, cu_t<T>(out), cu_t<T>(inp), n);
}

// d/dx x Phi(x) = Phi(x) + x phi(x), phi(x) = e^(-x^2 / 2) / sqrt(2 pi).
template <typename T>
__global__ static void gelu_bwd_kernel(T *dinp, const T *dout, const T *inp, size_t n) {
  GRID_STRIDE(i, n) {
    const float x = cu_ld(&inp[i]);
    const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    cu_st(&dinp[i], cu_ld(&dout[i]) * (normal_cdf(x) + x * pdf));
  }
}

void cuda_gelu_backward(const a3_backend *be, a3_act *dinp, // (n), may equal dout
                        const a3_act *dout,                 // (n)
                        const a3_act *inp,                  // (n)
                        size_t n) {
  LAUNCH_ACT(be, n, gelu_bwd_kernel, cu_t<T>(dinp), cu_t<T>(dout), cu_t<T>(inp), n);
}

// ---------------------------------------------------------------- ReLU

template <typename T> __global__ static void relu_kernel(T *out, const T *inp, size_t n) {
  GRID_STRIDE(i, n) {
    const float x = cu_ld(&inp[i]);
    cu_st(&out[i], x > 0.0f ? x : 0.0f);
  }
}

void cuda_relu_forward(const a3_backend *be, a3_act *out, // (n), may equal inp
                       const a3_act *inp,                 // (n)
                       size_t n) {
  LAUNCH_ACT(be, n, relu_kernel, cu_t<T>(out), cu_t<T>(inp), n);
}

// The derivative at 0 is 0 (PyTorch's threshold_backward).
template <typename T>
__global__ static void relu_bwd_kernel(T *dinp, const T *dout, const T *inp, size_t n) {
  GRID_STRIDE(i, n) cu_st(&dinp[i], cu_ld(&inp[i]) > 0.0f ? cu_ld(&dout[i]) : 0.0f);
}

void cuda_relu_backward(const a3_backend *be, a3_act *dinp, // (n), may equal dout
                        const a3_act *dout,                 // (n)
                        const a3_act *inp,                  // (n)
                        size_t n) {
  LAUNCH_ACT(be, n, relu_bwd_kernel, cu_t<T>(dinp), cu_t<T>(dout), cu_t<T>(inp), n);
}

// ---------------------------------------------------------------- residual add

template <typename T>
__global__ static void add_kernel(T *out, const T *a, const T *b, float scale, size_t n) {
  // * 1 is exact: no special case needed
  GRID_STRIDE(i, n) cu_st(&out[i], (cu_ld(&a[i]) + cu_ld(&b[i])) * scale);
}

void cuda_add_forward(const a3_backend *be, a3_act *out, // (n), may equal a or b
                      const a3_act *a,                   // (n)
                      const a3_act *b,                   // (n)
                      float scale, size_t n) {
  LAUNCH_ACT(be, n, add_kernel, cu_t<T>(out), cu_t<T>(a), cu_t<T>(b), scale, n);
}

// dout[i] is read once before either write: da or db may be dout itself.
template <typename T>
__global__ static void add_bwd_kernel(T *da, T *db, const T *dout, float scale, size_t n) {
  GRID_STRIDE(i, n) {
    const float g = cu_ld(&dout[i]) * scale;
    if (da) cu_st(&da[i], g);
    if (db) cu_st(&db[i], g);
  }
}

void cuda_add_backward(const a3_backend *be, a3_act *da, // (n) or NULL
                       a3_act *db,                       // (n) or NULL
                       const a3_act *dout,               // (n)
                       float scale, size_t n) {
  if (!da && !db) return;
  LAUNCH_ACT(be, n, add_bwd_kernel, cu_t<T>(da), cu_t<T>(db), cu_t<T>(dout), scale, n);
}

// ---------------------------------------------------------------- per-channel add

template <typename T>
__global__ static void add_channel_kernel(T *out, const T *inp, const T *t, size_t n, int HW) {
  GRID_STRIDE(i, n) cu_st(&out[i], cu_ld(&inp[i]) + cu_ld(&t[i / (size_t)HW]));
}

void cuda_add_channel_forward(const a3_backend *be, a3_act *out, // (B, C, HW), may equal inp
                              const a3_act *inp,                 // (B, C, HW)
                              const a3_act *t,                   // (B, C)
                              int B, int C, int HW) {
  const size_t n = (size_t)B * C * HW;
  LAUNCH_ACT(be, n, add_channel_kernel, cu_t<T>(out), cu_t<T>(inp), cu_t<T>(t), n, HW);
}

// dt[j] = sum of row j of x, in double, rounded to fp32 (and then to bf16
// when that is the storage: as the fp32 op's result would be). The sum is
// cu_plane_sums' with outer 1, term for term: the row cut into the same S
// pieces (cu_plane_pieces), each piece's per-thread sums block-summed, and
// the pieces added in order from 0.0 (cu_finish_plane_parts; with S = 1 the
// 0.0 + piece is the piece itself, as no sum here can be -0.0).
template <typename T>
__global__ static void row_sums_kernel(T *dt, const T *x, int J, int S, int HW) {
  for (int j = blockIdx.x; j < J; j += gridDim.x) {
    const T *row = x + (size_t)j * HW;
    double t = 0.0;
    for (int s = 0; s < S; s++) {
      const size_t begin = (size_t)HW * s / (size_t)S, end = (size_t)HW * (s + 1) / (size_t)S;
      double sum = 0.0;
      for (size_t i = begin + threadIdx.x; i < end; i += blockDim.x) sum += cu_ld(&row[i]);
      t += cu_block_sum(sum);
    }
    if (threadIdx.x == 0) cu_st(&dt[j], (float)t);
  }
}

// dt[b, c] = sum over HW of dout[b, c, :], one block per plane.
void cuda_add_channel_backward(const a3_backend *be, a3_act *dt, // (B, C) overwritten
                               const a3_act *dout,               // (B, C, HW)
                               int B, int C, int HW) {
  const int J = B * C;
  if (J <= 0) return;
  if (HW <= 0) {
    cuda_act_zero(be, dt, (size_t)J);
    return;
  }
  const int S = cu_plane_pieces(J, (size_t)HW);
  const unsigned grid = cu_grid(J);
  const cudaStream_t stream = cu_stream(be);
  CU_ACT_DISPATCH(be, {
    row_sums_kernel<T><<<grid, CU_THREADS, 0, stream>>>(cu_t<T>(dt), cu_t<T>(dout), J, S, HW);
    CU_LAUNCHED(be);
  });
}

// ---------------------------------------------------------------- gated residual

// a + g * b with the product rounded on its own (no FMA), bit for bit the
// CPU's (activation.c is compiled without FP contraction).
template <typename T>
__global__ static void gated_add_kernel(T *out, const T *a, const T *b, const float *gate,
                                        size_t n) {
  const float g = gate[0];
  GRID_STRIDE(i, n) cu_st(&out[i], __fadd_rn(cu_ld(&a[i]), __fmul_rn(g, cu_ld(&b[i]))));
}

void cuda_gated_add_forward(const a3_backend *be, a3_act *out, // (n), may equal a or b
                            const a3_act *a,                   // (n)
                            const a3_act *b,                   // (n)
                            const float *gate,                 // (1) device
                            size_t n) {
  LAUNCH_ACT(be, n, gated_add_kernel, cu_t<T>(out), cu_t<T>(a), cu_t<T>(b), gate, n);
}

// part[block] = this block's share of sum(x * y), in double; the grid is a
// function of n only (cu_red_blocks), so the sum's order is fixed.
template <typename T>
__global__ static void dot_partial_kernel(double *part, const T *x, const T *y, size_t n) {
  double s = 0.0;
  GRID_STRIDE(i, n) s += (double)cu_ld(&x[i]) * cu_ld(&y[i]);
  s = cu_block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

template <typename T>
__global__ static void scale_kernel(T *out, const T *in, const float *gate, size_t n) {
  const float g = gate[0];
  GRID_STRIDE(i, n) cu_st(&out[i], __fmul_rn(g, cu_ld(&in[i])));
}

void cuda_gated_add_backward(const a3_backend *be, a3_act *db, // (n) or NULL, may equal dout
                             float *dgate,                     // (1) +=, or NULL
                             const a3_act *dout,               // (n)
                             const a3_act *b,                  // (n)
                             const float *gate,                // (1) device
                             size_t n) {
  if (dgate) { // queued before db: db may be dout itself
    const unsigned blocks = cu_red_blocks(n);
    double *part = cu_state(be)->red;
    const cudaStream_t stream = cu_stream(be);
    int ok = 0;
    CU_ACT_DISPATCH(be, {
      dot_partial_kernel<T><<<blocks, CU_THREADS, 0, stream>>>(part, cu_t<T>(dout), cu_t<T>(b), n);
      ok = CU_LAUNCHED(be);
    });
    if (ok) cu_finish_sum(be, dgate, part, blocks, 1.0, 1.0, 1);
  }
  if (db) LAUNCH_ACT(be, n, scale_kernel, cu_t<T>(db), cu_t<T>(dout), gate, n);
}
