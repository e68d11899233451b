// Memorization: samples much closer to one training image than to any other.
#include "a3fta/metrics.h"
#include "eval/metrics_internal.h"

#include <math.h>
#include <stdlib.h>

static int is_memorized(double d1, double d2, double ratio) { return d1 == 0 || d1 * ratio < d2; }

a3_status a3_memorization(const float *samples, int64_t n, const float *train, int64_t n_train,
                          int64_t d, double ratio, int64_t *nearest, double *d1, double *d2,
                          a3_memorization_result *out) {
  A3_TRY(metrics_check_rows("memorization: samples", samples, n, d, 1));
  A3_TRY(metrics_check_rows("memorization: training images (nearest and second nearest)", train,
                            n_train, d, 2));
  if (!(ratio >= 1) || !isfinite(ratio))
    return A3_FAIL(A3_ERR_INPUT, "memorization: ratio %g must be finite and >= 1", ratio);
  // Caller's arrays when given, else our own.
  int64_t *i1 = nearest, *i2 = NULL;
  double *a = d1, *b = d2;
  a3_status st;
  A3_TRY_GOTO(st, A3_ALLOC(i2, n), done);
  if (!nearest) A3_TRY_GOTO(st, A3_ALLOC(i1, n), done);
  if (!d1) A3_TRY_GOTO(st, A3_ALLOC(a, n), done);
  if (!d2) A3_TRY_GOTO(st, A3_ALLOC(b, n), done);
  A3_TRY_GOTO(st, a3_nearest2(samples, n, train, n_train, d, i1, a, i2, b), done);
  int64_t count = 0;
  for (int64_t i = 0; i < n; i++) count += is_memorized(a[i], b[i], ratio);
  *out = (a3_memorization_result){
      .fraction = (double)count / (double)n, .n_memorized = count, .n = n, .ratio = ratio};
done:
  free(i2);
  if (!nearest) free(i1);
  if (!d1) free(a);
  if (!d2) free(b);
  return st;
}

typedef struct {
  double key;
  int64_t index;
} order_item;

static int order_cmp(const void *pa, const void *pb) {
  const order_item *a = pa, *b = pb;
  if (a->key != b->key) return a->key < b->key ? -1 : 1;
  return (a->index > b->index) - (a->index < b->index);
}

a3_status a3_memorization_order(const double *d1, const double *d2, int64_t n, int64_t *order) {
  if (n < 0 || (n > 0 && (!d1 || !d2 || !order)))
    return A3_FAIL(A3_ERR_INTERNAL, "a3_memorization_order: bad arguments");
  order_item *items = NULL;
  A3_TRY(A3_ALLOC(items, n > 0 ? n : 1));
  for (int64_t i = 0; i < n; i++) {
    // d1 <= d2 always; d1 == 0 is an exact copy, the most memorized of all.
    const double key = d1[i] == 0 ? 0 : d1[i] / d2[i];
    items[i] = (order_item){isnan(key) ? INFINITY : key, i};
  }
  qsort(items, (size_t)n, sizeof(*items), order_cmp);
  for (int64_t i = 0; i < n; i++) order[i] = items[i].index;
  free(items);
  return A3_OK;
}
