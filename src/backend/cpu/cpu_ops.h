// The CPU backend's ops, one function per table entry (see
// include/a3fta/backend.h for the contract of each). Private to src/backend/cpu.
// The CPU stores activations (a3_act) in fp32 (act_bytes 4): each op views
// them as float (a3_f32_act) on entry and runs its float loops unchanged.
#ifndef A3FTA_CPU_OPS_H
#define A3FTA_CPU_OPS_H

#include "a3fta/backend.h"

#include <stdint.h>
#include <string.h>

// Hot loops are compiled for AVX-512 and AVX2 + FMA (x86-64-v3) as well as the
// baseline x86-64 (the library is built without -march): the loader picks the
// best clone for the CPU it runs on (GCC function multi-versioning, an ifunc).
// (Plain "avx2" would leave out FMA, which AVX2 does not imply.)
//
// CPU_FP_CONTRACT (a file's first line after its includes) lets GCC fuse
// multiply-adds into FMA instructions in that file: in ISO C mode (-std=c11)
// it otherwise keeps every a * b + c as two rounded operations
// (-ffp-contract=off), which made the vectorised loops (GroupNorm, SiLU's
// polynomial, the direct convolutions) up to 1.4x slower. Fusing changes
// results only within rounding (the fused result is the more exact one), and
// each loop still computes an element the same way whatever the thread
// count. Files whose ops promise bit-exact a + g * b (activation.c) leave it out.
#if defined(__GNUC__) && !defined(__clang__)
#define CPU_FP_CONTRACT _Pragma("GCC optimize(\"fp-contract=fast\")")
#else
#define CPU_FP_CONTRACT
#endif
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define CPU_CLONES __attribute__((target_clones("avx512f", "arch=x86-64-v3", "default")))
#else
#define CPU_CLONES
#endif

// 1 / (1 + e^-x), branch-free so that loops over it vectorise: e^-x by
// Cody-Waite range reduction and Cephes' degree-6 polynomial (about 1 ulp),
// the argument clamped to [-87, 88] so that 2^k stays a normal float. For
// x < -88 it returns 1 / (1 + e^88) ~ 6e-39 instead of ~0: SiLU's value
// x * sigmoid(x) and its derivative are then below 1e-36, i.e. zero at any
// tolerance. Relative error against the double-precision sigmoid: < 3e-7.
static inline float cpu_sigmoidf(float x) {
  float t = -x;
  // Written as max(t, -87) and min(t, 88) (NaN gives the bound, as maxps /
  // minps do), so that they compile to one instruction each, not to masks.
  t = t > -87.0f ? t : -87.0f;
  t = t < 88.0f ? t : 88.0f;
  const float k = (t * 1.44269504088896341f + 12582912.0f) - 12582912.0f; // round(t / ln 2)
  const float r = (t - k * 0.693359375f) + k * 2.12194440e-4f;            // t - k ln 2
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f; // e^r
  const int32_t bits = ((int32_t)k + 127) * (1 << 23);
  float two_k;
  memcpy(&two_k, &bits, sizeof two_k);
  return 1.0f / (1.0f + p * two_k);
}

// Elementwise ops split [0, n) over OpenMP threads only above this many
// floats (below it a parallel region costs more than it saves).
enum { CPU_PAR_MIN = 1 << 15 };

// Chunks of [0, n) for the threads: multiples of 1024 floats (whole cache
// lines, so threads never share one).
#define CPU_PAR_CHUNKS(n, body)                                                                    \
  do {                                                                                             \
    const size_t n_ = (n);                                                                         \
    const long chunks_ = (long)((n_ + 1023) / 1024);                                               \
    _Pragma("omp parallel for schedule(static) if (n_ >= CPU_PAR_MIN)") for (long k_ = 0;          \
                                                                             k_ < chunks_; k_++) { \
      const size_t lo = (size_t)k_ * 1024, hi = lo + 1024 < n_ ? lo + 1024 : n_;                   \
      body;                                                                                        \
    }                                                                                              \
  } while (0)

// blas_setup.c: picks OpenBLAS's kernels, once (later calls return at once),
// before the first GEMM.
void cpu_blas_setup(void);
// profile.c: with A3FTA_PROFILE set, a copy of `real` whose compute ops are
// timed (report at exit, on stderr); else `real`. Called once.
const a3_backend *cpu_profiled(const a3_backend *real);

