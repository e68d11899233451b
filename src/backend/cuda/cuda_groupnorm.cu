// GroupNorm, and GroupNorm + SiLU fused, on CUDA. Group g of image b is one
// contiguous block of n = (C/G) * HW floats (at (b * G + g) * n).
//
// Forward: one thread block per (b, g): the mean, then the biased variance
// two-pass around it (no E[x^2] - E[x]^2 cancellation), both summed in
// double, then the output pass (SiLU applied when fused).
// Backward, two kernels so that nothing needs scratch memory and no sum is
// split across blocks:
//   - dinp: one block per (b, g): sums of dxhat and dxhat * xhat over the
//     group, then dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat));
//   - dweight, dbias: one block per channel c, summing dz * xhat and dz over
//     (b, HW) in double and adding (+=) once.
// dz is dout for plain GroupNorm, or dout * silu'(z) at the recomputed
// z = xhat * weight[c] + bias[c] when fused; dxhat = dz * weight[c].
#include "cuda_internal.h"

#include <limits.h>

enum { GN_THREADS = 512 };

// ---------------------------------------------------------------- forward

__global__ static void gn_forward_kernel(float *out, float *mean, float *rstd, const float *inp,
                                         const float *weight, const float *bias, int BG, int G,
                                         int CG, int HW, float eps, int silu) {
  const int n = CG * HW; // gn_fits_int: 32-bit index arithmetic (64-bit division is slow)
  for (int bg = blockIdx.x; bg < BG; bg += gridDim.x) {
    const float *x = inp + (size_t)bg * n;
    float *y = out + (size_t)bg * n;
    const int c0 = (bg % G) * CG; // first channel of the group
    double s = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s += x[i];
    s = cu_block_sum(s);
    const float mu = (float)(s / (double)n);
    double q = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const float d = x[i] - mu;
      q += (double)d * d;
    }
    q = cu_block_sum(q);
    const float rs = (float)(1.0 / sqrt(q / (double)n + eps));
    if (threadIdx.x == 0) mean[bg] = mu, rstd[bg] = rs; // every thread has mu and rs
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int c = c0 + i / HW;
      // Centre first, then scale (as the CPU): folding the mean into a
      // shift cancels badly when |mean| >> std.
      const float z = (x[i] - mu) * (rs * weight[c]) + bias[c];
      y[i] = silu ? z * cu_sigmoid(z) : z;
    }
  }
}

// The kernels index a group (C/G * HW) and a channel's pixels over the batch
// (B * HW) with int: true for any model this side of 2^31 floats per channel.
static int gn_fits_int(const a3_backend *be, int B, int C, int HW, int G) {
  if ((long long)(C / G) * HW <= INT_MAX && (long long)B * HW <= INT_MAX) return 1;
  return CU_CHECK(be, cudaErrorInvalidValue); // records the op and file:line
}

static void gn_forward(const a3_backend *be, float *out, float *mean, float *rstd, const float *inp,
                       const float *weight, const float *bias, int B, int C, int HW, int G,
                       float eps, int silu) {
  const int BG = B * G;
  if (BG <= 0 || !gn_fits_int(be, B, C, HW, G)) return;
  const unsigned blocks = cu_grid(BG);
  gn_forward_kernel<<<blocks, GN_THREADS, 0, cu_stream(be)>>>(out, mean, rstd, inp, weight, bias,
                                                              BG, G, C / G, HW, eps, silu);
  CU_LAUNCHED(be);
}

void cuda_groupnorm_forward(const a3_backend *be,
                            float *out,          // (B, C, HW)
                            float *mean,         // (B, G)
                            float *rstd,         // (B, G)
                            const float *inp,    // (B, C, HW)
                            const float *weight, // (C)
                            const float *bias,   // (C)
                            int B, int C, int HW, int G, float eps) {
  gn_forward(be, out, mean, rstd, inp, weight, bias, B, C, HW, G, eps, 0);
}

void cuda_groupnorm_silu_forward(const a3_backend *be,
                                 float *out,          // (B, C, HW)
                                 float *mean,         // (B, G)
                                 float *rstd,         // (B, G)
                                 const float *inp,    // (B, C, HW)
                                 const float *weight, // (C)
                                 const float *bias,   // (C)
                                 int B, int C, int HW, int G, float eps) {
  gn_forward(be, out, mean, rstd, inp, weight, bias, B, C, HW, G, eps, 1);
}

// ---------------------------------------------------------------- backward

// The gradient reaching z = xhat * w + bb: dy itself, or dy * silu'(z).
__device__ static inline float gn_dz(float dy, float xhat, float w, float bb, int silu) {
  if (!silu) return dy;
  const float z = xhat * w + bb;
  const float s = cu_sigmoid(z);
  return dy * (s * (1.0f + z * (1.0f - s)));
}

