#!/usr/bin/python3
"""The Python half of tests/export/export_test.sh: for each exported case in DIR, the deltas'
tensor names and metadata are what the strategy trained and what a3fta recorded, and the
PyTorch reference model with base + deltas (tools/apply_deltas.py) reproduces a3fta's
output of the fine-tuned checkpoint.

    check_export.py DIR CASE:STRATEGY[:raw]...

DIR holds base/checkpoint.h5 (the model every case fine-tuned from), base.safetensors and
base.fwd.h5 (a3fta export --no-ema of it and export_helper forward --no-ema), and per case
CASE/checkpoint.h5, CASE.safetensors, CASE.fwd.h5 (raw: exported and run with --no-ema).
"""
import os
import sys

import h5py
import numpy as np

sys.path.insert(0, os.path.join(os.environ.get("A3FTA_SOURCE_DIR", "."), "tools"))
import apply_deltas as ad  # noqa: E402
import unet_reference as ref  # noqa: E402

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print(f"FAILED: {what}", file=sys.stderr)


def is_attention(k):  # the strategy rules of include/a3fta/strategy.h, written anew
    parts = k.split(".")
    for i, p in enumerate(parts[:-2]):
        if p == "attentions" and parts[i + 1].isdigit():
            rest = ".".join(parts[i + 2:])
            return rest in {f"{m}.{w}" for m in ("group_norm", "to_q", "to_k", "to_v",
                                                 "to_out.0") for w in ("weight", "bias")}
    return False


RULES = {
    "full": lambda k: True,
    "attention": is_attention,
    "a3fta": lambda k: is_attention(k) or ".adapter." in k,
    "adapter": lambda k: ".adapter." in k,
    "lora": lambda k: ".lora_" in k,
    "bitfit": lambda k: not ref.is_added(k) and k.endswith(".bias"),
}


def check_case(d, name, strategy, raw, base, base_out):
    deltas, meta = ad.read_safetensors(os.path.join(d, f"{name}.safetensors"))
    ckpt = os.path.join(d, name, "checkpoint.h5")
    with h5py.File(ckpt, "r") as f:
        config_hash = f.attrs["config_hash"]
        config_hash = config_hash.decode() if isinstance(config_hash, bytes) else config_hash
        step = int(f.attrs["step"])
    check(meta.get("strategy") == strategy, f"{name}: metadata strategy {meta.get('strategy')}")
    check(meta.get("config_hash") == config_hash, f"{name}: config_hash {meta.get('config_hash')}"
          f" (checkpoint {config_hash})")
    check(meta.get("step") == str(step), f"{name}: step {meta.get('step')}")
    check(meta.get("weights") == ("raw" if raw else "ema"), f"{name}: weights {meta.get('weights')}")
    check(meta.get("a3fta_format") == "a3fta-deltas" and meta.get("format") == "pt" and
          meta.get("a3fta_version"), f"{name}: format keys {meta}")
    model, info = ad.build(deltas, meta, base, check_base=True, log=lambda s: None)
    names = ref.table_order(model)
    want = [k for k in names if RULES[strategy](k)]
    check(sorted(deltas) == sorted(want), f"{name}: tensors {sorted(set(deltas) ^ set(want))[:6]} "
          f"differ from what {strategy} trains")
    if strategy == "full":
        check(meta.get("base_model_hash") == "random", f"{name}: base_model_hash of a random init")
    else:
        check(info["base_checked"], f"{name}: base_model_hash {meta.get('base_model_hash')} "
              "was not checked against the base")
    if strategy in ("a3fta", "adapter"):
        extras = ad.extras_from_metadata(meta)
        check(all(f"adapter_{k}" in meta for k in ("rank", "activation", "placement", "gate")),
              f"{name}: adapter settings in the metadata")
        check(any(k.endswith("adapter.up.weight") and np.any(v != 0) for k, v in deltas.items()),
              f"{name}: the adapters' up-projections trained (non-zero)")
        print(f"  {name}: adapter {extras}")
    if strategy == "lora":
        check("lora_rank" in meta and "lora_alpha" in meta, f"{name}: LoRA settings")
    with h5py.File(os.path.join(d, f"{name}.fwd.h5"), "r") as f:
        x, t, a3_out = f["x"][()], f["timesteps"][()], f["out"][()]
    out = ad.forward(model, x, t)
    ok, err, tol, scale = ad.compare(out, a3_out, 1e-4, 1e-5)
    print(f"  {name}: {strategy}, {len(deltas)} tensors, max |reference - a3fta| {err:.2e} "
          f"(tolerance {tol:.2e}, max |out| {scale:.3g})")
    check(ok, f"{name}: the reference model with base + deltas differs from a3fta: {err:.3g} > "
          f"{tol:.3g}")
    if base_out is not None:  # the deltas matter: the fine-tune moved the output
        moved = float(np.max(np.abs(out - base_out)))
        check(moved > 100 * tol, f"{name}: fine-tuned output within {moved:.3g} of the base's")


def main():
    d, cases = sys.argv[1], sys.argv[2:]
    import torch

    torch.set_num_threads(1)
    base = ad.load_base(os.path.join(d, "base", "checkpoint.h5"))
    with h5py.File(os.path.join(d, "base.fwd.h5"), "r") as f:
        base_out = f["out"][()].astype(np.float64)
    # The pretraining run itself (strategy full from random weights): no base needed.
    check_case(d, "base", "full", True, None, None)
    for c in cases:
        name, strategy, *flags = c.split(":")
        check_case(d, name, strategy, "raw" in flags, base, base_out)
    # The command line: --check passes, and a wrong base is refused by its hash.
    first = cases[0].split(":")[0]
    deltas = os.path.join(d, f"{first}.safetensors")
    rc = ad.main([deltas, "--base", os.path.join(d, "base", "checkpoint.h5"), "--inputs",
                  os.path.join(d, f"{first}.fwd.h5"), "--check", "--out",
                  os.path.join(d, "ref.h5")])
    check(rc == 0, "apply_deltas.py --check exits 0")
    with h5py.File(os.path.join(d, "ref.h5"), "r") as f:
        check(f["out"].shape == base_out.shape, "apply_deltas.py --out writes out")
    other = os.path.join(d, first, "checkpoint.h5")  # attention weights differ from the base's
    rc = ad.main([deltas, "--base", other])
    check(rc == 1, "apply_deltas.py refuses a base whose hash differs")
    rc = ad.main([deltas, "--base", other, "--no-check-base"])
    check(rc == 0, "--no-check-base accepts it")
    print("check_export: " + ("ok" if not failures else f"{len(failures)} failure(s)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
