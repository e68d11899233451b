// Metrics on cases with known answers, their errors, and determinism:
// identical sets give FID ~0, a shift gives FID = |shift|^2, bad inputs (too
// few rows, NaN/Inf) are clear errors, results do not depend on threads.
#include "a3fta/metrics.h"
#include "test_util.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

// Gaussian matrix (N, D) from core's Philox (Box-Muller), times `scale`,
// with column k multiplied by (1 + k) / D to make the covariance anisotropic.
static float *gaussian(int64_t n, int64_t d, uint64_t seed, double scale) {
  float *x = malloc((size_t)(n * d) * sizeof(float));
  for (int64_t i = 0; i < n * d; i++) {
    const double u1 = ((double)(a3_rng_u64(seed, 7, 2 * (uint64_t)i) >> 11) + 0.5) * 0x1p-53;
    const double u2 = (double)(a3_rng_u64(seed, 7, 2 * (uint64_t)i + 1) >> 11) * 0x1p-53;
    x[i] = (float)(scale * sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2) *
                   (1.0 + (double)(i % d)) / (double)d);
  }
  return x;
}

static int error_mentions(const char *word) { return strstr(a3_error_message(), word) != NULL; }

static void fid_identical(int64_t n, int64_t d) {
  float *x = gaussian(n, d, 11 + (uint64_t)n, 3.0);
  a3_fid_result r;
  CHECK(a3_fid(x, n, x, n, d, &r) == A3_OK);
  const double rel = fabs(r.fid) / (r.trace1 + r.trace2);
  CHECK_MSG(rel < 1e-6, "identical sets N=%lld D=%lld: FID %.3e, %.2e of the traces", (long long)n,
            (long long)d, r.fid, rel);
  CHECK(r.mean_dist2 == 0 && r.trace1 == r.trace2);
  fprintf(stderr, "identical sets N=%lld D=%lld: FID %.2e (%.1e of Tr S1 + Tr S2)\n", (long long)n,
          (long long)d, r.fid, rel);
  free(x);
}

// x2 = x1 + c: equal covariances, so FID = |c|^2 exactly in real numbers.
static void fid_shift(void) {
  const int64_t n = 120, d = 24;
  float *x1 = gaussian(n, d, 5, 1.0), *x2 = malloc((size_t)(n * d) * sizeof(float));
  for (int64_t i = 0; i < n * d; i++) x2[i] = x1[i] + 0.25f;
  a3_fid_result r, rs;
  CHECK(a3_fid(x1, n, x2, n, d, &r) == A3_OK);
  CHECK(a3_fid(x2, n, x1, n, d, &rs) == A3_OK);
  // x1 + 0.25 rounds, so the covariances differ by rounding: compare the
  // FID with the measured mean distance (~ d / 16) to 1e-6 of the traces.
  CHECK_MSG(fabs(r.fid - r.mean_dist2) < 1e-6 * (r.trace1 + r.trace2), "shift: FID %.12g vs %.12g",
            r.fid, r.mean_dist2);
  CHECK(fabs(r.mean_dist2 - (double)d / 16) < 1e-4);
  CHECK_MSG(fabs(r.fid - rs.fid) <= 1e-10 * r.fid, "FID not symmetric: %.15g vs %.15g", r.fid,
            rs.fid);
  a3_feature_stats s1 = {0}, s2 = {0};
  a3_fid_result r2;
  CHECK(a3_feature_stats_compute(x1, n, d, &s1) == A3_OK);
  CHECK(a3_feature_stats_compute(x2, n, d, &s2) == A3_OK);
  CHECK(a3_fid_from_stats(&s1, &s2, &r2) == A3_OK && r2.fid == r.fid);
  a3_feature_stats_free(&s1);
  a3_feature_stats_free(&s1); // twice is safe
  a3_feature_stats_free(&s2);
  free(x1);
  free(x2);
}

