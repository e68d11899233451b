// Backend ops, table driven (in the spirit of ggml's test-backend-ops): every
// row runs one op of the backend on random inputs and checks
//   1. its fp32 forward against a naive double-precision forward written here
//      from the op's definition (plain loops, nothing shared with the backend);
//   2. every element of every input, weight and bias gradient of the scalar
//      L = sum(out * R), R random, against central finite differences of L
//      through that double forward;
//   3. the gradient contract: activation gradients are overwritten (they are
//      prefilled with NaN), parameter gradients accumulate (prefilled with
//      PREFILL, which is subtracted again), and asking for one gradient with
//      all others NULL (frozen / not needed) gives bitwise the same result.
// Then a few targeted checks: in-place forms the header allows, attention
// without saved probabilities, and gradient accumulation over two calls.
//
// Tolerances, as |a - b| <= atol + rtol |b| per element, with atol scaled by
// max_ref, the largest |b| of the output (forward) or of all the row's
// gradients (backward), so that it means the same at any magnitude. Row-wide
// for gradients because a gradient can vanish while the terms it is computed
// from do not: with a saturated softmax dq ~ e^-50 exactly, yet fp32 gives
// ~1e-8 of rounding from O(1) products, small against dv ~ 1.
// - forward: rtol 1e-4, atol 1e-5 max_ref. The ops' outputs are sums of at
//   most ~100 fp32 products or a normalisation; fp32 rounding (6e-8 per op)
//   stays below 1e-5 of the tensor's scale with ample margin.
// - gradients: rtol 1e-3, atol 1e-4 max_ref. The backward is fp32 (sums of
//   up to a few hundred products, and the GroupNorm/softmax backwards
//   subtract nearly equal terms, so small elements lose relative digits);
//   the reference is exact to ~1e-8: the double forward's rounding (1e-16)
//   over FD_STEP is ~1e-12, the O(FD_STEP^2) truncation ~1e-8.
// - timestep embedding: atol 1e-6 + 1e-6 |t|. The op rounds the frequency
//   and t * frequency to fp32 as PyTorch does; at t = 1000 that moves the
//   argument of sin/cos by up to ~3.3e-4 (exponent error 2 ulp * |e| times
//   t exp(e) <= 0.37 t, plus 2 ulp of the product), and this test computes
//   it in double. The bound has a 3x margin.
#include "a3fta/backend.h"
#include "a3fta/core.h"
#include "test_util.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_IN = 4 };
#define FD_STEP 1e-4
#define PREFILL 0.5f
#define FWD_RTOL 1e-4
#define FWD_ATOL 1e-5
#define GRAD_RTOL 1e-3
#define GRAD_ATOL 1e-4

static const a3_backend *be;

// ---------------------------------------------------------------- table rows
typedef struct {
  a3_conv2d_shape s;
  int bias;
} conv_p;
typedef struct {
  int B, C, HW, G;
  float eps;
} gn_p;
typedef struct {
  int N, IN, OUT, bias;
} lin_p;
typedef struct {
  int B, T, C, NH;
} attn_p;
typedef struct {
  int B, C, H, W; // to/from tokens use HW = H * W
} img_p;
typedef struct {
  int B, C1, C2, HW;
} cat_p;
typedef struct {
  int n;
  float scale;
} ew_p;
typedef struct {
  int N, dim, flip;
  float shift, max_period;
} temb_p;

typedef struct op_def op_def;
typedef struct {
  const op_def *op;
  union {
    conv_p conv;
    gn_p gn;
    lin_p lin;
    attn_p attn;
    img_p img;
    cat_p cat;
    ew_p ew;
    temb_p temb;
  } p;
} test_row;

// What the driver needs to know about a row's tensors.
typedef struct {
  size_t in_n[MAX_IN]; // element counts; 0 = absent (passed as NULL)
  size_t out_n;
  size_t saved_n;  // floats the forward saves for the backward (mean/rstd, probs)
  size_t ws_bytes; // the backend's workspace query
  char desc[96];
} row_shape;

struct op_def {
  const char *name;
  int n_in;
  const char *in_names[MAX_IN];
  int is_param[MAX_IN];                      // gradient accumulates (+=) rather than overwrites
  int has_grad[MAX_IN];                      // the backward produces this input's gradient
  float in_scale[MAX_IN], in_offset[MAX_IN]; // inputs are offset + scale * U(-1, 1)
  void (*shape)(const test_row *r, row_shape *s);
  void (*fwd)(const test_row *r, float *const in[], float *out, float *saved, void *ws);
  // NULL for forward-only ops.
  void (*bwd)(const test_row *r, float *const in[], const float *saved, const float *dout,
              float *din[], void *ws);
  void (*naive)(const test_row *r, double *const in[], double *out);
  // Per-element forward atol, overriding FWD_ATOL (NULL: the default).
  double (*fwd_atol)(const test_row *r, float *const in[], size_t i);
};

// ---------------------------------------------------------------- conv2d
static void conv_shape(const test_row *r, row_shape *s) {
  const a3_conv2d_shape *c = &r->p.conv.s;
  const int OH = a3_conv2d_out_h(c), OW = a3_conv2d_out_w(c);
  s->in_n[0] = (size_t)c->B * c->C * c->H * c->W;
  s->in_n[1] = (size_t)c->OC * c->C * c->KH * c->KW;
  s->in_n[2] = r->p.conv.bias ? (size_t)c->OC : 0;
  s->out_n = (size_t)c->B * c->OC * OH * OW;
  s->ws_bytes = be->ops->conv2d_workspace_size(be, c);
  snprintf(s->desc, sizeof s->desc, "x(%d,%d,%d,%d) w(%d,%d,%d,%d) s%d p(%d,%d,%d,%d)%s", c->B,
           c->C, c->H, c->W, c->OC, c->C, c->KH, c->KW, c->stride, c->pad_top, c->pad_bottom,
           c->pad_left, c->pad_right, r->p.conv.bias ? " +b" : "");
}
static void conv_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)saved;
  be->ops->conv2d_forward(be, &r->p.conv.s, a3_act_f32(out), a3_act_cf32(in[0]), in[1], in[2], ws);
}
static void conv_bwd(const test_row *r, float *const in[], const float *saved, const float *dout,
                     float *din[], void *ws) {
  (void)saved;
  be->ops->conv2d_backward(be, &r->p.conv.s, a3_act_f32(din[0]), din[1], din[2], a3_act_cf32(dout),
                           a3_act_cf32(in[0]), in[1], ws);
}
static void conv_naive(const test_row *r, double *const in[], double *out) {
  const a3_conv2d_shape *c = &r->p.conv.s;
  const int OH = (c->H + c->pad_top + c->pad_bottom - c->KH) / c->stride + 1;
  const int OW = (c->W + c->pad_left + c->pad_right - c->KW) / c->stride + 1;
  const double *x = in[0], *w = in[1], *bias = in[2];
  for (int b = 0; b < c->B; b++)
    for (int o = 0; o < c->OC; o++)
      for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
          double acc = bias ? bias[o] : 0.0;
          for (int ci = 0; ci < c->C; ci++)
            for (int kh = 0; kh < c->KH; kh++)
              for (int kw = 0; kw < c->KW; kw++) {
                int ih = oh * c->stride + kh - c->pad_top, iw = ow * c->stride + kw - c->pad_left;
                if (ih < 0 || ih >= c->H || iw < 0 || iw >= c->W) continue;
                acc += x[((b * c->C + ci) * c->H + ih) * c->W + iw] *
                       w[((o * c->C + ci) * c->KH + kh) * c->KW + kw];
              }
          out[((b * c->OC + o) * OH + oh) * OW + ow] = acc;
        }
}
static const op_def OP_CONV = {.name = "conv2d",
                               .n_in = 3,
                               .in_names = {"x", "w", "b"},
                               .is_param = {0, 1, 1},
                               .has_grad = {1, 1, 1},
                               .in_scale = {1, 1, 1},
                               .in_offset = {0, 0, 0},
                               .shape = conv_shape,
                               .fwd = conv_fwd,
                               .bwd = conv_bwd,
                               .naive = conv_naive};

