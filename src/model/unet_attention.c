// The attention block of diffusers' Attention(residual_connection=True,
// group_norm, bias=True) on a (B, C, H, W) map, T = H*W tokens:
//   tok    = tokens(group_norm(x))                      (B, T, C)
//   merged = SDPA(to_q(tok), to_k(tok), to_v(tok))      (B, T, C) heads merged
//   out    = (x + untokens(to_out.0(merged))) / rescale_output_factor
//
// The block is two steps on purpose: attn_core (up to the merged heads) and
// attn_project (to_out.0 and the residual). The adapter goes between them
// (pre_out: adapted = adapter(merged) is to_out.0's input) or after to_out.0
// (post_out: adapter(to_out.0(merged)) joins the residual); LoRA lives inside
// the linears (unet_modules.c).
#include "unet_internal.h"

// ---------------------------------------------------------------- the adapter
bool unet_adapter_trains(const a3_unet *m, const unet_adapter *ad) {
  return unet_linear_trains(m, &ad->down) || unet_linear_trains(m, &ad->up) ||
         unet_trains(m, ad->gate);
}

static void act_fwd(const a3_unet *m, a3_activation act, a3_act *out, const a3_act *in, size_t n) {
  const a3_backend *be = m->be;
  switch (act) {
  case A3_ACT_SILU: be->ops->silu_forward(be, out, in, n); break;
  case A3_ACT_GELU: be->ops->gelu_forward(be, out, in, n); break;
  case A3_ACT_RELU: be->ops->relu_forward(be, out, in, n); break;
  case A3_ACT_IDENTITY: break; // out is in (the plan aliases them)
  }
}

// dinp = act'(in) * dout, in place (dinp == dout).
static void act_bwd(const a3_unet *m, a3_activation act, a3_act *d, const a3_act *in, size_t n) {
  const a3_backend *be = m->be;
  switch (act) {
  case A3_ACT_SILU: be->ops->silu_backward(be, d, d, in, n); break;
  case A3_ACT_GELU: be->ops->gelu_backward(be, d, d, in, n); break;
  case A3_ACT_RELU: be->ops->relu_backward(be, d, d, in, n); break;
  case A3_ACT_IDENTITY: break;
  }
}

// y = x + g * up(act(down(x))) over N tokens; x, y (N, C) distinct. With up
// all zeros (its init) the added term is +-0 and y is bitwise x.
static void adapter_fwd(const a3_unet *m, const unet_adapter *ad, a3_act *y, const a3_act *x,
                        int N) {
  const a3_backend *be = m->be;
  const size_t n = (size_t)N * ad->up.OUT;
  unet_linear_fwd(m, &ad->down, ad->d, x, N);           // (N, r)
  act_fwd(m, ad->act, ad->z, ad->d, (size_t)N * ad->r); // (N, r)
  a3_act *u = ad->gate >= 0 ? ad->u : m->sc.x_tmp;
  unet_linear_fwd(m, &ad->up, u, ad->z, N); // (N, C)
  if (ad->gate >= 0) {
    be->ops->gated_add_forward(be, y, x, u, unet_p(m, ad->gate), n);
  } else {
    be->ops->add_forward(be, y, x, u, 1.0f, n);
  }
}

