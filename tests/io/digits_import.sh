#!/usr/bin/env bash
# The second transfer task's data path: tools/import_digits.py writes
# scikit-learn's UCI digits as PNG folders, 'a3fta import images --test'
# writes both splits into one dataset, and 'a3fta info' shows them. Checks,
# against scikit-learn's arrays read independently here: 1797 PNGs of 8x8,
# per digit the first 80% (rounded down) in train and the rest in test, ink
# 0..16 mapped to round(v * 255 / 16); the dataset holds the same per-class
# counts as 1x28x28 images with class names "0".."9" in digit order.
# Exit 77 (skip) without Debian's python3-sklearn.
set -u
: "${A3FTA_BIN:?A3FTA_BIN must name the a3fta binary}"
root=$(cd "$(dirname "$0")/../.." && pwd)
py=/usr/bin/python3
if ! "$py" -c 'import sklearn' 2>/dev/null; then
  echo "skip: python3-sklearn is missing (apt-get install python3-sklearn)"
  exit 77
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-digits-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

"$py" "$root/tools/import_digits.py" "$tmp/png" || fail "import_digits.py exited $?"

# The PNG folders against scikit-learn (count per folder, pixels of every image).
"$py" - "$tmp/png" >"$tmp/expected" <<'PY' || fail "the PNG folders differ from scikit-learn's digits"
import os, struct, sys, zlib
from sklearn.datasets import load_digits

def read_png(path):  # 8-bit grey, unfiltered rows, as the importer writes
    data = open(path, "rb").read()
    pos, idat, size = 8, b"", None
    while pos < len(data):
        n, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw = zlib.decompress(idat)
    w, h = size
    return [b for r in range(h) for b in raw[r * (w + 1) + 1:(r + 1) * (w + 1)]], (h, w)

out, bad = sys.argv[1], 0
d = load_digits()
for label in range(10):
    images = [im for im, t in zip(d.images, d.target) if t == label]
    n_train = len(images) * 8 // 10
    print(label, n_train, len(images) - n_train)
    for i, im in enumerate(images):
        split = "train" if i < n_train else "test"
        px, shape = read_png(os.path.join(out, split, str(label), f"{i:04d}.png"))
        want = [min(255, round(v * 255 / 16)) for v in im.reshape(-1)]
        if shape != (8, 8) or px != want:
            bad += 1
    for split, n in (("train", n_train), ("test", len(images) - n_train)):
        got = len(os.listdir(os.path.join(out, split, str(label))))
        if got != n:
            print(f"digit {label}: {got} {split} PNGs, expected {n}", file=sys.stderr)
            bad += 1
if bad:
    print(f"{bad} mismatches", file=sys.stderr)
sys.exit(1 if bad else 0)
PY

"$A3FTA_BIN" import images "$tmp/png/train" --test "$tmp/png/test" --out "$tmp/digits.h5" \
  --size 28 --fit resize || fail "a3fta import images exited $?"
"$A3FTA_BIN" info "$tmp/digits.h5" >"$tmp/info" || fail "a3fta info exited $?"
cat "$tmp/info"
[ "$(awk '$1 == "train" && $2 ~ /^[0-9]+$/ {print $3 "x" $4 "x" $5}' "$tmp/info")" = 1x28x28 ] ||
  fail "train images are not 1x28x28"
# Class rows "index name train test": the name of class k is the digit k.
while read -r label n_train n_test; do
  row=$(awk -v k="$label" '$1 == k && NF == 4 {print $2, $3, $4}' "$tmp/info")
  [ "$row" = "$label $n_train $n_test" ] ||
    fail "class $label: info says '$row', expected '$label $n_train $n_test'"
done <"$tmp/expected"
[ -s "$tmp/expected" ] || fail "no expected counts"

echo "digits import: $failures failure(s)"
[ $failures -eq 0 ]
