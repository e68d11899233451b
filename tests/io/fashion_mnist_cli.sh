#!/usr/bin/env bash
# 'a3fta import fashion-mnist' on Debian's real files, then 'a3fta info'
# (alone and under mpirun -np 2): 60000 + 10000 images, 6000 / 1000 per
# class, the known pixel mean; and the errors users hit: a wrong --source
# (exit 2, a clear message), a file that is not HDF5, an HDF5 file that is
# not a dataset. Exit 77 (skip) without the Debian package.
set -u
src=/usr/share/datasets/fashion-mnist
if [ ! -f "$src/train-images-idx3-ubyte.gz" ]; then
  echo "skip: $src is missing (apt-get install dataset-fashion-mnist)"
  exit 77
fi
: "${A3FTA_BIN:?A3FTA_BIN must name the a3fta binary}"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/a3fta-fmnist-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}

# ---- import
start=$(date +%s.%N)
"$A3FTA_BIN" import fashion-mnist --out "$tmp/f.h5" >"$tmp/import.out" 2>"$tmp/import.err"
rc=$?
echo "import: exit $rc in $(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }') s"
cat "$tmp/import.out" "$tmp/import.err"
[ $rc -eq 0 ] || fail "import exited $rc"
grep -Eq '^train +60000 images' "$tmp/import.out" || fail "no 'train 60000 images' summary line"
grep -Eq '^test +10000 images' "$tmp/import.out" || fail "no 'test 10000 images' summary line"
[ -e "$tmp/f.h5.tmp" ] && fail "import left f.h5.tmp behind"

# ---- info: split rows "train N C H W mean std", class rows "k name... train test"
check_info() { # $1 = label, $2 = file with info's stdout
  local out=$2
  [ "$(awk '$1 == "train" && $2 ~ /^[0-9]+$/ {print $2}' "$out")" = 60000 ] ||
    fail "$1: train split is not 60000 images"
  [ "$(awk '$1 == "test" && $2 ~ /^[0-9]+$/ {print $2}' "$out")" = 10000 ] ||
    fail "$1: test split is not 10000 images"
  [ "$(awk '$1 == "train" && $2 ~ /^[0-9]+$/ {print $3 "x" $4 "x" $5}' "$out")" = 1x28x28 ] ||
    fail "$1: train images are not 1x28x28"
  local classes
  classes=$(awk '$1 ~ /^[0-9]+$/ && $(NF-1) == 6000 && $NF == 1000' "$out" | wc -l)
  [ "$classes" -eq 10 ] || fail "$1: $classes of 10 classes have 6000 train + 1000 test images"
  grep -Eq '^ +9 Ankle boot +6000 +1000$' "$out" || fail "$1: class 9 is not 'Ankle boot'"
  # Fashion-MNIST's well-known train statistics: mean 0.2860, std 0.3530 (x 255).
  awk '$1 == "train" && $2 ~ /^[0-9]+$/ { exit !($6 > 72.9 && $6 < 73.0 && $7 > 89.9 && $7 < 90.1) }' \
    "$out" || fail "$1: train pixel mean/std are not 72.94/90.02"
  grep -q 'Debian dataset-fashion-mnist' "$out" || fail "$1: source not shown"
}
"$A3FTA_BIN" info "$tmp/f.h5" >"$tmp/info.out" 2>"$tmp/info.err"
rc=$?
cat "$tmp/info.out" "$tmp/info.err"
[ $rc -eq 0 ] || fail "info exited $rc"
check_info "info" "$tmp/info.out"

if command -v mpirun >/dev/null; then
  mpirun -np 2 --oversubscribe "$A3FTA_BIN" info "$tmp/f.h5" >"$tmp/info2.out" 2>"$tmp/info2.err"
  rc=$?
  [ $rc -eq 0 ] || { cat "$tmp/info2.err"; fail "mpirun -np 2 info exited $rc"; }
  check_info "mpirun -np 2 info" "$tmp/info2.out"
  [ "$(grep -c '^a3fta dataset' "$tmp/info2.out")" -eq 1 ] || fail "info printed by more than rank 0"
  diff "$tmp/info.out" "$tmp/info2.out" >/dev/null || fail "info differs between 1 and 2 ranks"
fi

# ---- errors
"$A3FTA_BIN" import fashion-mnist --source "$tmp/nowhere" --out "$tmp/g.h5" 2>"$tmp/err" >/dev/null
rc=$?
cat "$tmp/err"
[ $rc -eq 2 ] || fail "bad --source: exit $rc, expected 2"
grep -q "$tmp/nowhere does not exist" "$tmp/err" || fail "bad --source: message does not say so"
grep -q "dataset-fashion-mnist" "$tmp/err" || fail "bad --source: message does not name the package"
[ -e "$tmp/g.h5" ] || [ -e "$tmp/g.h5.tmp" ] && fail "bad --source left an output file"

"$A3FTA_BIN" import fashion-mnist 2>"$tmp/err" >/dev/null
rc=$?
[ $rc -eq 2 ] && grep -q -- "--out FILE is required" "$tmp/err" || fail "missing --out: exit $rc"

echo "not hdf5" >"$tmp/text.h5"
"$A3FTA_BIN" info "$tmp/text.h5" 2>"$tmp/err" >/dev/null
rc=$?
cat "$tmp/err"
[ $rc -eq 2 ] && grep -q "text.h5 is not an HDF5 file" "$tmp/err" || fail "info on text: exit $rc"

if /usr/bin/python3 -c 'import h5py' 2>/dev/null; then
  /usr/bin/python3 -c "import h5py; h5py.File('$tmp/plain.h5', 'w').create_dataset('x', data=[1])"
  "$A3FTA_BIN" info "$tmp/plain.h5" 2>"$tmp/err" >/dev/null
  rc=$?
  cat "$tmp/err"
  [ $rc -eq 2 ] || fail "info on a plain HDF5 file: exit $rc, expected 2"
  grep -q "not an a3fta file (no 'format' attribute); a3fta info reads datasets, results files and checkpoints" "$tmp/err" ||
    fail "info on a plain HDF5 file: unclear message"
fi

echo "fashion_mnist_cli: $failures failure(s)"
[ $failures -eq 0 ]
