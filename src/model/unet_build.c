// Building the U-Net from its diffusers config: the layer list in execution
// order, the skip connections, and the parameter table in diffusers'
// registration order (which differs: blocks register their attentions before
// their resnets, and UNet2DModel registers up_blocks before mid_block), and
// the modules a strategy adds (a3_unet_extras) in every attention block.
#include "unet_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- table
static a3_status grow(void **items, int *cap, int need, size_t item_size) {
  if (need <= *cap) return A3_OK;
  int new_cap = *cap ? *cap * 2 : 64;
  while (new_cap < need) new_cap *= 2;
  void *grown = realloc(*items, (size_t)new_cap * item_size);
  if (!grown) return A3_FAIL(A3_ERR_NOMEM, "cannot grow a table to %d entries", new_cap);
  memset((char *)grown + (size_t)*cap * item_size, 0, (size_t)(new_cap - *cap) * item_size);
  *items = grown;
  *cap = new_cap;
  return A3_OK;
}

// Appends "prefix.leaf" with its shape; *idx gets its table index.
static a3_status add_param(a3_unet *m, const char *prefix, const char *leaf, int ndim,
                           const int *shape, float fan_in, bool attn, int *idx) {
  A3_TRY(grow((void **)&m->table, &m->cap_params, m->n_params + 1, sizeof(a3_param)));
  float *fans = realloc(m->fan_in, (size_t)m->cap_params * sizeof(float));
  if (!fans) return A3_FAIL(A3_ERR_NOMEM, "cannot grow the parameter table");
  m->fan_in = fans;
  a3_param *p = &m->table[m->n_params];
  int n = snprintf(p->name, sizeof p->name, "%s.%s", prefix, leaf);
  if (n < 0 || (size_t)n >= sizeof p->name)
    return A3_FAIL(A3_ERR_INTERNAL, "parameter name %s.%s is longer than %d bytes", prefix, leaf,
                   A3_PARAM_NAME_MAX - 1);
  p->ndim = ndim;
  p->numel = 1;
  for (int d = 0; d < ndim; d++) {
    p->shape[d] = shape[d];
    p->numel *= (size_t)shape[d];
  }
  p->offset = m->n_floats;
  p->trainable = true;
  p->in_attention = attn;
  p->is_bias = strcmp(leaf, "bias") == 0 || (n > 5 && !strcmp(p->name + n - 5, ".bias"));
  p->added = false;
  m->fan_in[m->n_params] = fan_in;
  m->n_floats += p->numel;
  *idx = m->n_params++;
  return A3_OK;
}

// A conv "prefix.weight" (OC, C, k, k) and "prefix.bias" (OC).
static a3_status reg_conv(a3_unet *m, const char *prefix, bool attn, unet_conv *c) {
  const a3_conv2d_shape *s = &c->s;
  const int wshape[4] = {s->OC, s->C, s->KH, s->KW};
  const float fan_in = (float)(s->C * s->KH * s->KW);
  A3_TRY(add_param(m, prefix, "weight", 4, wshape, fan_in, attn, &c->weight));
  A3_TRY(add_param(m, prefix, "bias", 1, &s->OC, fan_in, attn, &c->bias));
  return A3_OK;
}

static a3_status reg_norm(a3_unet *m, const char *prefix, bool attn, unet_norm *n) {
  A3_TRY(add_param(m, prefix, "weight", 1, &n->C, 0.0f, attn, &n->weight));
  A3_TRY(add_param(m, prefix, "bias", 1, &n->C, -1.0f, attn, &n->bias));
  return A3_OK;
}

static a3_status reg_linear(a3_unet *m, const char *prefix, bool attn, unet_linear *l) {
  const int wshape[2] = {l->OUT, l->IN};
  A3_TRY(add_param(m, prefix, "weight", 2, wshape, (float)l->IN, attn, &l->weight));
  A3_TRY(add_param(m, prefix, "bias", 1, &l->OUT, (float)l->IN, attn, &l->bias));
  return A3_OK;
}

