// Kernel Inception Distance: unbiased MMD^2 with the cubic polynomial kernel
// over random subsets (see a3fta/metrics.h for the conventions).
#include "a3fta/metrics.h"
#include "eval/metrics_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

a3_status a3_kid_subset_indices(uint64_t seed, int64_t subset, int which, int64_t n, int64_t m,
                                int64_t *idx) {
  if (m < 1 || m > n || m > INT32_MAX || subset < 0 || (which != 0 && which != 1) || !idx)
    return A3_FAIL(A3_ERR_INTERNAL, "KID subset: bad arguments (m = %lld of n = %lld, set %d)",
                   (long long)m, (long long)n, which);
  int64_t *perm = NULL;
  A3_TRY(A3_ALLOC(perm, n));
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  const uint64_t base = ((uint64_t)(2 * subset + which)) << 32;
  for (int64_t i = 0; i < m; i++) {
    const int64_t j = i + (int64_t)a3_rng_below(seed, A3_STREAM_KID_SUBSET, base | (uint64_t)i,
                                                (uint64_t)(n - i));
    const int64_t t = perm[i];
    perm[i] = perm[j];
    perm[j] = t;
    idx[i] = perm[i];
  }
  free(perm);
  return A3_OK;
}

// Rows idx[0..m) of x (N, D) as double (all N rows when idx is NULL).
static void gather(const float *x, int64_t d, const int64_t *idx, int64_t m, double *out) {
  for (int64_t i = 0; i < m; i++)
    for (int64_t k = 0; k < d; k++) out[i * d + k] = x[(idx ? idx[i] : i) * d + k];
}

// k (NA, NB) = (a b^T / D + 1)^3 for a (NA, D), b (NB, D).
static void poly_kernel(const double *a, int64_t na, const double *b, int64_t nb, int64_t d,
                        double *k) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)na, (int)nb, (int)d, 1.0, a, (int)d, b,
              (int)d, 0.0, k, (int)nb);
  const double inv_d = 1.0 / (double)d;
  for (int64_t i = 0; i < na * nb; i++) {
    const double t = k[i] * inv_d + 1;
    k[i] = t * t * t;
  }
}

// sum over i, j < m of k[ri[i], ci[j]] (row stride ld), leaving out i == j
// when `off_diagonal`; rows summed first, then totalled, in a fixed order.
static double subset_sum(const double *k, int64_t ld, const int64_t *ri, const int64_t *ci,
                         int64_t m, int off_diagonal) {
  double total = 0;
  for (int64_t i = 0; i < m; i++) {
    const double *row = k + ri[i] * ld;
    double s = 0;
    for (int64_t j = 0; j < m; j++)
      if (!off_diagonal || i != j) s += row[ci[j]];
    total += s;
  }
  return total;
}

// Kernel matrices: either of the whole sets, computed once (k11 (N1, N1),
// k22 (N2, N2), k12 (N1, N2)), indexed by each subset's rows; or, when they
// would not fit, of one subset pair at a time (each (m, m), indexed by 0..m-1).
typedef struct {
  int cached;
  int64_t m, ld1, ld2;  // subset size; row strides of k11 / k12 and of k22
  int64_t *idx1, *idx2; // (m) rows of the current subsets
  int64_t *iota;        // (m) 0..m-1, the per-subset path's indices
  double *a, *b;        // (m or N1, D), (m or N2, D) in double
  double *k11, *k22, *k12;
  double *per_subset; // (n_subsets)
} kid_work;

static void kid_work_free(kid_work *w) {
  void *bufs[] = {w->idx1, w->idx2, w->iota, w->a, w->b, w->k11, w->k22, w->k12, w->per_subset};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
}

static a3_status kid_work_alloc(kid_work *w, int64_t n1, int64_t n2, int64_t d, int64_t n_subsets) {
  const int64_t r1 = w->cached ? n1 : w->m, r2 = w->cached ? n2 : w->m;
  w->ld1 = r1;
  w->ld2 = r2;
  A3_TRY(A3_ALLOC(w->idx1, w->m));
  A3_TRY(A3_ALLOC(w->idx2, w->m));
  A3_TRY(A3_ALLOC(w->iota, w->m));
  for (int64_t i = 0; i < w->m; i++) w->iota[i] = i;
  A3_TRY(A3_ALLOC(w->a, r1 * d));
  A3_TRY(A3_ALLOC(w->b, r2 * d));
  A3_TRY(A3_ALLOC(w->k11, r1 * r1));
  A3_TRY(A3_ALLOC(w->k22, r2 * r2));
  A3_TRY(A3_ALLOC(w->k12, r1 * r2));
  A3_TRY(A3_ALLOC(w->per_subset, n_subsets));
  return A3_OK;
}

