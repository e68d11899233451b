// Per-op timers for any backend (op_profile.h; A3FTA_PROFILE=1, benchmarks only).
#define _POSIX_C_SOURCE 200809L
#include "backend/op_profile.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PROF_ROWS = 512, PROF_TABLES = 8 };

typedef struct {
  char key[96];
  int table; // of the backend's wrapped table: each backend gets its own rows
  long calls;
  double seconds, gflop;
} prof_row;

typedef struct {
  a3_backend_ops wrapped;
  const a3_backend_ops *real;
  const a3_op_clock *clock;
  int index; // in tables[]
} prof_table;

static prof_row rows[PROF_ROWS];
static int n_rows = 0;
static prof_table *tables[PROF_TABLES];
static int n_tables = 0;
static pthread_mutex_t prof_mu = PTHREAD_MUTEX_INITIALIZER;
static int prof_was_reset = 0;

const char *a3_op_profile_requested(void) {
  const char *e = getenv("A3FTA_PROFILE");
  return e && *e && strcmp(e, "0") != 0 ? e : NULL;
}

// The row of `key` in `table`, added if new; -1 when full (not counted).
static int prof_row_of(int table, const char *key) {
  pthread_mutex_lock(&prof_mu);
  int i = 0;
  while (i < n_rows && (rows[i].table != table || strcmp(rows[i].key, key) != 0)) i++;
  if (i == n_rows && n_rows < PROF_ROWS) {
    snprintf(rows[n_rows].key, sizeof rows[0].key, "%s", key);
    rows[n_rows++].table = table;
  }
  pthread_mutex_unlock(&prof_mu);
  return i < n_rows ? i : -1;
}

void a3_op_profile_add(int row, double seconds, double gflop) {
  if (row < 0 || row >= PROF_ROWS) return;
  pthread_mutex_lock(&prof_mu);
  rows[row].calls++;
  rows[row].seconds += seconds;
  rows[row].gflop += gflop;
  pthread_mutex_unlock(&prof_mu);
}

void a3_op_profile_reset(void) {
  pthread_mutex_lock(&prof_mu);
  for (int i = 0; i < n_rows; i++) rows[i].calls = 0, rows[i].seconds = rows[i].gflop = 0;
  prof_was_reset = 1;
  pthread_mutex_unlock(&prof_mu);
}

static int by_time(const void *a, const void *b) {
  const double x = ((const prof_row *)a)->seconds, y = ((const prof_row *)b)->seconds;
  return (x < y) - (x > y);
}

// One table's rows, largest total first.
static void report_table(int table, const prof_row *sorted, int n) {
  double total = 0;
  long calls = 0;
  for (int i = 0; i < n; i++)
    if (sorted[i].table == table) total += sorted[i].seconds, calls += sorted[i].calls;
  if (!calls) return;
  const a3_op_clock *clock = tables[table]->clock;
  fprintf(stderr, "A3FTA_PROFILE: %s (all calls %s%s)\n", clock->what,
          prof_was_reset ? "since the profile was reset" : "of the process",
          clock->settle ? " up to the last synchronize" : "");
  fprintf(stderr, "%-44s %7s %10s %9s %6s %8s\n", "op", "calls", "total ms", "ms/call", "%",
          "GFLOP/s");
  for (int i = 0; i < n; i++) {
    const prof_row *r = &sorted[i];
    if (r->table != table || !r->calls) continue;
    fprintf(stderr, "%-44s %7ld %10.2f %9.4f %6.2f", r->key, r->calls, r->seconds * 1e3,
            r->seconds * 1e3 / (double)r->calls, total > 0 ? 100 * r->seconds / total : 0.0);
    if (r->gflop > 0 && r->seconds > 0)
      fprintf(stderr, " %8.1f\n", r->gflop / r->seconds);
    else
      fprintf(stderr, " %8s\n", "-");
  }
  fprintf(stderr, "%-44s %7s %10.2f\n", "total", "", total * 1e3);
}

static void prof_report(void) {
  pthread_mutex_lock(&prof_mu);
  // Rows are found by index while counting, so sort a copy.
  static prof_row sorted[PROF_ROWS];
  memcpy(sorted, rows, sizeof sorted);
  qsort(sorted, (size_t)n_rows, sizeof sorted[0], by_time);
  for (int t = 0; t < n_tables; t++) report_table(t, sorted, n_rows);
  pthread_mutex_unlock(&prof_mu);
}

