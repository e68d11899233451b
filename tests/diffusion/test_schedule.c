// Noise schedules and add_noise against tools/scheduler_reference.py's
// fixture (torch float32, as diffusers computes them).
#include "a3fta/diffusion.h"
#include "golden.h"
#include "test_util.h"

static const struct {
  const char *name;
  a3_noise_schedule kind;
} SCHEDULES[] = {
    {"linear", A3_NOISE_LINEAR},
    {"scaled_linear", A3_NOISE_SCALED_LINEAR},
    {"cosine", A3_NOISE_COSINE},
};

// Our betas vs torch's: torch.linspace's own rounding varies by up to 2 ulp
// with the CPU kernel it picks (see diffusion.h), so 2 ulp is the contract
// for linear, 4 for scaled_linear (squaring doubles the relative error), 0
// for cosine (both compute it in double and round once). The running product
// then differs by the few alphas = 1 - beta whose rounding flips: rtol 2e-6.
static void check_schedule(hid_t f, const char *name, a3_noise_schedule kind) {
  char path[128];
  int64_t n1 = 0, n2 = 0;
  snprintf(path, sizeof path, "schedules/%s/betas", name);
  float *betas = golden_f32(f, path, &n1);
  snprintf(path, sizeof path, "schedules/%s/alphas_cumprod", name);
  float *acp = golden_f32(f, path, &n2);
  CHECK(betas && acp && n1 == 1000 && n2 == 1000);
  if (!betas || !acp) return;

  a3_noise_schedule_table s;
  CHECK(a3_schedule_init(&s, kind, 1000, A3_BETA_START, A3_BETA_END) == A3_OK);
  golden_err eb = {0}, ea = {0};
  golden_compare(&eb, s.betas, betas, 1000, 0, 0);
  golden_compare(&ea, s.alphas_cumprod, acp, 1000, 2e-6, 0);
  fprintf(stderr,
          "%-14s betas: max %lld ulp (%lld differ); alphas_cumprod: max rel %.2e (%lld ulp)\n",
          name, (long long)eb.max_ulp, (long long)eb.bad, ea.max_rel, (long long)ea.max_ulp);
  const int64_t max_ulp = kind == A3_NOISE_COSINE ? 0 : kind == A3_NOISE_LINEAR ? 2 : 4;
  CHECK_MSG(eb.max_ulp <= max_ulp, "%s betas %lld ulp", name, (long long)eb.max_ulp);
  CHECK_MSG(ea.bad == 0, "%s alphas_cumprod max rel %.3e", name, ea.max_rel);
  a3_schedule_free(&s);

  // From torch's own betas, alphas and their product must be bit-identical:
  // this pins the fp32 "1 - beta" and the double-accumulated cumprod.
  CHECK(a3_schedule_from_betas(&s, betas, 1000) == A3_OK);
  golden_err ex = {0};
  golden_compare(&ex, s.alphas_cumprod, acp, 1000, 0, 0);
  CHECK_MSG(ex.max_ulp == 0, "%s cumprod from torch betas: %lld ulp", name, (long long)ex.max_ulp);
  a3_schedule_free(&s);
  a3_schedule_free(&s); // twice is harmless
  free(betas);
  free(acp);
}

static void check_add_noise(hid_t f) {
  int64_t nx = 0, nn = 0, nt = 0, ny = 0, nb = 0;
  float *x0 = golden_f32(f, "add_noise/x0", &nx), *noise = golden_f32(f, "add_noise/noise", &nn);
  float *want = golden_f32(f, "add_noise/x_t", &ny);
  float *betas = golden_f32(f, "schedules/linear/betas", &nb);
  int32_t *t = golden_i32(f, "add_noise/t", &nt);
  CHECK(x0 && noise && want && t && betas && nx == nn && nx == ny && nt > 0);
  if (x0 && noise && want && t && betas) {
    const int64_t per = nx / nt;
    float *got = malloc((size_t)nx * sizeof(float));
    a3_noise_schedule_table s;
    CHECK(a3_schedule_from_betas(&s, betas, nb) == A3_OK);
    CHECK(a3_diffusion_add_noise(&s, t, nt, per, x0, noise, got) == A3_OK);
    golden_err e = {0};
    golden_compare(&e, got, want, nx, 0, 0);
    CHECK_MSG(e.max_ulp == 0, "add_noise: %lld ulp", (long long)e.max_ulp);
    a3_schedule_free(&s);

    // With our own linear table: within the schedule's tolerance.
    CHECK(a3_schedule_init(&s, A3_NOISE_LINEAR, 1000, A3_BETA_START, A3_BETA_END) == A3_OK);
    CHECK(a3_diffusion_add_noise(&s, t, nt, per, x0, noise, got) == A3_OK);
    golden_err e2 = {0};
    golden_compare(&e2, got, want, nx, 1e-5, 1e-6);
    fprintf(stderr, "add_noise: torch table %lld ulp; own table max abs %.2e\n",
            (long long)e.max_ulp, e2.max_abs);
    CHECK(e2.bad == 0);

    // In place (x_t aliasing x0) gives the same numbers.
    memcpy(got, x0, (size_t)nx * sizeof(float));
    CHECK(a3_diffusion_add_noise(&s, t, nt, per, got, noise, got) == A3_OK);
    golden_err e3 = {0};
    golden_compare(&e3, got, want, nx, 1e-5, 1e-6);
    CHECK(e3.bad == 0);

    const int32_t bad_t = 1000;
    CHECK(a3_diffusion_add_noise(&s, &bad_t, 1, per, x0, noise, got) == A3_ERR_INTERNAL);
    a3_error_clear();
    a3_schedule_free(&s);
    free(got);
  }
  free(x0);
  free(noise);
  free(want);
  free(t);
  free(betas);
}

static void check_errors(void) {
  a3_noise_schedule_table s;
  CHECK(a3_schedule_init(&s, A3_NOISE_LINEAR, 1, A3_BETA_START, A3_BETA_END) == A3_ERR_CONFIG);
  CHECK(s.betas == NULL);
  a3_error_clear();
  // Small T works for every kind and keeps 0 < acp <= 1, decreasing.
  for (size_t k = 0; k < sizeof SCHEDULES / sizeof SCHEDULES[0]; k++) {
    CHECK(a3_schedule_init(&s, SCHEDULES[k].kind, 10, A3_BETA_START, A3_BETA_END) == A3_OK);
    CHECK(s.alphas_cumprod[0] < 1.0f && s.alphas_cumprod[9] > 0.0f);
    for (int i = 1; i < 10; i++) CHECK(s.alphas_cumprod[i] < s.alphas_cumprod[i - 1]);
    a3_schedule_free(&s);
  }
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s sampler_golden.h5\n", argv[0]);
    return 2;
  }
  hid_t f = H5Fopen(argv[1], H5F_ACC_RDONLY, H5P_DEFAULT);
  CHECK_MSG(f >= 0, "cannot open %s", argv[1]);
  if (f >= 0) {
    for (size_t k = 0; k < sizeof SCHEDULES / sizeof SCHEDULES[0]; k++) {
      check_schedule(f, SCHEDULES[k].name, SCHEDULES[k].kind);
    }
    check_add_noise(f);
    H5Fclose(f);
  }
  check_errors();
  return TEST_DONE("test_diffusion_schedule");
}
