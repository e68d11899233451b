// Private structure of the U-Net (src/model/ only).
//
// The network is a flat list of layers in execution order (resnet, attention,
// downsample, upsample), between the stem (time embedding, conv_in) and the
// head (conv_norm_out, SiLU, conv_out). Blocks exist only while building: they
// decide the layers, the skip connections and the parameter names. Each module
// keeps indices into the parameter table, resolved once at build time; the
// pointers come from the table at call time, so a parameter frozen after the
// build simply gets a NULL gradient.
#ifndef A3FTA_UNET_INTERNAL_H
#define A3FTA_UNET_INTERNAL_H

#include "a3fta/model.h"

typedef struct {
  int weight, bias;  // parameter indices (bias -1: none)
  a3_conv2d_shape s; // s.B is set by the plan
} unet_conv;

typedef struct {
  int weight, bias;
  int C, G;
  float eps;
} unet_norm;

// A linear layer, optionally with LoRA: y = W x + b + B (scale * A x).
typedef struct {
  int weight, bias;
  int IN, OUT;
  int lora_a, lora_b; // lora_A.weight (R, IN), lora_B.weight (OUT, R); -1: no LoRA
  int R;
  float lora_scale; // alpha / R
  a3_act *lora_z;   // (N, R) saved: scale * A x, lora_B's input (planned)
} unet_linear;

// The bottleneck adapter y = x + g * up(act(down(x))) over N tokens (N, C).
typedef struct {
  unet_linear down, up; // adapter.down (C -> r), adapter.up (r -> C)
  int gate;             // adapter.gate (1), or -1: none (g = 1)
  a3_activation act;
  int r;
  // saved by the forward (planned):
  a3_act *d; // (N, r) down's output
  a3_act *z; // (N, r) act(d), up's input (d itself for identity)
  a3_act *u; // (N, C) up's output, kept only with a gate (for its gradient)
} unet_adapter;

typedef struct {
  unet_norm norm1, norm2;
  unet_conv conv1, conv2, shortcut; // shortcut.weight -1: identity
  unet_linear temb_proj;
  float scale; // 1 / output_scale_factor
  // saved by the forward (planned); the input x is the previous layer's output
  a3_act *h;            // (B, C_out, HW) conv1 output + time projection
  float *mean1, *rstd1; // (B, G)
  float *mean2, *rstd2; // (B, G)
} unet_resnet;

typedef struct {
  unet_norm norm;
  unet_linear q, k, v, out; // to_q, to_k, to_v, to_out.0
  int heads;
  float scale; // 1 / rescale_output_factor
  // saved by the forward (planned):
  a3_act *tok;                   // (B, T, C) group_norm output as tokens
  a3_act *q_act, *k_act, *v_act; // (B, T, C)
  float *probs;                  // (B, heads, T, T)
  a3_act *merged;     // (B, T, C) softmax(QK^T/sqrt(d))V, heads merged: the input of to_out.0
  float *mean, *rstd; // (B, G)
  // the adapter (has_adapter):
  bool has_adapter;
  a3_adapter_placement place;
  unet_adapter ad;
  a3_act *adapted; // (B, T, C) saved, pre_out: adapter(merged), to_out.0's input
  a3_act *proj;    // (B, T, C) saved, post_out: to_out.0's output, the adapter's input
} unet_attn;

typedef enum { UNET_RESNET, UNET_ATTN, UNET_DOWNSAMPLE, UNET_UPSAMPLE } unet_kind;

typedef struct {
  unet_kind kind;
  int C_in;           // input channels (a resnet's include its concatenated skip)
  int C_out, H, W;    // output channels; input height and width
  int skip_in;        // up-block resnet: index of the skip concatenated to its input, else -1
  int skip_out;       // this layer's output is skip #k, else -1
  int p_begin, p_end; // its parameters: table indices [p_begin, p_end)
  union {
    unet_resnet res;
    unet_attn attn;
    unet_conv conv; // downsample / upsample
  } u;
  const a3_act *in; // (B, C_in - C_skip, H, W) the previous layer's output (planned)
  a3_act *cat;      // (B, C_in, H, W) [in, skip] when skip_in >= 0 (planned)
  a3_act *out;      // (B, C_out, OH, OW) saved (planned)
  // set at the start of each backward:
  bool req_main; // the gradient of `in` is needed
  bool req_in;   // the gradient of the layer input (in, or cat) is needed
  bool req_out;  // the gradient of out is needed (else the backward skips the layer)
} unet_layer;

typedef struct {
  int C, H, W;
  a3_act *act;  // (B, C, H, W) the producing layer's out
  a3_act *grad; // (B, C, H, W) written by the concat backward (planned)
  bool req;     // its gradient is needed (set each backward)
} unet_skip;

// Temporaries of one forward or backward (planned).
typedef struct {
  a3_act *s[5];      // (max_act) general temporaries, one layer at a time
  a3_act *d[2];      // (max_act) the main-path gradient and a concat gradient
  a3_act *dtemb_act; // (B, T4) gradient of silu(temb), summed over resnets
  a3_act *dtemb_tmp; // (B, T4) one resnet's share of it
  a3_act *dtemb;     // (B, T4)
  a3_act *dt;        // (B, C_max) a time projection or its gradient
  void *work;        // op workspace (im2col, attention scores)
  // with extras only (else NULL):
  a3_act *x_tmp; // (max_act) LoRA's B output / input gradient, the adapter's up output
  a3_act *x_r;   // (max N * rank) a LoRA or adapter bottleneck gradient
} unet_scratch;

