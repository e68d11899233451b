#!/usr/bin/env bash
# a3fta info --model: the parameter summary of the google/ddpm-cifar10-32
# U-Net, from our YAML and from a diffusers config.json, and its errors.
set -u
: "${A3FTA_BIN:?}" "${A3FTA_SOURCE_DIR:?}"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

expect_counts() { # what output
  grep -q "parameters: 35,746,307 in 328 tensors" <<<"$2" || fail "$1: total: $2"
  grep -q "attention blocks: 1,582,080 (4.43%)" <<<"$2" || fail "$1: attention: $2"
  grep -q "biases: 40,835" <<<"$2" || fail "$1: biases: $2"
}

out=$("$A3FTA_BIN" info --model "$A3FTA_SOURCE_DIR/configs/ddpm-cifar10-32.yaml" 2>&1) \
  || fail "yaml: exit $?: $out"
expect_counts yaml "$out"

cat >"$tmp/config.json" <<'JSON'
{"_class_name": "UNet2DModel", "_diffusers_version": "0.0.4", "act_fn": "silu",
 "attention_head_dim": null, "block_out_channels": [128, 256, 256, 256], "center_input_sample": false,
 "down_block_types": ["DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"],
 "downsample_padding": 0, "flip_sin_to_cos": false, "freq_shift": 1, "in_channels": 3,
 "layers_per_block": 2, "mid_block_scale_factor": 1, "norm_eps": 1e-06, "norm_num_groups": 32,
 "out_channels": 3, "sample_size": 32, "time_embedding_type": "positional",
 "up_block_types": ["UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"]}
JSON
out=$("$A3FTA_BIN" info --model "$tmp/config.json" 2>&1) || fail "config.json: exit $?: $out"
expect_counts config.json "$out"

out=$("$A3FTA_BIN" info --model "$A3FTA_SOURCE_DIR/configs/fmnist-unet.yaml" --batch 64 --params 2>&1) \
  || fail "fmnist: exit $?: $out"
grep -q "parameters: 1,623,169" <<<"$out" || fail "fmnist total: $out"
grep -q "activations (batch 64, fp32):" <<<"$out" || fail "fmnist: no planned memory: $out"
grep -q "^mid_block.attentions.0.to_q.weight  *(64, 64)  *4096 attention" <<<"$out" \
  || fail "fmnist --params: no to_q row: $out"

out=$("$A3FTA_BIN" info --model "$tmp/nope.yaml" 2>&1); rc=$?
[ "$rc" = 2 ] || fail "missing config: exit $rc (want 2): $out"
out=$("$A3FTA_BIN" info --model "$A3FTA_SOURCE_DIR/configs/fmnist-unet.yaml" \
  -o model.arch.norm_num_groups=5 2>&1); rc=$?
[ "$rc" = 2 ] || fail "bad override: exit $rc (want 2): $out"

echo "info_model: $failures failure(s)"
[ "$failures" = 0 ]
