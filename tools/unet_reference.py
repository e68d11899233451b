#!/usr/bin/python3
"""Reference U-Net in PyTorch, written independently of a3fta's C code from the
semantics of diffusers' UNet2DModel (diffusers itself is not imported), and the
writer of the golden-file fixture the C tests compare against.

Regenerate the fixture (deterministic: fixed seeds, CPU, float64 math):

    /usr/bin/python3 tools/unet_reference.py --golden tests/model/golden_unet.h5

(Debian's /usr/bin/python3 with python3-torch 1.13 and python3-h5py.) Other uses:

    /usr/bin/python3 tools/unet_reference.py --count-cifar  # ddpm-cifar10-32 counts (+ extras)
    /usr/bin/python3 tools/unet_reference.py --export DIR [--old-names] [--config tiny|multi]
        # DIR/config.json + DIR/diffusion_pytorch_model.safetensors of a random model, with
        # the new (to_q/to_k/to_v/to_out.0) or old (query/key/value/proj_attn) attention names;
        # the weights are the fixture's /CONFIG/param, so its x, timesteps, out apply;
        # DIR/reference.safetensors holds x, timesteps and the output (float32), also for
        # --config micro (not in the fixture; tests/model/diffusers_tiny{,_legacy}):
    /usr/bin/python3 tools/unet_reference.py --export tests/model/diffusers_tiny --config micro
    /usr/bin/python3 tools/unet_reference.py --export tests/model/diffusers_tiny_legacy \
        --config micro --old-names

Fixture layout, one group per config (/tiny, /multi):
  attrs  config_yaml   a3fta YAML (model.arch), loadable with a3_config_load_string
         config_json   the same architecture as a diffusers config.json
         param_order   the parameter names in diffusers' registration order, one per line
         batch, loss
  x (B, Cin, H, W), timesteps (B), noise (B, Cout, H, W), out (B, Cout, H, W), dx (like x)
  param/<diffusers key>, grad/<diffusers key>  (float32)
  torch_bf16, torch_fp32: subgroups, the same model, weights, x, timesteps, noise and loss run
  again in float32, under torch.autocast("cpu", dtype=torch.bfloat16) (bfloat16 activations,
  conv2d/linear/matmul on bfloat16 operands, float32 weights and gradients; GroupNorm in
  float32 as CUDA autocast does, softmax in bfloat16 as CPU autocast does) or plain: how far
  torch's own bf16 / fp32 lands from this group's float64 values, a yardstick for a3fta's:
    attrs  out_rel_l2, dx_rel_l2   ||a - ref|| / ||ref|| against the float64 out, dx
           grad_rel_l2_median, grad_rel_l2_max   over grad_rel_l2
           grad_rel_l2_max_nonzero   the max without the attentions' to_k.bias, whose
                       gradient is exactly zero (softmax over keys ignores q.b_k), so ref is
                       rounding noise (~1e-18) and their relative errors ~1e8 to 1e13
           torch_version
    grad_rel_l2 (float64, one per param_order entry): ||g - ref|| / max(||ref||, 1e-30)
           against the float64 grad/<name>
and one group per case of strategy-added modules (/tiny_pre, /tiny_post, /tiny_lora,
/tiny_relu): the
base config's model (same base weights, x, timesteps and noise) with an adapter or LoRA in
every attention block, the added weights random and non-zero (so every path is exercised):
  attrs  base          the base config's group ("tiny")
         adapter_rank, adapter_activation, adapter_placement, adapter_gate, lora_rank,
         lora_alpha    the extras (a3_unet_extras)
         added_params  "index name d0xd1..." per line: each added parameter with its index
                       in a3fta's table (the base ones fill the other indices in
                       /<base>'s param_order), in table order
         loss
  out, dx; added (float32: the added parameters' values, concatenated in table order);
  grad (float32: the added parameters' gradients, likewise).
  (Flat arrays and no per-case param_order: one dataset per tensor costs ~400 bytes of HDF5
  header, and the fixture stays about 1 MB, under 1 MiB. The base weights are /<base>/param; the base
  gradients with added modules present are the finite-difference test's, and dx checks the
  whole backward through the added modules.)

Added modules (a3fta's semantics, include/a3fta/model.h):
  LoRA (PEFT): y = W x + b + (alpha / r) B (A x) on to_q, to_k, to_v, to_out.0, named
    <linear>.lora_A.weight (r, in), <linear>.lora_B.weight (out, r), listed right after
    the linear's weight and bias;
  adapter: h + g * up(act(down(h))) on the merged heads before to_out.0 (pre_out) or on
    to_out.0's output before the residual add (post_out); <block>.adapter.down.weight,
    .down.bias, .up.weight, .up.bias, [.gate], listed after the block's own parameters.

The model runs in float64 on float32-representable weights and inputs, so the stored
outputs and gradients are the exact values (to float32 rounding) of what an fp32
implementation approximates. Only the sinusoidal timestep embedding is computed in
float32, as diffusers does before casting to the model's dtype.
Loss: mean((out - noise)^2); every gradient is of that loss.
"""
import argparse
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ---------------------------------------------------------------- configs
# Architectures with diffusers' UNet2DModel argument names.
CONFIGS = {
    # Tiny: one plain and one attention level, 2 heads, padding-0 downsampler
    # (pad (0,1,0,1)), freq_shift 1, sin first: the google/ddpm-cifar10-32 choices.
    "tiny": dict(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=[8, 16],
        layers_per_block=1, down_block_types=["DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D"], norm_num_groups=4, norm_eps=1e-6,
        attention_head_dim=8, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
        center_input_sample=False, mid_block_scale_factor=1.0),
    # Multi: several heads (2 at 4 channels, 4 at 8), several channels per group (2, 4),
    # attention at 16x16 and 4x4 (down, mid, up), 2 resnets per down block, padding-1
    # downsampler, cos first, centred input, a mid-block scale factor, Cin != Cout.
    # (Channels are small to keep the fixture under 1 MB.)
    "multi": dict(
        sample_size=16, in_channels=1, out_channels=2, block_out_channels=[4, 8, 8],
        layers_per_block=2,
        down_block_types=["AttnDownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D", "AttnUpBlock2D"], norm_num_groups=2,
        norm_eps=1e-5, attention_head_dim=2, downsample_padding=1, flip_sin_to_cos=True,
        freq_shift=0, center_input_sample=True, mid_block_scale_factor=1.5),
    # Micro: tiny at half the channels (2 heads of 4 at 8 channels, 2 per group), for the
    # committed diffusers folders tests/model/diffusers_tiny{,_legacy} (each under 100 KB;
    # tiny's weights alone are 180 KB). Not in the golden fixture: --export writes its
    # reference output next to the weights.
    "micro": dict(
        sample_size=8, in_channels=3, out_channels=3, block_out_channels=[4, 8],
        layers_per_block=1, down_block_types=["DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D"], norm_num_groups=2, norm_eps=1e-6,
        attention_head_dim=4, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1,
        center_input_sample=False, mid_block_scale_factor=1.0),
}

