// DDPM and DDIM sampler steps with the semantics of diffusers'
// DDPMScheduler.step and DDIMScheduler.step (epsilon prediction, sample
// clipping to [-1, 1]). Every scheduler scalar is an fp32 value there (0-dim
// float32 tensors), so each coefficient below is computed in float, in the
// same order: that is what lets the trajectories match to the last bit.
#include "a3fta/diffusion.h"

#include <math.h>

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

// clamp(-1, 1), letting NaN through as torch does.
static float clip1(float x) { return x < -1.0f ? -1.0f : (x > 1.0f ? 1.0f : x); }

// pred_original_sample = (x_t - sqrt(1 - acp_t) eps) / sqrt(acp_t), clipped.
static float pred_x0(float x, float eps, float sqrt_beta_prod_t, float sqrt_acp_t) {
  const float scaled = sqrt_beta_prod_t * eps;
  return clip1((x - scaled) / sqrt_acp_t);
}

a3_status a3_ddpm_step(const a3_noise_schedule_table *s, int32_t t, int32_t t_prev,
                       const float *model_out, const float *x_t, const float *noise, float *x_prev,
                       int64_t n) {
  A3_TRY(check_step(s, t, t_prev, "ddpm"));
  if (t > 0 && !noise) return A3_FAIL(A3_ERR_INTERNAL, "ddpm: step at t = %d needs noise", (int)t);
  const float acp_t = s->alphas_cumprod[t], acp_prev = acp_or_one(s, t_prev);
  const float beta_prod_t = 1.0f - acp_t, beta_prod_prev = 1.0f - acp_prev;
  const float cur_alpha = acp_t / acp_prev; // the jump t -> t_prev may span several betas
  const float cur_beta = 1.0f - cur_alpha;
  const float sqrt_beta_prod_t = sqrtf(beta_prod_t), sqrt_acp_t = sqrtf(acp_t);
  // Posterior mean coefficients of x0 and x_t (DDPM eq. 7).
  const float c_x0 = (sqrtf(acp_prev) * cur_beta) / beta_prod_t;
  const float c_xt = sqrtf(cur_alpha) * beta_prod_prev / beta_prod_t;
  // "fixed_small": the posterior variance, clamped so that its sqrt stays finite.
  float var = (1.0f - acp_prev) / (1.0f - acp_t) * cur_beta;
  var = var < 1e-20f ? 1e-20f : var;
  const float std = sqrtf(var);
  for (int64_t i = 0; i < n; i++) {
    const float x0 = pred_x0(x_t[i], model_out[i], sqrt_beta_prod_t, sqrt_acp_t);
    const float a = c_x0 * x0, b = c_xt * x_t[i];
    float prev = a + b;
    if (t > 0) {
      const float z = std * noise[i];
      prev = prev + z;
    }
    x_prev[i] = prev;
  }
  return A3_OK;
}

a3_status a3_ddim_step(const a3_noise_schedule_table *s, int32_t t, int32_t t_prev, double eta,
                       const float *model_out, const float *x_t, const float *noise, float *x_prev,
                       int64_t n) {
  A3_TRY(check_step(s, t, t_prev, "ddim"));
  if (eta < 0) return A3_FAIL(A3_ERR_CONFIG, "ddim: eta %g must be >= 0", eta);
  if (eta > 0 && !noise) return A3_FAIL(A3_ERR_INTERNAL, "ddim: eta %g > 0 needs noise", eta);
  const float acp_t = s->alphas_cumprod[t], acp_prev = acp_or_one(s, t_prev);
  const float beta_prod_t = 1.0f - acp_t, beta_prod_prev = 1.0f - acp_prev;
  const float sqrt_beta_prod_t = sqrtf(beta_prod_t), sqrt_acp_t = sqrtf(acp_t);
  // sigma_t(eta) of the DDIM paper (eq. 16).
  const float var = (beta_prod_prev / beta_prod_t) * (1.0f - acp_t / acp_prev);
  const float std = (float)eta * sqrtf(var);
  const float c_eps = sqrtf(1.0f - acp_prev - std * std); // "direction pointing to x_t"
  const float c_x0 = sqrtf(acp_prev);
  for (int64_t i = 0; i < n; i++) {
    const float x0 = pred_x0(x_t[i], model_out[i], sqrt_beta_prod_t, sqrt_acp_t);
    const float dir = c_eps * model_out[i], a = c_x0 * x0;
    float prev = a + dir;
    if (eta > 0) {
      const float z = std * noise[i];
      prev = prev + z;
    }
    x_prev[i] = prev;
  }
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
