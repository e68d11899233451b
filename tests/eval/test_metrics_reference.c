// Metrics against the independent numpy implementations of
// tools/metrics_reference.py (fixture metrics_golden.h5): FID and KID to
// 1e-4 relative (the bound; they agree to ~1e-12), fractions
// exactly (to the rounding of one division), distances to 1e-9 relative.
#include "a3fta/metrics.h"
#include "diffusion/golden.h"
#include "eval/metrics_internal.h"
#include "test_util.h"

static double worst_fid = 0, worst_kid = 0, worst_dist = 0, worst_eig = 0;

static double rel_err(double got, double want) {
  return fabs(got - want) / fmax(fabs(want), 1e-300);
}

// Checks got against want to `rtol` relative, tracking the worst in *worst.
static void check_rel(const char *what, double got, double want, double rtol, double *worst) {
  const double e = rel_err(got, want);
  if (e > *worst) *worst = e;
  CHECK_MSG(e <= rtol, "%s: got %.15g, want %.15g (rel %.2e)", what, got, want, e);
}

typedef struct {
  float *x1, *x2;
  int64_t n1, n2, d;
} feature_pair;

static int read_pair(hid_t f, const char *fcase, feature_pair *p) {
  char name[128];
  int64_t c1 = 0, c2 = 0;
  snprintf(name, sizeof name, "fid/%s/x1", fcase);
  p->x1 = golden_f32(f, name, &c1);
  snprintf(name, sizeof name, "fid/%s/x2", fcase);
  p->x2 = golden_f32(f, name, &c2);
  p->d = 32; // tools/metrics_reference.py: fid_cases
  p->n1 = c1 / p->d;
  p->n2 = c2 / p->d;
  CHECK_MSG(p->x1 && p->x2, "fixture case %s missing", fcase);
  return p->x1 && p->x2;
}

static void free_pair(feature_pair *p) {
  free(p->x1);
  free(p->x2);
}

static void check_fid(hid_t f, const char *fcase) {
  feature_pair p;
  if (!read_pair(f, fcase, &p)) return;
  a3_fid_result r;
  char obj[64], what[128];
  snprintf(obj, sizeof obj, "fid/%s", fcase);
  CHECK(a3_fid(p.x1, p.n1, p.x2, p.n2, p.d, &r) == A3_OK);
  const struct {
    const char *name;
    double got;
  } fields[] = {{"fid", r.fid},
                {"mean_dist2", r.mean_dist2},
                {"trace1", r.trace1},
                {"trace2", r.trace2},
                {"trace_sqrt", r.trace_sqrt}};
  for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
    snprintf(what, sizeof what, "%s %s", obj, fields[i].name);
    check_rel(what, fields[i].got, golden_attr(f, obj, fields[i].name), 1e-4, &worst_fid);
  }
  fprintf(stderr, "%s: FID %.10g (clamped eigenvalues down to %.1e of the largest)\n", obj, r.fid,
          -r.clamped_rel);
  free_pair(&p);
}

static void check_kid_indices(hid_t f, const char *obj, uint64_t seed, int64_t n_subsets, int64_t m,
                              const feature_pair *p) {
  char name[128];
  int64_t c = 0, bad = 0;
  for (int which = 0; which < 2; which++) {
    snprintf(name, sizeof name, "%s/idx%d", obj, which + 1);
    int64_t *want = golden_i64(f, name, &c);
    int64_t *got = calloc((size_t)m, sizeof(int64_t));
    CHECK(want && c == n_subsets * m);
    for (int64_t s = 0; want && s < n_subsets; s++) {
      CHECK(a3_kid_subset_indices(seed, s, which, which ? p->n2 : p->n1, m, got) == A3_OK);
      for (int64_t i = 0; i < m; i++) bad += got[i] != want[s * m + i];
    }
    free(want);
    free(got);
  }
  CHECK_MSG(bad == 0, "%s: %lld subset indices differ from the Python Philox", obj, (long long)bad);
}

static void check_kid(hid_t f, const char *kcase, const char *fcase) {
  feature_pair p;
  if (!read_pair(f, fcase, &p)) return;
  char obj[64], what[128];
  snprintf(obj, sizeof obj, "kid/%s", kcase);
  const uint64_t seed = (uint64_t)golden_attr(f, obj, "seed");
  const int64_t n_subsets = (int64_t)golden_attr(f, obj, "n_subsets");
  const int64_t size = (int64_t)golden_attr(f, obj, "subset_size");
  const int64_t m = (int64_t)golden_attr(f, obj, "m");
  check_kid_indices(f, obj, seed, n_subsets, m, &p);
  a3_kid_result r;
  // Both paths: kernels of the whole sets (what a3_kid picks for these
  // sizes) and of each subset pair (for sets too large to cache).
  for (int cache = 0; cache < 2; cache++) {
    CHECK(metrics_kid(p.x1, p.n1, p.x2, p.n2, p.d, n_subsets, size, seed, cache, &r) == A3_OK);
    CHECK(r.subset_size == m && r.n_subsets == n_subsets);
    snprintf(what, sizeof what, "%s mean (cache %d)", obj, cache);
    check_rel(what, r.mean, golden_attr(f, obj, "mean"), 1e-4, &worst_kid);
    snprintf(what, sizeof what, "%s std (cache %d)", obj, cache);
    check_rel(what, r.std, golden_attr(f, obj, "std"), 1e-4, &worst_kid);
  }
  a3_kid_result auto_path;
  CHECK(a3_kid(p.x1, p.n1, p.x2, p.n2, p.d, n_subsets, size, seed, &auto_path) == A3_OK);
  CHECK(auto_path.mean == r.mean && auto_path.std == r.std);
  fprintf(stderr, "%s: KID %.8g +- %.3g (m = %lld)\n", obj, r.mean, r.std, (long long)m);
  free_pair(&p);
}

