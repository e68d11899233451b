// conv2d through cuDNN, when the machine has it: an optional fast path
// beside the im2col + cuBLAS one of cuda_conv2d.cu.
//
// Why: im2col writes and re-reads every input pixel KH*KW times, which on a
// Hopper GPU costs more than the GEMM itself in tf32 (a 3x3 conv over
// (128, 128, 32, 32) moves ~1.2 GB through col for a 39 GFLOP product);
// cuDNN's implicit-GEMM kernels never build col.
//
// Why loaded at run time (dlopen), not linked: cuDNN is a large optional
// dependency. A build needs only its header; a machine without libcudnn.so.9
// (or with A3FTA_CONV=im2col in the environment) runs the im2col path with
// the same results up to rounding. tests/gpu/run.sh benchmarks both.
//
// Every conv shape gets its descriptors and algorithms once, when the model
// plans its workspace (cuda_conv2d_workspace_size), from cuDNN's heuristics:
// for each direction (forward, data gradient, filter gradient) on its own,
// the first deterministic algorithm that fits the workspace cap (ws_cap)
// and the precision. A direction without one runs on the im2col path while
// the shape's other directions stay on cuDNN (planning a shape all or
// nothing left whole convs on im2col + col2im for want of one algorithm).
// fp32 allows FMA math only (no TF32); tf32 allows TF32 tensor cores. bf16 runs cuDNN on bf16
// tensors (its BFLOAT16 config: bf16 x, w and y, fp32 compute), as torch's autocast runs
// convolutions: the activations (input, output and their gradients) are bf16 already, the fp32
// weight is rounded into a bf16 copy in the workspace, and the bf16 filter gradient is widened and
// added into the fp32 dweight. Asymmetric padding, which cuDNN cannot express, runs over an
// explicitly padded copy of the input (in the activations' type). Planning
// never fails a run. A3FTA_CONV_TRACE=1 prints each shape's plan: the engine
// of each direction and, for an im2col one, why.
#include "cuda_internal.h"

#include <cudnn.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The most of cuDNN's own workspace one direction may take: a sixteenth of
// the device's memory, at most 1 GiB (reached at 16 GiB of device memory). At
// 256 MB, on an H200 (cuDNN 9.14, tf32), the cifar U-Net's two largest 32x32
// convs had no deterministic backward algorithm that fit and a forward at a
// fifth of the others' rate: a quarter of the step. The model's workspace is
// the largest of its convs' (one arena), so the cap costs memory once. The
// device's total, not its free memory, so that a plan never depends on what
// else runs there.
#define DNN_WS_MAX ((size_t)1 << 30)
#define DNN_WS_MIN ((size_t)64 << 20)
#define DNN_MAX_SHAPES 256
#define DNN_ALGOS 16

// ---------------------------------------------------------------- the library

#define DNN_FUNCTIONS(X)                                                                           \
  X(cudnnGetVersion)                                                                               \
  X(cudnnGetErrorString)                                                                           \
  X(cudnnCreate)                                                                                   \
  X(cudnnDestroy)                                                                                  \
  X(cudnnSetStream)                                                                                \
  X(cudnnCreateTensorDescriptor)                                                                   \
  X(cudnnSetTensor4dDescriptor)                                                                    \
  X(cudnnDestroyTensorDescriptor)                                                                  \
  X(cudnnCreateFilterDescriptor)                                                                   \
  X(cudnnSetFilter4dDescriptor)                                                                    \
  X(cudnnDestroyFilterDescriptor)                                                                  \
  X(cudnnCreateConvolutionDescriptor)                                                              \
  X(cudnnSetConvolution2dDescriptor)                                                               \
  X(cudnnSetConvolutionMathType)                                                                   \
  X(cudnnDestroyConvolutionDescriptor)                                                             \
  X(cudnnGetConvolutionForwardAlgorithm_v7)                                                        \
  X(cudnnGetConvolutionBackwardDataAlgorithm_v7)                                                   \
  X(cudnnGetConvolutionBackwardFilterAlgorithm_v7)                                                 \
  X(cudnnGetConvolutionForwardWorkspaceSize)                                                       \
  X(cudnnGetConvolutionBackwardDataWorkspaceSize)                                                  \
  X(cudnnGetConvolutionBackwardFilterWorkspaceSize)                                                \
  X(cudnnConvolutionForward)                                                                       \
  X(cudnnConvolutionBackwardData)                                                                  \
  X(cudnnConvolutionBackwardFilter)

#define DNN_TYPE(name) typedef decltype(&::name) name##_fn;
DNN_FUNCTIONS(DNN_TYPE)
#undef DNN_TYPE

static struct {
#define DNN_POINTER(name) name##_fn name;
  DNN_FUNCTIONS(DNN_POINTER)
#undef DNN_POINTER
} dnn_api;
static pthread_once_t dnn_once = PTHREAD_ONCE_INIT;

