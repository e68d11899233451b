// conv2d on CUDA: im2col + cuBLAS GEMMs, the batch in chunks of images.
//
// For a chunk of nb images, with K = C*KH*KW, P = OH*OW and L = nb*P, the
// workspace holds
//   col (K, L): row (c, kh, kw), column (b, oh, ow) is the input pixel that
//               kernel tap meets at that output position (zero in padding);
//   tmp (OC, L): the chunk's output or output gradient with the image index
//               moved next to the pixels, so that one GEMM covers the chunk.
// Then (row-major products; see cuda_linear.cu for the column-major calls)
//   forward:  tmp = W (OC, K) col;            out = permute(tmp) + bias
//   backward: tmp = permute(dout);            dW (OC, K) += tmp col^T
//             col = W^T tmp (the dcol);       dinp = col2im(col)
// col2im gathers (each input pixel sums the taps that read it, in (kh, kw)
// order): no atomics, and dinp is overwritten without a memset.
// With bf16 activations, col and the backward's tmp are bf16 (GEMM operands)
// while the forward's tmp and the dcol stay fp32, so that out (with its bias)
// and dinp (the sum of its taps) are rounded once; the workspace is sized for
// fp32 in every part.
//
// 1x1 stride-1 unpadded convolutions need no im2col in the forward and the
// input gradient: a strided-batched GEMM per image on NCHW itself
// (out_b (OC, P) = W (OC, C) inp_b (C, P)). Their dweight sums over every
// image and pixel, which no single GEMM on NCHW covers: cuDNN's filter
// gradient when it planned one, else the general path (whose im2col is then
// a plain permute, and whose one GEMM has K = B * P, ~131k for the cifar
// U-Net's 32x32 shortcuts: on an H200 in bf16 that took ~2 ms a call, a
// sixth of the step's convolution time).
//
// The chunk keeps the workspace at most CONV_WS_MAX bytes, but holds at
// least one image whatever its size.
//
// When cuDNN is there (cuda_conv2d_dnn.cu), the other convolutions go to it
// instead (same contract, no col), one direction at a time: the forward,
// the data gradient and the filter gradient each run on cuDNN when it
// planned that direction (a usable algorithm; fp32 exact: the forward only),
// on im2col + cuBLAS otherwise.
#include "cuda_internal.h"

#define CONV_WS_MAX ((size_t)256 << 20)

typedef struct {
  int OH, OW;
  int K;  // C * KH * KW
  int P;  // OH * OW
  int nb; // images per chunk
} conv_dims;

static conv_dims get_dims(const a3_conv2d_shape *s) {
  conv_dims d;
  d.OH = a3_conv2d_out_h(s);
  d.OW = a3_conv2d_out_w(s);
  d.K = s->C * s->KH * s->KW;
  d.P = d.OH * d.OW;
  const size_t per_image = ((size_t)d.K + s->OC) * d.P * sizeof(float); // see parts()
  size_t nb = per_image ? CONV_WS_MAX / per_image : (size_t)s->B;
  if (nb < 1) nb = 1;
  if (nb > (size_t)s->B) nb = (size_t)s->B;
  d.nb = (int)nb;
  return d;
}

// Whether cuDNN runs that direction of s. Of a pointwise convolution only
// the filter gradient: its forward and data gradient are batched GEMMs.
static int use_dnn(const a3_backend *be, const a3_conv2d_shape *s, cu_dnn_dir dir) {
  return (!cu_conv2d_is_pointwise(s) || dir == CU_DNN_FILTER) && cu_dnn_conv2d_runs(be, s, dir);
}

static size_t im2col_workspace_size(const a3_conv2d_shape *s) {
  const conv_dims d = get_dims(s);
  return ((size_t)d.K + s->OC) * d.P * d.nb * sizeof(float);
}

