// a3fta backend: tensor ops on one device, forward and backward.
//
// Model code calls ops only through an op table (a3_backend_ops), so the CPU
// backend (the reference, src/backend/cpu/) and the CUDA backend (later,
// src/backend/cuda/) are interchangeable op for op.
//
// Conventions shared by every op (a backend must keep them):
// - Tensors are plain pointers into the backend's memory (host memory on the
//   CPU, device memory on CUDA), dense, row-major, in the layout given by the
//   shape comment next to each argument: `// (B, C, H, W)` means W is the
//   fastest-moving index. Shapes are plain ints; element counts are size_t.
// - Activations and their gradients (a3_act) are stored in the backend's
//   activation type: fp32, or bf16 on a CUDA backend with precision bf16
//   (be->act_bytes 4 or 2); ops compute in fp32 and round once when they
//   store. Parameters, their gradients, GroupNorm statistics, attention
//   probabilities, losses and everything outside the network (noise, sampler
//   state, optimizer moments) are fp32 (float).
// - Ops never allocate. An op that needs scratch memory takes `workspace`,
//   sized in bytes by its *_workspace_size query for the same shape. One
//   workspace of the largest size over a model's ops can serve them all.
// - Backward ops OVERWRITE activation gradients (dinp, da, ...) and ACCUMULATE
//   (+=) into parameter gradients (dweight, dbias), so that gradient
//   accumulation over micro-batches only needs the parameter gradients zeroed
//   once per step. Any gradient pointer may be NULL: that gradient is not
//   computed (a frozen parameter, or an activation below the lowest trainable
//   parameter, where the backward pass can stop early).
//   A tensor that feeds two consumers gets its gradient from one backward
//   (overwrite) plus `accumulate` of the other.
// - Inputs and outputs of one call must not overlap unless an op says so.
// - Ops return nothing: the CPU backend cannot fail on valid shapes, and a
//   device backend records its first asynchronous error, which `synchronize`
//   reports (and clears). Shapes are the caller's contract; check them once
//   when planning a model (a3_conv2d_check), not per call.
#ifndef A3FTA_BACKEND_H
#define A3FTA_BACKEND_H

#include "a3fta/core.h"

#include <stddef.h>
#include <stdint.h>

typedef struct a3_backend a3_backend;
typedef struct a3_backend_ops a3_backend_ops;
// An element of an activation tensor, in the backend's storage type. Never
// defined: only ops read or write the elements; other code addresses them
// with a3_act_at, and converts with act_from_f32 / act_to_f32.
typedef struct a3_act a3_act;

struct a3_backend {
  const char *name;          // "cpu", "cuda"
  const a3_backend_ops *ops; // the op table
  void *impl;                // backend-private state (stream, handles); NULL for the CPU
  size_t act_bytes;          // bytes of one a3_act element: 4 (fp32) or 2 (bf16)
};

// Element i of activation tensor p (pointer arithmetic in the storage type).
static inline a3_act *a3_act_at(const a3_backend *be, a3_act *p, size_t i) {
  return (a3_act *)(void *)((char *)p + i * be->act_bytes);
}
static inline const a3_act *a3_act_cat(const a3_backend *be, const a3_act *p, size_t i) {
  return (const a3_act *)(const void *)((const char *)p + i * be->act_bytes);
}
// An fp32 tensor as activations, and back, for code that runs only where
// act_bytes is 4 (the CPU backend's reference loops, tests on the CPU).
static inline a3_act *a3_act_f32(float *p) { return (a3_act *)(void *)p; }
static inline const a3_act *a3_act_cf32(const float *p) { return (const a3_act *)(const void *)p; }
static inline float *a3_f32_act(a3_act *p) { return (float *)(void *)p; }
static inline const float *a3_f32_cact(const a3_act *p) { return (const float *)(const void *)p; }

