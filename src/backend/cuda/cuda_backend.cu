// The CUDA backend: create / destroy, device memory, error recording, the op
// table, and the two shared reduction launches (cu_finish_sum,
// cu_plane_sums). The ops themselves are in the other cuda_*.cu files.
#include "cuda_internal.h"

extern "C" {
#include "backend/op_profile.h"
}

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- error recording

void cu_record(const a3_backend *be, a3_status code, const char *op, const char *file, int line,
               const char *name, const char *text) {
  cuda_state *st = cu_state(be);
  if (st->error != A3_OK) return; // keep the first: later ones are usually its echoes
  st->error = code;
  snprintf(st->message, sizeof st->message, "CUDA backend, %s (%s:%d): %s (%s)", op, file, line,
           name, text);
}

// The errors after which the CUDA context is unusable: every later call in
// the process returns them (CUDA's "sticky" errors).
static int context_broken(cudaError_t e) {
  switch (e) {
  case cudaErrorIllegalAddress:
  case cudaErrorLaunchFailure:
  case cudaErrorIllegalInstruction:
  case cudaErrorMisalignedAddress:
  case cudaErrorInvalidAddressSpace:
  case cudaErrorInvalidPc:
  case cudaErrorHardwareStackError:
  case cudaErrorAssert:
  case cudaErrorLaunchTimeout:
  case cudaErrorECCUncorrectable:
  case cudaErrorNvlinkUncorrectable:
  case cudaErrorContained: return 1;
  default: return 0;
  }
}

// Set once, by the first such error of the process; read by the sweep.
static char lost_reason[320];
static pthread_mutex_t lost_mu = PTHREAD_MUTEX_INITIALIZER;
static int cuda_used = 0; // a backend was created: a context exists to probe

static void note_lost(cudaError_t e, const char *op) {
  pthread_mutex_lock(&lost_mu);
  if (!lost_reason[0])
    snprintf(lost_reason, sizeof lost_reason, "%s (%s) in %s", cudaGetErrorName(e),
             cudaGetErrorString(e), op);
  pthread_mutex_unlock(&lost_mu);
}

// After any failed CUDA call: a context-breaking error is noted (op names
// where), and the thread's last error is cleared. A failed call (out of
// memory, say) stays the last error until read: left there, the next
// launch's check would report it again, in this backend or the next sweep
// point's. A sticky fault stays whatever this does.
static void forget_error(cudaError_t e, const char *op) {
  if (context_broken(e)) note_lost(e, op);
  (void)cudaGetLastError(); // unchecked: clearing the error just seen
}

// The errors seen by cu_check, cuda_copy and cuda_alloc name the loss where
// it happened; one first seen by cuBLAS, cuDNN or NCCL code is found by a
// probe (a 1-byte cudaMalloc and cudaFree, which a broken context fails).
extern "C" const char *a3_backend_cuda_lost(void) {
  pthread_mutex_lock(&lost_mu);
  const int probe = !lost_reason[0] && cuda_used;
  pthread_mutex_unlock(&lost_mu);
  if (probe) {
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, 1);
    if (e == cudaSuccess) e = cudaFree(p);
    if (e != cudaSuccess) forget_error(e, "a probe of the device after the point");
  }
  pthread_mutex_lock(&lost_mu);
  const char *r = lost_reason[0] ? lost_reason : NULL;
  pthread_mutex_unlock(&lost_mu);
  return r;
}

int cu_check(const a3_backend *be, cudaError_t e, const char *op, const char *file, int line) {
  if (e == cudaSuccess) return 1;
  cu_record(be, A3_ERR_CUDA, op, file, line, cudaGetErrorName(e), cudaGetErrorString(e));
  forget_error(e, op);
  return 0;
}

int cu_check_blas(const a3_backend *be, cublasStatus_t s, const char *op, const char *file,
                  int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return 1;
  cu_record(be, A3_ERR_CUDA, op, file, line, cublasGetStatusName(s), cublasGetStatusString(s));
  // A CUDA call that failed inside cuBLAS (its workspace's cudaMalloc, a
  // faulted context) may have left the thread's last error: as cu_check.
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) forget_error(e, op);
  return 0;
}

// ---------------------------------------------------------------- memory