// ---------------------------------------------------------------- GroupNorm
static void gn_shape(const test_row *r, row_shape *s) {
  const gn_p *g = &r->p.gn;
  s->in_n[0] = (size_t)g->B * g->C * g->HW;
  s->in_n[1] = s->in_n[2] = (size_t)g->C;
  s->out_n = s->in_n[0];
  s->saved_n = 2 * (size_t)g->B * g->G;
  snprintf(s->desc, sizeof s->desc, "x(%d,%d,%d) G=%d eps=%g", g->B, g->C, g->HW, g->G, g->eps);
}
static void gn_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)ws;
  const gn_p *g = &r->p.gn;
  be->ops->groupnorm_forward(be, a3_act_f32(out), saved, saved + g->B * g->G, a3_act_cf32(in[0]),
                             in[1], in[2], g->B, g->C, g->HW, g->G, g->eps);
}
static void gn_bwd(const test_row *r, float *const in[], const float *saved, const float *dout,
                   float *din[], void *ws) {
  (void)ws;
  const gn_p *g = &r->p.gn;
  be->ops->groupnorm_backward(be, a3_act_f32(din[0]), din[1], din[2], a3_act_cf32(dout),
                              a3_act_cf32(in[0]), in[1], saved, saved + g->B * g->G, g->B, g->C,
                              g->HW, g->G);
}
static void gn_naive(const test_row *r, double *const in[], double *out) {
  const gn_p *g = &r->p.gn;
  const int cg = g->C / g->G, n = cg * g->HW;
  for (int b = 0; b < g->B; b++)
    for (int gi = 0; gi < g->G; gi++) {
      const double *x = in[0] + (b * g->C + gi * cg) * g->HW;
      double mean = 0, var = 0;
      for (int i = 0; i < n; i++) mean += x[i] / n;
      for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean) / n;
      for (int i = 0; i < n; i++) {
        int c = gi * cg + i / g->HW;
        out[(b * g->C + gi * cg) * g->HW + i] =
            (x[i] - mean) / sqrt(var + g->eps) * in[1][c] + in[2][c];
      }
    }
}
static const op_def OP_GN = {.name = "groupnorm",
                             .n_in = 3,
                             .in_names = {"x", "w", "b"},
                             .is_param = {0, 1, 1},
                             .has_grad = {1, 1, 1},
                             .in_scale = {1, 1, 1},
                             .in_offset = {0.5f, 1, 0},
                             .shape = gn_shape,
                             .fwd = gn_fwd,
                             .bwd = gn_bwd,
                             .naive = gn_naive};

// ---------------------------------------------------------------- GroupNorm + SiLU (fused)
static void gns_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)ws;
  const gn_p *g = &r->p.gn;
  be->ops->groupnorm_silu_forward(be, a3_act_f32(out), saved, saved + g->B * g->G,
                                  a3_act_cf32(in[0]), in[1], in[2], g->B, g->C, g->HW, g->G,
                                  g->eps);
}
static void gns_bwd(const test_row *r, float *const in[], const float *saved, const float *dout,
                    float *din[], void *ws) {
  (void)ws;
  const gn_p *g = &r->p.gn;
  be->ops->groupnorm_silu_backward(be, a3_act_f32(din[0]), din[1], din[2], a3_act_cf32(dout),
                                   a3_act_cf32(in[0]), in[1], in[2], saved, saved + g->B * g->G,
                                   g->B, g->C, g->HW, g->G);
}
static void gns_naive(const test_row *r, double *const in[], double *out) {
  const gn_p *g = &r->p.gn;
  gn_naive(r, in, out);
  for (size_t i = 0; i < (size_t)g->B * g->C * g->HW; i++) out[i] = out[i] / (1.0 + exp(-out[i]));
}
// Weights up to 4 and biases up to +-3 spread the pre-activations over
// SiLU's curved range (about +-10).
static const op_def OP_GN_SILU = {.name = "gn_silu",
                                  .n_in = 3,
                                  .in_names = {"x", "w", "b"},
                                  .is_param = {0, 1, 1},
                                  .has_grad = {1, 1, 1},
                                  .in_scale = {1, 2, 3},
                                  .in_offset = {0.5f, 2, 0},
                                  .shape = gn_shape,
                                  .fwd = gns_fwd,
                                  .bwd = gns_bwd,
                                  .naive = gns_naive};

// ---------------------------------------------------------------- SiLU
static void ew_shape(const test_row *r, row_shape *s) {
  s->in_n[0] = s->out_n = (size_t)r->p.ew.n;
  snprintf(s->desc, sizeof s->desc, "n=%d", r->p.ew.n);
}
static void silu_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)saved, (void)ws;
  be->ops->silu_forward(be, a3_act_f32(out), a3_act_cf32(in[0]), (size_t)r->p.ew.n);
}
static void silu_bwd(const test_row *r, float *const in[], const float *saved, const float *dout,
                     float *din[], void *ws) {
  (void)saved, (void)ws;
  if (din[0])
    be->ops->silu_backward(be, a3_act_f32(din[0]), a3_act_cf32(dout), a3_act_cf32(in[0]),
                           (size_t)r->p.ew.n);
}
static void silu_naive(const test_row *r, double *const in[], double *out) {
  for (int i = 0; i < r->p.ew.n; i++) out[i] = in[0][i] / (1.0 + exp(-in[0][i]));
}
// Inputs up to +-12 reach both saturated ends of the sigmoid.
static const op_def OP_SILU = {.name = "silu",
                               .n_in = 1,
                               .in_names = {"x"},
                               .is_param = {0},
                               .has_grad = {1},
                               .in_scale = {12},
                               .in_offset = {0},
                               .shape = ew_shape,
                               .fwd = silu_fwd,
                               .bwd = silu_bwd,
                               .naive = silu_naive};

// ---------------------------------------------------------------- linear
static void lin_shape(const test_row *r, row_shape *s) {
  const lin_p *l = &r->p.lin;
  s->in_n[0] = (size_t)l->N * l->IN;
  s->in_n[1] = (size_t)l->OUT * l->IN;
  s->in_n[2] = l->bias ? (size_t)l->OUT : 0;
  s->out_n = (size_t)l->N * l->OUT;
  snprintf(s->desc, sizeof s->desc, "x(%d,%d) w(%d,%d)%s", l->N, l->IN, l->OUT, l->IN,
           l->bias ? " +b" : "");
}
static void lin_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)saved, (void)ws;
  const lin_p *l = &r->p.lin;
  be->ops->linear_forward(be, a3_act_f32(out), a3_act_cf32(in[0]), in[1], in[2], l->N, l->IN,
                          l->OUT);
}
static void lin_bwd(const test_row *r, float *const in[], const float *saved, const float *dout,
                    float *din[], void *ws) {
  (void)saved, (void)ws;
  const lin_p *l = &r->p.lin;
  be->ops->linear_backward(be, a3_act_f32(din[0]), din[1], din[2], a3_act_cf32(dout),
                           a3_act_cf32(in[0]), in[1], l->N, l->IN, l->OUT);
}
static void lin_naive(const test_row *r, double *const in[], double *out) {
  const lin_p *l = &r->p.lin;
  for (int n = 0; n < l->N; n++)
    for (int o = 0; o < l->OUT; o++) {
      double acc = in[2] ? in[2][o] : 0.0;
      for (int i = 0; i < l->IN; i++) acc += in[0][n * l->IN + i] * in[1][o * l->IN + i];
      out[n * l->OUT + o] = acc;
    }
}
static const op_def OP_LIN = {.name = "linear",
                              .n_in = 3,
                              .in_names = {"x", "w", "b"},
                              .is_param = {0, 1, 1},
                              .has_grad = {1, 1, 1},
                              .in_scale = {1, 1, 1},
                              .in_offset = {0, 0, 0},
                              .shape = lin_shape,
                              .fwd = lin_fwd,
                              .bwd = lin_bwd,
                              .naive = lin_naive};