// A 2-D convolution: input (B, C, H, W), weight (OC, C, KH, KW), output
// (B, OC, OH, OW) with OH = (H + pad_top + pad_bottom - KH) / stride + 1.
// Padding is zeros and may be asymmetric: diffusers' Downsample2D with
// downsample_padding 0 pads (left 0, right 1, top 0, bottom 1) then runs a
// 3x3 stride-2 conv with no padding of its own; that is one conv here with
// pad_top 0, pad_bottom 1, pad_left 0, pad_right 1.
typedef struct {
  int B, C, H, W; // input
  int OC, KH, KW; // output channels, kernel
  int stride;     // same in both directions
  int pad_top, pad_bottom, pad_left, pad_right;
} a3_conv2d_shape;

static inline int a3_conv2d_out_h(const a3_conv2d_shape *s) {
  return (s->H + s->pad_top + s->pad_bottom - s->KH) / s->stride + 1;
}
static inline int a3_conv2d_out_w(const a3_conv2d_shape *s) {
  return (s->W + s->pad_left + s->pad_right - s->KW) / s->stride + 1;
}
// A3_ERR_INTERNAL with the shape in the message unless every size is positive,
// pads are non-negative and the output is at least 1x1.
a3_status a3_conv2d_check(const a3_conv2d_shape *s);

// The per-step scalars of AdamW, computed once per step on the host
// (a3_adamw_prepare, optim.h) and rounded to fp32 where torch multiplies fp32
// tensors by Python floats.
typedef struct {
  float decay_mul; // 1 - lr * weight_decay (applied only to decayed tensors)
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float neg_step_size; // -lr / (1 - beta1^t)
  float bc2_sqrt;      // sqrt(1 - beta2^t)
  float eps;
} a3_adamw_scalars;

// The trainable segments of a flat parameter buffer, as the optimizer ops
// over every segment at once take them; the arrays are in the backend's
// memory (a3_segment_table_make, optim.h). Segment k is the floats
// [offset[k], offset[k] + begin[k+1] - begin[k]) of params and grads, and
// [begin[k], begin[k+1]) of the compact m, v and EMA.
typedef struct {
  int n;
  const int64_t *begin;  // (n + 1) begin[0] = 0, non-decreasing
  const int64_t *offset; // (n)
  const int32_t *decay;  // (n) 1: weight decay applies to segment k
  int64_t total;         // begin[n] (host copy)
} a3_segment_table;

// The per-step scalars of a DDPM or DDIM sampler step, computed once per step
// on the host (a3_sampler_prepare, diffusion.h) in fp32 as diffusers'
// schedulers compute them; the sampler_step op applies them elementwise.
typedef struct {
  float sqrt_beta_prod_t; // sqrt(1 - acp_t)
  float sqrt_acp_t;       // sqrt(acp_t)
  float c_x0;             // coefficient of the predicted (clipped) x0
  float c_dir;            // coefficient of x_t (DDPM) or of eps (DDIM)
  float std;              // noise scale
  int dir_is_eps;         // 1 (DDIM): c_dir * eps; 0 (DDPM): c_dir * x_t
  int add_noise;          // 1: std * noise is added (noise must be given)
} a3_sampler_scalars;

struct a3_backend_ops {
  // ------------------------------------------------------------ memory
  a3_status (*alloc)(const a3_backend *be, void **out, size_t bytes); // zeroed
  void (*release)(const a3_backend *be, void *ptr);                   // NULL is fine
  a3_status (*upload)(const a3_backend *be, void *dst, const void *host_src, size_t bytes);
  a3_status (*download)(const a3_backend *be, void *host_dst, const void *src, size_t bytes);
  // Waits for queued work; returns (and clears) the first error since the last call.
  a3_status (*synchronize)(const a3_backend *be);