static char dnn_engine[200] = "im2col + cuBLAS";
// Exact fp32 runs its backward on cuDNN (FMA math) too, unless
// A3FTA_CONV=cudnn-fwd keeps it on im2col (plan_shape says why that was
// the default once).
static int fp32_backward_on_dnn = 1;
// Why cuDNN runs nothing in this process (each shape's trace says it); NULL
// once the library loaded.
static const char *dnn_off = "cuDNN not loaded";

// A3FTA_CONV's values: the CUDA backend's, and the CPU backend's
// (src/backend/cpu/conv2d.c), which it leaves to the CPU.
static int known_conv_switch(const char *v) {
  static const char *const known[] = {"im2col", "cudnn-fwd", "gemm", "dnnl", "nowino"};
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
    if (!strcmp(v, known[i])) return 1;
  return !*v;
}

static void load_library(void) {
  const char *conv = getenv("A3FTA_CONV");
  if (conv && !known_conv_switch(conv)) // e.g. the former cudnn-all, now the default
    fprintf(stderr,
            "a3fta: A3FTA_CONV=%s is not a known value (CUDA: im2col, cudnn-fwd); the GPU's "
            "convolutions take their default plan\n",
            conv);
  if (conv && !strcmp(conv, "im2col")) {
    snprintf(dnn_engine, sizeof dnn_engine, "im2col + cuBLAS (A3FTA_CONV=im2col)");
    dnn_off = "A3FTA_CONV=im2col";
    return;
  }
  void *lib = dlopen("libcudnn.so.9", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    snprintf(dnn_engine, sizeof dnn_engine, "im2col + cuBLAS (no cuDNN: %.150s)", dlerror());
    return;
  }
  const char *missing = NULL;
#define DNN_LOAD(name)                                                                             \
  dnn_api.name = (name##_fn)dlsym(lib, #name);                                                     \
  if (!dnn_api.name && !missing) missing = #name;
  DNN_FUNCTIONS(DNN_LOAD)
#undef DNN_LOAD
  const size_t version = missing ? 0 : dnn_api.cudnnGetVersion();
  if (missing || version / 10000 != CUDNN_MAJOR) { // the library stays loaded: harmless
    snprintf(dnn_engine, sizeof dnn_engine, "im2col + cuBLAS (libcudnn.so.9 %s%s)",
             missing ? "lacks " : "is not version 9", missing ? missing : "");
    return;
  }
  fp32_backward_on_dnn = !(conv && !strcmp(conv, "cudnn-fwd"));
  snprintf(dnn_engine, sizeof dnn_engine, "cuDNN %zu.%zu.%zu%s", version / 10000,
           version / 100 % 100, version % 100,
           fp32_backward_on_dnn ? "" : " (A3FTA_CONV=cudnn-fwd: fp32's backward on im2col)");
  dnn_off = NULL;
}

// ---------------------------------------------------------------- per backend

typedef struct {
  a3_conv2d_shape shape; // as asked for (the cache key)
  a3_conv2d_shape run;   // as cuDNN runs it: asymmetric padding made explicit (pads 0)
  size_t padded_bytes;   // the explicitly padded input or its gradient, 0 when none
  size_t dweight_bytes;  // the fp32 filter gradient before it is added to dweight (0: bf16)
  cudnnDataType_t dtype; // of x, w and y: FLOAT, or BFLOAT16 with bf16 activations
  size_t w16_bytes;      // bf16: the weight's copy, and the filter gradient's
  cudnnTensorDescriptor_t x, y;
  cudnnFilterDescriptor_t w;
  cudnnConvolutionDescriptor_t conv;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
  cudnnMathType_t fwd_math, data_math, filter_math;
  size_t workspace; // cuDNN's, the most its planned directions need
  // Per direction (cu_dnn_dir): NULL when cuDNN runs it, else why the im2col
  // path does (for the trace), and the least workspace a usable algorithm
  // refused for the cap would have needed (0: none was).
  const char *im2col_why[CU_DNN_DIRECTIONS];
  size_t over_cap[CU_DNN_DIRECTIONS];
  size_t ws_cap; // the backend's cap when the shape was planned
} dnn_shape;

// Exists even without cuDNN (handle NULL, off saying why), so that every
// shape is planned, and traced, once.
struct cuda_dnn {
  cudnnHandle_t handle;
  const char *off; // why this backend runs nothing on cuDNN, NULL when it may
  size_t ws_cap;   // the most workspace one direction's algorithm may take
  int n;
  dnn_shape shapes[DNN_MAX_SHAPES];
};

static int dnn_check(const a3_backend *be, cudnnStatus_t s, const char *op, int line) {
  if (s == CUDNN_STATUS_SUCCESS) return 1;
  cu_record(be, A3_ERR_CUDA, op, __FILE__, line, "cuDNN", dnn_api.cudnnGetErrorString(s));
  return 0;
}
#define DNN(be, call) dnn_check((be), dnn_api.call, __func__, __LINE__)

// A cuDNN handle on the backend's stream; 0 (nothing held) when it will not start.
static int start_handle(cuda_dnn *d, cudaStream_t stream) {
  if (dnn_api.cudnnCreate(&d->handle) == CUDNN_STATUS_SUCCESS &&
      dnn_api.cudnnSetStream(d->handle, stream) == CUDNN_STATUS_SUCCESS)
    return 1;
  if (d->handle) dnn_api.cudnnDestroy(d->handle); // unchecked: cleanup after a failed start
  d->handle = NULL;
  return 0;
}

static size_t workspace_cap(int device) {
  cudaDeviceProp prop;
  if (cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
    (void)cudaGetLastError(); // unchecked: the cap falls back to its floor
    return DNN_WS_MIN;
  }
  const size_t cap = prop.totalGlobalMem / 16;
  return cap > DNN_WS_MAX ? DNN_WS_MAX : cap < DNN_WS_MIN ? DNN_WS_MIN : cap;
}

// The backend's cuDNN state and shape plans, created at the first conv (with
// off set when cuDNN runs nothing); NULL only when out of memory, then for
// good: a later success would plan cuDNN for a shape whose workspace was
// sized for im2col.
static cuda_dnn *backend_dnn(const a3_backend *be) {
  pthread_once(&dnn_once, load_library);
  cuda_state *st = cu_state(be);
  if (st->dnn || st->dnn_failed) return st->dnn;
  cuda_dnn *d = (cuda_dnn *)calloc(1, sizeof *d);
  if (!d) {
    st->dnn_failed = 1;
    return NULL;
  }
  d->off = dnn_off;
  d->ws_cap = workspace_cap(st->device);
  if (!d->off && !start_handle(d, st->stream)) {
    d->off = "cuDNN not loaded: cudnnCreate failed";
    st->dnn_failed = 1; // e.g. a library for another CUDA: the im2col path it is
  }
  st->dnn = d;
  return d;
}

void cu_dnn_free(cuda_state *st) {
  cuda_dnn *d = st->dnn;
  if (!d) return;
  for (int i = 0; i < d->n; i++) {
    dnn_shape *e = &d->shapes[i];
    if (e->x) dnn_api.cudnnDestroyTensorDescriptor(e->x);
    if (e->y) dnn_api.cudnnDestroyTensorDescriptor(e->y);
    if (e->w) dnn_api.cudnnDestroyFilterDescriptor(e->w);
    if (e->conv) dnn_api.cudnnDestroyConvolutionDescriptor(e->conv);
  }
  if (d->handle) dnn_api.cudnnDestroy(d->handle);
  free(d);
  st->dnn = NULL;
}

// ---------------------------------------------------------------- planning a shape

static int fp32_exact(const a3_backend *be) { return cu_state(be)->compute == CUBLAS_COMPUTE_32F; }

// Whether a heuristic's algorithm may be used: it succeeded, is
// deterministic, never converts its operands down (ALLOW_CONVERSION would
// let fp32 data go to fp16: overflow above 65504, small gradients flushed),
// and in fp32 uses no tensor-core (TF32) math.
static int usable_algo(const a3_backend *be, cudnnStatus_t status, cudnnDeterminism_t det,
                       cudnnMathType_t math) {
  return status == CUDNN_STATUS_SUCCESS && det == CUDNN_DETERMINISTIC &&
         math != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION &&
         (!fp32_exact(be) || math != CUDNN_TENSOR_OP_MATH);
}

// The math type an algorithm runs with: fp32 pins FMA (no TF32 whatever
// the heuristic said), the others take the heuristic's.
static cudnnMathType_t run_math(const a3_backend *be, cudnnMathType_t m) {
  return fp32_exact(be) ? CUDNN_FMA_MATH : m;
}

static cudnnMathType_t search_math(const a3_backend *be) {
  return fp32_exact(be) ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH;
}

static int ok(cudnnStatus_t s) { return s == CUDNN_STATUS_SUCCESS; }

// Planning never records an error: a shape cuDNN will not take runs on the
// im2col path instead.
static int make_descriptors(dnn_shape *e) {
  const a3_conv2d_shape *s = &e->run;
  return ok(dnn_api.cudnnCreateTensorDescriptor(&e->x)) &&
         ok(dnn_api.cudnnCreateTensorDescriptor(&e->y)) &&
         ok(dnn_api.cudnnCreateFilterDescriptor(&e->w)) &&
         ok(dnn_api.cudnnCreateConvolutionDescriptor(&e->conv)) &&
         ok(dnn_api.cudnnSetTensor4dDescriptor(e->x, CUDNN_TENSOR_NCHW, e->dtype, s->B, s->C, s->H,
                                               s->W)) &&
         ok(dnn_api.cudnnSetTensor4dDescriptor(e->y, CUDNN_TENSOR_NCHW, e->dtype, s->B, s->OC,
                                               a3_conv2d_out_h(s), a3_conv2d_out_w(s))) &&
         ok(dnn_api.cudnnSetFilter4dDescriptor(e->w, e->dtype, CUDNN_TENSOR_NCHW, s->OC, s->C,
                                               s->KH, s->KW)) &&
         ok(dnn_api.cudnnSetConvolution2dDescriptor(e->conv, s->pad_top, s->pad_left, s->stride,
                                                    s->stride, 1, 1, CUDNN_CROSS_CORRELATION,
                                                    CUDNN_DATA_FLOAT));
}

static size_t larger(size_t a, size_t b) { return a > b ? a : b; }

// The first algorithm of a heuristic's list (p, n) that is usable and whose
// workspace, asked of cuDNN for that algorithm and math type (the
// heuristic's own figure is not the one to trust), fits e->ws_cap. Sets
// *algo, *math and grows e->workspace; *over gets the least workspace of
// the usable algorithms refused for the cap.
template <typename Perf, typename Algo, typename WorkspaceSize>
static int first_usable(const a3_backend *be, dnn_shape *e, const Perf *p, int n,
                        WorkspaceSize workspace_size, Algo *algo, cudnnMathType_t *math,
                        size_t *over) {
  for (int i = 0; i < n; i++) {
    if (!usable_algo(be, p[i].status, p[i].determinism, p[i].mathType)) continue;
    const cudnnMathType_t m = run_math(be, p[i].mathType);
    size_t bytes = 0;
    if (!ok(dnn_api.cudnnSetConvolutionMathType(e->conv, m)) ||
        !ok(workspace_size(p[i].algo, &bytes)))
      continue;
    if (bytes > e->ws_cap) {
      if (!*over || bytes < *over) *over = bytes;
      continue;
    }
    *algo = p[i].algo, *math = m;
    e->workspace = larger(e->workspace, bytes);
    return 1;
  }
  return 0;
}

static int pick_forward(const a3_backend *be, cuda_dnn *d, dnn_shape *e) {
  cudnnConvolutionFwdAlgoPerf_t p[DNN_ALGOS];
  int n = 0;
  if (!ok(dnn_api.cudnnSetConvolutionMathType(e->conv, search_math(be))) ||
      !ok(dnn_api.cudnnGetConvolutionForwardAlgorithm_v7(d->handle, e->x, e->w, e->conv, e->y,
                                                         DNN_ALGOS, &n, p)))
    return 0;
  auto size = [&](cudnnConvolutionFwdAlgo_t a, size_t *bytes) {
    return dnn_api.cudnnGetConvolutionForwardWorkspaceSize(d->handle, e->x, e->w, e->conv, e->y, a,
                                                           bytes);
  };
  return first_usable(be, e, p, n, size, &e->fwd, &e->fwd_math, &e->over_cap[CU_DNN_FORWARD]);
}

static int pick_backward_data(const a3_backend *be, cuda_dnn *d, dnn_shape *e) {
  cudnnConvolutionBwdDataAlgoPerf_t p[DNN_ALGOS];
  int n = 0;
  if (!ok(dnn_api.cudnnSetConvolutionMathType(e->conv, search_math(be))) ||
      !ok(dnn_api.cudnnGetConvolutionBackwardDataAlgorithm_v7(d->handle, e->w, e->y, e->conv, e->x,
                                                              DNN_ALGOS, &n, p)))
    return 0;
  auto size = [&](cudnnConvolutionBwdDataAlgo_t a, size_t *bytes) {
    return dnn_api.cudnnGetConvolutionBackwardDataWorkspaceSize(d->handle, e->w, e->y, e->conv,
                                                                e->x, a, bytes);
  };
  return first_usable(be, e, p, n, size, &e->bwd_data, &e->data_math, &e->over_cap[CU_DNN_DATA]);
}

static int pick_backward_filter(const a3_backend *be, cuda_dnn *d, dnn_shape *e) {
  cudnnConvolutionBwdFilterAlgoPerf_t p[DNN_ALGOS];
  int n = 0;
  if (!ok(dnn_api.cudnnSetConvolutionMathType(e->conv, search_math(be))) ||
      !ok(dnn_api.cudnnGetConvolutionBackwardFilterAlgorithm_v7(d->handle, e->x, e->y, e->conv,
                                                                e->w, DNN_ALGOS, &n, p)))
    return 0;
  auto size = [&](cudnnConvolutionBwdFilterAlgo_t a, size_t *bytes) {
    return dnn_api.cudnnGetConvolutionBackwardFilterWorkspaceSize(d->handle, e->x, e->y, e->conv,
                                                                  e->w, a, bytes);
  };
  return first_usable(be, e, p, n, size, &e->bwd_filter, &e->filter_math,
                      &e->over_cap[CU_DNN_FILTER]);
}

// Workspace parts stay 256-byte aligned, as cudaMalloc's blocks are.
static size_t round_up_256(size_t bytes) { return (bytes + 255) / 256 * 256; }

// Elements of the tensors cuDNN runs on (asymmetric padding made explicit).
static size_t x_count(const dnn_shape *e) {
  const a3_conv2d_shape *r = &e->run;
  return (size_t)r->B * r->C * r->H * r->W;
}
static size_t w_count(const dnn_shape *e) {
  const a3_conv2d_shape *r = &e->run;
  return (size_t)r->OC * r->C * r->KH * r->KW;
}

// cuDNN pads symmetrically only. Diffusers' Downsample2D with padding 0 pads
// (0, 1, 0, 1): that runs as a conv with no padding over an explicitly
// padded copy of the input (in the workspace, before cuDNN's part).
static void plan_padding(const a3_backend *be, dnn_shape *e) {
  const a3_conv2d_shape *s = &e->shape;
  e->run = *s;
  if (s->pad_top == s->pad_bottom && s->pad_left == s->pad_right) return;
  e->run.H = s->H + s->pad_top + s->pad_bottom, e->run.W = s->W + s->pad_left + s->pad_right;
  e->run.pad_top = e->run.pad_bottom = e->run.pad_left = e->run.pad_right = 0;
  e->padded_bytes = round_up_256(x_count(e) * be->act_bytes);
}

// bf16 activations: cuDNN's tensors are bf16, the weight's and the filter
// gradient's through copies in the workspace (which also serve as the
// aligned weight and filter gradient: no fp32 scratch then).
static void plan_bf16(const a3_backend *be, dnn_shape *e) {
  e->dtype = cu_act_bf16(be) ? CUDNN_DATA_BFLOAT16 : CUDNN_DATA_FLOAT;
  if (e->dtype != CUDNN_DATA_BFLOAT16) return;
  e->w16_bytes = round_up_256(w_count(e) * sizeof(__nv_bfloat16));
  e->dweight_bytes = 0;
}

// Each direction on its own: cuDNN when it has a usable algorithm, im2col
// otherwise, with why recorded. Exact fp32's backward once stayed on im2col:
// on an H100 (cuDNN 9.14) a training step of the ddpm-cifar10-32 U-Net at
// batch 128 with every conv trainable hit an illegal memory access in the
// backward with cuDNN's FMA-math algorithms, twice. The likely cause was
// found later: the memory plan reserved no workspace for the resnets' 1x1
// shortcuts (fixed in unet_plan.c; test_unet_workspace). On an H200
// (2026-11-27, cuDNN 9.14) that step then ran with cuDNN's backward, with
// the same loss as im2col's to 6 digits and 3% faster, and test_cuda_unet
// passed: the default since. A3FTA_CONV=cudnn-fwd brings im2col back for
// fp32's backward (tests/gpu/run.sh compares the two).
static const char pointwise_gemm[] = "1x1: a batched GEMM";
static void plan_shape(const a3_backend *be, cuda_dnn *d, dnn_shape *e) {
  const char *none = "no usable deterministic algorithm";
  e->ws_cap = d->ws_cap;
  plan_padding(be, e);
  e->dweight_bytes = round_up_256(w_count(e) * sizeof(float));
  plan_bf16(be, e);
  const char *all = d->off ? d->off : !make_descriptors(e) ? "cuDNN took no descriptors" : NULL;
  const char *backward = all ? all : fp32_exact(be) && !fp32_backward_on_dnn ? "fp32 exact" : NULL;
  const char *gemm = cu_conv2d_is_pointwise(&e->shape) ? pointwise_gemm : NULL;
  const char **why = e->im2col_why;
  // A 1x1's forward and data gradient are cuBLAS GEMMs whatever cuDNN's state.
  why[CU_DNN_FORWARD] = gemm ? gemm : all ? all : pick_forward(be, d, e) ? NULL : none;
  why[CU_DNN_DATA] = gemm ? gemm : backward ? backward : pick_backward_data(be, d, e) ? NULL : none;
  why[CU_DNN_FILTER] = backward ? backward : pick_backward_filter(be, d, e) ? NULL : none;
}

static int any_on_dnn(const dnn_shape *e) {
  for (int i = 0; i < CU_DNN_DIRECTIONS; i++)
    if (!e->im2col_why[i]) return 1;
  return 0;
}

// The bf16 copies' part of the workspace (0 unless bf16).
static size_t bf16_bytes(const dnn_shape *e) { return 2 * e->w16_bytes; }

// The workspace the shape's cuDNN calls use (the layout is at
// dweight_scratch): none when im2col runs every direction.
static size_t dnn_bytes(const dnn_shape *e) {
  return any_on_dnn(e) ? e->padded_bytes + e->dweight_bytes + bf16_bytes(e) + e->workspace : 0;
}

static const char *math_name(cudnnMathType_t m) {
  switch (m) {
  case CUDNN_DEFAULT_MATH: return "default math";
  case CUDNN_TENSOR_OP_MATH: return "tensor-op math";
  case CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION: return "tensor-op math with conversion";
  case CUDNN_FMA_MATH: return "FMA math";
  }
  return "unknown math";
}

// "forward cuDNN algo 1, tensor-op math" or "data im2col (fp32 exact)": the
// engine of direction i of a planned shape.
static void trace_direction(char *out, size_t cap, const dnn_shape *e, int i) {
  static const char *const names[CU_DNN_DIRECTIONS] = {"forward", "data", "filter"};
  const int algo[CU_DNN_DIRECTIONS] = {(int)e->fwd, (int)e->bwd_data, (int)e->bwd_filter};
  const cudnnMathType_t math[CU_DNN_DIRECTIONS] = {e->fwd_math, e->data_math, e->filter_math};
  int at = 0;
  if (e->im2col_why[i])
    at = snprintf(out, cap, "%s %s (%s)", names[i],
                  e->im2col_why[i] == pointwise_gemm ? "cuBLAS" : "im2col", e->im2col_why[i]);
  else
    at = snprintf(out, cap, "%s cuDNN algo %d, %s", names[i], algo[i], math_name(math[i]));
  // An algorithm cuDNN ranked higher was passed over for its workspace.
  if (e->over_cap[i] && at > 0 && (size_t)at < cap)
    snprintf(out + at, cap - (size_t)at, " [passed over: one needing %.1f MB > the %.1f MB cap]",
             e->over_cap[i] / 1048576.0, e->ws_cap / 1048576.0);
}

// With A3FTA_CONV_TRACE=1 in the environment, each conv shape's plan goes to
// stderr: the engine of each direction and why one is not on cuDNN. One
// fprintf per shape keeps the lines of several backends whole.
static void trace_plan(const dnn_shape *e) {
  static int trace = -1;
  if (trace < 0) trace = getenv("A3FTA_CONV_TRACE") && strcmp(getenv("A3FTA_CONV_TRACE"), "0");
  if (!trace) return;
  char dir[CU_DNN_DIRECTIONS][192], tail[80] = "";
  for (int i = 0; i < CU_DNN_DIRECTIONS; i++) trace_direction(dir[i], sizeof dir[i], e, i);
  if (any_on_dnn(e))
    snprintf(tail, sizeof tail, "; cuDNN workspace %.1f MB%s%s", (double)dnn_bytes(e) / 1048576.0,
             e->padded_bytes ? ", explicit padding" : "",
             e->dtype == CUDNN_DATA_BFLOAT16 ? ", bf16 tensors" : "");
  const a3_conv2d_shape *s = &e->shape;
  fprintf(stderr, "conv (%d, %d, %d, %d) -> %d, %dx%d stride %d pads %d %d %d %d: %s, %s, %s%s\n",
          s->B, s->C, s->H, s->W, s->OC, s->KH, s->KW, s->stride, s->pad_top, s->pad_bottom,
          s->pad_left, s->pad_right, dir[0], dir[1], dir[2], tail);
}

// The shape's entry, planned at its first sight; NULL (all on im2col) only
// when out of memory or past DNN_MAX_SHAPES shapes.
static const dnn_shape *find_shape(const a3_backend *be, const a3_conv2d_shape *s) {
  cuda_dnn *d = backend_dnn(be);
  if (!d) return NULL;
  for (int i = 0; i < d->n; i++)
    if (!memcmp(&d->shapes[i].shape, s, sizeof *s)) return &d->shapes[i];
  if (d->n == DNN_MAX_SHAPES) return NULL;
  dnn_shape *e = &d->shapes[d->n++];
  e->shape = *s;
  plan_shape(be, d, e);
  trace_plan(e);
  return e;
}

// ---------------------------------------------------------------- explicit padding

// padded (B*C planes of PH x PW) = inp (B*C planes of H x W) placed at
// (top, left), zeros around it.
template <typename T>
__global__ static void pad_kernel(T *padded, const T *inp, int planes, int H, int W, int PH, int PW,
                                  int top, int left) {
  const int n = PH * PW;
  for (int plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const T *src = inp + (size_t)plane * H * W;
    T *dst = padded + (size_t)plane * n;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
      const int y = i / PW - top, x = i % PW - left;
      cu_st(dst + i, y >= 0 && y < H && x >= 0 && x < W ? cu_ld(src + y * W + x) : 0.0f);
    }
  }
}

