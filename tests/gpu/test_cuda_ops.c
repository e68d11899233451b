// The CUDA backend against the CPU reference, op by op, table driven (in the
// spirit of ggml's test-backend-ops): every row runs one op (forward, or
// forward + backward) on fresh random inputs on the CPU backend and on the
// candidate backend (inputs uploaded, outputs downloaded) and compares every
// output with the relative error ||cand - ref|| / ||ref|| (in double; the
// absolute norm where ref is exactly zero).
//
// The contracts of backend.h are part of the check:
// - outputs and activation gradients are OVERWRITTEN: they are prefilled with
//   NaN (on both sides), so an element an op forgets to write is a NaN, and
//   any NaN/Inf in an output fails the row;
// - parameter gradients ACCUMULATE: they are prefilled with the same random
//   values on both sides, so an op that overwrites instead of adding fails;
// - any gradient pointer may be NULL: rows marked "null:..." pass NULL for
//   those gradients (the op must skip them and still give the others);
// - in-place forms the header allows (out == inp, dinp == dout) have rows;
// - activations (a3_act) are in each backend's storage (act_bytes 2 on a
//   bf16 CUDA backend): they go in through act_from_f32 and come out through
//   act_to_f32, widened to fp32 for the comparison. In bf16 storage every
//   activation input is rounded to bf16 on the host first and both backends
//   get the rounded values, so the CPU reference sees exactly what the device
//   holds, and a difference is the device's own rounding only.
//
// Tolerances (relative L2 error of each output tensor):
// - 1e-5 for every op in FP32. The candidate computes the same fp32 math in
//   another summation order (the CPU sums reductions in double); sums of up
//   to a few thousand fp32 products or a normalisation stay ~1e-6 below it.
// - TF32 (--precision tf32): 5e-3 for the matrix ops (conv2d, linear,
//   attention), whose operands are rounded to 10-bit mantissas (2^-11
//   relative, ~5e-4 on a product; the attention backward chains three such
//   products): a 10x margin, while a wrong index or a missing term gives
//   errors of order 1e-1..1. Every other op is fp32 in every mode: 1e-5.
// - BF16 (--precision bf16): 3e-2 for every output of the matrix ops, whose
//   operands are rounded to 8-bit significands (up to 2^-8 relative, 8x
//   TF32's: ~4e-3 on a product, ~1e-2 through the attention backward's three
//   products). Their activation operands are bf16 already (exact), which
//   leaves the weights' and intermediates' rounding, and the stored outputs
//   add at most 2^-8 (below): under 1.5e-2, still a 2x margin. A wrong
//   index gives O(1e-1..1); a term missing from an N-term sum only ~1/sqrt(N)
//   (2.2e-2 for a 2048-term dweight row), which this bound may not see: the
//   fp32 and tf32 runs, with their tight bounds, catch those. Their parameter
//   gradients (fp32, +=) multiply two bf16 activations (exact products in
//   fp32, accumulated in fp32; cuDNN's filter gradient is rounded to bf16
//   before it is added) and keep the bound. Four more rows (bf16_operands)
//   check that the products really round their weights to bf16 and round
//   their stores to nearest, which this bound alone would not notice.
// - BF16 storage, every other op: its fp32 bound plus 2^-8 for each stored
//   activation. The op computes in fp32 from the same inputs as the CPU (so
//   within the fp32 bound of it) and rounds once to bf16's 8 significant
//   bits, to nearest: at most half an ulp, 2^-8 of the value (0.0039),
//   element by element, so also in relative L2 (~1.5e-3 expected). fp32
//   outputs of these ops (GroupNorm mean/rstd, parameter gradients, gate
//   gradients, losses, sampler, noise) see the same bf16 inputs on both sides
//   and keep their fp32 bounds. A wrong index or a missing term still gives
//   O(1e-1..1).
//   That bound holds for any rounding that errs by under an ulp (truncation
//   gives ~3e-3), so these stored activations also compare with the
//   reference rounded to bf16 on the host: 1e-3. Rounded once to nearest,
//   they differ from it only where the two fp32 results straddle a rounding
//   midpoint, by one ulp (2^-7 relative at most); with fp32 results a
//   relative e apart that is a fraction ~e / 2^-7 of the elements, a
//   relative L2 of ~sqrt(e * 2^-7): 3e-4 at the fp32 bound e = 1e-5, ~6e-5
//   at the ~5e-7 these ops show. A store that truncates gives ~3e-3.
// - timestep_embedding: 5e-4 in every mode (plus 2^-8 in bf16 storage, as
//   above). The op rounds the frequency exp(e) and t * frequency to fp32 as
//   PyTorch does; CUDA's expf may differ from glibc's by 1-2 ulp, which at
//   t = 999 moves sin/cos arguments by up to ~1.2e-4 in the highest-frequency
//   columns (a rel. L2 of ~2e-5 overall). A swapped sin/cos or a wrong
//   frequency gives O(1).
// - sampler_step: 0, bit for bit, in every mode. The CUDA kernel rounds each
//   multiply, add and divide on its own (__fmul_rn, __fadd_rn, __fdiv_rn), as
//   the CPU's loop does, so its output must equal the CPU's exactly (a GPU
//   sampling run then differs from the CPU's only through the model).
// - training_noise: timesteps (tf) exact in every mode (tensors marked
//   exact compare at tolerance 0 whatever the row's); noise and x_t 1e-6:
//   the kernels run the host's formulas (a3fta/backend_noise.h), but CUDA's
//   double log/sin/cos may round a Box-Muller value differently in the last
//   double bits, which after the rounding to fp32 is one float ulp (6e-8
//   relative) on rare elements. A wrong counter or stream gives O(1).
//
// Outside the table, in every precision: the candidate's act_bytes (2 in
// bf16 on CUDA, else 4); act_from_f32 then act_to_f32 bit for bit against
// the host's rounding (bf16 storage) or the values themselves (fp32 storage)
// on a table of hard cases and random bit patterns; act_zero.
//
// Usage: test_cuda_ops [--precision fp32|tf32|bf16] [--against cpu] [--seed N]
// --against cpu: the CPU backend is the candidate too (no GPU needed), so the
// harness runs everywhere (ASan included); it then also checks that a
// deliberately broken candidate (a perturbed output, a parameter gradient
// overwritten instead of accumulated, an element left unwritten, a
// conversion that changes a value, an act_zero short of its range) is
// reported as failing, so the comparers can fail.
// Exit: 0 all pass, 1 any failure, 77 no usable GPU (SKIPPED, with the CUDA error).
#define _POSIX_C_SOURCE 200809L
#include "a3fta/backend.h"
#include "a3fta/core.h"
#include "a3fta/diffusion.h"
#include "a3fta/optim.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TOL_FP32 1e-5
#define TOL_TF32_MATRIX 5e-3
#define TOL_BF16_MATRIX 3e-2
#define TOL_TEMB 5e-4
#define TOL_NOISE_REL 1e-6
#define TOL_BF16_STORE 0.00390625 // 2^-8: one rounding to bf16, added per stored activation
#define TOL_BF16_ONCE 1e-3        // against the reference rounded to bf16 (see the top)

enum { MAXT = 12 };

// ---------------------------------------------------------------- rows
// Tensor roles: what the driver puts in before the op and what it compares after.
typedef enum {
  R_IN,     // random input (same on both sides), not compared
  R_TSTEP,  // timesteps: integers in [0, 999] (0 and 999 included), not compared
  R_LABELS, // int32 labels in [0, k), not compared
  R_OUT,    // forward output or saved tensor: overwritten (NaN prefill), compared
  R_AGRAD,  // activation gradient: overwritten (NaN prefill), compared
  R_PGRAD,  // parameter gradient: += (random prefill, same both sides), compared
  R_INOUT,  // in place: random data (same both sides), overwritten, compared
} role;

typedef struct {
  const char *name;
  size_t n; // elements; 0 = absent (passed as NULL)
  role r;
  float scale, offset; // R_IN: offset + scale * U(-1, 1)
  int k;               // R_LABELS: classes
  int exact;           // compared at tolerance 0 whatever the row's
  int act;             // an activation (a3_act): in the backend's storage type
} tdesc;

typedef struct {
  int nt;
  tdesc t[MAXT];
} tlist;

typedef enum { TOL_EXACT, TOL_MATRIX, TOL_EMB, TOL_BITWISE, TOL_NOISE } tol_class;

typedef struct {
  a3_conv2d_shape cs;
  int bias;                // conv, linear: with a bias
  int B, C, HW, G;         // groupnorm (and tokens, add_channel, concat C1 = C)
  float eps;               //
  int N, IN, OUT;          // linear; softmax_xent (N, K = OUT)
  int T, NH;               // attention (B, T, C, NH)
  int H, W;                // upsample
  int C2;                  // concat
  size_t n;                // elementwise
  float scale;             // add scale, mse dloss, xent scale
  int dim, flip;           // timestep embedding (N rows)
  float shift, max_period; //
  int sampler, t, t_prev;  // sampler_step (linear schedule, 1000 steps)
  float eta;               //
  uint64_t seed, step, s0; // training_noise (B samples of n floats, T timesteps)
} params;

typedef struct tcase tcase;
typedef enum { M_SETUP, M_WS, M_RUN } mode;
typedef struct {
  mode m;
  const tcase *c;
  tlist *l;             // M_SETUP: fill
  const a3_backend *be; // M_WS, M_RUN
  size_t ws_bytes;      // M_WS: set
  void *const *t;       // M_RUN: tensors in the setup's order (NULL where absent)
  void *ws;             // M_RUN
} opx;

struct tcase {
  const char *op;
  tol_class tol;
  void (*fn)(opx *x);
  const char *nulls; // comma-separated tensor names passed as NULL, or NULL
  params p;
};

// T, Tin: an fp32 tensor (float); A, Ain: an activation (a3_act).
static void T(opx *x, const char *name, size_t n, role r) {
  tdesc *d = &x->l->t[x->l->nt++];
  *d = (tdesc){.name = name, .n = n, .r = r, .scale = 1.0f};
}
static void Tin(opx *x, const char *name, size_t n, float scale, float offset) {
  tdesc *d = &x->l->t[x->l->nt++];
  *d = (tdesc){.name = name, .n = n, .r = R_IN, .scale = scale, .offset = offset};
}
static void A(opx *x, const char *name, size_t n, role r) {
  T(x, name, n, r);
  x->l->t[x->l->nt - 1].act = 1;
}
static void Ain(opx *x, const char *name, size_t n, float scale, float offset) {
  Tin(x, name, n, scale, offset);
  x->l->t[x->l->nt - 1].act = 1;
}

#define OPS (x->be->ops)
#define BE (x->be)
#define P (&x->c->p)
#define t_ (x->t)

// ---------------------------------------------------------------- elementwise helpers
static void op_zero(opx *x) {
  if (x->m == M_SETUP) {
    T(x, "x", P->n, R_INOUT);
    return;
  }
  if (x->m == M_RUN) OPS->zero(BE, t_[0], P->n);
}
static void op_act_zero(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "x", P->n, R_INOUT);
    return;
  }
  if (x->m == M_RUN) OPS->act_zero(BE, t_[0], P->n);
}
static void op_accumulate(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "dst", P->n, R_INOUT);
    A(x, "src", P->n, R_IN);
    return;
  }
  if (x->m == M_RUN) OPS->accumulate(BE, t_[0], t_[1], P->n);
}

// ---------------------------------------------------------------- conv2d
static size_t conv_out_n(const a3_conv2d_shape *s) {
  return (size_t)s->B * s->OC * a3_conv2d_out_h(s) * a3_conv2d_out_w(s);
}
static void op_conv_fwd(opx *x) {
  const a3_conv2d_shape *s = &P->cs;
  if (x->m == M_SETUP) {
    A(x, "inp", (size_t)s->B * s->C * s->H * s->W, R_IN);
    T(x, "weight", (size_t)s->OC * s->C * s->KH * s->KW, R_IN);
    T(x, "bias", P->bias ? (size_t)s->OC : 0, R_IN);
    A(x, "out", conv_out_n(s), R_OUT);
  } else if (x->m == M_WS) {
    x->ws_bytes = OPS->conv2d_workspace_size(BE, s);
  } else {
    OPS->conv2d_forward(BE, s, t_[3], t_[0], t_[1], t_[2], x->ws);
  }
}
static void op_conv_bwd(opx *x) {
  const a3_conv2d_shape *s = &P->cs;
  if (x->m == M_SETUP) {
    A(x, "inp", (size_t)s->B * s->C * s->H * s->W, R_IN);
    T(x, "weight", (size_t)s->OC * s->C * s->KH * s->KW, R_IN);
    A(x, "dout", conv_out_n(s), R_IN);
    A(x, "dinp", (size_t)s->B * s->C * s->H * s->W, R_AGRAD);
    T(x, "dweight", (size_t)s->OC * s->C * s->KH * s->KW, R_PGRAD);
    T(x, "dbias", P->bias ? (size_t)s->OC : 0, R_PGRAD);
  } else if (x->m == M_WS) {
    x->ws_bytes = OPS->conv2d_workspace_size(BE, s);
  } else {
    OPS->conv2d_backward(BE, s, t_[3], t_[4], t_[5], t_[2], t_[0], t_[1], x->ws);
  }
}

