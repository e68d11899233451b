// AdamW and gradient clipping against torch (tools/optim_reference.py), and
// their determinism: bit-identical twice and with any number of threads.
#include "a3fta/optim.h"
#include "diffusion/golden.h"
#include "test_util.h"

#include <omp.h>

typedef struct {
  a3_param_segment *segs;
  int n_segs;
  int64_t n, m; // flat and compact lengths
} golden_layout;

static int read_layout(hid_t f, golden_layout *l) {
  int64_t ns = 0;
  int64_t *raw = golden_i64(f, "adamw/segments", &ns);
  if (!raw || ns % 3) return 0;
  l->n_segs = (int)(ns / 3);
  l->segs = calloc((size_t)l->n_segs, sizeof(*l->segs));
  l->n = l->m = 0;
  for (int k = 0; k < l->n_segs; k++) {
    l->segs[k] = (a3_param_segment){raw[3 * k], raw[3 * k + 1], raw[3 * k + 2] != 0};
    l->m += raw[3 * k + 1];
  }
  free(raw);
  return 1;
}

// Five AdamW updates with a warm-up from lr 0, decay and no-decay segments, a
// frozen tensor between them and a zero gradient at step 3. torch's fp32
// kernels fuse some multiply-adds (AVX2 fmadd) that we round twice, so the
// two may differ by an ulp per operation: rtol 1e-6 on the parameters
// (relative to each value), and on m, v relative to the largest |m|, |v| of
// the step (m is a difference and may cancel to near 0).
static void check_adamw(hid_t f, const golden_layout *l) {
  int64_t n0 = 0, ng = 0, np = 0, nm = 0, nv = 0, nl = 0;
  float *params0 = golden_f32(f, "adamw/params0", &n0), *grads = golden_f32(f, "adamw/grads", &ng);
  float *want_p = golden_f32(f, "adamw/params", &np), *want_m = golden_f32(f, "adamw/exp_avg", &nm);
  float *want_v = golden_f32(f, "adamw/exp_avg_sq", &nv);
  double *lr = golden_f64(f, "adamw/lr", &nl);
  CHECK(params0 && grads && want_p && want_m && want_v && lr);
  if (!(params0 && grads && want_p && want_m && want_v && lr)) return;
  const int64_t n = n0, steps = nl;
  CHECK(ng == steps * n && np == ng && nm == steps * l->m && nv == nm && n == 284);

  a3_adamw_hparams h = {.beta1 = golden_attr(f, "adamw", "beta1"),
                        .beta2 = golden_attr(f, "adamw", "beta2"),
                        .eps = golden_attr(f, "adamw", "eps"),
                        .weight_decay = golden_attr(f, "adamw", "weight_decay")};
  float *p = malloc((size_t)n * sizeof(float));
  float *m = calloc((size_t)l->m, sizeof(float)), *v = calloc((size_t)l->m, sizeof(float));
  memcpy(p, params0, (size_t)n * sizeof(float));
  golden_err ep = {0}, em = {0}, ev = {0};
  int frozen_kept = 1;
  for (int64_t k = 0; k < steps; k++) {
    h.lr = lr[k];
    CHECK(a3_adamw_step(&h, k + 1, l->segs, l->n_segs, p, grads + k * n, m, v) == A3_OK);
    golden_compare(&ep, p, want_p + k * n, n, 1e-6, 0);
    double mmax = 0, vmax = 0;
    for (int64_t i = 0; i < l->m; i++) {
      mmax = fmax(mmax, fabs(want_m[k * l->m + i]));
      vmax = fmax(vmax, fabs(want_v[k * l->m + i]));
    }
    golden_compare(&em, m, want_m + k * l->m, l->m, 1e-6, 1e-6 * mmax);
    golden_compare(&ev, v, want_v + k * l->m, l->m, 1e-6, 1e-6 * vmax);
    // The frozen tensor (elements 112..131, between the segments) is untouched.
    for (int64_t i = 112; i < 132; i++) frozen_kept &= p[i] == params0[i];
  }
  fprintf(stderr,
          "adamw vs torch, %lld steps: params max rel %.2e (%lld ulp), exp_avg max abs %.2e "
          "(%lld ulp), exp_avg_sq max rel %.2e (%lld ulp)\n",
          (long long)steps, ep.max_rel, (long long)ep.max_ulp, em.max_abs, (long long)em.max_ulp,
          ev.max_rel, (long long)ev.max_ulp);
  CHECK(ep.bad == 0 && em.bad == 0 && ev.bad == 0);
  CHECK(frozen_kept);
  CHECK(a3_adamw_step(&h, 0, l->segs, l->n_segs, p, grads, m, v) == A3_ERR_INTERNAL);
  a3_error_clear();
  free(p);
  free(m);
  free(v);
  free(params0);
  free(grads);
  free(want_p);
  free(want_m);
  free(want_v);
  free(lr);
}