// dinp (B*C planes of H x W) = the (top, left) window of dpadded.
template <typename T>
__global__ static void crop_kernel(T *dinp, const T *dpadded, int planes, int H, int W, int PH,
                                   int PW, int top, int left) {
  const int n = H * W;
  for (int plane = blockIdx.y; plane < planes; plane += gridDim.y) {
    const T *src = dpadded + (size_t)plane * PH * PW;
    T *dst = dinp + (size_t)plane * n;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
      dst[i] = src[(i / W + top) * PW + i % W + left];
  }
}

static dim3 plane_grid(int planes, int n) {
  const unsigned x = (unsigned)((n + CU_THREADS - 1) / CU_THREADS);
  return dim3(x < 64 ? x : 64, planes < 65535 ? (unsigned)planes : 65535u);
}

// The padded input, at the workspace's start (padded_bytes).
static int pad_input(const a3_backend *be, const dnn_shape *e, void *padded, const a3_act *inp) {
  const a3_conv2d_shape *s = &e->shape;
  const int planes = s->B * s->C;
  CU_ACT_DISPATCH(be, {
    pad_kernel<T><<<plane_grid(planes, e->run.H * e->run.W), CU_THREADS, 0, cu_stream(be)>>>(
        (T *)padded, cu_t<T>(inp), planes, s->H, s->W, e->run.H, e->run.W, s->pad_top, s->pad_left);
  });
  return CU_LAUNCHED(be);
}