// ---------------------------------------------------------------- attention
static void attn_shape(const test_row *r, row_shape *s) {
  const attn_p *a = &r->p.attn;
  s->in_n[0] = s->in_n[1] = s->in_n[2] = s->out_n = (size_t)a->B * a->T * a->C;
  s->saved_n = (size_t)a->B * a->NH * a->T * a->T;
  s->ws_bytes = be->ops->attention_workspace_size(be, a->B, a->T, a->C, a->NH);
  snprintf(s->desc, sizeof s->desc, "qkv(%d,%d,%d) heads=%d", a->B, a->T, a->C, a->NH);
}
static void attn_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  const attn_p *a = &r->p.attn;
  be->ops->attention_forward(be, a3_act_f32(out), saved, a3_act_cf32(in[0]), a3_act_cf32(in[1]),
                             a3_act_cf32(in[2]), a->B, a->T, a->C, a->NH, ws);
}
static void attn_bwd(const test_row *r, float *const in[], const float *saved, const float *dout,
                     float *din[], void *ws) {
  const attn_p *a = &r->p.attn;
  be->ops->attention_backward(be, a3_act_f32(din[0]), a3_act_f32(din[1]), a3_act_f32(din[2]),
                              a3_act_cf32(dout), a3_act_cf32(in[0]), a3_act_cf32(in[1]),
                              a3_act_cf32(in[2]), saved, a->B, a->T, a->C, a->NH, ws);
}
static void attn_naive(const test_row *r, double *const in[], double *out) {
  const attn_p *a = &r->p.attn;
  const int d = a->C / a->NH, T = a->T, C = a->C;
  double *s = malloc(sizeof(double) * (size_t)T);
  for (int b = 0; b < a->B; b++)
    for (int h = 0; h < a->NH; h++)
      for (int i = 0; i < T; i++) {
        double max = -INFINITY, sum = 0;
        for (int j = 0; j < T; j++) {
          double dot = 0;
          for (int e = 0; e < d; e++)
            dot += in[0][(b * T + i) * C + h * d + e] * in[1][(b * T + j) * C + h * d + e];
          s[j] = dot / sqrt((double)d);
          max = fmax(max, s[j]);
        }
        for (int j = 0; j < T; j++) sum += s[j] = exp(s[j] - max);
        for (int e = 0; e < d; e++) {
          double acc = 0;
          for (int j = 0; j < T; j++) acc += s[j] / sum * in[2][(b * T + j) * C + h * d + e];
          out[(b * T + i) * C + h * d + e] = acc;
        }
      }
  free(s);
}
// q and k at +-2 make the softmax peaked, not nearly uniform.
static const op_def OP_ATTN = {.name = "attention",
                               .n_in = 3,
                               .in_names = {"q", "k", "v"},
                               .is_param = {0, 0, 0},
                               .has_grad = {1, 1, 1},
                               .in_scale = {2, 2, 1},
                               .in_offset = {0, 0, 0},
                               .shape = attn_shape,
                               .fwd = attn_fwd,
                               .bwd = attn_bwd,
                               .naive = attn_naive};

// q and k at +-30 give scores in the hundreds: exp overflows unless the
// softmax subtracts the row maximum.
static const op_def OP_ATTN_PEAKED = {.name = "attn_peaked",
                                      .n_in = 3,
                                      .in_names = {"q", "k", "v"},
                                      .has_grad = {1, 1, 1},
                                      .in_scale = {30, 30, 1},
                                      .shape = attn_shape,
                                      .fwd = attn_fwd,
                                      .bwd = attn_bwd,
                                      .naive = attn_naive};

// ---------------------------------------------------------------- layouts
static void tok_shape(const test_row *r, row_shape *s) {
  const img_p *g = &r->p.img;
  s->in_n[0] = s->out_n = (size_t)g->B * g->C * g->H * g->W;
  snprintf(s->desc, sizeof s->desc, "(%d,%d,%d)", g->B, g->C, g->H * g->W);
}
// Each transpose's backward is the other one (the header's contract).
static void to_tok_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)saved, (void)ws;
  const img_p *g = &r->p.img;
  be->ops->to_tokens(be, a3_act_f32(out), a3_act_cf32(in[0]), g->B, g->C, g->H * g->W);
}
static void to_tok_bwd(const test_row *r, float *const in[], const float *saved, const float *dout,
                       float *din[], void *ws) {
  (void)in, (void)saved, (void)ws;
  const img_p *g = &r->p.img;
  if (din[0])
    be->ops->from_tokens(be, a3_act_f32(din[0]), a3_act_cf32(dout), g->B, g->C, g->H * g->W);
}
static void to_tok_naive(const test_row *r, double *const in[], double *out) {
  const img_p *g = &r->p.img;
  const int HW = g->H * g->W;
  for (int b = 0; b < g->B; b++)
    for (int c = 0; c < g->C; c++)
      for (int p = 0; p < HW; p++) out[(b * HW + p) * g->C + c] = in[0][(b * g->C + c) * HW + p];
}
static const op_def OP_TO_TOK = {.name = "to_tokens",
                                 .n_in = 1,
                                 .in_names = {"x"},
                                 .is_param = {0},
                                 .has_grad = {1},
                                 .in_scale = {1},
                                 .in_offset = {0},
                                 .shape = tok_shape,
                                 .fwd = to_tok_fwd,
                                 .bwd = to_tok_bwd,
                                 .naive = to_tok_naive};

static void from_tok_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)saved, (void)ws;
  const img_p *g = &r->p.img;
  be->ops->from_tokens(be, a3_act_f32(out), a3_act_cf32(in[0]), g->B, g->C, g->H * g->W);
}
static void from_tok_bwd(const test_row *r, float *const in[], const float *saved,
                         const float *dout, float *din[], void *ws) {
  (void)in, (void)saved, (void)ws;
  const img_p *g = &r->p.img;
  if (din[0])
    be->ops->to_tokens(be, a3_act_f32(din[0]), a3_act_cf32(dout), g->B, g->C, g->H * g->W);
}
static void from_tok_naive(const test_row *r, double *const in[], double *out) {
  const img_p *g = &r->p.img;
  const int HW = g->H * g->W;
  for (int b = 0; b < g->B; b++)
    for (int c = 0; c < g->C; c++)
      for (int p = 0; p < HW; p++) out[(b * g->C + c) * HW + p] = in[0][(b * HW + p) * g->C + c];
}
static const op_def OP_FROM_TOK = {.name = "from_tokens",
                                   .n_in = 1,
                                   .in_names = {"x"},
                                   .is_param = {0},
                                   .has_grad = {1},
                                   .in_scale = {1},
                                   .in_offset = {0},
                                   .shape = tok_shape,
                                   .fwd = from_tok_fwd,
                                   .bwd = from_tok_bwd,
                                   .naive = from_tok_naive};