// What the device has, and what usually helps: the model's activations
// grow with the batch.
static a3_status out_of_memory(const a3_backend *be, size_t bytes) {
  size_t free_b = 0, total_b = 0;
  const int known = cudaMemGetInfo(&free_b, &total_b) == cudaSuccess;
  if (!known) (void)cudaGetLastError(); // unchecked: the sizes are only for the message
  char have[96] = "";
  if (known)
    snprintf(have, sizeof have, "; device %d has %.1f MiB, %.1f MiB free", cu_state(be)->device,
             total_b / 1048576.0, free_b / 1048576.0);
  return A3_FAIL(A3_ERR_CUDA,
                 "out of GPU memory: cudaMalloc of %zu bytes (%.1f MiB) failed%s. A smaller "
                 "train.batch_size needs less (train.grad_accum keeps the effective batch)",
                 bytes, bytes / 1048576.0, have);
}

static a3_status cuda_alloc(const a3_backend *be, void **out, size_t bytes) {
  *out = NULL;
  // cudaMalloc(0) may give NULL: ask for one byte so a zero-size tensor
  // still has a distinct pointer that release frees.
  const size_t n = bytes ? bytes : 1;
  cudaError_t e = cudaMalloc(out, n);
  if (e != cudaSuccess) {
    *out = NULL;
    forget_error(e, "cudaMalloc");
    if (e == cudaErrorMemoryAllocation) return out_of_memory(be, n);
    return A3_FAIL(A3_ERR_CUDA, "cudaMalloc of %zu bytes failed: %s (%s)", n, cudaGetErrorName(e),
                   cudaGetErrorString(e));
  }
  // Zeroed on the backend's stream, so that every later op sees the zeros.
  e = cudaMemsetAsync(*out, 0, n, cu_stream(be));
  if (e != cudaSuccess) {
    cudaFree(*out); // unchecked: the memset's error is the one to report
    *out = NULL;
    forget_error(e, "cudaMemsetAsync");
    return A3_FAIL(A3_ERR_CUDA, "cudaMemsetAsync of %zu bytes failed: %s (%s)", n,
                   cudaGetErrorName(e), cudaGetErrorString(e));
  }
  return A3_OK;
}

void *cu_scratch_get(const a3_backend *be, cu_scratch *s, size_t bytes) {
  if (bytes <= s->bytes) return s->ptr;
  if (s->ptr && !CU_CHECK(be, cudaFree(s->ptr))) return NULL;
  s->ptr = NULL, s->bytes = 0;
  if (!CU_CHECK(be, cudaMalloc(&s->ptr, bytes))) return NULL;
  s->bytes = bytes;
  return s->ptr;
}

static void cuda_release(const a3_backend *be, void *ptr) {
  if (ptr) CU_CHECK(be, cudaFree(ptr)); // cudaFree waits for work that may still use ptr
}

// Host memory may be pageable: the copy is queued on the stream, and the
// stream is drained before returning so that the caller may reuse or free
// the host buffer at once (and, for a download, read it).
static a3_status cuda_copy(const a3_backend *be, void *dst, const void *src, size_t bytes,
                           cudaMemcpyKind kind, const char *what) {
  if (!bytes) return A3_OK;
  cudaError_t e = cudaMemcpyAsync(dst, src, bytes, kind, cu_stream(be));
  if (e == cudaSuccess) e = cudaStreamSynchronize(cu_stream(be));
  if (e == cudaSuccess) return A3_OK;
  forget_error(e, what);
  return A3_FAIL(A3_ERR_CUDA, "%s of %zu bytes failed: %s (%s)", what, bytes, cudaGetErrorName(e),
                 cudaGetErrorString(e));
}

static a3_status cuda_upload(const a3_backend *be, void *dst, const void *host_src, size_t bytes) {
  return cuda_copy(be, dst, host_src, bytes, cudaMemcpyHostToDevice, "upload to the GPU");
}

static a3_status cuda_download(const a3_backend *be, void *host_dst, const void *src,
                               size_t bytes) {
  return cuda_copy(be, host_dst, src, bytes, cudaMemcpyDeviceToHost, "download from the GPU");
}

static a3_status cuda_synchronize(const a3_backend *be) {
  cuda_state *st = cu_state(be);
  CU_CHECK(be, cudaStreamSynchronize(st->stream)); // asynchronous kernel faults surface here
  if (st->error == A3_OK) return A3_OK;
  const a3_status code = st->error;
  st->error = A3_OK;
  return A3_FAIL(code, "%s", st->message);
}