static void crop_gradient(const a3_backend *be, const dnn_shape *e, a3_act *dinp,
                          const void *dpadded) {
  const a3_conv2d_shape *s = &e->shape;
  const int planes = s->B * s->C;
  CU_ACT_DISPATCH(be, {
    crop_kernel<T><<<plane_grid(planes, s->H * s->W), CU_THREADS, 0, cu_stream(be)>>>(
        cu_t<T>(dinp), (const T *)dpadded, planes, s->H, s->W, e->run.H, e->run.W, s->pad_top,
        s->pad_left);
    CU_LAUNCHED(be);
  });
}

// ---------------------------------------------------------------- the ops

extern "C" const char *a3_backend_cuda_conv_engine(const a3_backend *be) {
  if (!a3_backend_is_cuda(be)) return "none";
  backend_dnn(be); // starts cuDNN, or finds that it will not start
  if (cu_state(be)->dnn_failed) return "im2col + cuBLAS (cuDNN found but cudnnCreate failed)";
  return dnn_engine;
}

size_t cu_dnn_conv2d_workspace_size(const a3_backend *be, const a3_conv2d_shape *s) {
  const dnn_shape *e = find_shape(be, s);
  return e ? dnn_bytes(e) : 0;
}

int cu_dnn_conv2d_runs(const a3_backend *be, const a3_conv2d_shape *s, cu_dnn_dir dir) {
  const dnn_shape *e = find_shape(be, s);
  return e && !e->im2col_why[dir];
}