// ---------------------------------------------------------------- GroupNorm (+ SiLU)
static void gn_tensors(opx *x) {
  const size_t n = (size_t)P->B * P->C * P->HW, c = (size_t)P->C, bg = (size_t)P->B * P->G;
  Ain(x, "inp", n, 1.0f, 0.5f); // activations with a non-zero mean
  Tin(x, "weight", c, 0.5f, 1.0f);
  Tin(x, "bias", c, 0.2f, 0.0f);
  A(x, "out", n, R_OUT);
  T(x, "mean", bg, R_OUT);
  T(x, "rstd", bg, R_OUT);
}
static void gn_fwd_run(opx *x, int fused) {
  void (*f)(const a3_backend *, a3_act *, float *, float *, const a3_act *, const float *,
            const float *, int, int, int, int, float) =
      fused ? OPS->groupnorm_silu_forward : OPS->groupnorm_forward;
  f(BE, t_[3], t_[4], t_[5], t_[0], t_[1], t_[2], P->B, P->C, P->HW, P->G, P->eps);
}
static void op_gn_fwd(opx *x) {
  if (x->m == M_SETUP) {
    gn_tensors(x);
    return;
  }
  if (x->m == M_RUN) gn_fwd_run(x, 0);
}
static void op_gns_fwd(opx *x) {
  if (x->m == M_SETUP) {
    gn_tensors(x);
    return;
  }
  if (x->m == M_RUN) gn_fwd_run(x, 1);
}
static void gn_bwd_tensors(opx *x) {
  const size_t n = (size_t)P->B * P->C * P->HW, c = (size_t)P->C;
  gn_tensors(x);
  A(x, "dout", n, R_IN);
  A(x, "dinp", n, R_AGRAD);
  T(x, "dweight", c, R_PGRAD);
  T(x, "dbias", c, R_PGRAD);
}
static void op_gn_bwd(opx *x) {
  if (x->m == M_SETUP) {
    gn_bwd_tensors(x);
    return;
  }
  if (x->m != M_RUN) return;
  gn_fwd_run(x, 0);
  OPS->groupnorm_backward(BE, t_[7], t_[8], t_[9], t_[6], t_[0], t_[1], t_[4], t_[5], P->B, P->C,
                          P->HW, P->G);
}
static void op_gns_bwd(opx *x) {
  if (x->m == M_SETUP) {
    gn_bwd_tensors(x);
    return;
  }
  if (x->m != M_RUN) return;
  gn_fwd_run(x, 1);
  OPS->groupnorm_silu_backward(BE, t_[7], t_[8], t_[9], t_[6], t_[0], t_[1], t_[2], t_[4], t_[5],
                               P->B, P->C, P->HW, P->G);
}

// ---------------------------------------------------------------- activations (n elements)
typedef void (*act_fwd_fn)(const a3_backend *, a3_act *, const a3_act *, size_t);
typedef void (*act_bwd_fn)(const a3_backend *, a3_act *, const a3_act *, const a3_act *, size_t);
static act_fwd_fn act_fwd(const a3_backend *be, const char *op) {
  if (!strncmp(op, "silu", 4)) return be->ops->silu_forward;
  if (!strncmp(op, "gelu", 4)) return be->ops->gelu_forward;
  return be->ops->relu_forward;
}
static act_bwd_fn act_bwd(const a3_backend *be, const char *op) {
  if (!strncmp(op, "silu", 4)) return be->ops->silu_backward;
  if (!strncmp(op, "gelu", 4)) return be->ops->gelu_backward;
  return be->ops->relu_backward;
}
static void op_act_fwd(opx *x) {
  if (x->m == M_SETUP) {
    Ain(x, "inp", P->n, 4.0f, 0.0f); // both tails of the curve
    A(x, "out", P->n, R_OUT);
    return;
  }
  if (x->m == M_RUN) act_fwd(BE, x->c->op)(BE, t_[1], t_[0], P->n);
}
static void op_act_fwd_inplace(opx *x) { // out == inp
  if (x->m == M_SETUP) {
    A(x, "x", P->n, R_INOUT);
    return;
  }
  if (x->m == M_RUN) act_fwd(BE, x->c->op)(BE, t_[0], t_[0], P->n);
}
static void op_act_bwd(opx *x) {
  if (x->m == M_SETUP) {
    Ain(x, "inp", P->n, 4.0f, 0.0f);
    A(x, "dout", P->n, R_IN);
    A(x, "dinp", P->n, R_AGRAD);
    return;
  }
  if (x->m == M_RUN) act_bwd(BE, x->c->op)(BE, t_[2], t_[1], t_[0], P->n);
}
static void op_act_bwd_inplace(opx *x) { // dinp == dout
  if (x->m == M_SETUP) {
    Ain(x, "inp", P->n, 4.0f, 0.0f);
    A(x, "dout=dinp", P->n, R_INOUT);
    return;
  }
  if (x->m == M_RUN) act_bwd(BE, x->c->op)(BE, t_[1], t_[1], t_[0], P->n);
}

// ---------------------------------------------------------------- linear
static void op_linear_fwd(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "inp", (size_t)P->N * P->IN, R_IN);
    T(x, "weight", (size_t)P->OUT * P->IN, R_IN);
    T(x, "bias", P->bias ? (size_t)P->OUT : 0, R_IN);
    A(x, "out", (size_t)P->N * P->OUT, R_OUT);
    return;
  }
  if (x->m == M_RUN) OPS->linear_forward(BE, t_[3], t_[0], t_[1], t_[2], P->N, P->IN, P->OUT);
}
static void op_linear_bwd(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "inp", (size_t)P->N * P->IN, R_IN);
    T(x, "weight", (size_t)P->OUT * P->IN, R_IN);
    A(x, "dout", (size_t)P->N * P->OUT, R_IN);
    A(x, "dinp", (size_t)P->N * P->IN, R_AGRAD);
    T(x, "dweight", (size_t)P->OUT * P->IN, R_PGRAD);
    T(x, "dbias", P->bias ? (size_t)P->OUT : 0, R_PGRAD);
    return;
  }
  if (x->m == M_RUN)
    OPS->linear_backward(BE, t_[3], t_[4], t_[5], t_[2], t_[0], t_[1], P->N, P->IN, P->OUT);
}

// ---------------------------------------------------------------- attention
static void attn_fwd_tensors(opx *x) {
  const size_t n = (size_t)P->B * P->T * P->C;
  A(x, "q", n, R_IN);
  A(x, "k", n, R_IN);
  A(x, "v", n, R_IN);
  A(x, "out", n, R_OUT);
  T(x, "probs", (size_t)P->B * P->NH * P->T * P->T, R_OUT);
}
static void op_attn_fwd(opx *x) {
  if (x->m == M_SETUP) {
    attn_fwd_tensors(x);
    return;
  }
  if (x->m == M_WS) {
    x->ws_bytes = OPS->attention_workspace_size(BE, P->B, P->T, P->C, P->NH);
    return;
  }
  OPS->attention_forward(BE, t_[3], t_[4], t_[0], t_[1], t_[2], P->B, P->T, P->C, P->NH, x->ws);
}
static void op_attn_bwd(opx *x) {
  const size_t n = (size_t)P->B * P->T * P->C;
  if (x->m == M_SETUP) {
    attn_fwd_tensors(x);
    A(x, "dout", n, R_IN);
    A(x, "dq", n, R_AGRAD);
    A(x, "dk", n, R_AGRAD);
    A(x, "dv", n, R_AGRAD);
    return;
  }
  if (x->m == M_WS) {
    x->ws_bytes = OPS->attention_workspace_size(BE, P->B, P->T, P->C, P->NH);
    return;
  }
  OPS->attention_forward(BE, t_[3], t_[4], t_[0], t_[1], t_[2], P->B, P->T, P->C, P->NH, x->ws);
  OPS->attention_backward(BE, t_[6], t_[7], t_[8], t_[5], t_[0], t_[1], t_[2], t_[4], P->B, P->T,
                          P->C, P->NH, x->ws);
}

// ---------------------------------------------------------------- layout, upsampling, concat
static void op_to_tokens(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "inp", (size_t)P->B * P->C * P->HW, R_IN);
    A(x, "out", (size_t)P->B * P->C * P->HW, R_OUT);
    return;
  }
  if (x->m == M_RUN) OPS->to_tokens(BE, t_[1], t_[0], P->B, P->C, P->HW);
}
static void op_from_tokens(opx *x) {
  if (x->m == M_SETUP) {
    op_to_tokens(x);
    return;
  }
  if (x->m == M_RUN) OPS->from_tokens(BE, t_[1], t_[0], P->B, P->C, P->HW);
}
static void op_up_fwd(opx *x) {
  const size_t n = (size_t)P->B * P->C * P->H * P->W;
  if (x->m == M_SETUP) {
    A(x, "inp", n, R_IN);
    A(x, "out", 4 * n, R_OUT);
    return;
  }
  if (x->m == M_RUN) OPS->upsample2x_forward(BE, t_[1], t_[0], P->B, P->C, P->H, P->W);
}
static void op_up_bwd(opx *x) {
  const size_t n = (size_t)P->B * P->C * P->H * P->W;
  if (x->m == M_SETUP) {
    A(x, "dout", 4 * n, R_IN);
    A(x, "dinp", n, R_AGRAD);
    return;
  }
  if (x->m == M_RUN) OPS->upsample2x_backward(BE, t_[1], t_[0], P->B, P->C, P->H, P->W);
}
static void op_concat_fwd(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "a", (size_t)P->B * P->C * P->HW, R_IN);
    A(x, "b", (size_t)P->B * P->C2 * P->HW, R_IN);
    A(x, "out", (size_t)P->B * (P->C + P->C2) * P->HW, R_OUT);
    return;
  }
  if (x->m == M_RUN) OPS->concat_forward(BE, t_[2], t_[0], t_[1], P->B, P->C, P->C2, P->HW);
}
static void op_concat_bwd(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "dout", (size_t)P->B * (P->C + P->C2) * P->HW, R_IN);
    A(x, "da", (size_t)P->B * P->C * P->HW, R_AGRAD);
    A(x, "db", (size_t)P->B * P->C2 * P->HW, R_AGRAD);
    return;
  }
  if (x->m == M_RUN) OPS->concat_backward(BE, t_[1], t_[2], t_[0], P->B, P->C, P->C2, P->HW);
}

// ---------------------------------------------------------------- residual adds
static void op_add_fwd(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "a", P->n, R_IN);
    A(x, "b", P->n, R_IN);
    A(x, "out", P->n, R_OUT);
    return;
  }
  if (x->m == M_RUN) OPS->add_forward(BE, t_[2], t_[0], t_[1], P->scale, P->n);
}
static void op_add_fwd_inplace(opx *x) { // out == a
  if (x->m == M_SETUP) {
    A(x, "a=out", P->n, R_INOUT);
    A(x, "b", P->n, R_IN);
    return;
  }
  if (x->m == M_RUN) OPS->add_forward(BE, t_[0], t_[0], t_[1], P->scale, P->n);
}
static void op_add_bwd(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "dout", P->n, R_IN);
    A(x, "da", P->n, R_AGRAD);
    A(x, "db", P->n, R_AGRAD);
    return;
  }
  if (x->m == M_RUN) OPS->add_backward(BE, t_[1], t_[2], t_[0], P->scale, P->n);
}
static void op_add_bwd_inplace(opx *x) { // da == dout
  if (x->m == M_SETUP) {
    A(x, "dout=da", P->n, R_INOUT);
    A(x, "db", P->n, R_AGRAD);
    return;
  }
  if (x->m == M_RUN) OPS->add_backward(BE, t_[0], t_[1], t_[0], P->scale, P->n);
}
static void op_addch_fwd(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "inp", (size_t)P->B * P->C * P->HW, R_IN);
    A(x, "t", (size_t)P->B * P->C, R_IN);
    A(x, "out", (size_t)P->B * P->C * P->HW, R_OUT);
    return;
  }
  if (x->m == M_RUN) OPS->add_channel_forward(BE, t_[2], t_[0], t_[1], P->B, P->C, P->HW);
}
static void op_addch_fwd_inplace(opx *x) { // out == inp
  if (x->m == M_SETUP) {
    A(x, "inp=out", (size_t)P->B * P->C * P->HW, R_INOUT);
    A(x, "t", (size_t)P->B * P->C, R_IN);
    return;
  }
  if (x->m == M_RUN) OPS->add_channel_forward(BE, t_[0], t_[0], t_[1], P->B, P->C, P->HW);
}
static void op_addch_bwd(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "dout", (size_t)P->B * P->C * P->HW, R_IN);
    A(x, "dt", (size_t)P->B * P->C, R_AGRAD);
    return;
  }
  if (x->m == M_RUN) OPS->add_channel_backward(BE, t_[1], t_[0], P->B, P->C, P->HW);
}
static void op_gated_fwd(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "a", P->n, R_IN);
    A(x, "b", P->n, R_IN);
    T(x, "gate", 1, R_IN);
    A(x, "out", P->n, R_OUT);
    return;
  }
  if (x->m == M_RUN) OPS->gated_add_forward(BE, t_[3], t_[0], t_[1], t_[2], P->n);
}
static void op_gated_fwd_inplace(opx *x) { // out == a
  if (x->m == M_SETUP) {
    A(x, "a=out", P->n, R_INOUT);
    A(x, "b", P->n, R_IN);
    T(x, "gate", 1, R_IN);
    return;
  }
  if (x->m == M_RUN) OPS->gated_add_forward(BE, t_[0], t_[0], t_[1], t_[2], P->n);
}
static void op_gated_bwd(opx *x) {
  if (x->m == M_SETUP) {
    A(x, "dout", P->n, R_IN);
    A(x, "b", P->n, R_IN);
    T(x, "gate", 1, R_IN);
    A(x, "db", P->n, R_AGRAD);
    T(x, "dgate", 1, R_PGRAD);
    return;
  }
  if (x->m == M_RUN) OPS->gated_add_backward(BE, t_[3], t_[4], t_[0], t_[1], t_[2], P->n);
}

