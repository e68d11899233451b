#!/usr/bin/python3
"""Reference values for a3fta's optimiser layer (src/train): torch.optim.AdamW,
torch.nn.utils.clip_grad_norm_, diffusers' LR schedules (its lambdas run by
torch's LambdaLR) and diffusers' EMAModel decay with EMA warm-up (re-written
here from its documented semantics; diffusers is not imported).

Regenerate the fixture (deterministic: fixed seeds, CPU, float32):

    /usr/bin/python3 tools/optim_reference.py tests/train/optim_golden.h5

Fixture layout (float32 unless said):
  /adamw   attrs lr_base, beta1, beta2, eps, weight_decay, steps
           segments (S, 3) int64: offset, count, decay (0/1) into the flat buffer
           lr (steps,) float64   the learning rate of each update (a warm-up from 0)
           params0 (N,)          the flat buffer before the first update (it has
                                 frozen elements outside the segments)
           grads (steps, N)      the gradients of each update (0 where frozen)
           params (steps, N)     after each update
           exp_avg, exp_avg_sq (steps, M)  torch's state, compact: segment after segment
  /clip/<big|small>: grads (N,), max_norm attr, norm (float64 scalar), clipped (N,)
           (segments as /adamw; frozen gradient entries are huge and must be ignored)
  /lr/<name>: attrs kind ("cosine"|"constant"), warmup, total; factor (K,) float64
           the LambdaLR factor of update k = 0..K-1
  /ema: attrs max_decay; decay (steps,) float64 for optimization_step 1..steps,
        big_steps (B,) int64 with big_decay (B,) float64;
        params0 (N,) the weights the EMA starts from (a copy of the trainable ones),
        params (U, N) the weights at each update, ema (U, M) after each update
"""
import math
import sys

import h5py
import numpy as np
import torch

# ---------------------------------------------------------------- the model
# A flat buffer of named tensors, as a3fta lays them out; "frozen" is not trained.
TENSORS = [  # name, shape, kind: "w" decays, "b"/"n" (bias, norm) do not
    ("conv.weight", (4, 3, 3, 3), "w"),
    ("conv.bias", (4,), "b"),
    ("frozen.weight", (5, 4), "frozen"),
    ("norm.weight", (4,), "n"),
    ("norm.bias", (4,), "b"),
    ("proj.weight", (16, 8), "w"),
    ("proj.bias", (16,), "b"),
]


def layout():
    offs, off = [], 0
    for _, shape, _ in TENSORS:
        offs.append(off)
        off += int(np.prod(shape))
    return offs, off


def segments():
    offs, _ = layout()
    return np.array([[o, int(np.prod(s)), 1 if k == "w" else 0]
                     for o, (_, s, k) in zip(offs, TENSORS) if k != "frozen"], dtype=np.int64)


def views(flat):
    offs, _ = layout()
    return [flat[o:o + int(np.prod(s))].view(s) for o, (_, s, _) in zip(offs, TENSORS)]


# ---------------------------------------------------------------- AdamW
def adamw(f, g):
    lr_base, betas, eps, wd, steps = 1e-3, (0.95, 0.999), 1e-8, 1e-2, 5
    lrs = [0.0, 0.5e-3, 1e-3, 0.8e-3, 0.3e-3]  # a warm-up from 0, then a decay
    _, n = layout()
    flat0 = torch.randn(n, generator=g)
    flat = flat0.clone()
    tensors = [t.detach().requires_grad_(True) for t in views(flat)]
    decay = [t for t, (_, _, k) in zip(tensors, TENSORS) if k == "w"]
    no_decay = [t for t, (_, _, k) in zip(tensors, TENSORS) if k in ("b", "n")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=lr_base, betas=betas, eps=eps, foreach=False)
    order = [t for t, (_, _, k) in zip(tensors, TENSORS) if k != "frozen"]  # segment order
    grads, params, m, v = [], [], [], []
    for step in range(steps):
        gflat = torch.zeros(n)
        for i, (t, (_, shape, kind)) in enumerate(zip(tensors, TENSORS)):
            if kind == "frozen":
                t.grad = None
                continue
            gr = torch.randn(shape, generator=g) * (10.0 ** (i % 3 - 2))
            if step == 2 and kind == "n":
                gr.zero_()  # a zero gradient: v decays, the update runs on m alone
            t.grad = gr
        for o, t, (_, shape, _) in zip(layout()[0], tensors, TENSORS):
            if t.grad is not None:
                gflat[o:o + int(np.prod(shape))] = t.grad.flatten()
        for group in opt.param_groups:
            group["lr"] = lrs[step]
        opt.step()
        grads.append(gflat)
        params.append(torch.cat([t.detach().flatten() for t in tensors]))
        m.append(torch.cat([opt.state[t]["exp_avg"].flatten() for t in order]))
        v.append(torch.cat([opt.state[t]["exp_avg_sq"].flatten() for t in order]))
    grp = f.create_group("adamw")
    grp.attrs.update(lr_base=lr_base, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=wd,
                     steps=steps)
    grp["segments"] = segments()
    grp["lr"] = np.array(lrs, dtype=np.float64)
    grp["params0"] = flat0.numpy()
    for name, seq in (("grads", grads), ("params", params), ("exp_avg", m), ("exp_avg_sq", v)):
        grp[name] = torch.stack(seq).numpy()


