#!/usr/bin/python3
"""Apply an a3fta deltas file (`a3fta export`) to a base model in the PyTorch reference
U-Net of tools/unet_reference.py, and run it: the independent check that an export holds
what a3fta trained.

    /usr/bin/python3 tools/apply_deltas.py DELTAS.safetensors --base BASE \\
        [--inputs IN.h5 [--check]] [--out OUT.h5]

DELTAS  written by `a3fta export CHECKPOINT --out DELTAS.safetensors`: the tensors the
        strategy trained (fine-tuned values, not differences) and __metadata__ (strategy,
        base_model_hash, unet_config, adapter/LoRA settings; include/a3fta/export.h).
        Parsed here with struct + json + numpy (the safetensors package is not needed).
BASE    the model the fine-tune started from (its model.init): an a3fta checkpoint
        (HDF5, /params/<name>), a .safetensors file or a diffusers model folder (new or
        old attention names). Its hash must equal the deltas' base_model_hash (FNV-1a 64
        over the base parameters, as include/a3fta/export.h defines it), unless
        --no-check-base. May be left out when the deltas hold every base parameter
        (strategy full, e.g. a pretraining run with base_model_hash "random").
IN.h5   datasets x (B, C, H, W) and timesteps (B), float32; with --check also out (a3fta's
        output for them), which the reference's output must match:
        |ref - out| <= rtol |ref| + atol * max |ref|  (defaults 1e-4, 1e-5).
OUT.h5  x, timesteps and the reference output as out (float32).

The model is built from the deltas' unet_config (a diffusers config.json) with the
adapter or LoRA of its metadata in every attention block; base tensors are loaded, the
deltas replace theirs and fill the added modules, and the forward runs in float64 (as the
golden fixtures of tools/unet_reference.py do). Exit status: 0 ok, 1 mismatch or error.
(Debian's /usr/bin/python3 with python3-torch 1.13, python3-numpy and python3-h5py.)
"""
import argparse
import json
import os
import re
import struct
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import unet_reference as ref  # noqa: E402

FNV_SEED = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1

# ---------------------------------------------------------------- safetensors
DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}


class DeltasError(Exception):
    pass


