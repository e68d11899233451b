#!/usr/bin/python3
"""PyTorch peer of a3fta_bench_step: one training step of the same U-Net (the model
class of tools/unet_reference.py, PyTorch's default initialisation), timed the same
way and printing the same lines:

  # torch <version>; threads T; batch B; strategy S
  PARAMS <total> <trainable>
  EXTRAS none | adapter <rank> <activation> <placement> <gate 0|1> | lora <rank> <alpha>
  FLOPS <forward GMAC> 0          (counted by hooks on Conv2d / Linear and attention)
  SGEMM <torch.mm GFLOP/s> 0      (best of --sgemm-reps 1024^3 matmuls)
  STEP <ms> <CPU ms>              (one per timed step, after --warmup steps; CPU time of
                                   the whole process, all threads)
  MEM 0 <params> <grads> <optimizer> <max RSS> <RSS before the model>   (bytes)
  LOSS <first> <last>

The step: optimizer.zero_grad(set_to_none=True); out = model(x_t, t);
loss = F.mse_loss(out, noise); loss.backward(); AdamW.step() (lr 1e-4, betas (0.95,
0.999), eps 1e-8, weight decay 1e-6 on conv / linear weights, none on norms and
biases, as a3fta's bench). --strategy (default full) builds and trains the model as
a3fta's strategies do (src/model/strategy.c): the extras of tools/unet_reference.py in
every attention block (a3fta, adapter: the adapter; lora: LoRA on to_q, to_k, to_v,
to_out.0) with the config's strategy.adapter / strategy.lora settings (a3fta's schema
defaults where the config has none; -o strategy.adapter.rank=16 and the like override),
the adapter's up and lora_B zero as in a3fta, and requires_grad on
  full       every parameter
  attention  <...>.attentions.<i>.{group_norm, to_q, to_k, to_v, to_out.0}.{weight, bias}
  a3fta      attention + <...>.attentions.<i>.adapter.*
  adapter    the adapters only
  lora       the parameters whose name contains "lora"
  bitfit     every ".bias" of the base model (GroupNorm biases included)
(autograd then computes no gradient below the lowest trainable parameter).
Threads: torch.set_num_threads(--threads, default OMP_NUM_THREADS or the cores). Run
with Debian's /usr/bin/python3 (torch 1.13).

--device cuda (torch 2.x; tools/bench/run_step_gpu.sh runs it against
a3fta_bench_step --backend cuda): the same model (built and initialised on the CPU as
above, then moved) and batch on the GPU; --precision fp32 (TF32 explicitly off:
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False),
tf32 (both True) or bf16 (TF32 off, torch.autocast("cuda", torch.bfloat16) around the
forward and the loss). The step clips the gradient norm as a3fta's device step does
(torch.nn.utils.clip_grad_norm_ with --grad-clip, default 1.0 = a3fta's train.grad_clip;
0 = off; the CPU step never clips), and each STEP is timed up to a
torch.cuda.synchronize() (the loss is read after it). Several combinations in one process
(the torch import and CUDA start cost seconds each): --strategy and --precision may repeat
or take comma lists; every strategy runs with every precision, each block of lines
preceded by "COMBO <strategy> <precision>" (printed on cuda or whenever there are several).
The lines change meaning on cuda:
  # torch <version>; cuda <device name>; precision P; batch B; strategy S
  SGEMM <torch.mm 4096^3 GFLOP/s in that precision> 0   (best of --sgemm-reps, 4 mm + sync)
  PIPE <ms>  then --steps more steps back to back, one synchronize at the end (no
      loss read in between): wall time over steps
  MEM <torch.cuda.max_memory_allocated since the model was built> <params> <grads>
      <optimizer> <host max RSS> <host RSS before the model>

--profile N: after everything above, N more steps under torch.profiler (the GPU's
kernels too on cuda); their per-op table goes to stderr after a line
"TORCH_PROFILE <device>", sorted by self time on that device (the peer of a3fta's
A3FTA_PROFILE=1; tests/gpu/run.sh prints both for the cifar full bf16 step).
"""
import argparse
import contextlib
import itertools
import os
import re
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


# a3fta's schema defaults of strategy.adapter / strategy.lora (src/io/config_schema.c).
STRATEGY_DEFAULTS = {"adapter": {"rank": 8, "activation": "gelu", "placement": "pre_out",
                                 "gate": False},
                     "lora": {"rank": 4, "alpha": 4.0}}


