// Learning-rate factors of diffusers' get_scheduler("constant_with_warmup" /
// "cosine"), evaluated as its LambdaLR lambdas are (see a3fta/optim.h).
#include "a3fta/optim.h"

#include <math.h>

#define A3_PI 3.14159265358979323846

double a3_lr_factor(a3_lr_schedule kind, int64_t step, int64_t warmup, int64_t total) {
  if (step < warmup) return (double)step / (double)(warmup > 1 ? warmup : 1);
  if (kind == A3_LR_CONSTANT) return 1.0;
  const int64_t span = total - warmup > 1 ? total - warmup : 1;
  const double progress = (double)(step - warmup) / (double)span;
  const double num_cycles = 0.5; // half a cosine: from 1 down to 0 at `total`
  const double f = 0.5 * (1.0 + cos(A3_PI * num_cycles * 2.0 * progress));
  return f > 0.0 ? f : 0.0;
}