static void fmt(char *buf, size_t size, const char *format, ...) A3_PRINTF(3, 4);
static void fmt(char *buf, size_t size, const char *format, ...) {
  va_list ap;
  va_start(ap, format);
  vsnprintf(buf, size, format, ap); // names are short; add_param checks the final length
  va_end(ap);
}

// ---------------------------------------------------------------- modules
static unet_conv conv_def(int C, int OC, int k, int stride, int pad_lt, int pad_rb, int H, int W) {
  unet_conv c = {.weight = -1, .bias = -1};
  c.s = (a3_conv2d_shape){.B = 1,
                          .C = C,
                          .H = H,
                          .W = W,
                          .OC = OC,
                          .KH = k,
                          .KW = k,
                          .stride = stride,
                          .pad_top = pad_lt,
                          .pad_left = pad_lt,
                          .pad_bottom = pad_rb,
                          .pad_right = pad_rb};
  return c;
}

static unet_norm norm_def(const a3_unet *m, int C) {
  return (unet_norm){.weight = -1,
                     .bias = -1,
                     .C = C,
                     .G = (int)m->arch.norm_num_groups,
                     .eps = (float)m->arch.norm_eps};
}

static unet_linear linear_def(int IN, int OUT) {
  return (unet_linear){.weight = -1, .bias = -1, .IN = IN, .OUT = OUT, .lora_a = -1, .lora_b = -1};
}

// ---------------------------------------------------------------- layers
static a3_status add_layer(a3_unet *m, unet_kind kind, int C_in, int C_out, int H, int W,
                           int *idx) {
  A3_TRY(grow((void **)&m->layers, &m->cap_layers, m->n_layers + 1, sizeof(unet_layer)));
  unet_layer *L = &m->layers[m->n_layers];
  *L = (unet_layer){
      .kind = kind, .C_in = C_in, .C_out = C_out, .H = H, .W = W, .skip_in = -1, .skip_out = -1};
  *idx = m->n_layers++;
  return A3_OK;
}

static a3_status push_skip(a3_unet *m, int layer, int C, int H, int W) {
  A3_TRY(grow((void **)&m->skips, &m->cap_skips, m->n_skips + 1, sizeof(unet_skip)));
  m->skips[m->n_skips] = (unet_skip){.C = C, .H = H, .W = W};
  if (layer >= 0) m->layers[layer].skip_out = m->n_skips;
  m->n_skips++;
  return A3_OK;
}

static a3_status add_resnet(a3_unet *m, int C_in, int C_out, int H, int W, float out_scale,
                            int *idx) {
  A3_TRY(add_layer(m, UNET_RESNET, C_in, C_out, H, W, idx));
  unet_resnet *r = &m->layers[*idx].u.res;
  r->norm1 = norm_def(m, C_in);
  r->conv1 = conv_def(C_in, C_out, 3, 1, 1, 1, H, W);
  r->temb_proj = linear_def(m->T4, C_out);
  r->norm2 = norm_def(m, C_out);
  r->conv2 = conv_def(C_out, C_out, 3, 1, 1, 1, H, W);
  r->shortcut = conv_def(C_in, C_out, 1, 1, 0, 0, H, W);
  r->scale = 1.0f / out_scale;
  return A3_OK;
}

static a3_status add_attn(a3_unet *m, int C, int H, int W, float out_scale, int *idx) {
  A3_TRY(add_layer(m, UNET_ATTN, C, C, H, W, idx));
  unet_attn *a = &m->layers[*idx].u.attn;
  a->norm = norm_def(m, C);
  a->q = a->k = a->v = a->out = linear_def(C, C);
  const int64_t head_dim = m->arch.attention_head_dim; // 0 = null: one head of all C
  a->heads = head_dim ? (int)(C / head_dim) : 1;
  a->scale = 1.0f / out_scale;
  m->attention_blocks++;
  return A3_OK;
}

