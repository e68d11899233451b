// Frechet distance between the Gaussians fitted to two feature sets (FID),
// by two symmetric eigen-decompositions (see a3fta/metrics.h for the route).
#include "a3fta/metrics.h"
#include "eval/metrics_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void a3_feature_stats_free(a3_feature_stats *s) {
  if (!s) return;
  free(s->mean);
  free(s->cov);
  s->mean = s->cov = NULL;
  s->n = s->d = 0;
}

// Centred copy of x in double: xc (N, D) = x - mean.
static void center(const float *x, int64_t n, int64_t d, const double *mean, double *xc) {
  for (int64_t i = 0; i < n; i++)
    for (int64_t k = 0; k < d; k++) xc[i * d + k] = (double)x[i * d + k] - mean[k];
}

// `what` names the set in error messages.
static a3_status stats_compute(const char *what, const float *x, int64_t n, int64_t d,
                               a3_feature_stats *out) {
  A3_TRY(metrics_check_rows(what, x, n, d, 2)); // a covariance divides by N - 1
  a3_feature_stats s = {.n = n, .d = d};
  double *xc = NULL;
  a3_status st;
  A3_TRY_GOTO(st, A3_ALLOC(s.mean, d), fail);
  A3_TRY_GOTO(st, A3_ALLOC(s.cov, d * d), fail);
  A3_TRY_GOTO(st, A3_ALLOC(xc, n * d), fail);
  for (int64_t i = 0; i < n; i++)
    for (int64_t k = 0; k < d; k++) s.mean[k] += x[i * d + k];
  for (int64_t k = 0; k < d; k++) s.mean[k] /= (double)n;
  // Centring first (two passes) rather than E[xx^T] - mu mu^T, which cancels
  // when the mean is large next to the spread.
  center(x, n, d, s.mean, xc);
  // cov (D, D) = xc^T xc / (N - 1), lower triangle, then mirrored.
  cblas_dsyrk(CblasRowMajor, CblasLower, CblasTrans, (int)d, (int)n, 1.0 / (double)(n - 1), xc,
              (int)d, 0.0, s.cov, (int)d);
  for (int64_t i = 0; i < d; i++)
    for (int64_t j = 0; j < i; j++) s.cov[j * d + i] = s.cov[i * d + j];
  free(xc);
  *out = s;
  return A3_OK;
fail:
  free(xc);
  a3_feature_stats_free(&s);
  return st;
}

a3_status a3_feature_stats_compute(const float *x, int64_t n, int64_t d, a3_feature_stats *out) {
  A3_TRY(stats_compute("FID statistics", x, n, d, out));
  return A3_OK;
}

// c (D, D) = v^T s2 v, symmetrised (rounding leaves it a hair asymmetric and
// the eigensolver reads one triangle).
static void rotate(const double *v, const double *s2, int64_t d, double *tmp, double *c) {
  const int n = (int)d;
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0, s2, n, v, n, 0.0, tmp, n);
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, n, 1.0, v, n, tmp, n, 0.0, c, n);
  for (int64_t i = 0; i < d; i++)
    for (int64_t j = 0; j < i; j++) {
      const double m = 0.5 * (c[i * d + j] + c[j * d + i]);
      c[i * d + j] = c[j * d + i] = m;
    }
}

// Most negative eigenvalue relative to the largest |eigenvalue| (0 if none).
static double negative_rel(const double *w, int64_t d) {
  const double top = fmax(fabs(w[0]), fabs(w[d - 1])); // ascending
  return (w[0] < 0 && top > 0) ? -w[0] / top : 0;
}

// Tr (S1^1/2 S2 S1^1/2)^1/2 through M' = L^1/2 V^T S2 V L^1/2 (S1 = V L V^T).
static a3_status trace_sqrt_product(const double *s1, const double *s2, int64_t d, double *trace,
                                    double *clamped) {
  double *v = NULL, *w = NULL, *tmp = NULL, *m = NULL;
  a3_status st;
  A3_TRY_GOTO(st, A3_ALLOC(v, d * d), done);
  A3_TRY_GOTO(st, A3_ALLOC(tmp, d * d), done);
  A3_TRY_GOTO(st, A3_ALLOC(m, d * d), done);
  A3_TRY_GOTO(st, A3_ALLOC(w, d), done);
  A3_TRY_GOTO(st, a3_sym_eigh(s1, d, w, v), done);
  *clamped = negative_rel(w, d);
  rotate(v, s2, d, tmp, m);
  for (int64_t i = 0; i < d; i++) w[i] = sqrt(fmax(w[i], 0)); // L^1/2
  for (int64_t i = 0; i < d; i++)
    for (int64_t j = 0; j < d; j++) m[i * d + j] *= w[i] * w[j];
  A3_TRY_GOTO(st, a3_sym_eigh(m, d, w, NULL), done);
  *clamped = fmax(*clamped, negative_rel(w, d));
  *trace = 0;
  for (int64_t i = 0; i < d; i++) *trace += sqrt(fmax(w[i], 0));
done:
  free(v);
  free(w);
  free(tmp);
  free(m);
  return st;
}

static a3_status check_stats(const char *what, const a3_feature_stats *s) {
  if (!s || !s->mean || !s->cov || s->d < 1)
    return A3_FAIL(A3_ERR_INTERNAL, "FID: %s statistics are empty", what);
  if (s->n < 2)
    return A3_FAIL(A3_ERR_INPUT, "FID: %s has %lld samples, a covariance needs at least 2", what,
                   (long long)s->n);
  for (int64_t i = 0; i < s->d * s->d; i++)
    if (!isfinite(s->cov[i]) || (i < s->d && !isfinite(s->mean[i])))
      return A3_FAIL(A3_ERR_INPUT, "FID: %s statistics hold a non-finite value", what);
  return A3_OK;
}

a3_status a3_fid_from_stats(const a3_feature_stats *s1, const a3_feature_stats *s2,
                            a3_fid_result *out) {
  A3_TRY(check_stats("the first set", s1));
  A3_TRY(check_stats("the second set", s2));
  const int64_t d = s1->d;
  if (s2->d != d)
    return A3_FAIL(A3_ERR_INPUT, "FID: feature dimensions differ (%lld vs %lld)", (long long)d,
                   (long long)s2->d);
  a3_fid_result r = {0};
  for (int64_t k = 0; k < d; k++) {
    const double dm = s1->mean[k] - s2->mean[k];
    r.mean_dist2 += dm * dm;
    r.trace1 += s1->cov[k * d + k];
    r.trace2 += s2->cov[k * d + k];
  }
  A3_TRY(trace_sqrt_product(s1->cov, s2->cov, d, &r.trace_sqrt, &r.clamped_rel));
  r.fid = r.mean_dist2 + r.trace1 + r.trace2 - 2 * r.trace_sqrt;
  *out = r;
  return A3_OK;
}

a3_status a3_fid(const float *x1, int64_t n1, const float *x2, int64_t n2, int64_t d,
                 a3_fid_result *out) {
  a3_feature_stats s1 = {0}, s2 = {0};
  a3_status st;
  A3_TRY_GOTO(st, stats_compute("FID: first set", x1, n1, d, &s1), done);
  A3_TRY_GOTO(st, stats_compute("FID: second set", x2, n2, d, &s2), done);
  A3_TRY_GOTO(st, a3_fid_from_stats(&s1, &s2, out), done);
done:
  a3_feature_stats_free(&s1);
  a3_feature_stats_free(&s2);
  return st;
}
