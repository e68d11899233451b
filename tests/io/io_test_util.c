// Helpers for the io tests (POSIX: mkdtemp, nftw).
#define _XOPEN_SOURCE 700
#include "io_test_util.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

char *io_make_temp_dir(const char *tag) {
  const char *base = getenv("TMPDIR");
  char tmpl[4096];
  snprintf(tmpl, sizeof tmpl, "%s/a3fta-%s-XXXXXX", base && base[0] ? base : "/tmp", tag);
  if (!mkdtemp(tmpl)) return NULL;
  char *out = malloc(strlen(tmpl) + 1);
  if (out) strcpy(out, tmpl);
  return out;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  return remove(path);
}

void io_remove_tree(const char *path) {
  if (path) nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *io_path(const char *dir, const char *name) {
  static char bufs[8][4096];
  static int next = 0;
  char *b = bufs[next++ % 8];
  snprintf(b, 4096, "%s/%s", dir, name);
  return b;
}

int io_write_file(const char *path, const void *data, size_t len) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  const size_t put = len ? fwrite(data, 1, len, f) : 0;
  return (fclose(f) == 0 && put == len) ? 0 : -1;
}

int io_write_gz(const char *path, const void *data, size_t len) {
  gzFile gz = gzopen(path, "wb");
  if (!gz) return -1;
  const int put = len ? gzwrite(gz, data, (unsigned)len) : 0;
  return (gzclose(gz) == Z_OK && (size_t)put == len) ? 0 : -1;
}

int io_mkdir(const char *path) { return mkdir(path, 0755); }

int io_exists(const char *path) { return access(path, F_OK) == 0; }

size_t io_idx_header(uint8_t *out, int ndims, const uint32_t *dims) {
  out[0] = 0;
  out[1] = 0;
  out[2] = 0x08;
  out[3] = (uint8_t)ndims;
  for (int d = 0; d < ndims; d++)
    for (int b = 0; b < 4; b++) out[4 + 4 * d + b] = (uint8_t)(dims[d] >> (24 - 8 * b));
  return 4 + 4 * (size_t)ndims;
}