// Parameters in diffusers' order: ResnetBlock2D registers norm1, conv1,
// time_emb_proj, norm2, conv2, conv_shortcut (only when C_in != C_out).
static a3_status reg_resnet(a3_unet *m, const char *prefix, int idx) {
  unet_layer *L = &m->layers[idx];
  unet_resnet *r = &L->u.res;
  char name[A3_PARAM_NAME_MAX];
  L->p_begin = m->n_params;
  fmt(name, sizeof name, "%s.norm1", prefix);
  A3_TRY(reg_norm(m, name, false, &r->norm1));
  fmt(name, sizeof name, "%s.conv1", prefix);
  A3_TRY(reg_conv(m, name, false, &r->conv1));
  fmt(name, sizeof name, "%s.time_emb_proj", prefix);
  A3_TRY(reg_linear(m, name, false, &r->temb_proj));
  fmt(name, sizeof name, "%s.norm2", prefix);
  A3_TRY(reg_norm(m, name, false, &r->norm2));
  fmt(name, sizeof name, "%s.conv2", prefix);
  A3_TRY(reg_conv(m, name, false, &r->conv2));
  if (L->C_in != L->C_out) {
    fmt(name, sizeof name, "%s.conv_shortcut", prefix);
    A3_TRY(reg_conv(m, name, false, &r->shortcut));
  }
  L->p_end = m->n_params;
  return A3_OK;
}

// An added parameter: never a base attention parameter, flagged `added`.
static a3_status add_extra(a3_unet *m, const char *prefix, const char *leaf, int ndim,
                           const int *shape, float fan_in, int *idx) {
  A3_TRY(add_param(m, prefix, leaf, ndim, shape, fan_in, false, idx));
  m->table[*idx].added = true;
  return A3_OK;
}

// A linear "prefix.weight", "prefix.bias", then with LoRA (PEFT's names and
// order) "prefix.lora_A.weight" (R, IN), kaiming_uniform(a = sqrt 5) =
// U(+-1/sqrt(IN)), and "prefix.lora_B.weight" (OUT, R), zeros.
static a3_status reg_linear_lora(a3_unet *m, const char *prefix, unet_linear *l) {
  A3_TRY(reg_linear(m, prefix, true, l));
  const int R = m->extras.lora_rank;
  if (R <= 0) return A3_OK;
  const int a_shape[2] = {R, l->IN}, b_shape[2] = {l->OUT, R};
  A3_TRY(add_extra(m, prefix, "lora_A.weight", 2, a_shape, (float)l->IN, &l->lora_a));
  A3_TRY(add_extra(m, prefix, "lora_B.weight", 2, b_shape, -1.0f, &l->lora_b));
  l->R = R;
  l->lora_scale = (float)(m->extras.lora_alpha / R);
  return A3_OK;
}

// "prefix.adapter.{down.weight, down.bias, up.weight, up.bias[, gate]}":
// down as PyTorch's Linear default, up zeros, the gate 1.
static a3_status reg_adapter(a3_unet *m, const char *prefix, unet_attn *a, int C) {
  const int r = m->extras.adapter_rank;
  unet_adapter *ad = &a->ad;
  *ad = (unet_adapter){.down = linear_def(C, r),
                       .up = linear_def(r, C),
                       .gate = -1,
                       .act = m->extras.adapter_activation,
                       .r = r};
  a->has_adapter = true;
  a->place = m->extras.adapter_placement;
  const int down_w[2] = {r, C}, up_w[2] = {C, r}, one = 1;
  A3_TRY(add_extra(m, prefix, "adapter.down.weight", 2, down_w, (float)C, &ad->down.weight));
  A3_TRY(add_extra(m, prefix, "adapter.down.bias", 1, &r, (float)C, &ad->down.bias));
  A3_TRY(add_extra(m, prefix, "adapter.up.weight", 2, up_w, -1.0f, &ad->up.weight));
  A3_TRY(add_extra(m, prefix, "adapter.up.bias", 1, &C, -1.0f, &ad->up.bias));
  if (m->extras.adapter_gate)
    A3_TRY(add_extra(m, prefix, "adapter.gate", 1, &one, 0.0f, &ad->gate));
  return A3_OK;
}

