// The CUDA emulator's cuDNN (tests/cuda_emu/README.md), built as its own
// libcudnn.so.9 so that cuda_conv2d_dnn.cu loads it with dlopen as it loads
// the real one. Cross-correlation on NCHW tensors of fp32 or bf16, through
// im2col and OpenBLAS; TF32 math rounds fp32 operands to 10-bit mantissas.
//
// Each direction's heuristic offers two deterministic algorithms: first
// algorithm 1, whose workspace holds one image's im2col matrix, then
// algorithm 0, which needs none. Algorithm 1 writes its whole workspace on
// every call: a workspace smaller than asked for, or shared with live data,
// shows as wrong results (or an ASan report), as a GPU's would be corrupted.
// Calls check the descriptors' shapes and types and the workspace's size,
// and answer CUDNN_STATUS_BAD_PARAM where cuDNN would; a checked call runs
// on the handle's stream (emu_streams.cpp).
#include "cudnn.h"

#include "cuda_bf16.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include <vector>

struct emu_dnn_handle {
  cudaStream_t stream;
};
struct emu_dnn_tensor {
  bool set;
  cudnnDataType_t type;
  int n, c, h, w; // a filter: k, c, r, s
};
struct emu_dnn_conv {
  bool set;
  int pad_h, pad_w, u, v, dil_h, dil_w;
  cudnnConvolutionMode_t mode;
  cudnnMathType_t math;
};

namespace {

enum { ALGO_NO_WORKSPACE = 0, ALGO_WORKSPACE = 1 };

// The convolution x (N, C, H, W) * w (K, C, R, S) -> y (N, K, P, Q).
struct geometry {
  int N, C, H, W, K, R, S, P, Q;
  int pad_h, pad_w, u, v;
  cudnnDataType_t type;
  bool tf32;
};

bool make_geometry(const emu_dnn_tensor *x, const emu_dnn_tensor *w, const emu_dnn_conv *cv,
                   const emu_dnn_tensor *y, geometry *g) {
  if (!x || !w || !cv || !y || !x->set || !w->set || !cv->set || !y->set) return false;
  if (x->type != w->type || x->type != y->type) return false;
  if (cv->mode != CUDNN_CROSS_CORRELATION || cv->dil_h != 1 || cv->dil_w != 1) return false;
  *g = geometry{x->n, x->c,      x->h,      x->w,  w->n,  w->h,    w->w, 0,
                0,    cv->pad_h, cv->pad_w, cv->u, cv->v, x->type, false};
  g->P = (g->H + 2 * g->pad_h - g->R) / g->u + 1;
  g->Q = (g->W + 2 * g->pad_w - g->S) / g->v + 1;
  g->tf32 = x->type == CUDNN_DATA_FLOAT && cv->math != CUDNN_FMA_MATH;
  return w->c == x->c && y->n == x->n && y->c == w->n && y->h == g->P && y->w == g->Q &&
         g->P >= 1 && g->Q >= 1;
}

size_t col_floats(const geometry &g) { return (size_t)g.C * g.R * g.S * g.P * g.Q; }
size_t workspace_for(int algo, const geometry &g) {
  return algo == ALGO_WORKSPACE ? col_floats(g) * sizeof(float) : 0;
}

// A tensor's n values as floats, rounded as the math type rounds operands.
std::vector<float> load(const void *p, size_t n, const geometry &g) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; i++) {
    float f = g.type == CUDNN_DATA_BFLOAT16 ? __bfloat162float(((const __nv_bfloat16 *)p)[i])
                                            : ((const float *)p)[i];
    v[i] = g.tf32 ? emu_round_tf32(f) : f;
  }
  return v;
}

