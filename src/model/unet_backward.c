// The backward pass, layers in reverse order.
//
// Before it runs, one walk in forward order marks which gradients are needed,
// as autograd's requires_grad would: a tensor needs a gradient when something
// that produced it trains (a parameter, or the time embedding through the
// resnets), or when the caller wants dx. The backward then never computes a
// gradient nothing uses: with only the attention blocks trainable it stops at
// the lowest attention block, and frozen parameters get NULL gradients.
//
// The main-path gradient lives in one of two buffers; a skip's gradient from
// its concat waits in the skip's own buffer until the backward reaches the
// skip's producer, where it is added to the main-path gradient.
#include "unet_internal.h"

static void mark_requires_grad(a3_unet *m, bool want_dx) {
  m->temb_req = unet_linear_trains(m, &m->time1) || unet_linear_trains(m, &m->time2);
  bool r = want_dx || unet_conv_trains(m, &m->conv_in);
  m->skips[0].req = r;
  for (int i = 0; i < m->n_layers; i++) {
    unet_layer *L = &m->layers[i];
    L->req_main = r;
    L->req_in = r || (L->skip_in >= 0 && m->skips[L->skip_in].req);
    r = L->req_in || unet_range_trains(m, L->p_begin, L->p_end) ||
        (L->kind == UNET_RESNET && m->temb_req);
    L->req_out = r;
    if (L->skip_out >= 0) m->skips[L->skip_out].req = r;
  }
}

// dout (B, out_channels, H, W), fp32 -> dh (B, C0, H, W) overwritten, or NULL.
static void head_bwd(a3_unet *m, const float *dout, a3_act *dh) {
  const a3_backend *be = m->be;
  a3_act *const *s = m->sc.s;
  const int HW = m->H * m->W;
  const a3_act *h = m->n_layers ? m->layers[m->n_layers - 1].out : m->h0;
  const bool need_dn = dh || unet_norm_trains(m, &m->norm_out);
  be->ops->act_from_f32(be, s[2], dout, (size_t)m->B * m->arch.out_channels * HW);
  if (unet_conv_trains(m, &m->conv_out)) // conv_out's input, recomputed
    unet_norm_silu_fwd(m, &m->norm_out, s[0], m->mean_out, m->rstd_out, h, HW);
  unet_conv_bwd(m, &m->conv_out, need_dn ? s[1] : NULL, s[2], s[0]);
  if (need_dn) unet_norm_silu_bwd(m, &m->norm_out, dh, s[1], h, m->mean_out, m->rstd_out, HW);
}

static void upsample_bwd(a3_unet *m, unet_layer *L, const a3_act *dout, a3_act *dx) {
  const a3_backend *be = m->be;
  a3_act *const *s = m->sc.s;
  if (unet_conv_trains(m, &L->u.conv)) // the conv's input, recomputed
    be->ops->upsample2x_forward(be, s[1], L->in, m->B, L->C_in, L->H, L->W);
  unet_conv_bwd(m, &L->u.conv, dx ? s[0] : NULL, dout, s[1]);
  if (dx) be->ops->upsample2x_backward(be, dx, s[0], m->B, L->C_in, L->H, L->W);
}

// One layer: dout = *cur (B, C_out, OH, OW). Leaves the input gradient (if
// needed) in *cur, swapping the two main-path buffers as it goes.
static void layer_bwd(a3_unet *m, unet_layer *L, a3_act **cur, a3_act **other) {
  a3_act *dx = L->req_in ? *other : NULL;
  switch (L->kind) {
  case UNET_RESNET: unet_resnet_bwd(m, L, L->skip_in >= 0 ? L->cat : L->in, *cur, dx); break;
  case UNET_ATTN: unet_attn_bwd(m, L, *cur, dx); break;
  case UNET_DOWNSAMPLE: unet_conv_bwd(m, &L->u.conv, dx, *cur, L->in); break;
  case UNET_UPSAMPLE: upsample_bwd(m, L, *cur, dx); break;
  }
  if (L->skip_in < 0) { // the input gradient is the main path's: swap
    a3_act *t = *cur;
    *cur = *other;
    *other = t;
    return;
  }
  if (!dx) return;
  // Split [d main, d skip]: the main part into *cur (its dout is spent), the
  // skip's part into its own buffer.
  unet_skip *sk = &m->skips[L->skip_in];
  m->be->ops->concat_backward(m->be, L->req_main ? *cur : NULL, sk->req ? sk->grad : NULL, dx, m->B,
                              L->C_in - sk->C, sk->C, L->H * L->W);
}