# Seeds of each config's weights and inputs (the fixture and --export use the same, so an
# exported model reproduces the fixture's output).
SEEDS = {"tiny": 1234, "multi": 5678, "micro": 4321}

# Strategy-added modules on the tiny config: (base config, extras, seed of the added weights).
EXTRA_CASES = {
    "tiny_pre": ("tiny", dict(adapter_rank=4, adapter_activation="gelu",
                              adapter_placement="pre_out", adapter_gate=True), 91),
    "tiny_post": ("tiny", dict(adapter_rank=3, adapter_activation="silu",
                               adapter_placement="post_out", adapter_gate=False), 92),
    "tiny_lora": ("tiny", dict(lora_rank=2, lora_alpha=3.0), 93),
    "tiny_relu": ("tiny", dict(adapter_rank=2, adapter_activation="relu",
                               adapter_placement="post_out", adapter_gate=True), 94),
}

CIFAR = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=[128, 256, 256, 256],
    layers_per_block=2,
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], norm_num_groups=32,
    norm_eps=1e-6, attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False,
    freq_shift=1, center_input_sample=False, mid_block_scale_factor=1.0)


# ---------------------------------------------------------------- the model
def timestep_embedding(t, dim, flip_sin_to_cos, freq_shift, max_period=10000):
    """diffusers get_timestep_embedding, in float32 as diffusers computes it."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=t.device)
    exponent = exponent / (half - freq_shift)
    args = t.float()[:, None] * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
    if flip_sin_to_cos:
        emb = torch.cat([emb[:, half:], emb[:, :half]], dim=-1)
    if dim % 2 == 1:
        emb = F.pad(emb, (0, 1, 0, 0))
    return emb


class GroupNorm(nn.GroupNorm):
    """nn.GroupNorm that normalises a lower-precision (autocast) input in float32, as CUDA
    autocast's fp32 rule for group_norm does: torch 1.13's CPU autocast has no group_norm
    rule and fails on a bfloat16 input with float32 weights. float32/float64: unchanged."""

    def forward(self, x):
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return super().forward(x)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.linear_1 = nn.Linear(cin, cout)
        self.linear_2 = nn.Linear(cout, cout)

    def forward(self, e):
        return self.linear_2(F.silu(self.linear_1(e)))


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps, output_scale_factor=1.0):
        super().__init__()
        self.norm1 = GroupNorm(groups, cin, eps=eps)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.time_emb_proj = nn.Linear(temb, cout)
        self.norm2 = GroupNorm(groups, cout, eps=eps)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.output_scale_factor = output_scale_factor

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))  # dropout 0
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor


ACTIVATIONS = {"gelu": F.gelu, "silu": F.silu, "relu": F.relu, "identity": lambda x: x}


class LoRALinear(nn.Linear):
    """PEFT's LoRA Linear: base(x) + lora_B(lora_A(x)) * (alpha / r), dropout 0."""

    def __init__(self, cin, cout, r, alpha):
        super().__init__(cin, cout)
        self.lora_A = nn.Linear(cin, r, bias=False)
        self.lora_B = nn.Linear(r, cout, bias=False)
        self.scaling = alpha / r

    def forward(self, x):
        return super().forward(x) + self.lora_B(self.lora_A(x)) * self.scaling


