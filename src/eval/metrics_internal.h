// Helpers shared by the metrics (src/eval/metrics_*.c); not a public API.
#ifndef A3FTA_EVAL_METRICS_INTERNAL_H
#define A3FTA_EVAL_METRICS_INTERNAL_H

#include "a3fta/core.h"
#include "a3fta/metrics.h"

#include <stdint.h>

// A3_ERR_INPUT unless x (N, D) is non-NULL, N >= min_n, D >= 1 and finite.
// `what` names the metric and the set in the message ("FID: samples").
a3_status metrics_check_rows(const char *what, const float *x, int64_t n, int64_t d,
                             int64_t min_n) A3_WARN_UNUSED;

// sum_k (a[k] - b[k])^2 in double, in a fixed order (a, b: D floats).
double metrics_sqdist(const float *a, const float *b, int64_t d);

// Mean L2 distance over the pairs of rows idx[0..m) of x (N, D); m >= 2;
// idx NULL means rows 0..m-1.
a3_status metrics_mean_pairwise(const float *x, int64_t d, const int64_t *idx, int64_t m,
                                double *out) A3_WARN_UNUSED;

// a3_kid with the choice of path for tests: cache 1 computes the kernel
// matrices of the whole sets once, 0 those of each subset pair, -1 picks 1
// when (N1 + N2)^2 doubles fit in METRICS_KID_CACHE_MAX (128 MiB).
#define METRICS_KID_CACHE_MAX (16.0 * 1024 * 1024)
a3_status metrics_kid(const float *x1, int64_t n1, const float *x2, int64_t n2, int64_t d,
                      int64_t n_subsets, int64_t subset_size, uint64_t seed, int cache,
                      a3_kid_result *out) A3_WARN_UNUSED;

#endif
