// a3fta optimisation: AdamW over the trainable slice of the flat parameter
// buffer, global gradient-norm clipping, learning-rate schedules and the EMA
// of the trainable weights, with the semantics of torch.optim.AdamW,
// torch.nn.utils.clip_grad_norm_, diffusers' get_scheduler and EMAModel.
//
// Layout. The model's parameters and gradients are one flat buffer each; the
// trainable part is a list of segments (offset, count) into them. Optimizer
// state (m, v) and the EMA are COMPACT: they hold only the trainable
// elements, segment after segment in list order (segment k starts at the sum
// of the counts before it), so a3fta's 4% trainable slice costs 4% memory.
//
// Every function is elementwise in a fixed order or reduces in fixed chunks,
// so results are bit-identical run to run, whatever the number of threads.
#ifndef A3FTA_OPTIM_H
#define A3FTA_OPTIM_H

#include "a3fta/backend.h"
#include "a3fta/config.h"
#include "a3fta/core.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct {
  int64_t offset; // first element in the flat parameter / gradient buffers
  int64_t count;  // elements
  bool decay;     // weight decay applies (false for norms and biases by default)
} a3_param_segment;

// Total elements of the segments: the length of m, v and the EMA.
int64_t a3_segments_numel(const a3_param_segment *segs, int n_segs);
// compact (numel,) <- full[segments]; full[segments] <- compact.
void a3_segments_gather(const a3_param_segment *segs, int n_segs, const float *full,
                        float *compact);
void a3_segments_scatter(const a3_param_segment *segs, int n_segs, const float *compact,
                         float *full);

// ---------------------------------------------------------------- AdamW
typedef struct {
  double lr, beta1, beta2, eps, weight_decay;
} a3_adamw_hparams;

// The reference script's defaults: lr 1e-4, betas (0.95, 0.999), wd 1e-6, eps 1e-8.
a3_adamw_hparams a3_adamw_defaults(void);
// From the train section (lr is the base rate: scale it by a3_lr_factor per step).
a3_adamw_hparams a3_adamw_from_config(const a3_train_config *train);

// The fp32 scalars of AdamW step t (counted from 1) for the backends'
// adamw_update op (backend.h), rounded as torch rounds them.
a3_adamw_scalars a3_adamw_prepare(const a3_adamw_hparams *h, int64_t t);

// One AdamW update with step number t (1 for the first update; bias
// correction 1 - beta^t), as torch.optim.AdamW (foreach off, amsgrad off):
//   p *= 1 - lr * wd                     (decoupled decay; decay segments only)
//   m = beta1 m + (1 - beta1) g
//   v = beta2 v + (1 - beta2) g g
//   p += -lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// in fp32 with the scalars computed in double and rounded, as torch does.
// params, grads: flat buffers indexed by the segments; m, v: compact (zero
// before the first step). Segments must not overlap.
a3_status a3_adamw_step(const a3_adamw_hparams *h, int64_t t, const a3_param_segment *segs,
                        int n_segs, float *params, const float *grads, float *m,
                        float *v) A3_WARN_UNUSED;
// The same on backend `be` over a segment table (every tensor and the
// table in be's memory; one adamw_update_segments call, so one launch on a
// device), each gradient first multiplied by grad_scale[0] (one float in
// be's memory; NULL: 1), as the clip factor of a3_clip_factor_on. Bitwise
// a3_adamw_step's result.
a3_status a3_adamw_step_on(const a3_backend *be, const a3_adamw_hparams *h, int64_t t,
                           const a3_segment_table *table, float *params, const float *grads,
                           float *m, float *v, const float *grad_scale) A3_WARN_UNUSED;

// The segments as a table in be's memory (a3fta/backend.h), for the _on
// functions; free with a3_segment_table_free.
a3_status a3_segment_table_make(const a3_backend *be, const a3_param_segment *segs, int n_segs,
                                a3_segment_table *out) A3_WARN_UNUSED;
void a3_segment_table_free(const a3_backend *be, a3_segment_table *t); // be NULL: nothing

// ---------------------------------------------------------------- clipping
// Global L2 norm of the gradients over the segments, accumulated in double
// (in fixed chunks, summed in order: deterministic).
double a3_grad_norm(const a3_param_segment *segs, int n_segs, const float *grads);
// grads[segments] *= scale (fp32 product).
void a3_grad_scale(const a3_param_segment *segs, int n_segs, float *grads, float scale);
// clip_grad_norm_'s factor on backend `be`, left in its memory for
// a3_adamw_step_on: norm[0] = the global norm, scale[0] = max_norm / (norm +
// 1e-6) when below 1 (max_norm > 0), else 1. partials: table->n doubles of
// scratch in be's memory.
void a3_clip_factor_on(const a3_backend *be, const a3_segment_table *table, const float *grads,
                       double max_norm, double *partials, float *scale, double *norm);
// torch.nn.utils.clip_grad_norm_(max_norm, norm_type 2): scale =
// max_norm / (norm + 1e-6), applied only when below 1 (torch multiplies by the
// clamped scale, and 1.0f is exact, so this is the same). Returns the norm
// before clipping. max_norm <= 0: no clipping, the norm is still returned.
double a3_clip_grad_norm(const a3_param_segment *segs, int n_segs, float *grads, double max_norm);

// ---------------------------------------------------------------- LR schedule
// The factor of the base learning rate for the update after `step` completed
// updates (0 for the first), as diffusers' LambdaLR schedules (the first
// update of a warm-up therefore has lr 0):
//   warm-up (step < warmup): step / warmup
//   constant:                1
//   cosine:                  max(0, 0.5 (1 + cos(pi * 2 * 0.5 * progress))),
//                            progress = (step - warmup) / max(1, total - warmup)
// (get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup with
// num_cycles 0.5). total is the number of updates of the run.
double a3_lr_factor(a3_lr_schedule kind, int64_t step, int64_t warmup, int64_t total);

// ---------------------------------------------------------------- EMA
// diffusers EMAModel with use_ema_warmup (inv_gamma 1, power 3/4),
// update_after_step 0, min_decay 0: optimization_step counts EMA updates
// including this one (1 for the first, which copies: decay 0);
// with k = optimization_step - 1, decay = 0 if k <= 0, else
// min(max_decay, 1 - (1 + k)^(-3/4)).
double a3_ema_decay(int64_t optimization_step, double max_decay);
// ema = ema - (1 - decay) (ema - param), fp32 as EMAModel.step.
// ema: compact over the segments; params: the flat buffer.
void a3_ema_update(const a3_param_segment *segs, int n_segs, const float *params, float *ema,
                   double decay);
// The same on backend `be` over a segment table (ema, params and the table
// in its memory; one ema_update_segments call).
void a3_ema_update_on(const a3_backend *be, const a3_segment_table *table, const float *params,
                      float *ema, double decay);

#endif
