// Activation memory: one arena per batch size, laid out by one walk over the
// network that is run twice, first to measure (no base: every pointer NULL),
// then to hand out pointers into the allocation. Forward and backward then
// never allocate.
//
// What is kept (per batch):
// - saved: every tensor a backward reads (layer outputs, GroupNorm outputs
//   and statistics, attention tokens, q, k, v, probabilities, merged heads;
//   with extras: each LoRA's (N, r) bottleneck, the adapter's (N, r)
//   pre- and post-activation, its (N, C) output (pre_out) or input
//   (post_out), and its up output when gated);
// - skips: one gradient buffer per skip connection (the concat's share waits
//   there until the down path's backward reaches the skip's producer);
// - scratch: five general temporaries and two main-path gradients of the
//   largest (B, C, H, W) tensor, small time-embedding buffers, and one op
//   workspace (the largest conv im2col or attention score block).
#include "unet_internal.h"

#include <stdlib.h>
#include <string.h>

// bytes: a cache line and room for AVX-512 loads on the CPU; on the GPU the
// alignment cudaMalloc gives, which cuDNN and cuBLAS kernels may assume of
// their operands and workspace.
enum { UNET_ALIGN = 256 };

typedef struct {
  char *base; // NULL while measuring
  size_t used;
  size_t act_bytes; // of one activation element (the backend's storage type)
} cursor;

static void *take_bytes(cursor *c, size_t bytes) {
  void *p = c->base ? c->base + c->used : NULL;
  c->used += (bytes + UNET_ALIGN - 1) / UNET_ALIGN * UNET_ALIGN;
  return p;
}
// An activation tensor of n elements, in the backend's storage type.
static a3_act *take(cursor *c, size_t n) { return take_bytes(c, n * c->act_bytes); }
// An fp32 tensor (GroupNorm statistics, attention probabilities).
static float *take_f32(cursor *c, size_t n) { return take_bytes(c, n * sizeof(float)); }

static size_t act(const a3_unet *m, int C, int H, int W) { return (size_t)m->B * C * H * W; }

static void note_act(a3_unet *m, size_t n) {
  if (n > m->max_act) m->max_act = n;
}

static void layout_resnet(a3_unet *m, unet_layer *L, cursor *c) {
  unet_resnet *r = &L->u.res;
  const size_t G = (size_t)m->B * m->arch.norm_num_groups;
  r->h = take(c, act(m, L->C_out, L->H, L->W));
  r->mean1 = take_f32(c, G);
  r->rstd1 = take_f32(c, G);
  r->mean2 = take_f32(c, G);
  r->rstd2 = take_f32(c, G);
}

static void layout_attn(a3_unet *m, unet_layer *L, cursor *c) {
  unet_attn *a = &L->u.attn;
  const size_t n = act(m, L->C_in, L->H, L->W), T = (size_t)L->H * L->W;
  const size_t G = (size_t)m->B * m->arch.norm_num_groups;
  a->tok = take(c, n);
  a->q_act = take(c, n);
  a->k_act = take(c, n);
  a->v_act = take(c, n);
  a->merged = take(c, n);
  a->probs = take_f32(c, (size_t)m->B * a->heads * T * T);
  a->mean = take_f32(c, G);
  a->rstd = take_f32(c, G);
  const size_t N = (size_t)m->B * T;
  unet_linear *lin[4] = {&a->q, &a->k, &a->v, &a->out};
  for (int i = 0; i < 4; i++)
    if (lin[i]->lora_a >= 0) lin[i]->lora_z = take(c, N * lin[i]->R);
  if (!a->has_adapter) return;
  unet_adapter *ad = &a->ad;
  ad->d = take(c, N * ad->r);
  ad->z = ad->act == A3_ACT_IDENTITY ? ad->d : take(c, N * ad->r);
  ad->u = ad->gate >= 0 ? take(c, n) : NULL;
  a->adapted = a->place == A3_PLACEMENT_PRE_OUT ? take(c, n) : NULL;
  a->proj = a->place == A3_PLACEMENT_POST_OUT ? take(c, n) : NULL;
}