// diffusers' Attention: group_norm, to_q, to_k, to_v, to_out.0 (each linear
// followed by its LoRA, if any), then the adapter, if any.
static a3_status reg_attn(a3_unet *m, const char *prefix, int idx) {
  unet_layer *L = &m->layers[idx];
  unet_attn *a = &L->u.attn;
  char name[A3_PARAM_NAME_MAX];
  L->p_begin = m->n_params;
  fmt(name, sizeof name, "%s.group_norm", prefix);
  A3_TRY(reg_norm(m, name, true, &a->norm));
  fmt(name, sizeof name, "%s.to_q", prefix);
  A3_TRY(reg_linear_lora(m, name, &a->q));
  fmt(name, sizeof name, "%s.to_k", prefix);
  A3_TRY(reg_linear_lora(m, name, &a->k));
  fmt(name, sizeof name, "%s.to_v", prefix);
  A3_TRY(reg_linear_lora(m, name, &a->v));
  fmt(name, sizeof name, "%s.to_out.0", prefix);
  A3_TRY(reg_linear_lora(m, name, &a->out));
  if (m->extras.adapter_rank > 0) A3_TRY(reg_adapter(m, prefix, a, L->C_in));
  L->p_end = m->n_params;
  return A3_OK;
}

static a3_status reg_sampler(a3_unet *m, const char *prefix, int idx) {
  unet_layer *L = &m->layers[idx];
  L->p_begin = m->n_params;
  A3_TRY(reg_conv(m, prefix, false, &L->u.conv));
  L->p_end = m->n_params;
  return A3_OK;
}

// ---------------------------------------------------------------- blocks
typedef struct {
  int *stack; // skip indices not yet consumed by the up path
  int n;
  int H, W, C; // current resolution and channels of the main path
} build_state;

// DownBlock2D / AttnDownBlock2D: layers_per_block resnets (each followed by an
// attention in Attn blocks), every one's output a skip; then Downsample2D
// (whose output is one more skip) on all but the last block.
static a3_status down_block(a3_unet *m, build_state *st, int i) {
  const int C = (int)m->arch.block_out_channels[i], L = (int)m->arch.layers_per_block;
  const bool attn = m->arch.down_block_types[i] == A3_DOWN_ATTN;
  const bool last = i == m->arch.n_block_out_channels - 1;
  const int first = m->n_layers, stride = attn ? 2 : 1;
  for (int j = 0; j < L; j++) {
    int res, top;
    A3_TRY(add_resnet(m, j == 0 ? st->C : C, C, st->H, st->W, 1.0f, &res));
    top = res;
    if (attn) A3_TRY(add_attn(m, C, st->H, st->W, 1.0f, &top));
    st->stack[st->n++] = m->n_skips;
    A3_TRY(push_skip(m, top, C, st->H, st->W));
  }
  st->C = C;
  char prefix[A3_PARAM_NAME_MAX];
  for (int j = 0; attn && j < L; j++) {
    fmt(prefix, sizeof prefix, "down_blocks.%d.attentions.%d", i, j);
    A3_TRY(reg_attn(m, prefix, first + j * stride + 1));
  }
  for (int j = 0; j < L; j++) {
    fmt(prefix, sizeof prefix, "down_blocks.%d.resnets.%d", i, j);
    A3_TRY(reg_resnet(m, prefix, first + j * stride));
  }
  if (last) return A3_OK;
  // downsample_padding 0: diffusers pads (0, 1, 0, 1) and convolves unpadded.
  const int p = (int)m->arch.downsample_padding;
  int ds;
  A3_TRY(add_layer(m, UNET_DOWNSAMPLE, C, C, st->H, st->W, &ds));
  m->layers[ds].u.conv = conv_def(C, C, 3, 2, p, p == 0 ? 1 : p, st->H, st->W);
  st->H = a3_conv2d_out_h(&m->layers[ds].u.conv.s);
  st->W = a3_conv2d_out_w(&m->layers[ds].u.conv.s);
  st->stack[st->n++] = m->n_skips;
  A3_TRY(push_skip(m, ds, C, st->H, st->W));
  fmt(prefix, sizeof prefix, "down_blocks.%d.downsamplers.0.conv", i);
  return reg_sampler(m, prefix, ds);
}