// ---------------------------------------------------------------- shared reductions

// dst[0] = sum(part) * mul / div; one block of CU_THREADS.
__global__ static void finish_sum_kernel(float *dst, const double *part, unsigned nparts,
                                         double mul, double div, int accumulate) {
  double s = 0.0;
  for (unsigned i = threadIdx.x; i < nparts; i += blockDim.x) s += part[i];
  s = cu_block_sum(s);
  if (threadIdx.x == 0) {
    const float v = (float)(s * mul / div);
    dst[0] = accumulate ? dst[0] + v : v;
  }
}

void cu_finish_sum(const a3_backend *be, float *dst, // (1)
                   const double *part,               // (nparts)
                   unsigned nparts, double mul, double div, int accumulate) {
  finish_sum_kernel<<<1, CU_THREADS, 0, cu_stream(be)>>>(dst, part, nparts, mul, div, accumulate);
  CU_LAUNCHED(be);
}

int cu_plane_pieces(int J, size_t n) {
  if (J < 1) return 1;
  size_t S = (CU_RED_BLOCKS + (size_t)J - 1) / (size_t)J;
  const size_t most = n / 4096;
  if (S > most) S = most;
  return S < 1 ? 1 : (int)S;
}

__global__ static void finish_plane_parts_kernel(float *dst, const double *part, int J, int S,
                                                 int accumulate) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= J) return;
  double t = 0.0;
  for (int s = 0; s < S; s++) t += part[(size_t)j * S + s];
  dst[j] = accumulate ? dst[j] + (float)t : (float)t;
}

