// The forward pass: stem (time embedding, conv_in), the layers in execution
// order (concatenating skips where an up-block resnet pops one), and the head
// (conv_norm_out, SiLU, conv_out). Every saved tensor goes to its planned place.
#include "unet_internal.h"

// x (B, Cin, H, W) -> m->x_in, centred (2x - 1) when center_input_sample.
static void stem_input(a3_unet *m, const float *x) {
  const a3_backend *be = m->be;
  const int Cin = (int)m->arch.in_channels, HW = m->H * m->W;
  const size_t n = (size_t)m->B * Cin * HW;
  be->ops->act_from_f32(be, m->x_in, x, n);
  if (!m->arch.center_input_sample) return;
  be->ops->add_forward(be, m->x_in, m->x_in, m->x_in, 1.0f, n); // 2x, exact
  be->ops->add_channel_forward(be, m->x_in, m->x_in, m->minus_one, m->B, Cin, HW);
}

// timesteps (B) -> temb_act = silu(linear_2(silu(linear_1(sinusoid(t))))) (B, T4).
static void stem_time(a3_unet *m, const float *timesteps) {
  const a3_backend *be = m->be;
  const size_t BT = (size_t)m->B * m->T4;
  be->ops->timestep_embedding(be, m->t_sin, timesteps, m->B, m->C0, m->arch.flip_sin_to_cos,
                              (float)m->arch.freq_shift, 10000.0f); // (B, C0)
  unet_linear_fwd(m, &m->time1, m->t_l1, m->t_sin, m->B);           // (B, T4)
  be->ops->silu_forward(be, m->t_a1, m->t_l1, BT);
  unet_linear_fwd(m, &m->time2, m->temb, m->t_a1, m->B); // (B, T4)
  be->ops->silu_forward(be, m->temb_act, m->temb, BT);   // what every time_emb_proj reads
}

static void layer_fwd(a3_unet *m, unet_layer *L) {
  const a3_backend *be = m->be;
  switch (L->kind) {
  case UNET_RESNET: {
    const a3_act *x = L->in; // (B, C_in, H, W)
    if (L->skip_in >= 0) {
      const unet_skip *sk = &m->skips[L->skip_in];
      be->ops->concat_forward(be, L->cat, L->in, sk->act, m->B, L->C_in - sk->C, sk->C,
                              L->H * L->W);
      x = L->cat;
    }
    unet_resnet_fwd(m, L, x);
    break;
  }
  case UNET_ATTN: unet_attn_fwd(m, L); break;
  case UNET_DOWNSAMPLE: unet_conv_fwd(m, &L->u.conv, L->out, L->in); break;
  case UNET_UPSAMPLE: // nearest x2 into scratch, then the 3x3 conv
    be->ops->upsample2x_forward(be, m->sc.s[0], L->in, m->B, L->C_in, L->H, L->W);
    unet_conv_fwd(m, &L->u.conv, L->out, m->sc.s[0]);
    break;
  }
}

// The last layer's output (B, C0, H, W) -> out (B, out_channels, H, W), fp32.
static void head_fwd(a3_unet *m, float *out) {
  const int HW = m->H * m->W;
  const a3_act *h = m->n_layers ? m->layers[m->n_layers - 1].out : m->h0;
  unet_norm_silu_fwd(m, &m->norm_out, m->sc.s[0], m->mean_out, m->rstd_out, h, HW);
  unet_conv_fwd(m, &m->conv_out, m->sc.s[1], m->sc.s[0]);
  m->be->ops->act_to_f32(m->be, out, m->sc.s[1], (size_t)m->B * m->arch.out_channels * HW);
}

a3_status a3_unet_forward(a3_unet *m, const float *x, const float *timesteps, float *out) {
  if (!m->B) return A3_FAIL(A3_ERR_INTERNAL, "a3_unet_forward before a3_unet_plan");
  stem_input(m, x);
  stem_time(m, timesteps);
  unet_conv_fwd(m, &m->conv_in, m->h0, m->x_in); // (B, C0, H, W) = skip 0
  for (int i = 0; i < m->n_layers; i++) layer_fwd(m, &m->layers[i]);
  head_fwd(m, out);
  m->forward_done = true;
  return m->be->ops->synchronize(m->be);
}