// UNetMidBlock2D: resnet, attention, resnet, all with mid_block_scale_factor.
// Its parameters are registered later (after the up blocks): *first keeps its
// first layer.
static a3_status mid_block_layers(a3_unet *m, build_state *st, int *first) {
  const float s = (float)m->arch.mid_block_scale_factor;
  int idx;
  A3_TRY(add_resnet(m, st->C, st->C, st->H, st->W, s, first));
  A3_TRY(add_attn(m, st->C, st->H, st->W, s, &idx));
  return add_resnet(m, st->C, st->C, st->H, st->W, s, &idx);
}

static a3_status mid_block_params(a3_unet *m, int first) {
  A3_TRY(reg_attn(m, "mid_block.attentions.0", first + 1));
  A3_TRY(reg_resnet(m, "mid_block.resnets.0", first));
  return reg_resnet(m, "mid_block.resnets.1", first + 2);
}

// The skip channels diffusers' UpBlock2D expects for its resnet j (a check of
// our skip bookkeeping against its formula).
static int expected_skip_channels(const a3_arch_config *a, int i, int j) {
  const int n = a->n_block_out_channels, L = (int)a->layers_per_block;
  const int in_ch = (int)a->block_out_channels[n - 1 - (i + 1 < n - 1 ? i + 1 : n - 1)];
  const int out_ch = (int)a->block_out_channels[n - 1 - i];
  return j == L ? in_ch : out_ch;
}

// UpBlock2D / AttnUpBlock2D: layers_per_block + 1 resnets, each on [h, popped
// skip] (then an attention in Attn blocks); Upsample2D on all but the last.
static a3_status up_block(a3_unet *m, build_state *st, int i) {
  const int n = m->arch.n_block_out_channels;
  const int C = (int)m->arch.block_out_channels[n - 1 - i], L = (int)m->arch.layers_per_block;
  const bool attn = m->arch.up_block_types[i] == A3_UP_ATTN;
  const int first = m->n_layers, stride = attn ? 2 : 1;
  for (int j = 0; j <= L; j++) {
    const int k = st->stack[--st->n];
    const unet_skip *sk = &m->skips[k];
    if (sk->C != expected_skip_channels(&m->arch, i, j) || sk->H != st->H || sk->W != st->W)
      return A3_FAIL(A3_ERR_INTERNAL, "up_blocks.%d.resnets.%d: skip %d is (%d, %d, %d)", i, j, k,
                     sk->C, sk->H, sk->W);
    int res, top;
    A3_TRY(add_resnet(m, st->C + sk->C, C, st->H, st->W, 1.0f, &res));
    m->layers[res].skip_in = k;
    st->C = C;
    if (attn) A3_TRY(add_attn(m, C, st->H, st->W, 1.0f, &top));
  }
  char prefix[A3_PARAM_NAME_MAX];
  for (int j = 0; attn && j <= L; j++) {
    fmt(prefix, sizeof prefix, "up_blocks.%d.attentions.%d", i, j);
    A3_TRY(reg_attn(m, prefix, first + j * stride + 1));
  }
  for (int j = 0; j <= L; j++) {
    fmt(prefix, sizeof prefix, "up_blocks.%d.resnets.%d", i, j);
    A3_TRY(reg_resnet(m, prefix, first + j * stride));
  }
  if (i == n - 1) return A3_OK;
  int us;
  A3_TRY(add_layer(m, UNET_UPSAMPLE, C, C, st->H, st->W, &us));
  st->H *= 2;
  st->W *= 2;
  m->layers[us].u.conv = conv_def(C, C, 3, 1, 1, 1, st->H, st->W); // runs on the upsampled map
  fmt(prefix, sizeof prefix, "up_blocks.%d.upsamplers.0.conv", i);
  return reg_sampler(m, prefix, us);
}

