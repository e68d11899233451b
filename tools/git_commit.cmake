# Writes OUT, a header defining A3FTA_GIT_COMMIT: SRC's HEAD as a 12-digit
# short hash, with "-dirty" when tracked files differ from it, or "unknown"
# outside a git checkout. OUT is rewritten only when that changes, so a
# build at the same commit recompiles nothing.
#   cmake -DSRC=DIR -DOUT=FILE -P tools/git_commit.cmake   (CMakeLists.txt runs it)
execute_process(COMMAND git rev-parse --short=12 HEAD WORKING_DIRECTORY ${SRC}
  OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET RESULT_VARIABLE rc)
if(NOT rc EQUAL 0 OR NOT commit)
  set(commit "unknown")
else()
  execute_process(COMMAND git diff --quiet HEAD -- WORKING_DIRECTORY ${SRC}
    RESULT_VARIABLE dirty ERROR_QUIET)
  if(dirty EQUAL 1)
    string(APPEND commit "-dirty")
  endif()
endif()
file(WRITE ${OUT}.tmp "// Generated at build time by tools/git_commit.cmake.\n"
  "#define A3FTA_GIT_COMMIT \"${commit}\"\n")
file(COPY_FILE ${OUT}.tmp ${OUT} ONLY_IF_DIFFERENT)
file(REMOVE ${OUT}.tmp)
