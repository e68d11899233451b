// GroupNorm, and GroupNorm + SiLU fused, on the CPU. Group g of image b is
// one contiguous block of n = (C/G) * HW floats, so statistics are plain
// reductions over it. Sums run in float over chunks of 256 values and add
// the chunks in double: a group can hold 10^5 values (e.g. 8 channels of
// 128x128), where one float running sum would lose digits, while converting
// every value to double cost 2-3x; the variance is taken two-pass around the
// mean (no E[x^2] - E[x]^2 cancellation).
//
// Threads (OpenMP): the forwards split the B*G blocks over threads. The
// backwards split the G groups (each thread loops over the images of its
// groups), so each channel's dweight/dbias is summed by one thread in image
// order: the result does not depend on the thread count, and needs no
// scratch. A block is small (16 KB at 4 channels of 32x32) and is read again
// from L1/L2 by the second pass.
//
// The fused op computes silu(groupnorm(x)) in the output pass of the
// forward; its backward recomputes z = groupnorm(x) and sigmoid(z) from x,
// mean, rstd, weight and bias, so the normalised tensor is never stored.
#include "cpu_ops.h"

#include <math.h>

CPU_FP_CONTRACT

// Reductions run in float over chunks of RED_CHUNK values (16 per lane of an
// AVX-512 vector: no digits lost to a long running sum) and add the chunks in
// double; converting every value to double made them 2-3x slower.
enum { RED_CHUNK = 256 };

// mean and 1 / sqrt(var + eps) of x[0, n); the variance two-pass around the
// mean (rounded to float, which shifts the variance by (mean error)^2 only).
CPU_CLONES static void group_stats(const float *x, size_t n, float eps, float *mean, float *rstd) {
  double sum = 0.0;
  for (size_t i0 = 0; i0 < n; i0 += RED_CHUNK) {
    const size_t i1 = i0 + RED_CHUNK < n ? i0 + RED_CHUNK : n;
    float part = 0.0f;
#pragma omp simd reduction(+ : part)
    for (size_t i = i0; i < i1; i++) part += x[i];
    sum += part;
  }
  const float mu = (float)(sum / (double)n);
  double sq = 0.0;
  for (size_t i0 = 0; i0 < n; i0 += RED_CHUNK) {
    const size_t i1 = i0 + RED_CHUNK < n ? i0 + RED_CHUNK : n;
    float part = 0.0f;
#pragma omp simd reduction(+ : part)
    for (size_t i = i0; i < i1; i++) part += (x[i] - mu) * (x[i] - mu);
    sq += part;
  }
  *mean = mu;
  *rstd = (float)(1.0 / sqrt(sq / (double)n + eps));
}

// One block: y = (x - mean) * rstd * weight[c] + bias[c] over its CG
// channels, then SiLU when silu is set.
CPU_CLONES static void group_apply(float *y, const float *x, const float *weight, const float *bias,
                                   float m, float rs, int CG, int HW, int silu) {
  for (int cc = 0; cc < CG; cc++) {
    // Centre first, then scale: folding the mean into a shift
    // (x * scale + (bias - mean * scale)) cancels badly when |mean| >> std.
    const float scale = rs * weight[cc], shift = bias[cc];
    const float *xc = x + (size_t)cc * HW;
    float *yc = y + (size_t)cc * HW;
    if (silu) {
#pragma omp simd
      for (int i = 0; i < HW; i++) {
        const float z = (xc[i] - m) * scale + shift;
        yc[i] = z * cpu_sigmoidf(z);
      }
    } else {
#pragma omp simd
      for (int i = 0; i < HW; i++) yc[i] = (xc[i] - m) * scale + shift;
    }
  }
}

static void gn_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                       const float *bias, int B, int C, int HW, int G, float eps, int silu) {
  const int CG = C / G;
  const size_t n = (size_t)CG * HW;
  const long blocks = (long)B * G;
#pragma omp parallel for schedule(static) if (blocks * (long)n >= CPU_PAR_MIN)
  for (long bg = 0; bg < blocks; bg++) {
    const int g = (int)(bg % G);
    const size_t base = (size_t)bg * n; // ((b * C + g * CG) * HW)
    group_stats(inp + base, n, eps, &mean[bg], &rstd[bg]);
    group_apply(out + base, inp + base, weight + g * CG, bias + g * CG, mean[bg], rstd[bg], CG, HW,
                silu);
  }
}