static void check_fraction(const char *obj, const char *name, double got, double want) {
  CHECK_MSG(fabs(got - want) <= 1e-12, "%s %s: got %.15g, want %.15g", obj, name, got, want);
}

static void check_prdc(hid_t f, const char *pcase, const char *fcase) {
  feature_pair p;
  if (!read_pair(f, fcase, &p)) return;
  char obj[64];
  snprintf(obj, sizeof obj, "prdc/%s", pcase);
  const int64_t k = (int64_t)golden_attr(f, obj, "k");
  a3_prdc_result r;
  CHECK(a3_prdc(p.x1, p.n1, p.x2, p.n2, p.d, k, &r) == A3_OK);
  check_fraction(obj, "precision", r.precision, golden_attr(f, obj, "precision"));
  check_fraction(obj, "recall", r.recall, golden_attr(f, obj, "recall"));
  check_fraction(obj, "density", r.density, golden_attr(f, obj, "density"));
  check_fraction(obj, "coverage", r.coverage, golden_attr(f, obj, "coverage"));
  fprintf(stderr, "%s: P %.4f R %.4f D %.4f C %.4f\n", obj, r.precision, r.recall, r.density,
          r.coverage);
  free_pair(&p);
}

static void check_diversity(hid_t f) {
  feature_pair p;
  if (!read_pair(f, "differ", &p)) return;
  double got = 0;
  CHECK(a3_mean_pairwise_distance(p.x2, p.n2, p.d, &got) == A3_OK);
  check_rel("diversity mean_pairwise", got, golden_attr(f, "diversity", "mean_pairwise"), 1e-6,
            &worst_dist);
  free_pair(&p);
}

typedef struct {
  float *samples, *train, *features;
  int64_t n, t, p, dfeat;
  int64_t *nearest, *second, *memorized, *order;
  double *d1, *d2, *per_cluster;
} memo_fixture;

static int read_memo(hid_t f, memo_fixture *m) {
  int64_t cs = 0, ct = 0, cf = 0, c = 0;
  m->samples = golden_f32(f, "memo/samples", &cs);
  m->train = golden_f32(f, "memo/train", &ct);
  m->features = golden_f32(f, "memo/features", &cf);
  m->nearest = golden_i64(f, "memo/nearest", &m->n);
  m->second = golden_i64(f, "memo/second", &c);
  m->memorized = golden_i64(f, "memo/memorized", &c);
  m->order = golden_i64(f, "memo/order", &c);
  m->d1 = golden_f64(f, "memo/d1", &c);
  m->d2 = golden_f64(f, "memo/d2", &c);
  m->per_cluster = golden_f64(f, "memo/per_cluster", &m->t);
  const int ok = m->samples && m->train && m->features && m->nearest && m->second && m->memorized &&
                 m->order && m->d1 && m->d2 && m->per_cluster && m->n > 0;
  CHECK_MSG(ok, "fixture /memo incomplete");
  if (ok) {
    m->p = cs / m->n;
    m->dfeat = cf / m->n;
    CHECK(ct == m->t * m->p);
  }
  return ok;
}

static void free_memo(memo_fixture *m) {
  void *bufs[] = {m->samples,   m->train, m->features, m->nearest, m->second,
                  m->memorized, m->order, m->d1,       m->d2,      m->per_cluster};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
}

// The per-sample outputs: neighbours and memorized flags exactly, distances to 1e-9.
static void check_memo_samples(const memo_fixture *m, const int64_t *near, const double *d1,
                               const double *d2, double ratio) {
  int64_t *i1 = calloc((size_t)m->n, sizeof(int64_t)), *i2 = calloc((size_t)m->n, sizeof(int64_t));
  double *e1 = calloc((size_t)m->n, sizeof(double)), *e2 = calloc((size_t)m->n, sizeof(double));
  CHECK(a3_nearest2(m->samples, m->n, m->train, m->t, m->p, i1, e1, i2, e2) == A3_OK);
  int64_t bad_idx = 0, bad_flag = 0;
  for (int64_t i = 0; i < m->n; i++) {
    bad_idx += near[i] != m->nearest[i] || i1[i] != m->nearest[i] || i2[i] != m->second[i];
    check_rel("memo d1", d1[i], m->d1[i], 1e-9, &worst_dist);
    check_rel("memo d2", d2[i], m->d2[i], 1e-9, &worst_dist);
    CHECK(e1[i] == d1[i] && e2[i] == d2[i]);
    bad_flag += (d1[i] == 0 || d1[i] * ratio < d2[i]) != (m->memorized[i] != 0);
  }
  CHECK_MSG(bad_idx == 0 && bad_flag == 0, "%lld neighbour and %lld flag mismatches",
            (long long)bad_idx, (long long)bad_flag);
  free(i1);
  free(i2);
  free(e1);
  free(e2);
}