  // ------------------------------------------------------------ elementwise helpers
  void (*zero)(const a3_backend *be, float *x, size_t n);      // x = 0
  void (*act_zero)(const a3_backend *be, a3_act *x, size_t n); // x = 0
  // dst += src (a tensor with two consumers collects its second gradient).
  void (*accumulate)(const a3_backend *be, a3_act *dst, const a3_act *src, size_t n);
  // Between fp32 tensors and activations, both in backend memory: dst =
  // src rounded to the storage type (to nearest even), or widened (exact).
  // dst and src must not overlap.
  void (*act_from_f32)(const a3_backend *be, a3_act *dst, const float *src, size_t n);
  void (*act_to_f32)(const a3_backend *be, float *dst, const a3_act *src, size_t n);

  // ------------------------------------------------------------ conv2d (im2col + GEMM on the CPU)
  size_t (*conv2d_workspace_size)(const a3_backend *be, const a3_conv2d_shape *s); // bytes
  void (*conv2d_forward)(const a3_backend *be, const a3_conv2d_shape *s,
                         a3_act *out,         // (B, OC, OH, OW)
                         const a3_act *inp,   // (B, C, H, W)
                         const float *weight, // (OC, C, KH, KW)
                         const float *bias,   // (OC), or NULL for none
                         void *workspace);
  void (*conv2d_backward)(const a3_backend *be, const a3_conv2d_shape *s,
                          a3_act *dinp,        // (B, C, H, W) overwritten, or NULL
                          float *dweight,      // (OC, C, KH, KW) +=, or NULL
                          float *dbias,        // (OC) +=, or NULL
                          const a3_act *dout,  // (B, OC, OH, OW)
                          const a3_act *inp,   // (B, C, H, W), read only when dweight
                          const float *weight, // (OC, C, KH, KW), read only when dinp
                          void *workspace);

  // ------------------------------------------------------------ GroupNorm
  // G groups of C/G consecutive channels; statistics over (C/G, HW) per (b, g),
  // biased variance, y = (x - mean) * rstd * weight[c] + bias[c],
  // rstd = 1 / sqrt(var + eps). mean and rstd are saved for the backward.
  void (*groupnorm_forward)(const a3_backend *be,
                            a3_act *out,         // (B, C, HW)
                            float *mean,         // (B, G) saved
                            float *rstd,         // (B, G) saved
                            const a3_act *inp,   // (B, C, HW)
                            const float *weight, // (C)
                            const float *bias,   // (C)
                            int B, int C, int HW, int G, float eps);
  void (*groupnorm_backward)(const a3_backend *be,
                             a3_act *dinp,        // (B, C, HW) overwritten, or NULL
                             float *dweight,      // (C) +=, or NULL
                             float *dbias,        // (C) +=, or NULL
                             const a3_act *dout,  // (B, C, HW)
                             const a3_act *inp,   // (B, C, HW)
                             const float *weight, // (C)
                             const float *mean,   // (B, G)
                             const float *rstd,   // (B, G)
                             int B, int C, int HW, int G);

  // ------------------------------------------------------------ GroupNorm + SiLU, fused
  // out = silu(groupnorm(inp)), the resnets' norm -> act pair in one pass
  // (same arguments, statistics and saved mean/rstd as groupnorm_forward).
  // The GroupNorm output is not stored: the backward recomputes it from inp,
  // mean, rstd, weight and bias, so a model that keeps inp (which it does for
  // the GroupNorm backward anyway) need not keep the normalised tensor.
  // To get silu(groupnorm(inp)) again in the backward (a conv's input, for
  // its dweight), call the forward again.
  void (*groupnorm_silu_forward)(const a3_backend *be,
                                 a3_act *out,         // (B, C, HW)
                                 float *mean,         // (B, G) saved
                                 float *rstd,         // (B, G) saved
                                 const a3_act *inp,   // (B, C, HW)
                                 const float *weight, // (C)
                                 const float *bias,   // (C)
                                 int B, int C, int HW, int G, float eps);
  // Gradients of out = silu(groupnorm(inp)); dinp overwritten, dweight and
  // dbias +=, any may be NULL (the groupnorm_backward contract).
  void (*groupnorm_silu_backward)(const a3_backend *be,
                                  a3_act *dinp,        // (B, C, HW) overwritten, or NULL
                                  float *dweight,      // (C) +=, or NULL
                                  float *dbias,        // (C) +=, or NULL
                                  const a3_act *dout,  // (B, C, HW)
                                  const a3_act *inp,   // (B, C, HW)
                                  const float *weight, // (C)
                                  const float *bias,   // (C)
                                  const float *mean,   // (B, G) from the forward
                                  const float *rstd,   // (B, G) from the forward
                                  int B, int C, int HW, int G);