static void up_shape(const test_row *r, row_shape *s) {
  const img_p *g = &r->p.img;
  s->in_n[0] = (size_t)g->B * g->C * g->H * g->W;
  s->out_n = 4 * s->in_n[0];
  snprintf(s->desc, sizeof s->desc, "x(%d,%d,%d,%d)", g->B, g->C, g->H, g->W);
}
static void up_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)saved, (void)ws;
  const img_p *g = &r->p.img;
  be->ops->upsample2x_forward(be, a3_act_f32(out), a3_act_cf32(in[0]), g->B, g->C, g->H, g->W);
}
static void up_bwd(const test_row *r, float *const in[], const float *saved, const float *dout,
                   float *din[], void *ws) {
  (void)in, (void)saved, (void)ws;
  const img_p *g = &r->p.img;
  if (din[0])
    be->ops->upsample2x_backward(be, a3_act_f32(din[0]), a3_act_cf32(dout), g->B, g->C, g->H, g->W);
}
static void up_naive(const test_row *r, double *const in[], double *out) {
  const img_p *g = &r->p.img;
  for (int bc = 0; bc < g->B * g->C; bc++)
    for (int y = 0; y < 2 * g->H; y++)
      for (int x = 0; x < 2 * g->W; x++)
        out[(bc * 2 * g->H + y) * 2 * g->W + x] = in[0][(bc * g->H + y / 2) * g->W + x / 2];
}
static const op_def OP_UP = {.name = "upsample2x",
                             .n_in = 1,
                             .in_names = {"x"},
                             .is_param = {0},
                             .has_grad = {1},
                             .in_scale = {1},
                             .in_offset = {0},
                             .shape = up_shape,
                             .fwd = up_fwd,
                             .bwd = up_bwd,
                             .naive = up_naive};

static void cat_shape(const test_row *r, row_shape *s) {
  const cat_p *c = &r->p.cat;
  s->in_n[0] = (size_t)c->B * c->C1 * c->HW;
  s->in_n[1] = (size_t)c->B * c->C2 * c->HW;
  s->out_n = s->in_n[0] + s->in_n[1];
  snprintf(s->desc, sizeof s->desc, "a(%d,%d,%d) b(%d,%d,%d)", c->B, c->C1, c->HW, c->B, c->C2,
           c->HW);
}
static void cat_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)saved, (void)ws;
  const cat_p *c = &r->p.cat;
  be->ops->concat_forward(be, a3_act_f32(out), a3_act_cf32(in[0]), a3_act_cf32(in[1]), c->B, c->C1,
                          c->C2, c->HW);
}
static void cat_bwd(const test_row *r, float *const in[], const float *saved, const float *dout,
                    float *din[], void *ws) {
  (void)in, (void)saved, (void)ws;
  const cat_p *c = &r->p.cat;
  be->ops->concat_backward(be, a3_act_f32(din[0]), a3_act_f32(din[1]), a3_act_cf32(dout), c->B,
                           c->C1, c->C2, c->HW);
}
static void cat_naive(const test_row *r, double *const in[], double *out) {
  const cat_p *c = &r->p.cat;
  const int CC = c->C1 + c->C2;
  for (int b = 0; b < c->B; b++)
    for (int ch = 0; ch < CC; ch++)
      for (int p = 0; p < c->HW; p++)
        out[(b * CC + ch) * c->HW + p] = ch < c->C1 ? in[0][(b * c->C1 + ch) * c->HW + p]
                                                    : in[1][(b * c->C2 + ch - c->C1) * c->HW + p];
}
static const op_def OP_CAT = {.name = "concat",
                              .n_in = 2,
                              .in_names = {"a", "b"},
                              .is_param = {0, 0},
                              .has_grad = {1, 1},
                              .in_scale = {1, 1},
                              .in_offset = {0, 0},
                              .shape = cat_shape,
                              .fwd = cat_fwd,
                              .bwd = cat_bwd,
                              .naive = cat_naive};

// ---------------------------------------------------------------- adds
static void add_shape(const test_row *r, row_shape *s) {
  s->in_n[0] = s->in_n[1] = s->out_n = (size_t)r->p.ew.n;
  snprintf(s->desc, sizeof s->desc, "n=%d scale=%g", r->p.ew.n, r->p.ew.scale);
}
static void add_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)saved, (void)ws;
  be->ops->add_forward(be, a3_act_f32(out), a3_act_cf32(in[0]), a3_act_cf32(in[1]), r->p.ew.scale,
                       (size_t)r->p.ew.n);
}
static void add_bwd(const test_row *r, float *const in[], const float *saved, const float *dout,
                    float *din[], void *ws) {
  (void)in, (void)saved, (void)ws;
  be->ops->add_backward(be, a3_act_f32(din[0]), a3_act_f32(din[1]), a3_act_cf32(dout),
                        r->p.ew.scale, (size_t)r->p.ew.n);
}
static void add_naive(const test_row *r, double *const in[], double *out) {
  for (int i = 0; i < r->p.ew.n; i++) out[i] = (in[0][i] + in[1][i]) * r->p.ew.scale;
}
static const op_def OP_ADD = {.name = "add",
                              .n_in = 2,
                              .in_names = {"a", "b"},
                              .is_param = {0, 0},
                              .has_grad = {1, 1},
                              .in_scale = {1, 1},
                              .in_offset = {0, 0},
                              .shape = add_shape,
                              .fwd = add_fwd,
                              .bwd = add_bwd,
                              .naive = add_naive};

static void addc_shape(const test_row *r, row_shape *s) {
  const img_p *g = &r->p.img;
  s->in_n[0] = s->out_n = (size_t)g->B * g->C * g->H * g->W;
  s->in_n[1] = (size_t)g->B * g->C;
  snprintf(s->desc, sizeof s->desc, "x(%d,%d,%d) t(%d,%d)", g->B, g->C, g->H * g->W, g->B, g->C);
}
static void addc_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)saved, (void)ws;
  const img_p *g = &r->p.img;
  be->ops->add_channel_forward(be, a3_act_f32(out), a3_act_cf32(in[0]), a3_act_cf32(in[1]), g->B,
                               g->C, g->H * g->W);
}
// The input gradient is dout itself (the header's contract): checked against FD here too.
static void addc_bwd(const test_row *r, float *const in[], const float *saved, const float *dout,
                     float *din[], void *ws) {
  (void)in, (void)saved, (void)ws;
  const img_p *g = &r->p.img;
  if (din[0]) memcpy(din[0], dout, sizeof(float) * (size_t)g->B * g->C * g->H * g->W);
  if (din[1])
    be->ops->add_channel_backward(be, a3_act_f32(din[1]), a3_act_cf32(dout), g->B, g->C,
                                  g->H * g->W);
}
static void addc_naive(const test_row *r, double *const in[], double *out) {
  const img_p *g = &r->p.img;
  const int HW = g->H * g->W;
  for (int bc = 0; bc < g->B * g->C; bc++)
    for (int p = 0; p < HW; p++) out[bc * HW + p] = in[0][bc * HW + p] + in[1][bc];
}
static const op_def OP_ADDC = {.name = "add_channel",
                               .n_in = 2,
                               .in_names = {"x", "t"},
                               .is_param = {0, 0},
                               .has_grad = {1, 1},
                               .in_scale = {1, 1},
                               .in_offset = {0, 0},
                               .shape = addc_shape,
                               .fwd = addc_fwd,
                               .bwd = addc_bwd,
                               .naive = addc_naive};

// ---------------------------------------------------------------- timestep embedding
static void temb_shape(const test_row *r, row_shape *s) {
  const temb_p *t = &r->p.temb;
  s->in_n[0] = (size_t)t->N;
  s->out_n = (size_t)t->N * t->dim;
  snprintf(s->desc, sizeof s->desc, "t(%d) dim=%d flip=%d shift=%g", t->N, t->dim, t->flip,
           t->shift);
}
static void temb_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)saved, (void)ws;
  const temb_p *t = &r->p.temb;
  be->ops->timestep_embedding(be, a3_act_f32(out), in[0], t->N, t->dim, t->flip, t->shift,
                              t->max_period);
}
static void temb_naive(const test_row *r, double *const in[], double *out) {
  const temb_p *t = &r->p.temb;
  const int half = t->dim / 2;
  for (int n = 0; n < t->N; n++) {
    for (int i = 0; i < half; i++) {
      double arg = in[0][n] * exp(-log((double)t->max_period) * i / (half - t->shift));
      out[n * t->dim + i] = t->flip ? cos(arg) : sin(arg);
      out[n * t->dim + half + i] = t->flip ? sin(arg) : cos(arg);
    }
    if (t->dim % 2) out[n * t->dim + t->dim - 1] = 0.0;
  }
}
static double temb_atol(const test_row *r, float *const in[], size_t i) {
  return 1e-6 + 1e-6 * fabs(in[0][i / (size_t)r->p.temb.dim]);
}
// Timesteps in [0, 1000), as in training.
static const op_def OP_TEMB = {.name = "timestep_emb",
                               .n_in = 1,
                               .in_names = {"t"},
                               .is_param = {0},
                               .has_grad = {0},
                               .in_scale = {500},
                               .in_offset = {500},
                               .shape = temb_shape,
                               .fwd = temb_fwd,
                               .naive = temb_naive,
                               .fwd_atol = temb_atol};