static void check_clusters(hid_t f, const memo_fixture *m, const int64_t *near) {
  double *per = calloc((size_t)m->t, sizeof(double));
  a3_cluster_diversity cd;
  CHECK(a3_intra_cluster_diversity(m->features, m->n, m->dfeat, near, m->t, per, &cd) == A3_OK);
  CHECK(cd.n_clusters == (int64_t)golden_attr(f, "memo", "n_clusters"));
  check_rel("intra-cluster mean", cd.mean, golden_attr(f, "memo", "cluster_mean"), 1e-6,
            &worst_dist);
  for (int64_t c = 0; c < m->t; c++) {
    if (isnan(m->per_cluster[c]))
      CHECK(isnan(per[c]));
    else
      check_rel("intra-cluster per cluster", per[c], m->per_cluster[c], 1e-6, &worst_dist);
  }
  fprintf(stderr, "memo: intra-cluster diversity %.6g over %lld clusters\n", cd.mean,
          (long long)cd.n_clusters);
  free(per);
}

static void check_memo(hid_t f) {
  memo_fixture m = {0};
  if (!read_memo(f, &m)) {
    free_memo(&m);
    return;
  }
  const double ratio = golden_attr(f, "memo", "ratio");
  int64_t *near = calloc((size_t)m.n, sizeof(int64_t)),
          *order = calloc((size_t)m.n, sizeof(int64_t));
  double *d1 = calloc((size_t)m.n, sizeof(double)), *d2 = calloc((size_t)m.n, sizeof(double));
  a3_memorization_result r;
  CHECK(a3_memorization(m.samples, m.n, m.train, m.t, m.p, ratio, near, d1, d2, &r) == A3_OK);
  CHECK(r.n_memorized == (int64_t)golden_attr(f, "memo", "n_memorized") && r.n == m.n);
  check_fraction("memo", "fraction", r.fraction, golden_attr(f, "memo", "fraction"));
  check_memo_samples(&m, near, d1, d2, ratio);
  CHECK(a3_memorization_order(d1, d2, m.n, order) == A3_OK);
  int64_t bad = 0;
  for (int64_t i = 0; i < m.n; i++) bad += order[i] != m.order[i];
  CHECK_MSG(bad == 0, "memorization order: %lld positions differ", (long long)bad);
  fprintf(stderr, "memo: %lld of %lld memorized (ratio %g)\n", (long long)r.n_memorized,
          (long long)r.n, ratio);
  check_clusters(f, &m, near);
  free(near);
  free(order);
  free(d1);
  free(d2);
  free_memo(&m);
}

static void check_eigh(hid_t f) {
  int64_t na = 0, n = 0;
  double *a = golden_f64(f, "eigh/a", &na), *want = golden_f64(f, "eigh/w", &n);
  CHECK(a && want && na == n * n);
  if (!(a && want && na == n * n)) return;
  double *w = calloc((size_t)n, sizeof(double)), *v = calloc((size_t)na, sizeof(double));
  double *w2 = calloc((size_t)n, sizeof(double));
  CHECK(a3_sym_eigh(a, n, w, v) == A3_OK);
  CHECK(a3_sym_eigh(a, n, w2, NULL) == A3_OK);
  const double scale = fmax(fabs(want[0]), fabs(want[n - 1]));
  for (int64_t i = 0; i < n; i++) {
    worst_eig = fmax(worst_eig, fabs(w[i] - want[i]) / scale);
    worst_eig = fmax(worst_eig, fabs(w2[i] - want[i]) / scale);
  }
  CHECK_MSG(worst_eig <= 1e-12, "eigenvalues vs numpy: %.2e of the largest", worst_eig);
  free(a);
  free(want);
  free(w);
  free(w2);
  free(v);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s metrics_golden.h5\n", argv[0]);
    return 2;
  }
  hid_t f = H5Fopen(argv[1], H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return fprintf(stderr, "cannot open %s\n", argv[1]), 1;
  check_fid(f, "differ");
  check_fid(f, "close");
  check_fid(f, "rankdef");
  check_kid(f, "differ50", "differ");
  check_kid(f, "close_all", "close");
  check_kid(f, "rankdef10", "rankdef");
  check_prdc(f, "differ_k3", "differ");
  check_prdc(f, "close_k5", "close");
  check_prdc(f, "rankdef_k3", "rankdef");
  check_diversity(f);
  check_memo(f);
  check_eigh(f);
  H5Fclose(f);
  fprintf(stderr,
          "worst relative error vs numpy: FID %.2e, KID %.2e, distances %.2e, eigenvalues %.2e "
          "(of the largest)\n",
          worst_fid, worst_kid, worst_dist, worst_eig);
  return TEST_DONE("test_eval_metrics_reference");
}
