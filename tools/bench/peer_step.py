#!/usr/bin/python3
"""PyTorch peer of a3fta_bench_step: one training step of the same U-Net (the model
class of tools/unet_reference.py, PyTorch's default initialisation), timed the same
way and printing the same lines:

  # torch <version>; threads T; batch B; strategy S
  PARAMS <total> <trainable>
  FLOPS <forward GMAC> 0          (counted by hooks on Conv2d / Linear and attention)
  SGEMM <torch.mm GFLOP/s> 0      (best of --sgemm-reps 1024^3 matmuls)
  STEP <ms> <CPU ms>              (one per timed step, after --warmup steps; CPU time of
                                   the whole process, all threads)
  MEM 0 <params> <grads> <optimizer> <max RSS> <RSS before the model>   (bytes)
  LOSS <first> <last>

The step: optimizer.zero_grad(set_to_none=True); out = model(x_t, t);
loss = F.mse_loss(out, noise); loss.backward(); AdamW.step() (lr 1e-4, betas (0.95,
0.999), eps 1e-8, weight decay 1e-6 on conv / linear weights, none on norms and
biases, as a3fta's bench). --strategy attention: requires_grad only for parameters
whose name contains ".attentions." (autograd then stops below the lowest attention
block). Threads: torch.set_num_threads(--threads, default OMP_NUM_THREADS or the
cores). Run with Debian's /usr/bin/python3 (torch 1.13).
"""
import argparse
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, ".."))
import unet_reference as ref  # noqa: E402


def rss_now():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE")


def load_arch(path):
    import yaml
    with open(path) as f:
        arch = yaml.safe_load(f)["model"]["arch"]
    keys = ["sample_size", "in_channels", "out_channels", "block_out_channels",
            "layers_per_block", "down_block_types", "up_block_types", "norm_num_groups",
            "norm_eps", "attention_head_dim", "downsample_padding", "flip_sin_to_cos",
            "freq_shift", "center_input_sample", "mid_block_scale_factor"]
    cfg = {k: arch[k] for k in keys}
    for k in ("time_embedding_type", "act_fn", "dropout"):
        want = {"time_embedding_type": "positional", "act_fn": "silu", "dropout": 0.0}[k]
        if arch.get(k, want) != want:
            sys.exit(f"peer_step.py: {k}={arch[k]} is not supported by unet_reference.py")
    return cfg


def count_forward_macs(model, x, t):
    """MACs of Conv2d, Linear and the attention products (QK^T, PV) in one forward."""
    macs = [0]
    hooks = []

    def conv_hook(m, inp, out):
        macs[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    def linear_hook(m, inp, out):
        macs[0] += out.numel() * m.in_features

    def attn_hook(m, inp, out):
        B, C, H, W = inp[0].shape
        macs[0] += 2 * B * (H * W) ** 2 * C

    for mod in model.modules():
        if isinstance(mod, torch.nn.Conv2d):
            hooks.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, torch.nn.Linear):
            hooks.append(mod.register_forward_hook(linear_hook))
        elif isinstance(mod, ref.Attention):
            hooks.append(mod.register_forward_hook(attn_hook))
    with torch.no_grad():
        model(x, t)
    for h in hooks:
        h.remove()
    return macs[0]


def sgemm_peak(reps):
    n = 1024
    g = torch.Generator().manual_seed(7)
    a = torch.rand(n, n, generator=g) - 0.5
    b = torch.rand(n, n, generator=g) - 0.5
    c = torch.empty(n, n)
    best = 0.0
    for r in range(-1, reps):
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        gf = 2.0 * n ** 3 / (time.perf_counter() - t0) * 1e-9
        if r >= 0:
            best = max(best, gf)
    return best


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/fmnist-unet.yaml")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--strategy", choices=["full", "attention"], default="full")
    p.add_argument("--threads", type=int,
                   default=int(os.environ.get("OMP_NUM_THREADS", 0) or os.cpu_count()))
    p.add_argument("--sgemm-reps", type=int, default=10)
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    B = args.batch
    print(f"# torch {torch.__version__}; threads {torch.get_num_threads()}; batch {B}; "
          f"strategy {args.strategy}", flush=True)
    sg = sgemm_peak(args.sgemm_reps) if args.sgemm_reps > 0 else 0.0
    rss0 = rss_now()

    cfg = load_arch(args.config)
    model = ref.UNet2D(cfg)  # PyTorch's default initialisation
    if args.strategy == "attention":
        for name, prm in model.named_parameters():
            prm.requires_grad_(".attentions." in name)
    train = [(n, q) for n, q in model.named_parameters() if q.requires_grad]
    decay = [q for n, q in train if q.dim() > 1]
    no_decay = [q for n, q in train if q.dim() <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 1e-6},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.95, 0.999), eps=1e-8)

    S, cin = cfg["sample_size"], cfg["in_channels"]
    x0 = torch.rand(B, cin, S, S) * 2 - 1
    noise = torch.randn(B, cfg["out_channels"], S, S)
    t = torch.randint(0, 1000, (B,))
    betas = torch.linspace(1e-4, 0.02, 1000)
    acp = torch.cumprod(1 - betas, 0)[t].view(B, 1, 1, 1)
    x_t = acp.sqrt() * x0 + (1 - acp).sqrt() * noise

    fwd_macs = count_forward_macs(model, x_t, t)
    n_total = sum(q.numel() for q in model.parameters())
    n_train = sum(q.numel() for _, q in train)
    print(f"PARAMS {n_total} {n_train}")
    print(f"FLOPS {fwd_macs * 1e-9:.4f} 0")
    print(f"SGEMM {sg:.1f} 0", flush=True)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x_t, t)
        loss = F.mse_loss(out, noise)
        loss.backward()
        opt.step()
        return loss.item()

    first = last = 0.0
    for i in range(args.warmup):
        last = step()
        if i == 0:
            first = last
    for i in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        last = step()
        print(f"STEP {(time.perf_counter() - t0) * 1e3:.3f} {(time.process_time() - c0) * 1e3:.3f}",
              flush=True)
        if args.warmup == 0 and i == 0:
            first = last
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pbytes = 4 * n_total
    print(f"MEM 0 {pbytes} {4 * n_train} {8 * n_train} {maxrss} {rss0}")
    print(f"LOSS {first:.6f} {last:.6f}")


if __name__ == "__main__":
    main()
