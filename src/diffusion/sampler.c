// DDPM and DDIM sampler steps with the semantics of diffusers'
// DDPMScheduler.step and DDIMScheduler.step (epsilon prediction, sample
// clipping to [-1, 1]). Every scheduler scalar is an fp32 value there (0-dim
// float32 tensors), so each coefficient below is computed in float, in the
// same order: that is what lets the trajectories match to the last bit.
// The per-step scalars are computed here (a3_sampler_prepare); the
// elementwise step is the backend's sampler_step op, so the CPU and the GPU
// run one formula (src/backend/cpu/sampler_ops.c).
#include "a3fta/diffusion.h"

#include "a3fta/backend.h"

#include <math.h>
#include <string.h>

a3_status a3_sampler_timesteps(int64_t T, int64_t N, int32_t *timesteps) {
  if (N < 1 || N > T) {
    return A3_FAIL(A3_ERR_CONFIG, "sampler steps %lld: must be in [1, num_train_timesteps = %lld]",
                   (long long)N, (long long)T);
  }
  const int64_t ratio = T / N;
  for (int64_t i = 0; i < N; i++) timesteps[i] = (int32_t)((N - 1 - i) * ratio);
  return A3_OK;
}

int32_t a3_sampler_prev_timestep(int64_t T, int64_t N, int32_t t) { return (int32_t)(t - T / N); }

static a3_status check_step(const a3_noise_schedule_table *s, int32_t t, int32_t t_prev,
                            const char *who) {
  if (t < 0 || t >= s->T || t_prev >= t) {
    return A3_FAIL(A3_ERR_INTERNAL,
                   "%s: step from t = %d to %d (T = %lld): need 0 <= t_prev < t < T"
                   " or t_prev < 0",
                   who, (int)t, (int)t_prev, (long long)s->T);
  }
  return A3_OK;
}

// alpha_prod at t_prev, 1 after the last step (DDPM's `one`, DDIM's set_alpha_to_one).
static float acp_or_one(const a3_noise_schedule_table *s, int32_t t) {
  return t >= 0 ? s->alphas_cumprod[t] : 1.0f;
}

static void ddpm_scalars(const a3_noise_schedule_table *s, int32_t t, int32_t t_prev,
                         a3_sampler_scalars *c) {
  const float acp_t = s->alphas_cumprod[t], acp_prev = acp_or_one(s, t_prev);
  const float beta_prod_t = 1.0f - acp_t, beta_prod_prev = 1.0f - acp_prev;
  const float cur_alpha = acp_t / acp_prev; // the jump t -> t_prev may span several betas
  const float cur_beta = 1.0f - cur_alpha;
  c->sqrt_beta_prod_t = sqrtf(beta_prod_t);
  c->sqrt_acp_t = sqrtf(acp_t);
  // Posterior mean coefficients of x0 and x_t (DDPM eq. 7).
  c->c_x0 = (sqrtf(acp_prev) * cur_beta) / beta_prod_t;
  c->c_dir = sqrtf(cur_alpha) * beta_prod_prev / beta_prod_t;
  c->dir_is_eps = 0;
  // "fixed_small": the posterior variance, clamped so that its sqrt stays finite.
  float var = (1.0f - acp_prev) / (1.0f - acp_t) * cur_beta;
  var = var < 1e-20f ? 1e-20f : var;
  c->std = sqrtf(var);
  c->add_noise = t > 0;
}

static void ddim_scalars(const a3_noise_schedule_table *s, int32_t t, int32_t t_prev, double eta,
                         a3_sampler_scalars *c) {
  const float acp_t = s->alphas_cumprod[t], acp_prev = acp_or_one(s, t_prev);
  const float beta_prod_t = 1.0f - acp_t, beta_prod_prev = 1.0f - acp_prev;
  c->sqrt_beta_prod_t = sqrtf(beta_prod_t);
  c->sqrt_acp_t = sqrtf(acp_t);
  // sigma_t(eta) of the DDIM paper (eq. 16).
  const float var = (beta_prod_prev / beta_prod_t) * (1.0f - acp_t / acp_prev);
  c->std = (float)eta * sqrtf(var);
  c->c_dir = sqrtf(1.0f - acp_prev - c->std * c->std); // "direction pointing to x_t"
  c->c_x0 = sqrtf(acp_prev);
  c->dir_is_eps = 1;
  c->add_noise = eta > 0;
}

