#!/usr/bin/python3
"""PyTorch peer of a3fta_bench_ops: the same ops at the same shapes, timed the
same way (median ms over --iters calls after 2 warm-up calls), printing the
same rows:  ROW <name> <fwd|bwd> <ms> <GFLOP per call> <bytes>.

The ops are called as a PyTorch model trains them: the downsampler pads with
F.pad then convolves (diffusers' Downsample2D), backward ops are ATen's own
backward kernels (what autograd dispatches to), GroupNorm+SiLU is
native_group_norm then silu. Threads: torch.set_num_threads(--threads, default
OMP_NUM_THREADS or the core count). Run with Debian's /usr/bin/python3 (torch 1.13).
"""
import argparse
import os
import statistics
import time

import torch
import torch.nn.functional as F

aten = torch.ops.aten


def timed(fn, iters):
    fn(), fn()
    t = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        t.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(t)


def selected(args, name):
    return args.only is None or args.only in name


def bench_conv(args, name, B, C, H, OC, K, S, pt, pb):
    if not selected(args, name):
        return
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, C, H, H, generator=g) * 2 - 1
    w = torch.rand(OC, C, K, K, generator=g) * 2 - 1
    b = torch.rand(OC, generator=g) * 2 - 1
    asym = pt != pb
    pad = 0 if asym else pt

    def fwd():
        xp = F.pad(x, (pt, pb, pt, pb)) if asym else x
        return F.conv2d(xp, w, b, stride=S, padding=pad)

    y = fwd()
    dy = torch.rand_like(y) * 2 - 1
    xp = F.pad(x, (pt, pb, pt, pb)) if asym else x

    def bwd():
        dx, dw, db = aten.convolution_backward(dy, xp, w, [OC], [S, S], [pad, pad], [1, 1], False,
                                               [0, 0], 1, [True, True, True])
        if asym:  # F.pad's backward: the slice of the padded gradient
            dx = dx[:, :, pt:pt + H, pt:pt + H].contiguous()
        return dx, dw, db

    OH = y.shape[2]
    gf = 2.0 * B * OC * OH * OH * C * K * K * 1e-9
    print(f"ROW {name} fwd {timed(fwd, args.iters):.4f} {gf:.4f} 0")
    print(f"ROW {name} bwd {timed(bwd, args.iters):.4f} {2 * gf:.4f} 0", flush=True)


def bench_gn(args, name, B, C, H, G):
    n1, n2 = f"gn+silu_{name}", f"gn_silu_fused_{name}"
    if not selected(args, n1) and not selected(args, n2):
        return
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, C, H, H, generator=g) * 2 - 1
    w = torch.rand(C, generator=g) * 2 - 1
    b = torch.rand(C, generator=g) * 2 - 1
    dy = torch.rand(B, C, H, H, generator=g) * 2 - 1

    def fwd():
        z, mean, rstd = aten.native_group_norm(x, w, b, B, C, H * H, G, 1e-5)
        return F.silu(z), z, mean, rstd

    _, z, mean, rstd = fwd()

    def bwd():
        dz = aten.silu_backward(dy, z)
        return aten.native_group_norm_backward(dz, x, mean, rstd, w, B, C, H * H, G,
                                               [True, True, True])

    tf, tb = timed(fwd, args.iters), timed(bwd, args.iters)
    # PyTorch has no fused op: the same numbers stand for both a3fta rows.
    for n in (n1, n2):
        if selected(args, n):
            print(f"ROW {n} fwd {tf:.4f} 0 0")
            print(f"ROW {n} bwd {tb:.4f} 0 0", flush=True)