  // ------------------------------------------------------------ SiLU x * sigmoid(x)
  // out may equal inp (in place) when the backward is not needed.
  void (*silu_forward)(const a3_backend *be, a3_act *out, const a3_act *inp, size_t n);
  // dinp overwritten; dinp may equal dout.
  void (*silu_backward)(const a3_backend *be, a3_act *dinp, const a3_act *dout, const a3_act *inp,
                        size_t n);

  // ------------------------------------------------------------ linear y = x W^T + b
  void (*linear_forward)(const a3_backend *be,
                         a3_act *out,         // (N, OUT)
                         const a3_act *inp,   // (N, IN)
                         const float *weight, // (OUT, IN) PyTorch layout
                         const float *bias,   // (OUT), or NULL
                         int N, int IN, int OUT);
  void (*linear_backward)(const a3_backend *be,
                          a3_act *dinp,        // (N, IN) overwritten, or NULL
                          float *dweight,      // (OUT, IN) +=, or NULL
                          float *dbias,        // (OUT) +=, or NULL
                          const a3_act *dout,  // (N, OUT)
                          const a3_act *inp,   // (N, IN), read only when dweight
                          const float *weight, // (OUT, IN), read only when dinp
                          int N, int IN, int OUT);

  // ------------------------------------------------------------ attention
  // NH heads of d = C / NH channels each: head h owns channels [h*d, (h+1)*d)
  // of q, k, v and out (diffusers' head_to_batch_dim split). For each (b, h):
  // P = softmax(Q K^T / sqrt(d)) over keys (max subtracted), O = P V, and the
  // heads are merged back into (B, T, C). P is saved for the backward; probs
  // may be NULL for inference (then the workspace holds one (T, T) block).
  size_t (*attention_workspace_size)(const a3_backend *be, int B, int T, int C, int NH);
  void (*attention_forward)(const a3_backend *be,
                            a3_act *out,     // (B, T, C)
                            float *probs,    // (B, NH, T, T) saved, or NULL
                            const a3_act *q, // (B, T, C)
                            const a3_act *k, // (B, T, C)
                            const a3_act *v, // (B, T, C)
                            int B, int T, int C, int NH, void *workspace);
  void (*attention_backward)(const a3_backend *be,
                             a3_act *dq,         // (B, T, C) overwritten, or NULL
                             a3_act *dk,         // (B, T, C) overwritten, or NULL
                             a3_act *dv,         // (B, T, C) overwritten, or NULL
                             const a3_act *dout, // (B, T, C)
                             const a3_act *q,    // (B, T, C)
                             const a3_act *k,    // (B, T, C)
                             const a3_act *v,    // (B, T, C)
                             const float *probs, // (B, NH, T, T) from the forward
                             int B, int T, int C, int NH, void *workspace);

  // ------------------------------------------------------------ layout (B, C, H*W) <-> (B, H*W, C)
  // Each is the other's backward: d(inp) = the other transpose of d(out).
  void (*to_tokens)(const a3_backend *be, a3_act *out, // (B, HW, C)
                    const a3_act *inp,                 // (B, C, HW)
                    int B, int C, int HW);
  void (*from_tokens)(const a3_backend *be, a3_act *out, // (B, C, HW)
                      const a3_act *inp,                 // (B, HW, C)
                      int B, int C, int HW);