static void kernels(kid_work *w, const float *x1, int64_t r1, const int64_t *i1, const float *x2,
                    int64_t r2, const int64_t *i2, int64_t d) {
  gather(x1, d, i1, r1, w->a);
  gather(x2, d, i2, r2, w->b);
  poly_kernel(w->a, r1, w->a, r1, d, w->k11);
  poly_kernel(w->b, r2, w->b, r2, d, w->k22);
  poly_kernel(w->a, r1, w->b, r2, d, w->k12);
}

// The unbiased MMD^2 of one subset pair (torch-fidelity's mmd2).
static double mmd2(const kid_work *w) {
  const int64_t *i1 = w->cached ? w->idx1 : w->iota, *i2 = w->cached ? w->idx2 : w->iota;
  const double md = (double)w->m;
  const double xx = subset_sum(w->k11, w->ld1, i1, i1, w->m, 1);
  const double yy = subset_sum(w->k22, w->ld2, i2, i2, w->m, 1);
  const double xy = subset_sum(w->k12, w->ld2, i1, i2, w->m, 0);
  return (xx + yy) / (md * (md - 1)) - 2 * xy / (md * md);
}

static a3_status kid_subsets(const float *x1, int64_t n1, const float *x2, int64_t n2, int64_t d,
                             int64_t n_subsets, uint64_t seed, kid_work *w) {
  if (w->cached) kernels(w, x1, n1, NULL, x2, n2, NULL, d);
  for (int64_t s = 0; s < n_subsets; s++) {
    A3_TRY(a3_kid_subset_indices(seed, s, 0, n1, w->m, w->idx1));
    A3_TRY(a3_kid_subset_indices(seed, s, 1, n2, w->m, w->idx2));
    if (!w->cached) kernels(w, x1, w->m, w->idx1, x2, w->m, w->idx2, d);
    w->per_subset[s] = mmd2(w);
  }
  return A3_OK;
}

static void kid_summary(const double *v, int64_t n_subsets, int64_t m, a3_kid_result *out) {
  double mean = 0, var = 0;
  for (int64_t s = 0; s < n_subsets; s++) mean += v[s];
  mean /= (double)n_subsets;
  for (int64_t s = 0; s < n_subsets; s++) var += (v[s] - mean) * (v[s] - mean);
  *out = (a3_kid_result){
      .mean = mean, .std = sqrt(var / (double)n_subsets), .subset_size = m, .n_subsets = n_subsets};
}

a3_status metrics_kid(const float *x1, int64_t n1, const float *x2, int64_t n2, int64_t d,
                      int64_t n_subsets, int64_t subset_size, uint64_t seed, int cache,
                      a3_kid_result *out) {
  A3_TRY(metrics_check_rows("KID: first set", x1, n1, d, 2));
  A3_TRY(metrics_check_rows("KID: second set", x2, n2, d, 2));
  if (n_subsets < 1 || subset_size < 2)
    return A3_FAIL(A3_ERR_INPUT, "KID: needs >= 1 subsets of >= 2 rows (got %lld of %lld)",
                   (long long)n_subsets, (long long)subset_size);
  kid_work w = {.m = subset_size < n1 ? subset_size : n1};
  if (n2 < w.m) w.m = n2;
  // Whole-set kernels cost (N1 + N2)^2 D once instead of 3 m^2 D per subset:
  // 100x less for torch-fidelity's 100 subsets of 1000 from 1000 samples each.
  const double cells = (double)(n1 + n2) * (double)(n1 + n2);
  w.cached = cache >= 0 ? cache : cells <= METRICS_KID_CACHE_MAX;
  a3_status st;
  A3_TRY_GOTO(st, kid_work_alloc(&w, n1, n2, d, n_subsets), done);
  A3_TRY_GOTO(st, kid_subsets(x1, n1, x2, n2, d, n_subsets, seed, &w), done);
  kid_summary(w.per_subset, n_subsets, w.m, out);
done:
  kid_work_free(&w);
  return st;
}

a3_status a3_kid(const float *x1, int64_t n1, const float *x2, int64_t n2, int64_t d,
                 int64_t n_subsets, int64_t subset_size, uint64_t seed, a3_kid_result *out) {
  A3_TRY(metrics_kid(x1, n1, x2, n2, d, n_subsets, subset_size, seed, -1, out));
  return A3_OK;
}