void cu_finish_plane_parts(const a3_backend *be, float *dst, // (J)
                           const double *part,               // (J, S)
                           int J, int S, int accumulate) {
  finish_plane_parts_kernel<<<cu_blocks((size_t)J, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(
      dst, part, J, S, accumulate);
  CU_LAUNCHED(be);
}

// Block (j, s): piece s of j's (outer, inner) elements, into part[j * S + s]
// or, when S is 1, into dst[j] itself.
template <typename T>
__global__ static void plane_sums_kernel(float *dst, double *part, const T *x, int J, int S,
                                         int outer, size_t outer_stride, int inner,
                                         int accumulate) {
  const int s = blockIdx.y;
  for (int j = blockIdx.x; j < J; j += gridDim.x) {
    double sum = 0.0;
    for (cu_plane_walk w = cu_plane_walk_start((size_t)outer * inner, S, s, inner); w.i < w.end;
         cu_plane_walk_next(&w, inner))
      sum += cu_ld(&x[w.o * outer_stride + (size_t)j * inner + w.r]);
    sum = cu_block_sum(sum);
    if (threadIdx.x) continue;
    if (S > 1)
      part[(size_t)j * S + s] = sum;
    else
      dst[j] = accumulate ? dst[j] + (float)sum : (float)sum;
  }
}

void cu_plane_sums(const a3_backend *be, float *dst, // (J)
                   const a3_act *x,                  // (outer, ..., J, inner), see the header
                   int J, int outer, size_t outer_stride, int inner, int accumulate) {
  if (J <= 0) return;
  if (outer <= 0 || inner <= 0) { // no elements: sums of zero
    if (!accumulate) cuda_zero(be, dst, (size_t)J);
    return;
  }
  const int S = cu_plane_pieces(J, (size_t)outer * inner);
  double *part = NULL;
  if (S > 1) {
    part = (double *)cu_scratch_get(be, &cu_state(be)->plane_parts, (size_t)J * S * sizeof(double));
    if (!part) return;
  }
  const dim3 grid(cu_grid(J), (unsigned)S);
  CU_ACT_DISPATCH(be, {
    plane_sums_kernel<T><<<grid, CU_THREADS, 0, cu_stream(be)>>>(dst, part, cu_t<T>(x), J, S, outer,
                                                                 outer_stride, inner, accumulate);
  });
  if (CU_LAUNCHED(be) && S > 1) cu_finish_plane_parts(be, dst, part, J, S, accumulate);
}

// ---------------------------------------------------------------- the op table

// Filled by assignment: C++17 has no designated initialisers.
static a3_backend_ops make_ops(void) {
  a3_backend_ops t;
  memset(&t, 0, sizeof t);
  t.alloc = cuda_alloc;
  t.release = cuda_release;
  t.upload = cuda_upload;
  t.download = cuda_download;
  t.synchronize = cuda_synchronize;
  t.zero = cuda_zero;
  t.act_zero = cuda_act_zero;
  t.accumulate = cuda_accumulate;
  t.act_from_f32 = cuda_act_from_f32;
  t.act_to_f32 = cuda_act_to_f32;
  t.conv2d_workspace_size = cuda_conv2d_workspace_size;
  t.conv2d_forward = cuda_conv2d_forward;
  t.conv2d_backward = cuda_conv2d_backward;
  t.groupnorm_forward = cuda_groupnorm_forward;
  t.groupnorm_backward = cuda_groupnorm_backward;
  t.groupnorm_silu_forward = cuda_groupnorm_silu_forward;
  t.groupnorm_silu_backward = cuda_groupnorm_silu_backward;
  t.silu_forward = cuda_silu_forward;
  t.silu_backward = cuda_silu_backward;
  t.linear_forward = cuda_linear_forward;
  t.linear_backward = cuda_linear_backward;
  t.attention_workspace_size = cuda_attention_workspace_size;
  t.attention_forward = cuda_attention_forward;
  t.attention_backward = cuda_attention_backward;
  t.to_tokens = cuda_to_tokens;
  t.from_tokens = cuda_from_tokens;
  t.upsample2x_forward = cuda_upsample2x_forward;
  t.upsample2x_backward = cuda_upsample2x_backward;
  t.concat_forward = cuda_concat_forward;
  t.concat_backward = cuda_concat_backward;
  t.add_forward = cuda_add_forward;
  t.add_backward = cuda_add_backward;
  t.add_channel_forward = cuda_add_channel_forward;
  t.add_channel_backward = cuda_add_channel_backward;
  t.timestep_embedding = cuda_timestep_embedding;
  t.mse_forward = cuda_mse_forward;
  t.mse_backward = cuda_mse_backward;
  t.gelu_forward = cuda_gelu_forward;
  t.gelu_backward = cuda_gelu_backward;
  t.relu_forward = cuda_relu_forward;
  t.relu_backward = cuda_relu_backward;
  t.gated_add_forward = cuda_gated_add_forward;
  t.gated_add_backward = cuda_gated_add_backward;
  t.softmax_xent_forward = cuda_softmax_xent_forward;
  t.softmax_xent_backward = cuda_softmax_xent_backward;
  t.sum_squares = cu_sum_squares;
  t.clip_scale = cu_clip_scale;
  t.adamw_update = cu_adamw_update;
  t.ema_update = cu_ema_update;
  t.sum_squares_segments = cu_sum_squares_segments;
  t.adamw_update_segments = cu_adamw_update_segments;
  t.ema_update_segments = cu_ema_update_segments;
  t.sampler_step = cu_sampler_step;
  t.training_noise = cu_training_noise;
  t.batch_images = cu_batch_images;
  return t;
}

static const a3_backend_ops cuda_ops = make_ops(); // static initialisation, before main

// ---------------------------------------------------------------- create / destroy

// Frees whatever part of st exists (create's cleanup and destroy).
static void free_state(cuda_state *st) {
  if (!st) return;
  if (st->stream) cudaStreamSynchronize(st->stream);
  cu_profile_free(st);
  cu_dnn_free(st);
  if (st->red) cudaFree(st->red);
  if (st->col_partials.ptr) cudaFree(st->col_partials.ptr);
  if (st->plane_parts.ptr) cudaFree(st->plane_parts.ptr);
  for (int i = 0; i < 2; i++)
    if (st->bf16[i].ptr) cudaFree(st->bf16[i].ptr);
  if (st->blas) cublasDestroy(st->blas);
  if (st->stream) cudaStreamDestroy(st->stream);
  free(st);
  (void)cudaGetLastError(); // unchecked: the frees' errors are no next caller's
}

#define CREATE_CUDA(call, what)                                                                    \
  do {                                                                                             \
    cudaError_t e_ = (call);                                                                       \
    if (e_ != cudaSuccess) {                                                                       \
      forget_error(e_, (what));                                                                    \
      status = A3_FAIL(A3_ERR_CUDA, "%s: %s (%s)", (what), cudaGetErrorName(e_),                   \
                       cudaGetErrorString(e_));                                                    \
      goto fail;                                                                                   \
    }                                                                                              \
  } while (0)
#define CREATE_BLAS(call, what)                                                                    \
  do {                                                                                             \
    cublasStatus_t s_ = (call);                                                                    \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                             \
      status = A3_FAIL(A3_ERR_CUDA, "%s: %s (%s)", (what), cublasGetStatusName(s_),                \
                       cublasGetStatusString(s_));                                                 \
      goto fail;                                                                                   \
    }                                                                                              \
  } while (0)

