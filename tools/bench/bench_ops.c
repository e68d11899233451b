// Times the CPU backend's hot ops, forward and backward, at the shapes of the
// default Fashion-MNIST U-Net (32x32x1, channels 32/64/64, GroupNorm 8,
// attention at 8x8) at batch B (default 64), through the op table exactly as
// the model calls them. Prints one line per op and direction:
//   ROW <name> <fwd|bwd> <median ms> <GFLOP per call, 0 if not counted> <workspace bytes>
// tools/bench/peer_ops.py prints the same rows for PyTorch; run_ops.sh runs
// both interleaved and tabulates. Threads: OMP_NUM_THREADS (default: cores).
//
// usage: a3fta_bench_ops [--batch B] [--iters N] [--only SUBSTRING]
#define _POSIX_C_SOURCE 200809L
#include "a3fta/backend.h"
#include "a3fta/core.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const a3_backend *be;
static int iters = 10;
static const char *only = NULL;

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static float *rand_buf(size_t n, uint64_t stream) {
  float *p = NULL;
  if (a3_alloc((void **)&p, n ? n : 1, sizeof(float)) != A3_OK) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  for (size_t i = 0; i < n; i++)
    p[i] = (float)((double)(a3_rng_u64(42, stream, i) >> 40) * 0x1p-23 - 1.0);
  return p;
}

