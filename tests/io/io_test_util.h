// Helpers for the io tests: temporary folders and generated input files.
#ifndef A3FTA_TESTS_IO_TEST_UTIL_H
#define A3FTA_TESTS_IO_TEST_UTIL_H

#include <stddef.h>
#include <stdint.h>

// Creates a fresh folder under $TMPDIR (or /tmp); returns a malloc'd path.
char *io_make_temp_dir(const char *tag);
// Removes a folder and everything in it.
void io_remove_tree(const char *path);
// "<dir>/<name>" in a static rotating buffer (valid for the next 7 calls).
const char *io_path(const char *dir, const char *name);
int io_write_file(const char *path, const void *data, size_t len);
int io_write_gz(const char *path, const void *data, size_t len);
int io_mkdir(const char *path);
int io_exists(const char *path);
// An IDX header for unsigned bytes: magic 0x000008DD then the sizes, big-endian.
size_t io_idx_header(uint8_t *out, int ndims, const uint32_t *dims);

#endif