// The workspace: [padded input or its gradient (padded_bytes)]
// [filter gradient (dweight_bytes)][bf16: w (w16_bytes), dw (w16_bytes)]
// [cuDNN's (workspace)].
static float *dweight_scratch(const dnn_shape *e, void *workspace) {
  return (float *)((char *)workspace + e->padded_bytes);
}

typedef struct {
  __nv_bfloat16 *w, *dw;
} bf16_copies;

static bf16_copies bf16_parts(const dnn_shape *e, void *workspace) {
  char *p = (char *)workspace + e->padded_bytes + e->dweight_bytes;
  bf16_copies c;
  c.w = (__nv_bfloat16 *)p;
  c.dw = (__nv_bfloat16 *)(p + e->w16_bytes);
  return c;
}

static void *dnn_workspace(const dnn_shape *e, void *workspace) {
  return (char *)workspace + e->padded_bytes + e->dweight_bytes + bf16_bytes(e);
}

static int bf16(const dnn_shape *e) { return e->dtype == CUDNN_DATA_BFLOAT16; }

// The weight as cuDNN gets it: itself when 16-byte aligned (any model whose
// tensors before it hold multiples of 4 floats), else a copy in the
// scratch (a learned gate's single float shifts every tensor after it).
static const float *aligned_weight(const a3_backend *be, const dnn_shape *e, const float *weight,
                                   void *workspace) {
  if ((uintptr_t)weight % 16 == 0) return weight;
  float *copy = dweight_scratch(e, workspace);
  const size_t bytes = w_count(e) * sizeof(float);
  return CU_CHECK(be, cudaMemcpyAsync(copy, weight, bytes, cudaMemcpyDeviceToDevice, cu_stream(be)))
             ? copy
             : NULL;
}