class Adapter(nn.Module):
    """Bottleneck with residual: h + g * up(act(down(h))), g a scalar parameter or 1."""

    def __init__(self, c, r, activation, gate):
        super().__init__()
        self.down = nn.Linear(c, r)
        self.up = nn.Linear(r, c)
        self.gate = nn.Parameter(torch.ones(1)) if gate else None
        self.act = ACTIVATIONS[activation]

    def forward(self, h):
        u = self.up(self.act(self.down(h)))
        return h + (self.gate * u if self.gate is not None else u)


def linear(c, extras):
    if extras and extras.get("lora_rank", 0):
        return LoRALinear(c, c, extras["lora_rank"], extras["lora_alpha"])
    return nn.Linear(c, c)


class Attention(nn.Module):
    """diffusers Attention(residual_connection=True, norm_num_groups, bias=True), with the
    strategy-added modules of `extras` (None: none)."""

    def __init__(self, c, head_dim, groups, eps, rescale_output_factor=1.0, extras=None):
        super().__init__()
        extras = extras or {}
        self.heads = c // head_dim if head_dim else 1
        self.group_norm = GroupNorm(groups, c, eps=eps)
        self.to_q = linear(c, extras)
        self.to_k = linear(c, extras)
        self.to_v = linear(c, extras)
        self.to_out = nn.ModuleList([linear(c, extras)])
        self.rescale_output_factor = rescale_output_factor
        self.placement = extras.get("adapter_placement")
        if extras.get("adapter_rank", 0):
            self.adapter = Adapter(c, extras["adapter_rank"], extras["adapter_activation"],
                                   extras["adapter_gate"])
        else:
            self.adapter = None

    def forward(self, x):
        B, C, H, W = x.shape
        T, nh = H * W, self.heads
        d = C // nh
        tok = self.group_norm(x).view(B, C, T).transpose(1, 2)  # (B, T, C)

        def heads(t):  # (B, T, C) -> (B, nh, T, d): head h owns channels [h*d, (h+1)*d)
            return t.reshape(B, T, nh, d).permute(0, 2, 1, 3)

        q, k, v = heads(self.to_q(tok)), heads(self.to_k(tok)), heads(self.to_v(tok))
        p = torch.softmax((q @ k.transpose(-1, -2)) * d ** -0.5, dim=-1)
        merged = (p @ v).permute(0, 2, 1, 3).reshape(B, T, C)
        if self.adapter is not None and self.placement == "pre_out":
            merged = self.adapter(merged)
        o = self.to_out[0](merged)
        if self.adapter is not None and self.placement == "post_out":
            o = self.adapter(o)
        o = o.transpose(1, 2).reshape(B, C, H, W)
        return (o + x) / self.rescale_output_factor


