// safetensors writer for float32 tensors (adapter/LoRA deltas for PyTorch
// users): the layout of the reference implementation, written atomically.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/safetensors.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---------------------------------------------------------------- text buffer
typedef struct {
  char *p;
  size_t len, cap;
} text;

static a3_status put_n(text *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return A3_FAIL(A3_ERR_NOMEM, "out of memory for a %zu-byte safetensors header", cap);
    b->p = p;
    b->cap = cap;
  }
  memcpy(b->p + b->len, s, n);
  b->len += n;
  b->p[b->len] = '\0';
  return A3_OK;
}

static a3_status put(text *b, const char *s) { return put_n(b, s, strlen(s)); }

static a3_status put_u64(text *b, uint64_t v) {
  char num[24];
  snprintf(num, sizeof num, "%" PRIu64, v);
  return put(b, num);
}

// A JSON string: quotes, backslashes and control characters escaped; the
// caller has checked it is valid UTF-8, which JSON carries as is.
static a3_status put_json_string(text *b, const char *s) {
  A3_TRY(put(b, "\""));
  for (const char *c = s; *c; c++) {
    const unsigned char u = (unsigned char)*c;
    char esc[8];
    if (u == '"' || u == '\\') {
      snprintf(esc, sizeof esc, "\\%c", u);
    } else if (u < 0x20) {
      snprintf(esc, sizeof esc, "\\u%04x", u);
    } else {
      A3_TRY(put_n(b, c, 1));
      continue;
    }
    A3_TRY(put(b, esc));
  }
  return put(b, "\"");
}

// ---------------------------------------------------------------- arguments
static a3_status check_string(const char *path, const char *what, const char *s) {
  size_t bad = 0;
  if (!s) return A3_FAIL(A3_ERR_INTERNAL, "%s: writing safetensors: a %s is NULL", path, what);
  if (!a3_utf8_valid(s, strlen(s), &bad))
    return A3_FAIL(A3_ERR_INTERNAL, "%s: writing safetensors: %s '%.80s' is not UTF-8 (byte %zu)",
                   path, what, s, bad);
  return A3_OK;
}

// numel of a tensor to write, refusing bad shapes and sizes beyond 2^62 bytes.
static a3_status tensor_numel(const char *path, const a3_st_f32_tensor *t, uint64_t *numel) {
  A3_TRY(check_string(path, "tensor name", t->name));
  if (!t->name[0] || !strcmp(t->name, "__metadata__"))
    return A3_FAIL(A3_ERR_INTERNAL, "%s: writing safetensors: tensor name '%s' is reserved", path,
                   t->name);
  if (t->ndim < 0 || t->ndim > A3_ST_MAX_DIMS || (t->ndim > 0 && !t->shape))
    return A3_FAIL(A3_ERR_INTERNAL, "%s: writing safetensors: tensor '%s' has ndim %d", path,
                   t->name, t->ndim);
  uint64_t n = 1;
  for (int i = 0; i < t->ndim; i++) {
    if (t->shape[i] < 0 || t->shape[i] > A3_ST_MAX_DIM ||
        (t->shape[i] > 0 && n > ((uint64_t)1 << 60) / (uint64_t)t->shape[i]))
      return A3_FAIL(A3_ERR_INTERNAL, "%s: writing safetensors: tensor '%s' has a bad shape", path,
                     t->name);
    n *= (uint64_t)t->shape[i];
  }
  if (n > 0 && !t->data)
    return A3_FAIL(A3_ERR_INTERNAL, "%s: writing safetensors: tensor '%s' has no data", path,
                   t->name);
  *numel = n;
  return A3_OK;
}

static int tensor_by_name(const void *a, const void *b) {
  return strcmp((*(const a3_st_f32_tensor *const *)a)->name,
                (*(const a3_st_f32_tensor *const *)b)->name);
}

static int meta_by_key(const void *a, const void *b) {
  return strcmp((*(const a3_st_metadata *const *)a)->key, (*(const a3_st_metadata *const *)b)->key);
}

