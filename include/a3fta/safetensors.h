// safetensors files: import of diffusers weights, export of adapter/LoRA deltas.
//
// Format: a little-endian u64 N, then N bytes of UTF-8 JSON
//   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
//    "__metadata__": {"key": "value", ...}}            (metadata optional)
// then the raw little-endian data buffer; offsets count from its first byte.
//
// The reader treats the file as untrusted: every header field is checked
// before any data is touched, and a malformed file gives A3_ERR_INPUT with a
// message naming the file, the tensor and the field, never a crash. It is as
// strict as the reference implementation (huggingface/safetensors): N at most
// 100,000,000; JSON that is an object with nothing but whitespace after it;
// dims and offsets written as integers; the tensors tile the data buffer
// exactly (sorted by offset, each begins where the previous ends, the last
// ends at the end of the file). Gaps, overlaps and trailing bytes after the
// last tensor are therefore errors: they mean a corrupt or concatenated file.
// Data is read by file offset (pread), so the file is never loaded whole.
#ifndef A3FTA_SAFETENSORS_H
#define A3FTA_SAFETENSORS_H

#include "a3fta/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum {
  A3_ST_MAX_DIMS = 8, // more is rejected (diffusers uses at most 4)
  // Bytes of JSON. The reference allows 100 MB, but cJSON can need ~20x that
  // for a hostile header; real U-Net headers are well under 1 MB.
  A3_ST_MAX_HEADER = 16000000,
};
#define A3_ST_MAX_DIM ((int64_t)1 << 40) // larger single dimensions are rejected

// The dtypes of the format, in the order of the reference's enum.
typedef enum {
  A3_ST_BOOL,
  A3_ST_U8,
  A3_ST_I8,
  A3_ST_F8_E5M2,
  A3_ST_F8_E4M3,
  A3_ST_I16,
  A3_ST_U16,
  A3_ST_F16,
  A3_ST_BF16,
  A3_ST_I32,
  A3_ST_U32,
  A3_ST_F32,
  A3_ST_F64,
  A3_ST_I64,
  A3_ST_U64,
  A3_ST_N_DTYPES
} a3_st_dtype;

const char *a3_st_dtype_name(a3_st_dtype dtype); // "F32"; "?" when out of range
size_t a3_st_dtype_size(a3_st_dtype dtype);      // bytes per element; 0 when out of range

// One tensor of an open file. Offsets are into the data buffer (after the header).
typedef struct {
  const char *name; // owned by the file handle
  a3_st_dtype dtype;
  int ndim; // 0 = a scalar (numel 1)
  int64_t shape[A3_ST_MAX_DIMS];
  int64_t numel;
  uint64_t begin, end; // [begin, end) bytes; end - begin == numel * dtype size
} a3_st_tensor;

typedef struct {
  const char *key, *value; // owned by the file handle
} a3_st_metadata;

typedef struct a3_safetensors a3_safetensors;

// ---------------------------------------------------------------- reading
// Opens `path` and validates its whole header. On failure *out is NULL.
a3_status a3_safetensors_open(const char *path, a3_safetensors **out) A3_WARN_UNUSED;
// Closes the file and frees the handle; NULL is fine.
void a3_safetensors_close(a3_safetensors *st);

const char *a3_safetensors_path(const a3_safetensors *st);
int a3_safetensors_count(const a3_safetensors *st);
// The i-th tensor in name order (strcmp), 0 <= i < count.
const a3_st_tensor *a3_safetensors_tensor(const a3_safetensors *st, int i);
// The tensor called `name`, or NULL.
const a3_st_tensor *a3_safetensors_find(const a3_safetensors *st, const char *name);
// The "__metadata__" entries in key order, and one value by key (NULL if absent).
int a3_safetensors_metadata_count(const a3_safetensors *st);
const a3_st_metadata *a3_safetensors_metadata(const a3_safetensors *st, int i);
const char *a3_safetensors_metadata_get(const a3_safetensors *st, const char *key);

// Reads tensor `t` (from this file) as float32 into dst[expected_numel].
// F32, F16, BF16 and F64 convert exactly (F64 rounds to nearest; a finite
// value beyond float32's range is an error); other dtypes are A3_ERR_INPUT.
// A numel other than expected_numel is A3_ERR_INPUT naming both.
a3_status a3_safetensors_read_f32(const a3_safetensors *st, const a3_st_tensor *t, float *dst,
                                  int64_t expected_numel) A3_WARN_UNUSED;
// The same by name; a missing tensor is A3_ERR_INPUT.
a3_status a3_safetensors_read_f32_by_name(const a3_safetensors *st, const char *name, float *dst,
                                          int64_t expected_numel) A3_WARN_UNUSED;

// ---------------------------------------------------------------- writing
typedef struct {
  const char *name;
  int ndim; // 0..A3_ST_MAX_DIMS
  const int64_t *shape;
  const float *data; // numel floats (may be NULL when numel is 0)
} a3_st_f32_tensor;

// Writes float32 tensors and optional metadata (n_metadata 0: none) as
// `path`, like the reference implementation: header keys sorted, data in
// name order, header padded with spaces to a multiple of 8 bytes. Written as
// "<path>.tmp", synced and renamed, so `path` is either the old file or the
// complete new one. Bad arguments (duplicate or empty names, invalid UTF-8,
// negative dims) are A3_ERR_INTERNAL: the caller builds them.
a3_status a3_safetensors_write_f32(const char *path, const a3_st_f32_tensor *tensors, int n_tensors,
                                   const a3_st_metadata *metadata, int n_metadata) A3_WARN_UNUSED;

// ---------------------------------------------------------------- helpers
// Whether s[0..len) is well-formed UTF-8 (no overlongs, surrogates or code
// points past U+10FFFF). On false, *bad_at (if not NULL) is the byte offset.
bool a3_utf8_valid(const char *s, size_t len, size_t *bad_at);

// ---------------------------------------------------------------- summary
// a3fta info FILE.safetensors: path and size, metadata, tensor count by
// dtype, every tensor (name, dtype, shape) when list_tensors, and the
// floating-point values scanned: the largest |value| and any NaN or infinity.
a3_status a3_safetensors_print_summary(const char *path, bool list_tensors, FILE *f) A3_WARN_UNUSED;
// The "config" metadata entry (an a3fta export's training config), verbatim;
// A3_ERR_INPUT when the file has none.
a3_status a3_safetensors_print_config(const char *path, FILE *f) A3_WARN_UNUSED;

#endif
