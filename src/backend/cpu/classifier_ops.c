// Softmax cross-entropy on the CPU (the feature network's classifier head,
// src/eval/feature_net.c). Rows are independent; each row's sums run in
// double, and the loss sums the rows in order, so results do not depend on
// the thread count.
#include "cpu_ops.h"

#include <math.h>

void cpu_softmax_xent_forward(const a3_backend *be, float *loss, float *probs, const float *logits,
                              const int32_t *labels, int N, int K, float scale) {
  (void)be;
  double total = 0.0;
  for (int i = 0; i < N; i++) {
    const float *z = logits + (size_t)i * K;
    float *p = probs + (size_t)i * K;
    float mx = z[0];
    for (int k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
    double sum = 0.0;
    for (int k = 0; k < K; k++) sum += exp((double)z[k] - mx);
    const double inv = 1.0 / sum;
    for (int k = 0; k < K; k++) p[k] = (float)(exp((double)z[k] - mx) * inv);
    // -log softmax(z)[y] = logsumexp(z) - z[y], without forming log(p[y])
    // (p[y] can underflow for a confidently wrong prediction).
    total += (double)mx + log(sum) - (double)z[labels[i]];
  }
  *loss = (float)(total * (double)scale);
}

void cpu_softmax_xent_backward(const a3_backend *be, float *dlogits, const float *probs,
                               const int32_t *labels, int N, int K, float scale) {
  (void)be;
  for (int i = 0; i < N; i++) {
    const float *p = probs + (size_t)i * K;
    float *d = dlogits + (size_t)i * K;
    for (int k = 0; k < K; k++) d[k] = scale * (p[k] - (k == labels[i] ? 1.0f : 0.0f));
  }
}