// Every metric refuses NaN and Inf features, naming the problem.
static void nonfinite_rejected(void) {
  const int64_t n = 20, d = 8;
  float *x = gaussian(n, d, 3, 1.0), *y = gaussian(n, d, 4, 1.0);
  const float bad[2] = {NAN, INFINITY};
  for (int b = 0; b < 2; b++) {
    y[7 * d + 3] = bad[b];
    a3_fid_result fr;
    a3_kid_result kr;
    a3_prdc_result pr;
    a3_memorization_result mr;
    a3_cluster_diversity cd;
    double v;
    int64_t cl[20] = {0};
    a3_status st[] = {a3_fid(x, n, y, n, d, &fr),
                      a3_fid(y, n, x, n, d, &fr),
                      a3_kid(x, n, y, n, d, 5, 10, 1, &kr),
                      a3_prdc(x, n, y, n, d, 3, &pr),
                      a3_prdc(y, n, x, n, d, 3, &pr),
                      a3_mean_pairwise_distance(y, n, d, &v),
                      a3_intra_cluster_diversity(y, n, d, cl, 1, NULL, &cd),
                      a3_memorization(y, n, x, n, d, 3, NULL, NULL, NULL, &mr),
                      a3_memorization(x, n, y, n, d, 3, NULL, NULL, NULL, &mr)};
    for (size_t i = 0; i < sizeof st / sizeof *st; i++)
      CHECK_MSG(st[i] == A3_ERR_INPUT, "metric %zu accepted a non-finite feature", i);
    CHECK(error_mentions("non-finite") && error_mentions("row 7, column 3"));
    a3_error_clear();
  }
  double a[4] = {1, NAN, NAN, 1}, w[2];
  CHECK(a3_sym_eigh(a, 2, w, NULL) == A3_ERR_INPUT);
  a3_error_clear();
  free(x);
  free(y);
}