// dy (N, C) -> the adapter's parameter gradients and dx = dy + the bottleneck
// path's input gradient (N, C) overwritten, or NULL; dx may equal dy.
// tmp, tmp2: (N, C) scratch.
static void adapter_bwd(const a3_unet *m, const unet_adapter *ad, a3_act *dx, const a3_act *dy,
                        const a3_act *x, int N, a3_act *tmp, a3_act *tmp2) {
  const a3_backend *be = m->be;
  const size_t n = (size_t)N * ad->up.OUT;
  const bool need_dz = dx || unet_linear_trains(m, &ad->down); // d(act output)
  const bool need_du = need_dz || unet_linear_trains(m, &ad->up);
  const a3_act *du = dy;
  if (ad->gate >= 0 && (need_du || unet_trains(m, ad->gate))) {
    be->ops->gated_add_backward(be, need_du ? tmp2 : NULL, unet_g(m, ad->gate), dy, ad->u,
                                unet_p(m, ad->gate), n);
    du = tmp2;
  }
  if (!need_du) return;
  a3_act *dz = m->sc.x_r; // (N, r)
  unet_linear_bwd(m, &ad->up, need_dz ? dz : NULL, du, ad->z, N);
  if (!need_dz) return;
  act_bwd(m, ad->act, dz, ad->d, (size_t)N * ad->r);
  unet_linear_bwd(m, &ad->down, dx ? tmp : NULL, dz, x, N);
  if (dx) be->ops->add_forward(be, dx, dy, tmp, 1.0f, n);
}

// ---------------------------------------------------------------- the block

// x (B, C, T) -> a->merged (B, T, C), saving tok, q, k, v and probs.
static void attn_core_fwd(a3_unet *m, unet_layer *L) {
  const a3_backend *be = m->be;
  unet_attn *a = &L->u.attn;
  const int B = m->B, C = L->C_in, T = L->H * L->W;
  unet_norm_fwd(m, &a->norm, m->sc.s[0], a->mean, a->rstd, L->in, T); // (B, C, T)
  be->ops->to_tokens(be, a->tok, m->sc.s[0], B, C, T);                // (B, T, C)
  unet_linear_fwd(m, &a->q, a->q_act, a->tok, B * T);
  unet_linear_fwd(m, &a->k, a->k_act, a->tok, B * T);
  unet_linear_fwd(m, &a->v, a->v_act, a->tok, B * T);
  be->ops->attention_forward(be, a->merged, a->probs, a->q_act, a->k_act, a->v_act, B, T, C,
                             a->heads, m->sc.work);
}

static bool pre_out(const unet_attn *a) {
  return a->has_adapter && a->place == A3_PLACEMENT_PRE_OUT;
}
static bool post_out(const unet_attn *a) {
  return a->has_adapter && a->place == A3_PLACEMENT_POST_OUT;
}

// to_out.0's input: the merged heads, or the adapter's output (pre_out).
static const a3_act *out_input(const unet_attn *a) { return pre_out(a) ? a->adapted : a->merged; }

// a->merged (B, T, C) -> L->out (B, C, T): [adapter], to_out.0, [adapter],
// back to channels, residual.
static void attn_project_fwd(a3_unet *m, unet_layer *L) {
  const a3_backend *be = m->be;
  unet_attn *a = &L->u.attn;
  const int B = m->B, C = L->C_in, T = L->H * L->W;
  if (pre_out(a)) adapter_fwd(m, &a->ad, a->adapted, a->merged, B * T);
  a3_act *o = post_out(a) ? a->proj : m->sc.s[0];
  unet_linear_fwd(m, &a->out, o, out_input(a), B * T); // (B, T, C)
  if (post_out(a)) {
    adapter_fwd(m, &a->ad, m->sc.s[0], a->proj, B * T);
    o = m->sc.s[0];
  }
  be->ops->from_tokens(be, m->sc.s[1], o, B, C, T); // (B, C, T)
  be->ops->add_forward(be, L->out, m->sc.s[1], L->in, a->scale, (size_t)B * C * T);
}

void unet_attn_fwd(a3_unet *m, unet_layer *L) {
  attn_core_fwd(m, L);
  attn_project_fwd(m, L);
}

