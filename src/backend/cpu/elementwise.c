// Elementwise CPU ops: zero, fp32 <-> activation copies, accumulate, SiLU,
// residual add, per-channel add. Each loop is vectorised (omp simd,
// AVX-512/AVX2 clones) and split over OpenMP threads when it is long enough
// (CPU_PAR_MIN) to repay a parallel region; every element is computed the
// same way whatever the split, so the results do not depend on the thread
// count.
#include "cpu_ops.h"

#include <math.h>
#include <string.h>

CPU_FP_CONTRACT

void cpu_zero(const a3_backend *be, float *x, size_t n) {
  (void)be;
  memset(x, 0, n * sizeof(float));
}

void cpu_act_zero(const a3_backend *be, a3_act *x, size_t n) { cpu_zero(be, a3_f32_act(x), n); }

// Activations are fp32 on the CPU, so both conversions are exact copies.
void cpu_act_from_f32(const a3_backend *be, a3_act *dst, const float *src, size_t n) {
  (void)be;
  if (n) memmove(dst, src, n * sizeof(float));
}

void cpu_act_to_f32(const a3_backend *be, float *dst, const a3_act *src, size_t n) {
  (void)be;
  if (n) memmove(dst, src, n * sizeof(float));
}

CPU_CLONES static void acc_range(float *dst, const float *src, size_t lo, size_t hi) {
#pragma omp simd
  for (size_t i = lo; i < hi; i++) dst[i] += src[i];
}

void cpu_accumulate(const a3_backend *be, a3_act *dst_act, const a3_act *src_act, size_t n) {
  float *dst = a3_f32_act(dst_act);
  const float *src = a3_f32_cact(src_act);
  (void)be;
  CPU_PAR_CHUNKS(n, acc_range(dst, src, lo, hi));
}

CPU_CLONES static void silu_range(float *out, const float *inp, size_t lo, size_t hi) {
#pragma omp simd
  for (size_t i = lo; i < hi; i++) out[i] = inp[i] * cpu_sigmoidf(inp[i]);
}

void cpu_silu_forward(const a3_backend *be, a3_act *out_act, const a3_act *inp_act, size_t n) {
  float *out = a3_f32_act(out_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  CPU_PAR_CHUNKS(n, silu_range(out, inp, lo, hi));
}

// d/dx x s(x) = s (1 + x (1 - s)).
CPU_CLONES static void silu_bwd_range(float *dinp, const float *dout, const float *inp, size_t lo,
                                      size_t hi) {
#pragma omp simd
  for (size_t i = lo; i < hi; i++) {
    const float s = cpu_sigmoidf(inp[i]);
    dinp[i] = dout[i] * (s * (1.0f + inp[i] * (1.0f - s)));
  }
}

void cpu_silu_backward(const a3_backend *be, a3_act *dinp_act, const a3_act *dout_act,
                       const a3_act *inp_act, size_t n) {
  float *dinp = a3_f32_act(dinp_act);
  const float *dout = a3_f32_cact(dout_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  CPU_PAR_CHUNKS(n, silu_bwd_range(dinp, dout, inp, lo, hi));
}

CPU_CLONES static void add_range(float *out, const float *a, const float *b, float scale, size_t lo,
                                 size_t hi) {
  if (scale == 1.0f) {
#pragma omp simd
    for (size_t i = lo; i < hi; i++) out[i] = a[i] + b[i];
  } else {
#pragma omp simd
    for (size_t i = lo; i < hi; i++) out[i] = (a[i] + b[i]) * scale;
  }
}

void cpu_add_forward(const a3_backend *be, a3_act *out_act, const a3_act *a_act,
                     const a3_act *b_act, float scale, size_t n) {
  float *out = a3_f32_act(out_act);
  const float *a = a3_f32_cact(a_act);
  const float *b = a3_f32_cact(b_act);
  (void)be;
  CPU_PAR_CHUNKS(n, add_range(out, a, b, scale, lo, hi));
}

// One pass reading dout[i] before writing: da or db may be dout itself.
static void add_bwd_range(float *da, float *db, const float *dout, float scale, size_t lo,
                          size_t hi) {
  for (size_t i = lo; i < hi; i++) {
    const float g = dout[i] * scale;
    if (da) da[i] = g;
    if (db) db[i] = g;
  }
}

void cpu_add_backward(const a3_backend *be, a3_act *da_act, a3_act *db_act, const a3_act *dout_act,
                      float scale, size_t n) {
  float *da = a3_f32_act(da_act);
  float *db = a3_f32_act(db_act);
  const float *dout = a3_f32_cact(dout_act);
  (void)be;
  CPU_PAR_CHUNKS(n, add_bwd_range(da, db, dout, scale, lo, hi));
}

CPU_CLONES static void add_scalar_range(float *y, const float *x, float t, int n) {
#pragma omp simd
  for (int i = 0; i < n; i++) y[i] = x[i] + t;
}

// The sum of x[0, n) in double (vectorised: a fixed lane order, the same on every call).
CPU_CLONES static double sum_range(const float *x, int n) {
  double sum = 0.0;
#pragma omp simd reduction(+ : sum)
  for (int i = 0; i < n; i++) sum += x[i];
  return sum;
}

void cpu_add_channel_forward(const a3_backend *be,
                             a3_act *out_act,       // (B, C, HW)
                             const a3_act *inp_act, // (B, C, HW)
                             const a3_act *t_act,   // (B, C)
                             int B, int C, int HW) {
  float *out = a3_f32_act(out_act);
  const float *inp = a3_f32_cact(inp_act);
  const float *t = a3_f32_cact(t_act);
  (void)be;
  const long planes = (long)B * C;
#pragma omp parallel for schedule(static) if (planes * HW >= CPU_PAR_MIN)
  for (long bc = 0; bc < planes; bc++) add_scalar_range(out + bc * HW, inp + bc * HW, t[bc], HW);
}

void cpu_add_channel_backward(const a3_backend *be,
                              a3_act *dt_act,         // (B, C)
                              const a3_act *dout_act, // (B, C, HW)
                              int B, int C, int HW) {
  float *dt = a3_f32_act(dt_act);
  const float *dout = a3_f32_cact(dout_act);
  (void)be;
  const long planes = (long)B * C;
#pragma omp parallel for schedule(static) if (planes * HW >= CPU_PAR_MIN)
  for (long bc = 0; bc < planes; bc++) dt[bc] = (float)sum_range(dout + bc * HW, HW);
}
