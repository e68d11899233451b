// Helpers for the safetensors tests: hand-built files and status checks.
#ifndef A3FTA_TESTS_ST_TEST_UTIL_H
#define A3FTA_TESTS_ST_TEST_UTIL_H

#include "a3fta/core.h"
#include "io/io_test_util.h"
#include "test_util.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// A file of: u64 n_field (little-endian), header[0..header_len), data_len
// bytes of `data` (or a byte pattern when data is NULL). 0 on success.
static inline int st_write_raw(const char *path, uint64_t n_field, const char *header,
                               size_t header_len, const void *data, size_t data_len) {
  unsigned char *buf = malloc(8 + header_len + data_len + 1);
  if (!buf) return -1;
  for (int i = 0; i < 8; i++) buf[i] = (unsigned char)(n_field >> (8 * i));
  memcpy(buf + 8, header, header_len);
  for (size_t i = 0; i < data_len; i++)
    buf[8 + header_len + i] = data ? ((const unsigned char *)data)[i] : (unsigned char)(i * 37);
  const int rc = io_write_file(path, buf, 8 + header_len + data_len);
  free(buf);
  return rc;
}

// A well-formed file: the header text as given, its true length, data_len bytes.
static inline int st_write_header(const char *path, const char *header, const void *data,
                                  size_t data_len) {
  return st_write_raw(path, strlen(header), header, strlen(header), data, data_len);
}

// Whether the message holds `needle` (NULL: anything goes).
static inline int st_has(const char *message, const char *needle) {
  return !needle || strstr(message, needle) != NULL;
}

// Checks `s` is `want` and the message holds `needle`; prints both otherwise.
#define CHECK_STATUS(s, want, needle)                                                              \
  do {                                                                                             \
    const a3_status st_s_ = (s);                                                                   \
    const char *st_m_ = a3_error_message();                                                        \
    const char *st_n_ = (needle);                                                                  \
    CHECK_MSG(st_s_ == (want) && st_has(st_m_, st_n_),                                             \
              "status %s (want %s), message: %s (want: %s)", a3_status_name(st_s_),                \
              a3_status_name(want), st_m_, st_n_ ? st_n_ : "");                                    \
    a3_error_clear();                                                                              \
  } while (0)

#endif