// ---------------------------------------------------------------- MSE
static void mse_shape(const test_row *r, row_shape *s) {
  s->in_n[0] = s->in_n[1] = (size_t)r->p.ew.n;
  s->out_n = 1;
  snprintf(s->desc, sizeof s->desc, "n=%d", r->p.ew.n);
}
static void mse_fwd(const test_row *r, float *const in[], float *out, float *saved, void *ws) {
  (void)saved, (void)ws;
  be->ops->mse_forward(be, out, in[0], in[1], (size_t)r->p.ew.n);
}
static void mse_bwd(const test_row *r, float *const in[], const float *saved, const float *dout,
                    float *din[], void *ws) {
  (void)saved, (void)ws;
  if (din[0]) be->ops->mse_backward(be, din[0], in[0], in[1], (size_t)r->p.ew.n, dout[0]);
}
static void mse_naive(const test_row *r, double *const in[], double *out) {
  double sum = 0;
  for (int i = 0; i < r->p.ew.n; i++) sum += (in[0][i] - in[1][i]) * (in[0][i] - in[1][i]);
  out[0] = sum / r->p.ew.n;
}
static const op_def OP_MSE = {.name = "mse",
                              .n_in = 2,
                              .in_names = {"pred", "target"},
                              .is_param = {0, 0},
                              .has_grad = {1, 0},
                              .in_scale = {1, 1},
                              .in_offset = {0, 0},
                              .shape = mse_shape,
                              .fwd = mse_fwd,
                              .bwd = mse_bwd,
                              .naive = mse_naive};

// ---------------------------------------------------------------- the table
#define CONV(B, C, H, W, OC, K, S, PT, PB, PL, PR, BIAS)                                           \
  {                                                                                                \
    &OP_CONV, .p.conv = { {B, C, H, W, OC, K, K, S, PT, PB, PL, PR}, BIAS }                        \
  }
static const test_row rows[] = {
    CONV(2, 3, 5, 5, 4, 3, 1, 1, 1, 1, 1, 1),   // resnet conv: 3x3, same padding
    CONV(1, 2, 7, 6, 3, 3, 2, 0, 1, 0, 1, 1),   // diffusers downsampler: pad (0,1,0,1), odd H
    CONV(2, 3, 8, 8, 2, 3, 2, 0, 1, 0, 1, 1),   // ... even H
    CONV(2, 4, 5, 3, 3, 1, 1, 0, 0, 0, 0, 1),   // 1x1 shortcut (no im2col)
    CONV(1, 3, 4, 5, 2, 1, 2, 0, 0, 0, 0, 0),   // 1x1 stride 2, no bias
    CONV(1, 2, 6, 6, 2, 3, 1, 2, 0, 1, 0, 0),   // lopsided padding
    CONV(1, 2, 5, 7, 3, 3, 2, 1, 1, 1, 1, 1),   // stride 2 with same padding, odd sizes
    CONV(3, 16, 4, 4, 16, 3, 1, 1, 1, 1, 1, 1), // 16-channel blocks (oneDNN's blocked kernels)
    CONV(2, 1, 6, 5, 6, 3, 1, 1, 1, 1, 1, 1),   // conv_in-like: 1 channel in, more out
    CONV(2, 6, 5, 6, 1, 3, 1, 1, 1, 1, 1, 0),   // conv_out-like: 1 channel out
    CONV(2, 2, 3, 4, 5, 1, 1, 0, 0, 0, 0, 1),   // 1x1 with more channels out than in
    {&OP_GN, .p.gn = {2, 4, 9, 2, 1e-5f}},
    {&OP_GN, .p.gn = {2, 6, 5, 1, 1e-6f}}, // one group
    {&OP_GN, .p.gn = {1, 5, 7, 5, 1e-6f}}, // one channel per group
    {&OP_GN, .p.gn = {2, 8, 4, 4, 1e-3f}},
    {&OP_GN_SILU, .p.gn = {2, 4, 9, 2, 1e-5f}},
    {&OP_GN_SILU, .p.gn = {3, 6, 5, 1, 1e-6f}},   // one group
    {&OP_GN_SILU, .p.gn = {1, 5, 7, 5, 1e-6f}},   // one channel per group
    {&OP_GN_SILU, .p.gn = {2, 16, 20, 8, 1e-5f}}, // long enough to run threaded
    {&OP_SILU, .p.ew = {37, 1}},
    {&OP_SILU, .p.ew = {300, 1}},
    {&OP_LIN, .p.lin = {3, 5, 4, 1}},
    {&OP_LIN, .p.lin = {1, 7, 3, 0}},
    {&OP_LIN, .p.lin = {6, 4, 9, 1}},
    {&OP_ATTN, .p.attn = {2, 5, 4, 1}},
    {&OP_ATTN, .p.attn = {1, 7, 6, 2}},
    {&OP_ATTN, .p.attn = {2, 4, 8, 4}},
    {&OP_ATTN, .p.attn = {1, 1, 3, 1}}, // one token: P = 1, dq = dk = 0
    {&OP_ATTN, .p.attn = {1, 16, 8, 1}},
    {&OP_ATTN_PEAKED, .p.attn = {1, 8, 4, 1}},
    {&OP_ATTN_PEAKED, .p.attn = {2, 6, 8, 2}},
    {&OP_TO_TOK, .p.img = {2, 3, 5, 1}},
    {&OP_TO_TOK, .p.img = {1, 40, 37, 1}}, // more than one 32x32 transpose tile each way
    {&OP_FROM_TOK, .p.img = {2, 3, 5, 1}},
    {&OP_FROM_TOK, .p.img = {1, 33, 6, 7}},
    {&OP_UP, .p.img = {2, 3, 3, 4}},
    {&OP_UP, .p.img = {1, 1, 1, 1}},
    {&OP_CAT, .p.cat = {2, 3, 2, 5}},
    {&OP_CAT, .p.cat = {1, 1, 4, 7}},
    {&OP_ADD, .p.ew = {17, 1}},
    {&OP_ADD, .p.ew = {23, 0.70710678f}}, // output_scale_factor sqrt(2)
    {&OP_ADDC, .p.img = {2, 3, 5, 1}},
    {&OP_ADDC, .p.img = {1, 4, 3, 3}},
    {&OP_TEMB, .p.temb = {5, 8, 0, 1, 10000}},
    {&OP_TEMB, .p.temb = {4, 7, 1, 0, 10000}},   // odd dim, flipped
    {&OP_TEMB, .p.temb = {3, 128, 0, 1, 10000}}, // ddpm-cifar10-32
    {&OP_TEMB, .p.temb = {3, 32, 1, 0, 10000}},
    {&OP_MSE, .p.ew = {1, 1}},
    {&OP_MSE, .p.ew = {50, 1}},
};
enum { N_ROWS = sizeof rows / sizeof rows[0] };

// ---------------------------------------------------------------- driver
static float uniform(uint64_t seed, uint64_t stream, uint64_t i) { // U(-1, 1)
  return (float)((double)(a3_rng_u64(seed, stream, i) >> 40) * 0x1p-23 - 1.0);
}

static void *xmalloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(1);
  }
  return p;
}

typedef struct {
  double max_abs, max_rel, max_ratio; // ratio = err / (atol + rtol |b|); <= 1 passes
  const char *worst;
} err_stats;