// out = alpha * r + beta * out (out not read when beta is 0), in out's type.
void store(void *out, const std::vector<float> &r, const geometry &g, float alpha, float beta) {
  for (size_t i = 0; i < r.size(); i++) {
    float prev = 0.0f;
    if (beta != 0.0f)
      prev = g.type == CUDNN_DATA_BFLOAT16 ? __bfloat162float(((__nv_bfloat16 *)out)[i])
                                           : ((float *)out)[i];
    const float v = beta != 0.0f ? alpha * r[i] + beta * prev : alpha * r[i];
    if (g.type == CUDNN_DATA_BFLOAT16)
      ((__nv_bfloat16 *)out)[i] = __float2bfloat16_rn(v);
    else
      ((float *)out)[i] = v;
  }
}

// col (C*R*S, P*Q) of image x (C, H, W).
void im2col(float *col, const float *x, const geometry &g) {
  size_t i = 0;
  for (int c = 0; c < g.C; c++)
    for (int r = 0; r < g.R; r++)
      for (int s = 0; s < g.S; s++)
        for (int p = 0; p < g.P; p++)
          for (int q = 0; q < g.Q; q++, i++) {
            const int h = p * g.u - g.pad_h + r, w = q * g.v - g.pad_w + s;
            col[i] =
                h >= 0 && h < g.H && w >= 0 && w < g.W ? x[((size_t)c * g.H + h) * g.W + w] : 0.0f;
          }
}

// dx (C, H, W) += the scatter of col (C*R*S, P*Q).
void col2im(float *dx, const float *col, const geometry &g) {
  size_t i = 0;
  for (int c = 0; c < g.C; c++)
    for (int r = 0; r < g.R; r++)
      for (int s = 0; s < g.S; s++)
        for (int p = 0; p < g.P; p++)
          for (int q = 0; q < g.Q; q++, i++) {
            const int h = p * g.u - g.pad_h + r, w = q * g.v - g.pad_w + s;
            if (h >= 0 && h < g.H && w >= 0 && w < g.W)
              dx[((size_t)c * g.H + h) * g.W + w] += col[i];
          }
}

// A convolution call, checked when called: its geometry and algorithm, and
// for algorithm 1 its workspace (of the size asked for).
struct conv_call {
  geometry g;
  int algo;
  float *ws;
};

cudnnStatus_t start(conv_call *c, cudnnHandle_t h, const emu_dnn_tensor *x, const emu_dnn_tensor *w,
                    const emu_dnn_conv *cv, const emu_dnn_tensor *y, int algo, void *ws,
                    size_t ws_bytes) {
  if (!h || !make_geometry(x, w, cv, y, &c->g)) return CUDNN_STATUS_BAD_PARAM;
  if (algo != ALGO_WORKSPACE && algo != ALGO_NO_WORKSPACE) return CUDNN_STATUS_BAD_PARAM;
  if (algo == ALGO_WORKSPACE && (!ws || ws_bytes < workspace_for(algo, c->g)))
    return CUDNN_STATUS_BAD_PARAM;
  c->algo = algo;
  c->ws = (float *)ws;
  return CUDNN_STATUS_SUCCESS;
}

// The col buffer, when the call runs: algorithm 1's workspace, spoilt before
// the operands are read (so that a workspace over live data shows), or for
// algorithm 0 the heap.
float *col_buffer(const conv_call &c, std::vector<float> &heap) {
  if (c.algo == ALGO_WORKSPACE) {
    memset(c.ws, 0xff, workspace_for(c.algo, c.g));
    return c.ws;
  }
  heap.resize(col_floats(c.g));
  return heap.data();
}

// A convolution's three tensors and its workspace are device memory: a
// host pointer faults on a GPU, and fails the call here.
bool on_device(const void *a, const void *b, const void *c, const void *ws) {
  if (emu_is_device_pointer(a) && emu_is_device_pointer(b) && emu_is_device_pointer(c) &&
      emu_is_device_pointer(ws))
    return true;
  fprintf(stderr,
          "cuda emulator: a convolution's tensors or workspace (%p, %p, %p, %p) are not "
          "device memory\n",
          a, b, c, ws);
  return false;
}