class Downsample2D(nn.Module):
    def __init__(self, c, padding):
        super().__init__()
        self.padding = padding
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=padding)

    def forward(self, x):
        if self.padding == 0:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DownBlock(nn.Module):
    """DownBlock2D / AttnDownBlock2D (attentions registered before resnets, as diffusers)."""

    def __init__(self, cin, cout, cfg, temb, attn, add_down, extras=None):
        super().__init__()
        L, g, eps = cfg["layers_per_block"], cfg["norm_num_groups"], cfg["norm_eps"]
        head_dim = cfg["attention_head_dim"] or cout
        if attn:
            self.attentions = nn.ModuleList(
                [Attention(cout, head_dim, g, eps, extras=extras) for _ in range(L)])
        else:
            self.attentions = None
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(cin if j == 0 else cout, cout, temb, g, eps) for j in range(L)])
        if add_down:
            self.downsamplers = nn.ModuleList([Downsample2D(cout, cfg["downsample_padding"])])
        else:
            self.downsamplers = None

    def forward(self, h, temb):
        outs = []
        for j, resnet in enumerate(self.resnets):
            h = resnet(h, temb)
            if self.attentions is not None:
                h = self.attentions[j](h)
            outs.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            outs.append(h)
        return h, outs


class UpBlock(nn.Module):
    """UpBlock2D / AttnUpBlock2D: layers_per_block + 1 resnets on [h, popped skip]."""

    def __init__(self, cin, prev, cout, cfg, temb, attn, add_up, extras=None):
        super().__init__()
        n, g, eps = cfg["layers_per_block"] + 1, cfg["norm_num_groups"], cfg["norm_eps"]
        head_dim = cfg["attention_head_dim"] or cout
        if attn:
            self.attentions = nn.ModuleList(
                [Attention(cout, head_dim, g, eps, extras=extras) for _ in range(n)])
        else:
            self.attentions = None
        resnets = []
        for j in range(n):
            skip = cin if j == n - 1 else cout
            resnets.append(ResnetBlock2D((prev if j == 0 else cout) + skip, cout, temb, g, eps))
        self.resnets = nn.ModuleList(resnets)
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if add_up else None

    def forward(self, h, skips, temb):
        for j, resnet in enumerate(self.resnets):
            h = resnet(torch.cat([h, skips.pop()], dim=1), temb)
            if self.attentions is not None:
                h = self.attentions[j](h)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h)
        return h


class MidBlock(nn.Module):
    def __init__(self, c, cfg, temb, extras=None):
        super().__init__()
        g, eps, s = cfg["norm_num_groups"], cfg["norm_eps"], cfg["mid_block_scale_factor"]
        self.attentions = nn.ModuleList([
            Attention(c, cfg["attention_head_dim"] or c, g, eps, rescale_output_factor=s,
                      extras=extras)])
        self.resnets = nn.ModuleList(
            [ResnetBlock2D(c, c, temb, g, eps, s), ResnetBlock2D(c, c, temb, g, eps, s)])

    def forward(self, h, temb):
        h = self.resnets[0](h, temb)
        h = self.attentions[0](h)
        return self.resnets[1](h, temb)


