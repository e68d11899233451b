// The optimizer's elementwise arithmetic (AdamW, clipping, EMA): the one
// place it is written, used by the host optimizer (src/train/optim.c, ema.c)
// and compared with the CUDA backend's kernels.
#include "cpu_ops.h"

#include <math.h>

// Tensors below this many elements run on one thread: fork/join costs more.
enum { OPTIM_PARALLEL_MIN = 1 << 16, NORM_CHUNK = 1 << 14, NORM_BATCH = 64 };

// Four accumulators shorten the add chain; the order is fixed.
static double chunk_sum_squares(const float *g, int64_t n) {
  double acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; j++) acc[j] += (double)g[i + j] * (double)g[i + j];
  }
  for (; i < n; i++) acc[0] += (double)g[i] * (double)g[i];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// Fixed chunk boundaries and an in-order sum of the chunks make the result
// independent of the thread count.
void cpu_sum_squares(const a3_backend *be, double *out, const float *x, size_t n) {
  (void)be;
  const int64_t len = (int64_t)n, chunks = (len + NORM_CHUNK - 1) / NORM_CHUNK;
  double total = 0;
  for (int64_t c0 = 0; c0 < chunks; c0 += NORM_BATCH) {
    double part[NORM_BATCH];
    const int nb = (int)(chunks - c0 < NORM_BATCH ? chunks - c0 : NORM_BATCH);
#pragma omp parallel for schedule(static) if (nb > 4)
    for (int b = 0; b < nb; b++) {
      const int64_t lo = (c0 + b) * NORM_CHUNK, hi = lo + NORM_CHUNK < len ? lo + NORM_CHUNK : len;
      part[b] = chunk_sum_squares(x + lo, hi - lo);
    }
    for (int b = 0; b < nb; b++) total += part[b];
  }
  *out = total;
}

void cpu_clip_scale(const a3_backend *be, float *scale, double *norm, const double *partials,
                    int n_partials, double max_norm) {
  (void)be;
  double total = 0;
  for (int k = 0; k < n_partials; k++) total += partials[k];
  *norm = sqrt(total);
  const double factor = max_norm > 0 ? max_norm / (*norm + 1e-6) : 1.0;
  *scale = factor < 1.0 ? (float)factor : 1.0f;
}

void cpu_adamw_update(const a3_backend *be, float *param, const float *grad, float *m, float *v,
                      size_t n, const a3_adamw_scalars *s, int decay, const float *grad_scale) {
  (void)be;
  const int64_t len = (int64_t)n;
#pragma omp parallel for schedule(static) if (len >= OPTIM_PARALLEL_MIN)
  for (int64_t i = 0; i < len; i++) {
    // Each line is one torch op, rounded as it rounds: mul_, add_(alpha),
    // addcmul_(value), sqrt / div / add_, addcdiv_(value). (torch's AVX2
    // add_ fuses its multiply-add; we round twice: 1 ulp apart at most.)
    const float gi = grad_scale ? grad[i] * grad_scale[0] : grad[i];
    float pi = decay ? param[i] * s->decay_mul : param[i];
    const float mi = m[i] * s->beta1 + s->one_minus_beta1 * gi;
    const float vi = v[i] * s->beta2 + s->one_minus_beta2 * gi * gi;
    const float denom = sqrtf(vi) / s->bc2_sqrt + s->eps;
    pi = pi + s->neg_step_size * mi / denom;
    param[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

void cpu_ema_update(const a3_backend *be, float *ema, const float *param, size_t n,
                    float one_minus_decay) {
  (void)be;
  const int64_t len = (int64_t)n;
  // s.sub_(one_minus_decay * (s - p)): three fp32 roundings, as in torch.
#pragma omp parallel for schedule(static) if (len >= OPTIM_PARALLEL_MIN)
  for (int64_t i = 0; i < len; i++) {
    const float diff = ema[i] - param[i];
    const float step = one_minus_decay * diff;
    ema[i] = ema[i] - step;
  }
}

// ---------------------------------------------------------------- over every segment

void cpu_sum_squares_segments(const a3_backend *be, double *partials, const float *grads,
                              const a3_segment_table *t) {
  for (int k = 0; k < t->n; k++)
    cpu_sum_squares(be, partials + k, grads + t->offset[k],
                    (size_t)(t->begin[k + 1] - t->begin[k]));
}

void cpu_adamw_update_segments(const a3_backend *be, float *params, const float *grads, float *m,
                               float *v, const a3_segment_table *t, const a3_adamw_scalars *s,
                               int decay, const float *grad_scale) {
  for (int k = 0; k < t->n; k++) {
    const int64_t c = t->begin[k], n = t->begin[k + 1] - c;
    cpu_adamw_update(be, params + t->offset[k], grads + t->offset[k], m + c, v + c, (size_t)n, s,
                     decay && t->decay[k], grad_scale);
  }
}

void cpu_ema_update_segments(const a3_backend *be, float *ema, const float *params,
                             const a3_segment_table *t, float one_minus_decay) {
  for (int k = 0; k < t->n; k++)
    cpu_ema_update(be, ema + t->begin[k], params + t->offset[k],
                   (size_t)(t->begin[k + 1] - t->begin[k]), one_minus_decay);
}