// ---------------------------------------------------------------- embedding, losses
static void op_temb(opx *x) {
  if (x->m == M_SETUP) {
    T(x, "t", (size_t)P->N, R_TSTEP);
    A(x, "out", (size_t)P->N * P->dim, R_OUT);
    return;
  }
  if (x->m == M_RUN)
    OPS->timestep_embedding(BE, t_[1], t_[0], P->N, P->dim, P->flip, P->shift, P->max_period);
}
static void op_mse_fwd(opx *x) {
  if (x->m == M_SETUP) {
    T(x, "pred", P->n, R_IN);
    T(x, "target", P->n, R_IN);
    T(x, "loss", 1, R_OUT);
    return;
  }
  if (x->m == M_RUN) OPS->mse_forward(BE, t_[2], t_[0], t_[1], P->n);
}
static void op_mse_bwd(opx *x) {
  if (x->m == M_SETUP) {
    T(x, "pred", P->n, R_IN);
    T(x, "target", P->n, R_IN);
    T(x, "dpred", P->n, R_AGRAD);
    return;
  }
  if (x->m == M_RUN) OPS->mse_backward(BE, t_[2], t_[0], t_[1], P->n, P->scale);
}
static void xent_tensors(opx *x) {
  const size_t nk = (size_t)P->N * P->OUT;
  Tin(x, "logits", nk, 4.0f, 0.0f);
  x->l->t[x->l->nt] = (tdesc){.name = "labels", .n = (size_t)P->N, .r = R_LABELS, .k = P->OUT};
  x->l->nt++;
  T(x, "loss", 1, R_OUT);
  T(x, "probs", nk, R_OUT);
}
static void op_xent_fwd(opx *x) {
  if (x->m == M_SETUP) {
    xent_tensors(x);
    return;
  }
  if (x->m == M_RUN)
    OPS->softmax_xent_forward(BE, t_[2], t_[3], t_[0], (const int32_t *)t_[1], P->N, P->OUT,
                              P->scale);
}
static void op_xent_bwd(opx *x) {
  if (x->m == M_SETUP) {
    xent_tensors(x);
    T(x, "dlogits", (size_t)P->N * P->OUT, R_AGRAD);
    return;
  }
  if (x->m != M_RUN) return;
  OPS->softmax_xent_forward(BE, t_[2], t_[3], t_[0], (const int32_t *)t_[1], P->N, P->OUT,
                            P->scale);
  OPS->softmax_xent_backward(BE, t_[4], t_[3], (const int32_t *)t_[1], P->N, P->OUT, P->scale);
}

// ---------------------------------------------------------------- sampler step
static int sampler_noisy(const params *p) {
  return p->sampler == A3_SAMPLER_DDPM ? p->t > 0 : p->eta > 0.0f;
}
static void sampler_run(opx *x, float *x_prev, const float *eps, const float *x_t,
                        const float *noise) {
  static a3_noise_schedule_table sched; // linear, T = 1000 (kept for the process)
  a3_sampler_scalars sc;
  if (!sched.T && a3_schedule_init(&sched, A3_NOISE_LINEAR, 1000, A3_BETA_START, A3_BETA_END))
    return; // x_prev keeps its NaNs: the row fails
  if (a3_sampler_prepare((a3_sampler)P->sampler, &sched, P->t, P->t_prev, P->eta, &sc)) return;
  OPS->sampler_step(BE, x_prev, eps, x_t, noise, P->n, &sc);
}
static void op_sampler(opx *x) {
  if (x->m == M_SETUP) {
    Tin(x, "eps", P->n, 1.5f, 0.0f);
    Tin(x, "x_t", P->n, 2.0f, 0.0f); // beyond [-1, 1]: the x0 clipping acts
    T(x, "noise", sampler_noisy(P) ? P->n : 0, R_IN);
    T(x, "x_prev", P->n, R_OUT);
    return;
  }
  if (x->m == M_RUN) sampler_run(x, t_[3], t_[0], t_[1], t_[2]);
}
static void op_sampler_inplace(opx *x) {
  if (x->m == M_SETUP) {
    Tin(x, "eps", P->n, 1.5f, 0.0f);
    T(x, "noise", sampler_noisy(P) ? P->n : 0, R_IN);
    T(x, "x", P->n, R_INOUT);
    return;
  }
  if (x->m == M_RUN) sampler_run(x, t_[2], t_[0], t_[2], t_[1]);
}

// ---------------------------------------------------------------- training noise
// Tensors: x0 (B, n), acp (T) in [0, 1), then the outputs x_t, noise (B, n)
// and tf (B, exact); the in-place form passes x0 as x_t.
static void noise_tensors(opx *x, int inplace) {
  const size_t n = (size_t)P->B * P->n;
  if (inplace)
    T(x, "x0=x_t", n, R_INOUT);
  else
    T(x, "x0", n, R_IN);
  Tin(x, "acp", (size_t)P->T, 0.5f, 0.5f);
  if (!inplace) T(x, "x_t", n, R_OUT);
  T(x, "noise", n, R_OUT);
  T(x, "tf", (size_t)P->B, R_OUT);
  x->l->t[x->l->nt - 1].exact = 1;
}
static void noise_run(opx *x, float *x_t, float *noise, float *tf, const float *x0,
                      const float *acp) {
  OPS->training_noise(BE, x_t, noise, tf, x0, acp, P->seed, P->step, P->s0, P->B, (int)P->n, P->T);
}
static void op_noise(opx *x) {
  if (x->m == M_SETUP) noise_tensors(x, 0);
  if (x->m == M_RUN) noise_run(x, t_[2], t_[3], t_[4], t_[0], t_[1]);
}
static void op_noise_inplace(opx *x) {
  if (x->m == M_SETUP) noise_tensors(x, 1);
  if (x->m == M_RUN) noise_run(x, t_[0], t_[2], t_[3], t_[0], t_[1]);
}

// ---------------------------------------------------------------- the table
#define CONV(name, fn, nulls, B, C, H, W, OC, K, S, pt, pb, pl, pr, b)                             \
  {                                                                                                \
    name, TOL_MATRIX, fn, nulls, { .cs = {B, C, H, W, OC, K, K, S, pt, pb, pl, pr}, .bias = b }    \
  }
#define GN(name, fn, nulls, B_, C_, HW_, G_, eps_)                                                 \
  {                                                                                                \
    name, TOL_EXACT, fn, nulls, { .B = B_, .C = C_, .HW = HW_, .G = G_, .eps = eps_ }              \
  }
#define EW(name, fn, nulls, n_, scale_)                                                            \
  {                                                                                                \
    name, TOL_EXACT, fn, nulls, { .n = n_, .scale = scale_ }                                       \
  }
#define LIN(name, fn, nulls, N_, IN_, OUT_, b)                                                     \
  {                                                                                                \
    name, TOL_MATRIX, fn, nulls, { .N = N_, .IN = IN_, .OUT = OUT_, .bias = b }                    \
  }
#define ATTN(name, fn, nulls, B_, T_, C_, NH_)                                                     \
  {                                                                                                \
    name, TOL_MATRIX, fn, nulls, { .B = B_, .T = T_, .C = C_, .NH = NH_ }                          \
  }
#define IMG(name, fn, nulls, B_, C_, HW_, H_, W_, C2_)                                             \
  {                                                                                                \
    name, TOL_EXACT, fn, nulls, { .B = B_, .C = C_, .HW = HW_, .H = H_, .W = W_, .C2 = C2_ }       \
  }
#define TEMB(N_, dim_, flip_, shift_)                                                              \
  {                                                                                                \
    "timestep_embedding", TOL_EMB, op_temb, NULL, {                                                \
      .N = N_, .dim = dim_, .flip = flip_, .shift = shift_, .max_period = 10000.0f                 \
    }                                                                                              \
  }
#define SAMPLER(name, fn, sampler_, t_, t_prev_, eta_)                                             \
  {                                                                                                \
    name, TOL_BITWISE, fn, NULL, {                                                                 \
      .n = NBIG, .sampler = sampler_, .t = t_, .t_prev = t_prev_, .eta = eta_                      \
    }                                                                                              \
  }
#define XENT(name, fn, N_, K_, scale_)                                                             \
  {                                                                                                \
    name, TOL_EXACT, fn, NULL, { .N = N_, .OUT = K_, .scale = scale_ }                             \
  }

#define NOISE(name, fn, seed_, step_, s0_, B_, n_, T_)                                             \
  {                                                                                                \
    name, TOL_NOISE, fn, NULL, {                                                                   \
      .B = B_, .n = n_, .T = T_, .seed = seed_, .step = step_, .s0 = s0_                           \
    }                                                                                              \
  }

enum { NBIG = 100003 }; // not a multiple of any block size

