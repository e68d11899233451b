// IDX files (the MNIST / Fashion-MNIST format), plain or gzipped: a 4-byte
// big-endian magic 0x0000TTDD (TT = element type, 0x08 = unsigned byte;
// DD = number of dimensions), DD big-endian uint32 sizes, then the elements
// in row-major order, and nothing after them. Only unsigned-byte files.
#ifndef A3FTA_IO_IDX_H
#define A3FTA_IO_IDX_H

#include "a3fta/core.h"

#define A3_IDX_MAGIC_LABELS 0x00000801u // (N) uint8
#define A3_IDX_MAGIC_IMAGES 0x00000803u // (N, H, W) uint8
enum { A3_IDX_MAX_DIMS = 3 };

typedef struct {
  int ndims;
  uint32_t dims[A3_IDX_MAX_DIMS];
  size_t header_bytes; // 4 + 4 * ndims: offset of data[0] in the uncompressed file
  size_t size;         // product of dims
  uint8_t *data;       // (dims[0], ..., dims[ndims - 1]) uint8, malloc'd
} a3_idx;

// Reads the whole file, checking the magic (which fixes the number of
// dimensions), that no size is 0, that the data is neither truncated nor
// followed by more bytes, and the gzip stream's integrity. Malformed files
// are A3_ERR_INPUT naming the file, the byte offset (in the uncompressed
// data) and what was expected; unreadable ones A3_ERR_IO.
a3_status a3_idx_read(const char *path, uint32_t magic, a3_idx *out);
void a3_idx_free(a3_idx *idx);

#endif
