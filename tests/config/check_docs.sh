#!/usr/bin/env bash
# The committed docs are generated: configs/README.md is 'a3fta config schema'
# and configs/default.yaml is 'a3fta config show --commented'. Fails (with the
# command that regenerates them) when either has drifted from the schema.
set -u
: "${A3FTA_BIN:?}" "${A3FTA_SOURCE_DIR:?}"
failures=0
check() { # committed_file command...
  local file=$1
  shift
  if ! diff -u "$file" <("$A3FTA_BIN" "$@") >&2; then
    echo "FAIL: $file is out of date; regenerate it: a3fta $* > $file" >&2
    failures=$((failures + 1))
  fi
}
check "$A3FTA_SOURCE_DIR/configs/README.md" config schema
check "$A3FTA_SOURCE_DIR/configs/default.yaml" config show --commented
[ "$failures" = 0 ]
