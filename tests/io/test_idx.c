// IDX parser and Fashion-MNIST importer on small generated gzipped files:
// good files, bad magic, truncation (of the data and of the gzip stream),
// trailing bytes, zero sizes, count mismatch, labels out of range, missing
// files. Errors must carry the right status and name the file.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/dataset.h"
#include "io/idx.h"
#include "io_test_util.h"
#include "test_util.h"

#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

static char *dir;

// An images file of n images of h x w whose pixel k of image i is (i * 16 + k) & 0xff.
static size_t images_idx(uint8_t *buf, uint32_t n, uint32_t h, uint32_t w) {
  const uint32_t dims[3] = {n, h, w};
  size_t len = io_idx_header(buf, 3, dims);
  for (uint32_t i = 0; i < n * h * w; i++) buf[len++] = (uint8_t)((i / (h * w)) * 16 + i % (h * w));
  return len;
}

static size_t labels_idx(uint8_t *buf, uint32_t n, uint8_t first_label) {
  const uint32_t dims[1] = {n};
  size_t len = io_idx_header(buf, 1, dims);
  for (uint32_t i = 0; i < n; i++) buf[len++] = (uint8_t)((first_label + i) % 10);
  return len;
}

// Runs a3_idx_read on `len` bytes of buf written (gzipped) to `name`.
static a3_status read_bytes(const char *name, const uint8_t *buf, size_t len, uint32_t magic,
                            a3_idx *idx) {
  const char *path = io_path(dir, name);
  CHECK(io_write_gz(path, buf, len) == 0);
  return a3_idx_read(path, magic, idx);
}

static void expect_error(a3_status got, a3_status want, const char *name, const char *fragment) {
  CHECK_MSG(got == want, "%s: status %s, expected %s (%s)", name, a3_status_name(got),
            a3_status_name(want), a3_error_message());
  CHECK_MSG(strstr(a3_error_message(), name) != NULL, "%s: message does not name the file: %s",
            name, a3_error_message());
  CHECK_MSG(strstr(a3_error_message(), fragment) != NULL, "%s: message lacks '%s': %s", name,
            fragment, a3_error_message());
}

static void test_good(void) {
  static uint8_t buf[4096];
  a3_idx idx;
  size_t len = images_idx(buf, 3, 2, 4);
  CHECK(read_bytes("good-images.gz", buf, len, A3_IDX_MAGIC_IMAGES, &idx) == A3_OK);
  CHECK(idx.ndims == 3 && idx.dims[0] == 3 && idx.dims[1] == 2 && idx.dims[2] == 4);
  CHECK(idx.size == 24 && idx.header_bytes == 16);
  CHECK(idx.data && idx.data[0] == 0 && idx.data[8] == 16 && idx.data[23] == 39);
  a3_idx_free(&idx);
  len = labels_idx(buf, 5, 7);
  CHECK(read_bytes("good-labels.gz", buf, len, A3_IDX_MAGIC_LABELS, &idx) == A3_OK);
  CHECK(idx.ndims == 1 && idx.dims[0] == 5 && idx.header_bytes == 8);
  CHECK(idx.data && idx.data[0] == 7 && idx.data[4] == 1);
  a3_idx_free(&idx);
  // zlib's gz* API also reads uncompressed files: accept plain IDX too.
  CHECK(io_write_file(io_path(dir, "plain-labels"), buf, len) == 0);
  CHECK(a3_idx_read(io_path(dir, "plain-labels"), A3_IDX_MAGIC_LABELS, &idx) == A3_OK);
  CHECK(idx.dims[0] == 5);
  a3_idx_free(&idx);
}