// n activations (be->act_bytes each, host memory as the CPU backend's)
// holding rand_buf's values rounded to the storage type.
static a3_act *rand_act(size_t n, uint64_t stream) {
  a3_act *p = NULL;
  if (a3_alloc((void **)&p, n ? n : 1, be->act_bytes) != A3_OK) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  float *f = rand_buf(n, stream);
  be->ops->act_from_f32(be, p, f, n);
  free(f);
  return p;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

typedef void (*op_fn)(void *ctx);

// Median ms over `iters` calls after 2 warm-up calls.
static double time_op(op_fn f, void *ctx) {
  double t[256];
  int n = iters < 256 ? iters : 256;
  f(ctx), f(ctx);
  for (int i = 0; i < n; i++) {
    double t0 = now();
    f(ctx);
    t[i] = (now() - t0) * 1e3;
  }
  qsort(t, (size_t)n, sizeof t[0], cmp_d);
  return t[n / 2];
}

static int selected(const char *name) { return !only || strstr(name, only); }

// ---------------------------------------------------------------- conv2d
typedef struct {
  a3_conv2d_shape s;
  a3_act *x, *y, *dy, *dx; // (B, C, H, W) and (B, OC, OH, OW)
  float *w, *b, *dw, *db;  // (OC, C, KH, KW) and (OC)
  void *ws;
} conv_ctx;
static void conv_f(void *p) {
  conv_ctx *c = p;
  be->ops->conv2d_forward(be, &c->s, c->y, c->x, c->w, c->b, c->ws);
}
static void conv_b(void *p) {
  conv_ctx *c = p;
  be->ops->conv2d_backward(be, &c->s, c->dx, c->dw, c->db, c->dy, c->x, c->w, c->ws);
}
static void bench_conv(const char *name, int B, int C, int H, int OC, int K, int S, int pt,
                       int pb) {
  if (!selected(name)) return;
  conv_ctx c = {.s = {B, C, H, H, OC, K, K, S, pt, pb, pt, pb}};
  const int OH = a3_conv2d_out_h(&c.s), OW = a3_conv2d_out_w(&c.s);
  const size_t nx = (size_t)B * C * H * H, nw = (size_t)OC * C * K * K,
               ny = (size_t)B * OC * OH * OW;
  c.x = rand_act(nx, 1), c.w = rand_buf(nw, 2), c.b = rand_buf((size_t)OC, 3);
  c.y = rand_act(ny, 4), c.dy = rand_act(ny, 5), c.dx = rand_act(nx, 6);
  c.dw = rand_buf(nw, 7), c.db = rand_buf((size_t)OC, 8);
  const size_t ws_bytes = be->ops->conv2d_workspace_size(be, &c.s);
  c.ws = rand_buf(ws_bytes / sizeof(float) + 1, 9);
  const double gf = 2.0 * B * OC * OH * OW * (double)C * K * K * 1e-9;
  printf("ROW %s fwd %.4f %.4f %zu\n", name, time_op(conv_f, &c), gf, ws_bytes);
  printf("ROW %s bwd %.4f %.4f %zu\n", name, time_op(conv_b, &c), 2 * gf, ws_bytes);
  fflush(stdout);
  free(c.x), free(c.w), free(c.b), free(c.y), free(c.dy), free(c.dx), free(c.dw), free(c.db);
  free(c.ws);
}

// ---------------------------------------------------------------- GroupNorm + SiLU
typedef struct {
  int B, C, HW, G;
  a3_act *x, *y, *z, *dy, *dz, *dx; // (B, C, HW)
  float *w, *b, *dw, *db;           // (C)
  float *mean, *rstd;               // (B, G)
} gn_ctx;
// Unfused: GroupNorm then SiLU (the model's current sequence; the backward
// recomputes silu's input-side derivative from the stored GroupNorm output).
static void gn_silu_f(void *p) {
  gn_ctx *g = p;
  be->ops->groupnorm_forward(be, g->z, g->mean, g->rstd, g->x, g->w, g->b, g->B, g->C, g->HW, g->G,
                             1e-5f);
  be->ops->silu_forward(be, g->y, g->z, (size_t)g->B * g->C * g->HW);
}
static void gn_silu_b(void *p) {
  gn_ctx *g = p;
  be->ops->silu_backward(be, g->dz, g->dy, g->z, (size_t)g->B * g->C * g->HW);
  be->ops->groupnorm_backward(be, g->dx, g->dw, g->db, g->dz, g->x, g->w, g->mean, g->rstd, g->B,
                              g->C, g->HW, g->G);
}
static void gns_f(void *p) {
  gn_ctx *g = p;
  be->ops->groupnorm_silu_forward(be, g->y, g->mean, g->rstd, g->x, g->w, g->b, g->B, g->C, g->HW,
                                  g->G, 1e-5f);
}
static void gns_b(void *p) {
  gn_ctx *g = p;
  be->ops->groupnorm_silu_backward(be, g->dx, g->dw, g->db, g->dy, g->x, g->w, g->b, g->mean,
                                   g->rstd, g->B, g->C, g->HW, g->G);
}
static void bench_gn(const char *name, int B, int C, int H, int G) {
  char n1[96], n2[96];
  snprintf(n1, sizeof n1, "gn+silu_%s", name);
  snprintf(n2, sizeof n2, "gn_silu_fused_%s", name);
  if (!selected(n1) && !selected(n2)) return;
  gn_ctx g = {.B = B, .C = C, .HW = H * H, .G = G};
  const size_t n = (size_t)B * C * H * H;
  g.x = rand_act(n, 1), g.w = rand_buf((size_t)C, 2), g.b = rand_buf((size_t)C, 3);
  g.y = rand_act(n, 4), g.z = rand_act(n, 5), g.dy = rand_act(n, 6), g.dz = rand_act(n, 7);
  g.dx = rand_act(n, 8), g.dw = rand_buf((size_t)C, 9), g.db = rand_buf((size_t)C, 10);
  g.mean = rand_buf((size_t)B * G, 11), g.rstd = rand_buf((size_t)B * G, 12);
  if (selected(n1)) {
    printf("ROW %s fwd %.4f 0 0\n", n1, time_op(gn_silu_f, &g));
    printf("ROW %s bwd %.4f 0 0\n", n1, time_op(gn_silu_b, &g));
  }
  if (selected(n2)) {
    printf("ROW %s fwd %.4f 0 0\n", n2, time_op(gns_f, &g));
    printf("ROW %s bwd %.4f 0 0\n", n2, time_op(gns_b, &g));
  }
  fflush(stdout);
  free(g.x), free(g.w), free(g.b), free(g.y), free(g.z), free(g.dy), free(g.dz), free(g.dx);
  free(g.dw), free(g.db), free(g.mean), free(g.rstd);
}

// ---------------------------------------------------------------- attention
typedef struct {
  int B, T, C, NH;
  a3_act *q, *k, *v, *o, *dq, *dk, *dv, *dout; // (B, T, C)
  float *p;                                    // (B, NH, T, T)
  void *ws;
} attn_ctx;
static void attn_f(void *p) {
  attn_ctx *a = p;
  be->ops->attention_forward(be, a->o, a->p, a->q, a->k, a->v, a->B, a->T, a->C, a->NH, a->ws);
}
static void attn_b(void *p) {
  attn_ctx *a = p;
  be->ops->attention_backward(be, a->dq, a->dk, a->dv, a->dout, a->q, a->k, a->v, a->p, a->B, a->T,
                              a->C, a->NH, a->ws);
}
static void bench_attn(const char *name, int B, int T, int C, int NH) {
  if (!selected(name)) return;
  attn_ctx a = {.B = B, .T = T, .C = C, .NH = NH};
  const size_t n = (size_t)B * T * C;
  a.q = rand_act(n, 1), a.k = rand_act(n, 2), a.v = rand_act(n, 3), a.o = rand_act(n, 4);
  a.p = rand_buf((size_t)B * NH * T * T, 5), a.dq = rand_act(n, 6), a.dk = rand_act(n, 7);
  a.dv = rand_act(n, 8), a.dout = rand_act(n, 9);
  const size_t ws_bytes = be->ops->attention_workspace_size(be, B, T, C, NH);
  a.ws = rand_buf(ws_bytes / sizeof(float) + 1, 10);
  const double gf = 4.0 * B * (double)T * T * C * 1e-9; // QK^T and PV
  printf("ROW %s fwd %.4f %.4f %zu\n", name, time_op(attn_f, &a), gf, ws_bytes);
  printf("ROW %s bwd %.4f %.4f %zu\n", name, time_op(attn_b, &a), 2 * gf, ws_bytes);
  fflush(stdout);
  free(a.q), free(a.k), free(a.v), free(a.o), free(a.p), free(a.dq), free(a.dk), free(a.dv);
  free(a.dout), free(a.ws);
}

// ---------------------------------------------------------------- linear
typedef struct {
  int N, IN, OUT;
  a3_act *x, *dx, *y, *dy; // (N, IN) and (N, OUT)
  float *w, *b, *dw, *db;  // (OUT, IN) and (OUT)
} lin_ctx;
static void lin_f(void *p) {
  lin_ctx *l = p;
  be->ops->linear_forward(be, l->y, l->x, l->w, l->b, l->N, l->IN, l->OUT);
}
static void lin_b(void *p) {
  lin_ctx *l = p;
  be->ops->linear_backward(be, l->dx, l->dw, l->db, l->dy, l->x, l->w, l->N, l->IN, l->OUT);
}
static void bench_linear(const char *name, int N, int IN, int OUT) {
  if (!selected(name)) return;
  lin_ctx l = {.N = N, .IN = IN, .OUT = OUT};
  l.x = rand_act((size_t)N * IN, 1), l.w = rand_buf((size_t)OUT * IN, 2);
  l.b = rand_buf((size_t)OUT, 3), l.y = rand_act((size_t)N * OUT, 4);
  l.dy = rand_act((size_t)N * OUT, 5), l.dx = rand_act((size_t)N * IN, 6);
  l.dw = rand_buf((size_t)OUT * IN, 7), l.db = rand_buf((size_t)OUT, 8);
  const double gf = 2.0 * N * (double)IN * OUT * 1e-9;
  printf("ROW %s fwd %.4f %.4f 0\n", name, time_op(lin_f, &l), gf);
  printf("ROW %s bwd %.4f %.4f 0\n", name, time_op(lin_b, &l), 2 * gf);
  fflush(stdout);
  free(l.x), free(l.w), free(l.b), free(l.y), free(l.dy), free(l.dx), free(l.dw), free(l.db);
}

int main(int argc, char **argv) {
  int B = 64;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--batch") && i + 1 < argc)
      B = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--iters") && i + 1 < argc)
      iters = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--only") && i + 1 < argc)
      only = argv[++i];
    else {
      fprintf(stderr, "usage: %s [--batch B] [--iters N] [--only SUBSTRING]\n", argv[0]);
      return 2;
    }
  }
  if (B < 1 || iters < 1) return 2;
  be = a3_backend_cpu();
  printf("# a3fta %s; OpenMP threads %d; batch %d\n", a3_backend_cpu_blas_info(),
         omp_get_max_threads(), B);
  // name: conv<k>_<C>to<OC>_<H>[_s2]; the U-Net's convs (pad (0,1,0,1) for the downsamplers).
  bench_conv("conv3_1to32_32", B, 1, 32, 32, 3, 1, 1, 1);      // conv_in
  bench_conv("conv3_32to32_32", B, 32, 32, 32, 3, 1, 1, 1);    // level 0 resnets
  bench_conv("conv3_96to32_32", B, 96, 32, 32, 3, 1, 1, 1);    // up level 0, conv1 after concat
  bench_conv("conv3_64to64_32", B, 64, 32, 64, 3, 1, 1, 1);    // upsampler conv at 32x32
  bench_conv("conv3_32to1_32", B, 32, 32, 1, 3, 1, 1, 1);      // conv_out
  bench_conv("conv3_32to32_32_s2", B, 32, 32, 32, 3, 2, 0, 1); // downsampler 32 -> 16
  bench_conv("conv3_64to64_16", B, 64, 16, 64, 3, 1, 1, 1);    // level 1 resnets
  bench_conv("conv3_128to64_16", B, 128, 16, 64, 3, 1, 1, 1);  // up level 1, conv1
  bench_conv("conv3_64to64_16_s2", B, 64, 16, 64, 3, 2, 0, 1); // downsampler 16 -> 8
  bench_conv("conv3_64to64_8", B, 64, 8, 64, 3, 1, 1, 1);      // level 2 + mid resnets
  bench_conv("conv1_96to32_32", B, 96, 32, 32, 1, 1, 0, 0);    // shortcuts
  bench_conv("conv1_32to64_16", B, 32, 16, 64, 1, 1, 0, 0);
  bench_conv("conv1_128to64_8", B, 128, 8, 64, 1, 1, 0, 0);
  bench_gn("32x32x32", B, 32, 32, 8);
  bench_gn("96x32x32", B, 96, 32, 8);
  bench_gn("64x16x16", B, 64, 16, 8);
  bench_gn("64x8x8", B, 64, 8, 8);
  bench_attn("attn_T64_C64", B, 64, 64, 1);
  bench_linear("linear_Bx64to64_T64", B * 64, 64, 64); // to_q/k/v/out at 8x8
  bench_linear("linear_Bx128to64", B, 128, 64);        // time_emb_proj
  return 0;
}
