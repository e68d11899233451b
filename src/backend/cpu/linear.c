// linear y = x W^T + b on the CPU: one sgemm each way, W in PyTorch's (OUT, IN) layout.
#include "cpu_ops.h"

#include <cblas.h>

void cpu_linear_forward(const a3_backend *be,
                        float *out,          // (N, OUT)
                        const float *inp,    // (N, IN)
                        const float *weight, // (OUT, IN)
                        const float *bias,   // (OUT) or NULL
                        int N, int IN, int OUT) {
  (void)be;
  // The bias is preloaded so the GEMM adds onto it (beta = 1).
  for (int n = 0; n < N && bias; n++)
    for (int o = 0; o < OUT; o++) out[(size_t)n * OUT + o] = bias[o];
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, OUT, IN, 1.0f, inp, IN, weight, IN,
              bias ? 1.0f : 0.0f, out, OUT);
}

void cpu_linear_backward(const a3_backend *be,
                         float *dinp,         // (N, IN) overwritten, or NULL
                         float *dweight,      // (OUT, IN) +=, or NULL
                         float *dbias,        // (OUT) +=, or NULL
                         const float *dout,   // (N, OUT)
                         const float *inp,    // (N, IN)
                         const float *weight, // (OUT, IN)
                         int N, int IN, int OUT) {
  (void)be;
  if (dinp) // dinp (N, IN) = dout (N, OUT) @ W (OUT, IN)
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, IN, OUT, 1.0f, dout, OUT, weight, IN,
                0.0f, dinp, IN);
  if (dweight) // dW (OUT, IN) += dout^T (OUT, N) @ inp (N, IN)
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, N, 1.0f, dout, OUT, inp, IN, 1.0f,
                dweight, IN);
  if (dbias) {
    for (int o = 0; o < OUT; o++) {
      double sum = 0.0; // N can be a whole batch of tokens: sum in double
      for (int n = 0; n < N; n++) sum += dout[(size_t)n * OUT + o];
      dbias[o] += (float)sum;
    }
  }
}