// ---------------------------------------------------------------- validation
static a3_status check_arch(const a3_arch_config *a) {
  const int n = a->n_block_out_channels;
  if (n < 1 || a->n_down_block_types != n || a->n_up_block_types != n)
    return A3_FAIL(A3_ERR_CONFIG,
                   "model.arch: block_out_channels, down_block_types and up_block_types need the "
                   "same number of entries (got %d, %d, %d)",
                   n, a->n_down_block_types, a->n_up_block_types);
  if (a->layers_per_block < 1 || a->norm_num_groups < 1 || a->in_channels < 1 ||
      a->out_channels < 1 || a->downsample_padding < 0)
    return A3_FAIL(A3_ERR_CONFIG, "model.arch: sizes must be positive");
  for (int i = 0; i < n; i++) {
    const int64_t C = a->block_out_channels[i];
    if (C < 1 || C % a->norm_num_groups)
      return A3_FAIL(A3_ERR_CONFIG,
                     "model.arch.block_out_channels[%d] = %lld is not a multiple of "
                     "norm_num_groups %lld",
                     i, (long long)C, (long long)a->norm_num_groups);
    if (a->attention_head_dim > 0 && C % a->attention_head_dim)
      return A3_FAIL(A3_ERR_CONFIG,
                     "model.arch.block_out_channels[%d] = %lld is not a multiple of "
                     "attention_head_dim %lld",
                     i, (long long)C, (long long)a->attention_head_dim);
  }
  const int64_t step = (int64_t)1 << (n - 1);
  if (a->sample_size < step || a->sample_size % step)
    return A3_FAIL(A3_ERR_CONFIG,
                   "model.arch.sample_size %lld is not a multiple of 2^(blocks - 1) = %lld",
                   (long long)a->sample_size, (long long)step);
  if (a->time_embedding_type != A3_TIME_EMB_POSITIONAL)
    return A3_FAIL(A3_ERR_UNIMPLEMENTED, "model.arch.time_embedding_type: only positional so far");
  if (a->act_fn != A3_ACT_SILU)
    return A3_FAIL(A3_ERR_UNIMPLEMENTED, "model.arch.act_fn: only silu so far");
  if (a->dropout != 0.0) return A3_FAIL(A3_ERR_UNIMPLEMENTED, "model.arch.dropout: only 0 so far");
  return A3_OK;
}

static a3_status check_extras(const a3_unet_extras *e) {
  if (e->adapter_rank < 0 || e->lora_rank < 0)
    return A3_FAIL(A3_ERR_CONFIG, "model extras: adapter rank %d and LoRA rank %d must be >= 0",
                   e->adapter_rank, e->lora_rank);
  if (e->adapter_rank > 0 &&
      ((int)e->adapter_activation < 0 || (int)e->adapter_activation > (int)A3_ACT_IDENTITY))
    return A3_FAIL(A3_ERR_CONFIG, "model extras: unknown adapter activation %d",
                   (int)e->adapter_activation);
  if (e->adapter_rank > 0 && (int)e->adapter_placement != (int)A3_PLACEMENT_PRE_OUT &&
      (int)e->adapter_placement != (int)A3_PLACEMENT_POST_OUT)
    return A3_FAIL(A3_ERR_CONFIG, "model extras: unknown adapter placement %d",
                   (int)e->adapter_placement);
  if (e->lora_rank > 0 && !isfinite(e->lora_alpha))
    return A3_FAIL(A3_ERR_CONFIG, "model extras: LoRA alpha must be finite");
  return A3_OK;
}