struct a3_unet {
  a3_arch_config arch;
  a3_unet_extras extras; // all zero: none
  const a3_backend *be;
  // parameter table
  a3_param *table;
  float *fan_in; // (n_params) init: > 0 U(+-1/sqrt(fan_in)), 0 ones (norm weight, gate), -1 zeros
  int n_params, cap_params;
  size_t n_floats;
  float *params, *grads;
  // stem
  int C0, T4;               // block_out_channels[0] and the time embedding width 4 * C0
  unet_linear time1, time2; // time_embedding.linear_1, linear_2
  unet_conv conv_in;
  // body
  unet_layer *layers;
  int n_layers, cap_layers;
  unet_skip *skips;
  int n_skips, cap_skips;
  int attention_blocks;
  // head
  unet_norm norm_out;
  unet_conv conv_out;
  // plan
  int B, H, W;
  size_t max_act; // elements of the largest (B, C, H, W) tensor any layer touches
  size_t max_c;   // largest channel count
  void *arena;
  a3_unet_memory mem;
  a3_act *x_in;                          // (B, Cin, H, W) the (centred) input
  a3_act *minus_one;                     // (B, Cin) all -1: centring is 2x + (-1)
  a3_act *t_sin;                         // (B, C0) sinusoidal embedding
  a3_act *t_l1, *t_a1, *temb, *temb_act; // (B, T4) linear_1, SiLU, linear_2, SiLU
  a3_act *h0;                            // (B, C0, H, W) conv_in output = skip 0
  float *mean_out, *rstd_out;            // head: (B, G), (B, G)
  unet_scratch sc;
  bool forward_done;
  bool temb_req; // the time embedding gets a gradient (set each backward)
};

// ---------------------------------------------------------------- parameters
static inline float *unet_p(const a3_unet *m, int i) {
  return i < 0 ? NULL : m->params + m->table[i].offset;
}
// NULL for a frozen (or absent) parameter: the ops then skip its gradient.
static inline float *unet_g(const a3_unet *m, int i) {
  return (i < 0 || !m->table[i].trainable) ? NULL : m->grads + m->table[i].offset;
}
static inline bool unet_trains(const a3_unet *m, int i) { return i >= 0 && m->table[i].trainable; }
bool unet_range_trains(const a3_unet *m, int begin, int end);

// ---------------------------------------------------------------- module ops (unet_modules.c)
// Thin wrappers that fetch parameter pointers from the table. A backward
// whose outputs are all unneeded (din NULL, parameters frozen) does nothing.
// A linear with LoRA adds it (using sc.x_tmp and sc.x_r as temporaries).
void unet_conv_fwd(const a3_unet *m, const unet_conv *c, a3_act *out, const a3_act *in);
void unet_conv_bwd(const a3_unet *m, const unet_conv *c, a3_act *din, const a3_act *dout,
                   const a3_act *in);
bool unet_conv_trains(const a3_unet *m, const unet_conv *c);
void unet_norm_fwd(const a3_unet *m, const unet_norm *n, a3_act *out, float *mean, float *rstd,
                   const a3_act *in, int HW);
void unet_norm_bwd(const a3_unet *m, const unet_norm *n, a3_act *din, const a3_act *dout,
                   const a3_act *in, const float *mean, const float *rstd, int HW);
bool unet_norm_trains(const a3_unet *m, const unet_norm *n);
// silu(groupnorm(in)) fused: the normalised tensor is never stored; the
// backward recomputes it from `in` and the statistics.
void unet_norm_silu_fwd(const a3_unet *m, const unet_norm *n, a3_act *out, float *mean, float *rstd,
                        const a3_act *in, int HW);
void unet_norm_silu_bwd(const a3_unet *m, const unet_norm *n, a3_act *din, const a3_act *dout,
                        const a3_act *in, const float *mean, const float *rstd, int HW);
void unet_linear_fwd(const a3_unet *m, const unet_linear *l, a3_act *out, const a3_act *in, int N);
void unet_linear_bwd(const a3_unet *m, const unet_linear *l, a3_act *din, const a3_act *dout,
                     const a3_act *in, int N);
bool unet_linear_trains(const a3_unet *m, const unet_linear *l);

// ---------------------------------------------------------------- layers
void unet_resnet_fwd(a3_unet *m, unet_layer *L, const a3_act *x); // x: (B, C_in, H, W)
void unet_resnet_bwd(a3_unet *m, unet_layer *L, const a3_act *x, const a3_act *dout, a3_act *dx);
void unet_attn_fwd(a3_unet *m, unet_layer *L);
void unet_attn_bwd(a3_unet *m, unet_layer *L, const a3_act *dout, a3_act *dx);
bool unet_adapter_trains(const a3_unet *m, const unet_adapter *ad);

// ---------------------------------------------------------------- plan (unet_plan.c)
void unet_release_plan(a3_unet *m);

#endif
