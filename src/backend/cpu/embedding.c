// The sinusoidal timestep embedding of diffusers (get_timestep_embedding).
#include "cpu_ops.h"

#include <math.h>
#include <string.h>

// Every step is rounded to fp32 where PyTorch computes in fp32 (exponent,
// frequency, t * frequency), so the embedding matches diffusers' to an ulp
// of sin/cos. The argument's own rounding (t up to 1000 -> ulp 6e-5) is far
// larger than sin's error, so computing it in double would NOT be "more
// exact" here: it would just disagree with the reference model.
void cpu_timestep_embedding(const a3_backend *be, a3_act *out_act, // (N, dim)
                            const float *t,                        // (N)
                            int N, int dim, int flip_sin_to_cos, float freq_shift,
                            float max_period) {
  float *out = a3_f32_act(out_act);
  (void)be;
  const int half = dim / 2;
  const float log_period = (float)-log((double)max_period);
  for (int n = 0; n < N; n++) {
    float *row = out + (size_t)n * dim;
    float *sin_part = row + (flip_sin_to_cos ? half : 0);
    float *cos_part = row + (flip_sin_to_cos ? 0 : half);
    for (int i = 0; i < half; i++) {
      const float exponent = log_period * (float)i / ((float)half - freq_shift);
      const float arg = t[n] * expf(exponent);
      sin_part[i] = sinf(arg);
      cos_part[i] = cosf(arg);
    }
    if (dim % 2) row[dim - 1] = 0.0f; // torch pads an odd dim with one zero column
  }
}