# ---------------------------------------------------------------- clipping
def clip(f, g):
    _, n = layout()
    for name, scale, max_norm in (("big", 1.0, 1.0), ("small", 1e-2, 1.0)):
        gflat = torch.randn(n, generator=g) * scale
        tensors = [t.detach().clone().requires_grad_(True) for t in views(torch.zeros(n))]
        for t, gv, (_, _, kind) in zip(tensors, views(gflat), TENSORS):
            t.grad = gv.clone()
        trainable = [t for t, (_, _, k) in zip(tensors, TENSORS) if k != "frozen"]
        norm = torch.nn.utils.clip_grad_norm_(trainable, max_norm, norm_type=2.0)
        clipped = torch.cat([t.grad.flatten() for t in tensors])
        offs, _ = layout()
        for o, (_, shape, kind) in zip(offs, TENSORS):
            if kind == "frozen":  # huge, to show that the norm ignores it
                gflat[o:o + int(np.prod(shape))] = 1e6
                clipped[o:o + int(np.prod(shape))] = 1e6
        grp = f.create_group(f"clip/{name}")
        grp.attrs["max_norm"] = max_norm
        grp["grads"], grp["clipped"] = gflat.numpy(), clipped.numpy()
        grp["norm"] = np.float64(norm.item())


# ---------------------------------------------------------------- LR schedules
def lr_lambda(kind, warmup, total):
    """diffusers get_constant_schedule_with_warmup / get_cosine_schedule_with_warmup."""

    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        if kind == "constant":
            return 1.0
        progress = float(step - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(0.5) * 2.0 * progress)))

    return f


def lr(f):
    for name, kind, warmup, total in (("cosine_w5_t20", "cosine", 5, 20),
                                      ("cosine_w0_t10", "cosine", 0, 10),
                                      ("constant_w5", "constant", 5, 20),
                                      ("constant_w0", "constant", 0, 20),
                                      ("cosine_w1_t3", "cosine", 1, 3)):
        p = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(kind, warmup, total))
        factors = []
        for _ in range(total + 2):  # 2 past the end: the cosine stays at 0
            factors.append(opt.param_groups[0]["lr"])  # the lr the next update uses
            opt.step()
            sched.step()
        grp = f.create_group(f"lr/{name}")
        grp.attrs.update(kind=kind, warmup=warmup, total=total)
        grp["factor"] = np.array(factors, dtype=np.float64)


# ---------------------------------------------------------------- EMA
class EMA:
    """EMAModel(use_ema_warmup=True, inv_gamma=1.0, power=3/4, update_after_step=0,
    min_decay=0.0, decay=max_decay)."""

    def __init__(self, params, max_decay):
        self.shadow = [p.clone().detach() for p in params]
        self.max_decay, self.optimization_step = max_decay, 0

    def get_decay(self, optimization_step):
        step = max(0, optimization_step - 0 - 1)
        if step <= 0:
            return 0.0
        value = 1 - (1 + step / 1.0) ** -0.75
        return max(min(value, self.max_decay), 0.0)

    @torch.no_grad()
    def step(self, params):
        self.optimization_step += 1
        one_minus_decay = 1 - self.get_decay(self.optimization_step)
        for s, p in zip(self.shadow, params):
            s.sub_(one_minus_decay * (s - p))


def ema(f, g):
    max_decay, updates = 0.9999, 6
    _, n = layout()
    flat = torch.randn(n, generator=g)
    flat0 = flat.clone()
    tensors = views(flat)
    trainable = [t for t, (_, _, k) in zip(tensors, TENSORS) if k != "frozen"]
    e = EMA(trainable, max_decay)  # created from the initial weights, as the training script
    before, after = [], []
    for _ in range(updates):
        flat.add_(torch.randn(n, generator=g) * 0.1)  # "an optimizer step"
        before.append(flat.clone())
        e.step(trainable)
        after.append(torch.cat([s.flatten() for s in e.shadow]))
    big = np.array([1, 2, 3, 10, 100, 1000, 10**4, 10**5, 214_000, 10**6, 10**7], dtype=np.int64)
    grp = f.create_group("ema")
    grp.attrs["max_decay"] = max_decay
    grp["params0"] = flat0.numpy()
    grp["decay"] = np.array([e.get_decay(k) for k in range(1, 21)], dtype=np.float64)
    grp["big_steps"] = big
    grp["big_decay"] = np.array([e.get_decay(int(k)) for k in big], dtype=np.float64)
    grp["params"] = torch.stack(before).numpy()
    grp["ema"] = torch.stack(after).numpy()


def main(path):
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    with h5py.File(path, "w") as f:
        adamw(f, g)
        clip(f, g)
        lr(f)
        ema(f, g)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} OUT.h5")
    main(sys.argv[1])