// d(merged) -> q, k, v and the group norm: dtok = the sum of the three
// projections' input gradients, then untokenised into group_norm's backward.
// s[2] holds d(merged) on entry; dx (B, C, T) overwritten, or NULL.
static void attn_core_bwd(a3_unet *m, unet_layer *L, a3_act *dx) {
  const a3_backend *be = m->be;
  unet_attn *a = &L->u.attn;
  a3_act *const *s = m->sc.s;
  const int B = m->B, C = L->C_in, T = L->H * L->W;
  const size_t n = (size_t)B * C * T;
  const bool need_dn = dx || unet_norm_trains(m, &a->norm); // dtok is needed exactly then
  const bool need_dq = need_dn || unet_linear_trains(m, &a->q);
  const bool need_dk = need_dn || unet_linear_trains(m, &a->k);
  const bool need_dv = need_dn || unet_linear_trains(m, &a->v);
  be->ops->attention_backward(be, need_dq ? s[1] : NULL, need_dk ? s[3] : NULL,
                              need_dv ? s[4] : NULL, s[2], a->q_act, a->k_act, a->v_act, a->probs,
                              B, T, C, a->heads, m->sc.work);
  // s[2] (d merged) is consumed: it becomes dtok (B, T, C).
  unet_linear_bwd(m, &a->q, need_dn ? s[2] : NULL, s[1], a->tok, B * T);
  unet_linear_bwd(m, &a->k, need_dn ? s[1] : NULL, s[3], a->tok, B * T);
  if (need_dn) be->ops->accumulate(be, s[2], s[1], n);
  unet_linear_bwd(m, &a->v, need_dn ? s[3] : NULL, s[4], a->tok, B * T);
  if (!need_dn) return;
  be->ops->accumulate(be, s[2], s[3], n);
  be->ops->from_tokens(be, s[1], s[2], B, C, T); // (B, C, T)
  unet_norm_bwd(m, &a->norm, dx, s[1], L->in, a->mean, a->rstd, T);
}

// dout (B, C, T); dx (B, C, T) overwritten, or NULL.
//
// Which gradients are needed, in forward order (x -> core -> merged ->
// [pre adapter] -> to_out.0 input -> to_out.0 -> [post adapter] -> out): a
// tensor's gradient is needed when dx is wanted or something that produced it
// trains; the backward computes exactly those.
void unet_attn_bwd(a3_unet *m, unet_layer *L, const a3_act *dout, a3_act *dx) {
  const a3_backend *be = m->be;
  unet_attn *a = &L->u.attn;
  a3_act *const *s = m->sc.s;
  const int B = m->B, C = L->C_in, T = L->H * L->W, N = B * T;
  const size_t n = (size_t)B * C * T;
  const bool ad_trains = a->has_adapter && unet_adapter_trains(m, &a->ad);
  const bool need_dmerged = dx || unet_norm_trains(m, &a->norm) || unet_linear_trains(m, &a->q) ||
                            unet_linear_trains(m, &a->k) || unet_linear_trains(m, &a->v);
  const bool need_dout_in = need_dmerged || (pre_out(a) && ad_trains); // to_out.0's input
  const bool need_dproj = need_dout_in || unet_linear_trains(m, &a->out);
  const bool need_any = need_dproj || (post_out(a) && ad_trains);
  const a3_act *g = dout; // the gradient of both terms of the residual sum
  if (a->scale != 1.0f) {
    be->ops->add_backward(be, s[0], NULL, dout, a->scale, n);
    g = s[0];
  }
  if (need_any) {
    be->ops->to_tokens(be, s[1], g, B, C, T); // d(block output before the residual) (B, T, C)
    if (post_out(a)) adapter_bwd(m, &a->ad, need_dproj ? s[1] : NULL, s[1], a->proj, N, s[3], s[4]);
    if (need_dproj) unet_linear_bwd(m, &a->out, need_dout_in ? s[2] : NULL, s[1], out_input(a), N);
    if (pre_out(a) && need_dout_in)
      adapter_bwd(m, &a->ad, need_dmerged ? s[2] : NULL, s[2], a->merged, N, s[3], s[4]);
  }
  if (need_dmerged) attn_core_bwd(m, L, dx);
  if (dx) be->ops->accumulate(be, dx, g, n);
}
