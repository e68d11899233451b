// IDX reader over zlib's gz* API (which also reads uncompressed files).
#include "io/idx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

// A corrupt header can promise anything; Fashion-MNIST's largest file holds
// 47 MB. Refuse more than 4 GiB rather than try to allocate it.
static const uint64_t idx_max_bytes = (uint64_t)1 << 32;

static uint32_t be32(const unsigned char *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static const char *magic_meaning(uint32_t magic) {
  switch (magic) {
  case A3_IDX_MAGIC_IMAGES: return "unsigned bytes in 3 dimensions: an images file";
  case A3_IDX_MAGIC_LABELS: return "unsigned bytes in 1 dimension: a labels file";
  default: return "an IDX file";
  }
}

static const char *magic_hint(uint32_t expected, uint32_t found) {
  if (found == A3_IDX_MAGIC_IMAGES || found == A3_IDX_MAGIC_LABELS)
    return expected == found ? "" : "; are the images and labels files swapped?";
  if ((found >> 16) == 0 && ((found >> 8) & 0xff) != 0x08)
    return "; this IDX file does not hold unsigned bytes, which a3fta does not read";
  return "; the file is not IDX (or not a gzip stream of one)";
}

// Reads up to `want` bytes; *got < want means the data ended early. Corrupt
// gzip streams and read failures are errors; a gzip stream cut short is not
// (zlib says Z_BUF_ERROR), the caller reports the short read instead.
static a3_status gz_read_all(gzFile gz, const char *path, size_t offset, uint8_t *buf, size_t want,
                             size_t *got) {
  *got = 0;
  while (*got < want) {
    const size_t step = want - *got < (1u << 30) ? want - *got : (1u << 30);
    const int n = gzread(gz, buf + *got, (unsigned)step);
    if (n > 0) {
      *got += (size_t)n;
      continue;
    }
    int errnum = Z_OK;
    const char *msg = gzerror(gz, &errnum);
    if (n == 0 || errnum == Z_BUF_ERROR) return A3_OK;
    if (errnum == Z_ERRNO)
      return A3_FAIL(A3_ERR_IO, "%s: read failed at byte offset %zu: %s", path, offset + *got,
                     strerror(errno));
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: corrupt gzip data at uncompressed byte offset %zu (zlib: %s); "
                   "re-download or reinstall the file",
                   path, offset + *got, msg);
  }
  return A3_OK;
}

static a3_status read_magic(gzFile gz, const char *path, uint32_t magic, a3_idx *out) {
  unsigned char head[4];
  size_t got = 0;
  A3_TRY(gz_read_all(gz, path, 0, head, 4, &got));
  if (got < 4)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: truncated: %zu bytes, expected at least the 4-byte IDX magic number "
                   "0x%08x (%s)",
                   path, got, magic, magic_meaning(magic));
  const uint32_t found = be32(head);
  if (found != magic)
    return A3_FAIL(A3_ERR_INPUT, "%s: bad magic number 0x%08x at byte 0, expected 0x%08x (%s)%s",
                   path, found, magic, magic_meaning(magic), magic_hint(magic, found));
  out->ndims = (int)(magic & 0xff);
  out->header_bytes = 4 + 4 * (size_t)out->ndims;
  return A3_OK;
}

static a3_status read_dims(gzFile gz, const char *path, a3_idx *out) {
  unsigned char raw[4 * A3_IDX_MAX_DIMS];
  size_t got = 0;
  const size_t want = 4 * (size_t)out->ndims;
  A3_TRY(gz_read_all(gz, path, 4, raw, want, &got));
  if (got < want)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: truncated header: expected %d dimension sizes (bytes 4 to %zu), the file "
                   "ends at byte %zu",
                   path, out->ndims, out->header_bytes, 4 + got);
  uint64_t size = 1;
  for (int d = 0; d < out->ndims; d++) {
    out->dims[d] = be32(raw + 4 * d);
    if (out->dims[d] == 0)
      return A3_FAIL(A3_ERR_INPUT, "%s: dimension %d (byte offset %d) is 0, expected a size >= 1",
                     path, d, 4 + 4 * d);
    size *= out->dims[d];
    if (size > idx_max_bytes)
      return A3_FAIL(A3_ERR_INPUT,
                     "%s: the header promises more than %llu bytes of data; is it corrupt?", path,
                     (unsigned long long)idx_max_bytes);
  }
  out->size = (size_t)size;
  return A3_OK;
}

static void describe_dims(const a3_idx *idx, char *buf, size_t cap) {
  int used = snprintf(buf, cap, "%u", idx->dims[0]);
  for (int d = 1; d < idx->ndims && used > 0 && (size_t)used < cap; d++)
    used += snprintf(buf + used, cap - (size_t)used, " x %u", idx->dims[d]);
}

static a3_status read_data(gzFile gz, const char *path, a3_idx *out) {
  A3_TRY(a3_alloc((void **)&out->data, out->size, 1));
  size_t got = 0;
  A3_TRY(gz_read_all(gz, path, out->header_bytes, out->data, out->size, &got));
  char dims[64];
  describe_dims(out, dims, sizeof dims);
  if (got < out->size)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: truncated: the header promises %s = %zu bytes of data after its %zu "
                   "bytes, the file ends after %zu of them (at byte %zu); re-download the file",
                   path, dims, out->size, out->header_bytes, got, out->header_bytes + got);
  uint8_t extra = 0;
  A3_TRY(gz_read_all(gz, path, out->header_bytes + out->size, &extra, 1, &got));
  if (got)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: unexpected data after byte %zu: the header promises %s = %zu bytes of "
                   "data after its %zu bytes and nothing more; is the header wrong?",
                   path, out->header_bytes + out->size, dims, out->size, out->header_bytes);
  return A3_OK;
}

a3_status a3_idx_read(const char *path, uint32_t magic, a3_idx *out) {
  memset(out, 0, sizeof *out);
  if ((magic & 0xff) < 1 || (magic & 0xff) > A3_IDX_MAX_DIMS)
    return A3_FAIL(A3_ERR_INTERNAL, "a3_idx_read: unsupported magic 0x%08x", magic);
  errno = 0;
  gzFile gz = gzopen(path, "rb");
  if (!gz)
    return A3_FAIL(A3_ERR_IO, "cannot open %s: %s", path,
                   errno ? strerror(errno) : "out of memory");
  gzbuffer(gz, 1u << 18); // fewer, larger reads: the import is dominated by inflate
  a3_status s = read_magic(gz, path, magic, out);
  if (s == A3_OK) s = read_dims(gz, path, out);
  if (s == A3_OK) s = read_data(gz, path, out);
  gzclose(gz);
  if (s != A3_OK) {
    a3_error_trace(__FILE__, __LINE__);
    a3_idx_free(out);
  }
  return s;
}

void a3_idx_free(a3_idx *idx) {
  if (!idx) return;
  free(idx->data);
  idx->data = NULL;
}
