// The attention block of diffusers' Attention(residual_connection=True,
// group_norm, bias=True) on a (B, C, H, W) map, T = H*W tokens:
//   tok    = tokens(group_norm(x))                      (B, T, C)
//   merged = SDPA(to_q(tok), to_k(tok), to_v(tok))      (B, T, C) heads merged
//   out    = (x + untokens(to_out.0(merged))) / rescale_output_factor
//
// The block is two steps on purpose: attn_core (up to the merged heads) and
// attn_project (to_out.0 and the residual). A3FTA's adapters and LoRA on
// to_out.0 go between or around them without touching the core.
#include "unet_internal.h"

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

// a->merged (B, T, C) -> L->out (B, C, T): to_out.0, back to channels, residual.
static void attn_project_fwd(a3_unet *m, unet_layer *L) {
  const a3_backend *be = m->be;
  unet_attn *a = &L->u.attn;
  const int B = m->B, C = L->C_in, T = L->H * L->W;
  unet_linear_fwd(m, &a->out, m->sc.s[0], a->merged, B * T); // (B, T, C)
  be->ops->from_tokens(be, m->sc.s[1], m->sc.s[0], B, C, T); // (B, C, T)
  be->ops->add_forward(be, L->out, m->sc.s[1], L->in, a->scale, (size_t)B * C * T);
}

void unet_attn_fwd(a3_unet *m, unet_layer *L) {
  attn_core_fwd(m, L);
  attn_project_fwd(m, L);
}

// d(merged) -> q, k, v and the group norm: dtok = the sum of the three
// projections' input gradients, then untokenised into group_norm's backward.
// s[2] holds d(merged) on entry; dx (B, C, T) overwritten, or NULL.
static void attn_core_bwd(a3_unet *m, unet_layer *L, float *dx) {
  const a3_backend *be = m->be;
  unet_attn *a = &L->u.attn;
  float *const *s = m->sc.s;
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
void unet_attn_bwd(a3_unet *m, unet_layer *L, const float *dout, float *dx) {
  const a3_backend *be = m->be;
  unet_attn *a = &L->u.attn;
  float *const *s = m->sc.s;
  const int B = m->B, C = L->C_in, T = L->H * L->W;
  const size_t n = (size_t)B * C * T;
  const bool need_core = dx || unet_range_trains(m, L->p_begin, L->p_end);
  const float *g = dout; // the gradient of both terms of the residual sum
  if (a->scale != 1.0f) {
    be->ops->add_backward(be, s[0], NULL, dout, a->scale, n);
    g = s[0];
  }
  const bool need_dmerged =
      need_core && (dx || unet_norm_trains(m, &a->norm) || unet_linear_trains(m, &a->q) ||
                    unet_linear_trains(m, &a->k) || unet_linear_trains(m, &a->v));
  if (need_core) {
    be->ops->to_tokens(be, s[1], g, B, C, T); // d(to_out.0 output) (B, T, C)
    unet_linear_bwd(m, &a->out, need_dmerged ? s[2] : NULL, s[1], a->merged, B * T);
  }
  if (need_dmerged) attn_core_bwd(m, L, dx);
  if (dx) be->ops->accumulate(be, dx, g, n);
}
