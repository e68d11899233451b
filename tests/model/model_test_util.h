// Helpers shared by the U-Net tests: building from YAML text, random tensors,
// one forward + MSE + backward step.
#ifndef A3FTA_MODEL_TEST_UTIL_H
#define A3FTA_MODEL_TEST_UTIL_H

#include "a3fta/config.h"
#include "a3fta/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The model of a YAML text's model.arch with `extras` (NULL = none). Prints
// the error and returns NULL on failure.
static inline a3_unet *mt_build_yaml_ex(const char *name, const char *yaml,
                                        const a3_unet_extras *extras) {
  a3_config cfg;
  a3_unet *m = NULL;
  a3_status s = a3_config_load_string(name, yaml, strlen(yaml), NULL, 0, &cfg);
  if (s == A3_OK) {
    s = a3_unet_build_ex(&cfg.model.arch, extras, &m);
    a3_config_free(&cfg);
  }
  if (s != A3_OK) fprintf(stderr, "%s: %s (%s)\n", name, a3_error_message(), a3_error_trail());
  return m;
}

static inline a3_unet *mt_build_yaml(const char *name, const char *yaml) {
  return mt_build_yaml_ex(name, yaml, NULL);
}

// Uniform in [-1, 1) from (seed, index): reproducible without global state.
static inline float mt_uniform(uint64_t seed, uint64_t i) {
  return (float)((double)(a3_rng_u64(seed, 99, i) >> 40) * (1.0 / 8388608.0) - 1.0);
}

static inline void mt_fill(float *x, size_t n, uint64_t seed, float scale, float shift) {
  for (size_t i = 0; i < n; i++) x[i] = shift + scale * mt_uniform(seed, i);
}

// Random non-zero weights everywhere (so no gradient is trivially zero): conv
// and linear weights U(-1, 1) * sqrt(3 / fan_in), biases U(-0.2, 0.2),
// GroupNorm weights U(0.5, 1.5).
static inline void mt_randomize(a3_unet *m, uint64_t seed) {
  float *params = a3_unet_params(m);
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    float *w = params + p->offset;
    const bool norm = p->ndim == 1 && !p->is_bias;
    if (norm) {
      mt_fill(w, p->numel, seed + (uint64_t)i, 0.5f, 1.0f);
    } else if (p->is_bias) {
      mt_fill(w, p->numel, seed + (uint64_t)i, 0.2f, 0.0f);
    } else {
      const double fan_in = (double)p->numel / p->shape[0];
      mt_fill(w, p->numel, seed + (uint64_t)i, (float)sqrt(3.0 / fan_in), 0.0f);
    }
  }
}

// One training step's gradients: forward, MSE against target, backward (grads
// zeroed first). *loss gets the fp32 loss. dout_scratch: (B, Cout, H, W).
static inline a3_status mt_step(a3_unet *m, const float *x, const float *t, const float *target,
                                float *out, float *dout_scratch, float *dx, float *loss) {
  const a3_backend *be = a3_backend_cpu();
  const a3_arch_config *a = a3_unet_arch(m);
  const size_t n = (size_t)a3_unet_batch(m) * a->out_channels * a->sample_size * a->sample_size;
  a3_unet_zero_grads(m);
  A3_TRY(a3_unet_forward(m, x, t, out));
  be->ops->mse_forward(be, loss, out, target, n);
  be->ops->mse_backward(be, dout_scratch, out, target, n, 1.0f);
  A3_TRY(a3_unet_backward(m, dout_scratch, dx));
  return A3_OK;
}

static inline size_t mt_numel_in(const a3_unet *m) {
  const a3_arch_config *a = a3_unet_arch(m);
  return (size_t)a3_unet_batch(m) * a->in_channels * a->sample_size * a->sample_size;
}

static inline size_t mt_numel_out(const a3_unet *m) {
  const a3_arch_config *a = a3_unet_arch(m);
  return (size_t)a3_unet_batch(m) * a->out_channels * a->sample_size * a->sample_size;
}

#endif