class UNet2D(nn.Module):
    """UNet2DModel semantics; modules registered in diffusers' order (up_blocks before
    mid_block), so state_dict() lists the keys as a diffusers checkpoint does."""

    def __init__(self, cfg, extras=None):
        super().__init__()
        self.cfg = cfg
        ch = cfg["block_out_channels"]
        n, c0 = len(ch), ch[0]
        temb = 4 * c0
        self.conv_in = nn.Conv2d(cfg["in_channels"], c0, 3, padding=1)
        self.time_embedding = TimestepEmbedding(c0, temb)
        self.down_blocks = nn.ModuleList()
        cout = c0
        for i, kind in enumerate(cfg["down_block_types"]):
            cin, cout = cout, ch[i]
            self.down_blocks.append(
                DownBlock(cin, cout, cfg, temb, kind == "AttnDownBlock2D", i < n - 1, extras))
        rev = list(reversed(ch))
        self.up_blocks = nn.ModuleList()
        cout = rev[0]
        for i, kind in enumerate(cfg["up_block_types"]):
            prev, cout, cin = cout, rev[i], rev[min(i + 1, n - 1)]
            self.up_blocks.append(
                UpBlock(cin, prev, cout, cfg, temb, kind == "AttnUpBlock2D", i < n - 1, extras))
        self.mid_block = MidBlock(ch[-1], cfg, temb, extras)
        self.conv_norm_out = GroupNorm(cfg["norm_num_groups"], c0, eps=cfg["norm_eps"])
        self.conv_out = nn.Conv2d(c0, cfg["out_channels"], 3, padding=1)

    def forward(self, x, t):
        cfg = self.cfg
        if cfg["center_input_sample"]:
            x = 2 * x - 1.0
        e = timestep_embedding(t, cfg["block_out_channels"][0], cfg["flip_sin_to_cos"],
                               cfg["freq_shift"]).to(x.dtype)
        temb = self.time_embedding(e)
        h = self.conv_in(x)
        skips = [h]
        for block in self.down_blocks:
            h, outs = block(h, temb)
            skips += outs
        h = self.mid_block(h, temb)
        for block in self.up_blocks:
            h = block(h, skips, temb)
        assert not skips
        return self.conv_out(F.silu(self.conv_norm_out(h)))


# ---------------------------------------------------------------- weights
def randomize(model, seed):
    """Non-zero random weights everywhere (so every gradient is non-trivial), float32 values:
    conv/linear weights U(-1, 1) * sqrt(3 / fan_in) (unit-variance outputs, so attention
    logits are O(1) and the softmax is far from uniform), biases U(-0.2, 0.2), GroupNorm
    weights U(0.5, 1.5) and biases U(-0.2, 0.2)."""
    gen = torch.Generator().manual_seed(seed)
    norms = {id(m.weight) for m in model.modules() if isinstance(m, nn.GroupNorm)}
    with torch.no_grad():
        for name, p in model.named_parameters():
            u = torch.rand(p.shape, generator=gen, dtype=torch.float32) * 2 - 1
            if id(p) in norms:
                val = 1.0 + 0.5 * u
            elif name.endswith(".bias"):
                val = 0.2 * u
            else:
                val = u * math.sqrt(3.0 / (p[0].numel()))
            p.copy_(val.to(p.dtype))


# ---------------------------------------------------------------- config texts
def config_yaml(cfg):
    def val(v):
        if v is None:
            return "null"
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, list):
            return "[" + ", ".join(str(x) for x in v) + "]"
        if isinstance(v, float):
            return repr(v)
        return str(v)

    lines = ["model:", "  arch:"] + [f"    {k}: {val(v)}" for k, v in cfg.items()]
    return "\n".join(lines) + "\n"


def config_json(cfg):
    d = {"_class_name": "UNet2DModel", "act_fn": "silu", "add_attention": True,
         "time_embedding_type": "positional", "dropout": 0.0, "resnet_time_scale_shift": "default"}
    d.update(cfg)
    return json.dumps(d, indent=2, sort_keys=True)


# ---------------------------------------------------------------- golden file
def is_added(key):
    return ".lora_" in key or ".adapter." in key


def table_order(model):
    """Parameter names in a3fta's table order: named_parameters() but with each adapter's
    gate (a module's own parameter, which PyTorch lists before its children's) moved after
    its up.bias."""
    order = [k for k, _ in model.named_parameters()]
    gates = [k for k in order if k.endswith(".adapter.gate")]
    for g in gates:
        order.remove(g)
        order.insert(order.index(g[: -len("gate")] + "up.bias") + 1, g)
    return order


def inputs(cfg, seed, batch):
    S, cin, cout = cfg["sample_size"], cfg["in_channels"], cfg["out_channels"]
    gen = torch.Generator().manual_seed(seed + 1)
    if cfg["center_input_sample"]:  # images in [0, 1]
        x32 = torch.rand((batch, cin, S, S), generator=gen)
    else:
        x32 = torch.randn((batch, cin, S, S), generator=gen)
    noise32 = torch.randn((batch, cout, S, S), generator=gen)
    t32 = torch.tensor([3.0, 517.0, 999.0, 250.5][:batch], dtype=torch.float32)
    return x32, t32, noise32


