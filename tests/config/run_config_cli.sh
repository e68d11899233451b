#!/usr/bin/env bash
# 'a3fta config' through the binary: show/hash/check output, overrides that
# work, overrides that must fail with exit 2 and "override 'k=v': ...", and
# usage errors.
set -u
: "${A3FTA_BIN:?}"
failures=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

run() { # expected_rc command... ; sets $out (stdout) and $err (stderr)
  local want=$1
  shift
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  out=$(cat "$tmp/out")
  err=$(cat "$tmp/err")
  [ "$rc" = "$want" ] || fail "$*: exit code $rc, expected $want: $err"
  if grep -qE "AddressSanitizer|LeakSanitizer|runtime error" "$tmp/err"; then
    fail "$*: sanitizer report: $err"
  fi
}
has() { grep -qF -- "$2" <<<"$1" || fail "expected '$2' in: $1"; }

# show / hash / check agree, and the printed config reads back to the same hash.
run 0 "$A3FTA_BIN" config show
printf '%s\n' "$out" >"$tmp/defaults.yaml"
has "$out" "lr: 0.0001"
run 0 "$A3FTA_BIN" config hash
default_hash=$out
grep -qE '^[0-9a-f]{16}$' <<<"$default_hash" || fail "hash is not 16 hex digits: $default_hash"
run 0 "$A3FTA_BIN" config check "$tmp/defaults.yaml"
[ "$out" = "$tmp/defaults.yaml: ok (hash $default_hash)" ] || fail "check output: $out"

# Key order, comments and spelling do not change the hash; a value does.
printf 'train: {steps: 500, lr: 1e-4}\ndata: {hflip: true}\n' >"$tmp/a.yaml"
printf '# same\ndata:\n  hflip: true\ntrain:\n  lr: 0.0001   # same value\n  steps: 500\n' \
  >"$tmp/b.yaml"
run 0 "$A3FTA_BIN" config hash "$tmp/a.yaml"
hash_a=$out
run 0 "$A3FTA_BIN" config hash "$tmp/b.yaml"
[ "$hash_a" = "$out" ] || fail "hash depends on formatting: $hash_a vs $out"
[ "$hash_a" != "$default_hash" ] || fail "hash ignores a changed value"
run 0 "$A3FTA_BIN" config hash "$tmp/a.yaml" -o train.steps=1000 -o data.hflip=false
[ "$out" = "$default_hash" ] || fail "overrides back to the defaults give another hash"

# Overrides that work.
run 0 "$A3FTA_BIN" config show -o train.lr=3e-4 -o 'data.classes=[0,9]' \
  --override=model.arch.attention_head_dim=16 -o 'strategy.lora={rank: 8}' -o output.dir=runs/x
for want in "lr: 0.0003" "classes: [0, 9]" "attention_head_dim: 16" "rank: 8" "dir: runs/x"; do
  has "$out" "$want"
done
run 0 "$A3FTA_BIN" config show -o 'sweep.grid={train.seed: [0, 1]}'
has "$out" "train.seed: [0, 1]"

# Overrides that must fail: exit 2, "override 'k=v': ..." on stderr.
bad_override() { # assignment expected_message
  run 2 "$A3FTA_BIN" config show -o "$1"
  has "$err" "override '$1': $2"
}
bad_override "train.lr=abc" "train.lr: expected a number, got 'abc'"
bad_override "train.lr=.inf" "train.lr: expected a finite number"
bad_override "train.steps=1.5" "train.steps: expected an integer, got '1.5'"
bad_override "train.steps=" "train.steps: expected an integer, got nothing"
bad_override "train.ema=yes" "train.ema: expected true or false, got 'yes'"
bad_override "train.precision=fp64" "train.precision: 'fp64' is not allowed"
bad_override "train.lerning_rate=1" "unknown key 'lerning_rate' in train (did you mean 'lr'?)"
bad_override "trian.lr=1" "unknown section 'trian' (did you mean 'train'?)"
bad_override "train.lr.x=1" "train.lr: a number has no keys below it"
bad_override "data.classes=[1,2" "invalid YAML"
bad_override "data.classes=[1,1]" "data.classes[1]: the same value as data.classes[0]"
bad_override "train={lr: 0}" "train.lr: 0 is out of range"
bad_override "train=5" "train: expected a map"
bad_override "model.arch.norm_num_groups=7" "model.arch.norm_num_groups: block_out_channels[0]"
bad_override "train.lr=&a 1" "anchors and aliases are not supported"
bad_override "justtext" "expected KEY=VALUE"
run 2 "$A3FTA_BIN" config check "$tmp/a.yaml" -o train.warmup=600
has "$err" "override 'train.warmup=600': train.warmup: train.warmup = 600 exceeds"

# Usage and I/O errors.
run 2 "$A3FTA_BIN" config
run 2 "$A3FTA_BIN" config frobnicate
has "$err" "unknown subcommand 'frobnicate'"
run 2 "$A3FTA_BIN" config check
run 2 "$A3FTA_BIN" config show a.yaml b.yaml
run 2 "$A3FTA_BIN" config show -o
run 2 "$A3FTA_BIN" config check "$tmp/does-not-exist.yaml"
run 0 "$A3FTA_BIN" config --help
has "$out" "usage: a3fta config"
for sub in show hash check schema; do
  run 0 "$A3FTA_BIN" config "$sub" --help
  has "$out" "usage: a3fta config $sub"
done

echo "config cli: $failures failures"
[ "$failures" = 0 ]