static double max_abs_d(const double *b, size_t n) {
  double m = 0;
  for (size_t i = 0; i < n; i++) m = fmax(m, fabs(b[i]));
  return m;
}

// Folds a's deviation from b into st: |a - b| <= atol_frac * scale + rtol |b|,
// or the op's own per-element atol (fwd_atol) when r has one. Relative
// errors are reported against max(|b|, 1e-3 scale): those of elements that
// are ~0 next to the tensor's scale say nothing.
static void compare(err_stats *st, const char *name, const float *a, const double *b, size_t n,
                    double rtol, double atol_frac, double scale, const test_row *r,
                    float *const in[]) {
  const double rel_floor = 1e-3 * scale + 1e-30;
  for (size_t i = 0; i < n; i++) {
    const double atol = (r && r->op->fwd_atol) ? r->op->fwd_atol(r, in, i) : atol_frac * scale;
    const double err = isfinite(a[i]) ? fabs(a[i] - b[i]) : INFINITY;
    const double ratio = err / (atol + rtol * fabs(b[i]) + 1e-30);
    st->max_abs = fmax(st->max_abs, err);
    st->max_rel = fmax(st->max_rel, err / fmax(fabs(b[i]), rel_floor));
    if (ratio > st->max_ratio || (isnan(ratio) && !isnan(st->max_ratio))) {
      st->max_ratio = isnan(ratio) ? INFINITY : ratio;
      st->worst = name;
    }
  }
}

// L = sum(naive(x) * R) in double.
static double naive_loss(const test_row *r, double *const xd[], double *out, const float *R,
                         size_t out_n) {
  r->op->naive(r, xd, out);
  double L = 0;
  for (size_t i = 0; i < out_n; i++) L += out[i] * R[i];
  return L;
}

// Runs the backward with only the gradients in `want` (others NULL), each
// prefilled per the contract; returns them with PREFILL removed from params.
static void run_backward(const test_row *r, const row_shape *sh, float *const in[],
                         const float *saved, const float *R, void *ws, const int want[],
                         float *grad[]) {
  float *din[MAX_IN] = {0};
  for (int i = 0; i < r->op->n_in; i++) {
    if (!want[i] || !sh->in_n[i]) continue;
    din[i] = grad[i];
    for (size_t j = 0; j < sh->in_n[i]; j++) din[i][j] = r->op->is_param[i] ? PREFILL : NAN;
  }
  r->op->bwd(r, in, saved, R, din, ws);
  for (int i = 0; i < r->op->n_in; i++)
    if (din[i] && r->op->is_param[i])
      for (size_t j = 0; j < sh->in_n[i]; j++) din[i][j] -= PREFILL;
}

// Central differences of L for every element of input i, through the double forward.
static void finite_diff(const test_row *r, const row_shape *sh, double *xd[], double *out,
                        const float *R, int i, double *fd) {
  for (size_t j = 0; j < sh->in_n[i]; j++) {
    const double x0 = xd[i][j];
    xd[i][j] = x0 + FD_STEP;
    const double lp = naive_loss(r, xd, out, R, sh->out_n);
    xd[i][j] = x0 - FD_STEP;
    const double lm = naive_loss(r, xd, out, R, sh->out_n);
    xd[i][j] = x0;
    fd[j] = (lp - lm) / (2 * FD_STEP);
  }
}

// Every gradient asked for alone (the rest NULL) must equal the full backward's bitwise.
static void check_null_grads(const test_row *r, const row_shape *sh, float *const in[],
                             const float *saved, const float *R, void *ws, float *const full[]) {
  const int none[MAX_IN] = {0};
  float *scratch[MAX_IN] = {0};
  run_backward(r, sh, in, saved, R, ws, none, scratch); // all NULL: must touch nothing
  for (int i = 0; i < r->op->n_in; i++) {
    if (!r->op->has_grad[i] || !sh->in_n[i]) continue;
    int want[MAX_IN] = {0};
    want[i] = 1;
    float *alone[MAX_IN] = {0};
    alone[i] = xmalloc(sizeof(float) * sh->in_n[i]);
    run_backward(r, sh, in, saved, R, ws, want, alone);
    CHECK_MSG(memcmp(alone[i], full[i], sizeof(float) * sh->in_n[i]) == 0,
              "%s %s: d%s alone differs from d%s with all gradients", r->op->name, sh->desc,
              r->op->in_names[i], r->op->in_names[i]);
    free(alone[i]);
  }
}

static void check_grads(const test_row *r, const row_shape *sh, float *const in[], double *xd[],
                        double *out, const float *saved, void *ws, uint64_t seed, err_stats *st) {
  float *R = xmalloc(sizeof(float) * sh->out_n);
  for (size_t j = 0; j < sh->out_n; j++) R[j] = uniform(seed, 100, j);
  int want[MAX_IN] = {0};
  float *grad[MAX_IN] = {0};
  for (int i = 0; i < r->op->n_in; i++) {
    want[i] = r->op->has_grad[i] && sh->in_n[i];
    if (want[i]) grad[i] = xmalloc(sizeof(float) * sh->in_n[i]);
  }
  run_backward(r, sh, in, saved, R, ws, want, grad);
  double *fd[MAX_IN] = {0}, scale = 0;
  for (int i = 0; i < r->op->n_in; i++) {
    if (!want[i]) continue;
    fd[i] = xmalloc(sizeof(double) * sh->in_n[i]);
    finite_diff(r, sh, xd, out, R, i, fd[i]);
    scale = fmax(scale, max_abs_d(fd[i], sh->in_n[i]));
  }
  for (int i = 0; i < r->op->n_in; i++) {
    if (!want[i]) continue;
    compare(st, r->op->in_names[i], grad[i], fd[i], sh->in_n[i], GRAD_RTOL, GRAD_ATOL, scale, NULL,
            NULL);
    free(fd[i]);
  }
  check_null_grads(r, sh, in, saved, R, ws, grad);
  for (int i = 0; i < r->op->n_in; i++) free(grad[i]);
  free(R);
}

// One row: forward vs naive, then gradients vs FD. Returns 1 when it passed.
static int run_row(int row_index) {
  const test_row *r = &rows[row_index];
  const op_def *op = r->op;
  row_shape sh = {0};
  op->shape(r, &sh);
  const uint64_t seed = 0xa3f7a000u + (uint64_t)row_index;
  float *in[MAX_IN] = {0};
  double *xd[MAX_IN] = {0};
  for (int i = 0; i < op->n_in; i++) {
    if (!sh.in_n[i]) continue;
    in[i] = xmalloc(sizeof(float) * sh.in_n[i]);
    xd[i] = xmalloc(sizeof(double) * sh.in_n[i]);
    for (size_t j = 0; j < sh.in_n[i]; j++) {
      in[i][j] = op->in_offset[i] + op->in_scale[i] * uniform(seed, (uint64_t)i, j);
      xd[i][j] = in[i][j];
    }
  }
  float *out = xmalloc(sizeof(float) * sh.out_n);
  double *ref = xmalloc(sizeof(double) * sh.out_n);
  float *saved = sh.saved_n ? xmalloc(sizeof(float) * sh.saved_n) : NULL;
  void *ws = sh.ws_bytes ? xmalloc(sh.ws_bytes) : NULL; // exact size: ASan sees any overrun

  op->fwd(r, in, out, saved, ws);
  op->naive(r, xd, ref);
  err_stats fwd = {0, 0, 0, "out"}, grad = {0, 0, 0, "-"};
  compare(&fwd, "out", out, ref, sh.out_n, FWD_RTOL, FWD_ATOL, max_abs_d(ref, sh.out_n), r, in);
  if (op->bwd) check_grads(r, &sh, in, xd, ref, saved, ws, seed, &grad);

  const int pass = fwd.max_ratio <= 1.0 && grad.max_ratio <= 1.0;
  printf("%-12s %-48s %9.2e %9.2e %9.2e %9.2e %8.1e %-6s %s\n", op->name, sh.desc, fwd.max_abs,
         fwd.max_rel, grad.max_abs, grad.max_rel, fmax(fwd.max_ratio, grad.max_ratio),
         grad.max_ratio > fwd.max_ratio ? grad.worst : fwd.worst, pass ? "PASS" : "FAIL");
  for (int i = 0; i < op->n_in; i++) free(in[i]), free(xd[i]);
  free(out), free(ref), free(saved), free(ws);
  return pass;
}

