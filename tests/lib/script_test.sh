# Helpers for the shell tests of the a3fta command line. Sourced (after the
# script sets bin, dir and, for run, MPIEXEC):
#   . "$(dirname "$0")/../lib/script_test.sh"
# A failed check is counted and printed, never an early exit: the script
# ends with `exit $fail`.
fail=0

failed() { # failed WHAT...: one failure, printed
  echo "FAILED: $*" >&2
  fail=1
}

check() { # check WHAT COMMAND...: a failure when COMMAND fails
  local what=$1
  shift
  "$@" || failed "$what"
}

expect_rc() { # expect_rc RC WHAT COMMAND...: COMMAND's exit code; its output in $dir/out
  local want=$1 what=$2
  shift 2
  "$@" >"$dir/out" 2>&1
  local rc=$?
  if [ "$rc" != "$want" ]; then
    failed "$what: exit $rc, expected $want; output:"
    cat "$dir/out" >&2
  fi
}

run() { # run NP OUTFILE a3fta-args...: a3fta on NP MPI ranks; sets rc
  local np=$1 out=$2
  shift 2
  "$MPIEXEC" -np "$np" --oversubscribe "$bin" "$@" >"$out" 2>&1
  rc=$?
}

expect() { # expect RC WHAT OUTFILE: the last run's exit code (the output's tail when not)
  [ "$rc" = "$1" ] || {
    failed "$2: exit $rc, expected $1:"
    tail -20 "$3" >&2
  }
}