  // ------------------------------------------------------------ nearest x2 upsampling
  void (*upsample2x_forward)(const a3_backend *be, a3_act *out, // (B, C, 2H, 2W)
                             const a3_act *inp,                 // (B, C, H, W)
                             int B, int C, int H, int W);
  void (*upsample2x_backward)(const a3_backend *be, a3_act *dinp, // (B, C, H, W) overwritten
                              const a3_act *dout,                 // (B, C, 2H, 2W)
                              int B, int C, int H, int W);

  // ------------------------------------------------------------ channel concat [a, b]
  void (*concat_forward)(const a3_backend *be, a3_act *out, // (B, C1 + C2, HW)
                         const a3_act *a,                   // (B, C1, HW)
                         const a3_act *b,                   // (B, C2, HW)
                         int B, int C1, int C2, int HW);
  void (*concat_backward)(const a3_backend *be,
                          a3_act *da,         // (B, C1, HW) overwritten, or NULL
                          a3_act *db,         // (B, C2, HW) overwritten, or NULL
                          const a3_act *dout, // (B, C1 + C2, HW)
                          int B, int C1, int C2, int HW);

  // ------------------------------------------------------------ residual add
  // out = (a + b) * scale; scale = 1 / output_scale_factor. out may equal a or b.
  void (*add_forward)(const a3_backend *be, a3_act *out, const a3_act *a, const a3_act *b,
                      float scale, size_t n);
  // da = db = dout * scale, overwritten, either may be NULL or equal dout.
  void (*add_backward)(const a3_backend *be, a3_act *da, a3_act *db, const a3_act *dout,
                       float scale, size_t n);
  // Per-(b, c) broadcast add (a resnet adds its time embedding projection):
  // out[b, c, :] = inp[b, c, :] + t[b, c]. out may equal inp. The input
  // gradient is dout itself; the backward gives dt.
  void (*add_channel_forward)(const a3_backend *be, a3_act *out, // (B, C, HW)
                              const a3_act *inp,                 // (B, C, HW)
                              const a3_act *t,                   // (B, C)
                              int B, int C, int HW);
  void (*add_channel_backward)(const a3_backend *be, a3_act *dt, // (B, C) overwritten
                               const a3_act *dout,               // (B, C, HW)
                               int B, int C, int HW);

  // ------------------------------------------------------------ timestep embedding (forward only)
  // diffusers get_timestep_embedding with scale 1: half = dim / 2,
  // freq[i] = exp(-ln(max_period) * i / (half - freq_shift)), arg = t * freq[i]
  // (both rounded to fp32 as PyTorch does, so outputs match it), out = [sin,
  // cos] or [cos, sin] when flip_sin_to_cos; an odd dim gets a zero last column.
  void (*timestep_embedding)(const a3_backend *be, a3_act *out, // (N, dim)
                             const float *t,                    // (N) timesteps
                             int N, int dim, int flip_sin_to_cos, float freq_shift,
                             float max_period);

  // ------------------------------------------------------------ mean-squared error
  // *loss = mean((pred - target)^2), one float in backend memory.
  void (*mse_forward)(const a3_backend *be, float *loss, const float *pred, const float *target,
                      size_t n);
  // dpred = dloss * 2 (pred - target) / n, overwritten. dloss is dL/d(loss)
  // (1, or 1 / micro-batches when accumulating).
  void (*mse_backward)(const a3_backend *be, float *dpred, const float *pred, const float *target,
                       size_t n, float dloss);

  // ------------------------------------------------------------ adapter activations
  // (SiLU is above; identity needs no op.) out may equal inp; dinp may equal dout.
  // GELU, exact: x * (1 + erf(x / sqrt 2)) / 2 (PyTorch's approximate="none").
  void (*gelu_forward)(const a3_backend *be, a3_act *out, // (n)
                       const a3_act *inp,                 // (n)
                       size_t n);
  // dinp = dout * (Phi(x) + x phi(x)), overwritten.
  void (*gelu_backward)(const a3_backend *be, a3_act *dinp, // (n)
                        const a3_act *dout,                 // (n)
                        const a3_act *inp,                  // (n) the forward's input
                        size_t n);
  // ReLU max(x, 0); the backward passes dout where inp > 0, else 0 (0 at 0, as PyTorch).
  void (*relu_forward)(const a3_backend *be, a3_act *out, const a3_act *inp, size_t n); // (n)
  void (*relu_backward)(const a3_backend *be, a3_act *dinp, const a3_act *dout, const a3_act *inp,
                        size_t n); // (n) each