// The larger of what the directions on cuDNN need and what those on im2col
// do: one backward may run one gradient on each, one after the other over
// the same workspace (same stream, in order).
size_t cuda_conv2d_workspace_size(const a3_backend *be, const a3_conv2d_shape *s) {
  const int on_dnn =
      use_dnn(be, s, CU_DNN_FORWARD) + use_dnn(be, s, CU_DNN_DATA) + use_dnn(be, s, CU_DNN_FILTER);
  const size_t dnn = on_dnn ? cu_dnn_conv2d_workspace_size(be, s) : 0;
  // A pointwise conv's forward and data gradient need none (batched GEMMs).
  const int on_col =
      cu_conv2d_is_pointwise(s) ? !use_dnn(be, s, CU_DNN_FILTER) : on_dnn < CU_DNN_DIRECTIONS;
  const size_t col = on_col ? im2col_workspace_size(s) : 0;
  return dnn > col ? dnn : col;
}

// ---------------------------------------------------------------- kernels

#define GRID_STRIDE(i, n)                                                                          \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                          \
       i += (size_t)gridDim.x * blockDim.x)

// col (K, nb * P) from images (nb, C, H, W).
template <typename T>
__global__ static void im2col_kernel(T *col, const T *img, a3_conv2d_shape s, int OW, int P,
                                     int nb) {
  const size_t L = (size_t)nb * P, total = (size_t)s.C * s.KH * s.KW * L;
  GRID_STRIDE(i, total) {
    const int k = (int)(i / L);
    const size_t r = i % L;
    const int b = (int)(r / P), p = (int)(r % P);
    const int oh = p / OW, ow = p % OW;
    const int kw = k % s.KW, kh = (k / s.KW) % s.KH, c = k / (s.KW * s.KH);
    const int ih = oh * s.stride - s.pad_top + kh, iw = ow * s.stride - s.pad_left + kw;
    float v = 0.0f;
    if (ih >= 0 && ih < s.H && iw >= 0 && iw < s.W)
      v = cu_ld(img + (((size_t)b * s.C + c) * s.H + ih) * s.W + iw);
    cu_st(col + i, v); // exact: v is a T
  }
}

// images (nb, C, H, W) = the gather of dcol (K, nb * P): pixel (ih, iw) sums
// the taps (kh, kw) whose output position (oh, ow) is on the stride grid
// and inside the output.
template <typename T>
__global__ static void col2im_kernel(T *img, const float *col, a3_conv2d_shape s, int OH, int OW,
                                     int nb) {
  const int P = OH * OW;
  const size_t L = (size_t)nb * P, total = (size_t)nb * s.C * s.H * s.W;
  GRID_STRIDE(i, total) {
    const int iw = (int)(i % s.W), ih = (int)((i / s.W) % s.H);
    const int c = (int)((i / ((size_t)s.W * s.H)) % s.C);
    const int b = (int)(i / ((size_t)s.W * s.H * s.C));
    float sum = 0.0f;
    for (int kh = 0; kh < s.KH; kh++) {
      const int th = ih + s.pad_top - kh; // = oh * stride
      if (th < 0 || th % s.stride) continue;
      const int oh = th / s.stride;
      if (oh >= OH) continue;
      for (int kw = 0; kw < s.KW; kw++) {
        const int tw = iw + s.pad_left - kw;
        if (tw < 0 || tw % s.stride) continue;
        const int ow = tw / s.stride;
        if (ow >= OW) continue;
        const int k = (c * s.KH + kh) * s.KW + kw;
        sum += col[(size_t)k * L + (size_t)b * P + (size_t)oh * OW + ow];
      }
    }
    cu_st(img + i, sum);
  }
}

// out (nb, OC, P) = tmp (OC, nb, P) + bias (bias may be NULL).
template <typename T>
__global__ static void unpermute_kernel(T *out, const float *tmp, const float *bias, int OC, int P,
                                        int nb) {
  const size_t total = (size_t)nb * OC * P;
  GRID_STRIDE(i, total) {
    const int p = (int)(i % P), oc = (int)((i / P) % OC), b = (int)(i / ((size_t)P * OC));
    const float v = tmp[((size_t)oc * nb + b) * P + p];
    cu_st(out + i, bias ? v + bias[oc] : v);
  }
}