def bench_attn(args, name, B, T, C, NH):
    if not selected(args, name):
        return
    g = torch.Generator().manual_seed(0)
    d = C // NH
    scale = d ** -0.5

    def heads(t):  # (B, T, C) -> (B*NH, T, d), diffusers' head_to_batch_dim
        return t.reshape(B, T, NH, d).permute(0, 2, 1, 3).reshape(B * NH, T, d)

    q, k, v, dout = (heads(torch.rand(B, T, C, generator=g) * 2 - 1) for _ in range(4))

    def fwd():
        s = torch.baddbmm(torch.empty(B * NH, T, T), q, k.transpose(1, 2), beta=0, alpha=scale)
        p = s.softmax(dim=-1)
        return torch.bmm(p, v), p

    _, p = fwd()

    def bwd():
        dv = torch.bmm(p.transpose(1, 2), dout)
        dp = torch.bmm(dout, v.transpose(1, 2))
        ds = aten._softmax_backward_data(dp, p, -1, torch.float32)
        dq = torch.bmm(ds, k) * scale
        dk = torch.bmm(ds.transpose(1, 2), q) * scale
        return dq, dk, dv

    gf = 4.0 * B * T * T * C * 1e-9
    print(f"ROW {name} fwd {timed(fwd, args.iters):.4f} {gf:.4f} 0")
    print(f"ROW {name} bwd {timed(bwd, args.iters):.4f} {2 * gf:.4f} 0", flush=True)


def bench_linear(args, name, N, IN, OUT):
    if not selected(args, name):
        return
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, IN, generator=g) * 2 - 1
    w = torch.rand(OUT, IN, generator=g) * 2 - 1
    b = torch.rand(OUT, generator=g) * 2 - 1
    dy = torch.rand(N, OUT, generator=g) * 2 - 1

    def fwd():
        return F.linear(x, w, b)

    def bwd():  # what autograd runs for F.linear: addmm's backward (two mm) and the bias sum
        return dy.mm(w), dy.t().mm(x), dy.sum(0)

    gf = 2.0 * N * IN * OUT * 1e-9
    print(f"ROW {name} fwd {timed(fwd, args.iters):.4f} {gf:.4f} 0")
    print(f"ROW {name} bwd {timed(bwd, args.iters):.4f} {2 * gf:.4f} 0", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--threads", type=int,
                    default=int(os.environ.get("OMP_NUM_THREADS", "0")) or os.cpu_count())
    ap.add_argument("--only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    B = args.batch
    print(f"# torch {torch.__version__}; threads {torch.get_num_threads()}; batch {B}")
    bench_conv(args, "conv3_1to32_32", B, 1, 32, 32, 3, 1, 1, 1)
    bench_conv(args, "conv3_32to32_32", B, 32, 32, 32, 3, 1, 1, 1)
    bench_conv(args, "conv3_96to32_32", B, 96, 32, 32, 3, 1, 1, 1)
    bench_conv(args, "conv3_64to64_32", B, 64, 32, 64, 3, 1, 1, 1)
    bench_conv(args, "conv3_32to1_32", B, 32, 32, 1, 3, 1, 1, 1)
    bench_conv(args, "conv3_32to32_32_s2", B, 32, 32, 32, 3, 2, 0, 1)
    bench_conv(args, "conv3_64to64_16", B, 64, 16, 64, 3, 1, 1, 1)
    bench_conv(args, "conv3_128to64_16", B, 128, 16, 64, 3, 1, 1, 1)
    bench_conv(args, "conv3_64to64_16_s2", B, 64, 16, 64, 3, 2, 0, 1)
    bench_conv(args, "conv3_64to64_8", B, 64, 8, 64, 3, 1, 1, 1)
    bench_conv(args, "conv1_96to32_32", B, 96, 32, 32, 1, 1, 0, 0)
    bench_conv(args, "conv1_32to64_16", B, 32, 16, 64, 1, 1, 0, 0)
    bench_conv(args, "conv1_128to64_8", B, 128, 8, 64, 1, 1, 0, 0)
    bench_gn(args, "32x32x32", B, 32, 32, 8)
    bench_gn(args, "96x32x32", B, 96, 32, 8)
    bench_gn(args, "64x16x16", B, 64, 16, 8)
    bench_gn(args, "64x8x8", B, 64, 8, 8)
    bench_attn(args, "attn_T64_C64", B, 64, 64, 1)
    bench_linear(args, "linear_Bx64to64_T64", B * 64, 64, 64)  # to_q/k/v/out at 8x8
    bench_linear(args, "linear_Bx128to64", B, 128, 64)  # time_emb_proj


if __name__ == "__main__":
    main()