// The weight cuDNN reads: its bf16 copy, or the (aligned) fp32 weight; NULL
// after a recorded failure.
static const void *dnn_weight(const a3_backend *be, const dnn_shape *e, const float *weight,
                              void *workspace) {
  if (!bf16(e)) return aligned_weight(be, e, weight, workspace);
  __nv_bfloat16 *copy = bf16_parts(e, workspace).w;
  return cu_round_bf16(be, copy, weight, w_count(e)) ? copy : NULL;
}

// dst (n) += src (n), fp32.
__global__ static void add_kernel(float *dst, const float *src, size_t n) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    dst[i] += src[i];
}

void cu_dnn_conv2d_forward(const a3_backend *be, const a3_conv2d_shape *s,
                           a3_act *out,         // (B, OC, OH, OW): = conv + beta * out
                           const a3_act *inp,   // (B, C, H, W)
                           const float *weight, // (OC, C, KH, KW)
                           float beta, void *workspace) {
  const dnn_shape *e = find_shape(be, s);
  const float one = 1.0f;
  const void *x = inp; // (B, C, H + pads, W + pads) when padded
  if (e->padded_bytes) {
    if (!pad_input(be, e, workspace, inp)) return;
    x = workspace;
  }
  const void *w = dnn_weight(be, e, weight, workspace);
  if (!w || !DNN(be, cudnnSetConvolutionMathType(e->conv, e->fwd_math))) return;
  DNN(be, cudnnConvolutionForward(backend_dnn(be)->handle, &one, e->x, x, e->w, w, e->conv, e->fwd,
                                  dnn_workspace(e, workspace), e->workspace, &beta, e->y, out));
}

