// The CUDA backend's private header: its state, error recording, launch
// helpers, block reductions, and one function per op-table entry (see
// include/a3fta/backend.h for each op's contract). Private to src/backend/cuda.
//
// Every op is queued on the backend's own stream and returns at once. The
// first CUDA or cuBLAS failure (a launch, a call, or an asynchronous error
// seen later) is recorded in the state with the op and file:line, and
// `synchronize` reports it through A3_FAIL and clears it.
//
// Reductions never use atomics: partial sums go through fixed-order warp and
// block trees (in double where the sum is long), and the grid of a reduction
// depends only on the shape, never on the device, so results are bitwise the
// same from run to run on a given GPU.
#ifndef A3FTA_CUDA_INTERNAL_H
#define A3FTA_CUDA_INTERNAL_H

// The public headers are C: give their functions C linkage here.
extern "C" {
#include "a3fta/backend.h"
#include "a3fta/core.h"
}

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>

// Threads per block of the 1-D kernels (a multiple of 32: the block
// reductions assume whole warps).
#define CU_THREADS 256u
// Blocks of the first stage of a two-stage scalar reduction (mse, dgate,
// softmax_xent's loss): the state holds this many partial sums.
#define CU_RED_BLOCKS 1024u
// Upper bound on the blocks of a grid-stride launch (keeps grid.x legal and
// the launch cheap; each thread then loops).
#define CU_MAX_BLOCKS 65536u

typedef struct cuda_dnn cuda_dnn;               // cuda_conv2d_dnn.cu
typedef struct cu_profile_pool cu_profile_pool; // cuda_profile.cu

// Device memory an op keeps between calls, grown on demand (cu_scratch_get).
typedef struct {
  void *ptr;
  size_t bytes;
} cu_scratch;

typedef struct {
  int device;
  cudaStream_t stream;
  cublasHandle_t blas;
  cublasComputeType_t compute; // of every GEMM: train.precision (cuda_gemm.cu)
  double *red;                 // (CU_RED_BLOCKS) partial sums of two-stage reductions
  cu_scratch col_partials;     // linear's dbias partial sums, doubles (cuda_linear.cu)
  cu_scratch plane_parts;      // plane sums' parts, doubles (cu_plane_sums, GroupNorm's dparams)
  cu_scratch bf16[2];          // bf16 copies of a product's A and B (bf16 precision; cuda_gemm.cu)
  cuda_dnn *dnn;               // cuDNN's handle and conv plans, NULL until the first conv
  int dnn_failed;              // cuDNN was found but would not start: im2col only
  cu_profile_pool *profile;    // A3FTA_PROFILE's events, NULL until the first timed op
  a3_status error;             // first recorded error, A3_OK when none
  char message[512];
} cuda_state;

static inline cuda_state *cu_state(const a3_backend *be) { return (cuda_state *)be->impl; }
static inline cudaStream_t cu_stream(const a3_backend *be) { return cu_state(be)->stream; }
static inline cublasHandle_t cu_blas(const a3_backend *be) { return cu_state(be)->blas; }

// cuda_profile.cu: with A3FTA_PROFILE set, `real` with its compute ops timed
// by events on the backend's stream (report at exit, on stderr); else `real`.
const a3_backend_ops *cu_profiled_ops(const a3_backend_ops *real);
// Destroys a backend's profile events (free_state).
void cu_profile_free(cuda_state *st);

// ---------------------------------------------------------------- error recording
// Each returns 1 when fine; otherwise it records the failure (the first one
// only) with `op` and file:line and returns 0.
int cu_check(const a3_backend *be, cudaError_t e, const char *op, const char *file, int line);
// Records a failure of a library outside CUDA and cuBLAS (name: the library).
void cu_record(const a3_backend *be, a3_status code, const char *op, const char *file, int line,
               const char *name, const char *text);
int cu_check_blas(const a3_backend *be, cublasStatus_t s, const char *op, const char *file,
                  int line);
