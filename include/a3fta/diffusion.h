// a3fta diffusion: noise schedules, the epsilon-prediction training batch
// (timesteps, noise, x_t) and the DDPM / DDIM sampler steps, with the
// semantics of diffusers' DDPMScheduler and DDIMScheduler (prediction_type
// "epsilon", clip_sample True with range 1, no thresholding, steps_offset 0,
// "leading" timestep spacing, DDPM variance "fixed_small", DDIM
// set_alpha_to_one True).
//
// Arithmetic follows diffusers' float32 tensors operation by operation, so the
// samplers reproduce its trajectories to fp32 rounding (tests/diffusion,
// fixture by tools/scheduler_reference.py). The sampler does not run the
// model: the caller evaluates eps = model(x_t, t), then calls the step with
// it and with the noise it drew (a3_diffusion_randn), so tests can feed both.
//
// Randomness is counter-based (core's Philox), keyed by the seed and
// addressed by (stream, step, global sample index, element): every number is
// the same however the batch is split across ranks, threads or devices.
#ifndef A3FTA_DIFFUSION_H
#define A3FTA_DIFFUSION_H

#include "a3fta/backend.h"
#include "a3fta/backend_noise.h"
#include "a3fta/config.h"
#include "a3fta/core.h"

#include <stdint.h>

// RNG streams of this layer (core reserves the values below 16).
enum {
  A3_STREAM_TIMESTEP = A3_NOISE_STREAM_TIMESTEP, // training timesteps (16)
  A3_STREAM_TRAIN_NOISE = A3_NOISE_STREAM_TRAIN, // training noise eps (17)
  A3_STREAM_SAMPLE_INIT = 18,                    // sampling: the initial x_T
  A3_STREAM_SAMPLE_NOISE = 19,                   // sampling: the variance noise of each step
};

// The reference defaults (google/ddpm-cifar10-32): also used for scaled_linear,
// whose linspace runs over their square roots.
#define A3_BETA_START 1e-4
#define A3_BETA_END 0.02
#define A3_COSINE_MAX_BETA 0.999 // betas_for_alpha_bar's cap

// ---------------------------------------------------------------- schedules
typedef struct {
  a3_noise_schedule kind;
  int64_t T;             // num_train_timesteps
  float *betas;          // (T,)
  float *alphas;         // (T,) 1 - betas, rounded to fp32
  float *alphas_cumprod; // (T,) prod of alphas[0..t]
} a3_noise_schedule_table;

// betas for `kind` (T >= 2 for the linear ones), then alphas and their
// running product as diffusers computes them:
// - linear:        linspace(beta_start, beta_end, T)
// - scaled_linear: linspace(sqrt(beta_start), sqrt(beta_end), T)^2 (square in fp32)
// - cosine:        betas_for_alpha_bar ("squaredcos_cap_v2"), in double, capped
//                  at 0.999, rounded to fp32; beta_start/end are ignored.
// linspace is evaluated in double from the fp32-rounded ends and rounded once.
// torch.linspace's own fp32 rounding depends on which CPU kernel it runs
// (scalar, AVX2 and AVX-512 results differ by up to 2 ulp from each other),
// so "bit-identical to torch" is not defined there; the fixture test allows
// 2 ulp. alphas_cumprod accumulates in double and rounds each entry to fp32,
// which is exactly what torch.cumprod does on the CPU (verified bitwise).
a3_status a3_schedule_init(a3_noise_schedule_table *s, a3_noise_schedule kind, int64_t T,
                           double beta_start, double beta_end) A3_WARN_UNUSED;
// The same from given betas (T,) (kind is set to LINEAR; only the tables matter).
a3_status a3_schedule_from_betas(a3_noise_schedule_table *s, const float *betas,
                                 int64_t T) A3_WARN_UNUSED;
void a3_schedule_free(a3_noise_schedule_table *s); // safe on a zeroed or freed table

// ---------------------------------------------------------------- training
// Random numbers of one training step for the samples [sample0, sample0 +
// batch) of the global batch: rank r of a group with b samples per rank
// passes sample0 = r * b. step < 2^32, sample indices < 2^32.
//
// t (batch,): uniform in [0, T) without modulo bias.
void a3_diffusion_sample_timesteps(uint64_t seed, uint64_t step, uint64_t sample0, int64_t batch,
                                   int64_t T, int32_t *t);
// out (batch, per_sample): standard normal (Box-Muller in double, rounded to
// fp32), element j of sample i from counter (stream, step, sample0 + i, j / 2).
void a3_diffusion_randn(uint64_t seed, uint64_t stream, uint64_t step, uint64_t sample0,
                        int64_t batch, int64_t per_sample, float *out);