  // ------------------------------------------------------------ gated residual (adapter gate)
  // out = a + gate[0] * b; gate is one float in backend memory (a parameter).
  // out may equal a or b.
  void (*gated_add_forward)(const a3_backend *be, a3_act *out, // (n)
                            const a3_act *a,                   // (n)
                            const a3_act *b,                   // (n)
                            const float *gate,                 // (1)
                            size_t n);
  // db = gate[0] * dout (overwritten, or NULL; may equal dout); dgate[0] +=
  // sum(dout * b) (or NULL). The gradient of a is dout itself.
  void (*gated_add_backward)(const a3_backend *be, a3_act *db, // (n)
                             float *dgate,                     // (1)
                             const a3_act *dout,               // (n)
                             const a3_act *b,                  // (n) the forward's b
                             const float *gate,                // (1)
                             size_t n);

  // ------------------------------------------------------------ softmax cross-entropy (classifier)
  // Rows of logits (N, K): probs = softmax (max subtracted), saved for the
  // backward; *loss = scale * sum_i (logsumexp(logits_i) - logits_i[labels[i]])
  // (one float in backend memory; scale 1/N gives the mean). labels (N)
  // int32 in [0, K), in backend memory.
  void (*softmax_xent_forward)(const a3_backend *be, float *loss, // (1)
                               float *probs,                      // (N, K) saved
                               const float *logits,               // (N, K)
                               const int32_t *labels,             // (N)
                               int N, int K, float scale);
  // dlogits = scale * (probs - onehot(labels)), overwritten.
  void (*softmax_xent_backward)(const a3_backend *be, float *dlogits, // (N, K)
                                const float *probs,                   // (N, K) from the forward
                                const int32_t *labels,                // (N)
                                int N, int K, float scale);

  // ------------------------------------------------------------ optimizer (training on a device)
  // The same arithmetic as torch.optim.AdamW, clip_grad_norm_ and diffusers'
  // EMAModel, on tensors in backend memory, so a device never sends weights
  // to the host during training. The trainer calls these per trainable
  // segment (m, v and ema hold only the trainable floats, compact).
  // out[0] = sum(x^2), accumulated in double in a fixed order.
  void (*sum_squares)(const a3_backend *be, double *out, // (1)
                      const float *x,                    // (n)
                      size_t n);
  // norm[0] = sqrt(sum of partials); scale[0] = max_norm / (norm + 1e-6) when
  // that is below 1 (and max_norm > 0), else 1: clip_grad_norm_'s factor.
  void (*clip_scale)(const a3_backend *be, float *scale, // (1)
                     double *norm,                       // (1)
                     const double *partials,             // (n_partials)
                     int n_partials, double max_norm);
  // One AdamW step: g = grad * grad_scale[0] (grad_scale NULL: 1);
  // m = beta1 m + (1 - beta1) g; v = beta2 v + (1 - beta2) g^2;
  // param = (decay ? param * decay_mul : param) + neg_step_size * m / (sqrt(v) / bc2_sqrt + eps),
  // each line rounded as torch rounds it.
  void (*adamw_update)(const a3_backend *be, float *param, // (n)
                       const float *grad,                  // (n)
                       float *m,                           // (n)
                       float *v,                           // (n)
                       size_t n, const a3_adamw_scalars *s, int decay,
                       const float *grad_scale); // (1) or NULL
  // ema = ema - one_minus_decay * (ema - param), three fp32 roundings as torch.
  void (*ema_update)(const a3_backend *be, float *ema, // (n)
                     const float *param,               // (n)
                     size_t n, float one_minus_decay);
  // The three above over every segment of a table in one call (a device
  // launches one kernel for all, not one per segment), each segment's
  // result bitwise what the op above gives it: partials[k] = sum_squares
  // of segment k of grads; AdamW with decay = t->decay[k] && decay; the EMA
  // of each segment (ema compact, params flat).
  void (*sum_squares_segments)(const a3_backend *be, double *partials, // (t->n)
                               const float *grads, const a3_segment_table *t);
  void (*adamw_update_segments)(const a3_backend *be, float *params, const float *grads, float *m,
                                float *v, // (t->total)
                                const a3_segment_table *t, const a3_adamw_scalars *s, int decay,
                                const float *grad_scale);       // (1) or NULL
  void (*ema_update_segments)(const a3_backend *be, float *ema, // (t->total)
                              const float *params, const a3_segment_table *t,
                              float one_minus_decay);

