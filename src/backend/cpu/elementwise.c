// Elementwise CPU ops: zero, accumulate, SiLU, residual add, per-channel add.
#include "cpu_ops.h"

#include <math.h>
#include <string.h>

void cpu_zero(const a3_backend *be, float *x, size_t n) {
  (void)be;
  memset(x, 0, n * sizeof(float));
}

void cpu_accumulate(const a3_backend *be, float *dst, const float *src, size_t n) {
  (void)be;
  for (size_t i = 0; i < n; i++) dst[i] += src[i];
}

// 1 / (1 + e^-x): for x << 0 e^-x is +inf and the result a clean 0, never NaN.
static inline float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

void cpu_silu_forward(const a3_backend *be, float *out, const float *inp, size_t n) {
  (void)be;
  for (size_t i = 0; i < n; i++) out[i] = inp[i] * sigmoidf(inp[i]);
}

// d/dx x s(x) = s (1 + x (1 - s)).
void cpu_silu_backward(const a3_backend *be, float *dinp, const float *dout, const float *inp,
                       size_t n) {
  (void)be;
  for (size_t i = 0; i < n; i++) {
    const float s = sigmoidf(inp[i]);
    dinp[i] = dout[i] * s * (1.0f + inp[i] * (1.0f - s));
  }
}

void cpu_add_forward(const a3_backend *be, float *out, const float *a, const float *b, float scale,
                     size_t n) {
  (void)be;
  if (scale == 1.0f) {
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
  } else {
    for (size_t i = 0; i < n; i++) out[i] = (a[i] + b[i]) * scale;
  }
}

void cpu_add_backward(const a3_backend *be, float *da, float *db, const float *dout, float scale,
                      size_t n) {
  (void)be;
  // One pass reading dout[i] before writing: da or db may be dout itself.
  for (size_t i = 0; i < n; i++) {
    const float g = dout[i] * scale;
    if (da) da[i] = g;
    if (db) db[i] = g;
  }
}

void cpu_add_channel_forward(const a3_backend *be,
                             float *out,       // (B, C, HW)
                             const float *inp, // (B, C, HW)
                             const float *t,   // (B, C)
                             int B, int C, int HW) {
  (void)be;
  for (size_t bc = 0; bc < (size_t)B * C; bc++) {
    const float *x = inp + bc * HW;
    float *y = out + bc * HW;
    for (int i = 0; i < HW; i++) y[i] = x[i] + t[bc];
  }
}

void cpu_add_channel_backward(const a3_backend *be,
                              float *dt,         // (B, C)
                              const float *dout, // (B, C, HW)
                              int B, int C, int HW) {
  (void)be;
  for (size_t bc = 0; bc < (size_t)B * C; bc++) {
    double sum = 0.0;
    for (int i = 0; i < HW; i++) sum += dout[bc * HW + i];
    dt[bc] = (float)sum;
  }
}