// x_t = sqrt(acp[t_i]) x0 + sqrt(1 - acp[t_i]) noise, per sample i (diffusers
// add_noise, fp32). x0, noise, x_t: (batch, per_sample); x_t may alias x0.
a3_status a3_diffusion_add_noise(const a3_noise_schedule_table *s, const int32_t *t, int64_t batch,
                                 int64_t per_sample, const float *x0, const float *noise,
                                 float *x_t) A3_WARN_UNUSED;

// One epsilon-prediction training batch: t ~ U[0, T), noise ~ N(0, 1)
// (streams A3_STREAM_TIMESTEP / A3_STREAM_TRAIN_NOISE), x_t = add_noise.
// The loss is mse(model(x_t, t), noise): `noise` is the target.
// t (batch,), x0, noise, x_t: (batch, per_sample).
// The backend's training_noise op computes the same from x0 in backend
// memory (the same formulas, a3fta/backend_noise.h; bitwise on the CPU).
a3_status a3_diffusion_training_batch(const a3_noise_schedule_table *s, uint64_t seed,
                                      uint64_t step, uint64_t sample0, int64_t batch,
                                      int64_t per_sample, const float *x0, int32_t *t, float *noise,
                                      float *x_t) A3_WARN_UNUSED;

// ---------------------------------------------------------------- sampling
// Noise convention of a sampling run (so every backend draws the same):
// x_T = a3_diffusion_randn(seed, A3_STREAM_SAMPLE_INIT, 0, sample0, ...), and
// the noise of step i (0-based, in timestep order) = a3_diffusion_randn(seed,
// A3_STREAM_SAMPLE_NOISE, i, sample0, ...).
// set_timesteps(N), "leading" spacing, steps_offset 0: with r = T / N (integer
// division), timesteps[i] = (N - 1 - i) * r, descending. 1 <= N <= T.
a3_status a3_sampler_timesteps(int64_t T, int64_t N, int32_t *timesteps) A3_WARN_UNUSED;
// The timestep a step from t lands on: t - T / N (negative after the last step).
int32_t a3_sampler_prev_timestep(int64_t T, int64_t N, int32_t t);

// One DDPM step from t to t_prev (t_prev < 0: the last step, alpha_prev = 1),
// as DDPMScheduler.step with num_inference_steps set: the effective beta of
// the jump is 1 - acp[t] / acp[t_prev]; variance (1 - acp_prev) / (1 - acp_t)
// * beta clamped at 1e-20; noise (n,) is added (scaled by sqrt(variance)) only
// when t > 0, and may be NULL when t == 0.
// model_out (predicted eps), x_t, noise, x_prev: (n,); x_prev may alias x_t.
a3_status a3_ddpm_step(const a3_noise_schedule_table *s, int32_t t, int32_t t_prev,
                       const float *model_out, const float *x_t, const float *noise, float *x_prev,
                       int64_t n) A3_WARN_UNUSED;

// One DDIM step from t to t_prev (t_prev < 0: alpha_prev = 1, set_alpha_to_one),
// as DDIMScheduler.step: std_dev_t = eta * sqrt(variance), direction
// sqrt(1 - acp_prev - std^2) * eps, and std * noise added when eta > 0
// (noise may be NULL when eta == 0). Shapes as a3_ddpm_step.
a3_status a3_ddim_step(const a3_noise_schedule_table *s, int32_t t, int32_t t_prev, double eta,
                       const float *model_out, const float *x_t, const float *noise, float *x_prev,
                       int64_t n) A3_WARN_UNUSED;

// Either of the two (eta is ignored by DDPM).
a3_status a3_sampler_step(a3_sampler sampler, const a3_noise_schedule_table *s, int32_t t,
                          int32_t t_prev, double eta, const float *model_out, const float *x_t,
                          const float *noise, float *x_prev, int64_t n) A3_WARN_UNUSED;

// The scalars of one step of either sampler (a3_sampler_scalars, backend.h),
// for the backend's sampler_step op, which then computes exactly what the
// step functions above compute (they are this + the CPU backend's op):
// add_noise is set when the step adds noise (DDPM: t > 0; DDIM: eta > 0).
// The same checks and errors as the steps (t, t_prev, eta), less the noise.
a3_status a3_sampler_prepare(a3_sampler sampler, const a3_noise_schedule_table *s, int32_t t,
                             int32_t t_prev, double eta, a3_sampler_scalars *out) A3_WARN_UNUSED;

#endif