// dweight += the filter gradient (inp padded first when the shape needs it).
// It goes through an aligned scratch (bf16: the dw copy, widened), then an
// add, not straight into dweight with beta = 1: a parameter in the flat
// gradient buffer is only as aligned as the tensors before it make it, and
// cuDNN's kernels may assume more.
static int backward_filter(const a3_backend *be, const dnn_shape *e, float *dweight,
                           const a3_act *dout, const a3_act *inp, void *workspace) {
  const float one = 1.0f, zero = 0.0f;
  const void *x = inp;
  if (e->padded_bytes) {
    if (!pad_input(be, e, workspace, inp)) return 0;
    x = workspace;
  }
  const bf16_copies c = bf16_parts(e, workspace);
  float *scratch = dweight_scratch(e, workspace);
  void *dw = bf16(e) ? (void *)c.dw : (void *)scratch;
  if (!DNN(be, cudnnSetConvolutionMathType(e->conv, e->filter_math)) ||
      !DNN(be, cudnnConvolutionBackwardFilter(backend_dnn(be)->handle, &one, e->x, x, e->y, dout,
                                              e->conv, e->bwd_filter, dnn_workspace(e, workspace),
                                              e->workspace, &zero, e->w, dw)))
    return 0;
  if (bf16(e)) return cu_widen_bf16(be, dweight, c.dw, w_count(e), 1.0f);
  const size_t n = w_count(e);
  add_kernel<<<cu_blocks(n, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(dweight, scratch, n);
  CU_LAUNCHED(be); // a failed launch is recorded
  return 1;        // (not the backend's error state: an earlier op's error must not skip dinp here)
}

// dinp = the data gradient (through the padded gradient, cropped, when the
// shape needs it).
static void backward_data(const a3_backend *be, const dnn_shape *e, a3_act *dinp,
                          const a3_act *dout, const float *weight, void *workspace) {
  const float one = 1.0f, zero = 0.0f;
  void *dx = e->padded_bytes ? workspace : (void *)dinp;
  const void *w = dnn_weight(be, e, weight, workspace);
  if (!w || !DNN(be, cudnnSetConvolutionMathType(e->conv, e->data_math)) ||
      !DNN(be, cudnnConvolutionBackwardData(backend_dnn(be)->handle, &one, e->w, w, e->y, dout,
                                            e->conv, e->bwd_data, dnn_workspace(e, workspace),
                                            e->workspace, &zero, e->x, dx)))
    return;
  if (e->padded_bytes) crop_gradient(be, e, dinp, dx);
}

// Only the directions cuDNN runs (cu_dnn_conv2d_runs): cuda_conv2d.cu passes
// NULL for a gradient the im2col path makes.
void cu_dnn_conv2d_backward(const a3_backend *be, const a3_conv2d_shape *s,
                            a3_act *dinp,        // (B, C, H, W) overwritten, or NULL
                            float *dweight,      // (OC, C, KH, KW) +=, or NULL
                            const a3_act *dout,  // (B, OC, OH, OW)
                            const a3_act *inp,   // (B, C, H, W)
                            const float *weight, // (OC, C, KH, KW)
                            void *workspace) {
  const dnn_shape *e = find_shape(be, s);
  // The padded input is dead once the filter gradient is queued: the data
  // gradient may reuse its place (same stream, in order).
  if (dweight && !backward_filter(be, e, dweight, dout, inp, workspace)) return;
  if (dinp) backward_data(be, e, dinp, dout, weight, workspace);
}