def run_case(name, cfg, model, seed, batch):
    """Forward, MSE and backward of `model` (float32 weights) in float64."""
    model = model.double()
    x32, t32, noise32 = inputs(cfg, seed, batch)
    x = x32.double().requires_grad_(True)
    out = model(x, t32)
    loss = ((out - noise32.double()) ** 2).mean()
    loss.backward()
    params = {k: p.detach().float().numpy() for k, p in model.named_parameters()}
    grads = {k: p.grad.detach().float().numpy() for k, p in model.named_parameters()}
    return dict(name=name, cfg=cfg, batch=batch, x=x32.numpy(), t=t32.numpy(),
                noise=noise32.numpy(), out=out.detach().float().numpy(), loss=float(loss),
                dx=x.grad.float().numpy(), params=params, grads=grads, order=table_order(model),
                out64=out.detach().numpy(), dx64=x.grad.numpy(),
                grads64={k: p.grad.detach().numpy() for k, p in model.named_parameters()})


def base_model(cfg, seed):
    torch.manual_seed(seed)
    model = UNet2D(cfg)
    randomize(model, seed)
    return model


def golden_case(name, cfg, seed, batch=2):
    return run_case(name, cfg, base_model(cfg, seed), seed, batch)


def rel_l2(a, ref):
    a, ref = np.asarray(a, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm((a - ref).ravel()) / max(np.linalg.norm(ref.ravel()), 1e-30))


def lowp_run(c, bf16):
    """The golden base case `c` again in float32 (same weights, inputs, loss), under CPU
    bfloat16 autocast if `bf16` (conv2d, linear, matmul get bfloat16 operands; GroupNorm in
    float32, see GroupNorm): its relative L2 errors against c's float64 values, and its
    output."""
    cfg, seed = c["cfg"], SEEDS[c["name"]]
    model = base_model(cfg, seed)
    x32, t32, noise32 = inputs(cfg, seed, c["batch"])
    assert all(np.array_equal(p.detach().numpy(), c["params"][k])
               for k, p in model.named_parameters())
    assert np.array_equal(x32.numpy(), c["x"]) and np.array_equal(noise32.numpy(), c["noise"])
    dtypes = []
    hooks = [m.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
             for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    x = x32.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x, t32)
        loss = ((out.float() - noise32) ** 2).mean()
    loss.backward()
    for h in hooks:
        h.remove()
    want = torch.bfloat16 if bf16 else torch.float32
    assert dtypes and all(d == want for d in dtypes), (c["name"], bf16, set(dtypes))
    assert out.dtype == want and x.grad.dtype == torch.float32
    grads = {k: p.grad for k, p in model.named_parameters()}
    assert all(g is not None and g.dtype == torch.float32 for g in grads.values())
    g = np.array([rel_l2(grads[k].numpy(), c["grads64"][k]) for k in c["order"]])
    return dict(out_rel_l2=rel_l2(out.detach().float().numpy(), c["out64"]),
                dx_rel_l2=rel_l2(x.grad.numpy(), c["dx64"]), grad_rel_l2=g,
                out=out.detach().float().numpy())


def randomize_added(model, seed):
    """The added parameters, non-zero (a trained state, so every path is exercised): weights
    U(-1, 1) * sqrt(3 / fan_in), biases U(-0.2, 0.2), gates U(0.5, 1.5)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name in table_order(model):
            if not is_added(name):
                continue
            p = model.get_parameter(name)
            u = torch.rand(p.shape, generator=gen, dtype=torch.float32) * 2 - 1
            if name.endswith(".gate"):
                val = 1.0 + 0.5 * u
            elif name.endswith(".bias"):
                val = 0.2 * u
            else:
                val = u * math.sqrt(3.0 / p[0].numel())
            p.copy_(val)


def golden_extra_case(name, batch=2):
    """The base config's model and inputs, plus added modules with random weights."""
    base, extras, extra_seed = EXTRA_CASES[name]
    cfg, seed = CONFIGS[base], SEEDS[base]
    torch.manual_seed(seed)
    plain = UNet2D(cfg)
    randomize(plain, seed)
    model = UNet2D(cfg, extras)
    res = model.load_state_dict(plain.state_dict(), strict=False)
    assert not res.unexpected_keys and all(is_added(k) for k in res.missing_keys)
    randomize_added(model, extra_seed)
    c = run_case(name, cfg, model, seed, batch)
    c.update(base=base, extras=extras)
    return c