// The wrapped table be's ops are, or were copied from (a backend built
// around a copy of a profiled table, as the device-path tests make, keeps
// the wrappers but not the table around them): found by `alloc`, which the
// wrapping leaves alone and which differs between backends.
static const prof_table *table_of(const a3_backend *be) {
  const prof_table *found = NULL;
  pthread_mutex_lock(&prof_mu);
  for (int i = 0; i < n_tables && !found; i++)
    if (be->ops->alloc == tables[i]->wrapped.alloc) found = tables[i];
  pthread_mutex_unlock(&prof_mu);
  if (!found) {
    fprintf(stderr, "A3FTA_PROFILE: backend %s's op table is no profiled one's\n", be->name);
    abort();
  }
  return found;
}

// Times `call` (which calls through `base`, the real table) on be's clock.
#define TIMED(key, gflop, call)                                                                    \
  do {                                                                                             \
    const prof_table *t_ = table_of(be);                                                           \
    const a3_backend_ops *base = t_->real;                                                         \
    const int row_ = prof_row_of(t_->index, key);                                                  \
    const uint64_t mark_ = t_->clock->start(be);                                                   \
    call;                                                                                          \
    t_->clock->stop(be, mark_, row_, (gflop));                                                     \
  } while (0)

// A device clock learns its times once the work is done.
static a3_status p_synchronize(const a3_backend *be) {
  const prof_table *t = table_of(be);
  const a3_status s = t->real->synchronize(be);
  if (t->clock->settle) t->clock->settle(be);
  return s;
}

static void p_zero(const a3_backend *be, float *x, size_t n) {
  TIMED("zero", 0, base->zero(be, x, n));
}
static void p_act_zero(const a3_backend *be, a3_act *x, size_t n) {
  TIMED("act_zero", 0, base->act_zero(be, x, n));
}
static void p_accumulate(const a3_backend *be, a3_act *dst, const a3_act *src, size_t n) {
  TIMED("accumulate", 0, base->accumulate(be, dst, src, n));
}

static void conv_key(char *key, size_t len, const char *dir, const a3_conv2d_shape *s) {
  snprintf(key, len, "conv_%s %dx%d %d->%d %dx%d s%d", dir, s->KH, s->KW, s->C, s->OC, s->H, s->W,
           s->stride);
}
static double conv_gmac(const a3_conv2d_shape *s) {
  return 1e-9 * s->B * (double)s->OC * a3_conv2d_out_h(s) * a3_conv2d_out_w(s) * s->C * s->KH *
         s->KW;
}
static void p_conv_fwd(const a3_backend *be, const a3_conv2d_shape *s, a3_act *out,
                       const a3_act *inp, const float *weight, const float *bias, void *ws) {
  char key[96];
  conv_key(key, sizeof key, "fwd", s);
  TIMED(key, 2 * conv_gmac(s), base->conv2d_forward(be, s, out, inp, weight, bias, ws));
}
static void p_conv_bwd(const a3_backend *be, const a3_conv2d_shape *s, a3_act *dinp, float *dweight,
                       float *dbias, const a3_act *dout, const a3_act *inp, const float *weight,
                       void *ws) {
  char key[96];
  conv_key(key, sizeof key, dinp && dweight ? "bwd" : dinp ? "bwd_data" : "bwd_w", s);
  const double g = 2 * conv_gmac(s) * ((dinp != NULL) + (dweight != NULL));
  TIMED(key, g, base->conv2d_backward(be, s, dinp, dweight, dbias, dout, inp, weight, ws));
}

