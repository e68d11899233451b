// The adapter's elementwise ops on the CPU: GELU (exact, erf) and ReLU,
// forward and backward, and the gated residual out = a + gate * b with its
// backward (the adapter's learnable scalar gate). SiLU is in elementwise.c.
// Identity needs no op: the model passes the tensor through.
//
// Each element is computed the same way whatever the thread split, so the
// results do not depend on the thread count; the gate's gradient (a sum)
// runs on one thread in double, in index order.
#include "cpu_ops.h"

#include <math.h>

// ---------------------------------------------------------------- GELU
// PyTorch's GELU(approximate="none"): x * Phi(x), Phi(x) = (1 + erf(x / sqrt 2)) / 2,
// computed as erfc(-x / sqrt 2) / 2, which does not cancel for negative x
// (1 + erf(x) loses all its digits below x ~ -3).
static inline float normal_cdf(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }

static void gelu_range(float *out, const float *inp, size_t lo, size_t hi) {
  for (size_t i = lo; i < hi; i++) out[i] = inp[i] * normal_cdf(inp[i]);
}

void cpu_gelu_forward(const a3_backend *be, a3_act *out_act, const a3_act *inp_act, size_t n) {
  float *out = a3_f32_act(out_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  CPU_PAR_CHUNKS(n, gelu_range(out, inp, lo, hi));
}

// d/dx x Phi(x) = Phi(x) + x phi(x), phi(x) = e^(-x^2 / 2) / sqrt(2 pi).
static void gelu_bwd_range(float *dinp, const float *dout, const float *inp, size_t lo, size_t hi) {
  for (size_t i = lo; i < hi; i++) {
    const float x = inp[i];
    const float pdf = 0.39894228040143268f * expf(-0.5f * x * x);
    dinp[i] = dout[i] * (normal_cdf(x) + x * pdf);
  }
}

void cpu_gelu_backward(const a3_backend *be, a3_act *dinp_act, const a3_act *dout_act,
                       const a3_act *inp_act, size_t n) {
  float *dinp = a3_f32_act(dinp_act);
  const float *dout = a3_f32_cact(dout_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  CPU_PAR_CHUNKS(n, gelu_bwd_range(dinp, dout, inp, lo, hi));
}

// ---------------------------------------------------------------- ReLU
CPU_CLONES static void relu_range(float *out, const float *inp, size_t lo, size_t hi) {
#pragma omp simd
  for (size_t i = lo; i < hi; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void cpu_relu_forward(const a3_backend *be, a3_act *out_act, const a3_act *inp_act, size_t n) {
  float *out = a3_f32_act(out_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  CPU_PAR_CHUNKS(n, relu_range(out, inp, lo, hi));
}

// The derivative at 0 is taken as 0 (PyTorch's threshold_backward).
CPU_CLONES static void relu_bwd_range(float *dinp, const float *dout, const float *inp, size_t lo,
                                      size_t hi) {
#pragma omp simd
  for (size_t i = lo; i < hi; i++) dinp[i] = inp[i] > 0.0f ? dout[i] : 0.0f;
}

void cpu_relu_backward(const a3_backend *be, a3_act *dinp_act, const a3_act *dout_act,
                       const a3_act *inp_act, size_t n) {
  float *dinp = a3_f32_act(dinp_act);
  const float *dout = a3_f32_cact(dout_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  CPU_PAR_CHUNKS(n, relu_bwd_range(dinp, dout, inp, lo, hi));
}

// ---------------------------------------------------------------- gated residual
CPU_CLONES static void gated_add_range(float *out, const float *a, const float *b, float g,
                                       size_t lo, size_t hi) {
#pragma omp simd
  for (size_t i = lo; i < hi; i++) out[i] = a[i] + g * b[i];
}

void cpu_gated_add_forward(const a3_backend *be, a3_act *out_act, const a3_act *a_act,
                           const a3_act *b_act, const float *gate, size_t n) {
  float *out = a3_f32_act(out_act);
  const float *a = a3_f32_cact(a_act);
  const float *b = a3_f32_cact(b_act);
  (void)be;
  const float g = gate[0];
  CPU_PAR_CHUNKS(n, gated_add_range(out, a, b, g, lo, hi));
}

CPU_CLONES static void scale_range(float *out, const float *in, float g, size_t lo, size_t hi) {
#pragma omp simd
  for (size_t i = lo; i < hi; i++) out[i] = g * in[i];
}

void cpu_gated_add_backward(const a3_backend *be, a3_act *db_act, float *dgate,
                            const a3_act *dout_act, const a3_act *b_act, const float *gate,
                            size_t n) {
  float *db = a3_f32_act(db_act);
  const float *dout = a3_f32_cact(dout_act);
  const float *b = a3_f32_cact(b_act);
  (void)be;
  if (dgate) { // before db: db may be dout itself
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += (double)dout[i] * b[i];
    dgate[0] += (float)s;
  }
  if (db) {
    const float g = gate[0];
    CPU_PAR_CHUNKS(n, scale_range(db, dout, g, lo, hi));
  }
}