def read_safetensors(path):
    """(tensors: dict name -> float32 ndarray, in file order; metadata: dict) of a
    safetensors file, checked as strictly as the format requires."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise DeltasError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > len(blob) - 8 or n > 100_000_000:
        raise DeltasError(f"{path}: header length {n} exceeds the file")
    try:
        header = json.loads(blob[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DeltasError(f"{path}: header is not JSON: {e}")
    if not isinstance(header, dict):
        raise DeltasError(f"{path}: header is not a JSON object")
    meta = header.pop("__metadata__", {}) or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise DeltasError(f"{path}: __metadata__ must map strings to strings")
    data = memoryview(blob)[8 + n:]
    tensors, spans = {}, []
    for name, t in header.items():
        dtype, shape, (b, e) = t["dtype"], t["shape"], t["data_offsets"]
        if dtype not in DTYPES:
            raise DeltasError(f"{path}: {name}: dtype {dtype} is not a float type")
        numel = int(np.prod(shape, dtype=np.int64))
        size = np.dtype(DTYPES[dtype]).itemsize
        if not 0 <= b <= e <= len(data) or e - b != numel * size:
            raise DeltasError(f"{path}: {name}: data_offsets [{b}, {e}] do not fit "
                              f"shape {shape} of {dtype}")
        a = np.frombuffer(data[b:e], dtype=DTYPES[dtype]).reshape(shape)
        if dtype == "BF16":
            a = (a.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = a.astype(np.float32)
        spans.append((b, e))
    spans.sort()
    end = 0
    for b, e in spans:
        if b != end:
            raise DeltasError(f"{path}: tensors do not tile the data buffer (gap or overlap "
                              f"at byte {b})")
        end = e
    if end != len(data):
        raise DeltasError(f"{path}: {len(data) - end} bytes after the last tensor")
    return tensors, meta


# ---------------------------------------------------------------- base models
def current_name(name):
    """Old diffusers attention names (query, key, value, proj_attn) -> current ones."""
    old = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
    return re.sub(r"(attentions\.\d+\.)(query|key|value|proj_attn)\.",
                  lambda m: m.group(1) + old[m.group(2)] + ".", name)


def load_base(path):
    """dict name -> float32 ndarray of a base model file or folder."""
    if os.path.isdir(path):
        for d in (path, os.path.join(path, "unet")):
            for f in ("diffusion_pytorch_model.safetensors", "model.safetensors",
                      "diffusion_pytorch_model.fp16.safetensors"):
                if os.path.exists(os.path.join(d, "config.json")) and \
                        os.path.exists(os.path.join(d, f)):
                    return load_base(os.path.join(d, f))
        raise DeltasError(f"{path}: no diffusers model (config.json + safetensors) in it")
    if path.endswith(".safetensors"):
        tensors, _ = read_safetensors(path)
        return {current_name(k): v for k, v in tensors.items()}
    import h5py

    with h5py.File(path, "r") as f:
        if "params" not in f:
            raise DeltasError(f"{path}: no /params group: not an a3fta checkpoint")
        g = f["params"]
        return {k: np.asarray(g[k][()], dtype=np.float32) for k in g.keys()}


def fnv1a64(data, h):
    for b in data:
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return h


def base_hash(params, names):
    """a3_unet_base_hash: FNV-1a 64 over each base parameter in table order: name, NUL,
    dims as int32 LE, values as float32 LE."""
    h = FNV_SEED
    for k in names:
        a = np.ascontiguousarray(params[k], dtype="<f4")
        h = fnv1a64(k.encode() + b"\0" + np.asarray(a.shape, dtype="<i4").tobytes(), h)
        h = fnv1a64(a.tobytes(), h)
    return f"{h:016x}"


# ---------------------------------------------------------------- the model
ARCH_KEYS = ("sample_size", "in_channels", "out_channels", "block_out_channels",
             "layers_per_block", "down_block_types", "up_block_types", "norm_num_groups",
             "norm_eps", "attention_head_dim", "downsample_padding", "flip_sin_to_cos",
             "freq_shift", "center_input_sample", "mid_block_scale_factor")


def arch_from_metadata(meta):
    if "unet_config" not in meta:
        raise DeltasError("the deltas' metadata has no unet_config")
    c = json.loads(meta["unet_config"])
    for key, want in (("act_fn", "silu"), ("time_embedding_type", "positional"),
                      ("dropout", 0.0)):
        if c.get(key, want) != want:
            raise DeltasError(f"unet_config: {key} = {c[key]!r}: the reference model "
                              f"implements {want!r} only")
    missing = [k for k in ARCH_KEYS if k not in c]
    if missing:
        raise DeltasError(f"unet_config lacks {', '.join(missing)}")
    return {k: c[k] for k in ARCH_KEYS}


def extras_from_metadata(meta):
    strategy = meta.get("strategy")
    if strategy in ("a3fta", "adapter"):
        return dict(adapter_rank=int(meta["adapter_rank"]),
                    adapter_activation=meta["adapter_activation"],
                    adapter_placement=meta["adapter_placement"],
                    adapter_gate=meta["adapter_gate"] == "true")
    if strategy == "lora":
        return dict(lora_rank=int(meta["lora_rank"]), lora_alpha=float(meta["lora_alpha"]))
    if strategy in ("full", "attention", "bitfit"):
        return None
    raise DeltasError(f"unknown strategy {strategy!r} in the deltas' metadata")


def build(deltas, meta, base=None, check_base=True, log=print):
    """The reference model with base + deltas loaded (float64), and a summary dict."""
    cfg, extras = arch_from_metadata(meta), extras_from_metadata(meta)
    model = ref.UNet2D(cfg, extras)
    names = ref.table_order(model)
    base_names = [k for k in names if not ref.is_added(k)]
    shapes = {k: tuple(p.shape) for k, p in model.named_parameters()}
    unknown = [k for k in deltas if k not in shapes]
    if unknown:
        raise DeltasError(f"{len(unknown)} delta tensor(s) are not parameters of the model "
                          f"{meta.get('strategy')} builds: {', '.join(unknown[:5])}")
    stored = meta.get("base_model_hash", "unknown")
    info = dict(strategy=meta.get("strategy"), base_model_hash=stored, base_checked=False)
    if base is not None:
        missing = [k for k in base_names if k not in base]
        if missing:
            raise DeltasError(f"the base model lacks {len(missing)} parameter(s): "
                              f"{', '.join(missing[:5])}")
        if check_base and re.fullmatch(r"[0-9a-f]{16}", stored):
            got = base_hash(base, base_names)
            if got != stored:
                raise DeltasError(f"the base model's hash is {got}, the deltas were trained "
                                  f"from {stored}: another base model (or --no-check-base)")
            info["base_checked"] = True
        elif check_base:
            log(f"note: base_model_hash is {stored!r}: the base model cannot be checked")
    state, from_base = {}, 0
    for k in names:
        if k in deltas:
            v = deltas[k]
        elif base is not None and k in base:
            v, from_base = base[k], from_base + 1
        else:
            raise DeltasError(f"{k}: neither in the deltas nor in the base model"
                              + ("" if base is not None else " (no --base given)"))
        if tuple(v.shape) != shapes[k]:
            raise DeltasError(f"{k}: shape {tuple(v.shape)}, the model has {shapes[k]}")
        state[k] = torch.from_numpy(np.array(v, dtype=np.float32))
    model.load_state_dict(state, strict=True)
    info.update(tensors=len(names), from_deltas=len(deltas), from_base=from_base,
                replaced=sum(1 for k in deltas if not ref.is_added(k)),
                added=sum(1 for k in deltas if ref.is_added(k)))
    return model.double().eval(), info


def forward(model, x, t):
    with torch.no_grad():
        return model(torch.from_numpy(np.asarray(x, np.float32)).double(),
                     torch.from_numpy(np.asarray(t, np.float32))).numpy()


def compare(got, want, rtol, atol):
    """(ok, max abs error, tolerance at its worst point, scale) of want vs got."""
    scale = float(np.max(np.abs(got)))
    err = np.abs(got - want.astype(np.float64))
    tol = rtol * np.abs(got) + atol * scale
    worst = int(np.argmax(err - tol))
    return bool(np.all(err <= tol)), float(err.max()), float(tol.flat[worst]), scale


# ---------------------------------------------------------------- command line
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("deltas", help="safetensors file written by a3fta export")
    ap.add_argument("--base", help="base model: a3fta checkpoint, .safetensors or diffusers dir")
    ap.add_argument("--inputs", help="HDF5 with x and timesteps (and out, for --check)")
    ap.add_argument("--check", action="store_true", help="compare with the inputs' /out")
    ap.add_argument("--out", help="write x, timesteps and the reference output here")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--atol", type=float, default=1e-5, help="relative to max |output|")
    ap.add_argument("--no-check-base", action="store_true",
                    help="do not compare the base model's hash with base_model_hash")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        deltas, meta = read_safetensors(a.deltas)
        base = load_base(a.base) if a.base else None
        model, info = build(deltas, meta, base, not a.no_check_base)
    except (DeltasError, KeyError, ValueError, OSError) as e:
        print(f"apply_deltas: {e}", file=sys.stderr)
        return 1
    print(f"{a.deltas}: strategy {info['strategy']}, {info['from_deltas']} tensors "
          f"({info['replaced']} replace base ones, {info['added']} added modules), "
          f"{info['from_base']} from the base; base_model_hash {info['base_model_hash']}"
          + (" (matches the base)" if info["base_checked"] else ""))
    if not a.inputs:
        return 0
    import h5py

    with h5py.File(a.inputs, "r") as f:
        x, t = f["x"][()], f["timesteps"][()]
        want = f["out"][()] if a.check else None
    out = forward(model, x, t)
    if a.out:
        with h5py.File(a.out, "w") as f:
            f["x"], f["timesteps"] = x.astype(np.float32), t.astype(np.float32)
            f["out"] = out.astype(np.float32)
    if want is not None:
        ok, err, tol, scale = compare(out, want, a.rtol, a.atol)
        print(f"{a.inputs}: max |reference - a3fta| = {err:.3g} (tolerance {tol:.3g}, "
              f"max |output| {scale:.3g}): {'ok' if ok else 'MISMATCH'}")
        return 0 if ok else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