size_t x_count(const geometry &g) { return (size_t)g.N * g.C * g.H * g.W; }
size_t w_count(const geometry &g) { return (size_t)g.K * g.C * g.R * g.S; }
size_t y_count(const geometry &g) { return (size_t)g.N * g.K * g.P * g.Q; }

// A convolution call's arguments: x (N, C, H, W) * w (K, C, R, S) -> y
// (N, K, P, Q) in the descriptors; the two tensors it reads, the one it
// writes (out = alpha * result + beta * out).
struct conv_args {
  cudnnHandle_t h;
  const emu_dnn_tensor *x, *w;
  const emu_dnn_conv *cv;
  const emu_dnn_tensor *y;
  int algo;
  void *ws;
  size_t ws_bytes;
  const void *in0, *in1;
  void *out;
  const void *alpha, *beta;
};

// Checks the call now (geometry, algorithm, workspace, device pointers) and
// queues it on the handle's stream: body(geometry, col) gives the result.
template <typename Body> cudnnStatus_t queue_conv(const conv_args &a, Body body) {
  conv_call c;
  const cudnnStatus_t st = start(&c, a.h, a.x, a.w, a.cv, a.y, a.algo, a.ws, a.ws_bytes);
  if (st != CUDNN_STATUS_SUCCESS) return st;
  if (!on_device(a.in0, a.in1, a.out, a.ws)) return CUDNN_STATUS_EXECUTION_FAILED;
  const float alpha = *(const float *)a.alpha, beta = *(const float *)a.beta;
  void *out = a.out;
  emu_enqueue(a.h->stream, [c, out, alpha, beta, body] {
    std::vector<float> heap;
    float *col = col_buffer(c, heap);
    store(out, body(c.g, col), c.g, alpha, beta);
  });
  return CUDNN_STATUS_SUCCESS;
}

template <typename Perf>
cudnnStatus_t heuristic(const geometry *g, bool valid, const emu_dnn_conv *cv, int asked,
                        int *returned, Perf *perf) {
  if (!valid || asked < 1 || !returned || !perf) return CUDNN_STATUS_BAD_PARAM;
  const int algos[2] = {ALGO_WORKSPACE, ALGO_NO_WORKSPACE};
  *returned = asked < 2 ? asked : 2;
  for (int i = 0; i < *returned; i++) {
    perf[i] = Perf{};
    perf[i].algo = algos[i];
    perf[i].status = CUDNN_STATUS_SUCCESS;
    perf[i].time = (float)(i + 1);
    perf[i].memory = workspace_for(algos[i], *g);
    perf[i].determinism = CUDNN_DETERMINISTIC;
    perf[i].mathType = cv->math;
  }
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t size_of(const geometry &g, bool valid, int algo, size_t *bytes) {
  if (!valid || !bytes || (algo != ALGO_WORKSPACE && algo != ALGO_NO_WORKSPACE))
    return CUDNN_STATUS_BAD_PARAM;
  *bytes = workspace_for(algo, g);
  return CUDNN_STATUS_SUCCESS;
}

} // namespace

