// Learning-rate schedules (diffusers' lambdas run by torch's LambdaLR) and
// the EMA (diffusers' EMAModel with warm-up) against
// tools/optim_reference.py, plus closed-form spot checks.
#include "a3fta/optim.h"
#include "diffusion/golden.h"
#include "test_util.h"

static const char *const LR_CASES[] = {"cosine_w5_t20", "cosine_w0_t10", "constant_w5",
                                       "constant_w0", "cosine_w1_t3"};

// Same double formula as Python's: bit-identical expected (cos is glibc's in both).
static void check_lr_case(hid_t f, const char *name) {
  char path[64];
  int64_t n = 0;
  snprintf(path, sizeof path, "lr/%s/factor", name);
  double *want = golden_f64(f, path, &n);
  snprintf(path, sizeof path, "lr/%s", name);
  const int64_t warmup = (int64_t)golden_attr(f, path, "warmup");
  const int64_t total = (int64_t)golden_attr(f, path, "total");
  const a3_lr_schedule kind = strncmp(name, "cosine", 6) == 0 ? A3_LR_COSINE : A3_LR_CONSTANT;
  CHECK(want && n == total + 2);
  double worst = 0;
  for (int64_t k = 0; want && k < n; k++) {
    worst = fmax(worst, fabs(a3_lr_factor(kind, k, warmup, total) - want[k]));
  }
  fprintf(stderr, "lr %-14s %2lld steps: max abs diff %.1e\n", name, (long long)n, worst);
  CHECK_MSG(worst <= 1e-15, "%s: %.3e", name, worst);
  free(want);
}

static void check_lr_closed_form(void) {
  const double pi = 3.14159265358979323846;
  // Warm-up: update 0 has lr 0 (LambdaLR starts at lambda(0)), then linear.
  CHECK(a3_lr_factor(A3_LR_COSINE, 0, 50, 1000) == 0.0);
  CHECK(a3_lr_factor(A3_LR_COSINE, 25, 50, 1000) == 0.5);
  CHECK(a3_lr_factor(A3_LR_CONSTANT, 10, 50, 1000) == 0.2);
  // End of warm-up: the peak; constant stays there.
  CHECK(a3_lr_factor(A3_LR_COSINE, 50, 50, 1000) == 1.0);
  CHECK(a3_lr_factor(A3_LR_CONSTANT, 999, 50, 1000) == 1.0);
  CHECK(a3_lr_factor(A3_LR_CONSTANT, 0, 0, 1000) == 1.0);
  // Half way through the decay: 0.5; the last update: nearly 0; at total: 0.
  CHECK(fabs(a3_lr_factor(A3_LR_COSINE, 525, 50, 1000) - 0.5) < 1e-15);
  const double last = 0.5 * (1 + cos(pi * 949.0 / 950.0));
  CHECK(fabs(a3_lr_factor(A3_LR_COSINE, 999, 50, 1000) - last) < 1e-15 && last < 3e-6);
  CHECK(a3_lr_factor(A3_LR_COSINE, 1000, 50, 1000) == 0.0);
  // Degenerate spans divide by max(1, .) as diffusers does.
  CHECK(a3_lr_factor(A3_LR_COSINE, 0, 0, 0) == 1.0);
  CHECK(a3_lr_factor(A3_LR_COSINE, 1, 1, 1) == 1.0);
}

