#!/usr/bin/env bash
# The a3fta command line: help, version, every command's --help, exit codes,
# and that each option a help text lists is one the parser accepts.
set -u
: "${A3FTA_BIN:?}"
failures=0
fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
expect_rc() { # expected_rc description command...
  local want=$1 what=$2; shift 2
  out=$("$@" 2>&1); rc=$?
  [ "$rc" = "$want" ] || fail "$what: expected exit $want, got $rc: $out"
}

expect_rc 0 "--help" "$A3FTA_BIN" --help
commands="import info config train sweep sample export eval"
for c in $commands; do
  grep -q "^  $c " <<<"$out" || fail "--help does not list '$c'"
done
expect_rc 0 "--version" "$A3FTA_BIN" --version
for field in "git " "hdf5:" "mpi:" "math:" "cuda:"; do
  grep -q "$field" <<<"$out" || fail "--version lacks '$field': $out"
done
# The commit it names is the one the sources are at now (checked at every
# build, not at configure time), when they are a git checkout.
src=$(cd "$(dirname "$0")/../.." && pwd)
if head=$(git -C "$src" rev-parse --short=12 HEAD 2>/dev/null); then
  git -C "$src" diff --quiet HEAD -- || head="$head-dirty"
  grep -q "(git $head," <<<"$out" || fail "--version does not name the sources' commit $head: $out"
fi
expect_rc 2 "no arguments" "$A3FTA_BIN"
expect_rc 2 "unknown command" "$A3FTA_BIN" frobnicate
grep -q "unknown command 'frobnicate'" <<<"$out" || fail "unknown command message: $out"

for c in $commands; do
  expect_rc 0 "$c --help" "$A3FTA_BIN" "$c" --help
  grep -q "^usage: a3fta $c" <<<"$out" || fail "$c --help has no usage line: $out"
  # Every long option the help lists must be accepted by the parser.
  for opt in $(grep -oE -- '--[a-z][a-z0-9-]*' <<<"$out" | sort -u); do
    "$A3FTA_BIN" "$c" "$opt" 2>&1 | grep -q "unknown option '$opt'" \
      && fail "$c --help lists $opt but the parser rejects it"
  done
  expect_rc 2 "$c with an unknown option" "$A3FTA_BIN" "$c" --no-such-option
done
# eval of a checkpoint that does not exist: a runtime error naming the file.
expect_rc 1 "eval of a missing checkpoint" "$A3FTA_BIN" eval no-such-checkpoint.h5
grep -q "no-such-checkpoint.h5" <<<"$out" || fail "eval does not name the missing file: $out"
expect_rc 0 "--quiet anywhere" "$A3FTA_BIN" config --quiet --help

echo "cli_basics: $failures failure(s)"
[ "$failures" = 0 ]
