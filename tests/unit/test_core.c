// Core layer: Philox known answers, RNG range and determinism, error trail,
// status -> exit code mapping, checked allocation, file reading limits.
#include "a3fta/core.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

// Known-answer vectors of Philox4x32-10 from the Random123 distribution
// (kat_vectors): counter (c0..c3), key (k0, k1) -> output.
static void test_philox_known_answers(void) {
  a3_philox_block zero = a3_philox4x32(0, 0, 0);
  CHECK(zero.v[0] == 0x6627e8d5u && zero.v[1] == 0xe169c58du);
  CHECK(zero.v[2] == 0xbc57ac4cu && zero.v[3] == 0x9b00dbd8u);
  a3_philox_block ones = a3_philox4x32(UINT64_MAX, UINT64_MAX, UINT64_MAX);
  CHECK(ones.v[0] == 0x408f276du && ones.v[1] == 0x41c83b0eu);
  CHECK(ones.v[2] == 0xa20bc7c6u && ones.v[3] == 0x6d5451fdu);
  // counter = (243f6a88, 85a308d3, 13198a2e, 03707344), key = (a4093822, 299f31d0)
  a3_philox_block pi =
      a3_philox4x32(0x299f31d0a4093822ULL, 0x0370734413198a2eULL, 0x85a308d3243f6a88ULL);
  CHECK(pi.v[0] == 0xd16cfe09u && pi.v[1] == 0x94fdccebu);
  CHECK(pi.v[2] == 0x5001e420u && pi.v[3] == 0x24126ea1u);
}

static void test_rng_below(void) {
  int counts[7] = {0};
  for (uint64_t i = 0; i < 70000; i++) {
    uint64_t r = a3_rng_below(42, A3_STREAM_SUBSET, i, 7);
    CHECK(r < 7);
    if (r < 7) counts[r]++;
  }
  for (int k = 0; k < 7; k++)
    CHECK_MSG(abs(counts[k] - 10000) < 500, "bucket %d: %d", k, counts[k]);
  CHECK(a3_rng_below(1, 2, 3, 1000) == a3_rng_below(1, 2, 3, 1000));
  CHECK(a3_rng_u64(1, A3_STREAM_SUBSET, 0) != a3_rng_u64(1, A3_STREAM_SHUFFLE, 0));
  CHECK(a3_rng_u64(1, A3_STREAM_SUBSET, 0) != a3_rng_u64(2, A3_STREAM_SUBSET, 0));
}

static a3_status inner_failure(void) { return A3_FAIL(A3_ERR_INPUT, "bad byte at %d", 7); }
static a3_status outer_call(void) {
  A3_TRY(inner_failure());
  return A3_OK;
}

static void test_errors(void) {
  a3_error_clear();
  CHECK(outer_call() == A3_ERR_INPUT);
  CHECK(!strcmp(a3_error_message(), "bad byte at 7"));
  CHECK(strstr(a3_error_trail(), "tests/unit/test_core.c:") == a3_error_trail());
  CHECK(strstr(a3_error_trail(), " <- tests/unit/test_core.c:") != NULL);
  CHECK(a3_status_exit_code(A3_OK) == 0);
  CHECK(a3_status_exit_code(A3_ERR_CONFIG) == 2);
  CHECK(a3_status_exit_code(A3_ERR_USAGE) == 2);
  CHECK(a3_status_exit_code(A3_ERR_INPUT) == 2);
  CHECK(a3_status_exit_code(A3_ERR_IO) == 1);
  CHECK(a3_status_exit_code(A3_ERR_UNIMPLEMENTED) == 1);
  CHECK(a3_status_exit_code(A3_ERR_DIVERGED) == 1);
  for (int s = A3_OK; s <= A3_ERR_DIVERGED; s++)
    CHECK(strcmp(a3_status_name((a3_status)s), "unknown error") != 0);
}

static void test_memory(void) {
  double *p = NULL;
  CHECK(A3_ALLOC(p, 4) == A3_OK && p && p[3] == 0.0);
  free(p);
  void *huge = NULL;
  CHECK(a3_alloc(&huge, SIZE_MAX / 2, 4) == A3_ERR_NOMEM && huge == NULL);
  char *text = NULL;
  CHECK(a3_read_file("/nonexistent/a3fta", 10, &text, NULL) == A3_ERR_IO);
  CHECK(strstr(a3_error_message(), "/nonexistent/a3fta") != NULL);
  size_t len = 0;
  CHECK(a3_read_file("/proc/self/cmdline", 1 << 20, &text, &len) == A3_OK && len > 0);
  free(text);
  CHECK(a3_read_file("/proc/self/cmdline", 2, &text, &len) == A3_ERR_INPUT);
}

static void test_hash(void) {
  CHECK(a3_hash64("", 0, A3_HASH_SEED) == 0xcbf29ce484222325ULL);
  CHECK(a3_hash64("a", 1, A3_HASH_SEED) == 0xaf63dc4c8601ec8cULL); // FNV-1a 64 of "a"
}

int main(void) {
  test_philox_known_answers();
  test_rng_below();
  test_errors();
  test_memory();
  test_hash();
  return TEST_DONE("test_core");
}