static const tcase cases[] = {
    EW("zero", op_zero, NULL, NBIG, 0),
    EW("act_zero", op_act_zero, NULL, NBIG, 0),
    EW("accumulate", op_accumulate, NULL, NBIG, 0),
    // conv2d: 1x1, 3x3 pad 1, stride 2 with pad (0,1,0,1) (downsample_padding 0) and pad 1,
    // conv_in / conv_out (1 channel), odd sizes; with and without bias.
    CONV("conv2d_fwd", op_conv_fwd, NULL, 2, 64, 16, 16, 32, 1, 1, 0, 0, 0, 0, 1),
    CONV("conv2d_fwd", op_conv_fwd, NULL, 3, 48, 7, 9, 24, 1, 1, 0, 0, 0, 0, 0),
    CONV("conv2d_fwd", op_conv_fwd, NULL, 2, 32, 16, 16, 64, 3, 1, 1, 1, 1, 1, 1),
    CONV("conv2d_fwd", op_conv_fwd, NULL, 3, 5, 13, 11, 7, 3, 1, 1, 1, 1, 1, 0),
    CONV("conv2d_fwd", op_conv_fwd, NULL, 2, 32, 16, 16, 32, 3, 2, 0, 1, 0, 1, 1),
    CONV("conv2d_fwd", op_conv_fwd, NULL, 2, 24, 15, 15, 16, 3, 2, 0, 1, 0, 1, 0),
    CONV("conv2d_fwd", op_conv_fwd, NULL, 2, 32, 16, 16, 32, 3, 2, 1, 1, 1, 1, 1),
    CONV("conv2d_fwd", op_conv_fwd, NULL, 2, 1, 32, 32, 32, 3, 1, 1, 1, 1, 1, 1),
    CONV("conv2d_fwd", op_conv_fwd, NULL, 2, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1),
    CONV("conv2d_bwd", op_conv_bwd, NULL, 2, 64, 16, 16, 32, 1, 1, 0, 0, 0, 0, 1),
    CONV("conv2d_bwd", op_conv_bwd, NULL, 3, 48, 7, 9, 24, 1, 1, 0, 0, 0, 0, 0),
    CONV("conv2d_bwd", op_conv_bwd, NULL, 2, 32, 16, 16, 64, 3, 1, 1, 1, 1, 1, 1),
    CONV("conv2d_bwd", op_conv_bwd, NULL, 3, 5, 13, 11, 7, 3, 1, 1, 1, 1, 1, 0),
    CONV("conv2d_bwd", op_conv_bwd, NULL, 2, 32, 16, 16, 32, 3, 2, 0, 1, 0, 1, 1),
    CONV("conv2d_bwd", op_conv_bwd, NULL, 2, 24, 15, 15, 16, 3, 2, 0, 1, 0, 1, 0),
    CONV("conv2d_bwd", op_conv_bwd, NULL, 2, 32, 16, 16, 32, 3, 2, 1, 1, 1, 1, 1),
    CONV("conv2d_bwd", op_conv_bwd, NULL, 2, 1, 32, 32, 32, 3, 1, 1, 1, 1, 1, 1),
    CONV("conv2d_bwd", op_conv_bwd, NULL, 2, 32, 32, 32, 3, 3, 1, 1, 1, 1, 1, 1),
    CONV("conv2d_bwd", op_conv_bwd, "dinp", 2, 32, 16, 16, 64, 3, 1, 1, 1, 1, 1, 1),
    CONV("conv2d_bwd", op_conv_bwd, "dweight,dbias", 2, 32, 16, 16, 64, 3, 1, 1, 1, 1, 1, 1),
    CONV("conv2d_bwd", op_conv_bwd, "dinp,dbias", 2, 32, 16, 16, 32, 3, 2, 0, 1, 0, 1, 1),
    CONV("conv2d_bwd", op_conv_bwd, "dinp,dweight", 2, 64, 16, 16, 32, 1, 1, 0, 0, 0, 0, 1),
    // dbias over 16384 elements per channel: summed in 4 pieces (cu_plane_pieces)
    CONV("conv2d_bwd", op_conv_bwd, NULL, 16, 3, 32, 32, 5, 3, 1, 1, 1, 1, 1, 1),
    // ... and in 2 pieces, the second starting inside an image's plane
    CONV("conv2d_bwd", op_conv_bwd, NULL, 3, 3, 55, 55, 5, 3, 1, 1, 1, 1, 1, 1),
    // GroupNorm, GroupNorm + SiLU: the U-Nets' shapes and an odd one.
    GN("groupnorm_fwd", op_gn_fwd, NULL, 2, 64, 64, 8, 1e-5f),
    GN("groupnorm_fwd", op_gn_fwd, NULL, 2, 128, 1024, 32, 1e-6f),
    GN("groupnorm_fwd", op_gn_fwd, NULL, 3, 12, 49, 3, 1e-5f),
    GN("groupnorm_bwd", op_gn_bwd, NULL, 2, 64, 64, 8, 1e-5f),
    GN("groupnorm_bwd", op_gn_bwd, NULL, 2, 128, 1024, 32, 1e-6f),
    GN("groupnorm_bwd", op_gn_bwd, NULL, 3, 12, 49, 3, 1e-5f),
    // groups of several register chunks (65536 floats), and of 4097 (one float past a chunk,
    // odd HW: no float4 loads), for the CUDA kernels' multi-chunk path
    GN("groupnorm_fwd", op_gn_fwd, NULL, 1, 32, 4096, 2, 1e-5f),
    GN("groupnorm_bwd", op_gn_bwd, NULL, 1, 32, 4096, 2, 1e-5f),
    GN("groupnorm_silu_bwd", op_gns_bwd, NULL, 2, 17, 241, 1, 1e-5f),
    // float4 loads with a partial last chunk (5120 floats), and a Stable-Diffusion-sized group
    // (10 channels of 64x64: 10 chunks)
    GN("groupnorm_fwd", op_gn_fwd, NULL, 2, 20, 1024, 4, 1e-5f),
    GN("groupnorm_bwd", op_gn_bwd, NULL, 2, 20, 1024, 4, 1e-5f),
    GN("groupnorm_silu_fwd", op_gns_fwd, NULL, 1, 320, 4096, 32, 1e-6f),
    GN("groupnorm_silu_bwd", op_gns_bwd, NULL, 1, 320, 4096, 32, 1e-6f),
    GN("groupnorm_bwd", op_gn_bwd, "dinp", 2, 64, 64, 8, 1e-5f),
    GN("groupnorm_bwd", op_gn_bwd, "dweight,dbias", 2, 64, 64, 8, 1e-5f),
    GN("groupnorm_silu_fwd", op_gns_fwd, NULL, 2, 64, 256, 8, 1e-5f),
    GN("groupnorm_silu_fwd", op_gns_fwd, NULL, 2, 128, 1024, 32, 1e-6f),
    GN("groupnorm_silu_fwd", op_gns_fwd, NULL, 3, 12, 49, 3, 1e-5f),
    GN("groupnorm_silu_bwd", op_gns_bwd, NULL, 2, 64, 256, 8, 1e-5f),
    GN("groupnorm_silu_bwd", op_gns_bwd, NULL, 2, 128, 1024, 32, 1e-6f),
    GN("groupnorm_silu_bwd", op_gns_bwd, NULL, 3, 12, 49, 3, 1e-5f),
    GN("groupnorm_silu_bwd", op_gns_bwd, "dinp", 2, 64, 256, 8, 1e-5f),
    GN("groupnorm_silu_bwd", op_gns_bwd, "dweight,dbias", 2, 64, 256, 8, 1e-5f),
    // dweight and dbias in pieces (cu_plane_pieces): 4 pieces of 1024-pixel
    // planes; 2 pieces of 16-pixel planes (a step of 16 whole planes); 2
    // pieces of 250-pixel planes (a step of one plane and 6 pixels)
    GN("groupnorm_bwd", op_gn_bwd, NULL, 16, 8, 1024, 2, 1e-5f),
    GN("groupnorm_silu_bwd", op_gns_bwd, NULL, 16, 8, 1024, 2, 1e-5f),
    GN("groupnorm_silu_bwd", op_gns_bwd, "dinp", 600, 8, 16, 2, 1e-5f),
    GN("groupnorm_bwd", op_gn_bwd, "dinp", 40, 6, 250, 3, 1e-5f),
    // 2 pieces, the second starting at pixel 750 of image 9's plane
    GN("groupnorm_bwd", op_gn_bwd, "dinp", 19, 4, 1000, 1, 1e-5f),
    // Activations: plain and in place.
    EW("silu_fwd", op_act_fwd, NULL, NBIG, 0),
    EW("silu_fwd_inplace", op_act_fwd_inplace, NULL, NBIG, 0),
    EW("silu_bwd", op_act_bwd, NULL, NBIG, 0),
    EW("silu_bwd_inplace", op_act_bwd_inplace, NULL, NBIG, 0),
    EW("gelu_fwd", op_act_fwd, NULL, NBIG, 0),
    EW("gelu_fwd_inplace", op_act_fwd_inplace, NULL, NBIG, 0),
    EW("gelu_bwd", op_act_bwd, NULL, NBIG, 0),
    EW("gelu_bwd_inplace", op_act_bwd_inplace, NULL, NBIG, 0),
    EW("relu_fwd", op_act_fwd, NULL, NBIG, 0),
    EW("relu_fwd_inplace", op_act_fwd_inplace, NULL, NBIG, 0),
    EW("relu_bwd", op_act_bwd, NULL, NBIG, 0),
    EW("relu_bwd_inplace", op_act_bwd_inplace, NULL, NBIG, 0),
    // linear: time embedding, attention projections, adapter down/up, odd sizes.
    LIN("linear_fwd", op_linear_fwd, NULL, 8, 32, 128, 1),
    LIN("linear_fwd", op_linear_fwd, NULL, 512, 64, 64, 1),
    LIN("linear_fwd", op_linear_fwd, NULL, 512, 64, 4, 1),
    LIN("linear_fwd", op_linear_fwd, NULL, 512, 4, 64, 0),
    LIN("linear_fwd", op_linear_fwd, NULL, 37, 130, 77, 0),
    LIN("linear_bwd", op_linear_bwd, NULL, 8, 32, 128, 1),
    LIN("linear_bwd", op_linear_bwd, NULL, 512, 64, 64, 1),
    LIN("linear_bwd", op_linear_bwd, NULL, 512, 64, 4, 1),
    LIN("linear_bwd", op_linear_bwd, NULL, 512, 4, 64, 0),
    LIN("linear_bwd", op_linear_bwd, NULL, 37, 130, 77, 1),
    LIN("linear_bwd", op_linear_bwd, "dinp", 37, 130, 77, 1),
    LIN("linear_bwd", op_linear_bwd, "dweight,dbias", 37, 130, 77, 1),
    LIN("linear_bwd", op_linear_bwd, "dbias", 512, 64, 64, 1),
    // attention: NH 1 and 4, T 64 (8x8) and 256 (16x16), an odd T and head size.
    ATTN("attention_fwd", op_attn_fwd, NULL, 2, 64, 64, 1),
    ATTN("attention_fwd", op_attn_fwd, NULL, 2, 64, 64, 4),
    ATTN("attention_fwd", op_attn_fwd, NULL, 2, 256, 256, 1),
    ATTN("attention_fwd", op_attn_fwd, NULL, 2, 256, 64, 4),
    ATTN("attention_fwd", op_attn_fwd, NULL, 1, 49, 24, 2),
    ATTN("attention_fwd", op_attn_fwd, "probs", 2, 64, 64, 4),
    ATTN("attention_fwd", op_attn_fwd, "probs", 2, 256, 256, 1),
    ATTN("attention_bwd", op_attn_bwd, NULL, 2, 64, 64, 1),
    ATTN("attention_bwd", op_attn_bwd, NULL, 2, 64, 64, 4),
    ATTN("attention_bwd", op_attn_bwd, NULL, 2, 256, 256, 1),
    ATTN("attention_bwd", op_attn_bwd, NULL, 2, 256, 64, 4),
    ATTN("attention_bwd", op_attn_bwd, NULL, 1, 49, 24, 2),
    ATTN("attention_bwd", op_attn_bwd, "dq", 2, 64, 64, 4),
    ATTN("attention_bwd", op_attn_bwd, "dk,dv", 2, 64, 64, 4),
    ATTN("attention_bwd", op_attn_bwd, "dq,dk", 2, 256, 64, 4),
    // layout, upsampling, concat
    IMG("to_tokens", op_to_tokens, NULL, 2, 64, 64, 0, 0, 0),
    IMG("to_tokens", op_to_tokens, NULL, 3, 7, 49, 0, 0, 0),
    IMG("from_tokens", op_from_tokens, NULL, 2, 64, 64, 0, 0, 0),
    IMG("from_tokens", op_from_tokens, NULL, 3, 7, 49, 0, 0, 0),
    IMG("upsample2x_fwd", op_up_fwd, NULL, 2, 64, 0, 8, 8, 0),
    IMG("upsample2x_fwd", op_up_fwd, NULL, 3, 5, 0, 7, 9, 0),
    IMG("upsample2x_bwd", op_up_bwd, NULL, 2, 64, 0, 8, 8, 0),
    IMG("upsample2x_bwd", op_up_bwd, NULL, 3, 5, 0, 7, 9, 0),
    IMG("concat_fwd", op_concat_fwd, NULL, 2, 64, 64, 0, 0, 32),
    IMG("concat_fwd", op_concat_fwd, NULL, 3, 5, 49, 0, 0, 7),
    IMG("concat_bwd", op_concat_bwd, NULL, 2, 64, 64, 0, 0, 32),
    IMG("concat_bwd", op_concat_bwd, NULL, 3, 5, 49, 0, 0, 7),
    IMG("concat_bwd", op_concat_bwd, "da", 2, 64, 64, 0, 0, 32),
    IMG("concat_bwd", op_concat_bwd, "db", 3, 5, 49, 0, 0, 7),
    // residual adds
    EW("add_fwd", op_add_fwd, NULL, NBIG, 1.0f),
    EW("add_fwd", op_add_fwd, NULL, NBIG, 0.70710678f),
    EW("add_fwd_inplace", op_add_fwd_inplace, NULL, NBIG, 0.5f),
    EW("add_bwd", op_add_bwd, NULL, NBIG, 0.70710678f),
    EW("add_bwd", op_add_bwd, "da", NBIG, 1.0f),
    EW("add_bwd", op_add_bwd, "db", NBIG, 0.5f),
    EW("add_bwd_inplace", op_add_bwd_inplace, NULL, NBIG, 0.70710678f),
    IMG("add_channel_fwd", op_addch_fwd, NULL, 2, 64, 64, 0, 0, 0),
    IMG("add_channel_fwd", op_addch_fwd, NULL, 3, 7, 49, 0, 0, 0),
    IMG("add_channel_fwd_inplace", op_addch_fwd_inplace, NULL, 2, 64, 256, 0, 0, 0),
    IMG("add_channel_bwd", op_addch_bwd, NULL, 2, 64, 64, 0, 0, 0),
    IMG("add_channel_bwd", op_addch_bwd, NULL, 4, 256, 1024, 0, 0, 0),
    IMG("add_channel_bwd", op_addch_bwd, NULL, 3, 7, 49, 0, 0, 0),
    IMG("add_channel_bwd", op_addch_bwd, NULL, 1, 2, 16384, 0, 0, 0), // 4 pieces per plane
    EW("gated_add_fwd", op_gated_fwd, NULL, NBIG, 0),
    EW("gated_add_fwd_inplace", op_gated_fwd_inplace, NULL, NBIG, 0),
    EW("gated_add_bwd", op_gated_bwd, NULL, NBIG, 0),
    EW("gated_add_bwd", op_gated_bwd, "db", NBIG, 0),
    EW("gated_add_bwd", op_gated_bwd, "dgate", NBIG, 0),
    // timestep embedding: fmnist (dim 32, flip, shift 0), cifar (dim 128, no flip, shift 1), odd
    // dims
    TEMB(8, 32, 1, 0.0f),
    TEMB(8, 128, 0, 1.0f),
    TEMB(5, 33, 1, 0.0f),
    TEMB(5, 33, 0, 1.0f),
    // losses
    EW("mse_fwd", op_mse_fwd, NULL, NBIG, 0),
    EW("mse_fwd", op_mse_fwd, NULL, 8 * 3 * 32 * 32, 0),
    EW("mse_bwd", op_mse_bwd, NULL, NBIG, 1.0f),
    EW("mse_bwd", op_mse_bwd, NULL, 8 * 3 * 32 * 32, 0.25f),
    XENT("softmax_xent_fwd", op_xent_fwd, 37, 10, 1.0f / 37),
    XENT("softmax_xent_fwd", op_xent_fwd, 8, 1000, 1.0f),
    XENT("softmax_xent_bwd", op_xent_bwd, 37, 10, 1.0f / 37),
    XENT("softmax_xent_bwd", op_xent_bwd, 8, 1000, 1.0f),
    // sampler step: DDPM with noise and its last step (none), DDIM eta 0 and 0.5, DDIM's last
    // step (alpha_prev 1), in place
    SAMPLER("sampler_step", op_sampler, A3_SAMPLER_DDPM, 999, 899, 0.0f),
    SAMPLER("sampler_step", op_sampler, A3_SAMPLER_DDPM, 0, -1, 0.0f),
    SAMPLER("sampler_step", op_sampler, A3_SAMPLER_DDIM, 500, 480, 0.0f),
    SAMPLER("sampler_step", op_sampler, A3_SAMPLER_DDIM, 900, 800, 0.5f),
    SAMPLER("sampler_step", op_sampler, A3_SAMPLER_DDIM, 0, -1, 0.0f),
    SAMPLER("sampler_step_inplace", op_sampler_inplace, A3_SAMPLER_DDPM, 300, 200, 0.0f),
    SAMPLER("sampler_step_inplace", op_sampler_inplace, A3_SAMPLER_DDIM, 20, 0, 1.0f),
    // training noise: Fashion-MNIST and RGB micro-batches, odd sample sizes (the last
    // Box-Muller pair cut), the last step below 2^32, a short schedule, a large batch
    NOISE("training_noise", op_noise, 0, 0, 0, 8, 1024, 1000),
    NOISE("training_noise", op_noise, 7, 123, 16, 5, 3 * 32 * 32, 1000),
    NOISE("training_noise", op_noise, 42, 0xffffffffu, 1000, 3, 101, 1000),
    NOISE("training_noise", op_noise, 1, 5, 0, 37, 49, 37),
    NOISE("training_noise", op_noise, 3, 9, 2, 6, 1, 1000),
    NOISE("training_noise", op_noise, 5, 77, 64, 64, 1563, 1000),
    NOISE("training_noise_inplace", op_noise_inplace, 11, 2, 8, 16, 1024, 1000),
    NOISE("training_noise_inplace", op_noise_inplace, 9, 1, 3, 7, 75, 1000),
};
enum { N_CASES = (int)(sizeof cases / sizeof cases[0]) };

