#!/bin/bash
# configs/pretrain-fmnist.yaml and configs/fewshot-fmnist.yaml: both pass 'a3fta config
# check' (also with the strategy switches fewshot documents), the fine-tune starts from the
# pretraining's EMA weights (the committed export in configs/weights, whose metadata holds
# pretrain-fmnist.yaml's config) with the same architecture, and the target class is held out.
# (A3FTA_BIN and A3FTA_SOURCE_DIR set by CTest.)
set -u
bin=${A3FTA_BIN:?}
cfg=${A3FTA_SOURCE_DIR:?}/configs
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-fmnist-configs-XXXXXX")
trap 'rm -rf "$dir"' EXIT
fail=0
check() { # check DESCRIPTION COMMAND...
  local what=$1
  shift
  if ! "$@" >"$dir/out" 2>&1; then
    echo "FAILED: $what" >&2
    cat "$dir/out" >&2
    fail=1
  fi
}

check "pretrain config check" "$bin" config check "$cfg/pretrain-fmnist.yaml"
check "fewshot config check" "$bin" config check "$cfg/fewshot-fmnist.yaml"
for s in full attention adapter lora bitfit; do
  check "fewshot with strategy $s" "$bin" config check "$cfg/fewshot-fmnist.yaml" \
    -o strategy.name=$s -o output.dir=runs/fewshot-fmnist-$s
done
check "fewshot post_out gated silu" "$bin" config check "$cfg/fewshot-fmnist.yaml" \
  -o strategy.adapter.placement=post_out -o strategy.adapter.activation=silu \
  -o strategy.adapter.gate=true

"$bin" config show "$cfg/pretrain-fmnist.yaml" >"$dir/pre.yaml" 2>&1 || fail=1
"$bin" config show "$cfg/fewshot-fmnist.yaml" >"$dir/few.yaml" 2>&1 || fail=1
"$bin" config show "$cfg/fmnist-unet.yaml" >"$dir/unet.yaml" 2>&1 || fail=1
arch() { sed -n '/^  arch:/,/^[a-z]/p' "$1" | grep '^    '; } # model.arch's keys
check "pretrain arch = fmnist-unet.yaml" cmp <(arch "$dir/pre.yaml") <(arch "$dir/unet.yaml")
check "fewshot arch = pretrain arch" cmp <(arch "$dir/pre.yaml") <(arch "$dir/few.yaml")
# The committed base is the export of this pretraining config: its metadata's config is
# pretrain-fmnist.yaml's, less the keys that do not change the weights (held-out loss,
# backend, output folder; the held-out keys came later and are off in pretraining).
weights=configs/weights/fmnist-base-ema.safetensors
check "fewshot starts from the committed base" grep -qx "  init: $weights" "$dir/few.yaml"
/usr/bin/python3 - "${A3FTA_SOURCE_DIR}/$weights" >"$dir/meta.yaml" <<'PY' || fail=1
import json, struct, sys
with open(sys.argv[1], "rb") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    meta = json.loads(f.read(n))["__metadata__"]
assert meta["weights"] == "ema" and meta["step"] == "3000", meta
sys.stdout.write(meta["config"])
PY
unrelated='^  (heldout_[a-z]+|backend|dir): '
check "the committed base's config = pretrain-fmnist.yaml" cmp \
  <(grep -Ev "$unrelated" "$dir/meta.yaml") <(grep -Ev "$unrelated" "$dir/pre.yaml")
check "pretrain: strategy full from random init" grep -qx "  init: random" "$dir/pre.yaml"
check "pretrain: classes 0-8" grep -qx "  classes: \[0, 1, 2, 3, 4, 5, 6, 7, 8\]" "$dir/pre.yaml"
check "fewshot: class 9, 10 shots" grep -qx "  classes: \[9\]" "$dir/few.yaml"
check "fewshot: 10 shots" grep -qx "  shots: 10" "$dir/few.yaml"
check "fewshot: a3fta" grep -qx "  name: a3fta" "$dir/few.yaml"
exit $fail