// ---------------------------------------------------------------- targeted checks
static void fill(float *x, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++) x[i] = uniform(seed, 7, i);
}

// The in-place forms backend.h allows give the out-of-place results.
static void test_in_place(void) {
  enum { N = 60, B = 2, C = 3, HW = 10 };
  float a[N], b[N], t[B * C], ref[N], x[N];
  fill(a, N, 1), fill(b, N, 2), fill(t, B * C, 3);
  be->ops->silu_forward(be, a3_act_f32(ref), a3_act_cf32(a), N);
  memcpy(x, a, sizeof x);
  be->ops->silu_forward(be, a3_act_f32(x), a3_act_cf32(x), N);
  CHECK(memcmp(x, ref, sizeof x) == 0);
  be->ops->silu_backward(be, a3_act_f32(ref), a3_act_cf32(b), a3_act_cf32(a), N);
  memcpy(x, b, sizeof x);
  be->ops->silu_backward(be, a3_act_f32(x), a3_act_cf32(x), a3_act_cf32(a), N);
  CHECK(memcmp(x, ref, sizeof x) == 0);
  be->ops->add_forward(be, a3_act_f32(ref), a3_act_cf32(a), a3_act_cf32(b), 0.5f, N);
  memcpy(x, a, sizeof x);
  be->ops->add_forward(be, a3_act_f32(x), a3_act_cf32(x), a3_act_cf32(b), 0.5f, N);
  CHECK(memcmp(x, ref, sizeof x) == 0);
  float da[N];
  be->ops->add_backward(be, a3_act_f32(da), a3_act_f32(ref), a3_act_cf32(b), 0.5f, N);
  memcpy(x, b, sizeof x);
  be->ops->add_backward(be, a3_act_f32(x), a3_act_f32(da), a3_act_cf32(x), 0.5f,
                        N); // da = db = dout * scale with da == dout
  CHECK(memcmp(x, ref, sizeof x) == 0 && memcmp(da, ref, sizeof da) == 0);
  be->ops->add_channel_forward(be, a3_act_f32(ref), a3_act_cf32(a), a3_act_cf32(t), B, C, HW);
  memcpy(x, a, sizeof x);
  be->ops->add_channel_forward(be, a3_act_f32(x), a3_act_cf32(x), a3_act_cf32(t), B, C, HW);
  CHECK(memcmp(x, ref, sizeof x) == 0);
}

// Inference: attention without saved probabilities gives the same output.
static void test_attention_no_probs(void) {
  enum { B = 2, T = 9, C = 6, NH = 3 };
  float q[B * T * C], k[B * T * C], v[B * T * C], o1[B * T * C], o2[B * T * C];
  float probs[B * NH * T * T];
  fill(q, B * T * C, 4), fill(k, B * T * C, 5), fill(v, B * T * C, 6);
  size_t ws_bytes = be->ops->attention_workspace_size(be, B, T, C, NH);
  void *ws = xmalloc(ws_bytes);
  be->ops->attention_forward(be, a3_act_f32(o1), probs, a3_act_cf32(q), a3_act_cf32(k),
                             a3_act_cf32(v), B, T, C, NH, ws);
  be->ops->attention_forward(be, a3_act_f32(o2), NULL, a3_act_cf32(q), a3_act_cf32(k),
                             a3_act_cf32(v), B, T, C, NH, ws);
  CHECK(memcmp(o1, o2, sizeof o1) == 0);
  free(ws);
}

// Two backward calls into the same parameter gradients give twice one call
// (gradient accumulation), for conv, linear and GroupNorm.
static void test_accumulation(void) {
  const a3_conv2d_shape s = {2, 3, 6, 5, 4, 3, 3, 2, 0, 1, 0, 1};
  const int OH = a3_conv2d_out_h(&s), OW = a3_conv2d_out_w(&s);
  enum { NX = 2 * 3 * 6 * 5, NW = 4 * 3 * 9 };
  float x[NX], w[NW], dout[2 * 4 * 3 * 2], dw1[NW] = {0}, dw2[NW] = {0}, db1[4] = {0}, db2[4] = {0};
  CHECK(OH == 3 && OW == 2);
  fill(x, NX, 8), fill(w, NW, 9), fill(dout, (size_t)2 * 4 * OH * OW, 10);
  void *ws = xmalloc(be->ops->conv2d_workspace_size(be, &s));
  be->ops->conv2d_backward(be, &s, NULL, dw1, db1, a3_act_cf32(dout), a3_act_cf32(x), w, ws);
  be->ops->conv2d_backward(be, &s, NULL, dw2, db2, a3_act_cf32(dout), a3_act_cf32(x), w, ws);
  be->ops->conv2d_backward(be, &s, NULL, dw2, db2, a3_act_cf32(dout), a3_act_cf32(x), w, ws);
  int ok = 1;
  for (int i = 0; i < NW; i++) ok &= fabsf(dw2[i] - 2 * dw1[i]) <= 1e-5f * (1 + fabsf(dw1[i]));
  for (int i = 0; i < 4; i++) ok &= fabsf(db2[i] - 2 * db1[i]) <= 1e-5f * (1 + fabsf(db1[i]));
  CHECK_MSG(ok, "conv2d parameter gradients do not accumulate");
  free(ws);
  CHECK(a3_conv2d_check(&s) == A3_OK);
  a3_conv2d_shape bad = s;
  bad.pad_left = -1;
  CHECK(a3_conv2d_check(&bad) == A3_ERR_INTERNAL);
  a3_error_clear();
}

