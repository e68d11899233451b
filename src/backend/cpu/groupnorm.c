// GroupNorm on the CPU. Group g of image b is one contiguous block of
// n = (C/G) * HW floats, so statistics are plain reductions over it.
// Sums are accumulated in double: a group can hold 10^5 values (e.g. 8
// channels of 128x128), where a float running sum would lose digits, and
// the variance is taken two-pass around the mean (no E[x^2] - E[x]^2
// cancellation).
#include "cpu_ops.h"

#include <math.h>

void cpu_groupnorm_forward(const a3_backend *be,
                           float *out,          // (B, C, HW)
                           float *mean,         // (B, G)
                           float *rstd,         // (B, G)
                           const float *inp,    // (B, C, HW)
                           const float *weight, // (C)
                           const float *bias,   // (C)
                           int B, int C, int HW, int G, float eps) {
  (void)be;
  const int CG = C / G;
  const size_t n = (size_t)CG * HW;
  for (int b = 0; b < B; b++) {
    for (int g = 0; g < G; g++) {
      const size_t base = ((size_t)b * C + (size_t)g * CG) * HW;
      const float *x = inp + base;
      double sum = 0.0;
      for (size_t i = 0; i < n; i++) sum += x[i];
      const double mu = sum / (double)n;
      double sq = 0.0;
      for (size_t i = 0; i < n; i++) sq += (x[i] - mu) * (x[i] - mu);
      const double rs = 1.0 / sqrt(sq / (double)n + eps);
      mean[b * G + g] = (float)mu;
      rstd[b * G + g] = (float)rs;
      for (int cc = 0; cc < CG; cc++) {
        const int c = g * CG + cc;
        // Centre first, then scale: folding the mean into a shift
        // (x * scale + (bias - mean * scale)) cancels badly when |mean| >> std.
        const float m = (float)mu, scale = (float)rs * weight[c], shift = bias[c];
        const float *xc = x + (size_t)cc * HW;
        float *yc = out + base + (size_t)cc * HW;
        for (int i = 0; i < HW; i++) yc[i] = (xc[i] - m) * scale + shift;
      }
    }
  }
}

// With xhat = (x - mean) * rstd and dxhat = dout * weight[c], over the n
// values of a group:
//   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
//   dweight[c] += sum(dout * xhat), dbias[c] += sum(dout) over (b, HW).
static void groupnorm_backward_group(float *dinp, float *dweight, float *dbias, const float *dout,
                                     const float *inp, const float *weight, float mu, float rs,
                                     int c0, int CG, int HW) {
  double sum_dxhat = 0.0, sum_dxhat_xhat = 0.0;
  for (int cc = 0; cc < CG; cc++) {
    const float *x = inp + (size_t)cc * HW, *dy = dout + (size_t)cc * HW;
    double s_dy = 0.0, s_dy_xhat = 0.0;
    for (int i = 0; i < HW; i++) {
      const double xhat = (x[i] - mu) * rs;
      s_dy += dy[i];
      s_dy_xhat += dy[i] * xhat;
    }
    if (dweight) dweight[c0 + cc] += (float)s_dy_xhat;
    if (dbias) dbias[c0 + cc] += (float)s_dy;
    sum_dxhat += s_dy * weight[c0 + cc];
    sum_dxhat_xhat += s_dy_xhat * weight[c0 + cc];
  }
  if (!dinp) return;
  const double n = (double)CG * HW;
  const float m1 = (float)(sum_dxhat / n), m2 = (float)(sum_dxhat_xhat / n);
  for (int cc = 0; cc < CG; cc++) {
    const float *x = inp + (size_t)cc * HW, *dy = dout + (size_t)cc * HW;
    float *dx = dinp + (size_t)cc * HW;
    const float w = weight[c0 + cc];
    for (int i = 0; i < HW; i++) {
      const float xhat = (x[i] - mu) * rs;
      dx[i] = rs * (dy[i] * w - m1 - xhat * m2);
    }
  }
}

void cpu_groupnorm_backward(const a3_backend *be,
                            float *dinp,         // (B, C, HW) or NULL
                            float *dweight,      // (C) or NULL
                            float *dbias,        // (C) or NULL
                            const float *dout,   // (B, C, HW)
                            const float *inp,    // (B, C, HW)
                            const float *weight, // (C)
                            const float *mean,   // (B, G)
                            const float *rstd,   // (B, G)
                            int B, int C, int HW, int G) {
  (void)be;
  const int CG = C / G;
  for (int b = 0; b < B; b++) {
    for (int g = 0; g < G; g++) {
      const size_t base = ((size_t)b * C + (size_t)g * CG) * HW;
      groupnorm_backward_group(dinp ? dinp + base : NULL, dweight, dbias, dout + base, inp + base,
                               weight, mean[b * G + g], rstd[b * G + g], g * CG, CG, HW);
    }
  }
}