static size_t work_bytes(const a3_unet *m, const unet_layer *L) {
  const a3_backend_ops *op = m->be->ops;
  switch (L->kind) {
  case UNET_RESNET: {
    const unet_resnet *r = &L->u.res;
    size_t w = op->conv2d_workspace_size(m->be, &r->conv1.s);
    const size_t w2 = op->conv2d_workspace_size(m->be, &r->conv2.s);
    if (w2 > w) w = w2;
    // The 1x1 shortcut's weight gradient goes through the workspace on the
    // GPU (and may need more than conv1 and conv2 on cuDNN).
    const size_t w3 =
        r->shortcut.weight >= 0 ? op->conv2d_workspace_size(m->be, &r->shortcut.s) : 0;
    return w > w3 ? w : w3;
  }
  case UNET_ATTN:
    return op->attention_workspace_size(m->be, m->B, L->H * L->W, L->C_in, L->u.attn.heads);
  case UNET_DOWNSAMPLE:
  case UNET_UPSAMPLE: return op->conv2d_workspace_size(m->be, &L->u.conv.s);
  }
  return 0;
}

static void set_batch(a3_unet *m, int B) {
  m->conv_in.s.B = m->conv_out.s.B = B;
  for (int i = 0; i < m->n_layers; i++) {
    unet_layer *L = &m->layers[i];
    if (L->kind == UNET_RESNET) {
      L->u.res.conv1.s.B = L->u.res.conv2.s.B = L->u.res.shortcut.s.B = B;
    } else if (L->kind != UNET_ATTN) {
      L->u.conv.s.B = B;
    }
  }
}

static void layer_out_hw(const unet_layer *L, int *OH, int *OW) {
  *OH = L->H;
  *OW = L->W;
  if (L->kind == UNET_DOWNSAMPLE) {
    *OH = a3_conv2d_out_h(&L->u.conv.s);
    *OW = a3_conv2d_out_w(&L->u.conv.s);
  } else if (L->kind == UNET_UPSAMPLE) {
    *OH *= 2;
    *OW *= 2;
  }
}

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

// The stem's saved tensors: the input, the time embedding chain, conv_in's output.
static void layout_stem(a3_unet *m, cursor *c, size_t *work) {
  const int S = (int)m->arch.sample_size, Cin = (int)m->arch.in_channels;
  const size_t BT = (size_t)m->B * m->T4;
  m->x_in = take(c, act(m, Cin, S, S));
  m->minus_one = take(c, (size_t)m->B * Cin);
  m->t_sin = take(c, (size_t)m->B * m->C0);
  m->t_l1 = take(c, BT);
  m->t_a1 = take(c, BT);
  m->temb = take(c, BT);
  m->temb_act = take(c, BT);
  m->h0 = take(c, act(m, m->C0, S, S));
  m->skips[0].act = m->h0;
  note_act(m, act(m, Cin, S, S));
  note_act(m, act(m, (int)m->arch.out_channels, S, S));
  note_act(m, act(m, m->C0, S, S));
  *work = max_size(m->be->ops->conv2d_workspace_size(m->be, &m->conv_in.s),
                   m->be->ops->conv2d_workspace_size(m->be, &m->conv_out.s));
}

// Every layer's saved tensors, chained input to output; skips point at their
// producers' outputs. Also finds the largest tensor and workspace.
static void layout_layers(a3_unet *m, cursor *c, size_t *work) {
  const a3_act *prev = m->h0;
  for (int i = 0; i < m->n_layers; i++) {
    unet_layer *L = &m->layers[i];
    int OH, OW;
    layer_out_hw(L, &OH, &OW);
    L->in = prev;
    L->cat = L->skip_in >= 0 ? take(c, act(m, L->C_in, L->H, L->W)) : NULL;
    if (L->kind == UNET_RESNET) layout_resnet(m, L, c);
    if (L->kind == UNET_ATTN) layout_attn(m, L, c);
    L->out = take(c, act(m, L->C_out, OH, OW));
    if (L->skip_out >= 0) m->skips[L->skip_out].act = L->out;
    prev = L->out;
    note_act(m, act(m, L->C_in, L->H, L->W));
    note_act(m, act(m, L->C_out, OH, OW));
    *work = max_size(*work, work_bytes(m, L));
  }
}

// The head's: conv_norm_out's statistics.
static void layout_head(a3_unet *m, cursor *c) {
  m->mean_out = take_f32(c, (size_t)m->B * m->arch.norm_num_groups);
  m->rstd_out = take_f32(c, (size_t)m->B * m->arch.norm_num_groups);
}