static void p_gn_fwd(const a3_backend *be, a3_act *out, float *mean, float *rstd, const a3_act *inp,
                     const float *w, const float *b, int B, int C, int HW, int G, float eps) {
  char key[96];
  snprintf(key, sizeof key, "groupnorm_fwd %dx%d", C, HW);
  TIMED(key, 0, base->groupnorm_forward(be, out, mean, rstd, inp, w, b, B, C, HW, G, eps));
}
static void p_gn_bwd(const a3_backend *be, a3_act *dinp, float *dw, float *db, const a3_act *dout,
                     const a3_act *inp, const float *w, const float *mean, const float *rstd, int B,
                     int C, int HW, int G) {
  char key[96];
  snprintf(key, sizeof key, "groupnorm_bwd %dx%d", C, HW);
  TIMED(key, 0, base->groupnorm_backward(be, dinp, dw, db, dout, inp, w, mean, rstd, B, C, HW, G));
}
static void p_gns_fwd(const a3_backend *be, a3_act *out, float *mean, float *rstd,
                      const a3_act *inp, const float *w, const float *b, int B, int C, int HW,
                      int G, float eps) {
  char key[96];
  snprintf(key, sizeof key, "gn_silu_fwd %dx%d", C, HW);
  TIMED(key, 0, base->groupnorm_silu_forward(be, out, mean, rstd, inp, w, b, B, C, HW, G, eps));
}
static void p_gns_bwd(const a3_backend *be, a3_act *dinp, float *dw, float *db, const a3_act *dout,
                      const a3_act *inp, const float *w, const float *b, const float *mean,
                      const float *rstd, int B, int C, int HW, int G) {
  char key[96];
  snprintf(key, sizeof key, "gn_silu_bwd %dx%d", C, HW);
  TIMED(key, 0,
        base->groupnorm_silu_backward(be, dinp, dw, db, dout, inp, w, b, mean, rstd, B, C, HW, G));
}
static void p_silu_fwd(const a3_backend *be, a3_act *out, const a3_act *inp, size_t n) {
  TIMED("silu_fwd", 0, base->silu_forward(be, out, inp, n));
}
static void p_silu_bwd(const a3_backend *be, a3_act *dinp, const a3_act *dout, const a3_act *inp,
                       size_t n) {
  TIMED("silu_bwd", 0, base->silu_backward(be, dinp, dout, inp, n));
}
static void p_linear_fwd(const a3_backend *be, a3_act *out, const a3_act *inp, const float *w,
                         const float *b, int N, int IN, int OUT) {
  char key[96];
  snprintf(key, sizeof key, "linear_fwd %dx%d->%d", N, IN, OUT);
  TIMED(key, 2e-9 * N * (double)IN * OUT, base->linear_forward(be, out, inp, w, b, N, IN, OUT));
}
static void p_linear_bwd(const a3_backend *be, a3_act *dinp, float *dw, float *db,
                         const a3_act *dout, const a3_act *inp, const float *w, int N, int IN,
                         int OUT) {
  char key[96];
  snprintf(key, sizeof key, "linear_bwd %dx%d->%d", N, IN, OUT);
  const double g = 2e-9 * N * (double)IN * OUT * ((dinp != NULL) + (dw != NULL));
  TIMED(key, g, base->linear_backward(be, dinp, dw, db, dout, inp, w, N, IN, OUT));
}
static void p_attn_fwd(const a3_backend *be, a3_act *out, float *probs, const a3_act *q,
                       const a3_act *k, const a3_act *v, int B, int T, int C, int NH, void *ws) {
  char key[96];
  snprintf(key, sizeof key, "attention_fwd T%d C%d h%d", T, C, NH);
  TIMED(key, 4e-9 * B * (double)T * T * C,
        base->attention_forward(be, out, probs, q, k, v, B, T, C, NH, ws));
}
static void p_attn_bwd(const a3_backend *be, a3_act *dq, a3_act *dk, a3_act *dv, const a3_act *dout,
                       const a3_act *q, const a3_act *k, const a3_act *v, const float *probs, int B,
                       int T, int C, int NH, void *ws) {
  char key[96];
  snprintf(key, sizeof key, "attention_bwd T%d C%d h%d", T, C, NH);
  TIMED(key, 8e-9 * B * (double)T * T * C,
        base->attention_backward(be, dq, dk, dv, dout, q, k, v, probs, B, T, C, NH, ws));
}
static void p_to_tokens(const a3_backend *be, a3_act *out, const a3_act *inp, int B, int C,
                        int HW) {
  TIMED("to_tokens", 0, base->to_tokens(be, out, inp, B, C, HW));
}
static void p_from_tokens(const a3_backend *be, a3_act *out, const a3_act *inp, int B, int C,
                          int HW) {
  TIMED("from_tokens", 0, base->from_tokens(be, out, inp, B, C, HW));
}
static void p_up_fwd(const a3_backend *be, a3_act *out, const a3_act *inp, int B, int C, int H,
                     int W) {
  TIMED("upsample2x_fwd", 0, base->upsample2x_forward(be, out, inp, B, C, H, W));
}
static void p_up_bwd(const a3_backend *be, a3_act *dinp, const a3_act *dout, int B, int C, int H,
                     int W) {
  TIMED("upsample2x_bwd", 0, base->upsample2x_backward(be, dinp, dout, B, C, H, W));
}
static void p_cat_fwd(const a3_backend *be, a3_act *out, const a3_act *a, const a3_act *b, int B,
                      int C1, int C2, int HW) {
  TIMED("concat_fwd", 0, base->concat_forward(be, out, a, b, B, C1, C2, HW));
}
static void p_cat_bwd(const a3_backend *be, a3_act *da, a3_act *db, const a3_act *dout, int B,
                      int C1, int C2, int HW) {
  TIMED("concat_bwd", 0, base->concat_backward(be, da, db, dout, B, C1, C2, HW));
}
static void p_add_fwd(const a3_backend *be, a3_act *out, const a3_act *a, const a3_act *b,
                      float scale, size_t n) {
  TIMED("add_fwd", 0, base->add_forward(be, out, a, b, scale, n));
}
static void p_add_bwd(const a3_backend *be, a3_act *da, a3_act *db, const a3_act *dout, float scale,
                      size_t n) {
  TIMED("add_bwd (copy/scale)", 0, base->add_backward(be, da, db, dout, scale, n));
}
static void p_addc_fwd(const a3_backend *be, a3_act *out, const a3_act *inp, const a3_act *t, int B,
                       int C, int HW) {
  TIMED("add_channel_fwd", 0, base->add_channel_forward(be, out, inp, t, B, C, HW));
}
static void p_addc_bwd(const a3_backend *be, a3_act *dt, const a3_act *dout, int B, int C, int HW) {
  TIMED("add_channel_bwd", 0, base->add_channel_backward(be, dt, dout, B, C, HW));
}
static void p_mse_fwd(const a3_backend *be, float *loss, const float *pred, const float *target,
                      size_t n) {
  TIMED("mse_fwd", 0, base->mse_forward(be, loss, pred, target, n));
}
static void p_mse_bwd(const a3_backend *be, float *dpred, const float *pred, const float *target,
                      size_t n, float dloss) {
  TIMED("mse_bwd", 0, base->mse_backward(be, dpred, pred, target, n, dloss));
}