static void describe(const tcase *c, char *buf, size_t len) {
  const params *p = &c->p;
  void (*fn)(opx *) = c->fn;
  int k;
  if (fn == op_conv_fwd || fn == op_conv_bwd) {
    const a3_conv2d_shape *s = &p->cs;
    k = snprintf(buf, len, "x(%d,%d,%d,%d) w(%d,%d,%d,%d) s%d p(%d,%d,%d,%d)%s", s->B, s->C, s->H,
                 s->W, s->OC, s->C, s->KH, s->KW, s->stride, s->pad_top, s->pad_bottom, s->pad_left,
                 s->pad_right, p->bias ? " +b" : "");
  } else if (fn == op_gn_fwd || fn == op_gn_bwd || fn == op_gns_fwd || fn == op_gns_bwd) {
    k = snprintf(buf, len, "x(%d,%d,%d) G=%d eps=%g", p->B, p->C, p->HW, p->G, (double)p->eps);
  } else if (fn == op_linear_fwd || fn == op_linear_bwd) {
    k = snprintf(buf, len, "N=%d IN=%d OUT=%d%s", p->N, p->IN, p->OUT, p->bias ? " +b" : "");
  } else if (fn == op_attn_fwd || fn == op_attn_bwd) {
    k = snprintf(buf, len, "B=%d T=%d C=%d NH=%d", p->B, p->T, p->C, p->NH);
  } else if (fn == op_up_fwd || fn == op_up_bwd) {
    k = snprintf(buf, len, "x(%d,%d,%d,%d)", p->B, p->C, p->H, p->W);
  } else if (fn == op_concat_fwd || fn == op_concat_bwd) {
    k = snprintf(buf, len, "B=%d C1=%d C2=%d HW=%d", p->B, p->C, p->C2, p->HW);
  } else if (fn == op_temb) {
    k = snprintf(buf, len, "N=%d dim=%d flip=%d shift=%g", p->N, p->dim, p->flip, (double)p->shift);
  } else if (fn == op_sampler || fn == op_sampler_inplace) {
    k = snprintf(buf, len, "n=%zu %s t=%d->%d eta=%g", p->n,
                 p->sampler == A3_SAMPLER_DDPM ? "ddpm" : "ddim", p->t, p->t_prev, (double)p->eta);
  } else if (fn == op_noise || fn == op_noise_inplace) {
    k = snprintf(buf, len, "x0(%d,%zu) T=%d seed=%llu step=%llu s0=%llu", p->B, p->n, p->T,
                 (unsigned long long)p->seed, (unsigned long long)p->step,
                 (unsigned long long)p->s0);
  } else if (fn == op_xent_fwd || fn == op_xent_bwd) {
    k = snprintf(buf, len, "N=%d K=%d scale=%.4g", p->N, p->OUT, (double)p->scale);
  } else if (p->B) { // tokens, add_channel
    k = snprintf(buf, len, "x(%d,%d,%d)", p->B, p->C, p->HW);
  } else if (p->scale != 0.0f) {
    k = snprintf(buf, len, "n=%zu s=%.4g", p->n, (double)p->scale);
  } else {
    k = snprintf(buf, len, "n=%zu", p->n);
  }
  if (c->nulls && k >= 0 && (size_t)k < len)
    snprintf(buf + k, len - (size_t)k, " null:%s", c->nulls);
}

// ---------------------------------------------------------------- the driver
static uint64_t base_seed;

static float uniform(uint64_t seed, uint64_t stream, uint64_t i) { // U(-1, 1)
  return (float)((double)(a3_rng_u64(seed, stream, i) >> 40) * (1.0 / 8388608.0) - 1.0);
}

static int is_nulled(const tcase *c, const char *name) {
  if (!c->nulls) return 0;
  const size_t len = strlen(name);
  for (const char *p = c->nulls; *p;) {
    const char *e = strchr(p, ',');
    const size_t n = e ? (size_t)(e - p) : strlen(p);
    if (n == len && !strncmp(p, name, n)) return 1;
    p += n + (e ? 1 : 0);
  }
  return 0;
}

static int compared(role r) { return r == R_OUT || r == R_AGRAD || r == R_PGRAD || r == R_INOUT; }

// x rounded to bf16 (8 significant bits) to nearest, ties to even, as the
// device's __float2bfloat16_rn: too large gives Inf. A NaN stays a NaN
// (quieted: the rounding carry would turn a small payload into Inf).
static float host_bf16(float x) {
  uint32_t u;
  memcpy(&u, &x, sizeof u);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    u |= 0x00400000u;
  else
    u += 0x7fffu + ((u >> 16) & 1u);
  u &= 0xffff0000u;
  memcpy(&x, &u, sizeof x);
  return x;
}

// Bytes of one element of tensor d on backend be.
static size_t elem_bytes(const tdesc *d, const a3_backend *be) {
  return d->act ? be->act_bytes : sizeof(float); // labels are int32: 4 bytes too
}

// Fills the host copy of tensor i before the op (the same for both sides).
static void init_tensor(const tdesc *d, void *host, uint64_t seed, uint64_t stream) {
  float *f = host;
  switch (d->r) {
  case R_IN:
    for (size_t i = 0; i < d->n; i++) f[i] = d->offset + d->scale * uniform(seed, stream, i);
    break;
  case R_TSTEP:
    for (size_t i = 0; i < d->n; i++) f[i] = (float)a3_rng_below(seed, stream, i, 1000);
    f[0] = 0.0f;
    if (d->n > 1) f[1] = 999.0f;
    break;
  case R_LABELS: {
    int32_t *lab = host;
    for (size_t i = 0; i < d->n; i++)
      lab[i] = (int32_t)a3_rng_below(seed, stream, i, (uint64_t)d->k);
    break;
  }
  case R_OUT:
  case R_AGRAD:
    for (size_t i = 0; i < d->n; i++) f[i] = NAN;
    break;
  case R_PGRAD:
  case R_INOUT:
    for (size_t i = 0; i < d->n; i++) f[i] = uniform(seed, stream, i);
    break;
  }
}

typedef struct {
  void *host[MAXT]; // results (compared roles) after the op
} side;

// Runs one row on `be`: upload, op, synchronize, download. The status of the
// allocations, copies and the synchronize.
static a3_status run_side(const tcase *c, const tlist *l, void *const *init, const a3_backend *be,
                          side *out) {
  void *dev[MAXT] = {0};
  void *ws = NULL;
  a3_status s = A3_OK;
  opx x = {.m = M_WS, .c = c, .be = be};
  c->fn(&x);
  const size_t ws_bytes = x.ws_bytes;
  for (int i = 0; i < l->nt && s == A3_OK; i++) {
    const tdesc *d = &l->t[i];
    if (!init[i]) continue;
    s = be->ops->alloc(be, &dev[i], d->n * elem_bytes(d, be));
    if (s == A3_OK)
      s = d->act ? a3_act_upload(be, dev[i], init[i], d->n)
                 : be->ops->upload(be, dev[i], init[i], d->n * sizeof(float));
  }
  if (s == A3_OK && ws_bytes) s = be->ops->alloc(be, &ws, ws_bytes);
  if (s == A3_OK) {
    x = (opx){.m = M_RUN, .c = c, .be = be, .t = dev, .ws = ws};
    c->fn(&x);
    s = be->ops->synchronize(be);
  }
  for (int i = 0; i < l->nt && s == A3_OK; i++) {
    const tdesc *d = &l->t[i];
    if (!out->host[i]) continue;
    s = d->act ? a3_act_download(be, out->host[i], dev[i], d->n)
               : be->ops->download(be, out->host[i], dev[i], d->n * sizeof(float));
  }
  if (s == A3_OK) s = be->ops->synchronize(be);
  for (int i = 0; i < l->nt; i++) be->ops->release(be, dev[i]);
  be->ops->release(be, ws);
  return s;
}

static const char *precision_name(a3_precision p) {
  return p == A3_PRECISION_TF32 ? "tf32" : p == A3_PRECISION_BF16 ? "bf16" : "fp32";
}

static double tolerance(const tcase *c, a3_precision prec) {
  if (c->tol == TOL_BITWISE) return 0.0;
  if (c->tol == TOL_EMB) return TOL_TEMB;
  if (c->tol == TOL_NOISE) return TOL_NOISE_REL;
  if (c->tol == TOL_MATRIX && prec == A3_PRECISION_TF32) return TOL_TF32_MATRIX;
  if (c->tol == TOL_MATRIX && prec == A3_PRECISION_BF16) return TOL_BF16_MATRIX;
  return TOL_FP32;
}

// Relative L2 error of cand against ref, or against ref rounded to bf16 with
// round_ref (absolute where ref is all zero); INFINITY when either holds a
// NaN or Inf (*nonfinite says which).
static double rel_err(const float *cand, const float *ref, size_t n, int round_ref,
                      const char **nonfinite) {
  double d2 = 0.0, r2 = 0.0;
  for (size_t i = 0; i < n; i++) {
    if (!isfinite(ref[i])) {
      *nonfinite = "non-finite in the reference";
      return INFINITY;
    }
    if (!isfinite(cand[i])) {
      *nonfinite = "NaN/Inf (or an element left unwritten)";
      return INFINITY;
    }
    const double r = round_ref ? host_bf16(ref[i]) : ref[i];
    const double d = (double)cand[i] - r;
    d2 += d * d;
    r2 += r * r;
  }
  return r2 > 0.0 ? sqrt(d2 / r2) : sqrt(d2);
}

// Tensor d's bound in row c: the row's, or 0 for an exact tensor; an
// activation the candidate stores in bf16 adds one rounding (TOL_BF16_STORE),
// except in the matrix ops, whose bf16 bound covers it (see the top).
static double tensor_tol(const tcase *c, const tdesc *d, a3_precision prec,
                         const a3_backend *cand) {
  if (d->exact) return 0.0;
  const double tol = tolerance(c, prec);
  return d->act && cand->act_bytes == 2 && c->tol != TOL_MATRIX ? tol + TOL_BF16_STORE : tol;
}

// Host buffers of a row's tensors: init (inputs and prefills, the same for
// both sides) and the results of each side for the compared ones. With
// round_acts (bf16 storage) every activation is rounded to bf16 here, so both
// sides start from the values the device holds.
static void row_buffers(const tcase *c, const tlist *l, uint64_t seed, int round_acts, void **init,
                        side *rs, side *cs) {
  for (int i = 0; i < l->nt; i++) {
    const tdesc *d = &l->t[i];
    if (d->n == 0 || is_nulled(c, d->name)) continue;
    init[i] = malloc(d->n * sizeof(float));
    if (compared(d->r)) {
      rs->host[i] = malloc(d->n * sizeof(float));
      cs->host[i] = malloc(d->n * sizeof(float));
    }
    if (!init[i] || (compared(d->r) && (!rs->host[i] || !cs->host[i]))) {
      fprintf(stderr, "out of host memory\n");
      exit(1);
    }
    init_tensor(d, init[i], seed, (uint64_t)i + 1);
    float *f = init[i];
    for (size_t k = 0; round_acts && d->act && k < d->n; k++) f[k] = host_bf16(f[k]);
  }
}

typedef struct {
  double e, tol;   // the error and bound of the comparison nearest to (or furthest past) its bound
  double key;      // e / tol (INFINITY past a bound of 0)
  char name[48];   // its tensor
  const char *why; // why it is non-finite, or ""
  int ok;          // every comparison within its bound
} verdict;

// Folds one comparison of tensor `name` into v.
static void weigh(verdict *v, double e, double tol, const char *name, int once, const char *nf) {
  if (isnan(e)) e = INFINITY;
  const double key = tol > 0.0 ? e / tol : e > 0.0 ? INFINITY : 0.0;
  if (!(e <= tol)) v->ok = 0;
  if (key <= v->key) return;
  v->e = e, v->tol = tol, v->key = key, v->why = nf ? nf : "";
  snprintf(v->name, sizeof v->name, "%s%s", name, once ? " vs bf16(ref)" : "");
}

