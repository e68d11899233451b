// conv2d on the CPU: im2col + one sgemm per image.
//
// For image b the im2col matrix col (K, P), K = C*KH*KW, P = OH*OW, holds in
// row (c, kh, kw) the input pixels that kernel tap meets at each output
// position (zero where the tap falls in the padding). Then
//   forward:  out_b (OC, P)  = W (OC, K) @ col (K, P) + bias
//   backward: dW (OC, K)    += dout_b (OC, P) @ col^T
//             dcol (K, P)    = W^T @ dout_b, scattered back by col2im
// A 1x1 stride-1 unpadded conv needs no im2col: col is the image itself.
#include "cpu_ops.h"

#include <cblas.h>
#include <string.h>

a3_status a3_conv2d_check(const a3_conv2d_shape *s) {
  int ok = s->B > 0 && s->C > 0 && s->H > 0 && s->W > 0 && s->OC > 0 && s->KH > 0 && s->KW > 0 &&
           s->stride > 0 && s->pad_top >= 0 && s->pad_bottom >= 0 && s->pad_left >= 0 &&
           s->pad_right >= 0 && s->H + s->pad_top + s->pad_bottom >= s->KH &&
           s->W + s->pad_left + s->pad_right >= s->KW;
  if (ok) return A3_OK;
  return A3_FAIL(A3_ERR_INTERNAL,
                 "bad conv2d shape: input (%d, %d, %d, %d), weight (%d, %d, %d, %d), stride %d, "
                 "pad (top %d, bottom %d, left %d, right %d)",
                 s->B, s->C, s->H, s->W, s->OC, s->C, s->KH, s->KW, s->stride, s->pad_top,
                 s->pad_bottom, s->pad_left, s->pad_right);
}

static int is_pointwise(const a3_conv2d_shape *s) {
  return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad_top == 0 && s->pad_bottom == 0 &&
         s->pad_left == 0 && s->pad_right == 0;
}

size_t cpu_conv2d_workspace_size(const a3_backend *be, const a3_conv2d_shape *s) {
  (void)be;
  if (is_pointwise(s)) return 0;
  size_t K = (size_t)s->C * s->KH * s->KW;
  size_t P = (size_t)a3_conv2d_out_h(s) * a3_conv2d_out_w(s);
  return K * P * sizeof(float);
}

// col (C*KH*KW, OH*OW) from one image (C, H, W).
static void im2col(float *col, const float *img, const a3_conv2d_shape *s, int OH, int OW) {
  for (int c = 0; c < s->C; c++) {
    for (int kh = 0; kh < s->KH; kh++) {
      for (int kw = 0; kw < s->KW; kw++) {
        float *row = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
          int ih = oh * s->stride - s->pad_top + kh;
          float *dst = row + (size_t)oh * OW;
          if (ih < 0 || ih >= s->H) {
            memset(dst, 0, (size_t)OW * sizeof(float));
            continue;
          }
          const float *src = img + ((size_t)c * s->H + ih) * s->W;
          for (int ow = 0; ow < OW; ow++) {
            int iw = ow * s->stride - s->pad_left + kw;
            dst[ow] = (iw >= 0 && iw < s->W) ? src[iw] : 0.0f;
          }
        }
      }
    }
  }
}

// img (C, H, W) += the scatter of col (C*KH*KW, OH*OW); the inverse of im2col's gather.
static void col2im(float *img, const float *col, const a3_conv2d_shape *s, int OH, int OW) {
  for (int c = 0; c < s->C; c++) {
    for (int kh = 0; kh < s->KH; kh++) {
      for (int kw = 0; kw < s->KW; kw++) {
        const float *row = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * OH * OW;
        for (int oh = 0; oh < OH; oh++) {
          int ih = oh * s->stride - s->pad_top + kh;
          if (ih < 0 || ih >= s->H) continue;
          float *dst = img + ((size_t)c * s->H + ih) * s->W;
          const float *src = row + (size_t)oh * OW;
          for (int ow = 0; ow < OW; ow++) {
            int iw = ow * s->stride - s->pad_left + kw;
            if (iw >= 0 && iw < s->W) dst[iw] += src[ow];
          }
        }
      }
    }
  }
}

void cpu_conv2d_forward(const a3_backend *be, const a3_conv2d_shape *s,
                        float *out,          // (B, OC, OH, OW)
                        const float *inp,    // (B, C, H, W)
                        const float *weight, // (OC, C, KH, KW)
                        const float *bias,   // (OC) or NULL
                        void *workspace) {
  (void)be;
  const int OH = a3_conv2d_out_h(s), OW = a3_conv2d_out_w(s);
  const int K = s->C * s->KH * s->KW, P = OH * OW;
  for (int b = 0; b < s->B; b++) {
    const float *img = inp + (size_t)b * s->C * s->H * s->W;
    float *out_b = out + (size_t)b * s->OC * P;
    const float *col = img;
    if (!is_pointwise(s)) {
      im2col(workspace, img, s, OH, OW);
      col = workspace;
    }
    // The bias is preloaded so the GEMM adds onto it (beta = 1).
    for (int oc = 0; oc < s->OC && bias; oc++)
      for (int p = 0; p < P; p++) out_b[(size_t)oc * P + p] = bias[oc];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, s->OC, P, K, 1.0f, weight, K, col, P,
                bias ? 1.0f : 0.0f, out_b, P);
  }
}

// dbias (OC) += the sums of dout_b (OC, P) over positions.
static void bias_grad(float *dbias, const float *dout_b, int OC, int P) {
  for (int oc = 0; oc < OC; oc++) {
    double sum = 0.0;
    for (int p = 0; p < P; p++) sum += dout_b[(size_t)oc * P + p];
    dbias[oc] += (float)sum;
  }
}

void cpu_conv2d_backward(const a3_backend *be, const a3_conv2d_shape *s,
                         float *dinp,         // (B, C, H, W) overwritten, or NULL
                         float *dweight,      // (OC, C, KH, KW) +=, or NULL
                         float *dbias,        // (OC) +=, or NULL
                         const float *dout,   // (B, OC, OH, OW)
                         const float *inp,    // (B, C, H, W)
                         const float *weight, // (OC, C, KH, KW)
                         void *workspace) {
  (void)be;
  const int OH = a3_conv2d_out_h(s), OW = a3_conv2d_out_w(s);
  const int K = s->C * s->KH * s->KW, P = OH * OW;
  const size_t img_size = (size_t)s->C * s->H * s->W;
  const int pointwise = is_pointwise(s);
  for (int b = 0; b < s->B; b++) {
    const float *dout_b = dout + (size_t)b * s->OC * P;
    if (dbias) bias_grad(dbias, dout_b, s->OC, P);
    if (dweight) {
      const float *col = inp + (size_t)b * img_size;
      if (!pointwise) {
        im2col(workspace, col, s, OH, OW);
        col = workspace;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, s->OC, K, P, 1.0f, dout_b, P, col, P,
                  1.0f, dweight, K);
    }
    if (dinp) {
      float *dimg = dinp + (size_t)b * img_size;
      // dcol goes straight into dinp for a pointwise conv, else through the workspace.
      float *dcol = pointwise ? dimg : workspace;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, P, s->OC, 1.0f, weight, K, dout_b, P,
                  0.0f, dcol, P);
      if (!pointwise) {
        memset(dimg, 0, img_size * sizeof(float));
        col2im(dimg, dcol, s, OH, OW);
      }
    }
  }
}