// conv2d.c
size_t cpu_conv2d_workspace_size(const a3_backend *be, const a3_conv2d_shape *s);
void cpu_conv2d_forward(const a3_backend *be, const a3_conv2d_shape *s, a3_act *out,
                        const a3_act *inp, const float *weight, const float *bias, void *workspace);
void cpu_conv2d_backward(const a3_backend *be, const a3_conv2d_shape *s, a3_act *dinp,
                         float *dweight, float *dbias, const a3_act *dout, const a3_act *inp,
                         const float *weight, void *workspace);

// groupnorm.c
void cpu_groupnorm_forward(const a3_backend *be, a3_act *out, float *mean, float *rstd,
                           const a3_act *inp, const float *weight, const float *bias, int B, int C,
                           int HW, int G, float eps);
void cpu_groupnorm_backward(const a3_backend *be, a3_act *dinp, float *dweight, float *dbias,
                            const a3_act *dout, const a3_act *inp, const float *weight,
                            const float *mean, const float *rstd, int B, int C, int HW, int G);

void cpu_groupnorm_silu_forward(const a3_backend *be, a3_act *out, float *mean, float *rstd,
                                const a3_act *inp, const float *weight, const float *bias, int B,
                                int C, int HW, int G, float eps);
void cpu_groupnorm_silu_backward(const a3_backend *be, a3_act *dinp, float *dweight, float *dbias,
                                 const a3_act *dout, const a3_act *inp, const float *weight,
                                 const float *bias, const float *mean, const float *rstd, int B,
                                 int C, int HW, int G);

// linear.c
// C (M, N) = alpha op(A) op(B) + beta C, row-major, op = transpose when 'T':
// oneDNN's sgemm on the OpenMP threads (single-threaded inside a parallel
// region, and for small products).
void cpu_sgemm(char ta, char tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);
void cpu_linear_forward(const a3_backend *be, a3_act *out, const a3_act *inp, const float *weight,
                        const float *bias, int N, int IN, int OUT);
void cpu_linear_backward(const a3_backend *be, a3_act *dinp, float *dweight, float *dbias,
                         const a3_act *dout, const a3_act *inp, const float *weight, int N, int IN,
                         int OUT);

// attention.c
size_t cpu_attention_workspace_size(const a3_backend *be, int B, int T, int C, int NH);
void cpu_attention_forward(const a3_backend *be, a3_act *out, float *probs, const a3_act *q,
                           const a3_act *k, const a3_act *v, int B, int T, int C, int NH,
                           void *workspace);
void cpu_attention_backward(const a3_backend *be, a3_act *dq, a3_act *dk, a3_act *dv,
                            const a3_act *dout, const a3_act *q, const a3_act *k, const a3_act *v,
                            const float *probs, int B, int T, int C, int NH, void *workspace);

// elementwise.c
void cpu_zero(const a3_backend *be, float *x, size_t n);
void cpu_act_zero(const a3_backend *be, a3_act *x, size_t n);
void cpu_act_from_f32(const a3_backend *be, a3_act *dst, const float *src, size_t n);
void cpu_act_to_f32(const a3_backend *be, float *dst, const a3_act *src, size_t n);
void cpu_accumulate(const a3_backend *be, a3_act *dst, const a3_act *src, size_t n);
void cpu_silu_forward(const a3_backend *be, a3_act *out, const a3_act *inp, size_t n);
void cpu_silu_backward(const a3_backend *be, a3_act *dinp, const a3_act *dout, const a3_act *inp,
                       size_t n);
void cpu_add_forward(const a3_backend *be, a3_act *out, const a3_act *a, const a3_act *b,
                     float scale, size_t n);
void cpu_add_backward(const a3_backend *be, a3_act *da, a3_act *db, const a3_act *dout, float scale,
                      size_t n);
void cpu_add_channel_forward(const a3_backend *be, a3_act *out, const a3_act *inp, const a3_act *t,
                             int B, int C, int HW);
void cpu_add_channel_backward(const a3_backend *be, a3_act *dt, const a3_act *dout, int B, int C,
                              int HW);

