#!/bin/bash
# a3fta export against the PyTorch reference: fine-tune the tiny U-Net from a pretrained
# one with several strategies, export the deltas, and let tools/apply_deltas.py (via
# check_export.py) rebuild each model from base + deltas and reproduce a3fta's output.
# Usage: export_test.sh EXPORT_HELPER_BIN   (A3FTA_BIN, A3FTA_SOURCE_DIR set by CTest)
# (The C side runs in one export_helper process: each start costs seconds under ASan.)
set -u
helper=$1
bin=${A3FTA_BIN:?}
src=${A3FTA_SOURCE_DIR:?}
python=/usr/bin/python3
dir=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-export-XXXXXX")
trap 'rm -rf "$dir"' EXIT
if ! "$python" -c "import torch, h5py, numpy" 2>/dev/null; then
  echo "FAILED: $python cannot import torch, h5py and numpy (Debian: python3-torch" \
    "python3-h5py python3-numpy)" >&2
  exit 1
fi
. "$(dirname "$0")/../lib/script_test.sh"

# NAME:STRATEGY[:raw]|overrides of the fine-tune (raw: exported and run with --no-ema)
cases=(
  "a3fta_pre:a3fta|strategy.name=a3fta strategy.adapter.rank=4 strategy.adapter.activation=gelu strategy.adapter.placement=pre_out strategy.adapter.gate=true"
  "adapter_post:adapter|strategy.name=adapter strategy.adapter.rank=3 strategy.adapter.activation=silu strategy.adapter.placement=post_out"
  "lora:lora:raw|strategy.name=lora strategy.lora.rank=2 strategy.lora.alpha=3.0"
  "bitfit:bitfit|strategy.name=bitfit"
)
expect_rc 0 "export_helper run" "$helper" run "$dir" "${cases[@]}"
cat "$dir/out"
[ "$fail" = 0 ] || exit 1

# The command: the same file as the library call; --out is required. (Bad checkpoints:
# test_export.)
expect_rc 0 "a3fta export" "$bin" export "$dir/a3fta_pre/checkpoint.h5" --out "$dir/cli.safetensors"
grep -q "export: 60 tensors .* of strategy a3fta, EMA weights of step 4" "$dir/out" ||
  failed "export's summary line: $(cat "$dir/out")"
cmp -s "$dir/cli.safetensors" "$dir/a3fta_pre.safetensors" ||
  failed "a3fta export wrote another file than a3_export_deltas"
# a3fta info on the export: its metadata and tensors, and --config is the config of the
# checkpoint it came from.
expect_rc 0 "info on an export" "$bin" info "$dir/cli.safetensors"
check "info: the export's strategy" grep -q "^             strategy: a3fta$" "$dir/out"
check "info: 60 F32 tensors, all finite" grep -qE "^tensors      60, [0-9]+ values: 60 F32$" "$dir/out"
check "info: values all finite" grep -q "; all finite$" "$dir/out"
"$bin" info "$dir/a3fta_pre/checkpoint.h5" --config >"$dir/ckpt-config.yaml" 2>&1
expect_rc 0 "info --config on an export" "$bin" info "$dir/cli.safetensors" --config
check "info --config: the checkpoint's config" diff -q "$dir/out" "$dir/ckpt-config.yaml"
expect_rc 2 "export without --out" "$bin" export "$dir/base/checkpoint.h5"

names=()
for c in "${cases[@]}"; do names+=("${c%%|*}"); done
"$python" "$src/tests/export/check_export.py" "$dir" "${names[@]}" || fail=1
exit $fail