def load_config(path, overrides):
    """(arch dict for unet_reference, strategy.adapter / strategy.lora settings)."""
    import yaml
    with open(path) as f:
        doc = yaml.safe_load(f)
    strat = {k: dict(v, **((doc.get("strategy") or {}).get(k) or {}))
             for k, v in STRATEGY_DEFAULTS.items()}
    for o in overrides:
        key, eq, val = o.partition("=")
        parts = key.split(".")
        if not eq or len(parts) != 3 or parts[0] != "strategy" or parts[1] not in strat \
                or parts[2] not in strat[parts[1]]:
            sys.exit(f"peer_step.py: -o {o}: only strategy.adapter.* / strategy.lora.* "
                     "keys are supported")
        strat[parts[1]][parts[2]] = yaml.safe_load(val)
    return load_arch(doc["model"]["arch"]), strat


def load_arch(arch):
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


def extras_of(strategy, strat):
    """unet_reference's extras for a strategy (a3_unet_extras_from_strategy)."""
    if strategy in ("a3fta", "adapter"):
        a = strat["adapter"]
        return dict(adapter_rank=int(a["rank"]), adapter_activation=a["activation"],
                    adapter_placement=a["placement"], adapter_gate=bool(a["gate"]))
    if strategy == "lora":
        return dict(lora_rank=int(strat["lora"]["rank"]), lora_alpha=float(strat["lora"]["alpha"]))
    return None


def extras_line(e):
    if not e:
        return "EXTRAS none"
    if "adapter_rank" in e:
        return (f"EXTRAS adapter {e['adapter_rank']} {e['adapter_activation']} "
                f"{e['adapter_placement']} {int(e['adapter_gate'])}")
    return f"EXTRAS lora {e['lora_rank']} {e['lora_alpha']:g}"


ATTN = re.compile(r"(^|\.)attentions\.\d+\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)$")
ADAPTER = re.compile(r"(^|\.)attentions\.\d+\.adapter\.")


def trains(strategy, name):
    """a3_strategy_trains (src/model/strategy.c)."""
    lora = "lora" in name
    adapter = not lora and ADAPTER.search(name) is not None
    attention = ATTN.search(name) is not None
    return {"full": True,
            "attention": attention,
            "a3fta": attention or adapter,
            "adapter": adapter,
            "lora": lora,
            "bitfit": not lora and not adapter and name.endswith(".bias")}[strategy]


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


def cuda_gemm_peak(reps, precision):
    """Best GFLOP/s of torch.mm 4096^3 on the GPU (4 per timing), in `precision`."""
    n = 4096
    dt = torch.bfloat16 if precision == "bf16" else torch.float32
    g = torch.Generator().manual_seed(7)
    a = (torch.rand(n, n, generator=g) - 0.5).to("cuda", dt)
    b = (torch.rand(n, n, generator=g) - 0.5).to("cuda", dt)
    c = torch.empty(n, n, device="cuda", dtype=dt)
    best = 0.0
    for r in range(-1, reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(4):
            torch.mm(a, b, out=c)
        torch.cuda.synchronize()
        gf = 4 * 2.0 * n ** 3 / (time.perf_counter() - t0) * 1e-9
        if r >= 0:
            best = max(best, gf)
    del a, b, c
    return best


STRATEGIES = ["full", "attention", "a3fta", "adapter", "lora", "bitfit"]
PRECISIONS = ["fp32", "tf32", "bf16"]


def listed(values, default, allowed, what):
    """--strategy / --precision: repeated and comma-separated, in order, no duplicates."""
    out = []
    for v in values or [default]:
        for x in v.split(","):
            x = x.strip()
            if x not in allowed:
                sys.exit(f"peer_step.py: {what} {x}: one of {', '.join(allowed)}")
            if x not in out:
                out.append(x)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="configs/fmnist-unet.yaml")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--strategy", action="append",
                   help="full|attention|a3fta|adapter|lora|bitfit (default full); "
                        "repeat or comma-separate for several")
    p.add_argument("-o", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="strategy.adapter.* / strategy.lora.* settings, as a3fta's -o")
    p.add_argument("--threads", type=int,
                   default=int(os.environ.get("OMP_NUM_THREADS", 0) or os.cpu_count()))
    p.add_argument("--sgemm-reps", type=int, default=10)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", action="append",
                   help="fp32|tf32|bf16 (cuda only but fp32; default fp32); repeat or "
                        "comma-separate for several")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="N more steps under torch.profiler; its table to stderr")
    p.add_argument("--grad-clip", type=float, default=1.0,
                   help="max gradient norm of the cuda step (0: off); the CPU step never clips")
    args = p.parse_args()
    strategies = listed(args.strategy, "full", STRATEGIES, "--strategy")
    precisions = listed(args.precision, "fp32", PRECISIONS, "--precision")
    if args.device == "cpu" and precisions != ["fp32"]:
        sys.exit("peer_step.py: --precision tf32 / bf16 need --device cuda")
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("peer_step.py: --device cuda: torch sees no GPU "
                 f"(torch {torch.__version__}, CUDA {torch.version.cuda})")

    torch.set_num_threads(args.threads)
    combos = list(itertools.product(strategies, precisions))
    cfg, strat = load_config(args.config, args.overrides)
    peaks = {}
    for strategy, precision in combos:
        if args.device == "cuda" or len(combos) > 1:
            print(f"COMBO {strategy} {precision}", flush=True)
        run(args, cfg, strat, strategy, precision, peaks)