def put(group, name, data):
    group.create_dataset(name, data=np.ascontiguousarray(data, dtype=np.float32),
                         track_times=False)


EXTRA_ATTRS = dict(adapter_rank=0, adapter_activation="gelu", adapter_placement="pre_out",
                   adapter_gate=False, lora_rank=0, lora_alpha=0.0)


def flat(arrays):
    return np.concatenate([np.ascontiguousarray(a, dtype=np.float32).ravel() for a in arrays])


def write_golden(path):
    import h5py

    cases = [golden_case(name, CONFIGS[name], SEEDS[name]) for name in ("tiny", "multi")]
    for c in cases:
        c["lowp"] = {"torch_bf16": lowp_run(c, True), "torch_fp32": lowp_run(c, False)}
        # autocast really reached the products: bf16 lands far from fp32, fp32 near float64
        sep = rel_l2(c["lowp"]["torch_bf16"]["out"], c["lowp"]["torch_fp32"]["out"])
        assert sep > 1e-4 and c["lowp"]["torch_fp32"]["out_rel_l2"] < 1e-4, (c["name"], sep)
    extra_cases = [golden_extra_case(name) for name in EXTRA_CASES]
    # v108 object headers are ~10% smaller; HDF5 1.10.8 (the C side) reads them.
    # No object timestamps anywhere, so regenerating gives a byte-identical file.
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_V18, h5py.h5f.LIBVER_V110)
    fid = h5py.h5f.create(path.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl)

    def group(parent, name):
        gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
        gcpl.set_obj_track_times(False)
        return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))

    with h5py.File(fid) as f:
        f.attrs["generator"] = np.bytes_("tools/unet_reference.py --golden (torch %s)" %
                                         torch.__version__)
        for c in cases:
            g = group(f, c["name"])
            g.attrs["config_yaml"] = np.bytes_(config_yaml(c["cfg"]))
            g.attrs["config_json"] = np.bytes_(config_json(c["cfg"]))
            g.attrs["param_order"] = np.bytes_("\n".join(c["order"]))
            g.attrs["batch"] = np.int32(c["batch"])
            g.attrs["loss"] = np.float64(c["loss"])
            for k in ("x", "t", "noise", "out", "dx"):
                put(g, "timesteps" if k == "t" else k, c[k])
            pg, gg = group(g, "param"), group(g, "grad")
            for k in c["order"]:
                put(pg, k, c["params"][k])
                put(gg, k, c["grads"][k])
            n = sum(v.size for v in c["params"].values())
            print(f"{c['name']}: {n} parameters in {len(c['order'])} tensors, loss {c['loss']:.6f}")
            for sub, r in c["lowp"].items():
                sg = group(g, sub)
                gr = np.ascontiguousarray(r["grad_rel_l2"], dtype=np.float64)
                sg.attrs["out_rel_l2"] = np.float64(r["out_rel_l2"])
                sg.attrs["dx_rel_l2"] = np.float64(r["dx_rel_l2"])
                sg.attrs["grad_rel_l2_median"] = np.float64(np.median(gr))
                sg.attrs["grad_rel_l2_max"] = np.float64(np.max(gr))
                nz = [v for k, v in zip(c["order"], gr) if not k.endswith(".to_k.bias")]
                sg.attrs["grad_rel_l2_max_nonzero"] = np.float64(np.max(nz))
                sg.attrs["torch_version"] = np.bytes_(torch.__version__)
                sg.create_dataset("grad_rel_l2", data=gr, track_times=False)
                print(f"  {sub}: out {r['out_rel_l2']:.3e}, dx {r['dx_rel_l2']:.3e}, grad "
                      f"median {np.median(gr):.3e} max {np.max(gr):.3e} "
                      f"(without to_k.bias {np.max(nz):.3e})")
        for c in extra_cases:
            g = group(f, c["name"])
            g.attrs["base"] = np.bytes_(c["base"])
            for k, default in EXTRA_ATTRS.items():
                v = c["extras"].get(k, default)
                if isinstance(v, str):
                    g.attrs[k] = np.bytes_(v)
                elif isinstance(v, float):
                    g.attrs[k] = np.float64(v)
                else:
                    g.attrs[k] = np.int32(v)
            added = [k for k in c["order"] if is_added(k)]
            g.attrs["added_params"] = np.bytes_("\n".join(
                f"{c['order'].index(k)} {k} " + "x".join(str(d) for d in c["params"][k].shape)
                for k in added))
            g.attrs["loss"] = np.float64(c["loss"])
            for k in ("out", "dx"):
                put(g, k, c[k])
            put(g, "added", flat(c["params"][k] for k in added))
            put(g, "grad", flat(c["grads"][k] for k in added))
            n = sum(c["params"][k].size for k in added)
            print(f"{c['name']}: {c['extras']}: {n} added parameters in {len(added)} tensors "
                  f"of {len(c['order'])}, loss {c['loss']:.6f}")
    print(f"{path}: {os.path.getsize(path)} bytes")


