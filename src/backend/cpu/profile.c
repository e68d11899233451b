// Per-op timers for the CPU backend (A3FTA_PROFILE=1; benchmarks only).
// A3FTA_PROFILE=cpu times the calling thread's CPU time instead of the wall
// clock: with OMP_NUM_THREADS=1 that is each op's work, unaffected by other
// processes on a busy machine.
//
// With the variable set, a3_backend_cpu() hands out a copy of the op table in
// which the compute ops are wrapped: each call is timed (wall clock) and
// added to a row keyed by the op and, for convolutions, GroupNorm, linears
// and attention, the shape. At exit the rows go to stderr, largest total
// first, with calls, total ms, ms per call, share of the profiled time and,
// for convolutions, linears and attention, GFLOP/s (2 FLOPs per multiply-add;
// a backward counts as many MACs as it computes: dinp and dweight each one
// forward's worth, attention 2x). Ops not wrapped here (memory, copies, and
// any added to the table later) run unchanged. Without the variable nothing
// of this runs.
#define _POSIX_C_SOURCE 200809L
#include "cpu_ops.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { PROF_ROWS = 512 };

typedef struct {
  char key[96];
  long calls;
  double seconds, gflop;
} prof_row;

static prof_row rows[PROF_ROWS];
static int n_rows = 0;
static pthread_mutex_t prof_mu = PTHREAD_MUTEX_INITIALIZER;
static const a3_backend_ops *base; // the real table

static clockid_t prof_clock = CLOCK_MONOTONIC; // A3FTA_PROFILE=cpu: the calling thread's CPU time

