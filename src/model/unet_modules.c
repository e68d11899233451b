// conv, GroupNorm and linear modules: the backend ops with their parameters
// fetched from the table (NULL gradients for frozen parameters). A linear
// carries its LoRA (PEFT semantics) when it has one, so every caller of
// unet_linear_fwd/bwd gets it for free.
#include "unet_internal.h"

bool unet_conv_trains(const a3_unet *m, const unet_conv *c) {
  return unet_trains(m, c->weight) || unet_trains(m, c->bias);
}

bool unet_norm_trains(const a3_unet *m, const unet_norm *n) {
  return unet_trains(m, n->weight) || unet_trains(m, n->bias);
}

bool unet_linear_trains(const a3_unet *m, const unet_linear *l) {
  return unet_trains(m, l->weight) || unet_trains(m, l->bias) || unet_trains(m, l->lora_a) ||
         unet_trains(m, l->lora_b);
}

void unet_conv_fwd(const a3_unet *m, const unet_conv *c,
                   a3_act *out,      // (B, OC, OH, OW)
                   const a3_act *in) // (B, C, H, W)
{
  m->be->ops->conv2d_forward(m->be, &c->s, out, in, unet_p(m, c->weight), unet_p(m, c->bias),
                             m->sc.work);
}

void unet_conv_bwd(const a3_unet *m, const unet_conv *c,
                   a3_act *din,        // (B, C, H, W) overwritten, or NULL
                   const a3_act *dout, // (B, OC, OH, OW)
                   const a3_act *in)   // (B, C, H, W), read only for the weight gradient
{
  if (!din && !unet_conv_trains(m, c)) return;
  m->be->ops->conv2d_backward(m->be, &c->s, din, unet_g(m, c->weight), unet_g(m, c->bias), dout, in,
                              unet_p(m, c->weight), m->sc.work);
}

void unet_norm_fwd(const a3_unet *m, const unet_norm *n,
                   a3_act *out,              // (B, C, HW)
                   float *mean, float *rstd, // (B, G) saved
                   const a3_act *in,         // (B, C, HW)
                   int HW) {
  m->be->ops->groupnorm_forward(m->be, out, mean, rstd, in, unet_p(m, n->weight),
                                unet_p(m, n->bias), m->B, n->C, HW, n->G, n->eps);
}

void unet_norm_bwd(const a3_unet *m, const unet_norm *n,
                   a3_act *din,                          // (B, C, HW) overwritten, or NULL
                   const a3_act *dout,                   // (B, C, HW)
                   const a3_act *in,                     // (B, C, HW)
                   const float *mean, const float *rstd, // (B, G)
                   int HW) {
  if (!din && !unet_norm_trains(m, n)) return;
  m->be->ops->groupnorm_backward(m->be, din, unet_g(m, n->weight), unet_g(m, n->bias), dout, in,
                                 unet_p(m, n->weight), mean, rstd, m->B, n->C, HW, n->G);
}

// y = W x + b, then with LoRA y += B z, z = scale * (A x) saved: lora_B(lora_A(x)) * scaling
// as PEFT computes it, the scaling moved onto the (N, R) bottleneck. B = 0
// adds +-0 exactly, so y is then bitwise the plain linear's.
void unet_linear_fwd(const a3_unet *m, const unet_linear *l,
                     a3_act *out,      // (N, OUT)
                     const a3_act *in, // (N, IN)
                     int N) {
  const a3_backend *be = m->be;
  be->ops->linear_forward(be, out, in, unet_p(m, l->weight), unet_p(m, l->bias), N, l->IN, l->OUT);
  if (l->lora_a < 0) return;
  const size_t nz = (size_t)N * l->R;
  be->ops->linear_forward(be, l->lora_z, in, unet_p(m, l->lora_a), NULL, N, l->IN, l->R);
  if (l->lora_scale != 1.0f)
    be->ops->add_backward(be, l->lora_z, NULL, l->lora_z, l->lora_scale, nz);
  be->ops->linear_forward(be, m->sc.x_tmp, l->lora_z, unet_p(m, l->lora_b), NULL, N, l->R, l->OUT);
  be->ops->accumulate(be, out, m->sc.x_tmp, (size_t)N * l->OUT);
}

// The base linear's gradients, then LoRA's: dB += dy^T z; dz = scale * dy B;
// dA += dz^T x; din += dz A. Only what something needs is computed.
void unet_linear_bwd(const a3_unet *m, const unet_linear *l,
                     a3_act *din,        // (N, IN) overwritten, or NULL
                     const a3_act *dout, // (N, OUT)
                     const a3_act *in,   // (N, IN)
                     int N) {
  if (!din && !unet_linear_trains(m, l)) return;
  const a3_backend *be = m->be;
  if (din || unet_trains(m, l->weight) || unet_trains(m, l->bias))
    be->ops->linear_backward(be, din, unet_g(m, l->weight), unet_g(m, l->bias), dout, in,
                             unet_p(m, l->weight), N, l->IN, l->OUT);
  if (l->lora_a < 0) return;
  const bool need_dz = din || unet_trains(m, l->lora_a);
  if (!need_dz && !unet_trains(m, l->lora_b)) return;
  a3_act *dz = m->sc.x_r; // (N, R)
  be->ops->linear_backward(be, need_dz ? dz : NULL, unet_g(m, l->lora_b), NULL, dout, l->lora_z,
                           unet_p(m, l->lora_b), N, l->R, l->OUT);
  if (!need_dz) return;
  if (l->lora_scale != 1.0f)
    be->ops->add_backward(be, dz, NULL, dz, l->lora_scale, (size_t)N * l->R);
  be->ops->linear_backward(be, din ? m->sc.x_tmp : NULL, unet_g(m, l->lora_a), NULL, dz, in,
                           unet_p(m, l->lora_a), N, l->IN, l->R);
  if (din) be->ops->accumulate(be, din, m->sc.x_tmp, (size_t)N * l->IN);
}

void unet_norm_silu_fwd(const a3_unet *m, const unet_norm *n,
                        a3_act *out,              // (B, C, HW) silu(groupnorm(in))
                        float *mean, float *rstd, // (B, G) saved
                        const a3_act *in,         // (B, C, HW)
                        int HW) {
  m->be->ops->groupnorm_silu_forward(m->be, out, mean, rstd, in, unet_p(m, n->weight),
                                     unet_p(m, n->bias), m->B, n->C, HW, n->G, n->eps);
}

void unet_norm_silu_bwd(const a3_unet *m, const unet_norm *n,
                        a3_act *din,                          // (B, C, HW) overwritten, or NULL
                        const a3_act *dout,                   // (B, C, HW)
                        const a3_act *in,                     // (B, C, HW)
                        const float *mean, const float *rstd, // (B, G)
                        int HW) {
  if (!din && !unet_norm_trains(m, n)) return;
  m->be->ops->groupnorm_silu_backward(m->be, din, unet_g(m, n->weight), unet_g(m, n->bias), dout,
                                      in, unet_p(m, n->weight), unet_p(m, n->bias), mean, rstd,
                                      m->B, n->C, HW, n->G);
}