static void test_bad(void) {
  static uint8_t buf[4096];
  a3_idx idx;
  size_t len = labels_idx(buf, 5, 0);
  expect_error(read_bytes("swapped.gz", buf, len, A3_IDX_MAGIC_IMAGES, &idx), A3_ERR_INPUT,
               "swapped.gz", "bad magic number 0x00000801 at byte 0, expected 0x00000803");
  CHECK(strstr(a3_error_message(), "swapped?") != NULL);
  CHECK(idx.data == NULL);
  expect_error(read_bytes("text.gz", (const uint8_t *)"hello world", 11, A3_IDX_MAGIC_LABELS, &idx),
               A3_ERR_INPUT, "text.gz", "bad magic number");
  len = images_idx(buf, 3, 2, 4);
  expect_error(read_bytes("short-data.gz", buf, len - 5, A3_IDX_MAGIC_IMAGES, &idx), A3_ERR_INPUT,
               "short-data.gz", "truncated: the header promises 3 x 2 x 4 = 24 bytes");
  expect_error(read_bytes("short-header.gz", buf, 10, A3_IDX_MAGIC_IMAGES, &idx), A3_ERR_INPUT,
               "short-header.gz", "truncated header");
  expect_error(read_bytes("empty.gz", buf, 0, A3_IDX_MAGIC_IMAGES, &idx), A3_ERR_INPUT, "empty.gz",
               "truncated");
  buf[len] = 0xAA;
  expect_error(read_bytes("trailing.gz", buf, len + 1, A3_IDX_MAGIC_IMAGES, &idx), A3_ERR_INPUT,
               "trailing.gz", "unexpected data after byte 40");
  const uint32_t zero_dims[3] = {3, 0, 4};
  len = io_idx_header(buf, 3, zero_dims);
  expect_error(read_bytes("zero.gz", buf, len, A3_IDX_MAGIC_IMAGES, &idx), A3_ERR_INPUT, "zero.gz",
               "dimension 1 (byte offset 8) is 0");
  CHECK(a3_idx_read(io_path(dir, "missing.gz"), A3_IDX_MAGIC_IMAGES, &idx) == A3_ERR_IO);
  CHECK(strstr(a3_error_message(), "missing.gz") != NULL);
}

// A gzip stream cut in the middle (a partial download).
static void test_cut_gzip(void) {
  static uint8_t buf[70000];
  size_t len = images_idx(buf, 100, 25, 25);
  for (size_t i = 16; i < len; i++) buf[i] = (uint8_t)(rand() & 0xff); // incompressible
  const char *path = io_path(dir, "cut.gz");
  CHECK(io_write_gz(path, buf, len) == 0);
  FILE *f = fopen(path, "rb");
  static uint8_t gz[80000];
  const size_t gz_len = f ? fread(gz, 1, sizeof gz, f) : 0;
  if (f) fclose(f);
  CHECK(gz_len > 1000);
  CHECK(io_write_file(path, gz, gz_len / 2) == 0);
  a3_idx idx;
  const a3_status s = a3_idx_read(path, A3_IDX_MAGIC_IMAGES, &idx);
  CHECK_MSG(s == A3_ERR_INPUT && strstr(a3_error_message(), "cut.gz") &&
                strstr(a3_error_message(), "truncated"),
            "cut gzip: %s: %s", a3_status_name(s), a3_error_message());
}

// ---------------------------------------------------------------- importer

typedef struct {
  uint32_t train_images, train_labels, test_images, test_labels;
  uint8_t bad_label; // written into the last train label when non-zero
} fmnist_spec;

static char *write_fmnist(const char *tag, const fmnist_spec *spec) {
  char *src = strdup(io_path(dir, tag));
  CHECK(io_mkdir(src) == 0);
  static uint8_t buf[8192];
  size_t len = images_idx(buf, spec->train_images, 4, 3);
  CHECK(io_write_gz(io_path(src, "train-images-idx3-ubyte.gz"), buf, len) == 0);
  len = labels_idx(buf, spec->train_labels, 0);
  if (spec->bad_label) buf[len - 1] = spec->bad_label;
  CHECK(io_write_gz(io_path(src, "train-labels-idx1-ubyte.gz"), buf, len) == 0);
  len = images_idx(buf, spec->test_images, 4, 3);
  CHECK(io_write_gz(io_path(src, "t10k-images-idx3-ubyte.gz"), buf, len) == 0);
  len = labels_idx(buf, spec->test_labels, 3);
  CHECK(io_write_gz(io_path(src, "t10k-labels-idx1-ubyte.gz"), buf, len) == 0);
  return src;
}