static void too_few_rejected(void) {
  const int64_t d = 4;
  float *x = gaussian(10, d, 9, 1.0);
  a3_fid_result fr;
  a3_kid_result kr;
  a3_prdc_result pr;
  a3_memorization_result mr;
  a3_feature_stats s = {0};
  double v;
  CHECK(a3_fid(x, 1, x, 10, d, &fr) == A3_ERR_INPUT && error_mentions("at least 2"));
  fprintf(stderr, "N = 1: \"%s\"\n", a3_error_message());
  CHECK(a3_fid(x, 10, x, 1, d, &fr) == A3_ERR_INPUT && error_mentions("second set"));
  CHECK(a3_fid(x, 10, x, 10, 0, &fr) == A3_ERR_INPUT);
  CHECK(a3_feature_stats_compute(x, 1, d, &s) == A3_ERR_INPUT);
  CHECK(a3_kid(x, 1, x, 10, d, 5, 10, 0, &kr) == A3_ERR_INPUT);
  CHECK(a3_kid(x, 10, x, 10, d, 0, 10, 0, &kr) == A3_ERR_INPUT);
  CHECK(a3_kid(x, 10, x, 10, d, 5, 1, 0, &kr) == A3_ERR_INPUT);
  CHECK(a3_prdc(x, 3, x, 10, d, 3, &pr) == A3_ERR_INPUT && error_mentions("more rows than k"));
  CHECK(a3_prdc(x, 10, x, 10, d, 0, &pr) == A3_ERR_INPUT);
  CHECK(a3_mean_pairwise_distance(x, 1, d, &v) == A3_ERR_INPUT);
  CHECK(a3_memorization(x, 10, x, 1, d, 3, NULL, NULL, NULL, &mr) == A3_ERR_INPUT);
  CHECK(a3_memorization(x, 10, x, 10, d, 0.5, NULL, NULL, NULL, &mr) == A3_ERR_INPUT);
  int64_t cl[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
  a3_cluster_diversity cd;
  CHECK(a3_intra_cluster_diversity(x, 10, d, cl, 9, NULL, &cd) == A3_ERR_INPUT);
  CHECK(a3_intra_cluster_diversity(x, 10, d, cl, 10, NULL, &cd) == A3_OK);
  CHECK(cd.n_clusters == 0 && isnan(cd.mean)); // all singletons: undefined, not 0
  a3_error_clear();
  free(x);
}

// KID: subsets clamp to the smaller set, the seed matters, same seed repeats.
static void kid_subsets(void) {
  const int64_t d = 16;
  float *x = gaussian(40, d, 21, 1.0), *y = gaussian(30, d, 22, 1.5);
  a3_kid_result a, b, c;
  CHECK(a3_kid(x, 40, y, 30, d, 8, 1000, 5, &a) == A3_OK && a.subset_size == 30);
  CHECK(a3_kid(x, 40, y, 30, d, 8, 1000, 5, &b) == A3_OK && a.mean == b.mean && a.std == b.std);
  CHECK(a3_kid(x, 40, y, 30, d, 8, 1000, 6, &c) == A3_OK && c.mean != a.mean);
  CHECK(a.mean > 0); // different scales: clearly positive
  int64_t idx[40];
  CHECK(a3_kid_subset_indices(1, 0, 0, 40, 40, idx) == A3_OK);
  int seen[40] = {0}, perm_ok = 1;
  for (int i = 0; i < 40; i++) perm_ok &= idx[i] >= 0 && idx[i] < 40 && !seen[idx[i]]++;
  CHECK(perm_ok);
  CHECK(a3_kid_subset_indices(1, 0, 0, 40, 41, idx) == A3_ERR_INTERNAL);
  a3_error_clear();
  free(x);
  free(y);
}

static void memorization_order(void) {
  const double d1[5] = {1, 0, 0.5, 2, 0.5}, d2[5] = {2, 0, 5, 3, 5};
  int64_t order[5];
  CHECK(a3_memorization_order(d1, d2, 5, order) == A3_OK);
  CHECK(order[0] == 1 && order[1] == 2 && order[2] == 4 && order[3] == 0 && order[4] == 3);
}

// Known spectra: diagonal, identity + rank one (a repeated eigenvalue), zero.
static void eigh_known(void) {
  double a[16] = {3, 0, 0, 0, 0, -1, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0}, w[4], v[16];
  CHECK(a3_sym_eigh(a, 4, w, v) == A3_OK);
  CHECK(w[0] == -1 && w[1] == 0 && w[2] == 2 && w[3] == 3);
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 4; j++) a[i * 4 + j] = (i == j) + 1.0; // I + 11^T: 1, 1, 1, 5
  CHECK(a3_sym_eigh(a, 4, w, v) == A3_OK);
  CHECK(fabs(w[0] - 1) < 1e-14 && fabs(w[2] - 1) < 1e-14 && fabs(w[3] - 5) < 1e-14);
  CHECK(fabs(fabs(v[3]) - 0.5) < 1e-14); // eigenvector of 5: (1,1,1,1)/2
  memset(a, 0, sizeof a);
  CHECK(a3_sym_eigh(a, 4, w, NULL) == A3_OK && w[0] == 0 && w[3] == 0);
  a[0] = 7;
  CHECK(a3_sym_eigh(a, 1, w, v) == A3_OK && w[0] == 7 && v[0] == 1);
}

