// ResnetBlock2D (diffusers, time_embedding_norm "default", pre-norm):
//   h   = conv1(silu(norm1(x))) + time_emb_proj(silu(temb))[:, :, None, None]
//   out = (shortcut(x) + conv2(silu(norm2(h)))) / output_scale_factor
// shortcut is a 1x1 conv when the channel count changes, else the identity.
// silu(temb) is computed once per forward (m->temb_act): every resnet applies
// the same SiLU to the same embedding.
//
// Saved: h and the GroupNorm statistics (x is the previous layer's output,
// kept anyway). GroupNorm and SiLU run fused, so neither the normalised
// tensors nor the convs' inputs are stored: the backward recomputes a conv's
// input (one fused pass) only when that conv's weights train.
#include "unet_internal.h"

void unet_resnet_fwd(a3_unet *m, unet_layer *L, const a3_act *x) // x: (B, C_in, H, W)
{
  const a3_backend *be = m->be;
  unet_resnet *r = &L->u.res;
  const int B = m->B, HW = L->H * L->W;
  const size_t n_out = (size_t)B * L->C_out * HW;
  a3_act *act = m->sc.s[0]; // (B, C_in or C_out, HW) a conv's input
  a3_act *h2 = m->sc.s[1];  // (B, C_out, HW)
  unet_norm_silu_fwd(m, &r->norm1, act, r->mean1, r->rstd1, x, HW);
  unet_conv_fwd(m, &r->conv1, r->h, act);                      // h (B, C_out, HW)
  unet_linear_fwd(m, &r->temb_proj, m->sc.dt, m->temb_act, B); // (B, C_out)
  be->ops->add_channel_forward(be, r->h, r->h, m->sc.dt, B, L->C_out, HW);
  unet_norm_silu_fwd(m, &r->norm2, act, r->mean2, r->rstd2, r->h, HW);
  unet_conv_fwd(m, &r->conv2, h2, act);
  const a3_act *res = x; // (B, C_out, HW)
  if (r->shortcut.weight >= 0) {
    unet_conv_fwd(m, &r->shortcut, m->sc.s[2], x);
    res = m->sc.s[2];
  }
  be->ops->add_forward(be, L->out, res, h2, r->scale, n_out);
}

// The time projection's share: its parameter gradients, and its input
// gradient summed into dtemb_act when the time embedding trains.
static void temb_proj_bwd(a3_unet *m, unet_layer *L, const a3_act *dh) // dh: (B, C_out, HW)
{
  const a3_backend *be = m->be;
  unet_resnet *r = &L->u.res;
  if (!m->temb_req && !unet_linear_trains(m, &r->temb_proj)) return;
  be->ops->add_channel_backward(be, m->sc.dt, dh, m->B, L->C_out, L->H * L->W); // (B, C_out)
  unet_linear_bwd(m, &r->temb_proj, m->temb_req ? m->sc.dtemb_tmp : NULL, m->sc.dt, m->temb_act,
                  m->B);
  if (m->temb_req) be->ops->accumulate(be, m->sc.dtemb_act, m->sc.dtemb_tmp, (size_t)m->B * m->T4);
}

// x: the forward's input (B, C_in, H, W); dout (B, C_out, H, W); dx
// (B, C_in, H, W) overwritten, or NULL. Each gradient is computed only if
// something below needs it (a trainable parameter, the time embedding, dx).
void unet_resnet_bwd(a3_unet *m, unet_layer *L, const a3_act *x, const a3_act *dout, a3_act *dx) {
  const a3_backend *be = m->be;
  unet_resnet *r = &L->u.res;
  a3_act *const *s = m->sc.s;
  const int HW = L->H * L->W;
  const size_t n_in = (size_t)m->B * L->C_in * HW, n_out = (size_t)m->B * L->C_out * HW;
  const bool need_dn1 = dx || unet_norm_trains(m, &r->norm1);
  const bool need_dh = need_dn1 || unet_conv_trains(m, &r->conv1) || m->temb_req ||
                       unet_linear_trains(m, &r->temb_proj);
  const bool need_dn2 = need_dh || unet_norm_trains(m, &r->norm2);

  const a3_act *g = dout; // both branches of the residual sum get dout / output_scale_factor
  if (r->scale != 1.0f) {
    be->ops->add_backward(be, s[0], NULL, dout, r->scale, n_out);
    g = s[0];
  }
  if (unet_conv_trains(m, &r->conv2)) // conv2's input, recomputed (same statistics)
    unet_norm_silu_fwd(m, &r->norm2, s[1], r->mean2, r->rstd2, r->h, HW);
  unet_conv_bwd(m, &r->conv2, need_dn2 ? s[2] : NULL, g, s[1]);
  if (need_dn2) // s[2]: d silu(norm2(h)) -> s[1]: dh (B, C_out, HW)
    unet_norm_silu_bwd(m, &r->norm2, need_dh ? s[1] : NULL, s[2], r->h, r->mean2, r->rstd2, HW);
  if (need_dh) {
    temb_proj_bwd(m, L, s[1]);
    if (unet_conv_trains(m, &r->conv1)) // conv1's input, recomputed
      unet_norm_silu_fwd(m, &r->norm1, s[2], r->mean1, r->rstd1, x, HW);
    unet_conv_bwd(m, &r->conv1, need_dn1 ? s[3] : NULL, s[1], s[2]);
    if (need_dn1) unet_norm_silu_bwd(m, &r->norm1, dx, s[3], x, r->mean1, r->rstd1, HW);
  }
  if (r->shortcut.weight >= 0) {
    unet_conv_bwd(m, &r->shortcut, dx ? s[2] : NULL, g, x);
    if (dx) be->ops->accumulate(be, dx, s[2], n_in);
  } else if (dx) {
    be->ops->accumulate(be, dx, g, n_in);
  }
}
