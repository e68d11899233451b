#!/usr/bin/env bash
# Every file in the bad-config corpus must be rejected by 'a3fta config check'
# with exit code 2 and the error its first line announces:
#   # expect: LINE:COL: message substring
# stderr must contain "FILE:LINE:COL: " and the substring, and no sanitizer
# report. Two cases too big to commit (over 1 MiB, over 100000 values) are
# generated here.
set -u
: "${A3FTA_BIN:?}"
corpus=${1:?usage: run_bad_corpus.sh CORPUS_DIR}
failures=0
count=0
fail() {
  echo "FAIL: $*" >&2
  failures=$((failures + 1))
}

check_file() { # file expect_line
  local file=$1 expect=$2 err rc
  local where=${expect%%: *} message=${expect#*: }
  err=$("$A3FTA_BIN" config check "$file" 2>&1 >/dev/null)
  rc=$?
  count=$((count + 1))
  [ "$rc" = 2 ] || fail "$file: exit code $rc, expected 2: $err"
  grep -qF -- "$file:$where: " <<<"$err" || fail "$file: no '$file:$where: ' in: $err"
  grep -qF -- "$message" <<<"$err" || fail "$file: no '$message' in: $err"
  if grep -qE "AddressSanitizer|LeakSanitizer|runtime error" <<<"$err"; then
    fail "$file: sanitizer report: $err"
  fi
}

shopt -s nullglob
files=("$corpus"/*.yaml)
[ "${#files[@]}" -ge 35 ] || fail "the corpus has ${#files[@]} files, expected at least 35"
for file in "${files[@]}"; do
  first=$(head -n 1 "$file")
  case $first in
  "# expect: "*) check_file "$file" "${first#\# expect: }" ;;
  *) fail "$file: the first line must be '# expect: LINE:COL: message'" ;;
  esac
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
{ # just over 1 MiB of comments
  echo "# a config that is far too large"
  head -c $((1024 * 1024)) /dev/zero | tr '\0' '#'
} >"$tmp/too_large.yaml"
check_file "$tmp/too_large.yaml" "1:1: the file is larger than 1048576 bytes (1 MiB)"
{ # 100001 values in about 200 KB
  printf 'sweep:\n  points: ['
  for _ in $(seq 10000); do printf '{},{},{},{},{},{},{},{},{},{},'; done
  printf '{}]\n'
} >"$tmp/too_many_values.yaml"
check_file "$tmp/too_many_values.yaml" "2:299997: the document has more than 100000 values"

echo "config bad corpus: $count files, $failures failures"
[ "$failures" = 0 ]