# ---------------------------------------------------------------- safetensors export
OLD_NAMES = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def write_safetensors(path, tensors):
    """The safetensors format: u64 header length, JSON header, raw little-endian data."""
    header, blobs, off = {}, [], 0
    for k, v in tensors.items():
        b = np.ascontiguousarray(v, dtype="<f4").tobytes()
        header[k] = {"dtype": "F32", "shape": list(v.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    header["__metadata__"] = {"format": "pt"}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def export(dirname, cfg_name, old_names):
    c = golden_case(cfg_name, CONFIGS[cfg_name], SEEDS[cfg_name])
    tensors = {}
    for k in c["order"]:
        key = k
        if old_names:
            for new, old in OLD_NAMES.items():
                key = key.replace(f".{new}.", f".{old}.")
        tensors[key] = c["params"][k]
    os.makedirs(dirname, exist_ok=True)
    write_safetensors(os.path.join(dirname, "diffusion_pytorch_model.safetensors"), tensors)
    with open(os.path.join(dirname, "config.json"), "w") as f:
        f.write(config_json(c["cfg"]) + "\n")
    # The model's output on the config's inputs (for tiny and multi, the fixture's x,
    # timesteps and out), so a loader can be checked without the golden file.
    write_safetensors(os.path.join(dirname, "reference.safetensors"),
                      {"x": c["x"], "timesteps": c["t"], "out": c["out"]})
    print(f"{dirname}: {len(tensors)} tensors ({'old' if old_names else 'new'} attention names)")


def count(cfg):
    model = UNet2D(cfg)
    named = list(model.named_parameters())
    total = sum(p.numel() for _, p in named)
    attn = sum(p.numel() for k, p in named if ".attentions." in k)
    bias = sum(p.numel() for k, p in named if k.endswith(".bias"))
    print(f"{total} parameters in {len(named)} tensors; attention {attn}; biases {bias}")
    for label, extras in (
            ("adapter r=8", dict(adapter_rank=8, adapter_activation="gelu",
                                 adapter_placement="pre_out", adapter_gate=False)),
            ("adapter r=16", dict(adapter_rank=16, adapter_activation="gelu",
                                  adapter_placement="pre_out", adapter_gate=False)),
            ("adapter r=8 gated", dict(adapter_rank=8, adapter_activation="gelu",
                                       adapter_placement="pre_out", adapter_gate=True)),
            ("LoRA r=4", dict(lora_rank=4, lora_alpha=4.0))):
        added = sum(p.numel() for k, p in UNet2D(cfg, extras).named_parameters() if is_added(k))
        print(f"  {label}: {added} added parameters")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--golden", metavar="H5", help="write the golden fixture")
    ap.add_argument("--count-cifar", action="store_true", help="count ddpm-cifar10-32 params")
    ap.add_argument("--export", metavar="DIR", help="write config.json + safetensors")
    ap.add_argument("--config", default="tiny", choices=sorted(CONFIGS))
    ap.add_argument("--old-names", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(1)  # reproducible summation order
    if a.golden:
        write_golden(a.golden)
    if a.count_cifar:
        count(CIFAR)
    if a.export:
        export(a.export, a.config, a.old_names)
    if not (a.golden or a.count_cifar or a.export):
        ap.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
