// Noise schedules: betas, alphas and their running product, as diffusers'
// DDPMScheduler/DDIMScheduler build them in float32.
#include "a3fta/diffusion.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define A3_PI 3.14159265358979323846

// torch.linspace(start, end, T, dtype=float32) up to its kernel-dependent
// rounding (see the header): the ends are rounded to fp32 first, as torch
// does, then each value is computed in double (from the nearer end, like
// torch) and rounded once.
static void linspace_f32(double start, double end, int64_t T, float *out) {
  const double s = (float)start, e = (float)end;
  const double step = (e - s) / (double)(T - 1);
  for (int64_t i = 0; i < T; i++) {
    out[i] = (float)(i < T / 2 ? s + step * (double)i : e - step * (double)(T - 1 - i));
  }
}

// "squaredcos_cap_v2" (Nichol & Dhariwal): alpha_bar(t) = cos^2((t + 0.008) / 1.008 * pi / 2).
static double alpha_bar_cosine(double t) {
  const double c = cos((t + 0.008) / 1.008 * A3_PI / 2);
  return c * c;
}

static void betas_cosine(int64_t T, float *out) {
  for (int64_t i = 0; i < T; i++) {
    const double t1 = (double)i / (double)T, t2 = (double)(i + 1) / (double)T;
    const double beta = 1 - alpha_bar_cosine(t2) / alpha_bar_cosine(t1);
    out[i] = (float)(beta < A3_COSINE_MAX_BETA ? beta : A3_COSINE_MAX_BETA);
  }
}

static a3_status schedule_alloc(a3_noise_schedule_table *s, int64_t T) {
  memset(s, 0, sizeof(*s));
  if (T < 2 || T > (int64_t)1 << 30) {
    return A3_FAIL(A3_ERR_CONFIG, "num_train_timesteps %lld: must be in [2, 2^30]", (long long)T);
  }
  s->T = T;
  a3_status st = A3_ALLOC(s->betas, (size_t)T);
  if (st == A3_OK) st = A3_ALLOC(s->alphas, (size_t)T);
  if (st == A3_OK) st = A3_ALLOC(s->alphas_cumprod, (size_t)T);
  if (st != A3_OK) a3_schedule_free(s);
  return st;
}

// alphas = 1 - betas in fp32; the cumulative product accumulates in double and
// rounds each entry, as torch.cumprod does on the CPU for float32 input.
static void schedule_finish(a3_noise_schedule_table *s) {
  double prod = 1.0;
  for (int64_t i = 0; i < s->T; i++) {
    s->alphas[i] = 1.0f - s->betas[i];
    prod *= (double)s->alphas[i];
    s->alphas_cumprod[i] = (float)prod;
  }
}

a3_status a3_schedule_init(a3_noise_schedule_table *s, a3_noise_schedule kind, int64_t T,
                           double beta_start, double beta_end) {
  A3_TRY(schedule_alloc(s, T));
  s->kind = kind;
  switch (kind) {
  case A3_NOISE_LINEAR: linspace_f32(beta_start, beta_end, T, s->betas); break;
  case A3_NOISE_SCALED_LINEAR:
    linspace_f32(sqrt(beta_start), sqrt(beta_end), T, s->betas);
    for (int64_t i = 0; i < T; i++) s->betas[i] = s->betas[i] * s->betas[i]; // fp32 square
    break;
  case A3_NOISE_COSINE: betas_cosine(T, s->betas); break;
  default:
    a3_schedule_free(s);
    return A3_FAIL(A3_ERR_INTERNAL, "unknown noise schedule %d", (int)kind);
  }
  schedule_finish(s);
  return A3_OK;
}

a3_status a3_schedule_from_betas(a3_noise_schedule_table *s, const float *betas, int64_t T) {
  A3_TRY(schedule_alloc(s, T));
  s->kind = A3_NOISE_LINEAR;
  memcpy(s->betas, betas, (size_t)T * sizeof(float));
  schedule_finish(s);
  return A3_OK;
}

void a3_schedule_free(a3_noise_schedule_table *s) {
  free(s->betas);
  free(s->alphas);
  free(s->alphas_cumprod);
  s->betas = s->alphas = s->alphas_cumprod = NULL;
  s->T = 0;
}