def run(args, cfg, strat, strategy, precision, peaks):
    """One strategy in one precision: the lines of the module docstring."""
    cuda = args.device == "cuda"
    torch.manual_seed(1)
    B = args.batch
    if cuda:
        tf32 = precision == "tf32"
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
        print(f"# torch {torch.__version__}; cuda {torch.cuda.get_device_name()}; "
              f"precision {precision}; batch {B}; strategy {strategy}", flush=True)
        if precision not in peaks:
            peaks[precision] = cuda_gemm_peak(args.sgemm_reps, precision) \
                if args.sgemm_reps > 0 else 0.0
        sg = peaks[precision]
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        print(f"# torch {torch.__version__}; threads {torch.get_num_threads()}; batch {B}; "
              f"strategy {strategy}", flush=True)
        if "cpu" not in peaks:
            peaks["cpu"] = sgemm_peak(args.sgemm_reps) if args.sgemm_reps > 0 else 0.0
        sg = peaks["cpu"]
    rss0 = rss_now()

    extras = extras_of(strategy, strat)
    model = ref.UNet2D(cfg, extras)  # PyTorch's default initialisation
    with torch.no_grad():  # a3fta's init of the added modules: the added term starts at 0
        for name, prm in model.named_parameters():
            if name.endswith((".adapter.up.weight", ".adapter.up.bias", ".lora_B.weight")):
                prm.zero_()
    for name, prm in model.named_parameters():
        prm.requires_grad_(trains(strategy, name))
    dev = torch.device(args.device)
    model.to(dev)
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
    x_t, noise, t = x_t.to(dev), noise.to(dev), t.to(dev)

    fwd_macs = count_forward_macs(model, x_t, t)
    n_total = sum(q.numel() for q in model.parameters())
    n_train = sum(q.numel() for _, q in train)
    print(f"PARAMS {n_total} {n_train}")
    print(extras_line(extras))
    print(f"FLOPS {fwd_macs * 1e-9:.4f} 0")
    print(f"SGEMM {sg:.1f} 0", flush=True)

    params = [q for _, q in train]
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) \
        if cuda and precision == "bf16" else contextlib.nullcontext
    clip = args.grad_clip if cuda else 0.0

    def step(sync=True):
        opt.zero_grad(set_to_none=True)
        with autocast():
            out = model(x_t, t)
            loss = F.mse_loss(out, noise)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if cuda:  # the loss is read after the step's timing
            if sync:
                torch.cuda.synchronize()
            return loss
        return loss.item()

    first = last = 0.0
    for i in range(args.warmup):
        last = float(step())
        if i == 0:
            first = last
    for i in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = step()
        print(f"STEP {(time.perf_counter() - t0) * 1e3:.3f} {(time.process_time() - c0) * 1e3:.3f}",
              flush=True)
        last = float(loss)
        if args.warmup == 0 and i == 0:
            first = last
    if cuda:
        t0 = time.perf_counter()
        for i in range(args.steps):
            loss = step(sync=False)
        torch.cuda.synchronize()
        print(f"PIPE {(time.perf_counter() - t0) * 1e3 / max(args.steps, 1):.3f}", flush=True)
        last = float(loss)
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    pbytes = 4 * n_total
    dev_peak = torch.cuda.max_memory_allocated() if cuda else 0
    print(f"MEM {dev_peak} {pbytes} {4 * n_train} {8 * n_train} {maxrss} {rss0}")
    print(f"LOSS {first:.6f} {last:.6f}", flush=True)
    if args.profile > 0:  # after the lines above, which it must not change
        profile_steps(step, args.profile, cuda)


def profile_steps(step, n, cuda):
    """n steps under torch.profiler; the per-op table (self time on the device) to stderr."""
    from torch.profiler import ProfilerActivity, profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(n):
            step()
        if cuda:
            torch.cuda.synchronize()
    ops = prof.key_averages()
    sort = "self_cpu_time_total"
    if cuda:  # torch 2.4 renamed the CUDA columns "device"
        sort = "self_device_time_total" if ops and hasattr(ops[0], "self_device_time_total") \
            else "self_cuda_time_total"
    print(f"TORCH_PROFILE {'cuda' if cuda else 'cpu'} ({n} steps, sorted by {sort})",
          file=sys.stderr, flush=True)
    print(ops.table(sort_by=sort, row_limit=30), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