void cpu_groupnorm_forward(const a3_backend *be,
                           a3_act *out_act,       // (B, C, HW)
                           float *mean,           // (B, G)
                           float *rstd,           // (B, G)
                           const a3_act *inp_act, // (B, C, HW)
                           const float *weight,   // (C)
                           const float *bias,     // (C)
                           int B, int C, int HW, int G, float eps) {
  float *out = a3_f32_act(out_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  gn_forward(out, mean, rstd, inp, weight, bias, B, C, HW, G, eps, 0);
}

void cpu_groupnorm_silu_forward(const a3_backend *be,
                                a3_act *out_act,       // (B, C, HW)
                                float *mean,           // (B, G)
                                float *rstd,           // (B, G)
                                const a3_act *inp_act, // (B, C, HW)
                                const float *weight,   // (C)
                                const float *bias,     // (C)
                                int B, int C, int HW, int G, float eps) {
  float *out = a3_f32_act(out_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  gn_forward(out, mean, rstd, inp, weight, bias, B, C, HW, G, eps, 1);
}

// The backward of one block, with xhat = (x - mean) * rstd and
// dxhat = dz * weight[c], where dz is dout (plain GroupNorm) or, fused,
// dout * silu'(z) at z = xhat * weight[c] + bias[c]:
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
//   dweight[c] += sum(dz * xhat), dbias[c] += sum(dz) over (b, HW).
// Pass 1 sums per channel (and, fused, leaves dz in dinp); pass 2 writes dx.
CPU_CLONES static void group_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                      const float *inp, const float *weight, const float *bias,
                                      float mu, float rs, int CG, int HW, int silu) {
  double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
  for (int cc = 0; cc < CG; cc++) {
    const float *x = inp + (size_t)cc * HW, *dy = dout + (size_t)cc * HW;
    double s_dz = 0.0, s_dz_xhat = 0.0;
    const float w = weight[cc], bb = silu ? bias[cc] : 0.0f;
    float *dz_out = silu && dinp ? dinp + (size_t)cc * HW : NULL;
    for (int i0 = 0; i0 < HW; i0 += RED_CHUNK) { // float chunks, summed in double
      const int i1 = i0 + RED_CHUNK < HW ? i0 + RED_CHUNK : HW;
      float p_dz = 0.0f, p_dz_xhat = 0.0f;
      if (silu && dz_out) {
#pragma omp simd reduction(+ : p_dz, p_dz_xhat)
        for (int i = i0; i < i1; i++) {
          const float xhat = (x[i] - mu) * rs;
          const float z = xhat * w + bb;
          const float s = cpu_sigmoidf(z);
          const float dz = dy[i] * (s * (1.0f + z * (1.0f - s)));
          dz_out[i] = dz;
          p_dz += dz;
          p_dz_xhat += dz * xhat;
        }
      } else if (silu) {
#pragma omp simd reduction(+ : p_dz, p_dz_xhat)
        for (int i = i0; i < i1; i++) {
          const float xhat = (x[i] - mu) * rs;
          const float z = xhat * w + bb;
          const float s = cpu_sigmoidf(z);
          const float dz = dy[i] * (s * (1.0f + z * (1.0f - s)));
          p_dz += dz;
          p_dz_xhat += dz * xhat;
        }
      } else {
#pragma omp simd reduction(+ : p_dz, p_dz_xhat)
        for (int i = i0; i < i1; i++) {
          const float xhat = (x[i] - mu) * rs;
          p_dz += dy[i];
          p_dz_xhat += dy[i] * xhat;
        }
      }
      s_dz += p_dz;
      s_dz_xhat += p_dz_xhat;
    }
    if (dweight) dweight[cc] += (float)s_dz_xhat;
    if (dbias) dbias[cc] += (float)s_dz;
    sum_dxhat += s_dz * weight[cc];
    sum_dxhat_xhat += s_dz_xhat * weight[cc];
  }
  if (!dinp) return;
  const double n = (double)CG * HW;
  const float m1 = (float)(sum_dxhat / n), m2 = (float)(sum_dxhat_xhat / n);
  for (int cc = 0; cc < CG; cc++) {
    const float *x = inp + (size_t)cc * HW;
    const float *dz = silu ? dinp + (size_t)cc * HW : dout + (size_t)cc * HW;
    float *dx = dinp + (size_t)cc * HW;
    const float w = weight[cc];
#pragma omp simd
    for (int i = 0; i < HW; i++) {
      const float xhat = (x[i] - mu) * rs;
      dx[i] = rs * (dz[i] * w - m1 - xhat * m2);
    }
  }
}

static void gn_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, const float *bias, const float *mean,
                        const float *rstd, int B, int C, int HW, int G, int silu) {
  const int CG = C / G;
  const size_t n = (size_t)CG * HW;
#pragma omp parallel for schedule(static) if ((long)B * G * (long)n >= CPU_PAR_MIN)
  for (int g = 0; g < G; g++) {
    for (int b = 0; b < B; b++) {
      const size_t base = ((size_t)b * G + g) * n;
      group_backward(dinp ? dinp + base : NULL, dweight ? dweight + g * CG : NULL,
                     dbias ? dbias + g * CG : NULL, dout + base, inp + base, weight + g * CG,
                     bias ? bias + g * CG : NULL, mean[b * G + g], rstd[b * G + g], CG, HW, silu);
    }
  }
}

void cpu_groupnorm_backward(const a3_backend *be,
                            a3_act *dinp_act,       // (B, C, HW) or NULL
                            float *dweight,         // (C) or NULL
                            float *dbias,           // (C) or NULL
                            const a3_act *dout_act, // (B, C, HW)
                            const a3_act *inp_act,  // (B, C, HW)
                            const float *weight,    // (C)
                            const float *mean,      // (B, G)
                            const float *rstd,      // (B, G)
                            int B, int C, int HW, int G) {
  float *dinp = a3_f32_act(dinp_act);
  const float *dout = a3_f32_cact(dout_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  gn_backward(dinp, dweight, dbias, dout, inp, weight, NULL, mean, rstd, B, C, HW, G, 0);
}

void cpu_groupnorm_silu_backward(const a3_backend *be,
                                 a3_act *dinp_act,       // (B, C, HW) or NULL
                                 float *dweight,         // (C) or NULL
                                 float *dbias,           // (C) or NULL
                                 const a3_act *dout_act, // (B, C, HW)
                                 const a3_act *inp_act,  // (B, C, HW)
                                 const float *weight,    // (C)
                                 const float *bias,      // (C)
                                 const float *mean,      // (B, G)
                                 const float *rstd,      // (B, G)
                                 int B, int C, int HW, int G) {
  float *dinp = a3_f32_act(dinp_act);
  const float *dout = a3_f32_cact(dout_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  gn_backward(dinp, dweight, dbias, dout, inp, weight, bias, mean, rstd, B, C, HW, G, 1);
}