// FP32 must stay exact fp32: the default math mode never uses TF32 on its
// own, and it is set explicitly so that nothing inherited turns it on. The
// reduced precisions come from each GEMM's compute type (cuda_gemm.cu).
static cublasMath_t math_mode(a3_precision p) {
  return p == A3_PRECISION_FP32 ? CUBLAS_DEFAULT_MATH : CUBLAS_TF32_TENSOR_OP_MATH;
}

extern "C" a3_status a3_backend_cuda_create(int device, a3_precision precision,
                                            const a3_backend **out) {
  *out = NULL;
  if (precision != A3_PRECISION_FP32 && precision != A3_PRECISION_TF32 &&
      precision != A3_PRECISION_BF16)
    return A3_FAIL(A3_ERR_INTERNAL, "unknown CUDA precision %d", (int)precision);
  a3_status status = A3_OK;
  a3_backend *be = NULL;
  cuda_state *st = (cuda_state *)calloc(1, sizeof *st);
  int count = 0;
  if (!st) return A3_FAIL(A3_ERR_NOMEM, "out of memory for the CUDA backend's state");
  st->device = device;
  st->compute = cu_compute_type(precision);
  CREATE_CUDA(cudaGetDeviceCount(&count), "cannot count the CUDA devices");
  if (device < 0 || device >= count) {
    status = A3_FAIL(A3_ERR_CUDA, "cannot use CUDA device %d: %s (%s; %d visible)", device,
                     cudaGetErrorName(cudaErrorInvalidDevice),
                     cudaGetErrorString(cudaErrorInvalidDevice), count);
    goto fail;
  }
  CREATE_CUDA(cudaSetDevice(device), "cannot use the CUDA device");
  CREATE_CUDA(cudaStreamCreateWithFlags(&st->stream, cudaStreamNonBlocking),
              "cannot create a CUDA stream");
  CREATE_CUDA(cudaMalloc(&st->red, CU_RED_BLOCKS * sizeof(double)),
              "cannot allocate the reduction scratch");
  CREATE_BLAS(cublasCreate(&st->blas), "cannot create a cuBLAS handle");
  CREATE_BLAS(cublasSetStream(st->blas, st->stream), "cannot bind cuBLAS to the stream");
  CREATE_BLAS(cublasSetMathMode(st->blas, math_mode(precision)), "cannot set cuBLAS's math mode");
  CREATE_BLAS(cublasSetPointerMode(st->blas, CUBLAS_POINTER_MODE_HOST),
              "cannot set cuBLAS's pointer mode");
  be = (a3_backend *)calloc(1, sizeof *be);
  if (!be) {
    status = A3_FAIL(A3_ERR_NOMEM, "out of memory for the CUDA backend");
    goto fail;
  }
  pthread_mutex_lock(&lost_mu);
  cuda_used = 1;
  pthread_mutex_unlock(&lost_mu);
  be->name = "cuda";
  be->ops = cu_profiled_ops(&cuda_ops);
  be->impl = st;
  // bf16 precision stores activations in bf16, as torch's autocast does.
  be->act_bytes = precision == A3_PRECISION_BF16 ? 2 : sizeof(float);
  *out = be;
  return A3_OK;
fail:
  cudaGetLastError(); // leave no non-sticky error behind for the next caller
  free_state(st);
  return status;
}

extern "C" void a3_backend_cuda_destroy(const a3_backend *be) {
  if (!be) return;
  free_state(cu_state(be));
  free((void *)be);
}

extern "C" int a3_backend_is_cuda(const a3_backend *be) {
  return be && a3_op_profile_real(be->ops) == &cuda_ops;
}

extern "C" int a3_backend_cuda_device(const a3_backend *be) {
  return a3_backend_is_cuda(be) ? cu_state(be)->device : -1;
}

extern "C" void *a3_backend_cuda_stream(const a3_backend *be) {
  return a3_backend_is_cuda(be) ? (void *)cu_stream(be) : NULL;
}