// ---------------------------------------------------------------- header
static a3_status put_metadata(text *b, const char *path, const a3_st_metadata **meta, int n) {
  A3_TRY(put(b, "\"__metadata__\":{"));
  for (int i = 0; i < n; i++) {
    A3_TRY(check_string(path, "metadata key", meta[i]->key));
    A3_TRY(check_string(path, "metadata value", meta[i]->value));
    if (i > 0 && !strcmp(meta[i - 1]->key, meta[i]->key))
      return A3_FAIL(A3_ERR_INTERNAL, "%s: writing safetensors: metadata key '%s' given twice",
                     path, meta[i]->key);
    A3_TRY(put(b, i ? "," : ""));
    A3_TRY(put_json_string(b, meta[i]->key));
    A3_TRY(put(b, ":"));
    A3_TRY(put_json_string(b, meta[i]->value));
  }
  return put(b, "}");
}

static a3_status put_tensor(text *b, const a3_st_f32_tensor *t, uint64_t begin, uint64_t end) {
  A3_TRY(put_json_string(b, t->name));
  A3_TRY(put(b, ":{\"dtype\":\"F32\",\"shape\":["));
  for (int i = 0; i < t->ndim; i++) {
    A3_TRY(put(b, i ? "," : ""));
    A3_TRY(put_u64(b, (uint64_t)t->shape[i]));
  }
  A3_TRY(put(b, "],\"data_offsets\":["));
  A3_TRY(put_u64(b, begin));
  A3_TRY(put(b, ","));
  A3_TRY(put_u64(b, end));
  return put(b, "]}");
}

// The JSON header, padded with spaces so the data starts 8-byte aligned.
static a3_status build_header(text *b, const char *path, const a3_st_f32_tensor **tensors, int n,
                              const a3_st_metadata **meta, int n_meta) {
  A3_TRY(put(b, "{"));
  if (n_meta > 0) A3_TRY(put_metadata(b, path, meta, n_meta));
  uint64_t at = 0;
  for (int i = 0; i < n; i++) {
    uint64_t numel = 0;
    A3_TRY(tensor_numel(path, tensors[i], &numel));
    if (i > 0 && !strcmp(tensors[i - 1]->name, tensors[i]->name))
      return A3_FAIL(A3_ERR_INTERNAL, "%s: writing safetensors: tensor '%s' given twice", path,
                     tensors[i]->name);
    A3_TRY(put(b, (i > 0 || n_meta > 0) ? "," : ""));
    A3_TRY(put_tensor(b, tensors[i], at, at + 4 * numel));
    at += 4 * numel;
  }
  A3_TRY(put(b, "}"));
  while (b->len % 8) A3_TRY(put(b, " "));
  return A3_OK;
}

// ---------------------------------------------------------------- file
static a3_status write_bytes(FILE *f, const char *path, const void *p, size_t n) {
  if (n > 0 && fwrite(p, 1, n, f) != n)
    return A3_FAIL(A3_ERR_IO, "cannot write %s: %s; is the disk full?", path, strerror(errno));
  return A3_OK;
}

// float32 data little-endian, as the format stores it.
static a3_status write_floats(FILE *f, const char *path, const float *x, uint64_t n) {
#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
  return write_bytes(f, path, x, (size_t)n * sizeof *x);
#else
  for (uint64_t i = 0; i < n; i++) {
    uint32_t u;
    memcpy(&u, x + i, 4);
    const unsigned char b[4] = {u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF, u >> 24};
    A3_TRY(write_bytes(f, path, b, 4));
  }
  return A3_OK;
#endif
#else
#error "cannot tell the byte order of this compiler's target"
#endif
}

static a3_status write_body(FILE *f, const char *path, const text *header,
                            const a3_st_f32_tensor **tensors, int n) {
  unsigned char len[8];
  for (int i = 0; i < 8; i++) len[i] = (unsigned char)((uint64_t)header->len >> (8 * i));
  A3_TRY(write_bytes(f, path, len, 8));
  A3_TRY(write_bytes(f, path, header->p, header->len));
  for (int i = 0; i < n; i++) {
    uint64_t numel = 1;
    for (int d = 0; d < tensors[i]->ndim; d++) numel *= (uint64_t)tensors[i]->shape[d];
    A3_TRY(write_floats(f, path, tensors[i]->data, numel));
  }
  return A3_OK;
}