extern "C" {

size_t cudnnGetVersion(void) { return CUDNN_MAJOR * 10000 + CUDNN_MINOR * 100 + CUDNN_PATCHLEVEL; }

const char *cudnnGetErrorString(cudnnStatus_t s) {
  switch (s) {
  case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
  case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
  case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM (emulated cuDNN)";
  case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
  case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
  case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
  }
  return "CUDNN_STATUS_UNKNOWN";
}

cudnnStatus_t cudnnCreate(cudnnHandle_t *h) {
  *h = new emu_dnn_handle{};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroy(cudnnHandle_t h) {
  delete h;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetStream(cudnnHandle_t h, cudaStream_t s) {
  if (!h) return CUDNN_STATUS_BAD_PARAM;
  h->stream = s;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t *d) {
  *d = new emu_dnn_tensor{};
  return CUDNN_STATUS_SUCCESS;
}
static cudnnStatus_t set_4d(emu_dnn_tensor *d, cudnnTensorFormat_t f, cudnnDataType_t t, int n,
                            int c, int h, int w) {
  if (!d || f != CUDNN_TENSOR_NCHW || n < 1 || c < 1 || h < 1 || w < 1 ||
      (t != CUDNN_DATA_FLOAT && t != CUDNN_DATA_BFLOAT16))
    return CUDNN_STATUS_BAD_PARAM;
  *d = emu_dnn_tensor{true, t, n, c, h, w};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t d, cudnnTensorFormat_t format,
                                         cudnnDataType_t type, int n, int c, int h, int w) {
  return set_4d(d, format, type, n, c, h, w);
}
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t *d) {
  return cudnnCreateTensorDescriptor(d);
}
cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t d, cudnnDataType_t type,
                                         cudnnTensorFormat_t format, int k, int c, int h, int w) {
  return set_4d(d, format, type, k, c, h, w);
}
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t d) {
  return cudnnDestroyTensorDescriptor(d);
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t *d) {
  *d = new emu_dnn_conv{};
  (*d)->math = CUDNN_DEFAULT_MATH;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w,
                                              int u, int v, int dilation_h, int dilation_w,
                                              cudnnConvolutionMode_t mode,
                                              cudnnDataType_t compute) {
  if (!d || pad_h < 0 || pad_w < 0 || u < 1 || v < 1 || dilation_h < 1 || dilation_w < 1 ||
      compute != CUDNN_DATA_FLOAT)
    return CUDNN_STATUS_BAD_PARAM;
  const cudnnMathType_t math = d->math;
  *d = emu_dnn_conv{true, pad_h, pad_w, u, v, dilation_h, dilation_w, mode, math};
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t m) {
  if (!d) return CUDNN_STATUS_BAD_PARAM;
  d->math = m;
  return CUDNN_STATUS_SUCCESS;
}
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t d) {
  delete d;
  return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t, const cudnnTensorDescriptor_t x,
                                                     const cudnnFilterDescriptor_t w,
                                                     const cudnnConvolutionDescriptor_t conv,
                                                     const cudnnTensorDescriptor_t y,
                                                     const int asked, int *returned,
                                                     cudnnConvolutionFwdAlgoPerf_t *perf) {
  geometry g;
  const bool valid = make_geometry(x, w, conv, y, &g);
  return heuristic(&g, valid, conv, asked, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(
    cudnnHandle_t, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx, const int asked,
    int *returned, cudnnConvolutionBwdDataAlgoPerf_t *perf) {
  geometry g;
  const bool valid = make_geometry(dx, w, conv, dy, &g);
  return heuristic(&g, valid, conv, asked, returned, perf);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(
    cudnnHandle_t, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t dw, const int asked,
    int *returned, cudnnConvolutionBwdFilterAlgoPerf_t *perf) {
  geometry g;
  const bool valid = make_geometry(x, dw, conv, dy, &g);
  return heuristic(&g, valid, conv, asked, returned, perf);
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(
    cudnnHandle_t, const cudnnTensorDescriptor_t x, const cudnnFilterDescriptor_t w,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t y,
    cudnnConvolutionFwdAlgo_t algo, size_t *bytes) {
  geometry g;
  const bool valid = make_geometry(x, w, conv, y, &g);
  return size_of(g, valid, algo, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(
    cudnnHandle_t, const cudnnFilterDescriptor_t w, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnTensorDescriptor_t dx,
    cudnnConvolutionBwdDataAlgo_t algo, size_t *bytes) {
  geometry g;
  const bool valid = make_geometry(dx, w, conv, dy, &g);
  return size_of(g, valid, algo, bytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(
    cudnnHandle_t, const cudnnTensorDescriptor_t x, const cudnnTensorDescriptor_t dy,
    const cudnnConvolutionDescriptor_t conv, const cudnnFilterDescriptor_t dw,
    cudnnConvolutionBwdFilterAlgo_t algo, size_t *bytes) {
  geometry g;
  const bool valid = make_geometry(x, dw, conv, dy, &g);
  return size_of(g, valid, algo, bytes);
}

// y (K, P*Q) = w (K, C*R*S) col (C*R*S, P*Q), image by image.
cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t h, const void *alpha,
                                      const cudnnTensorDescriptor_t xd, const void *x,
                                      const cudnnFilterDescriptor_t wd, const void *w,
                                      const cudnnConvolutionDescriptor_t conv,
                                      cudnnConvolutionFwdAlgo_t algo, void *ws, size_t ws_bytes,
                                      const void *beta, const cudnnTensorDescriptor_t yd, void *y) {
  const conv_args args{h, xd, wd, conv, yd, algo, ws, ws_bytes, x, w, y, alpha, beta};
  return queue_conv(args, [x, w](const geometry &g, float *col) {
    const std::vector<float> xv = load(x, x_count(g), g), wv = load(w, w_count(g), g);
    std::vector<float> out(y_count(g));
    const int K = g.K, CRS = g.C * g.R * g.S, PQ = g.P * g.Q;
    for (int n = 0; n < g.N; n++) {
      im2col(col, xv.data() + (size_t)n * g.C * g.H * g.W, g);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, K, PQ, CRS, 1.0f, wv.data(), CRS, col,
                  PQ, 0.0f, out.data() + (size_t)n * K * PQ, PQ);
    }
    return out;
  });
}

// col (C*R*S, P*Q) = w^T dy, scattered into dx, image by image.
cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t h, const void *alpha,
                                           const cudnnFilterDescriptor_t wd, const void *w,
                                           const cudnnTensorDescriptor_t dyd, const void *dy,
                                           const cudnnConvolutionDescriptor_t conv,
                                           cudnnConvolutionBwdDataAlgo_t algo, void *ws,
                                           size_t ws_bytes, const void *beta,
                                           const cudnnTensorDescriptor_t dxd, void *dx) {
  const conv_args args{h, dxd, wd, conv, dyd, algo, ws, ws_bytes, w, dy, dx, alpha, beta};
  return queue_conv(args, [w, dy](const geometry &g, float *col) {
    const std::vector<float> dyv = load(dy, y_count(g), g), wv = load(w, w_count(g), g);
    std::vector<float> out(x_count(g), 0.0f);
    const int K = g.K, CRS = g.C * g.R * g.S, PQ = g.P * g.Q;
    for (int n = 0; n < g.N; n++) {
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, CRS, PQ, K, 1.0f, wv.data(), CRS,
                  dyv.data() + (size_t)n * K * PQ, PQ, 0.0f, col, PQ);
      col2im(out.data() + (size_t)n * g.C * g.H * g.W, col, g);
    }
    return out;
  });
}

// dw (K, C*R*S) = sum over images of dy (K, P*Q) col^T.
cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t h, const void *alpha,
                                             const cudnnTensorDescriptor_t xd, const void *x,
                                             const cudnnTensorDescriptor_t dyd, const void *dy,
                                             const cudnnConvolutionDescriptor_t conv,
                                             cudnnConvolutionBwdFilterAlgo_t algo, void *ws,
                                             size_t ws_bytes, const void *beta,
                                             const cudnnFilterDescriptor_t dwd, void *dw) {
  const conv_args args{h, xd, dwd, conv, dyd, algo, ws, ws_bytes, x, dy, dw, alpha, beta};
  return queue_conv(args, [x, dy](const geometry &g, float *col) {
    const std::vector<float> xv = load(x, x_count(g), g), dyv = load(dy, y_count(g), g);
    std::vector<float> out(w_count(g), 0.0f);
    const int K = g.K, CRS = g.C * g.R * g.S, PQ = g.P * g.Q;
    for (int n = 0; n < g.N; n++) {
      im2col(col, xv.data() + (size_t)n * g.C * g.H * g.W, g);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, K, CRS, PQ, 1.0f,
                  dyv.data() + (size_t)n * K * PQ, PQ, col, PQ, 1.0f, out.data(), CRS);
    }
    return out;
  });
}

} // extern "C"