// EMA: the decay sequence and the averaged weights of 6 updates. The decay is
// the same double formula (exact); the update is three fp32 operations as in
// torch's s.sub_(one_minus_decay * (s - p)), so bit-identical too.
static void check_ema(hid_t f) {
  int64_t nd = 0, nbs = 0, nbd = 0, np0 = 0, np = 0, ne = 0, ns = 0;
  double *decay = golden_f64(f, "ema/decay", &nd),
         *big_decay = golden_f64(f, "ema/big_decay", &nbd);
  int64_t *big_steps = golden_i64(f, "ema/big_steps", &nbs),
          *raw = golden_i64(f, "adamw/segments", &ns);
  float *params0 = golden_f32(f, "ema/params0", &np0), *params = golden_f32(f, "ema/params", &np);
  float *want = golden_f32(f, "ema/ema", &ne);
  const double max_decay = golden_attr(f, "ema", "max_decay");
  CHECK(decay && big_decay && big_steps && raw && params0 && params && want && nbs == nbd);
  if (decay && big_decay && big_steps && raw && params0 && params && want) {
    double worst = 0;
    for (int64_t k = 0; k < nd; k++)
      worst = fmax(worst, fabs(a3_ema_decay(k + 1, max_decay) - decay[k]));
    for (int64_t k = 0; k < nbs; k++) {
      worst = fmax(worst, fabs(a3_ema_decay(big_steps[k], max_decay) - big_decay[k]));
    }
    CHECK_MSG(worst == 0, "ema decay off by %.3e", worst);

    a3_param_segment segs[16];
    const int n_segs = (int)(ns / 3);
    for (int k = 0; k < n_segs && k < 16; k++) {
      segs[k] = (a3_param_segment){raw[3 * k], raw[3 * k + 1], raw[3 * k + 2] != 0};
    }
    const int64_t m = a3_segments_numel(segs, n_segs), updates = ne / m;
    float *ema = malloc((size_t)m * sizeof(float));
    a3_segments_gather(segs, n_segs, params0, ema);
    golden_err e = {0};
    for (int64_t u = 0; u < updates; u++) {
      a3_ema_update(segs, n_segs, params + u * np0, ema, a3_ema_decay(u + 1, max_decay));
      golden_compare(&e, ema, want + u * m, m, 0, 0);
    }
    fprintf(stderr, "ema: decay max diff %.1e; %lld updates: max %lld ulp\n", worst,
            (long long)updates, (long long)e.max_ulp);
    CHECK(updates == 6 && e.max_ulp == 0);
    // Scattering the average back leaves the frozen elements alone.
    float *full = malloc((size_t)np0 * sizeof(float));
    memcpy(full, params0, (size_t)np0 * sizeof(float));
    a3_segments_scatter(segs, n_segs, ema, full);
    CHECK(full[112] == params0[112] && full[131] == params0[131]);
    CHECK(full[0] == ema[0] && full[np0 - 1] == ema[m - 1]);
    free(full);
    free(ema);
  }
  free(decay);
  free(big_decay);
  free(big_steps);
  free(raw);
  free(params0);
  free(params);
  free(want);
}

static void check_ema_closed_form(void) {
  CHECK(a3_ema_decay(0, 0.9999) == 0.0 && a3_ema_decay(1, 0.9999) == 0.0);
  CHECK(fabs(a3_ema_decay(2, 0.9999) - (1 - pow(2.0, -0.75))) < 1e-16);
  CHECK(a3_ema_decay(1000000, 0.9999) == 0.9999);
  CHECK(a3_ema_decay(1000000, 0.5) == 0.5);
  // With decay 0 the average becomes the weights.
  const a3_param_segment seg = {1, 2, false};
  float p[3] = {9.0f, 1.5f, -2.25f}, ema[2] = {4.0f, 4.0f};
  a3_ema_update(&seg, 1, p, ema, 0.0);
  CHECK(ema[0] == 1.5f && ema[1] == -2.25f);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s optim_golden.h5\n", argv[0]);
    return 2;
  }
  hid_t f = H5Fopen(argv[1], H5F_ACC_RDONLY, H5P_DEFAULT);
  CHECK_MSG(f >= 0, "cannot open %s", argv[1]);
  if (f >= 0) {
    for (size_t k = 0; k < sizeof LR_CASES / sizeof LR_CASES[0]; k++) check_lr_case(f, LR_CASES[k]);
    check_ema(f);
    H5Fclose(f);
  }
  check_lr_closed_form();
  check_ema_closed_form();
  return TEST_DONE("test_train_lr_ema");
}