// clip_grad_norm_ over the trainable segments (the frozen gradients are 1e6:
// counting them would show). "big" is clipped to norm 1, "small" is not.
static void check_clip(hid_t f, const golden_layout *l, const char *name) {
  char path[64];
  int64_t ng = 0, nc = 0, nn = 0;
  snprintf(path, sizeof path, "clip/%s/grads", name);
  float *g = golden_f32(f, path, &ng);
  snprintf(path, sizeof path, "clip/%s/clipped", name);
  float *want = golden_f32(f, path, &nc);
  snprintf(path, sizeof path, "clip/%s/norm", name);
  double *norm = golden_f64(f, path, &nn);
  snprintf(path, sizeof path, "clip/%s", name);
  const double max_norm = golden_attr(f, path, "max_norm");
  CHECK(g && want && norm && ng == nc);
  if (g && want && norm) {
    const double got = a3_clip_grad_norm(l->segs, l->n_segs, g, max_norm);
    golden_err e = {0};
    golden_compare(&e, g, want, ng, 1e-6, 0);
    // torch sums the norm in fp32; ours is in double, so rtol 1e-6.
    fprintf(stderr, "clip %-5s: norm %.9g vs torch %.9g; grads max rel %.2e (%lld ulp)\n", name,
            got, *norm, e.max_rel, (long long)e.max_ulp);
    CHECK(fabs(got - *norm) <= 1e-6 * *norm);
    CHECK(e.bad == 0);
    // After clipping, the norm is max_norm (to fp32 rounding).
    if (*norm > max_norm) CHECK(fabs(a3_grad_norm(l->segs, l->n_segs, g) - max_norm) < 1e-6);
  }
  free(g);
  free(want);
  free(norm);
}

// A large buffer (several chunks, parallel paths on): the same outputs run
// twice, with 1 thread and with several.
static void check_determinism(void) {
  enum { N = 600000, STEPS = 3 };
  const a3_param_segment segs[] = {{0, 250000, true}, {260000, 7, false}, {270000, 330000, true}};
  const int ns = 3;
  const int64_t m_len = a3_segments_numel(segs, ns);
  CHECK(m_len == 580007);
  float *runs[2][3];
  double norms[2];
  for (int r = 0; r < 2; r++) {
    omp_set_num_threads(r == 0 ? 1 : 4);
    float *p = malloc(N * sizeof(float)), *g = malloc(N * sizeof(float));
    float *m = calloc((size_t)m_len, sizeof(float)), *v = calloc((size_t)m_len, sizeof(float));
    float *ema = malloc((size_t)m_len * sizeof(float));
    for (int i = 0; i < N; i++) p[i] = sinf((float)i * 0.001f);
    a3_segments_gather(segs, ns, p, ema);
    a3_adamw_hparams h = a3_adamw_defaults();
    for (int t = 1; t <= STEPS; t++) {
      for (int i = 0; i < N; i++) g[i] = cosf((float)(i + t) * 0.37f) * 3.0f;
      norms[r] = a3_clip_grad_norm(segs, ns, g, 1.0);
      CHECK(a3_adamw_step(&h, t, segs, ns, p, g, m, v) == A3_OK);
      a3_ema_update(segs, ns, p, ema, a3_ema_decay(t, 0.9999));
    }
    runs[r][0] = p;
    runs[r][1] = m;
    runs[r][2] = ema;
    free(g);
    free(v);
  }
  omp_set_num_threads(omp_get_num_procs());
  CHECK(memcmp(&norms[0], &norms[1], sizeof(double)) == 0);
  CHECK(memcmp(runs[0][0], runs[1][0], N * sizeof(float)) == 0);
  CHECK(memcmp(runs[0][1], runs[1][1], (size_t)m_len * sizeof(float)) == 0);
  CHECK(memcmp(runs[0][2], runs[1][2], (size_t)m_len * sizeof(float)) == 0);
  // The norm in double agrees with a naive double sum to rounding.
  float *g = malloc(N * sizeof(float));
  double naive = 0;
  for (int i = 0; i < N; i++) g[i] = cosf((float)i * 0.37f) * 3.0f;
  for (int k = 0; k < ns; k++) {
    for (int64_t i = segs[k].offset; i < segs[k].offset + segs[k].count; i++) {
      naive += (double)g[i] * g[i];
    }
  }
  CHECK(fabs(a3_grad_norm(segs, ns, g) - sqrt(naive)) < 1e-12 * sqrt(naive));
  // No clipping when max_norm <= 0 or the norm is already small.
  float before = g[5];
  a3_clip_grad_norm(segs, ns, g, 0.0);
  a3_clip_grad_norm(segs, ns, g, 1e9);
  CHECK(g[5] == before);
  free(g);
  for (int r = 0; r < 2; r++) {
    for (int j = 0; j < 3; j++) free(runs[r][j]);
  }
}

static void check_defaults(void) {
  a3_config cfg;
  a3_config_init_defaults(&cfg);
  const a3_adamw_hparams d = a3_adamw_defaults(), c = a3_adamw_from_config(&cfg.train);
  CHECK(d.lr == 1e-4 && d.beta1 == 0.95 && d.beta2 == 0.999 && d.eps == 1e-8 &&
        d.weight_decay == 1e-6);
  CHECK(c.lr == d.lr && c.beta1 == d.beta1 && c.beta2 == d.beta2 && c.eps == d.eps &&
        c.weight_decay == d.weight_decay);
  a3_config_free(&cfg);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s optim_golden.h5\n", argv[0]);
    return 2;
  }
  hid_t f = H5Fopen(argv[1], H5F_ACC_RDONLY, H5P_DEFAULT);
  CHECK_MSG(f >= 0, "cannot open %s", argv[1]);
  golden_layout l = {0};
  if (f >= 0 && read_layout(f, &l)) {
    check_adamw(f, &l);
    check_clip(f, &l, "big");
    check_clip(f, &l, "small");
  } else {
    CHECK(!"fixture layout");
  }
  if (f >= 0) H5Fclose(f);
  free(l.segs);
  check_determinism();
  check_defaults();
  return TEST_DONE("test_train_optim");
}