a3_unet_extras a3_unet_extras_from_strategy(const a3_strategy_config *s) {
  a3_unet_extras e = {0};
  switch (s->name) {
  case A3_STRATEGY_A3FTA:
  case A3_STRATEGY_ADAPTER:
    e.adapter_rank = (int)s->adapter.rank;
    e.adapter_activation = s->adapter.activation;
    e.adapter_placement = s->adapter.placement;
    e.adapter_gate = s->adapter.gate;
    break;
  case A3_STRATEGY_LORA:
    e.lora_rank = (int)s->lora.rank;
    e.lora_alpha = s->lora.alpha;
    break;
  case A3_STRATEGY_FULL:
  case A3_STRATEGY_ATTENTION:
  case A3_STRATEGY_BITFIT: break;
  }
  return e;
}

// ---------------------------------------------------------------- build
static a3_status build_body(a3_unet *m) {
  const a3_arch_config *a = &m->arch;
  const int n = a->n_block_out_channels, S = (int)a->sample_size;
  // conv_in, then the time embedding (diffusers' order)
  m->conv_in = conv_def((int)a->in_channels, m->C0, 3, 1, 1, 1, S, S);
  A3_TRY(reg_conv(m, "conv_in", false, &m->conv_in));
  m->time1 = linear_def(m->C0, m->T4);
  m->time2 = linear_def(m->T4, m->T4);
  A3_TRY(reg_linear(m, "time_embedding.linear_1", false, &m->time1));
  A3_TRY(reg_linear(m, "time_embedding.linear_2", false, &m->time2));

  build_state st = {.H = S, .W = S, .C = m->C0};
  A3_TRY(a3_alloc((void **)&st.stack, (size_t)(1 + n * (a->layers_per_block + 1)), sizeof(int)));
  a3_status s = A3_OK;
  st.stack[st.n++] = 0; // skip 0: conv_in's output
  A3_TRY_GOTO(s, push_skip(m, -1, m->C0, S, S), done);
  for (int i = 0; i < n; i++) A3_TRY_GOTO(s, down_block(m, &st, i), done);
  int mid_first;
  A3_TRY_GOTO(s, mid_block_layers(m, &st, &mid_first), done);
  for (int i = 0; i < n; i++) A3_TRY_GOTO(s, up_block(m, &st, i), done);
  if (st.n != 0 || st.C != m->C0 || st.H != S)
    A3_TRY_GOTO(s, A3_FAIL(A3_ERR_INTERNAL, "U-Net skips do not balance (%d left)", st.n), done);
  A3_TRY_GOTO(s, mid_block_params(m, mid_first), done);
  m->norm_out = norm_def(m, m->C0);
  A3_TRY_GOTO(s, reg_norm(m, "conv_norm_out", false, &m->norm_out), done);
  m->conv_out = conv_def(m->C0, (int)a->out_channels, 3, 1, 1, 1, S, S);
  A3_TRY_GOTO(s, reg_conv(m, "conv_out", false, &m->conv_out), done);
done:
  free(st.stack);
  return s;
}

a3_status a3_unet_build(const a3_arch_config *arch, a3_unet **out) {
  return a3_unet_build_ex(arch, NULL, out);
}

a3_status a3_unet_build_ex(const a3_arch_config *arch, const a3_unet_extras *extras,
                           a3_unet **out) {
  return a3_unet_build_on(arch, extras, a3_backend_cpu(), out);
}