// A larger random matrix: A V = V diag(w), V^T V = I; and its speed.
static void eigh_random(int64_t n) {
  float *g = gaussian(n, n, 31, 1.0);
  double *a = malloc((size_t)(n * n) * sizeof(double)),
         *v = malloc((size_t)(n * n) * sizeof(double));
  double *w = malloc((size_t)n * sizeof(double));
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) a[i * n + j] = (double)g[i * n + j] + g[j * n + i];
  const double t0 = omp_get_wtime();
  CHECK(a3_sym_eigh(a, n, w, v) == A3_OK);
  const double t1 = omp_get_wtime();
  double res = 0, orth = 0;
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < n; j++) {
      double av = 0, vv = 0;
      for (int64_t k = 0; k < n; k++) {
        av += a[i * n + k] * v[k * n + j];
        vv += v[k * n + i] * v[k * n + j];
      }
      res = fmax(res, fabs(av - v[i * n + j] * w[j]));
      orth = fmax(orth, fabs(vv - (i == j)));
    }
  const double scale = fmax(fabs(w[0]), fabs(w[n - 1]));
  int sorted = 1;
  for (int64_t i = 1; i < n; i++) sorted &= w[i - 1] <= w[i];
  CHECK(sorted && res < 1e-12 * scale && orth < 1e-12);
  fprintf(stderr, "eigh n=%lld: %.3f s, |AV - VW| %.1e of |w|max, |V^T V - I| %.1e\n", (long long)n,
          t1 - t0, res / scale, orth);
  free(g);
  free(a);
  free(v);
  free(w);
}

typedef struct {
  a3_fid_result fid;
  a3_kid_result kid;
  a3_prdc_result prdc;
  a3_memorization_result memo;
  a3_cluster_diversity clusters;
  double pairwise;
  int64_t nearest[300];
} all_metrics;

static void run_all(const float *x, const float *y, int64_t n, int64_t d, all_metrics *m) {
  double d1[300], d2[300];
  CHECK(a3_fid(x, n, y, n, d, &m->fid) == A3_OK);
  CHECK(a3_kid(x, n, y, n, d, 10, 100, 3, &m->kid) == A3_OK);
  CHECK(a3_prdc(x, n, y, n, d, 3, &m->prdc) == A3_OK);
  CHECK(a3_mean_pairwise_distance(y, n, d, &m->pairwise) == A3_OK);
  CHECK(a3_memorization(y, n, x, 20, d, 3, m->nearest, d1, d2, &m->memo) == A3_OK);
  CHECK(a3_intra_cluster_diversity(y, n, d, m->nearest, 20, NULL, &m->clusters) == A3_OK);
}

// Same bits with 1 thread and with several.
static void thread_independent(void) {
  const int64_t n = 300, d = 48;
  float *x = gaussian(n, d, 41, 1.0), *y = gaussian(n, d, 42, 1.2);
  all_metrics one, many;
  memset(&one, 0, sizeof one);
  memset(&many, 0, sizeof many);
  const int threads = omp_get_max_threads();
  omp_set_num_threads(1);
  run_all(x, y, n, d, &one);
  omp_set_num_threads(threads > 1 ? threads : 2);
  run_all(x, y, n, d, &many);
  omp_set_num_threads(threads);
  // Compare fields, not the struct bytes: padding is unspecified.
  CHECK(one.fid.fid == many.fid.fid && one.kid.mean == many.kid.mean &&
        one.kid.std == many.kid.std && one.pairwise == many.pairwise &&
        one.prdc.precision == many.prdc.precision && one.prdc.recall == many.prdc.recall &&
        one.prdc.density == many.prdc.density && one.prdc.coverage == many.prdc.coverage &&
        one.memo.n_memorized == many.memo.n_memorized && one.clusters.mean == many.clusters.mean &&
        !memcmp(one.nearest, many.nearest, sizeof one.nearest));
  fprintf(stderr, "thread independence (1 vs %d threads): FID %.6g, KID %.4g\n",
          threads > 1 ? threads : 2, one.fid.fid, one.kid.mean);
  free(x);
  free(y);
}

int main(void) {
  fid_identical(200, 32);
  fid_identical(10, 32); // rank-deficient: N < D
  fid_identical(400, 256);
  fid_shift();
  nonfinite_rejected();
  too_few_rejected();
  kid_subsets();
  memorization_order();
  eigh_known();
  eigh_random(150);
  eigh_random(512);
  thread_independent();
  return TEST_DONE("test_eval_metrics_edge");
}