// dtemb_act (B, T4), summed over every resnet -> linear_2, linear_1 gradients.
static void time_bwd(a3_unet *m) {
  const a3_backend *be = m->be;
  const size_t BT = (size_t)m->B * m->T4;
  const bool need_da1 = unet_linear_trains(m, &m->time1);
  be->ops->silu_backward(be, m->sc.dtemb, m->sc.dtemb_act, m->temb, BT);
  unet_linear_bwd(m, &m->time2, need_da1 ? m->sc.dtemb_tmp : NULL, m->sc.dtemb, m->t_a1, m->B);
  if (!need_da1) return;
  be->ops->silu_backward(be, m->sc.dtemb_tmp, m->sc.dtemb_tmp, m->t_l1, BT);
  unet_linear_bwd(m, &m->time1, NULL, m->sc.dtemb_tmp, m->t_sin, m->B); // t has no gradient
}

// dh0 (B, C0, H, W) -> conv_in's gradients and dx, fp32 (x2 when the input was centred).
static void stem_bwd(a3_unet *m, const a3_act *dh0, float *dx) {
  const a3_backend *be = m->be;
  a3_act *dx_act = dx ? m->sc.s[0] : NULL; // (B, Cin, H, W)
  unet_conv_bwd(m, &m->conv_in, dx_act, dh0, m->x_in);
  if (!dx) return;
  const size_t n = (size_t)m->B * m->arch.in_channels * m->H * m->W;
  if (m->arch.center_input_sample)
    be->ops->add_forward(be, dx_act, dx_act, dx_act, 1.0f, n); // d(2x - 1)/dx = 2
  be->ops->act_to_f32(be, dx, dx_act, n);
}

// ---------------------------------------------------------------- stages
// Stage numbers (a3fta/model.h): head 0, layer i at n_layers - i, then the
// stem, then the time embedding.
int a3_unet_backward_stages(const a3_unet *m) { return m->n_layers + 3; }

static bool is_conv_param(const unet_conv *c, int i) { return i == c->weight || i == c->bias; }

int a3_unet_param_grad_stage(const a3_unet *m, int i) {
  for (int l = 0; l < m->n_layers; l++)
    if (i >= m->layers[l].p_begin && i < m->layers[l].p_end) return m->n_layers - l;
  if (is_conv_param(&m->conv_out, i) || i == m->norm_out.weight || i == m->norm_out.bias) return 0;
  if (is_conv_param(&m->conv_in, i)) return m->n_layers + 1;
  return m->n_layers + 2; // the time embedding (and, were there anything else, the safe answer)
}

// Stages 0..stage are done; reports those not yet reported.
static a3_status report(const a3_backward_hook *hook, int *reported, int stage) {
  if (!hook) return A3_OK;
  while (*reported < stage) A3_TRY(hook->fn(hook->ctx, ++*reported));
  return A3_OK;
}

// The layers, last to first; each one's stage is reported once it is done.
static a3_status layers_bwd(a3_unet *m, a3_act **cur, a3_act **other, const a3_backward_hook *hook,
                            int *reported) {
  const a3_backend *be = m->be;
  for (int i = m->n_layers - 1; i >= 0; i--) {
    unet_layer *L = &m->layers[i];
    if (!L->req_out) break; // nothing below needs a gradient (see mark_requires_grad)
    if (L->skip_out >= 0) { // the skip's own share joins the main path's
      const unet_skip *sk = &m->skips[L->skip_out];
      be->ops->accumulate(be, *cur, sk->grad, (size_t)m->B * sk->C * sk->H * sk->W);
    }
    layer_bwd(m, L, cur, other);
    A3_TRY(report(hook, reported, m->n_layers - i));
  }
  return A3_OK;
}

a3_status a3_unet_backward(a3_unet *m, const float *dout, float *dx) {
  return a3_unet_backward_hooked(m, dout, dx, NULL);
}

a3_status a3_unet_backward_hooked(a3_unet *m, const float *dout, float *dx,
                                  const a3_backward_hook *hook) {
  if (!m->forward_done) return A3_FAIL(A3_ERR_INTERNAL, "a3_unet_backward without a forward");
  mark_requires_grad(m, dx != NULL);
  const a3_backend *be = m->be;
  if (m->temb_req) be->ops->act_zero(be, m->sc.dtemb_act, (size_t)m->B * m->T4);
  a3_act *cur = m->sc.d[0], *other = m->sc.d[1];
  const bool head_din = m->n_layers ? m->layers[m->n_layers - 1].req_out : m->skips[0].req;
  head_bwd(m, dout, head_din ? cur : NULL);
  int reported = -1;
  A3_TRY(report(hook, &reported, 0));
  A3_TRY(layers_bwd(m, &cur, &other, hook, &reported));
  if (m->skips[0].req) {
    be->ops->accumulate(be, cur, m->skips[0].grad, (size_t)m->B * m->C0 * m->H * m->W);
    stem_bwd(m, cur, dx);
  }
  A3_TRY(report(hook, &reported, m->n_layers + 1));
  if (m->temb_req) time_bwd(m);
  A3_TRY(be->ops->synchronize(be));
  return report(hook, &reported, m->n_layers + 2);
}
