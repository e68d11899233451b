#!/usr/bin/python3
"""Reference noise schedules and DDPM/DDIM samplers in PyTorch, written
independently of a3fta's C code from the documented semantics of diffusers'
DDPMScheduler and DDIMScheduler (diffusers itself is not imported), and the
writer of the fixture the C tests compare against.

Regenerate the fixture (deterministic: fixed seeds, CPU, float32 like diffusers):

    /usr/bin/python3 tools/scheduler_reference.py tests/diffusion/sampler_golden.h5

(Debian's /usr/bin/python3 with python3-torch 1.13 and python3-h5py.)

Fixture layout (all arrays float32 unless said):
  /schedules/<linear|scaled_linear|cosine>/betas, alphas_cumprod   (T = 1000)
  /add_noise: x0 (B, D), noise (B, D), t (B) int32, x_t (B, D)       (linear schedule)
  /<case>: one sampling run; attrs sampler ("ddpm"|"ddim"), schedule, steps, eta
      timesteps   (N) int32   diffusers' set_timesteps(N), "leading" spacing
      x_init      (D)         the starting sample x_T
      model_out   (N, D)      the "model output" fed to step i: 0.3 x + 0.1 sin(t), fp32
      noise       (N, D)      the variance noise of step i (absent when no step adds any)
      trajectory  (N, D)      the sample after step i
The C sampler test feeds x_init, model_out and noise to its own step functions.

Notes on float32 semantics (what diffusers does, reproduced here):
- betas: torch.linspace(..., dtype=float32). Its rounding depends on the CPU
  kernel torch picks (scalar, AVX2, AVX-512 differ by up to 2 ulp), so the C
  code does not chase it bit for bit: see include/a3fta/diffusion.h.
- alphas_cumprod: torch.cumprod of float32 alphas, which on the CPU accumulates
  in double and rounds each entry to float32.
- every scheduler scalar is a 0-dim float32 tensor, so the step arithmetic is
  float32 throughout; `x ** 0.5` is sqrt and `x ** 2` is x * x in torch.
"""
import math
import sys

import h5py
import numpy as np
import torch

T = 1000
BETA_START, BETA_END = 1e-4, 0.02


# ---------------------------------------------------------------- schedules
def betas_for(schedule):
    if schedule == "linear":
        return torch.linspace(BETA_START, BETA_END, T, dtype=torch.float32)
    if schedule == "scaled_linear":
        return torch.linspace(BETA_START**0.5, BETA_END**0.5, T, dtype=torch.float32) ** 2
    if schedule == "cosine":  # "squaredcos_cap_v2": betas_for_alpha_bar, max_beta 0.999

        def alpha_bar(t):
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2

        betas = [min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), 0.999) for i in range(T)]
        return torch.tensor(betas, dtype=torch.float32)
    raise ValueError(schedule)


class Schedule:
    def __init__(self, schedule):
        self.betas = betas_for(schedule)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.one = torch.tensor(1.0)  # DDPM's alpha_prod_t_prev at the end; DDIM's set_alpha_to_one

    def acp(self, t):
        return self.alphas_cumprod[t] if t >= 0 else self.one


def leading_timesteps(n):
    step_ratio = T // n
    return (np.arange(0, n) * step_ratio).round()[::-1].copy().astype(np.int64)


def add_noise(s, x0, noise, t):
    acp = s.alphas_cumprod[t]
    a = (acp**0.5).flatten()[:, None]
    b = ((1 - acp) ** 0.5).flatten()[:, None]
    return a * x0 + b * noise


# ---------------------------------------------------------------- samplers
def ddpm_step(s, n_steps, model_output, t, sample, noise):
    """DDPMScheduler.step: epsilon, fixed_small, clip_sample (range 1), no thresholding."""
    prev_t = t - T // n_steps
    alpha_prod_t = s.acp(t)
    alpha_prod_t_prev = s.acp(prev_t)
    beta_prod_t = 1 - alpha_prod_t
    beta_prod_t_prev = 1 - alpha_prod_t_prev
    current_alpha_t = alpha_prod_t / alpha_prod_t_prev
    current_beta_t = 1 - current_alpha_t

    pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
    pred_original_sample = pred_original_sample.clamp(-1.0, 1.0)
    pred_original_sample_coeff = (alpha_prod_t_prev ** (0.5) * current_beta_t) / beta_prod_t
    current_sample_coeff = current_alpha_t ** (0.5) * beta_prod_t_prev / beta_prod_t
    pred_prev_sample = pred_original_sample_coeff * pred_original_sample + current_sample_coeff * sample

    if t > 0:
        # _get_variance(t), "fixed_small"
        variance = (1 - alpha_prod_t_prev) / (1 - alpha_prod_t) * current_beta_t
        variance = torch.clamp(variance, min=1e-20)
        pred_prev_sample = pred_prev_sample + (variance**0.5) * noise
    return pred_prev_sample