a3_status a3_unet_build_on(const a3_arch_config *arch, const a3_unet_extras *extras,
                           const a3_backend *be, a3_unet **out) {
  *out = NULL;
  A3_TRY(check_arch(arch));
  if (extras) A3_TRY(check_extras(extras));
  a3_unet *m;
  A3_TRY(A3_ALLOC(m, 1));
  m->arch = *arch;
  if (extras) m->extras = *extras;
  if (m->extras.adapter_rank <= 0) { // keep "none" canonical: all zero
    m->extras.adapter_rank = 0;
    m->extras.adapter_activation = 0;
    m->extras.adapter_placement = 0;
    m->extras.adapter_gate = false;
  }
  if (m->extras.lora_rank <= 0) {
    m->extras.lora_rank = 0;
    m->extras.lora_alpha = 0.0;
  }
  m->be = be;
  m->C0 = (int)arch->block_out_channels[0];
  m->T4 = 4 * m->C0;
  a3_status s;
  A3_TRY_GOTO(s, build_body(m), fail);
  A3_TRY_GOTO(s, m->be->ops->alloc(m->be, (void **)&m->params, m->n_floats * sizeof(float)), fail);
  A3_TRY_GOTO(s, m->be->ops->alloc(m->be, (void **)&m->grads, m->n_floats * sizeof(float)), fail);
  *out = m;
  return A3_OK;
fail:
  a3_unet_free(m);
  return s;
}

void a3_unet_free(a3_unet *m) {
  if (!m) return;
  unet_release_plan(m);
  m->be->ops->release(m->be, m->params);
  m->be->ops->release(m->be, m->grads);
  free(m->table);
  free(m->fan_in);
  free(m->layers);
  free(m->skips);
  free(m);
}

// ---------------------------------------------------------------- table access
const a3_arch_config *a3_unet_arch(const a3_unet *m) { return &m->arch; }
const a3_unet_extras *a3_unet_get_extras(const a3_unet *m) { return &m->extras; }
int a3_unet_param_count(const a3_unet *m) { return m->n_params; }
const a3_param *a3_unet_param_at(const a3_unet *m, int i) { return &m->table[i]; }
size_t a3_unet_num_floats(const a3_unet *m) { return m->n_floats; }
float *a3_unet_params(a3_unet *m) { return m->params; }
const float *a3_unet_params_const(const a3_unet *m) { return m->params; }
float *a3_unet_grads(a3_unet *m) { return m->grads; }

int a3_unet_param_index(const a3_unet *m, const char *name) {
  for (int i = 0; i < m->n_params; i++)
    if (strcmp(m->table[i].name, name) == 0) return i;
  return -1;
}

const a3_param *a3_unet_param_find(const a3_unet *m, const char *name) {
  int i = a3_unet_param_index(m, name);
  return i < 0 ? NULL : &m->table[i];
}

void a3_unet_set_trainable(a3_unet *m, int i, bool trainable) { m->table[i].trainable = trainable; }

void a3_unet_set_all_trainable(a3_unet *m, bool trainable) {
  for (int i = 0; i < m->n_params; i++) m->table[i].trainable = trainable;
}

void a3_unet_zero_grads(a3_unet *m) { m->be->ops->zero(m->be, m->grads, m->n_floats); }

bool unet_range_trains(const a3_unet *m, int begin, int end) {
  for (int i = begin; i < end; i++)
    if (m->table[i].trainable) return true;
  return false;
}

const a3_backend *a3_unet_backend(const a3_unet *m) { return m->be; }

a3_status a3_unet_copy_params(a3_unet *dst, const a3_unet *src) {
  if (dst->n_floats != src->n_floats || dst->n_params != src->n_params)
    return A3_FAIL(A3_ERR_INTERNAL, "copy_params: models differ (%zu vs %zu floats)", dst->n_floats,
                   src->n_floats);
  float *host;
  A3_TRY(A3_ALLOC(host, dst->n_floats));
  a3_status s = src->be->ops->download(src->be, host, src->params, dst->n_floats * sizeof(float));
  if (s == A3_OK)
    s = dst->be->ops->upload(dst->be, dst->params, host, dst->n_floats * sizeof(float));
  if (s == A3_OK) s = dst->be->ops->synchronize(dst->be);
  free(host);
  return s;
}
