// The adapter's elementwise backend ops (include/a3fta/backend.h, the CPU's
// src/backend/cpu/activation.c): GELU (exact, erf) and ReLU forward against
// double-precision formulas, their backward against five-point finite
// differences of the double formula and of the fp32 op itself, in place
// (dinp == dout) and above the threading threshold; the gated residual
// out = a + g b and its backward (db overwritten, dgate accumulated, NULLs).
#include "model_test_util.h"
#include "test_util.h"

enum { N = 70000 }; // above CPU_PAR_MIN (32768): the threaded path

static double gelu_d(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double relu_d(double x) { return x > 0.0 ? x : 0.0; }

typedef void (*fwd_op)(const a3_backend *, a3_act *, const a3_act *, size_t);
typedef void (*bwd_op)(const a3_backend *, a3_act *, const a3_act *, const a3_act *, size_t);

// Inputs spread over [-6, 6], exact zeros included.
static void fill_inputs(float *x, size_t n) {
  mt_fill(x, n, 31, 6.0f, 0.0f);
  x[0] = 0.0f;
  x[1] = -0.0f;
  x[2] = 1e-30f;
  x[3] = -1e-30f;
}

static void check_activation(const char *name, fwd_op fwd, bwd_op bwd, double (*ref)(double),
                             bool kink_at_zero) {
  const a3_backend *be = a3_backend_cpu();
  float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float));
  float *dy = malloc(N * sizeof(float)), *dx = malloc(N * sizeof(float));
  fill_inputs(x, N);
  mt_fill(dy, N, 32, 1.0f, 0.0f);
  fwd(be, a3_act_f32(y), a3_act_cf32(x), N);
  double worst_fwd = 0.0, worst_bwd = 0.0, worst_fd32 = 0.0;
  for (size_t i = 0; i < N; i++) {
    const double e = fabs(y[i] - ref(x[i]));
    worst_fwd = fmax(worst_fwd, e / (1e-7 + 1e-6 * fabs(ref(x[i]))));
  }
  bwd(be, a3_act_f32(dx), a3_act_cf32(dy), a3_act_cf32(x), N);
  // against the double formula's derivative (away from a kink)
  const double h = 1e-4;
  for (size_t i = 0; i < N; i += 7) {
    const double xi = x[i];
    if (kink_at_zero && fabs(xi) < 4 * h) continue;
    const double d =
        (-ref(xi + 2 * h) + 8 * ref(xi + h) - 8 * ref(xi - h) + ref(xi - 2 * h)) / (12 * h);
    worst_bwd = fmax(worst_bwd, fabs(dx[i] - dy[i] * d) / (1e-6 + 1e-5 * fabs(dy[i] * d)));
  }
  // against finite differences of the fp32 op itself (a few elements)
  const float h32 = 1e-2f;
  for (size_t i = 16; i < N; i += 997) {
    if (kink_at_zero && fabsf(x[i]) < 3 * h32) continue;
    float xs[4], ys[4];
    const float steps[4] = {2 * h32, h32, -h32, -2 * h32};
    for (int k = 0; k < 4; k++) xs[k] = x[i] + steps[k];
    fwd(be, a3_act_f32(ys), a3_act_cf32(xs), 4);
    const double d = (-ys[0] + 8.0 * ys[1] - 8.0 * ys[2] + ys[3]) / (12.0 * h32);
    worst_fd32 = fmax(worst_fd32, fabs(dx[i] - dy[i] * d) / (1e-4 + 1e-3 * fabs(dy[i] * d)));
  }
  if (kink_at_zero) { // ReLU: 0 at 0 (both signs) and at tiny negatives, dout at tiny positives
    CHECK(dx[0] == 0.0f && dx[1] == 0.0f && dx[3] == 0.0f && dx[2] == dy[2]);
    CHECK(y[0] == 0.0f && y[2] == 1e-30f && y[3] == 0.0f);
  }
  // in place: dinp == dout, out == inp
  float *dz = malloc(N * sizeof(float));
  memcpy(dz, dy, N * sizeof(float));
  bwd(be, a3_act_f32(dz), a3_act_cf32(dz), a3_act_cf32(x), N);
  CHECK_MSG(memcmp(dz, dx, N * sizeof(float)) == 0, "%s backward in place differs", name);
  memcpy(dz, x, N * sizeof(float));
  fwd(be, a3_act_f32(dz), a3_act_cf32(dz), N);
  CHECK_MSG(memcmp(dz, y, N * sizeof(float)) == 0, "%s forward in place differs", name);
  printf("%s: forward %.3f, backward vs double %.3f, vs fp32 finite differences %.3f "
         "(ratios to tolerance, <= 1 passes)\n",
         name, worst_fwd, worst_bwd, worst_fd32);
  CHECK_MSG(worst_fwd <= 1.0 && worst_bwd <= 1.0 && worst_fd32 <= 1.0, "%s mismatch", name);
  free(x), free(y), free(dy), free(dx), free(dz);
}