  // ------------------------------------------------------------ sampler step (DDPM / DDIM)
  // Per element, each line one fp32 rounding (no fused multiply-add), as
  // diffusers' schedulers round them:
  //   x0 = clamp((x_t - sqrt_beta_prod_t * eps) / sqrt_acp_t, -1, 1) (NaN passes),
  //   x_prev = c_x0 * x0 + c_dir * (dir_is_eps ? eps : x_t),
  //   x_prev = x_prev + std * noise                                   (add_noise only).
  // noise may be NULL unless add_noise; x_prev may equal x_t (in place).
  void (*sampler_step)(const a3_backend *be, float *x_prev, // (n)
                       const float *eps,                    // (n) the model's output
                       const float *x_t,                    // (n)
                       const float *noise,                  // (n) or NULL
                       size_t n, const a3_sampler_scalars *s);

  // ------------------------------------------------------------ training noise (diffusion)
  // The random part of an epsilon-prediction training batch, drawn where the
  // model trains, so that a device step needs only x0 from the host: for
  // each sample i, global sample sample0 + i of step `step` (< 2^32),
  //   tf[i] = t_i = a3_noise_timestep(seed, step, sample0 + i, T), as a float,
  //   noise[i, :] = a3_noise_randn_pair over stream A3_NOISE_STREAM_TRAIN,
  //   x_t[i, :] = sqrt(acp[t_i]) x0[i, :] + sqrt(1 - acp[t_i]) noise[i, :],
  // i.e. a3_diffusion_training_batch (diffusion.h) with the formulas of
  // a3fta/backend_noise.h: bitwise on the CPU; on CUDA the timesteps are
  // exact and a noise value (and its x_t) may be one float ulp off where the
  // device's double log/sin/cos round differently. x_t may equal x0.
  void (*training_noise)(const a3_backend *be, float *x_t, // (batch, per_sample)
                         float *noise,                     // (batch, per_sample)
                         float *tf,                        // (batch) timesteps
                         const float *x0,                  // (batch, per_sample)
                         const float *alphas_cumprod,      // (T) the schedule
                         uint64_t seed, uint64_t step, uint64_t sample0, int batch, int per_sample,
                         int T);

  // ------------------------------------------------------------ training images
  // A training micro-batch's images from the training subset kept in the
  // backend's memory, so that a device step uploads nothing:
  //   x[i, :] = a3_batch_pixel(images[k_i, :]) with k_i = items[i] >> 1,
  //   mirrored left-right (w -> S - 1 - w) when items[i] & 1,
  // a3_batch_pixel(p) = p / 127.5 - 1 (backend_noise.h), bitwise on every
  // backend. `items` is HOST memory (an exception to the convention above):
  // a device backend hands it to its kernels as launch arguments, so the
  // call neither copies nor waits, and the caller may reuse it at once.
  void (*batch_images)(const a3_backend *be, float *x, // (count, C, S, S)
                       const uint8_t *images,          // (n, C, S, S) the subset
                       const uint32_t *items,          // (count) host: image << 1 | flip
                       int count, int C, int S);
};

