// conv, GroupNorm and linear modules: the backend ops with their parameters
// fetched from the table (NULL gradients for frozen parameters).
#include "unet_internal.h"

bool unet_conv_trains(const a3_unet *m, const unet_conv *c) {
  return unet_trains(m, c->weight) || unet_trains(m, c->bias);
}

bool unet_norm_trains(const a3_unet *m, const unet_norm *n) {
  return unet_trains(m, n->weight) || unet_trains(m, n->bias);
}

bool unet_linear_trains(const a3_unet *m, const unet_linear *l) {
  return unet_trains(m, l->weight) || unet_trains(m, l->bias);
}

void unet_conv_fwd(const a3_unet *m, const unet_conv *c,
                   float *out,      // (B, OC, OH, OW)
                   const float *in) // (B, C, H, W)
{
  m->be->ops->conv2d_forward(m->be, &c->s, out, in, unet_p(m, c->weight), unet_p(m, c->bias),
                             m->sc.work);
}

void unet_conv_bwd(const a3_unet *m, const unet_conv *c,
                   float *din,        // (B, C, H, W) overwritten, or NULL
                   const float *dout, // (B, OC, OH, OW)
                   const float *in)   // (B, C, H, W), read only for the weight gradient
{
  if (!din && !unet_conv_trains(m, c)) return;
  m->be->ops->conv2d_backward(m->be, &c->s, din, unet_g(m, c->weight), unet_g(m, c->bias), dout, in,
                              unet_p(m, c->weight), m->sc.work);
}

void unet_norm_fwd(const a3_unet *m, const unet_norm *n,
                   float *out,               // (B, C, HW)
                   float *mean, float *rstd, // (B, G) saved
                   const float *in,          // (B, C, HW)
                   int HW) {
  m->be->ops->groupnorm_forward(m->be, out, mean, rstd, in, unet_p(m, n->weight),
                                unet_p(m, n->bias), m->B, n->C, HW, n->G, n->eps);
}

void unet_norm_bwd(const a3_unet *m, const unet_norm *n,
                   float *din,                           // (B, C, HW) overwritten, or NULL
                   const float *dout,                    // (B, C, HW)
                   const float *in,                      // (B, C, HW)
                   const float *mean, const float *rstd, // (B, G)
                   int HW) {
  if (!din && !unet_norm_trains(m, n)) return;
  m->be->ops->groupnorm_backward(m->be, din, unet_g(m, n->weight), unet_g(m, n->bias), dout, in,
                                 unet_p(m, n->weight), mean, rstd, m->B, n->C, HW, n->G);
}

void unet_linear_fwd(const a3_unet *m, const unet_linear *l,
                     float *out,      // (N, OUT)
                     const float *in, // (N, IN)
                     int N) {
  m->be->ops->linear_forward(m->be, out, in, unet_p(m, l->weight), unet_p(m, l->bias), N, l->IN,
                             l->OUT);
}

void unet_linear_bwd(const a3_unet *m, const unet_linear *l,
                     float *din,        // (N, IN) overwritten, or NULL
                     const float *dout, // (N, OUT)
                     const float *in,   // (N, IN)
                     int N) {
  if (!din && !unet_linear_trains(m, l)) return;
  m->be->ops->linear_backward(m->be, din, unet_g(m, l->weight), unet_g(m, l->bias), dout, in,
                              unet_p(m, l->weight), N, l->IN, l->OUT);
}

void unet_norm_silu_fwd(const a3_unet *m, const unet_norm *n,
                        float *out,               // (B, C, HW) silu(groupnorm(in))
                        float *mean, float *rstd, // (B, G) saved
                        const float *in,          // (B, C, HW)
                        int HW) {
  m->be->ops->groupnorm_silu_forward(m->be, out, mean, rstd, in, unet_p(m, n->weight),
                                     unet_p(m, n->bias), m->B, n->C, HW, n->G, n->eps);
}

void unet_norm_silu_bwd(const a3_unet *m, const unet_norm *n,
                        float *din,                           // (B, C, HW) overwritten, or NULL
                        const float *dout,                    // (B, C, HW)
                        const float *in,                      // (B, C, HW)
                        const float *mean, const float *rstd, // (B, G)
                        int HW) {
  if (!din && !unet_norm_trains(m, n)) return;
  m->be->ops->groupnorm_silu_backward(m->be, din, unet_g(m, n->weight), unet_g(m, n->bias), dout,
                                      in, unet_p(m, n->weight), unet_p(m, n->bias), mean, rstd,
                                      m->B, n->C, HW, n->G);
}