// Writes tmp_path completely and durably, then renames it over path.
static a3_status write_atomic(const char *path, const char *tmp_path, const text *header,
                              const a3_st_f32_tensor **tensors, int n) {
  FILE *f = fopen(tmp_path, "wb");
  if (!f) return A3_FAIL(A3_ERR_IO, "cannot create %s: %s", tmp_path, strerror(errno));
  a3_status s = write_body(f, tmp_path, header, tensors, n);
  if (s == A3_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0))
    s = A3_FAIL(A3_ERR_IO, "cannot flush %s to disk: %s", tmp_path, strerror(errno));
  if (fclose(f) != 0 && s == A3_OK)
    s = A3_FAIL(A3_ERR_IO, "cannot close %s: %s", tmp_path, strerror(errno));
  if (s == A3_OK && rename(tmp_path, path) != 0)
    s = A3_FAIL(A3_ERR_IO, "cannot rename %s to %s: %s", tmp_path, path, strerror(errno));
  if (s != A3_OK) remove(tmp_path);
  return s;
}

// Pointers to the entries, sorted, so the caller's arrays stay as they are.
static a3_status sorted_views(const a3_st_f32_tensor *tensors, int n, const a3_st_metadata *meta,
                              int n_meta, const a3_st_f32_tensor ***t_out,
                              const a3_st_metadata ***m_out) {
  A3_TRY(a3_alloc((void **)t_out, n > 0 ? (size_t)n : 1, sizeof **t_out));
  A3_TRY(a3_alloc((void **)m_out, n_meta > 0 ? (size_t)n_meta : 1, sizeof **m_out));
  for (int i = 0; i < n; i++) (*t_out)[i] = &tensors[i];
  for (int i = 0; i < n_meta; i++) (*m_out)[i] = &meta[i];
  for (int i = 0; i < n; i++)
    if (!tensors[i].name)
      return A3_FAIL(A3_ERR_INTERNAL, "writing safetensors: tensor %d has no name", i);
  for (int i = 0; i < n_meta; i++)
    if (!meta[i].key) return A3_FAIL(A3_ERR_INTERNAL, "writing safetensors: metadata key is NULL");
  qsort(*t_out, (size_t)n, sizeof **t_out, tensor_by_name);
  qsort(*m_out, (size_t)n_meta, sizeof **m_out, meta_by_key);
  return A3_OK;
}

a3_status a3_safetensors_write_f32(const char *path, const a3_st_f32_tensor *tensors, int n_tensors,
                                   const a3_st_metadata *metadata, int n_metadata) {
  if (!path || n_tensors < 0 || n_metadata < 0 || (n_tensors > 0 && !tensors) ||
      (n_metadata > 0 && !metadata))
    return A3_FAIL(A3_ERR_INTERNAL, "a3_safetensors_write_f32: bad arguments");
  const a3_st_f32_tensor **order = NULL;
  const a3_st_metadata **meta = NULL;
  text header = {0};
  char *tmp_path = NULL;
  a3_status s;
  A3_TRY_GOTO(s, sorted_views(tensors, n_tensors, metadata, n_metadata, &order, &meta), done);
  A3_TRY_GOTO(s, build_header(&header, path, order, n_tensors, meta, n_metadata), done);
  A3_TRY_GOTO(s, a3_alloc((void **)&tmp_path, strlen(path) + 5, 1), done);
  snprintf(tmp_path, strlen(path) + 5, "%s.tmp", path);
  A3_TRY_GOTO(s, write_atomic(path, tmp_path, &header, order, n_tensors), done);
done:
  free(tmp_path);
  free(header.p);
  free(order);
  free(meta);
  return s;
}