static void layout_skips(a3_unet *m, cursor *c) {
  for (int k = 0; k < m->n_skips; k++) {
    unet_skip *sk = &m->skips[k];
    sk->grad = take(c, act(m, sk->C, sk->H, sk->W));
  }
}

static void layout_scratch(a3_unet *m, cursor *c, size_t work) {
  unet_scratch *sc = &m->sc;
  const size_t BT = (size_t)m->B * m->T4;
  for (int i = 0; i < 5; i++) sc->s[i] = take(c, m->max_act);
  for (int i = 0; i < 2; i++) sc->d[i] = take(c, m->max_act);
  sc->dtemb_act = take(c, BT);
  sc->dtemb_tmp = take(c, BT);
  sc->dtemb = take(c, BT);
  sc->dt = take(c, (size_t)m->B * (m->max_c > (size_t)m->T4 ? m->max_c : (size_t)m->T4));
  sc->work = take_bytes(c, work);
  // the extras' temporaries: sized by the largest attention block
  size_t nr = 0;
  const int rank =
      m->extras.adapter_rank > m->extras.lora_rank ? m->extras.adapter_rank : m->extras.lora_rank;
  for (int i = 0; rank > 0 && i < m->n_layers; i++) {
    const unet_layer *L = &m->layers[i];
    if (L->kind == UNET_ATTN) nr = max_size(nr, (size_t)m->B * L->H * L->W * rank);
  }
  sc->x_tmp = nr ? take(c, m->max_act) : NULL;
  sc->x_r = nr ? take(c, nr) : NULL;
}

// One walk: returns the bytes of each part.
static void layout(a3_unet *m, char *base) {
  cursor c = {.base = base, .act_bytes = m->be->act_bytes};
  size_t work = 0;
  layout_stem(m, &c, &work);
  layout_layers(m, &c, &work);
  layout_head(m, &c);
  m->mem.saved = c.used;
  layout_skips(m, &c);
  m->mem.skips = c.used - m->mem.saved;
  layout_scratch(m, &c, work);
  m->mem.scratch = c.used - m->mem.saved - m->mem.skips;
  m->mem.total = c.used;
}

// The constant that centring adds, uploaded once per plan.
static a3_status fill_minus_one(a3_unet *m) {
  const size_t n = (size_t)m->B * m->arch.in_channels;
  float *host = NULL;
  A3_TRY(A3_ALLOC(host, n));
  for (size_t i = 0; i < n; i++) host[i] = -1.0f;
  const a3_status s = a3_act_upload(m->be, m->minus_one, host, n);
  free(host);
  return s;
}

void unet_release_plan(a3_unet *m) {
  if (m->arena) m->be->ops->release(m->be, m->arena);
  m->arena = NULL;
  m->B = 0;
  m->forward_done = false;
  memset(&m->mem, 0, sizeof m->mem);
}

a3_status a3_unet_plan(a3_unet *m, int batch) {
  if (batch < 1) return A3_FAIL(A3_ERR_INTERNAL, "a3_unet_plan: batch %d < 1", batch);
  unet_release_plan(m);
  m->B = batch;
  m->H = m->W = (int)m->arch.sample_size;
  m->max_act = 0;
  m->max_c = 0;
  for (int i = 0; i < m->n_layers; i++) {
    const unet_layer *L = &m->layers[i];
    const size_t c = (size_t)(L->C_in > L->C_out ? L->C_in : L->C_out);
    if (c > m->max_c) m->max_c = c;
  }
  set_batch(m, batch);
  A3_TRY(a3_conv2d_check(&m->conv_in.s));
  for (int i = 0; i < m->n_layers; i++) {
    const unet_layer *L = &m->layers[i];
    if (L->kind == UNET_DOWNSAMPLE || L->kind == UNET_UPSAMPLE)
      A3_TRY(a3_conv2d_check(&L->u.conv.s));
  }
  layout(m, NULL);
  a3_status s = m->be->ops->alloc(m->be, &m->arena, m->mem.total);
  if (s != A3_OK) {
    m->B = 0;
    a3_error_trace(__FILE__, __LINE__);
    return s;
  }
  layout(m, m->arena);
  s = fill_minus_one(m);
  if (s != A3_OK) {
    unet_release_plan(m);
    a3_error_trace(__FILE__, __LINE__);
  }
  return s;
}

int a3_unet_batch(const a3_unet *m) { return m->B; }
a3_unet_memory a3_unet_planned_bytes(const a3_unet *m) { return m->mem; }
