// Checked allocation and whole-file reads.
#include "a3fta/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

a3_status a3_alloc(void **out, size_t count, size_t size) {
  *out = NULL;
  if (count == 0 || size == 0) count = size = 1; // a valid, freeable pointer
  if (count > SIZE_MAX / size)
    return A3_FAIL(A3_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", count, size);
  *out = calloc(count, size);
  if (!*out) return A3_FAIL(A3_ERR_NOMEM, "cannot allocate %zu bytes", count * size);
  return A3_OK;
}

static a3_status read_stream(FILE *f, const char *path, size_t max_bytes, char **out,
                             size_t *out_len) {
  size_t cap = 4096, len = 0;
  char *buf = NULL;
  A3_TRY(a3_alloc((void **)&buf, cap, 1));
  for (;;) {
    if (len + 1 >= cap) {
      char *grown = realloc(buf, cap * 2);
      if (!grown) {
        free(buf);
        return A3_FAIL(A3_ERR_NOMEM, "cannot allocate %zu bytes to read %s", cap * 2, path);
      }
      buf = grown;
      cap *= 2;
    }
    size_t got = fread(buf + len, 1, cap - 1 - len, f);
    len += got;
    if (len > max_bytes) {
      free(buf);
      return A3_FAIL(A3_ERR_INPUT, "%s: file is larger than the limit of %zu bytes", path,
                     max_bytes);
    }
    if (got == 0) break;
  }
  if (ferror(f)) {
    free(buf);
    return A3_FAIL(A3_ERR_IO, "%s: read failed: %s", path, strerror(errno));
  }
  buf[len] = '\0';
  *out = buf;
  if (out_len) *out_len = len;
  return A3_OK;
}

a3_status a3_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return A3_FAIL(A3_ERR_IO, "cannot open %s: %s", path, strerror(errno));
  a3_status s = read_stream(f, path, max_bytes, out, out_len);
  fclose(f);
  if (s != A3_OK) a3_error_trace(__FILE__, __LINE__);
  return s;
}