static void check_no_output(const char *out) {
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.tmp", out);
  CHECK_MSG(!io_exists(out) && !io_exists(tmp), "a failed import left %s or its .tmp", out);
}

static void check_imported(const char *out) {
  char format[64];
  CHECK(a3_file_format(out, format, sizeof format) == A3_OK);
  CHECK(!strcmp(format, A3_DATASET_FORMAT));
  hid_t f = H5Fopen(out, H5F_ACC_RDONLY, H5P_DEFAULT);
  hid_t d = f >= 0 ? H5Dopen2(f, "/train/images", H5P_DEFAULT) : -1;
  uint8_t px[12 * 12] = {0};
  CHECK(d >= 0 && H5Dread(d, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, px) >= 0);
  CHECK(px[0] == 0 && px[12] == 16 && px[12 * 11 + 11] == 11 * 16 + 11);
  int32_t labels[12] = {0};
  hid_t l = f >= 0 ? H5Dopen2(f, "/test/labels", H5P_DEFAULT) : -1;
  CHECK(l >= 0 && H5Dread(l, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, labels) >= 0);
  CHECK(labels[0] == 3 && labels[6] == 9 && labels[7] == 0);
  if (l >= 0) H5Dclose(l);
  if (d >= 0) H5Dclose(d);
  if (f >= 0) H5Fclose(f);
}

static void test_import(void) {
  const fmnist_spec good = {12, 12, 8, 8, 0};
  char *src = write_fmnist("fm-good", &good);
  const char *out = strdup(io_path(dir, "fm-good.h5"));
  a3_import_report report;
  CHECK_MSG(a3_import_fashion_mnist(src, out, &report) == A3_OK, "%s", a3_error_message());
  CHECK(report.n_splits == 2 && report.splits[0].n == 12 && report.splits[1].n == 8);
  CHECK(report.splits[0].height == 4 && report.splits[0].width == 3);
  check_imported(out);
  free(src);
  free((void *)out);

  const fmnist_spec mismatch = {12, 11, 8, 8, 0};
  src = write_fmnist("fm-mismatch", &mismatch);
  out = io_path(dir, "fm-mismatch.h5");
  expect_error(a3_import_fashion_mnist(src, out, NULL), A3_ERR_INPUT, "train-labels-idx1-ubyte.gz",
               "holds 12 images but");
  CHECK(strstr(a3_error_message(), "holds 11 labels") != NULL);
  check_no_output(out);
  free(src);

  const fmnist_spec bad_label = {12, 12, 8, 8, 10};
  src = write_fmnist("fm-label", &bad_label);
  out = io_path(dir, "fm-label.h5");
  expect_error(a3_import_fashion_mnist(src, out, NULL), A3_ERR_INPUT, "train-labels-idx1-ubyte.gz",
               "label 10 of image 11 (byte offset 19) is out of range");
  check_no_output(out);
  CHECK(remove(io_path(src, "t10k-labels-idx1-ubyte.gz")) == 0);
  expect_error(a3_import_fashion_mnist(src, out, NULL), A3_ERR_INPUT, "fm-label",
               "lacks t10k-labels-idx1-ubyte.gz");
  free(src);

  out = io_path(dir, "fm-nodir.h5");
  expect_error(a3_import_fashion_mnist(io_path(dir, "no-such-dir"), out, NULL), A3_ERR_INPUT,
               "no-such-dir", "does not exist");
  check_no_output(out);
}

int main(void) {
  dir = io_make_temp_dir("idx");
  CHECK(dir != NULL);
  if (!dir) return TEST_DONE("test_io_idx");
  test_good();
  test_bad();
  test_cut_gzip();
  test_import();
  io_remove_tree(dir);
  free(dir);
  return TEST_DONE("test_io_idx");
}