// layout.c
void cpu_to_tokens(const a3_backend *be, a3_act *out, const a3_act *inp, int B, int C, int HW);
void cpu_from_tokens(const a3_backend *be, a3_act *out, const a3_act *inp, int B, int C, int HW);
void cpu_upsample2x_forward(const a3_backend *be, a3_act *out, const a3_act *inp, int B, int C,
                            int H, int W);
void cpu_upsample2x_backward(const a3_backend *be, a3_act *dinp, const a3_act *dout, int B, int C,
                             int H, int W);
void cpu_concat_forward(const a3_backend *be, a3_act *out, const a3_act *a, const a3_act *b, int B,
                        int C1, int C2, int HW);
void cpu_concat_backward(const a3_backend *be, a3_act *da, a3_act *db, const a3_act *dout, int B,
                         int C1, int C2, int HW);

// embedding.c
void cpu_timestep_embedding(const a3_backend *be, a3_act *out, const float *t, int N, int dim,
                            int flip_sin_to_cos, float freq_shift, float max_period);
// loss.c
void cpu_mse_forward(const a3_backend *be, float *loss, const float *pred, const float *target,
                     size_t n);
void cpu_mse_backward(const a3_backend *be, float *dpred, const float *pred, const float *target,
                      size_t n, float dloss);

// activation.c (the adapter's activations and gate)
void cpu_gelu_forward(const a3_backend *be, a3_act *out, const a3_act *inp, size_t n);
void cpu_gelu_backward(const a3_backend *be, a3_act *dinp, const a3_act *dout, const a3_act *inp,
                       size_t n);
void cpu_relu_forward(const a3_backend *be, a3_act *out, const a3_act *inp, size_t n);
void cpu_relu_backward(const a3_backend *be, a3_act *dinp, const a3_act *dout, const a3_act *inp,
                       size_t n);
void cpu_gated_add_forward(const a3_backend *be, a3_act *out, const a3_act *a, const a3_act *b,
                           const float *gate, size_t n);
void cpu_gated_add_backward(const a3_backend *be, a3_act *db, float *dgate, const a3_act *dout,
                            const a3_act *b, const float *gate, size_t n);

// classifier_ops.c (the feature network's softmax cross-entropy)
void cpu_softmax_xent_forward(const a3_backend *be, float *loss, float *probs, const float *logits,
                              const int32_t *labels, int N, int K, float scale);
void cpu_softmax_xent_backward(const a3_backend *be, float *dlogits, const float *probs,
                               const int32_t *labels, int N, int K, float scale);

// optim_ops.c (AdamW, gradient-norm clipping, EMA)
void cpu_sum_squares(const a3_backend *be, double *out, const float *x, size_t n);
void cpu_clip_scale(const a3_backend *be, float *scale, double *norm, const double *partials,
                    int n_partials, double max_norm);
void cpu_adamw_update(const a3_backend *be, float *param, const float *grad, float *m, float *v,
                      size_t n, const a3_adamw_scalars *s, int decay, const float *grad_scale);
void cpu_ema_update(const a3_backend *be, float *ema, const float *param, size_t n,
                    float one_minus_decay);
void cpu_sum_squares_segments(const a3_backend *be, double *partials, const float *grads,
                              const a3_segment_table *t);
void cpu_adamw_update_segments(const a3_backend *be, float *params, const float *grads, float *m,
                               float *v, const a3_segment_table *t, const a3_adamw_scalars *s,
                               int decay, const float *grad_scale);
void cpu_ema_update_segments(const a3_backend *be, float *ema, const float *params,
                             const a3_segment_table *t, float one_minus_decay);

// sampler_ops.c (the DDPM / DDIM step)
void cpu_sampler_step(const a3_backend *be, float *x_prev, const float *eps, const float *x_t,
                      const float *noise, size_t n, const a3_sampler_scalars *s);

// noise_ops.c (a training batch: its images, timesteps, noise and x_t)
void cpu_training_noise(const a3_backend *be, float *x_t, float *noise, float *tf, const float *x0,
                        const float *alphas_cumprod, uint64_t seed, uint64_t step, uint64_t sample0,
                        int batch, int per_sample, int T);
void cpu_batch_images(const a3_backend *be, float *x, const uint8_t *images, const uint32_t *items,
                      int count, int C, int S);

#endif
