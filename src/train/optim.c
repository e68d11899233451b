// AdamW over the trainable segments and global gradient-norm clipping, with
// torch.optim.AdamW / clip_grad_norm_ semantics (see a3fta/optim.h).
#include "a3fta/optim.h"

#include <math.h>
#include <string.h>

// Segments below this many elements run on one thread: fork/join costs more.
enum { A3_OPTIM_PARALLEL_MIN = 1 << 16 };

int64_t a3_segments_numel(const a3_param_segment *segs, int n_segs) {
  int64_t n = 0;
  for (int k = 0; k < n_segs; k++) n += segs[k].count;
  return n;
}

void a3_segments_gather(const a3_param_segment *segs, int n_segs, const float *full,
                        float *compact) {
  for (int k = 0; k < n_segs; k++) {
    memcpy(compact, full + segs[k].offset, (size_t)segs[k].count * sizeof(float));
    compact += segs[k].count;
  }
}

void a3_segments_scatter(const a3_param_segment *segs, int n_segs, const float *compact,
                         float *full) {
  for (int k = 0; k < n_segs; k++) {
    memcpy(full + segs[k].offset, compact, (size_t)segs[k].count * sizeof(float));
    compact += segs[k].count;
  }
}

a3_adamw_hparams a3_adamw_defaults(void) {
  a3_adamw_hparams h = {
      .lr = 1e-4, .beta1 = 0.95, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 1e-6};
  return h;
}

a3_adamw_hparams a3_adamw_from_config(const a3_train_config *train) {
  a3_adamw_hparams h = {.lr = train->lr,
                        .beta1 = train->adam_beta1,
                        .beta2 = train->adam_beta2,
                        .eps = train->adam_eps,
                        .weight_decay = train->weight_decay};
  return h;
}

// The per-step scalars, rounded to fp32 where torch multiplies fp32 tensors
// by Python floats.
typedef struct {
  float decay_mul, beta1, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bc2_sqrt, eps;
} adamw_scalars;

static adamw_scalars adamw_prepare(const a3_adamw_hparams *h, int64_t t) {
  const double bc1 = 1.0 - pow(h->beta1, (double)t), bc2 = 1.0 - pow(h->beta2, (double)t);
  adamw_scalars s = {
      .decay_mul = (float)(1.0 - h->lr * h->weight_decay),
      .beta1 = (float)h->beta1,
      .one_minus_beta1 = (float)(1.0 - h->beta1),
      .beta2 = (float)h->beta2,
      .one_minus_beta2 = (float)(1.0 - h->beta2),
      .neg_step_size = (float)(-(h->lr / bc1)),
      .bc2_sqrt = (float)sqrt(bc2),
      .eps = (float)h->eps,
  };
  return s;
}

// One segment: p, g (n,) in the flat buffers; m, v (n,) compact.
static void adamw_segment(const adamw_scalars *s, bool decay, int64_t n, float *p, const float *g,
                          float *m, float *v) {
#pragma omp parallel for schedule(static) if (n >= A3_OPTIM_PARALLEL_MIN)
  for (int64_t i = 0; i < n; i++) {
    // Each line is one torch op, rounded as it rounds: mul_, add_(alpha),
    // addcmul_(value), sqrt / div / add_, addcdiv_(value). (torch's AVX2
    // add_ fuses its multiply-add; we round twice: 1 ulp apart at most.)
    float pi = decay ? p[i] * s->decay_mul : p[i];
    const float gi = g[i];
    const float mi = m[i] * s->beta1 + s->one_minus_beta1 * gi;
    const float vi = v[i] * s->beta2 + s->one_minus_beta2 * gi * gi;
    const float denom = sqrtf(vi) / s->bc2_sqrt + s->eps;
    pi = pi + s->neg_step_size * mi / denom;
    p[i] = pi;
    m[i] = mi;
    v[i] = vi;
  }
}

a3_status a3_adamw_step(const a3_adamw_hparams *h, int64_t t, const a3_param_segment *segs,
                        int n_segs, float *params, const float *grads, float *m, float *v) {
  if (t < 1) return A3_FAIL(A3_ERR_INTERNAL, "adamw: step %lld, counted from 1", (long long)t);
  const adamw_scalars s = adamw_prepare(h, t);
  int64_t c = 0; // offset into the compact m, v
  for (int k = 0; k < n_segs; k++) {
    const a3_param_segment *sg = &segs[k];
    adamw_segment(&s, sg->decay && h->weight_decay != 0, sg->count, params + sg->offset,
                  grads + sg->offset, m + c, v + c);
    c += sg->count;
  }
  return A3_OK;
}

// ---------------------------------------------------------------- clipping
// Fixed chunk boundaries and an in-order sum make the norm independent of the
// thread count; four accumulators per chunk shorten the add chain.
enum { NORM_CHUNK = 1 << 14, NORM_BATCH = 64 };

static double sum_squares(const float *g, int64_t n) {
  double acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; j++) acc[j] += (double)g[i + j] * (double)g[i + j];
  }
  for (; i < n; i++) acc[0] += (double)g[i] * (double)g[i];
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

static double segment_sum_squares(const float *g, int64_t n) {
  const int64_t chunks = (n + NORM_CHUNK - 1) / NORM_CHUNK;
  double total = 0;
  for (int64_t c0 = 0; c0 < chunks; c0 += NORM_BATCH) {
    double part[NORM_BATCH];
    const int nb = (int)(chunks - c0 < NORM_BATCH ? chunks - c0 : NORM_BATCH);
#pragma omp parallel for schedule(static) if (nb > 4)
    for (int b = 0; b < nb; b++) {
      const int64_t lo = (c0 + b) * NORM_CHUNK, hi = lo + NORM_CHUNK < n ? lo + NORM_CHUNK : n;
      part[b] = sum_squares(g + lo, hi - lo);
    }
    for (int b = 0; b < nb; b++) total += part[b];
  }
  return total;
}

double a3_grad_norm(const a3_param_segment *segs, int n_segs, const float *grads) {
  double total = 0;
  for (int k = 0; k < n_segs; k++)
    total += segment_sum_squares(grads + segs[k].offset, segs[k].count);
  return sqrt(total);
}

void a3_grad_scale(const a3_param_segment *segs, int n_segs, float *grads, float scale) {
  for (int k = 0; k < n_segs; k++) {
    float *g = grads + segs[k].offset;
    const int64_t n = segs[k].count;
#pragma omp parallel for schedule(static) if (n >= A3_OPTIM_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) g[i] = g[i] * scale;
  }
}

double a3_clip_grad_norm(const a3_param_segment *segs, int n_segs, float *grads, double max_norm) {
  const double norm = a3_grad_norm(segs, n_segs, grads);
  if (max_norm > 0) {
    const double scale = max_norm / (norm + 1e-6);
    if (scale < 1.0) a3_grad_scale(segs, n_segs, grads, (float)scale);
  }
  return norm;
}