// s's memory with room for `bytes`: kept when large enough, else freed and
// allocated again (never shrunk, so after the first step no op allocates;
// cudaFree waits for work that may still read the old buffer). NULL after
// a recorded failure.
void *cu_scratch_get(const a3_backend *be, cu_scratch *s, size_t bytes);
#define CU_CHECK(be, call) cu_check((be), (call), __func__, __FILE__, __LINE__)
#define CU_BLAS(be, call) cu_check_blas((be), (call), __func__, __FILE__, __LINE__)
// After every kernel launch: a bad configuration shows up here.
#define CU_LAUNCHED(be) cu_check((be), cudaGetLastError(), __func__, __FILE__, __LINE__)

// Blocks for a grid-stride loop over n items.
static inline unsigned cu_blocks(size_t n, unsigned threads) {
  size_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  return (unsigned)(b < CU_MAX_BLOCKS ? b : CU_MAX_BLOCKS);
}

// Blocks for a grid-stride loop of one block per item over n items (n >= 1).
static inline unsigned cu_grid(int n) {
  if (n < 1) return 1;
  return (unsigned)n < CU_MAX_BLOCKS ? (unsigned)n : CU_MAX_BLOCKS;
}

// Blocks of the first stage of a scalar reduction over n items: a function
// of n only (determinism), at least one.
static inline unsigned cu_red_blocks(size_t n) {
  size_t b = (n + (size_t)CU_THREADS * 4 - 1) / ((size_t)CU_THREADS * 4);
  if (b < 1) b = 1;
  return (unsigned)(b < CU_RED_BLOCKS ? b : CU_RED_BLOCKS);
}