static double prof_now(void) {
  struct timespec t;
  clock_gettime(prof_clock, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void prof_add(const char *key, double seconds, double gflop) {
  pthread_mutex_lock(&prof_mu);
  int i = 0;
  while (i < n_rows && strcmp(rows[i].key, key) != 0) i++;
  if (i == n_rows && n_rows < PROF_ROWS)
    snprintf(rows[n_rows++].key, sizeof rows[0].key, "%s", key);
  if (i < n_rows) {
    rows[i].calls++;
    rows[i].seconds += seconds;
    rows[i].gflop += gflop;
  }
  pthread_mutex_unlock(&prof_mu);
}

static int by_time(const void *a, const void *b) {
  const double x = ((const prof_row *)a)->seconds, y = ((const prof_row *)b)->seconds;
  return (x < y) - (x > y);
}

static void prof_report(void) {
  pthread_mutex_lock(&prof_mu);
  qsort(rows, (size_t)n_rows, sizeof rows[0], by_time);
  double total = 0;
  for (int i = 0; i < n_rows; i++) total += rows[i].seconds;
  fprintf(stderr, "A3FTA_PROFILE: CPU backend ops, %s (all calls of the process)\n",
          prof_clock == CLOCK_MONOTONIC ? "wall time" : "CPU time of the calling thread");
  fprintf(stderr, "%-44s %7s %10s %9s %6s %8s\n", "op", "calls", "total ms", "ms/call", "%",
          "GFLOP/s");
  for (int i = 0; i < n_rows; i++) {
    const prof_row *r = &rows[i];
    fprintf(stderr, "%-44s %7ld %10.2f %9.4f %6.2f", r->key, r->calls, r->seconds * 1e3,
            r->seconds * 1e3 / (double)r->calls, total > 0 ? 100 * r->seconds / total : 0.0);
    if (r->gflop > 0 && r->seconds > 0)
      fprintf(stderr, " %8.1f\n", r->gflop / r->seconds);
    else
      fprintf(stderr, " %8s\n", "-");
  }
  fprintf(stderr, "%-44s %7s %10.2f\n", "total", "", total * 1e3);
  pthread_mutex_unlock(&prof_mu);
}

#define TIMED(key, gflop, call)                                                                    \
  do {                                                                                             \
    const double t0_ = prof_now();                                                                 \
    call;                                                                                          \
    prof_add((key), prof_now() - t0_, (gflop));                                                    \
  } while (0)

// ---------------------------------------------------------------- wrappers
static void p_zero(const a3_backend *be, float *x, size_t n) {
  TIMED("zero", 0, base->zero(be, x, n));
}
static void p_accumulate(const a3_backend *be, float *dst, const float *src, size_t n) {
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
static void p_conv_fwd(const a3_backend *be, const a3_conv2d_shape *s, float *out, const float *inp,
                       const float *weight, const float *bias, void *ws) {
  char key[96];
  conv_key(key, sizeof key, "fwd", s);
  TIMED(key, 2 * conv_gmac(s), base->conv2d_forward(be, s, out, inp, weight, bias, ws));
}
static void p_conv_bwd(const a3_backend *be, const a3_conv2d_shape *s, float *dinp, float *dweight,
                       float *dbias, const float *dout, const float *inp, const float *weight,
                       void *ws) {
  char key[96];
  conv_key(key, sizeof key, dinp && dweight ? "bwd" : dinp ? "bwd_data" : "bwd_w", s);
  const double g = 2 * conv_gmac(s) * ((dinp != NULL) + (dweight != NULL));
  TIMED(key, g, base->conv2d_backward(be, s, dinp, dweight, dbias, dout, inp, weight, ws));
}

static void p_gn_fwd(const a3_backend *be, float *out, float *mean, float *rstd, const float *inp,
                     const float *w, const float *b, int B, int C, int HW, int G, float eps) {
  char key[96];
  snprintf(key, sizeof key, "groupnorm_fwd %dx%d", C, HW);
  TIMED(key, 0, base->groupnorm_forward(be, out, mean, rstd, inp, w, b, B, C, HW, G, eps));
}
static void p_gn_bwd(const a3_backend *be, float *dinp, float *dw, float *db, const float *dout,
                     const float *inp, const float *w, const float *mean, const float *rstd, int B,
                     int C, int HW, int G) {
  char key[96];
  snprintf(key, sizeof key, "groupnorm_bwd %dx%d", C, HW);
  TIMED(key, 0, base->groupnorm_backward(be, dinp, dw, db, dout, inp, w, mean, rstd, B, C, HW, G));
}
static void p_gns_fwd(const a3_backend *be, float *out, float *mean, float *rstd, const float *inp,
                      const float *w, const float *b, int B, int C, int HW, int G, float eps) {
  char key[96];
  snprintf(key, sizeof key, "gn_silu_fwd %dx%d", C, HW);
  TIMED(key, 0, base->groupnorm_silu_forward(be, out, mean, rstd, inp, w, b, B, C, HW, G, eps));
}
static void p_gns_bwd(const a3_backend *be, float *dinp, float *dw, float *db, const float *dout,
                      const float *inp, const float *w, const float *b, const float *mean,
                      const float *rstd, int B, int C, int HW, int G) {
  char key[96];
  snprintf(key, sizeof key, "gn_silu_bwd %dx%d", C, HW);
  TIMED(key, 0,
        base->groupnorm_silu_backward(be, dinp, dw, db, dout, inp, w, b, mean, rstd, B, C, HW, G));
}
static void p_silu_fwd(const a3_backend *be, float *out, const float *inp, size_t n) {
  TIMED("silu_fwd", 0, base->silu_forward(be, out, inp, n));
}
static void p_silu_bwd(const a3_backend *be, float *dinp, const float *dout, const float *inp,
                       size_t n) {
  TIMED("silu_bwd", 0, base->silu_backward(be, dinp, dout, inp, n));
}
static void p_linear_fwd(const a3_backend *be, float *out, const float *inp, const float *w,
                         const float *b, int N, int IN, int OUT) {
  char key[96];
  snprintf(key, sizeof key, "linear_fwd %dx%d->%d", N, IN, OUT);
  TIMED(key, 2e-9 * N * (double)IN * OUT, base->linear_forward(be, out, inp, w, b, N, IN, OUT));
}
static void p_linear_bwd(const a3_backend *be, float *dinp, float *dw, float *db, const float *dout,
                         const float *inp, const float *w, int N, int IN, int OUT) {
  char key[96];
  snprintf(key, sizeof key, "linear_bwd %dx%d->%d", N, IN, OUT);
  const double g = 2e-9 * N * (double)IN * OUT * ((dinp != NULL) + (dw != NULL));
  TIMED(key, g, base->linear_backward(be, dinp, dw, db, dout, inp, w, N, IN, OUT));
}
static void p_attn_fwd(const a3_backend *be, float *out, float *probs, const float *q,
                       const float *k, const float *v, int B, int T, int C, int NH, void *ws) {
  char key[96];
  snprintf(key, sizeof key, "attention_fwd T%d C%d h%d", T, C, NH);
  TIMED(key, 4e-9 * B * (double)T * T * C,
        base->attention_forward(be, out, probs, q, k, v, B, T, C, NH, ws));
}
static void p_attn_bwd(const a3_backend *be, float *dq, float *dk, float *dv, const float *dout,
                       const float *q, const float *k, const float *v, const float *probs, int B,
                       int T, int C, int NH, void *ws) {
  char key[96];
  snprintf(key, sizeof key, "attention_bwd T%d C%d h%d", T, C, NH);
  TIMED(key, 8e-9 * B * (double)T * T * C,
        base->attention_backward(be, dq, dk, dv, dout, q, k, v, probs, B, T, C, NH, ws));
}
static void p_to_tokens(const a3_backend *be, float *out, const float *inp, int B, int C, int HW) {
  TIMED("to_tokens", 0, base->to_tokens(be, out, inp, B, C, HW));
}
static void p_from_tokens(const a3_backend *be, float *out, const float *inp, int B, int C,
                          int HW) {
  TIMED("from_tokens", 0, base->from_tokens(be, out, inp, B, C, HW));
}
static void p_up_fwd(const a3_backend *be, float *out, const float *inp, int B, int C, int H,
                     int W) {
  TIMED("upsample2x_fwd", 0, base->upsample2x_forward(be, out, inp, B, C, H, W));
}
static void p_up_bwd(const a3_backend *be, float *dinp, const float *dout, int B, int C, int H,
                     int W) {
  TIMED("upsample2x_bwd", 0, base->upsample2x_backward(be, dinp, dout, B, C, H, W));
}
static void p_cat_fwd(const a3_backend *be, float *out, const float *a, const float *b, int B,
                      int C1, int C2, int HW) {
  TIMED("concat_fwd", 0, base->concat_forward(be, out, a, b, B, C1, C2, HW));
}
static void p_cat_bwd(const a3_backend *be, float *da, float *db, const float *dout, int B, int C1,
                      int C2, int HW) {
  TIMED("concat_bwd", 0, base->concat_backward(be, da, db, dout, B, C1, C2, HW));
}
static void p_add_fwd(const a3_backend *be, float *out, const float *a, const float *b, float scale,
                      size_t n) {
  TIMED("add_fwd", 0, base->add_forward(be, out, a, b, scale, n));
}
static void p_add_bwd(const a3_backend *be, float *da, float *db, const float *dout, float scale,
                      size_t n) {
  TIMED("add_bwd (copy/scale)", 0, base->add_backward(be, da, db, dout, scale, n));
}
static void p_addc_fwd(const a3_backend *be, float *out, const float *inp, const float *t, int B,
                       int C, int HW) {
  TIMED("add_channel_fwd", 0, base->add_channel_forward(be, out, inp, t, B, C, HW));
}
static void p_addc_bwd(const a3_backend *be, float *dt, const float *dout, int B, int C, int HW) {
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

static a3_backend_ops prof_ops;
static a3_backend prof_backend;

static void prof_init(const a3_backend *real) {
  base = real->ops;
  prof_ops = *real->ops; // everything not wrapped below runs unchanged
  prof_ops.zero = p_zero;
  prof_ops.accumulate = p_accumulate;
  prof_ops.conv2d_forward = p_conv_fwd;
  prof_ops.conv2d_backward = p_conv_bwd;
  prof_ops.groupnorm_forward = p_gn_fwd;
  prof_ops.groupnorm_backward = p_gn_bwd;
  prof_ops.groupnorm_silu_forward = p_gns_fwd;
  prof_ops.groupnorm_silu_backward = p_gns_bwd;
  prof_ops.silu_forward = p_silu_fwd;
  prof_ops.silu_backward = p_silu_bwd;
  prof_ops.linear_forward = p_linear_fwd;
  prof_ops.linear_backward = p_linear_bwd;
  prof_ops.attention_forward = p_attn_fwd;
  prof_ops.attention_backward = p_attn_bwd;
  prof_ops.to_tokens = p_to_tokens;
  prof_ops.from_tokens = p_from_tokens;
  prof_ops.upsample2x_forward = p_up_fwd;
  prof_ops.upsample2x_backward = p_up_bwd;
  prof_ops.concat_forward = p_cat_fwd;
  prof_ops.concat_backward = p_cat_bwd;
  prof_ops.add_forward = p_add_fwd;
  prof_ops.add_backward = p_add_bwd;
  prof_ops.add_channel_forward = p_addc_fwd;
  prof_ops.add_channel_backward = p_addc_bwd;
  prof_ops.mse_forward = p_mse_fwd;
  prof_ops.mse_backward = p_mse_bwd;
  prof_backend = *real;
  prof_backend.ops = &prof_ops;
  atexit(prof_report);
}

// Called once, from a3_backend_cpu's setup.
const a3_backend *cpu_profiled(const a3_backend *real) {
  const char *e = getenv("A3FTA_PROFILE");
  if (!e || !*e || strcmp(e, "0") == 0) return real;
  if (strcmp(e, "cpu") == 0) prof_clock = CLOCK_THREAD_CPUTIME_ID;
  prof_init(real);
  return &prof_backend;
}