def ddim_step(s, n_steps, model_output, t, sample, eta, noise):
    """DDIMScheduler.step: epsilon, clip_sample (range 1), set_alpha_to_one, no clipped eps."""
    prev_t = t - T // n_steps
    alpha_prod_t = s.alphas_cumprod[t]
    alpha_prod_t_prev = s.acp(prev_t)
    beta_prod_t = 1 - alpha_prod_t

    pred_original_sample = (sample - beta_prod_t ** (0.5) * model_output) / alpha_prod_t ** (0.5)
    pred_epsilon = model_output
    pred_original_sample = pred_original_sample.clamp(-1.0, 1.0)

    beta_prod_t_prev = 1 - alpha_prod_t_prev
    variance = (beta_prod_t_prev / beta_prod_t) * (1 - alpha_prod_t / alpha_prod_t_prev)
    std_dev_t = eta * variance ** (0.5)

    pred_sample_direction = (1 - alpha_prod_t_prev - std_dev_t**2) ** (0.5) * pred_epsilon
    prev_sample = alpha_prod_t_prev ** (0.5) * pred_original_sample + pred_sample_direction
    if eta > 0:
        prev_sample = prev_sample + std_dev_t * noise
    return prev_sample


def fake_model(x, t):
    # A deterministic stand-in for the U-Net, large enough to drive clipping.
    return 0.3 * x + 0.1 * math.sin(t)


def run_case(schedule, sampler, n_steps, eta, dim, seed):
    s = Schedule(schedule)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(dim, generator=g, dtype=torch.float32)
    ts = leading_timesteps(n_steps)
    x_init = x.clone()
    outs, noises, traj = [], [], []
    for t in ts:
        t = int(t)
        eps = fake_model(x, t)
        noise = torch.randn(dim, generator=g, dtype=torch.float32)
        if sampler == "ddpm":
            x = ddpm_step(s, n_steps, eps, t, x, noise)
        else:
            x = ddim_step(s, n_steps, eps, t, x, eta, noise)
        outs.append(eps)
        noises.append(noise)
        traj.append(x)
    uses_noise = sampler == "ddpm" or eta > 0
    return dict(timesteps=ts.astype(np.int32), x_init=x_init.numpy(),
                model_out=torch.stack(outs).numpy(),
                noise=torch.stack(noises).numpy() if uses_noise else None,
                trajectory=torch.stack(traj).numpy())


# name: (schedule, sampler, steps, eta, D)
CASES = {
    "ddpm_10": ("linear", "ddpm", 10, 0.0, 64),
    "ddpm_50": ("linear", "ddpm", 50, 0.0, 64),
    "ddpm_1000": ("linear", "ddpm", 1000, 0.0, 8),
    "ddpm_cosine_10": ("cosine", "ddpm", 10, 0.0, 64),
    "ddim_eta0_10": ("linear", "ddim", 10, 0.0, 64),
    "ddim_eta0_50": ("linear", "ddim", 50, 0.0, 64),
    "ddim_eta0.5_10": ("linear", "ddim", 10, 0.5, 64),
    "ddim_eta0.5_50": ("linear", "ddim", 50, 0.5, 64),
    "ddim_scaled_linear_eta1_10": ("scaled_linear", "ddim", 10, 1.0, 64),
}


def main(path):
    torch.set_num_threads(1)
    with h5py.File(path, "w") as f:
        for name in ["linear", "scaled_linear", "cosine"]:
            s = Schedule(name)
            grp = f.create_group(f"schedules/{name}")
            grp["betas"] = s.betas.numpy()
            grp["alphas_cumprod"] = s.alphas_cumprod.numpy()

        s = Schedule("linear")
        g = torch.Generator().manual_seed(1)
        x0 = torch.rand(6, 16, generator=g) * 2 - 1
        noise = torch.randn(6, 16, generator=g)
        t = torch.tensor([0, 1, 499, 500, 998, 999])
        grp = f.create_group("add_noise")
        grp["x0"], grp["noise"] = x0.numpy(), noise.numpy()
        grp["t"] = t.numpy().astype(np.int32)
        grp["x_t"] = add_noise(s, x0, noise, t).numpy()

        for i, (name, (schedule, sampler, n, eta, dim)) in enumerate(CASES.items()):
            r = run_case(schedule, sampler, n, eta, dim, seed=100 + i)
            grp = f.create_group(name)
            grp.attrs.update(sampler=sampler, schedule=schedule, steps=n, eta=eta)
            for k, v in r.items():
                if v is not None:
                    grp[k] = v


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT.h5")
    main(sys.argv[1])