// tmp (OC, nb, P) = dout (nb, OC, P).
template <typename T>
__global__ static void permute_kernel(T *tmp, const T *dout, int OC, int P, int nb) {
  const size_t total = (size_t)nb * OC * P;
  GRID_STRIDE(i, total) {
    const int p = (int)(i % P), b = (int)((i / P) % nb), oc = (int)(i / ((size_t)P * nb));
    tmp[i] = dout[((size_t)b * OC + oc) * P + p];
  }
}

// out (B, OC, P) = bias[oc] (the pointwise GEMM or cuDNN adds onto it, beta
// = 1; in bf16 the bias is rounded first, as autocast casts it to bf16).
template <typename T>
__global__ static void bias_planes_kernel(T *out, const float *bias, int OC, int P, size_t total) {
  GRID_STRIDE(i, total) cu_st(out + i, bias[(i / P) % OC]);
}

#define LAUNCH(be, n, kernel, ...)                                                                 \
  (kernel<<<cu_blocks((n), CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(__VA_ARGS__),              \
   CU_LAUNCHED(be))

static int bias_planes(const a3_backend *be, a3_act *out, const float *bias, int OC, int P,
                       size_t total) {
  CU_ACT_DISPATCH(
      be, { return LAUNCH(be, total, bias_planes_kernel<T>, cu_t<T>(out), bias, OC, P, total); });
  return 0;
}

// ---------------------------------------------------------------- GEMMs (row-major in words)

// tmp (OC, L) = W (OC, K) col (K, L).
template <typename T>
static int gemm_forward(const a3_backend *be, float *tmp, const float *weight, const T *col, int OC,
                        int K, int L) {
  return CU_BLAS(be, cu_gemm(be, CUBLAS_OP_N, CUBLAS_OP_N, L, OC, K, 1.0f, cu_in(col, L),
                             cu_in(weight, K), 0.0f, cu_out(tmp, L)));
}

// dW (OC, K) += tmp (OC, L) col^T (L, K).
template <typename T>
static int gemm_dweight(const a3_backend *be, float *dweight, const T *tmp, const T *col, int OC,
                        int K, int L) {
  return CU_BLAS(be, cu_gemm(be, CUBLAS_OP_T, CUBLAS_OP_N, K, OC, L, 1.0f, cu_in(col, L),
                             cu_in(tmp, L), 1.0f, cu_out(dweight, K)));
}

// dcol (K, L) = W^T (K, OC) tmp (OC, L).
template <typename T>
static int gemm_dcol(const a3_backend *be, float *dcol, const float *weight, const T *tmp, int OC,
                     int K, int L) {
  return CU_BLAS(be, cu_gemm(be, CUBLAS_OP_N, CUBLAS_OP_T, L, K, OC, 1.0f, cu_in(tmp, L),
                             cu_in(weight, K), 0.0f, cu_out(dcol, L)));
}

// ---------------------------------------------------------------- the workspace

// [col (K, nb * P): T, or the dcol in fp32][tmp (OC, nb * P): fp32 in the
// forward, T in the backward].
typedef struct {
  void *col, *tmp;
} im2col_parts;

static im2col_parts parts(const conv_dims *d, void *workspace) {
  im2col_parts w;
  w.col = workspace;
  w.tmp = (char *)workspace + (size_t)d->K * d->P * d->nb * sizeof(float);
  return w;
}

// ---------------------------------------------------------------- forward

// 1x1: out_b (OC, P) = W (OC, C) inp_b (C, P) for every image, one batched call.
static void pointwise_forward(const a3_backend *be, const a3_conv2d_shape *s, a3_act *out,
                              const a3_act *inp, const float *weight, const float *bias, int P) {
  const size_t total = (size_t)s->B * s->OC * P;
  if (bias && !bias_planes(be, out, bias, s->OC, P, total)) return;
  CU_BLAS(be, cu_gemm_batched(be, CUBLAS_OP_N, CUBLAS_OP_N, P, s->OC, s->C, 1.0f,
                              cu_in(inp, P, (long long)s->C * P), cu_in(weight, s->C, 0),
                              bias ? 1.0f : 0.0f, cu_out(out, P, (long long)s->OC * P), s->B));
}

template <typename T>
static void im2col_forward(const a3_backend *be, const a3_conv2d_shape *s, const conv_dims *d,
                           T *out,              // (B, OC, OH, OW)
                           const T *inp,        // (B, C, H, W)
                           const float *weight, // (OC, C, KH, KW)
                           const float *bias,   // (OC) or NULL
                           void *workspace) {
  const im2col_parts w = parts(d, workspace);
  T *col = (T *)w.col;
  float *tmp = (float *)w.tmp; // fp32: the bias is added before the one rounding
  const size_t img_size = (size_t)s->C * s->H * s->W, out_size = (size_t)s->OC * d->P;
  for (int b0 = 0; b0 < s->B; b0 += d->nb) {
    const int nb = s->B - b0 < d->nb ? s->B - b0 : d->nb, L = nb * d->P;
    const size_t ncol = (size_t)d->K * L, nout = (size_t)s->OC * L;
    if (!LAUNCH(be, ncol, im2col_kernel<T>, col, inp + b0 * img_size, *s, d->OW, d->P, nb)) return;
    if (!gemm_forward(be, tmp, weight, col, s->OC, d->K, L)) return;
    if (!LAUNCH(be, nout, unpermute_kernel<T>, out + b0 * out_size, tmp, bias, s->OC, d->P, nb))
      return;
  }
}

void cuda_conv2d_forward(const a3_backend *be, const a3_conv2d_shape *s,
                         a3_act *out,         // (B, OC, OH, OW)
                         const a3_act *inp,   // (B, C, H, W)
                         const float *weight, // (OC, C, KH, KW)
                         const float *bias,   // (OC) or NULL
                         void *workspace) {
  const conv_dims d = get_dims(s);
  if (cu_conv2d_is_pointwise(s)) {
    pointwise_forward(be, s, out, inp, weight, bias, d.P);
    return;
  }
  if (use_dnn(be, s, CU_DNN_FORWARD)) { // out = bias, then out += conv
    const size_t total = (size_t)s->B * s->OC * d.P;
    if (bias && !bias_planes(be, out, bias, s->OC, d.P, total)) return;
    cu_dnn_conv2d_forward(be, s, out, inp, weight, bias ? 1.0f : 0.0f, workspace);
    return;
  }
  CU_ACT_DISPATCH(
      be, { im2col_forward<T>(be, s, &d, cu_t<T>(out), cu_t<T>(inp), weight, bias, workspace); });
}

// ---------------------------------------------------------------- backward

// 1x1: dinp_b (C, P) = W^T (C, OC) dout_b (OC, P) for every image.
static void pointwise_dinp(const a3_backend *be, const a3_conv2d_shape *s, a3_act *dinp,
                           const a3_act *dout, const float *weight, int P) {
  CU_BLAS(be, cu_gemm_batched(be, CUBLAS_OP_N, CUBLAS_OP_T, P, s->C, s->OC, 1.0f,
                              cu_in(dout, P, (long long)s->OC * P), cu_in(weight, s->C, 0), 0.0f,
                              cu_out(dinp, P, (long long)s->C * P), s->B));
}

// The im2col + cuBLAS backward: dweight +=, dinp overwritten (either NULL).
template <typename T>
static void im2col_backward(const a3_backend *be, const a3_conv2d_shape *s, const conv_dims *d,
                            T *dinp,             // (B, C, H, W) or NULL
                            float *dweight,      // (OC, C, KH, KW) or NULL
                            const T *dout,       // (B, OC, OH, OW)
                            const T *inp,        // (B, C, H, W)
                            const float *weight, // (OC, C, KH, KW)
                            void *workspace) {
  const im2col_parts w = parts(d, workspace);
  T *col = (T *)w.col, *tmp = (T *)w.tmp;
  float *dcol = (float *)w.col; // fp32: col2im's sums round once
  const size_t img_size = (size_t)s->C * s->H * s->W, out_size = (size_t)s->OC * d->P;
  for (int b0 = 0; b0 < s->B; b0 += d->nb) {
    const int nb = s->B - b0 < d->nb ? s->B - b0 : d->nb, L = nb * d->P;
    const size_t ncol = (size_t)d->K * L, nout = (size_t)s->OC * L;
    if (!LAUNCH(be, nout, permute_kernel<T>, tmp, dout + b0 * out_size, s->OC, d->P, nb)) return;
    if (dweight) {
      if (!LAUNCH(be, ncol, im2col_kernel<T>, col, inp + b0 * img_size, *s, d->OW, d->P, nb))
        return;
      if (!gemm_dweight(be, dweight, tmp, col, s->OC, d->K, L)) return;
    }
    if (dinp) { // col is free again: the dweight GEMM is queued before on the same stream
      if (!gemm_dcol(be, dcol, weight, tmp, s->OC, d->K, L)) return;
      const size_t nimg = (size_t)nb * img_size;
      if (!LAUNCH(be, nimg, col2im_kernel<T>, dinp + b0 * img_size, dcol, *s, d->OH, d->OW, nb))
        return;
    }
  }
}

void cuda_conv2d_backward(const a3_backend *be, const a3_conv2d_shape *s,
                          a3_act *dinp,        // (B, C, H, W) overwritten, or NULL
                          float *dweight,      // (OC, C, KH, KW) +=, or NULL
                          float *dbias,        // (OC) +=, or NULL
                          const a3_act *dout,  // (B, OC, OH, OW)
                          const a3_act *inp,   // (B, C, H, W), read only when dweight
                          const float *weight, // (OC, C, KH, KW), read only when dinp
                          void *workspace) {
  const conv_dims d = get_dims(s);
  const size_t out_size = (size_t)s->OC * d.P;
  // dbias is a plain reduction over (b, p), the same whichever other gradients are asked for.
  if (dbias) cu_plane_sums(be, dbias, dout, s->OC, s->B, out_size, d.P, 1);
  const int pointwise = cu_conv2d_is_pointwise(s);
  if (pointwise && dinp) pointwise_dinp(be, s, dinp, dout, weight, d.P);
  a3_act *conv_dinp = pointwise ? NULL : dinp;
  // Each gradient on exactly one engine, so dinp is written once and dweight
  // added to once; the im2col calls reuse the workspace after cuDNN's.
  a3_act *dnn_dinp = conv_dinp && use_dnn(be, s, CU_DNN_DATA) ? conv_dinp : NULL;
  float *dnn_dweight = dweight && use_dnn(be, s, CU_DNN_FILTER) ? dweight : NULL;
  if (dnn_dinp || dnn_dweight)
    cu_dnn_conv2d_backward(be, s, dnn_dinp, dnn_dweight, dout, inp, weight, workspace);
  a3_act *col_dinp = dnn_dinp ? NULL : conv_dinp;
  float *col_dweight = dnn_dweight ? NULL : dweight;
  if (col_dinp || col_dweight)
    CU_ACT_DISPATCH(be, {
      im2col_backward<T>(be, s, &d, cu_t<T>(col_dinp), col_dweight, cu_t<T>(dout), cu_t<T>(inp),
                         weight, workspace);
    });
}

#ifdef A3FTA_NO_CUDNN
extern "C" const char *a3_backend_cuda_conv_engine(const a3_backend *be) {
  return a3_backend_is_cuda(be) ? "im2col + cuBLAS (built without cudnn.h)" : "none";
}
#endif
