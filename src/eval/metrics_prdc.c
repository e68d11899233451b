// Precision/recall (Kynkaanniemi et al. 2019) and density/coverage (Naeem et
// al. 2020) on k-NN balls, with the semantics of the `prdc` package. All
// comparisons are on squared distances, which orders exactly as distances.
#include "a3fta/metrics.h"
#include "eval/metrics_internal.h"

#include <math.h>
#include <stdlib.h>

// Squared distance from row i of x (N, D) to its k-th nearest other row:
// keeps the k smallest in an insertion-sorted list (k is small).
static double kth_neighbour_sq(const float *x, int64_t n, int64_t d, int64_t i, int64_t k,
                               double *best) {
  int64_t have = 0;
  for (int64_t j = 0; j < n; j++) {
    if (j == i) continue;
    const double s = metrics_sqdist(x + i * d, x + j * d, d);
    if (have == k && !(s < best[k - 1])) continue;
    int64_t p = have < k ? have++ : k - 1;
    while (p > 0 && best[p - 1] > s) {
      best[p] = best[p - 1];
      p--;
    }
    best[p] = s;
  }
  return best[k - 1];
}

// radius_sq (N) = squared k-NN radius of each row of x (N, D), N > k.
static a3_status knn_radii(const float *x, int64_t n, int64_t d, int64_t k, double *radius_sq) {
  double *best = NULL;
  A3_TRY(A3_ALLOC(best, k * n));
#pragma omp parallel for schedule(static) if (n * n * d >= 65536)
  for (int64_t i = 0; i < n; i++) radius_sq[i] = kth_neighbour_sq(x, n, d, i, k, best + i * k);
  free(best);
  return A3_OK;
}

// Per fake row j: how many real balls contain it (precision, density).
static void fake_side(const float *real, int64_t nr, const float *fake, int64_t nf, int64_t d,
                      const double *rr, int64_t *inside) {
#pragma omp parallel for schedule(static) if (nr * nf * d >= 65536)
  for (int64_t j = 0; j < nf; j++) {
    int64_t count = 0;
    for (int64_t i = 0; i < nr; i++) count += metrics_sqdist(real + i * d, fake + j * d, d) < rr[i];
    inside[j] = count;
  }
}

// Per real row i: is it in some fake ball (recall), is its nearest fake in
// its own ball (coverage). flags[i] = recall bit | coverage bit << 1.
static void real_side(const float *real, int64_t nr, const float *fake, int64_t nf, int64_t d,
                      const double *rr, const double *rf, int64_t *flags) {
#pragma omp parallel for schedule(static) if (nr * nf * d >= 65536)
  for (int64_t i = 0; i < nr; i++) {
    int recalled = 0;
    double nearest = INFINITY;
    for (int64_t j = 0; j < nf; j++) {
      const double s = metrics_sqdist(real + i * d, fake + j * d, d);
      recalled |= s < rf[j];
      if (s < nearest) nearest = s;
    }
    flags[i] = recalled | (int64_t)(nearest < rr[i]) << 1;
  }
}

static void prdc_reduce(const int64_t *inside, int64_t nf, const int64_t *flags, int64_t nr,
                        int64_t k, a3_prdc_result *out) {
  int64_t precise = 0, total_inside = 0, recalled = 0, covered = 0;
  for (int64_t j = 0; j < nf; j++) {
    precise += inside[j] > 0;
    total_inside += inside[j];
  }
  for (int64_t i = 0; i < nr; i++) {
    recalled += flags[i] & 1;
    covered += flags[i] >> 1 & 1;
  }
  *out = (a3_prdc_result){.precision = (double)precise / (double)nf,
                          .recall = (double)recalled / (double)nr,
                          .density = (double)total_inside / ((double)k * (double)nf),
                          .coverage = (double)covered / (double)nr,
                          .k = k};
}

a3_status a3_prdc(const float *real, int64_t n_real, const float *fake, int64_t n_fake, int64_t d,
                  int64_t k, a3_prdc_result *out) {
  if (k < 1) return A3_FAIL(A3_ERR_INPUT, "precision/recall: k = %lld < 1", (long long)k);
  A3_TRY(metrics_check_rows("precision/recall: real set (needs more rows than k)", real, n_real, d,
                            k + 1));
  A3_TRY(metrics_check_rows("precision/recall: generated set (needs more rows than k)", fake,
                            n_fake, d, k + 1));
  double *rr = NULL, *rf = NULL;
  int64_t *inside = NULL, *flags = NULL;
  a3_status st;
  A3_TRY_GOTO(st, A3_ALLOC(rr, n_real), done);
  A3_TRY_GOTO(st, A3_ALLOC(rf, n_fake), done);
  A3_TRY_GOTO(st, A3_ALLOC(inside, n_fake), done);
  A3_TRY_GOTO(st, A3_ALLOC(flags, n_real), done);
  A3_TRY_GOTO(st, knn_radii(real, n_real, d, k, rr), done);
  A3_TRY_GOTO(st, knn_radii(fake, n_fake, d, k, rf), done);
  fake_side(real, n_real, fake, n_fake, d, rr, inside);
  real_side(real, n_real, fake, n_fake, d, rr, rf, flags);
  prdc_reduce(inside, n_fake, flags, n_real, k, out);
done:
  free(rr);
  free(rf);
  free(inside);
  free(flags);
  return st;
}