const a3_backend_ops *a3_op_profile_wrap(const a3_backend_ops *real, const a3_op_clock *clock) {
  pthread_mutex_lock(&prof_mu);
  prof_table *t = n_tables < PROF_TABLES ? calloc(1, sizeof *t) : NULL;
  if (t) {
    t->real = real;
    t->clock = clock;
    t->index = n_tables;
    t->wrapped = *real; // everything not wrapped below runs unchanged
    t->wrapped.synchronize = p_synchronize;
    t->wrapped.zero = p_zero;
    t->wrapped.act_zero = p_act_zero;
    t->wrapped.accumulate = p_accumulate;
    t->wrapped.conv2d_forward = p_conv_fwd;
    t->wrapped.conv2d_backward = p_conv_bwd;
    t->wrapped.groupnorm_forward = p_gn_fwd;
    t->wrapped.groupnorm_backward = p_gn_bwd;
    t->wrapped.groupnorm_silu_forward = p_gns_fwd;
    t->wrapped.groupnorm_silu_backward = p_gns_bwd;
    t->wrapped.silu_forward = p_silu_fwd;
    t->wrapped.silu_backward = p_silu_bwd;
    t->wrapped.linear_forward = p_linear_fwd;
    t->wrapped.linear_backward = p_linear_bwd;
    t->wrapped.attention_forward = p_attn_fwd;
    t->wrapped.attention_backward = p_attn_bwd;
    t->wrapped.to_tokens = p_to_tokens;
    t->wrapped.from_tokens = p_from_tokens;
    t->wrapped.upsample2x_forward = p_up_fwd;
    t->wrapped.upsample2x_backward = p_up_bwd;
    t->wrapped.concat_forward = p_cat_fwd;
    t->wrapped.concat_backward = p_cat_bwd;
    t->wrapped.add_forward = p_add_fwd;
    t->wrapped.add_backward = p_add_bwd;
    t->wrapped.add_channel_forward = p_addc_fwd;
    t->wrapped.add_channel_backward = p_addc_bwd;
    t->wrapped.mse_forward = p_mse_fwd;
    t->wrapped.mse_backward = p_mse_bwd;
    if (n_tables == 0) atexit(prof_report);
    tables[n_tables++] = t;
  }
  pthread_mutex_unlock(&prof_mu);
  return t ? &t->wrapped : NULL;
}

const a3_backend_ops *a3_op_profile_real(const a3_backend_ops *ops) {
  pthread_mutex_lock(&prof_mu);
  const a3_backend_ops *real = ops;
  for (int i = 0; i < n_tables; i++)
    if (ops == &tables[i]->wrapped) real = tables[i]->real;
  pthread_mutex_unlock(&prof_mu);
  return real;
}
