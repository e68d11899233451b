// Scaled-dot-product attention on the CPU, one (b, head) at a time.
//
// Head h of q, k, v, out is the column block [h*d, (h+1)*d) of a (T, C)
// matrix: sgemm reads it in place with leading dimension C, so heads are
// never copied out or merged back.
//   forward:  S = Q K^T / sqrt(d) (T, T); P = softmax(S) by rows; O = P V
//   backward: dP = dO V^T; dV = P^T dO; dS = P * (dP - rowsum(dP * P));
//             dQ = dS K / sqrt(d); dK = dS^T Q / sqrt(d)
// The softmax subtracts the row maximum (exp never overflows) and sums in double.
#include "cpu_ops.h"

#include <cblas.h>
#include <math.h>

size_t cpu_attention_workspace_size(const a3_backend *be, int B, int T, int C, int NH) {
  (void)be, (void)B, (void)C, (void)NH;
  return (size_t)T * T * sizeof(float); // one (T, T) block: dP, or S without probs
}

// Each row of s (T, T) becomes its softmax.
static void softmax_rows(float *s, int T) {
  for (int i = 0; i < T; i++) {
    float *row = s + (size_t)i * T;
    float max = row[0];
    for (int j = 1; j < T; j++) max = row[j] > max ? row[j] : max;
    double sum = 0.0;
    for (int j = 0; j < T; j++) {
      row[j] = expf(row[j] - max);
      sum += row[j];
    }
    const float inv = (float)(1.0 / sum);
    for (int j = 0; j < T; j++) row[j] *= inv;
  }
}

void cpu_attention_forward(const a3_backend *be,
                           float *out,     // (B, T, C)
                           float *probs,   // (B, NH, T, T) or NULL
                           const float *q, // (B, T, C)
                           const float *k, // (B, T, C)
                           const float *v, // (B, T, C)
                           int B, int T, int C, int NH, void *workspace) {
  (void)be;
  const int d = C / NH;
  const float scale = 1.0f / sqrtf((float)d);
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const size_t off = (size_t)b * T * C + (size_t)h * d;
      float *p = probs ? probs + ((size_t)b * NH + h) * T * T : workspace;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, d, scale, q + off, C, k + off, C,
                  0.0f, p, T);
      softmax_rows(p, T);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, d, T, 1.0f, p, T, v + off, C, 0.0f,
                  out + off, C);
    }
  }
}

// dP (T, T) becomes dS = P * (dP - rowsum(dP * P)): the softmax backward.
static void softmax_backward_rows(float *dp, const float *p, int T) {
  for (int i = 0; i < T; i++) {
    float *dr = dp + (size_t)i * T;
    const float *pr = p + (size_t)i * T;
    double dot = 0.0;
    for (int j = 0; j < T; j++) dot += (double)dr[j] * pr[j];
    for (int j = 0; j < T; j++) dr[j] = pr[j] * (dr[j] - (float)dot);
  }
}

void cpu_attention_backward(const a3_backend *be,
                            float *dq,          // (B, T, C) or NULL
                            float *dk,          // (B, T, C) or NULL
                            float *dv,          // (B, T, C) or NULL
                            const float *dout,  // (B, T, C)
                            const float *q,     // (B, T, C)
                            const float *k,     // (B, T, C)
                            const float *v,     // (B, T, C)
                            const float *probs, // (B, NH, T, T)
                            int B, int T, int C, int NH, void *workspace) {
  (void)be;
  const int d = C / NH;
  const float scale = 1.0f / sqrtf((float)d);
  float *ds = workspace;
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < NH; h++) {
      const size_t off = (size_t)b * T * C + (size_t)h * d;
      const float *p = probs + ((size_t)b * NH + h) * T * T;
      if (dv)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, d, T, 1.0f, p, T, dout + off, C,
                    0.0f, dv + off, C);
      if (!dq && !dk) continue;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, d, 1.0f, dout + off, C, v + off, C,
                  0.0f, ds, T);
      softmax_backward_rows(ds, p, T);
      if (dq)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, d, T, scale, ds, T, k + off, C,
                    0.0f, dq + off, C);
      if (dk)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, d, T, scale, ds, T, q + off, C,
                    0.0f, dk + off, C);
    }
  }
}