// dinp for one (b, g) per block (bias is read only when silu).
__global__ static void gn_dinp_kernel(float *dinp, const float *dout, const float *inp,
                                      const float *weight, const float *bias, const float *mean,
                                      const float *rstd, int BG, int G, int CG, int HW, int silu) {
  const int n = CG * HW; // gn_fits_int
  for (int bg = blockIdx.x; bg < BG; bg += gridDim.x) {
    const size_t base = (size_t)bg * n;
    const int c0 = (bg % G) * CG;
    const float mu = mean[bg], rs = rstd[bg];
    double s1 = 0.0, s2 = 0.0; // sums of dxhat and dxhat * xhat
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int c = c0 + i / HW;
      const float xhat = (inp[base + i] - mu) * rs;
      const float w = weight[c];
      const float dz = gn_dz(dout[base + i], xhat, w, silu ? bias[c] : 0.0f, silu);
      const double dxhat = (double)dz * w;
      s1 += dxhat;
      s2 += dxhat * xhat;
    }
    s1 = cu_block_sum(s1);
    s2 = cu_block_sum(s2);
    const float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int c = c0 + i / HW;
      const float xhat = (inp[base + i] - mu) * rs;
      const float w = weight[c];
      const float dz = gn_dz(dout[base + i], xhat, w, silu ? bias[c] : 0.0f, silu);
      dinp[base + i] = rs * (dz * w - m1 - xhat * m2);
    }
  }
}

// dweight[c] += sum dz * xhat, dbias[c] += sum dz over (b, HW); one block per c.
__global__ static void gn_dparam_kernel(float *dweight, float *dbias, const float *dout,
                                        const float *inp, const float *weight, const float *bias,
                                        const float *mean, const float *rstd, int B, int C, int HW,
                                        int G, int silu) {
  const int CG = C / G;
  const int n = B * HW; // gn_fits_int
  for (int c = blockIdx.x; c < C; c += gridDim.x) {
    const int g = c / CG;
    const float w = weight[c], bb = silu ? bias[c] : 0.0f;
    double s_dz = 0.0, s_dzx = 0.0;
    for (int i = threadIdx.x; i < n; i += blockDim.x) {
      const int b = i / HW;
      const size_t at = ((size_t)b * C + c) * HW + (i - b * HW);
      const float xhat = (inp[at] - mean[b * G + g]) * rstd[b * G + g];
      const float dz = gn_dz(dout[at], xhat, w, bb, silu);
      s_dz += dz;
      s_dzx += (double)dz * xhat;
    }
    s_dz = cu_block_sum(s_dz);
    s_dzx = cu_block_sum(s_dzx);
    if (threadIdx.x == 0) {
      if (dweight) dweight[c] += (float)s_dzx;
      if (dbias) dbias[c] += (float)s_dz;
    }
  }
}

static void gn_backward(const a3_backend *be, float *dinp, float *dweight, float *dbias,
                        const float *dout, const float *inp, const float *weight, const float *bias,
                        const float *mean, const float *rstd, int B, int C, int HW, int G,
                        int silu) {
  const int BG = B * G;
  if (BG <= 0 || !gn_fits_int(be, B, C, HW, G)) return;
  if (dweight || dbias) {
    const unsigned blocks = cu_grid(C);
    gn_dparam_kernel<<<blocks, GN_THREADS, 0, cu_stream(be)>>>(dweight, dbias, dout, inp, weight,
                                                               bias, mean, rstd, B, C, HW, G, silu);
    CU_LAUNCHED(be);
  }
  if (dinp) {
    const unsigned blocks = cu_grid(BG);
    gn_dinp_kernel<<<blocks, GN_THREADS, 0, cu_stream(be)>>>(dinp, dout, inp, weight, bias, mean,
                                                             rstd, BG, G, C / G, HW, silu);
    CU_LAUNCHED(be);
  }
}

void cuda_groupnorm_backward(const a3_backend *be,
                             float *dinp,         // (B, C, HW) overwritten, or NULL
                             float *dweight,      // (C) +=, or NULL
                             float *dbias,        // (C) +=, or NULL
                             const float *dout,   // (B, C, HW)
                             const float *inp,    // (B, C, HW)
                             const float *weight, // (C)
                             const float *mean,   // (B, G)
                             const float *rstd,   // (B, G)
                             int B, int C, int HW, int G) {
  gn_backward(be, dinp, dweight, dbias, dout, inp, weight, NULL, mean, rstd, B, C, HW, G, 0);
}

void cuda_groupnorm_silu_backward(const a3_backend *be,
                                  float *dinp,         // (B, C, HW) overwritten, or NULL
                                  float *dweight,      // (C) +=, or NULL
                                  float *dbias,        // (C) +=, or NULL
                                  const float *dout,   // (B, C, HW)
                                  const float *inp,    // (B, C, HW)
                                  const float *weight, // (C)
                                  const float *bias,   // (C)
                                  const float *mean,   // (B, G)
                                  const float *rstd,   // (B, G)
                                  int B, int C, int HW, int G) {
  gn_backward(be, dinp, dweight, dbias, dout, inp, weight, bias, mean, rstd, B, C, HW, G, 1);
}
