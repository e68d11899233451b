// Minimal assertion helpers for C tests: count failures, never abort early,
// and return non-zero from main when any check failed.
#ifndef A3FTA_TEST_UTIL_H
#define A3FTA_TEST_UTIL_H
#include <stdio.h>

static int test_failures = 0;
static int test_checks = 0;

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    test_checks++;                                                                                 \
    if (!(cond)) {                                                                                 \
      test_failures++;                                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                     \
    }                                                                                              \
  } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
  do {                                                                                             \
    test_checks++;                                                                                 \
    if (!(cond)) {                                                                                 \
      test_failures++;                                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);                     \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
    }                                                                                              \
  } while (0)

// Ends a test program: prints a summary, returns the exit code.
#define TEST_DONE(name)                                                                            \
  (fprintf(stderr, "%s: %d checks, %d failed\n", (name), test_checks, test_failures),              \
   test_failures ? 1 : 0)
#endif