// ---------------------------------------------------------------- device helpers
// Sum of v over a warp (xor butterfly: every lane ends with the same bits,
// since each step adds the same two values in either order).
__device__ static inline double cu_warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ static inline float cu_warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum of v over a 1-D block (blockDim.x a multiple of 32, at most 1024), in
// a fixed order; every thread gets the result. All threads must call it.
__device__ static inline double cu_block_sum(double v) {
  __shared__ double warp_sums[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = cu_warp_sum(v);
  __syncthreads(); // an earlier call may still be reading warp_sums
  if (lane == 0) warp_sums[warp] = v;
  __syncthreads();
  v = lane < nwarps ? warp_sums[lane] : 0.0;
  return cu_warp_sum(v); // every warp sums the same values the same way
}

__device__ static inline float cu_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// ---------------------------------------------------------------- activation storage
// Activations (a3_act) are float, or __nv_bfloat16 with precision bf16
// (be->act_bytes 2). Their kernels are templated on the storage type T,
// load and store through cu_ld / cu_st, compute in fp32 and round once when
// they store.
static inline int cu_act_bf16(const a3_backend *be) { return be->act_bytes == 2; }
__device__ static inline float cu_ld(const float *p) { return *p; }
__device__ static inline float cu_ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ static inline void cu_st(float *p, float v) { *p = v; }
__device__ static inline void cu_st(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }
// An activation tensor as a pointer to its storage type.
template <typename T> static inline T *cu_t(a3_act *p) { return (T *)(void *)p; }
template <typename T> static inline const T *cu_t(const a3_act *p) {
  return (const T *)(const void *)p;
}
// Runs the statements that follow with T the backend's storage type:
//   CU_ACT_DISPATCH(be, { launch my_kernel<T> with cu_t<T>(out), ...; });
#define CU_ACT_DISPATCH(be, ...)                                                                   \
  do {                                                                                             \
    if (cu_act_bf16(be)) {                                                                         \
      typedef __nv_bfloat16 T;                                                                     \
      __VA_ARGS__                                                                                  \
    } else {                                                                                       \
      typedef float T;                                                                             \
      __VA_ARGS__                                                                                  \
    }                                                                                              \
  } while (0)

// ---------------------------------------------------------------- plane pieces
// A per-channel sum over (outer, inner) elements (a conv's dbias over images
// and pixels, GroupNorm's dweight) runs as J x S blocks: block (j, s) sums
// piece s of the flat index i = o * inner + r, i < outer * inner, into
// part[j * S + s]; then cu_finish_plane_parts adds the S parts of each j in
// order. S depends on the shape only, so the sums are the same every run.
// Walks this thread's elements of piece s of S: (o, r) of each, without a
// division per element.
typedef struct {
  size_t i, end;         // flat index, and the piece's end
  size_t o, r;           // i = o * inner + r
  size_t step_o, step_r; // blockDim.x = step_o * inner + step_r
} cu_plane_walk;

__device__ static inline cu_plane_walk cu_plane_walk_start(size_t n, int S, int s, int inner) {
  cu_plane_walk w;
  const size_t begin = n * (size_t)s / (size_t)S;
  w.end = n * (size_t)(s + 1) / (size_t)S;
  w.i = begin + threadIdx.x;
  w.o = w.i / (size_t)inner, w.r = w.i % (size_t)inner;
  w.step_o = blockDim.x / (size_t)inner, w.step_r = blockDim.x % (size_t)inner;
  return w;
}

__device__ static inline void cu_plane_walk_next(cu_plane_walk *w, int inner) {
  w->i += blockDim.x;
  w->o += w->step_o, w->r += w->step_r;
  if (w->r >= (size_t)inner) w->r -= (size_t)inner, w->o++;
}

// Pieces per j for J sums of n elements each: about CU_RED_BLOCKS blocks in
// all, none under 4096 elements, at least one.
int cu_plane_pieces(int J, size_t n);
// dst[j] (=, or += when accumulate) = sum of part[j * S + s], s < S, in order.
void cu_finish_plane_parts(const a3_backend *be, float *dst, const double *part, int J, int S,
                           int accumulate);

// ---------------------------------------------------------------- shared launches
// dst[0] (=, or += when accumulate) = (sum of part[0, nparts)) * mul / div,
// in double: the second stage of a scalar reduction, one block.
void cu_finish_sum(const a3_backend *be, float *dst, const double *part, unsigned nparts,
                   double mul, double div, int accumulate);
// dst[j] (=, or += when accumulate) = sum over o < outer, i < inner of
// x[o * outer_stride + j * inner + i], j < J: blocks of (j, piece), in
// double (see the plane pieces above).
// (conv2d's dbias: outer = B images of OC planes; add_channel's dt: outer = 1.)
void cu_plane_sums(const a3_backend *be, float *dst, const a3_act *x, int J, int outer,
                   size_t outer_stride, int inner, int accumulate);

// ---------------------------------------------------------------- GEMMs (cuda_gemm.cu)
// The compute type of every GEMM for a precision (see cuda_gemm.cu).
cublasComputeType_t cu_compute_type(a3_precision p);
// bf16 precision: products (and cuDNN's convolutions) take bf16 operands:
// activations as stored, fp32 tensors through copies rounded to nearest even.
int cu_bf16_operands(const a3_backend *be);
// dst (n) = src rounded to bf16; dst (n) = src widened (beta 0: dst not
// read) or src + beta * dst. Both return CU_LAUNCHED's verdict.
int cu_round_bf16(const a3_backend *be, __nv_bfloat16 *dst, const float *src, size_t n);
int cu_widen_bf16(const a3_backend *be, float *dst, const __nv_bfloat16 *src, size_t n, float beta);

// A product's operand (cu_in) or result (cu_out): a column-major matrix to
// cuBLAS, its leading dimension and (batched products) the distance between
// its matrices (0: one matrix for all), both in elements of its storage. The
// storage is the pointer's type: fp32, bf16, or an activation (the backend's
// storage type). With bf16 operands an fp32 operand is multiplied as its
// rounded copy; a result is stored in its own type.
typedef enum { CU_MAT_F32, CU_MAT_BF16, CU_MAT_ACT } cu_mat_type;
typedef struct {
  const void *p;
  cu_mat_type type;
  int ld;
  long long stride;
} cu_mat;
typedef struct {
  void *p;
  cu_mat_type type;
  int ld;
  long long stride;
} cu_mat_out;
static inline cu_mat cu_in(const float *p, int ld, long long stride = 0) {
  return cu_mat{p, CU_MAT_F32, ld, stride};
}
static inline cu_mat cu_in(const __nv_bfloat16 *p, int ld, long long stride = 0) {
  return cu_mat{p, CU_MAT_BF16, ld, stride};
}
static inline cu_mat cu_in(const a3_act *p, int ld, long long stride = 0) {
  return cu_mat{p, CU_MAT_ACT, ld, stride};
}
static inline cu_mat_out cu_out(float *p, int ld, long long stride = 0) {
  return cu_mat_out{p, CU_MAT_F32, ld, stride};
}
static inline cu_mat_out cu_out(__nv_bfloat16 *p, int ld, long long stride = 0) {
  return cu_mat_out{p, CU_MAT_BF16, ld, stride};
}
static inline cu_mat_out cu_out(a3_act *p, int ld, long long stride = 0) {
  return cu_mat_out{p, CU_MAT_ACT, ld, stride};
}
// C = alpha op(A) op(B) + beta C (C not read when beta is 0), as
// cublasGemmEx, in the backend's precision, accumulated in fp32.
cublasStatus_t cu_gemm(const a3_backend *be, cublasOperation_t ta, cublasOperation_t tb, int m,
                       int n, int k, float alpha, cu_mat A, cu_mat B, float beta, cu_mat_out C);
// The same for `batch` products, as cublasGemmStridedBatchedEx.
cublasStatus_t cu_gemm_batched(const a3_backend *be, cublasOperation_t ta, cublasOperation_t tb,
                               int m, int n, int k, float alpha, cu_mat A, cu_mat B, float beta,
                               cu_mat_out C, int batch);

// ---------------------------------------------------------------- ops
// cuda_elementwise.cu
void cuda_zero(const a3_backend *be, float *x, size_t n);
void cuda_act_zero(const a3_backend *be, a3_act *x, size_t n);
void cuda_act_from_f32(const a3_backend *be, a3_act *dst, const float *src, size_t n);
void cuda_act_to_f32(const a3_backend *be, float *dst, const a3_act *src, size_t n);
void cuda_accumulate(const a3_backend *be, a3_act *dst, const a3_act *src, size_t n);
void cuda_silu_forward(const a3_backend *be, a3_act *out, const a3_act *inp, size_t n);
void cuda_silu_backward(const a3_backend *be, a3_act *dinp, const a3_act *dout, const a3_act *inp,
                        size_t n);
void cuda_add_forward(const a3_backend *be, a3_act *out, const a3_act *a, const a3_act *b,
                      float scale, size_t n);
void cuda_add_backward(const a3_backend *be, a3_act *da, a3_act *db, const a3_act *dout,
                       float scale, size_t n);
void cuda_add_channel_forward(const a3_backend *be, a3_act *out, const a3_act *inp, const a3_act *t,
                              int B, int C, int HW);
void cuda_add_channel_backward(const a3_backend *be, a3_act *dt, const a3_act *dout, int B, int C,
                               int HW);
void cuda_gelu_forward(const a3_backend *be, a3_act *out, const a3_act *inp, size_t n);
void cuda_gelu_backward(const a3_backend *be, a3_act *dinp, const a3_act *dout, const a3_act *inp,
                        size_t n);
void cuda_relu_forward(const a3_backend *be, a3_act *out, const a3_act *inp, size_t n);
void cuda_relu_backward(const a3_backend *be, a3_act *dinp, const a3_act *dout, const a3_act *inp,
                        size_t n);
void cuda_gated_add_forward(const a3_backend *be, a3_act *out, const a3_act *a, const a3_act *b,
                            const float *gate, size_t n);
void cuda_gated_add_backward(const a3_backend *be, a3_act *db, float *dgate, const a3_act *dout,
                             const a3_act *b, const float *gate, size_t n);

// cuda_conv2d_dnn.cu: cuDNN's convolutions when libcudnn.so.9 loads (see there);
// without cuDNN's header at build time (A3FTA_NO_CUDNN) the im2col path only.
// Each direction of a shape is planned on its own: cuDNN may run the forward
// and the filter gradient while the data gradient stays on im2col.
typedef enum { CU_DNN_FORWARD, CU_DNN_DATA, CU_DNN_FILTER, CU_DNN_DIRECTIONS } cu_dnn_dir;
// A 1x1 stride-1 unpadded convolution, whose forward and data gradient are
// batched GEMMs on cuBLAS (cuda_conv2d.cu); cuDNN plans its filter gradient only.
static inline int cu_conv2d_is_pointwise(const a3_conv2d_shape *s) {
  return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad_top == 0 && s->pad_bottom == 0 &&
         s->pad_left == 0 && s->pad_right == 0;
}
#ifndef A3FTA_NO_CUDNN
// Bytes the cuDNN calls of the shape's planned directions need, 0 when none is.
size_t cu_dnn_conv2d_workspace_size(const a3_backend *be, const a3_conv2d_shape *s);
// Whether cuDNN runs that direction of the shape (planning it at first sight).
int cu_dnn_conv2d_runs(const a3_backend *be, const a3_conv2d_shape *s, cu_dnn_dir dir);
void cu_dnn_conv2d_forward(const a3_backend *be, const a3_conv2d_shape *s, a3_act *out,
                           const a3_act *inp, const float *weight, float beta, void *workspace);
// dinp (overwritten) and dweight (+=) may each be NULL; a non-NULL one's
// direction must be one cuDNN runs.
void cu_dnn_conv2d_backward(const a3_backend *be, const a3_conv2d_shape *s, a3_act *dinp,
                            float *dweight, const a3_act *dout, const a3_act *inp,
                            const float *weight, void *workspace);
void cu_dnn_free(cuda_state *st);
#else
static inline size_t cu_dnn_conv2d_workspace_size(const a3_backend *, const a3_conv2d_shape *) {
  return 0;
}
static inline int cu_dnn_conv2d_runs(const a3_backend *, const a3_conv2d_shape *, cu_dnn_dir) {
  return 0;
}
static inline void cu_dnn_conv2d_forward(const a3_backend *, const a3_conv2d_shape *, a3_act *,
                                         const a3_act *, const float *, float, void *) {}
static inline void cu_dnn_conv2d_backward(const a3_backend *, const a3_conv2d_shape *, a3_act *,
                                          float *, const a3_act *, const a3_act *, const float *,
                                          void *) {}
static inline void cu_dnn_free(cuda_state *) {}
#endif

// cuda_conv2d.cu
size_t cuda_conv2d_workspace_size(const a3_backend *be, const a3_conv2d_shape *s);
void cuda_conv2d_forward(const a3_backend *be, const a3_conv2d_shape *s, a3_act *out,
                         const a3_act *inp, const float *weight, const float *bias,
                         void *workspace);
void cuda_conv2d_backward(const a3_backend *be, const a3_conv2d_shape *s, a3_act *dinp,
                          float *dweight, float *dbias, const a3_act *dout, const a3_act *inp,
                          const float *weight, void *workspace);

// cuda_groupnorm.cu
void cuda_groupnorm_forward(const a3_backend *be, a3_act *out, float *mean, float *rstd,
                            const a3_act *inp, const float *weight, const float *bias, int B, int C,
                            int HW, int G, float eps);
void cuda_groupnorm_backward(const a3_backend *be, a3_act *dinp, float *dweight, float *dbias,
                             const a3_act *dout, const a3_act *inp, const float *weight,
                             const float *mean, const float *rstd, int B, int C, int HW, int G);
void cuda_groupnorm_silu_forward(const a3_backend *be, a3_act *out, float *mean, float *rstd,
                                 const a3_act *inp, const float *weight, const float *bias, int B,
                                 int C, int HW, int G, float eps);
void cuda_groupnorm_silu_backward(const a3_backend *be, a3_act *dinp, float *dweight, float *dbias,
                                  const a3_act *dout, const a3_act *inp, const float *weight,
                                  const float *bias, const float *mean, const float *rstd, int B,
                                  int C, int HW, int G);

// cuda_linear.cu
void cuda_linear_forward(const a3_backend *be, a3_act *out, const a3_act *inp, const float *weight,
                         const float *bias, int N, int IN, int OUT);
void cuda_linear_backward(const a3_backend *be, a3_act *dinp, float *dweight, float *dbias,
                          const a3_act *dout, const a3_act *inp, const float *weight, int N, int IN,
                          int OUT);

// cuda_attention.cu
size_t cuda_attention_workspace_size(const a3_backend *be, int B, int T, int C, int NH);
void cuda_attention_forward(const a3_backend *be, a3_act *out, float *probs, const a3_act *q,
                            const a3_act *k, const a3_act *v, int B, int T, int C, int NH,
                            void *workspace);
void cuda_attention_backward(const a3_backend *be, a3_act *dq, a3_act *dk, a3_act *dv,
                             const a3_act *dout, const a3_act *q, const a3_act *k, const a3_act *v,
                             const float *probs, int B, int T, int C, int NH, void *workspace);

// cuda_layout.cu
void cuda_to_tokens(const a3_backend *be, a3_act *out, const a3_act *inp, int B, int C, int HW);
void cuda_from_tokens(const a3_backend *be, a3_act *out, const a3_act *inp, int B, int C, int HW);
void cuda_upsample2x_forward(const a3_backend *be, a3_act *out, const a3_act *inp, int B, int C,
                             int H, int W);
void cuda_upsample2x_backward(const a3_backend *be, a3_act *dinp, const a3_act *dout, int B, int C,
                              int H, int W);
void cuda_concat_forward(const a3_backend *be, a3_act *out, const a3_act *a, const a3_act *b, int B,
                         int C1, int C2, int HW);
void cuda_concat_backward(const a3_backend *be, a3_act *da, a3_act *db, const a3_act *dout, int B,
                          int C1, int C2, int HW);

// cuda_loss.cu
void cuda_timestep_embedding(const a3_backend *be, a3_act *out, const float *t, int N, int dim,
                             int flip_sin_to_cos, float freq_shift, float max_period);
void cuda_mse_forward(const a3_backend *be, float *loss, const float *pred, const float *target,
                      size_t n);
void cuda_mse_backward(const a3_backend *be, float *dpred, const float *pred, const float *target,
                       size_t n, float dloss);
void cuda_softmax_xent_forward(const a3_backend *be, float *loss, float *probs, const float *logits,
                               const int32_t *labels, int N, int K, float scale);
void cuda_softmax_xent_backward(const a3_backend *be, float *dlogits, const float *probs,
                                const int32_t *labels, int N, int K, float scale);

// cuda_optim.cu (the optimizer ops)
void cu_sum_squares(const a3_backend *be, double *out, const float *x, size_t n);
void cu_clip_scale(const a3_backend *be, float *scale, double *norm, const double *partials,
                   int n_partials, double max_norm);
void cu_adamw_update(const a3_backend *be, float *param, const float *grad, float *m, float *v,
                     size_t n, const a3_adamw_scalars *s, int decay, const float *grad_scale);
void cu_ema_update(const a3_backend *be, float *ema, const float *param, size_t n,
                   float one_minus_decay);
void cu_sum_squares_segments(const a3_backend *be, double *partials, const float *grads,
                             const a3_segment_table *t);
void cu_adamw_update_segments(const a3_backend *be, float *params, const float *grads, float *m,
                              float *v, const a3_segment_table *t, const a3_adamw_scalars *s,
                              int decay, const float *grad_scale);
void cu_ema_update_segments(const a3_backend *be, float *ema, const float *params,
                            const a3_segment_table *t, float one_minus_decay);

// cuda_sampler.cu (the DDPM / DDIM step)
void cu_sampler_step(const a3_backend *be, float *x_prev, const float *eps, const float *x_t,
                     const float *noise, size_t n, const a3_sampler_scalars *s);

// cuda_noise.cu (a training batch: its images, timesteps, noise and x_t)
void cu_training_noise(const a3_backend *be, float *x_t, float *noise, float *tf, const float *x0,
                       const float *alphas_cumprod, uint64_t seed, uint64_t step, uint64_t sample0,
                       int batch, int per_sample, int T);
void cu_batch_images(const a3_backend *be, float *x, const uint8_t *images, const uint32_t *items,
                     int count, int C, int S);

#endif
