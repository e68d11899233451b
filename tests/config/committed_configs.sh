#!/usr/bin/env bash
# Every committed config (configs/*.yaml) stays valid as the schema evolves:
# 'a3fta config check' passes, a file with a sweep section expands with
# 'a3fta sweep --dry-run', and where its header states "Points: ... = N" the
# expansion has exactly N points. Paths inside the configs (data, model.init)
# are relative to the repository root, so this runs there.
set -u
bin=${A3FTA_BIN:?}
cd "${A3FTA_SOURCE_DIR:?}" || exit 1
failures=0
fail() {
  echo "FAIL: $*"
  failures=$((failures + 1))
}
n=0
for f in configs/*.yaml; do
  n=$((n + 1))
  if ! out=$("$bin" config check "$f" 2>&1); then
    fail "$f: config check: $out"
    continue
  fi
  grep -q '^sweep:' "$f" || continue
  if ! out=$("$bin" sweep "$f" --dry-run 2>&1); then
    fail "$f: sweep --dry-run: $out"
    continue
  fi
  got=$(sed -n 's/^# \([0-9]*\) points, sweep hash.*/\1/p' <<<"$out")
  want=$(sed -n 's/^# Points:.*= *\([0-9][0-9]*\).*/\1/p' "$f" | head -1)
  echo "$f: ${got:-?} points${want:+ (header: $want)}"
  [ -n "$got" ] || fail "$f: no point count in the dry run"
  [ -z "$want" ] || [ "$got" = "$want" ] || fail "$f: $got points, its header says $want"
done
[ $n -gt 0 ] || fail "no configs found"
echo "committed configs: $n files, $failures failure(s)"
[ $failures -eq 0 ]