// Every compared tensor against its bound; a stored bf16 activation of the
// fp32-class ops also against the reference rounded to bf16 (TOL_BF16_ONCE).
static verdict judge(const tcase *c, const tlist *l, const side *rs, const side *cs,
                     a3_precision prec, const a3_backend *cand) {
  verdict v = {.e = 0.0, .tol = tolerance(c, prec), .key = -1.0, .name = "-", .why = "", .ok = 1};
  for (int i = 0; i < l->nt; i++) {
    const tdesc *d = &l->t[i];
    if (!rs->host[i]) continue;
    const char *nf = NULL;
    double e = rel_err(cs->host[i], rs->host[i], d->n, 0, &nf);
    weigh(&v, e, tensor_tol(c, d, prec, cand), d->name, 0, nf);
    if (!(d->act && cand->act_bytes == 2 && c->tol == TOL_EXACT)) continue;
    e = rel_err(cs->host[i], rs->host[i], d->n, 1, &nf);
    weigh(&v, e, TOL_BF16_ONCE, d->name, 1, nf);
  }
  return v;
}

// Runs row `idx` on ref and cand, prints its line; 1 when it passes.
static int run_case(int idx, const a3_backend *ref, const a3_backend *cand, a3_precision prec,
                    int quiet) {
  const tcase *c = &cases[idx];
  tlist l = {0};
  opx x = {.m = M_SETUP, .c = c, .l = &l};
  c->fn(&x);
  const uint64_t seed = base_seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(idx + 1));
  void *init[MAXT] = {0};
  side rs = {{0}}, cs = {{0}};
  row_buffers(c, &l, seed, cand->act_bytes == 2, init, &rs, &cs);
  int ok = 1;
  if (run_side(c, &l, init, ref, &rs) != A3_OK) {
    ok = 0;
    fprintf(stderr, "  reference (%s) failed: %s\n", ref->name, a3_error_message());
  }
  if (ok && run_side(c, &l, init, cand, &cs) != A3_OK) {
    ok = 0;
    fprintf(stderr, "  candidate (%s) failed: %s\n", cand->name, a3_error_message());
  }
  verdict v = {
      .e = INFINITY, .tol = tolerance(c, prec), .key = INFINITY, .name = "-", .why = "", .ok = 0};
  if (ok) v = judge(c, &l, &rs, &cs, prec, cand);
  char shape[96];
  describe(c, shape, sizeof shape);
  if (!quiet || !v.ok)
    printf("%-24s %-58s %-5s %11.3e %8.1e  %s%s%s%s\n", c->op, shape, precision_name(prec), v.e,
           v.tol, v.ok ? "PASS" : "FAIL", v.ok ? "" : " (worst: ", v.ok ? "" : v.name,
           v.ok ? "" : ")");
  if (!v.ok && *v.why && !quiet) printf("    %s: %s\n", v.name, v.why);
  for (int i = 0; i < l.nt; i++) {
    free(init[i]);
    free(rs.host[i]);
    free(cs.host[i]);
  }
  return v.ok;
}

// Every op of the table is set (a missing op would crash the model, not just a row).
static int check_table(const a3_backend *be) {
  const a3_backend_ops *o = be->ops;
  int missing = 0;
#define HAS(f)                                                                                     \
  if (!o->f) {                                                                                     \
    printf("%s: op %s is NULL\n", be->name, #f);                                                   \
    missing++;                                                                                     \
  }
  HAS(alloc) HAS(release) HAS(upload) HAS(download) HAS(synchronize) HAS(zero) HAS(accumulate);
  HAS(act_zero) HAS(act_from_f32) HAS(act_to_f32);
  HAS(conv2d_workspace_size) HAS(conv2d_forward) HAS(conv2d_backward);
  HAS(groupnorm_forward) HAS(groupnorm_backward) HAS(groupnorm_silu_forward);
  HAS(groupnorm_silu_backward) HAS(silu_forward) HAS(silu_backward);
  HAS(linear_forward) HAS(linear_backward);
  HAS(attention_workspace_size) HAS(attention_forward) HAS(attention_backward);
  HAS(to_tokens) HAS(from_tokens) HAS(upsample2x_forward) HAS(upsample2x_backward);
  HAS(concat_forward) HAS(concat_backward) HAS(add_forward) HAS(add_backward);
  HAS(add_channel_forward) HAS(add_channel_backward) HAS(timestep_embedding);
  HAS(mse_forward) HAS(mse_backward) HAS(gelu_forward) HAS(gelu_backward);
  HAS(relu_forward) HAS(relu_backward) HAS(gated_add_forward) HAS(gated_add_backward);
  HAS(softmax_xent_forward) HAS(softmax_xent_backward);
  HAS(sum_squares) HAS(clip_scale) HAS(adamw_update) HAS(ema_update) HAS(sampler_step);
  HAS(training_noise) HAS(batch_images) HAS(sum_squares_segments) HAS(adamw_update_segments);
  HAS(ema_update_segments);
#undef HAS
  return missing == 0;
}

// ---------------------------------------------------------------- batch images
// batch_images takes uint8 images and host items, so it runs outside the
// float table: random images and items (flips included) on both backends,
// compared bit for bit (one division and one subtraction, each rounded).
// Counts above 960 take several launches on CUDA (items travel as launch
// arguments).
static int batch_images_case(const a3_backend *ref, const a3_backend *cand, int n, int C, int S,
                             int count, uint64_t seed) {
  const size_t per = (size_t)C * S * S, img_bytes = (size_t)n * per, x_bytes = count * per * 4;
  uint8_t *images = malloc(img_bytes);
  uint32_t *items = malloc((size_t)count * sizeof *items);
  float *host[2] = {malloc(x_bytes), malloc(x_bytes)};
  int ok = images && items && host[0] && host[1];
  for (size_t i = 0; ok && i < img_bytes; i++) images[i] = (uint8_t)a3_rng_u64(seed, 1, i);
  for (int i = 0; ok && i < count; i++)
    items[i] = (uint32_t)(a3_rng_u64(seed, 2, (uint64_t)i) % (uint64_t)n) << 1 |
               (uint32_t)(a3_rng_u64(seed, 3, (uint64_t)i) & 1u);
  const a3_backend *be[2] = {ref, cand};
  for (int k = 0; ok && k < 2; k++) {
    uint8_t *d_img = NULL;
    float *d_x = NULL;
    ok = be[k]->ops->alloc(be[k], (void **)&d_img, img_bytes) == A3_OK &&
         be[k]->ops->alloc(be[k], (void **)&d_x, x_bytes) == A3_OK &&
         be[k]->ops->upload(be[k], d_img, images, img_bytes) == A3_OK;
    if (ok) be[k]->ops->batch_images(be[k], d_x, d_img, items, count, C, S);
    ok = ok && be[k]->ops->download(be[k], host[k], d_x, x_bytes) == A3_OK &&
         be[k]->ops->synchronize(be[k]) == A3_OK;
    be[k]->ops->release(be[k], d_img);
    be[k]->ops->release(be[k], d_x);
  }
  if (!ok) printf("batch_images: %s\n", a3_error_message());
  const int same = ok && !memcmp(host[0], host[1], x_bytes);
  char shape[96];
  snprintf(shape, sizeof shape, "n=%d C=%d S=%d count=%d", n, C, S, count);
  printf("%-24s %-58s %-5s %11s %8.1e  %s\n", "batch_images", shape, "-", same ? "0" : "differs",
         0.0, same ? "PASS" : "FAIL");
  free(images);
  free(items);
  free(host[0]);
  free(host[1]);
  return same;
}

enum { N_BATCH_IMAGES_CASES = 3 };
static int batch_images_cases(const a3_backend *ref, const a3_backend *cand) {
  const uint64_t seed = base_seed ^ 0x5bd1e995u;
  int failures = 0;
  failures += !batch_images_case(ref, cand, 60, 1, 32, 64, seed);      // Fashion-MNIST padded
  failures += !batch_images_case(ref, cand, 37, 3, 32, 128, seed + 1); // CIFAR
  failures += !batch_images_case(ref, cand, 5, 3, 7, 2000, seed + 2);  // 3 launches, odd S
  return failures;
}

// ---------------------------------------------------------------- optimizer over segments
// The optimizer ops over a whole segment table (one launch each on CUDA)
// against the CPU's: segments of 1 float to over a million with frozen gaps
// between them, decay on some; AdamW with a clip factor and weight decay,
// then the EMA: params (gaps included), m, v and the EMA bit for bit, and
// each segment's sum of squares to 1e-12 relative (summation order).
enum { SEG_N = 300 };

typedef struct {
  float *params, *grads, *m, *v, *ema; // host: flat (params, grads) or compact
  double partials[SEG_N];
} seg_state;

static void seg_layout(a3_param_segment *segs, int64_t *flat, int64_t *compact, uint64_t seed) {
  int64_t off = 0, c = 0;
  for (int k = 0; k < SEG_N; k++) {
    const uint64_t r = a3_rng_u64(seed, 4, (uint64_t)k);
    const int64_t count = k == 7       ? 1200000
                          : k % 3 == 0 ? 1 + (int64_t)(r % 17)
                                       : 1 + (int64_t)(r % 9000);
    off += (int64_t)(r >> 40) % 5; // a frozen gap, or none
    segs[k] = (a3_param_segment){off, count, (r >> 20) & 1};
    off += count;
    c += count;
  }
  *flat = off + 3;
  *compact = c;
}

// The three ops on backend be, starting from the host values in `in`, results into `out`.
static int seg_run(const a3_backend *be, const a3_param_segment *segs, int64_t nf, int64_t nc,
                   const seg_state *in, seg_state *out) {
  a3_segment_table t;
  if (a3_segment_table_make(be, segs, SEG_N, &t) != A3_OK) return 0;
  const size_t bf = (size_t)nf * 4, bc = (size_t)nc * 4;
  float *p = NULL, *g = NULL, *m = NULL, *v = NULL, *e = NULL, *scale = NULL;
  double *partials = NULL;
  const a3_backend_ops *o = be->ops;
  int ok = o->alloc(be, (void **)&p, bf) == A3_OK && o->alloc(be, (void **)&g, bf) == A3_OK &&
           o->alloc(be, (void **)&m, bc) == A3_OK && o->alloc(be, (void **)&v, bc) == A3_OK &&
           o->alloc(be, (void **)&e, bc) == A3_OK && o->alloc(be, (void **)&scale, 4) == A3_OK &&
           o->alloc(be, (void **)&partials, sizeof in->partials) == A3_OK;
  const float clip = 0.75f;
  ok = ok && o->upload(be, p, in->params, bf) == A3_OK &&
       o->upload(be, g, in->grads, bf) == A3_OK && o->upload(be, m, in->m, bc) == A3_OK &&
       o->upload(be, v, in->v, bc) == A3_OK && o->upload(be, e, in->ema, bc) == A3_OK &&
       o->upload(be, scale, &clip, 4) == A3_OK;
  if (ok) {
    const a3_adamw_hparams h = {
        .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1};
    const a3_adamw_scalars sc = a3_adamw_prepare(&h, 3);
    o->sum_squares_segments(be, partials, g, &t);
    o->adamw_update_segments(be, p, g, m, v, &t, &sc, 1, scale);
    o->ema_update_segments(be, e, p, &t, 0.01f);
  }
  ok = ok && o->download(be, out->params, p, bf) == A3_OK &&
       o->download(be, out->m, m, bc) == A3_OK && o->download(be, out->v, v, bc) == A3_OK &&
       o->download(be, out->ema, e, bc) == A3_OK &&
       o->download(be, out->partials, partials, sizeof in->partials) == A3_OK &&
       o->synchronize(be) == A3_OK;
  void *bufs[] = {p, g, m, v, e, scale, partials};
  for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) o->release(be, bufs[i]);
  a3_segment_table_free(be, &t);
  return ok;
}

static int seg_alloc(seg_state *st, int64_t nf, int64_t nc) {
  st->params = malloc((size_t)nf * 4), st->grads = malloc((size_t)nf * 4);
  st->m = malloc((size_t)nc * 4), st->v = malloc((size_t)nc * 4), st->ema = malloc((size_t)nc * 4);
  return st->params && st->grads && st->m && st->v && st->ema;
}

static void seg_free(seg_state *st) {
  free(st->params), free(st->grads), free(st->m), free(st->v), free(st->ema);
}