// ---------------------------------------------------------------- activations to and from the host
// Host fp32 <-> an activation tensor (n elements) in be's storage type,
// through a staging fp32 buffer in be's memory and act_from_f32 / act_to_f32
// (the only way into and out of bf16 storage); synchronous. For setup and
// tests, not inside a step.
a3_status a3_act_upload(const a3_backend *be, a3_act *dst, const float *host,
                        size_t n) A3_WARN_UNUSED;
a3_status a3_act_download(const a3_backend *be, float *host, const a3_act *src,
                          size_t n) A3_WARN_UNUSED;

// ---------------------------------------------------------------- the CPU backend
// The reference backend: loops threaded with OpenMP (sums in double where
// they reduce), oneDNN convolutions, OpenBLAS sgemm elsewhere. The first
// call also picks OpenBLAS's kernels for this CPU (see
// src/backend/cpu/blas_setup.c). Thread-safe to call; never NULL.
const a3_backend *a3_backend_cpu(void);
// Threads for the CPU backend: OpenBLAS's GEMMs and the OpenMP loops and
// oneDNN convolutions of the calling thread; n <= 0 keeps the current counts,
// taken from OMP_NUM_THREADS (OPENBLAS_NUM_THREADS for OpenBLAS) or the core
// count. Under MPI, call with the cores per rank.
void a3_backend_cpu_set_threads(int n);
int a3_backend_cpu_threads(void);
// What the GEMM library runs on, for logs: "OpenBLAS 0.3.21 Cooperlake (picked by a3fta)".
const char *a3_backend_cpu_blas_info(void);

// ---------------------------------------------------------------- the CUDA backend
// Precision (a3_precision, core.h) on the CUDA backend: FP32 is exact fp32
// (cuBLAS default math); TF32 lets cuBLAS use TF32 tensor cores for the
// matrix products (10-bit mantissa operands, fp32 accumulation); BF16 does
// the same with bf16 tensor cores (8-bit mantissa operands, fp32
// accumulation) and stores activations in bf16 (act_bytes 2: half the
// memory and traffic), as torch's autocast keeps them. Parameters, gradients
// of parameters and everything else stay fp32 in every mode; elementwise ops,
// norms, softmax and reductions compute in fp32.
// A backend on CUDA device `device` (an index among the visible devices) with
// its own stream and cuBLAS handle; every op is queued on that stream. Errors
// (A3_ERR_CUDA) name the CUDA error: no driver gives cudaErrorInsufficientDriver,
// no device cudaErrorNoDevice, a bad index cudaErrorInvalidDevice.
// A3_ERR_UNIMPLEMENTED when a3fta was built without CUDA (A3FTA_CUDA=OFF).
// Free with a3_backend_cuda_destroy.
a3_status a3_backend_cuda_create(int device, a3_precision precision,
                                 const a3_backend **out) A3_WARN_UNUSED;
void a3_backend_cuda_destroy(const a3_backend *be); // NULL is fine
// True when `be` is a CUDA backend (its memory is device memory).
int a3_backend_is_cuda(const a3_backend *be);
// A CUDA backend's device index and stream (a cudaStream_t), for code that
// queues its own work in order with the backend's ops (the NCCL gradient
// sum); -1 and NULL for any other backend.
int a3_backend_cuda_device(const a3_backend *be);
void *a3_backend_cuda_stream(const a3_backend *be);
// Why this process's CUDA context can run nothing more: a sticky error
// (an illegal address, a kernel fault) that every later CUDA call returns,
// in any backend; NULL while none was seen, and always without CUDA.
const char *a3_backend_cuda_lost(void);
// What runs a CUDA backend's convolutions, for logs: "cuDNN 9.x.y", or
// "im2col + cuBLAS (why not cuDNN)"; "none" for any other backend.
const char *a3_backend_cuda_conv_engine(const a3_backend *be);

#endif