a3_status a3_sampler_prepare(a3_sampler sampler, const a3_noise_schedule_table *s, int32_t t,
                             int32_t t_prev, double eta, a3_sampler_scalars *out) {
  memset(out, 0, sizeof *out);
  switch (sampler) {
  case A3_SAMPLER_DDPM:
    A3_TRY(check_step(s, t, t_prev, "ddpm"));
    ddpm_scalars(s, t, t_prev, out);
    break;
  case A3_SAMPLER_DDIM:
    A3_TRY(check_step(s, t, t_prev, "ddim"));
    if (eta < 0) return A3_FAIL(A3_ERR_CONFIG, "ddim: eta %g must be >= 0", eta);
    ddim_scalars(s, t, t_prev, eta, out);
    break;
  default: return A3_FAIL(A3_ERR_INTERNAL, "unknown sampler %d", (int)sampler);
  }
  return A3_OK;
}

// The step itself is the CPU backend's sampler_step op: the one formula,
// which the CUDA backend's kernel repeats.
static void step_on_cpu(const a3_sampler_scalars *c, const float *model_out, const float *x_t,
                        const float *noise, float *x_prev, int64_t n) {
  const a3_backend *cpu = a3_backend_cpu();
  cpu->ops->sampler_step(cpu, x_prev, model_out, x_t, c->add_noise ? noise : NULL, (size_t)n, c);
}

a3_status a3_ddpm_step(const a3_noise_schedule_table *s, int32_t t, int32_t t_prev,
                       const float *model_out, const float *x_t, const float *noise, float *x_prev,
                       int64_t n) {
  a3_sampler_scalars c;
  A3_TRY(a3_sampler_prepare(A3_SAMPLER_DDPM, s, t, t_prev, 0.0, &c));
  if (c.add_noise && !noise)
    return A3_FAIL(A3_ERR_INTERNAL, "ddpm: step at t = %d needs noise", (int)t);
  step_on_cpu(&c, model_out, x_t, noise, x_prev, n);
  return A3_OK;
}

a3_status a3_ddim_step(const a3_noise_schedule_table *s, int32_t t, int32_t t_prev, double eta,
                       const float *model_out, const float *x_t, const float *noise, float *x_prev,
                       int64_t n) {
  a3_sampler_scalars c;
  A3_TRY(a3_sampler_prepare(A3_SAMPLER_DDIM, s, t, t_prev, eta, &c));
  if (c.add_noise && !noise) return A3_FAIL(A3_ERR_INTERNAL, "ddim: eta %g > 0 needs noise", eta);
  step_on_cpu(&c, model_out, x_t, noise, x_prev, n);
  return A3_OK;
}

a3_status a3_sampler_step(a3_sampler sampler, const a3_noise_schedule_table *s, int32_t t,
                          int32_t t_prev, double eta, const float *model_out, const float *x_t,
                          const float *noise, float *x_prev, int64_t n) {
  switch (sampler) {
  case A3_SAMPLER_DDPM: A3_TRY(a3_ddpm_step(s, t, t_prev, model_out, x_t, noise, x_prev, n)); break;
  case A3_SAMPLER_DDIM:
    A3_TRY(a3_ddim_step(s, t, t_prev, eta, model_out, x_t, noise, x_prev, n));
    break;
  default: return A3_FAIL(A3_ERR_INTERNAL, "unknown sampler %d", (int)sampler);
  }
  return A3_OK;
}