// Threaded ops give bitwise the same results on 1 thread as on several
// (the FD rows are too small to run threaded), and the fused GroupNorm+SiLU
// matches GroupNorm then SiLU at a size that runs threaded.
static void test_threads(void) {
  enum { B = 4, C = 32, HW = 1024, G = 8, N = B * C * HW };
  float *x = xmalloc(sizeof(float) * N), *dy = xmalloc(sizeof(float) * N);
  float *y[2], *dx[2], *dw[2], *db[2], *st[2], w[C], bias[C];
  fill(x, N, 11), fill(dy, N, 12), fill(w, C, 13), fill(bias, C, 14);
  for (int c = 0; c < C; c++) w[c] = 1.0f + 2.0f * w[c], bias[c] *= 3.0f;
  const int threads = omp_get_max_threads() > 1 ? omp_get_max_threads() : 2;
  for (int t = 0; t < 2; t++) {
    y[t] = xmalloc(sizeof(float) * N), dx[t] = xmalloc(sizeof(float) * N);
    dw[t] = calloc(C, sizeof(float)), db[t] = calloc(C, sizeof(float));
    st[t] = xmalloc(sizeof(float) * 2 * B * G);
  }
  const char *what[] = {"groupnorm", "gn_silu", "silu", "add"};
  for (int op = 0; op < 4; op++) {
    for (int t = 0; t < 2; t++) {
      omp_set_num_threads(t ? threads : 1);
      memset(dw[t], 0, sizeof(float) * C), memset(db[t], 0, sizeof(float) * C);
      if (op == 0) {
        be->ops->groupnorm_forward(be, a3_act_f32(y[t]), st[t], st[t] + B * G, a3_act_cf32(x), w,
                                   bias, B, C, HW, G, 1e-5f);
        be->ops->groupnorm_backward(be, a3_act_f32(dx[t]), dw[t], db[t], a3_act_cf32(dy),
                                    a3_act_cf32(x), w, st[t], st[t] + B * G, B, C, HW, G);
      } else if (op == 1) {
        be->ops->groupnorm_silu_forward(be, a3_act_f32(y[t]), st[t], st[t] + B * G, a3_act_cf32(x),
                                        w, bias, B, C, HW, G, 1e-5f);
        be->ops->groupnorm_silu_backward(be, a3_act_f32(dx[t]), dw[t], db[t], a3_act_cf32(dy),
                                         a3_act_cf32(x), w, bias, st[t], st[t] + B * G, B, C, HW,
                                         G);
      } else if (op == 2) {
        be->ops->silu_forward(be, a3_act_f32(y[t]), a3_act_cf32(x), N);
        be->ops->silu_backward(be, a3_act_f32(dx[t]), a3_act_cf32(dy), a3_act_cf32(x), N);
      } else {
        be->ops->add_forward(be, a3_act_f32(y[t]), a3_act_cf32(x), a3_act_cf32(dy), 0.5f, N);
        be->ops->add_backward(be, a3_act_f32(dx[t]), NULL, a3_act_cf32(dy), 0.5f, N);
      }
    }
    CHECK_MSG(memcmp(y[0], y[1], sizeof(float) * N) == 0 &&
                  memcmp(dx[0], dx[1], sizeof(float) * N) == 0 &&
                  memcmp(dw[0], dw[1], sizeof(float) * C) == 0 &&
                  memcmp(db[0], db[1], sizeof(float) * C) == 0,
              "%s: 1 thread and %d threads differ", what[op], threads);
  }
  omp_set_num_threads(threads);
  // Fused vs unfused: forward, and dx (via the SiLU backward at the GroupNorm output).
  float *z = xmalloc(sizeof(float) * N), *dz = xmalloc(sizeof(float) * N);
  be->ops->groupnorm_forward(be, a3_act_f32(z), st[0], st[0] + B * G, a3_act_cf32(x), w, bias, B, C,
                             HW, G, 1e-5f);
  be->ops->silu_forward(be, a3_act_f32(y[0]), a3_act_cf32(z), N);
  be->ops->silu_backward(be, a3_act_f32(dz), a3_act_cf32(dy), a3_act_cf32(z), N);
  memset(dw[0], 0, sizeof(float) * C), memset(db[0], 0, sizeof(float) * C);
  be->ops->groupnorm_backward(be, a3_act_f32(dx[0]), dw[0], db[0], a3_act_cf32(dz), a3_act_cf32(x),
                              w, st[0], st[0] + B * G, B, C, HW, G);
  be->ops->groupnorm_silu_forward(be, a3_act_f32(y[1]), st[1], st[1] + B * G, a3_act_cf32(x), w,
                                  bias, B, C, HW, G, 1e-5f);
  memset(dw[1], 0, sizeof(float) * C), memset(db[1], 0, sizeof(float) * C);
  be->ops->groupnorm_silu_backward(be, a3_act_f32(dx[1]), dw[1], db[1], a3_act_cf32(dy),
                                   a3_act_cf32(x), w, bias, st[1], st[1] + B * G, B, C, HW, G);
  double ey = 0, edx = 0, sy = 0, sdx = 0, edw = 0, sdw = 0;
  for (size_t i = 0; i < N; i++) {
    ey = fmax(ey, fabs(y[0][i] - y[1][i])), sy = fmax(sy, fabs(y[0][i]));
    edx = fmax(edx, fabs(dx[0][i] - dx[1][i])), sdx = fmax(sdx, fabs(dx[0][i]));
  }
  for (int c = 0; c < C; c++) {
    edw = fmax(edw, fmax(fabs(dw[0][c] - dw[1][c]), fabs(db[0][c] - db[1][c])));
    sdw = fmax(sdw, fmax(fabs(dw[0][c]), fabs(db[0][c])));
  }
  CHECK_MSG(ey <= 1e-5 * sy && edx <= 1e-4 * sdx && edw <= 1e-4 * sdw,
            "gn_silu fused vs unfused: out %.2e of %.2e, dx %.2e of %.2e, dw/db %.2e of %.2e", ey,
            sy, edx, sdx, edw, sdw);
  for (int t = 0; t < 2; t++) free(y[t]), free(dx[t]), free(dw[t]), free(db[t]), free(st[t]);
  free(x), free(dy), free(z), free(dz);
}

// The memory functions: zeroed allocation, upload/download round trip.
static void test_memory(void) {
  float host[5] = {1, 2, 3, 4, 5}, back[5] = {0};
  float *dev = NULL;
  CHECK(be->ops->alloc(be, (void **)&dev, sizeof host) == A3_OK && dev);
  if (!dev) return;
  int zeroed = 1;
  for (int i = 0; i < 5; i++) zeroed &= dev[i] == 0.0f; // CPU memory is host memory
  CHECK(zeroed);
  CHECK(be->ops->upload(be, dev, host, sizeof host) == A3_OK);
  be->ops->accumulate(be, a3_act_f32(dev), a3_act_cf32(dev), 5);
  CHECK(be->ops->download(be, back, dev, sizeof back) == A3_OK);
  CHECK(back[0] == 2 && back[4] == 10);
  be->ops->zero(be, dev, 5);
  CHECK(dev[2] == 0.0f);
  CHECK(be->ops->synchronize(be) == A3_OK);
  be->ops->release(be, dev);
  be->ops->release(be, NULL);
}

// The CPU stores activations in fp32: act_zero zeroes, and the conversions
// are exact copies (signed zeros, subnormals and NaN payloads included), in
// place as well.
static void test_act_convert(void) {
  enum { N = 1000 };
  CHECK(be->act_bytes == sizeof(float));
  float *src = xmalloc(N * sizeof(float)), *act = xmalloc(N * sizeof(float));
  float *back = xmalloc(N * sizeof(float));
  fill(src, N, 77);
  const uint32_t specials[4] = {0x80000000u, 0x00000001u, 0x7fc01234u, 0xff800000u};
  memcpy(src, specials, sizeof specials);
  be->ops->act_from_f32(be, a3_act_f32(act), src, N);
  CHECK_MSG(memcmp(act, src, N * sizeof(float)) == 0, "act_from_f32 is not a copy");
  be->ops->act_to_f32(be, back, a3_act_cf32(act), N);
  CHECK_MSG(memcmp(back, src, N * sizeof(float)) == 0, "act_to_f32 is not a copy");
  be->ops->act_zero(be, a3_act_at(be, a3_act_f32(act), 1), N - 2);
  int wrong = memcmp(&act[0], &src[0], sizeof(float)) != 0;
  for (int i = 1; i < N - 1; i++) wrong += memcmp(&act[i], &(float){0.0f}, sizeof(float)) != 0;
  wrong += memcmp(&act[N - 1], &src[N - 1], sizeof(float)) != 0;
  CHECK_MSG(wrong == 0, "act_zero: %d elements wrong", wrong);
  free(src), free(act), free(back);
}

int main(void) {
  be = a3_backend_cpu();
  CHECK(be && be->ops && strcmp(be->name, "cpu") == 0);
  printf("backend %s: %s\n", be->name, a3_backend_cpu_blas_info());
  printf("%-12s %-48s %9s %9s %9s %9s %8s %-6s %s\n", "op", "shape", "fwd abs", "fwd rel",
         "grad abs", "grad rel", "tol", "worst", "result");
  int failed = 0;
  for (int i = 0; i < N_ROWS; i++) failed += !run_row(i);
  CHECK_MSG(failed == 0, "%d of %d rows failed", failed, N_ROWS);
  printf("%d rows, %d failed; tol = worst err / (atol + rtol |ref|), pass <= 1\n", N_ROWS, failed);
  fflush(stdout);
  test_in_place();
  test_attention_no_probs();
  test_accumulation();
  test_memory();
  test_act_convert();
  test_threads();
  return TEST_DONE("test_ops");
}