static void test_gated_add(void) {
  const a3_backend *be = a3_backend_cpu();
  float *a = malloc(N * sizeof(float)), *b = malloc(N * sizeof(float));
  float *out = malloc(N * sizeof(float)), *dout = malloc(N * sizeof(float));
  float *db = malloc(N * sizeof(float));
  mt_fill(a, N, 41, 1.0f, 0.0f);
  mt_fill(b, N, 42, 1.0f, 0.0f);
  mt_fill(dout, N, 43, 1.0f, 0.0f);
  const float gate = 0.75f;
  be->ops->gated_add_forward(be, a3_act_f32(out), a3_act_cf32(a), a3_act_cf32(b), &gate, N);
  int wrong = 0;
  for (size_t i = 0; i < N; i++) wrong += out[i] != a[i] + gate * b[i];
  CHECK_MSG(wrong == 0, "gated_add_forward: %d wrong", wrong);
  // gate 1 and b = +-0: out is a, bitwise (the adapter's step 0)
  const float one = 1.0f;
  for (size_t i = 0; i < N; i++) b[i] = (i & 1) ? 0.0f : -0.0f;
  be->ops->gated_add_forward(be, a3_act_f32(out), a3_act_cf32(a), a3_act_cf32(b), &one, N);
  CHECK(memcmp(out, a, N * sizeof(float)) == 0);
  mt_fill(b, N, 42, 1.0f, 0.0f);
  float dgate = 0.5f; // accumulated into
  be->ops->gated_add_backward(be, a3_act_f32(db), &dgate, a3_act_cf32(dout), a3_act_cf32(b), &gate,
                              N);
  double s = 0.0;
  for (size_t i = 0; i < N; i++) {
    s += (double)dout[i] * b[i];
    wrong += db[i] != gate * dout[i];
  }
  CHECK_MSG(wrong == 0, "gated_add_backward db: %d wrong", wrong);
  CHECK_MSG(fabs(dgate - (0.5 + s)) <= 1e-6 * (1.0 + fabs(s)), "dgate %g, want %g", dgate, 0.5 + s);
  // NULLs, and db == dout in place
  float dg2 = 0.0f;
  be->ops->gated_add_backward(be, NULL, &dg2, a3_act_cf32(dout), a3_act_cf32(b), &gate, N);
  CHECK(fabsf(dg2 - (dgate - 0.5f)) <= 1e-6f * (1.0f + fabsf(dg2)));
  memcpy(out, dout, N * sizeof(float));
  be->ops->gated_add_backward(be, a3_act_f32(out), NULL, a3_act_cf32(out), a3_act_cf32(b), &gate,
                              N);
  CHECK(memcmp(out, db, N * sizeof(float)) == 0);
  printf("gated_add: forward exact, db exact, dgate %.6g\n", dgate);
  free(a), free(b), free(out), free(dout), free(db);
}

int main(void) {
  const a3_backend *be = a3_backend_cpu();
  check_activation("gelu", be->ops->gelu_forward, be->ops->gelu_backward, gelu_d, false);
  check_activation("relu", be->ops->relu_forward, be->ops->relu_backward, relu_d, true);
  test_gated_add();
  return TEST_DONE("test_activation_ops");
}
