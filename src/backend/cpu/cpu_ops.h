// The CPU backend's ops, one function per table entry (see
// include/a3fta/backend.h for the contract of each). Private to src/backend/cpu.
#ifndef A3FTA_CPU_OPS_H
#define A3FTA_CPU_OPS_H

#include "a3fta/backend.h"

// blas_setup.c: picks OpenBLAS's kernels once, before the first GEMM.
void cpu_blas_setup(void);

// conv2d.c
size_t cpu_conv2d_workspace_size(const a3_backend *be, const a3_conv2d_shape *s);
void cpu_conv2d_forward(const a3_backend *be, const a3_conv2d_shape *s, float *out,
                        const float *inp, const float *weight, const float *bias, void *workspace);
void cpu_conv2d_backward(const a3_backend *be, const a3_conv2d_shape *s, float *dinp,
                         float *dweight, float *dbias, const float *dout, const float *inp,
                         const float *weight, void *workspace);

// groupnorm.c
void cpu_groupnorm_forward(const a3_backend *be, float *out, float *mean, float *rstd,
                           const float *inp, const float *weight, const float *bias, int B, int C,
                           int HW, int G, float eps);
void cpu_groupnorm_backward(const a3_backend *be, float *dinp, float *dweight, float *dbias,
                            const float *dout, const float *inp, const float *weight,
                            const float *mean, const float *rstd, int B, int C, int HW, int G);

// linear.c
void cpu_linear_forward(const a3_backend *be, float *out, const float *inp, const float *weight,
                        const float *bias, int N, int IN, int OUT);
void cpu_linear_backward(const a3_backend *be, float *dinp, float *dweight, float *dbias,
                         const float *dout, const float *inp, const float *weight, int N, int IN,
                         int OUT);

// attention.c
size_t cpu_attention_workspace_size(const a3_backend *be, int B, int T, int C, int NH);
void cpu_attention_forward(const a3_backend *be, float *out, float *probs, const float *q,
                           const float *k, const float *v, int B, int T, int C, int NH,
                           void *workspace);
void cpu_attention_backward(const a3_backend *be, float *dq, float *dk, float *dv,
                            const float *dout, const float *q, const float *k, const float *v,
                            const float *probs, int B, int T, int C, int NH, void *workspace);

// elementwise.c
void cpu_zero(const a3_backend *be, float *x, size_t n);
void cpu_accumulate(const a3_backend *be, float *dst, const float *src, size_t n);
void cpu_silu_forward(const a3_backend *be, float *out, const float *inp, size_t n);
void cpu_silu_backward(const a3_backend *be, float *dinp, const float *dout, const float *inp,
                       size_t n);
void cpu_add_forward(const a3_backend *be, float *out, const float *a, const float *b, float scale,
                     size_t n);
void cpu_add_backward(const a3_backend *be, float *da, float *db, const float *dout, float scale,
                      size_t n);
void cpu_add_channel_forward(const a3_backend *be, float *out, const float *inp, const float *t,
                             int B, int C, int HW);
void cpu_add_channel_backward(const a3_backend *be, float *dt, const float *dout, int B, int C,
                              int HW);

// layout.c
void cpu_to_tokens(const a3_backend *be, float *out, const float *inp, int B, int C, int HW);
void cpu_from_tokens(const a3_backend *be, float *out, const float *inp, int B, int C, int HW);
void cpu_upsample2x_forward(const a3_backend *be, float *out, const float *inp, int B, int C, int H,
                            int W);
void cpu_upsample2x_backward(const a3_backend *be, float *dinp, const float *dout, int B, int C,
                             int H, int W);
void cpu_concat_forward(const a3_backend *be, float *out, const float *a, const float *b, int B,
                        int C1, int C2, int HW);
void cpu_concat_backward(const a3_backend *be, float *da, float *db, const float *dout, int B,
                         int C1, int C2, int HW);

// embedding.c
void cpu_timestep_embedding(const a3_backend *be, float *out, const float *t, int N, int dim,
                            int flip_sin_to_cos, float freq_shift, float max_period);
// loss.c
void cpu_mse_forward(const a3_backend *be, float *loss, const float *pred, const float *target,
                     size_t n);
void cpu_mse_backward(const a3_backend *be, float *dpred, const float *pred, const float *target,
                      size_t n, float dloss);

#endif