static int optimizer_segments_case(const a3_backend *ref, const a3_backend *cand) {
  const uint64_t seed = base_seed ^ 0x27d4eb2fu;
  a3_param_segment segs[SEG_N];
  int64_t nf = 0, nc = 0;
  seg_layout(segs, &nf, &nc, seed);
  seg_state in, got[2];
  int ok = seg_alloc(&in, nf, nc) && seg_alloc(&got[0], nf, nc) && seg_alloc(&got[1], nf, nc);
  for (int64_t i = 0; ok && i < nf; i++) {
    in.params[i] = (float)((double)(a3_rng_u64(seed, 5, (uint64_t)i) >> 40) / 16777216.0 - 0.5);
    in.grads[i] = (float)((double)(a3_rng_u64(seed, 6, (uint64_t)i) >> 40) / 16777216.0 - 0.5);
  }
  for (int64_t i = 0; ok && i < nc; i++) {
    in.m[i] = 0.01f * (float)((double)(a3_rng_u64(seed, 7, (uint64_t)i) >> 40) / 16777216.0 - 0.5);
    in.v[i] = 1e-4f * (float)((double)(a3_rng_u64(seed, 8, (uint64_t)i) >> 40) / 16777216.0);
    in.ema[i] = (float)((double)(a3_rng_u64(seed, 9, (uint64_t)i) >> 40) / 16777216.0 - 0.5);
  }
  ok = ok && seg_run(ref, segs, nf, nc, &in, &got[0]) && seg_run(cand, segs, nf, nc, &in, &got[1]);
  if (!ok) printf("optimizer segments: %s\n", a3_error_message());
  double worst = 0.0;
  for (int k = 0; ok && k < SEG_N; k++)
    worst = fmax(worst, fabs(got[1].partials[k] - got[0].partials[k]) /
                            fmax(fabs(got[0].partials[k]), 1e-300));
  const int same = ok && !memcmp(got[0].params, got[1].params, (size_t)nf * 4) &&
                   !memcmp(got[0].m, got[1].m, (size_t)nc * 4) &&
                   !memcmp(got[0].v, got[1].v, (size_t)nc * 4) &&
                   !memcmp(got[0].ema, got[1].ema, (size_t)nc * 4);
  const int pass = same && worst <= 1e-12;
  char shape[96];
  snprintf(shape, sizeof shape, "%d segments, %lld of %lld floats", SEG_N, (long long)nc,
           (long long)nf);
  printf("%-24s %-58s %-5s %11.1e %8.1e  %s%s\n", "optimizer_segments", shape, "-", worst, 1e-12,
         pass ? "PASS" : "FAIL", ok && !same ? " (updates not bitwise)" : "");
  seg_free(&in), seg_free(&got[0]), seg_free(&got[1]);
  return pass;
}

// ---------------------------------------------------------------- bf16 operands
// The table's bf16 bound (3e-2) cannot tell bf16 operands from tf32 ones,
// nor a store rounded to nearest from one truncated, so in bf16 a linear of
// 512-term dot products and a 3x3 convolution (576-term, cuDNN's path when
// present) run against the CPU, whose result is rounded to bf16 on the host
// as the device stores it. The activations are on the bf16 grid (they are
// stored so); the weights (fp32 parameters) are, twice:
// - 3/8 of a bf16 ulp off the grid, away from zero (exact in tf32 and fp32):
//   bf16 operands shrink every weight by that much, ~2e-3 relative on a dot
//   product and ~3.2e-3 once both results are rounded to bf16 (simulated),
//   where tf32 or fp32 operands would leave only rare rounding-boundary
//   flips (< 1e-4): above 1.2e-3 and below the table's 3e-2;
// - on the grid: the products are exact in fp32 and only the accumulation
//   order differs (~1e-7 relative), so the stored results equal the rounded
//   reference but where the two sums straddle a rounding boundary (~1e-4 at
//   most): under 1e-3. A store that truncates gives ~4e-3.
enum { BF16_N = 256, BF16_IN = 512, BF16_OUT = 192 };

// The product checked: a linear (conv NULL) or a 3x3 convolution.
static const a3_conv2d_shape BF16_CONV = {8, 64, 16, 16, 64, 3, 3, 1, 1, 1, 1, 1};

static size_t bf16_counts(const a3_conv2d_shape *cs, size_t *nw, size_t *ny) {
  *nw = cs ? (size_t)cs->OC * cs->C * 9 : (size_t)BF16_OUT * BF16_IN;
  *ny = cs ? (size_t)cs->B * cs->OC * cs->H * cs->W : (size_t)BF16_N * BF16_OUT;
  return cs ? (size_t)cs->B * cs->C * cs->H * cs->W : (size_t)BF16_N * BF16_IN;
}

// y = the product of x and w on backend be (device buffers given), queued.
static int bf16_product(const a3_backend *be, const a3_conv2d_shape *cs,
                        a3_act *y,       // (BF16_N, BF16_OUT) or the conv's output
                        const a3_act *x, // (BF16_N, BF16_IN) or the conv's input
                        const float *w) {
  if (!cs) {
    be->ops->linear_forward(be, y, x, w, NULL, BF16_N, BF16_IN, BF16_OUT);
    return 1;
  }
  void *ws = NULL;
  const size_t bytes = be->ops->conv2d_workspace_size(be, cs);
  if (be->ops->alloc(be, &ws, bytes ? bytes : 1) != A3_OK) return 0;
  be->ops->conv2d_forward(be, cs, y, x, w, NULL, ws);
  const int ok = be->ops->synchronize(be) == A3_OK;
  be->ops->release(be, ws);
  return ok;
}

// The product of x and w on backend be, into host y (fp32); 1 on success.
static int product_on(const a3_backend *be, const a3_conv2d_shape *cs, float *y, const float *x,
                      const float *w) {
  size_t nw = 0, ny = 0;
  const size_t nx = bf16_counts(cs, &nw, &ny);
  a3_act *d_x = NULL, *d_y = NULL;
  float *d_w = NULL;
  const int ok = be->ops->alloc(be, (void **)&d_x, nx * be->act_bytes) == A3_OK &&
                 be->ops->alloc(be, (void **)&d_w, nw * sizeof(float)) == A3_OK &&
                 be->ops->alloc(be, (void **)&d_y, ny * be->act_bytes) == A3_OK &&
                 a3_act_upload(be, d_x, x, nx) == A3_OK &&
                 be->ops->upload(be, d_w, w, nw * sizeof(float)) == A3_OK &&
                 bf16_product(be, cs, d_y, d_x, d_w) && a3_act_download(be, y, d_y, ny) == A3_OK;
  be->ops->release(be, d_x);
  be->ops->release(be, d_w);
  be->ops->release(be, d_y);
  return ok;
}

// ||cand - bf16(ref)|| / ||bf16(ref)|| of the product of x and w, or -1.
static double product_rel_l2(const a3_backend *ref, const a3_backend *cand,
                             const a3_conv2d_shape *cs, const float *x, const float *w) {
  size_t nw = 0, ny = 0;
  bf16_counts(cs, &nw, &ny);
  float *y[2] = {malloc(ny * sizeof(float)), malloc(ny * sizeof(float))};
  const int ok =
      y[0] && y[1] && product_on(ref, cs, y[0], x, w) && product_on(cand, cs, y[1], x, w);
  double num = 0, den = 0;
  for (size_t i = 0; ok && i < ny; i++) {
    const double r = host_bf16(y[0][i]); // the device's store
    num += ((double)y[1][i] - r) * ((double)y[1][i] - r);
    den += r * r;
  }
  free(y[0]);
  free(y[1]);
  return ok && den > 0 ? sqrt(num / den) : -1.0;
}

static int bf16_operand_row(const char *what, double e, double lo, double hi) {
  const int ok = e >= lo && e <= hi;
  printf("%-24s %-58s %-5s %11.3e %8.1e  %s\n", "bf16_operands", what, "bf16", e, hi,
         ok ? "PASS" : "FAIL");
  if (!ok) printf("    expected %.1e <= error <= %.1e\n", lo, hi);
  return ok;
}

// b moved 3/8 of its bf16 ulp away from zero: bf16 rounds it back to b,
// tf32 (10 fraction bits) and fp32 hold it exactly.
static float off_bf16_grid(float b) {
  int e = 0;
  if (b == 0.0f) return b;
  frexpf(b, &e); // |b| in [2^(e-1), 2^e): its bf16 ulp is 2^(e-8)
  return b + copysignf(0.375f * ldexpf(1.0f, e - 8), b);
}

// Weights off the bf16 grid, then on it, for one product.
static int bf16_operand_product(const a3_backend *ref, const a3_backend *cand,
                                const a3_conv2d_shape *cs, const char *name) {
  size_t nw = 0, ny = 0;
  const size_t nx = bf16_counts(cs, &nw, &ny);
  float *x = malloc(nx * sizeof(float)), *w = malloc(nw * sizeof(float));
  if (!x || !w) return 1;
  const uint64_t seed = base_seed ^ 0xbf16u;
  for (size_t i = 0; i < nx; i++) x[i] = host_bf16(uniform(seed, 1, i));
  for (size_t i = 0; i < nw; i++) w[i] = off_bf16_grid(host_bf16(uniform(seed, 2, i)));
  char what[96];
  snprintf(what, sizeof what, "%s, weights off the bf16 grid", name);
  int failures = !bf16_operand_row(what, product_rel_l2(ref, cand, cs, x, w), 1.2e-3, 3e-2);
  for (size_t i = 0; i < nw; i++) w[i] = host_bf16(w[i]);
  snprintf(what, sizeof what, "%s, weights on the bf16 grid", name);
  failures += !bf16_operand_row(what, product_rel_l2(ref, cand, cs, x, w), 0.0, 1e-3);
  free(x);
  free(w);
  return failures;
}

enum { N_BF16_OPERAND_ROWS = 4 };
static int bf16_operand_checks(const a3_backend *ref, const a3_backend *cand) {
  return bf16_operand_product(ref, cand, NULL, "linear 256x512x192") +
         bf16_operand_product(ref, cand, &BF16_CONV, "conv 3x3 (8,64,16,16)->64");
}

// ---------------------------------------------------------------- activation storage
// The conversions every row relies on, checked on their own in every
// precision. act_from_f32 then act_to_f32 gives back, bit for bit, the
// host's rounding (bf16 storage) or the value itself (fp32 storage: exact
// copies, NaN bits included). A NaN in bf16 need only stay a NaN: CUDA's
// conversion gives its own canonical NaN. The hard cases first, then random
// bit patterns (normals, subnormals, zeros, Inf, NaN of any sign).
typedef struct {
  uint32_t in;   // fp32 bits
  uint16_t bf16; // the bf16 bits it rounds to
  const char *what;
} act_value;

static const act_value ACT_VALUES[] = {
    {0x3f800000u, 0x3f80u, "1"},
    {0x3f808000u, 0x3f80u, "1 + 2^-8, a tie: to the even 1"},
    {0x3f818000u, 0x3f82u, "a tie above an odd value: up"},
    {0x3f817fffu, 0x3f81u, "just below a tie: down"},
    {0x3f808001u, 0x3f81u, "just above a tie: up"},
    {0xbf808000u, 0xbf80u, "a negative tie: to the even"},
    {0xbf818000u, 0xbf82u, "a negative tie above an odd value: away from 0"},
    {0x3f7fffffu, 0x3f80u, "a carry into the exponent"},
    {0x00000000u, 0x0000u, "+0"},
    {0x80000000u, 0x8000u, "-0"},
    {0x00800000u, 0x0080u, "the smallest normal"},
    {0x00018000u, 0x0002u, "a subnormal tie above an odd value: up"},
    {0x00008000u, 0x0000u, "a subnormal tie: to +0"},
    {0x80000001u, 0x8000u, "the smallest negative subnormal: to -0"},
    {0x477fe000u, 0x4780u, "65504: up to 65536"},
    {0x7f7f7fffu, 0x7f7fu, "below the tie above bf16's largest: finite"},
    {0x7f7f8000u, 0x7f80u, "the tie above bf16's largest: Inf"},
    {0x7f7fffffu, 0x7f80u, "FLT_MAX: Inf"},
    {0xff7fffffu, 0xff80u, "-FLT_MAX: -Inf"},
    {0x7f800000u, 0x7f80u, "Inf"},
    {0xff800000u, 0xff80u, "-Inf"},
    {0x7fc00000u, 0x7fc0u, "NaN"},
    {0xffc00001u, 0xffc0u, "a negative NaN"},
    {0x7f800001u, 0x7fc0u, "a NaN the rounding carry would make Inf"},
};
enum {
  N_ACT_VALUES = (int)(sizeof ACT_VALUES / sizeof ACT_VALUES[0]),
  N_ACT = N_ACT_VALUES + NBIG
};

