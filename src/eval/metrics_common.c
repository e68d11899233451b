// Input checks, distances and nearest neighbours shared by the metrics.
#include "a3fta/metrics.h"
#include "eval/metrics_internal.h"

#include <math.h>
#include <stdlib.h>

a3_status metrics_check_rows(const char *what, const float *x, int64_t n, int64_t d,
                             int64_t min_n) {
  if (!x && n > 0) return A3_FAIL(A3_ERR_INPUT, "%s: no data (NULL matrix)", what);
  if (d < 1) return A3_FAIL(A3_ERR_INPUT, "%s: feature dimension %lld < 1", what, (long long)d);
  if (n < min_n)
    return A3_FAIL(A3_ERR_INPUT, "%s: this metric needs at least %lld rows, got %lld", what,
                   (long long)min_n, (long long)n);
  for (int64_t i = 0; i < n; i++)
    for (int64_t k = 0; k < d; k++)
      if (!isfinite(x[i * d + k]))
        return A3_FAIL(A3_ERR_INPUT,
                       "%s: non-finite value %g at row %lld, column %lld (did sampling or the "
                       "feature network diverge?)",
                       what, (double)x[i * d + k], (long long)i, (long long)k);
  return A3_OK;
}

double metrics_sqdist(const float *a, const float *b, int64_t d) {
  // Four partial sums: the compiler may not reorder one double sum, and four
  // independent chains run about four times faster, still in a fixed order.
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t k = 0;
  for (; k + 4 <= d; k += 4) {
    const double t0 = (double)a[k] - b[k], t1 = (double)a[k + 1] - b[k + 1];
    const double t2 = (double)a[k + 2] - b[k + 2], t3 = (double)a[k + 3] - b[k + 3];
    s0 += t0 * t0;
    s1 += t1 * t1;
    s2 += t2 * t2;
    s3 += t3 * t3;
  }
  for (; k < d; k++) {
    const double t = (double)a[k] - b[k];
    s0 += t * t;
  }
  return (s0 + s1) + (s2 + s3);
}

a3_status metrics_mean_pairwise(const float *x, int64_t d, const int64_t *idx, int64_t m,
                                double *out) {
  double *row = NULL;
  A3_TRY(A3_ALLOC(row, m));
  // Row sums in parallel, then one sequential total: thread-count independent.
#pragma omp parallel for schedule(dynamic, 4) if (m * d >= 8192)
  for (int64_t i = 0; i < m; i++) {
    const float *xi = x + (idx ? idx[i] : i) * d;
    double s = 0;
    for (int64_t j = i + 1; j < m; j++)
      s += sqrt(metrics_sqdist(xi, x + (idx ? idx[j] : j) * d, d));
    row[i] = s;
  }
  double total = 0;
  for (int64_t i = 0; i < m; i++) total += row[i];
  free(row);
  *out = total / ((double)m * (double)(m - 1) / 2);
  return A3_OK;
}

// Nearest two of ref for one query, by squared distance; strict < keeps the
// lower index first on ties.
static void nearest2_row(const float *q, const float *ref, int64_t r, int64_t d, int64_t *i1,
                         double *s1, int64_t *i2, double *s2) {
  *i1 = *i2 = -1;
  *s1 = *s2 = INFINITY;
  for (int64_t j = 0; j < r; j++) {
    const double s = metrics_sqdist(q, ref + j * d, d);
    if (s < *s1) {
      *i2 = *i1;
      *s2 = *s1;
      *i1 = j;
      *s1 = s;
    } else if (s < *s2) {
      *i2 = j;
      *s2 = s;
    }
  }
}

a3_status a3_nearest2(const float *q, int64_t n, const float *ref, int64_t r, int64_t d,
                      int64_t *idx1, double *d1, int64_t *idx2, double *d2) {
  const int second = idx2 || d2;
  A3_TRY(metrics_check_rows("nearest neighbours: queries", q, n, d, 1));
  A3_TRY(metrics_check_rows("nearest neighbours: references", ref, r, d, second ? 2 : 1));
  if (!idx1 || !d1 || (second && !(idx2 && d2)))
    return A3_FAIL(A3_ERR_INTERNAL, "a3_nearest2: idx1, d1 are required, idx2 and d2 go together");
#pragma omp parallel for schedule(static) if (n * r * d >= 65536)
  for (int64_t i = 0; i < n; i++) {
    int64_t i1, i2;
    double s1, s2;
    nearest2_row(q + i * d, ref, r, d, &i1, &s1, &i2, &s2);
    idx1[i] = i1;
    d1[i] = sqrt(s1);
    if (second) {
      idx2[i] = i2;
      d2[i] = sqrt(s2);
    }
  }
  return A3_OK;
}
