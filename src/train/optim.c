// AdamW over the trainable segments and global gradient-norm clipping, with
// torch.optim.AdamW / clip_grad_norm_ semantics (see a3fta/optim.h).
#include "a3fta/optim.h"

#include <math.h>
#include <stdlib.h>
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

a3_adamw_scalars a3_adamw_prepare(const a3_adamw_hparams *h, int64_t t) {
  const double bc1 = 1.0 - pow(h->beta1, (double)t), bc2 = 1.0 - pow(h->beta2, (double)t);
  a3_adamw_scalars s = {
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

a3_status a3_adamw_step(const a3_adamw_hparams *h, int64_t t, const a3_param_segment *segs,
                        int n_segs, float *params, const float *grads, float *m, float *v) {
  if (t < 1) return A3_FAIL(A3_ERR_INTERNAL, "adamw: step %lld, counted from 1", (long long)t);
  // The arithmetic lives in the backend's optim ops.
  const a3_backend *cpu = a3_backend_cpu();
  const a3_adamw_scalars s = a3_adamw_prepare(h, t);
  int64_t c = 0; // offset into the compact m, v
  for (int k = 0; k < n_segs; k++) {
    const a3_param_segment *sg = &segs[k];
    cpu->ops->adamw_update(cpu, params + sg->offset, grads + sg->offset, m + c, v + c,
                           (size_t)sg->count, &s, sg->decay && h->weight_decay != 0, NULL);
    c += sg->count;
  }
  return A3_OK;
}

a3_status a3_adamw_step_on(const a3_backend *be, const a3_adamw_hparams *h, int64_t t,
                           const a3_segment_table *table, float *params, const float *grads,
                           float *m, float *v, const float *grad_scale) {
  if (t < 1) return A3_FAIL(A3_ERR_INTERNAL, "adamw: step %lld, counted from 1", (long long)t);
  const a3_adamw_scalars s = a3_adamw_prepare(h, t);
  be->ops->adamw_update_segments(be, params, grads, m, v, table, &s, h->weight_decay != 0,
                                 grad_scale);
  return A3_OK;
}

// ---------------------------------------------------------------- the segment table

a3_status a3_segment_table_make(const a3_backend *be, const a3_param_segment *segs, int n_segs,
                                a3_segment_table *out) {
  memset(out, 0, sizeof *out);
  if (n_segs < 0) return A3_FAIL(A3_ERR_INTERNAL, "segment table: %d segments", n_segs);
  for (int k = 0; k < n_segs; k++)
    if (segs[k].count < 0 || segs[k].offset < 0)
      return A3_FAIL(A3_ERR_INTERNAL, "segment table: segment %d at %lld of %lld floats", k,
                     (long long)segs[k].offset, (long long)segs[k].count);
  const size_t n = (size_t)n_segs;
  int64_t *begin = calloc(n + 1, sizeof *begin), *offset = calloc(n + 1, sizeof *offset);
  int32_t *decay = calloc(n + 1, sizeof *decay);
  void *dev[3] = {NULL, NULL, NULL};
  a3_status s = begin && offset && decay ? A3_OK : A3_FAIL(A3_ERR_NOMEM, "segment table");
  for (size_t k = 0; s == A3_OK && k < n; k++) {
    begin[k + 1] = begin[k] + segs[k].count;
    offset[k] = segs[k].offset;
    decay[k] = segs[k].decay;
  }
  const size_t bytes[3] = {(n + 1) * sizeof *begin, (n + 1) * sizeof *offset,
                           (n + 1) * sizeof *decay};
  const void *host[3] = {begin, offset, decay};
  for (int i = 0; i < 3 && s == A3_OK; i++) {
    s = be->ops->alloc(be, &dev[i], bytes[i]);
    if (s == A3_OK) s = be->ops->upload(be, dev[i], host[i], bytes[i]);
  }
  // Field by field into the zeroed *out, so its padding stays zero (the CUDA
  // emulator checks each word of a kernel's struct argument).
  if (s == A3_OK) {
    out->n = n_segs;
    out->begin = dev[0];
    out->offset = dev[1];
    out->decay = dev[2];
    out->total = begin[n];
  } else {
    for (int i = 0; i < 3; i++) be->ops->release(be, dev[i]);
  }
  free(begin), free(offset), free(decay);
  return s;
}

void a3_segment_table_free(const a3_backend *be, a3_segment_table *t) {
  if (!be) return;
  be->ops->release(be, (void *)t->begin);
  be->ops->release(be, (void *)t->offset);
  be->ops->release(be, (void *)t->decay);
  memset(t, 0, sizeof *t);
}

// ---------------------------------------------------------------- clipping

double a3_grad_norm(const a3_param_segment *segs, int n_segs, const float *grads) {
  const a3_backend *cpu = a3_backend_cpu();
  double total = 0;
  for (int k = 0; k < n_segs; k++) {
    double part = 0;
    cpu->ops->sum_squares(cpu, &part, grads + segs[k].offset, (size_t)segs[k].count);
    total += part;
  }
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

void a3_clip_factor_on(const a3_backend *be, const a3_segment_table *table, const float *grads,
                       double max_norm, double *partials, float *scale, double *norm) {
  be->ops->sum_squares_segments(be, partials, grads, table);
  be->ops->clip_scale(be, scale, norm, partials, table->n, max_norm);
}