static float f32_bits(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}
static uint32_t bits_f32(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

// The host's rounding against the table (it makes every bf16 expectation).
static int host_bf16_agrees(void) {
  int ok = 1;
  for (int i = 0; i < N_ACT_VALUES; i++) {
    const uint32_t got = bits_f32(host_bf16(f32_bits(ACT_VALUES[i].in)));
    if (got != (uint32_t)ACT_VALUES[i].bf16 << 16) {
      printf("    host_bf16(0x%08x) (%s) = 0x%08x, want 0x%04x0000\n", (unsigned)ACT_VALUES[i].in,
             ACT_VALUES[i].what, (unsigned)got, (unsigned)ACT_VALUES[i].bf16);
      ok = 0;
    }
  }
  return ok;
}

// Element i of the values checked: the table, then random bit patterns,
// the last one 1.0 (act_zero's check reads it back).
static float act_value_at(uint64_t seed, size_t i) {
  if (i < N_ACT_VALUES) return f32_bits(ACT_VALUES[i].in);
  if (i == N_ACT - 1) return 1.0f;
  return f32_bits((uint32_t)a3_rng_u64(seed, 1, i));
}

// What act_to_f32(act_from_f32(v)) must give, and whether got is it.
static int act_same(float got, float v, int bf16) {
  const float want = bf16 ? host_bf16(v) : v;
  if (bf16 && isnan(want)) return isnan(got);
  return bits_f32(got) == bits_f32(want);
}

// On be: h (N_ACT) -> act_from_f32 -> act_to_f32 -> h; then with zero,
// act_zero on all but the last element first.
static a3_status act_round_trip(const a3_backend *be, float *h, int zero) {
  a3_act *a = NULL;
  a3_status s = be->ops->alloc(be, (void **)&a, (size_t)N_ACT * be->act_bytes);
  if (s == A3_OK) s = a3_act_upload(be, a, h, N_ACT);
  if (s == A3_OK && zero) be->ops->act_zero(be, a, N_ACT - 1);
  if (s == A3_OK) s = a3_act_download(be, h, a, N_ACT);
  be->ops->release(be, a);
  return s;
}

static int act_row(const char *op, const char *shape, a3_precision prec, size_t wrong, int quiet) {
  if (!quiet || wrong)
    printf("%-24s %-58s %-5s %11zu %8.1e  %s\n", op, shape, precision_name(prec), wrong, 0.0,
           wrong ? "FAIL (values wrong)" : "PASS");
  return wrong == 0;
}

// The round trip on be; 1 when every value comes back as it must.
static int act_convert_check(const a3_backend *be, a3_precision prec, uint64_t seed, int quiet) {
  float *h = malloc((size_t)N_ACT * sizeof(float));
  if (!h) return 0;
  for (size_t i = 0; i < N_ACT; i++) h[i] = act_value_at(seed, i);
  const int bf16 = be->act_bytes == 2;
  size_t wrong = act_round_trip(be, h, 0) == A3_OK ? 0 : N_ACT;
  for (size_t i = 0; wrong < N_ACT && i < N_ACT; i++) {
    const float v = act_value_at(seed, i);
    if (act_same(h[i], v, bf16)) continue;
    if (!wrong++ && !quiet)
      printf("    0x%08x (%s): got 0x%08x\n", (unsigned)bits_f32(v),
             i < N_ACT_VALUES ? ACT_VALUES[i].what : "random bits", (unsigned)bits_f32(h[i]));
  }
  char shape[96];
  snprintf(shape, sizeof shape, "n=%d: %d hard cases, random bits, %s storage", N_ACT, N_ACT_VALUES,
           bf16 ? "bf16" : "fp32");
  free(h);
  return act_row("act_from_f32/to_f32", shape, prec, wrong, quiet);
}

// act_zero over all but the last element: +0 bits there, the last kept.
static int act_zero_check(const a3_backend *be, a3_precision prec, uint64_t seed, int quiet) {
  float *h = malloc((size_t)N_ACT * sizeof(float));
  if (!h) return 0;
  for (size_t i = 0; i < N_ACT; i++) h[i] = act_value_at(seed, i);
  size_t wrong = act_round_trip(be, h, 1) == A3_OK ? 0 : N_ACT;
  for (size_t i = 0; wrong < N_ACT && i + 1 < N_ACT; i++) wrong += bits_f32(h[i]) != 0u;
  if (wrong < N_ACT) wrong += bits_f32(h[N_ACT - 1]) != bits_f32(1.0f);
  char shape[96];
  snprintf(shape, sizeof shape, "n=%d, the element after left as it is", N_ACT - 1);
  free(h);
  return act_row("act_zero", shape, prec, wrong, quiet);
}

// The storage width the precision implies: bf16 on CUDA stores 2 bytes.
static int act_bytes_check(const a3_backend *ref, const a3_backend *cand, a3_precision prec,
                           int against_cpu) {
  const size_t want = !against_cpu && prec == A3_PRECISION_BF16 ? 2 : 4;
  const int ok = ref->act_bytes == 4 && cand->act_bytes == want;
  char shape[96];
  snprintf(shape, sizeof shape, "%s %zu (want %zu), %s %zu (want 4)", cand->name, cand->act_bytes,
           want, ref->name, ref->act_bytes);
  printf("%-24s %-58s %-5s %11s %8s  %s\n", "act_bytes", shape, precision_name(prec), "-", "-",
         ok ? "PASS" : "FAIL");
  return ok;
}

enum { N_ACT_ROWS = 3 };
// The rows above on cand; the number that fail.
static int act_checks(const a3_backend *ref, const a3_backend *cand, a3_precision prec,
                      int against_cpu) {
  const uint64_t seed = base_seed ^ 0xac7u;
  if (!host_bf16_agrees()) { // every bf16 expectation would be wrong
    printf("FAIL: host_bf16 disagrees with the table of hard cases\n");
    return N_ACT_ROWS;
  }
  return !act_bytes_check(ref, cand, prec, against_cpu) + !act_convert_check(cand, prec, seed, 0) +
         !act_zero_check(cand, prec, seed, 0);
}

// ---------------------------------------------------------------- negative checks
// A CPU backend with deliberate bugs in table ops; the rows of those ops
// must FAIL. A second one breaks the conversions, which every row uses, so
// it runs only the activation storage checks, which must FAIL.
static a3_backend_ops broken_ops, broken_cast_ops;
static const a3_backend broken_be = {
    .name = "cpu-broken", .ops = &broken_ops, .impl = NULL, .act_bytes = sizeof(float)};
static const a3_backend broken_cast_be = {
    .name = "cpu-broken-cast", .ops = &broken_cast_ops, .impl = NULL, .act_bytes = sizeof(float)};

static void broken_add_forward(const a3_backend *be, a3_act *out, const a3_act *a, const a3_act *b,
                               float scale, size_t n) {
  a3_backend_cpu()->ops->add_forward(be, out, a, b, scale, n);
  a3_f32_act(out)[n / 2] += 1.0f; // one wrong element
}
static void broken_linear_backward(const a3_backend *be, a3_act *dinp, float *dweight, float *dbias,
                                   const a3_act *dout, const a3_act *inp, const float *weight,
                                   int N, int IN, int OUT) {
  // overwrites the parameter gradients instead of accumulating
  if (dweight) memset(dweight, 0, (size_t)OUT * IN * sizeof(float));
  if (dbias) memset(dbias, 0, (size_t)OUT * sizeof(float));
  a3_backend_cpu()->ops->linear_backward(be, dinp, dweight, dbias, dout, inp, weight, N, IN, OUT);
}
static void broken_relu_backward(const a3_backend *be, a3_act *dinp, const a3_act *dout,
                                 const a3_act *inp, size_t n) {
  a3_backend_cpu()->ops->relu_backward(be, dinp, dout, inp, n - 1); // last element unwritten
}

static void broken_sampler_step(const a3_backend *be, float *x_prev, const float *eps,
                                const float *x_t, const float *noise, size_t n,
                                const a3_sampler_scalars *s) {
  a3_backend_cpu()->ops->sampler_step(be, x_prev, eps, x_t, noise, n, s);
  x_prev[n / 3] = nextafterf(x_prev[n / 3], INFINITY); // one element 1 ulp off: not bitwise
}

static void broken_training_noise(const a3_backend *be, float *x_t, float *noise, float *tf,
                                  const float *x0, const float *acp, uint64_t seed, uint64_t step,
                                  uint64_t sample0, int batch, int per_sample, int T) {
  a3_backend_cpu()->ops->training_noise(be, x_t, noise, tf, x0, acp, seed, step, sample0, batch,
                                        per_sample, T);
  tf[batch / 2] = nextafterf(tf[batch / 2], INFINITY); // below 1e-6, yet not the timestep
}

static void broken_act_from_f32(const a3_backend *be, a3_act *dst, const float *src, size_t n) {
  a3_backend_cpu()->ops->act_from_f32(be, dst, src, n);
  uint32_t u = bits_f32(a3_f32_act(dst)[0]) ^ 1u; // one value's last bit flipped (a NaN too)
  a3_f32_act(dst)[0] = f32_bits(u);
}
static void broken_act_zero(const a3_backend *be, a3_act *x, size_t n) {
  a3_backend_cpu()->ops->act_zero(be, x, n - 1); // last element not zeroed
}

// Each of the table's broken ops fails every row it has.
static int negative_table_checks(a3_precision prec) {
  broken_ops = *a3_backend_cpu()->ops;
  broken_ops.add_forward = broken_add_forward;
  broken_ops.linear_backward = broken_linear_backward;
  broken_ops.relu_backward = broken_relu_backward;
  broken_ops.sampler_step = broken_sampler_step;
  broken_ops.training_noise = broken_training_noise;
  const char *expect_fail[] = {"add_fwd", "linear_bwd", "relu_bwd", "sampler_step",
                               "training_noise"};
  int bad = 0;
  for (size_t k = 0; k < sizeof expect_fail / sizeof *expect_fail; k++) {
    int rows = 0, failed = 0;
    for (int i = 0; i < N_CASES; i++) {
      if (strcmp(cases[i].op, expect_fail[k]) != 0) continue;
      if (cases[i].nulls && strstr(cases[i].nulls, "dweight")) continue; // nothing to accumulate
      rows++;
      failed += !run_case(i, a3_backend_cpu(), &broken_be, prec, 1);
    }
    const int ok = rows > 0 && failed == rows;
    printf("negative check %-12s %d/%d rows reported FAIL: %s\n", expect_fail[k], failed, rows,
           ok ? "PASS" : "FAIL (the comparer missed a broken op)");
    bad += !ok;
  }
  return bad;
}

// The broken conversions fail the storage checks.
static int negative_act_checks(a3_precision prec) {
  broken_cast_ops = *a3_backend_cpu()->ops;
  broken_cast_ops.act_from_f32 = broken_act_from_f32;
  broken_cast_ops.act_zero = broken_act_zero;
  const uint64_t seed = base_seed ^ 0xac7u;
  const int caught[2] = {!act_convert_check(&broken_cast_be, prec, seed, 1),
                         !act_zero_check(&broken_cast_be, prec, seed, 1)};
  const char *what[2] = {"act_from_f32", "act_zero"};
  int bad = 0;
  for (int k = 0; k < 2; k++) {
    printf("negative check %-12s reported FAIL: %s\n", what[k],
           caught[k] ? "PASS" : "FAIL (the storage check missed a broken op)");
    bad += !caught[k];
  }
  return bad;
}

static int negative_checks(a3_precision prec) {
  printf("-- negative checks: a deliberately broken candidate must FAIL\n");
  return negative_table_checks(prec) + negative_act_checks(prec);
}

// ---------------------------------------------------------------- main
static int usage(const char *argv0) {
  fprintf(stderr, "usage: %s [--precision fp32|tf32|bf16] [--against cpu] [--seed N]\n", argv0);
  return 2;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0); // lines reach ctest's log even if the test crashes
  a3_precision prec = A3_PRECISION_FP32;
  int against_cpu = 0;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  base_seed =
      (uint64_t)ts.tv_sec * 1000000007ULL ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--precision") && i + 1 < argc) {
      const char *v = argv[++i];
      if (!strcmp(v, "fp32"))
        prec = A3_PRECISION_FP32;
      else if (!strcmp(v, "tf32"))
        prec = A3_PRECISION_TF32;
      else if (!strcmp(v, "bf16"))
        prec = A3_PRECISION_BF16;
      else
        return usage(argv[0]);
    } else if (!strcmp(argv[i], "--against") && i + 1 < argc) {
      if (strcmp(argv[++i], "cpu") != 0) return usage(argv[0]);
      against_cpu = 1;
    } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
      base_seed = strtoull(argv[++i], NULL, 0);
    } else {
      return usage(argv[0]);
    }
  }
  const a3_backend *ref = a3_backend_cpu();
  const a3_backend *cand = ref;
  if (!against_cpu) {
    a3_status s = a3_backend_cuda_create(0, prec, &cand);
    if (s == A3_ERR_CUDA || s == A3_ERR_UNIMPLEMENTED) {
      printf("SKIPPED: no usable CUDA backend: %s\n", a3_error_message());
      return 77;
    }
    if (s != A3_OK) {
      printf("FAIL: a3_backend_cuda_create: %s\n", a3_error_message());
      return 1;
    }
  }
  printf("test_cuda_ops: candidate %s against reference %s, precision %s, seed 0x%016llx "
         "(rerun with --seed)\n",
         cand->name, ref->name, precision_name(prec), (unsigned long long)base_seed);
  int failures = 0;
  if (!check_table(cand)) {
    printf("FAIL: the candidate's op table is incomplete\n");
    failures++;
  } else {
    printf("%-24s %-58s %-5s %11s %8s  %s\n", "op", "shape", "prec", "max-rel-err", "tol",
           "result");
    failures += act_checks(ref, cand, prec, against_cpu);
    for (int i = 0; i < N_CASES; i++) failures += !run_case(i, ref, cand, prec, 0);
    failures += batch_images_cases(ref, cand);
    failures += !optimizer_segments_case(ref, cand);
    if (prec == A3_PRECISION_BF16 && !against_cpu) failures += bf16_operand_checks(ref, cand);
  }
  const int negative = against_cpu ? negative_checks(prec) : 0;
  const int n_cases = N_ACT_ROWS + N_CASES + N_BATCH_IMAGES_CASES + 1 +
                      (prec == A3_PRECISION_BF16 && !against_cpu ? N_BF16_OPERAND_ROWS : 0);
  printf("test_cuda_ops: %d cases, %d passed, %d failed%s (%s, %s)\n", n_cases, n_cases - failures,
         failures,
         against_cpu ? (negative ? ", negative checks FAILED" : ", negative checks passed") : "",
         cand->name, precision_name(prec));
  if (!against_cpu) a3_backend_cuda_destroy(cand);
  return failures || negative ? 1 : 0;
}
