// Exponential moving average of the trainable weights, as diffusers' EMAModel
// with use_ema_warmup (see a3fta/optim.h).
#include "a3fta/optim.h"

#include <math.h>

double a3_ema_decay(int64_t optimization_step, double max_decay) {
  // update_after_step 0, inv_gamma 1, power 3/4: the first update copies the
  // weights, and the average then lengthens as 1 - (1 + k)^(-3/4).
  const int64_t k = optimization_step - 1;
  if (k <= 0) return 0.0;
  double decay = 1.0 - pow(1.0 + (double)k / 1.0, -0.75);
  if (decay > max_decay) decay = max_decay;
  return decay > 0.0 ? decay : 0.0;
}

void a3_ema_update(const a3_param_segment *segs, int n_segs, const float *params, float *ema,
                   double decay) {
  // The arithmetic lives in the backend's optim ops.
  const a3_backend *cpu = a3_backend_cpu();
  const float one_minus_decay = (float)(1.0 - decay);
  for (int k = 0; k < n_segs; k++) {
    cpu->ops->ema_update(cpu, ema, params + segs[k].offset, (size_t)segs[k].count, one_minus_decay);
    ema += segs[k].count;
  }
}

void a3_ema_update_on(const a3_backend *be, const a3_segment_table *table, const float *params,
                      float *ema, double decay) {
  be->ops->ema_update_segments(be, ema, params, table, (float)(1.0 - decay));
}
