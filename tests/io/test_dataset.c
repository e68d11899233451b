// The dataset reader on one rank: validation errors on hand-made files
// (each must name the file and the HDF5 object), subset selection, reads of
// unsorted and repeated rows, and the shard rule.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/dataset.h"
#include "io/dataset_write.h"
#include "io_test_util.h"
#include "test_util.h"

#include <hdf5.h>
#include <stdlib.h>
#include <string.h>

static char *dir;
enum { N_TRAIN = 20, N_TEST = 6, C = 1, H = 2, W = 3, CLASSES = 3 };

static uint8_t pixel(int64_t i, int k) { return (uint8_t)(i * 7 + k); }

// train: labels i % 3; test: labels (i + 1) % 3.
static void write_good(const char *path) {
  const char *names[CLASSES] = {"zero", "one", "two"};
  uint8_t images[N_TRAIN * H * W];
  int32_t labels[N_TRAIN];
  a3_ds_writer *w = NULL;
  CHECK(a3_ds_writer_create(path, "test data", names, CLASSES, &w) == A3_OK);
  const int64_t sizes[2] = {N_TRAIN, N_TEST};
  const char *splits[2] = {"train", "test"};
  for (int s = 0; s < 2 && w; s++) {
    for (int64_t i = 0; i < sizes[s]; i++) {
      labels[i] = (int32_t)((i + s) % CLASSES);
      for (int k = 0; k < H * W; k++) images[i * H * W + k] = pixel(i, k);
    }
    CHECK(a3_ds_writer_add_split(w, splits[s], sizes[s], C, H, W) == A3_OK);
    CHECK(a3_ds_writer_write(w, 0, sizes[s], images, labels) == A3_OK);
  }
  if (w) CHECK_MSG(a3_ds_writer_commit(w) == A3_OK, "%s", a3_error_message());
}

static int same(const int64_t *got, int64_t n_got, const int64_t *want, int64_t n_want) {
  return n_got == n_want && !memcmp(got, want, (size_t)n_got * sizeof *got);
}

static a3_status select_(a3_dataset *ds, const int *classes, int n_classes, int64_t shots,
                         int random, uint64_t seed, int64_t **idx, int64_t *n) {
  const a3_subset_spec spec = {"train", classes, n_classes, shots, random, seed};
  return a3_dataset_select(ds, &spec, idx, n);
}

static void test_select(a3_dataset *ds) {
  int64_t *idx = NULL, n = 0;
  const int c20[2] = {2, 0};
  CHECK(select_(ds, c20, 2, 2, 0, 0, &idx, &n) == A3_OK);
  const int64_t first[4] = {0, 2, 3, 5};
  CHECK_MSG(same(idx, n, first, 4), "first 2 of classes {2, 0}: n = %lld", (long long)n);
  free(idx);
  CHECK(select_(ds, NULL, 0, 0, 0, 0, &idx, &n) == A3_OK && n == N_TRAIN && idx[19] == 19);
  free(idx);
  // Random: deterministic, only class 1's members, and the same draw for
  // class 1 whatever other classes are listed.
  const int c1[1] = {1}, c01[2] = {0, 1};
  int64_t *a = NULL, *b = NULL, *both = NULL, na = 0, nb = 0, nboth = 0;
  CHECK(select_(ds, c1, 1, 3, 1, 7, &a, &na) == A3_OK && na == 3);
  CHECK(select_(ds, c1, 1, 3, 1, 7, &b, &nb) == A3_OK && same(a, na, b, nb));
  for (int64_t i = 0; i < na; i++) CHECK(a[i] % 3 == 1 && (i == 0 || a[i] > a[i - 1]));
  CHECK(select_(ds, c01, 2, 3, 1, 7, &both, &nboth) == A3_OK && nboth == 6);
  int64_t ones[3], n_ones = 0;
  for (int64_t i = 0; i < nboth; i++)
    if (both[i] % 3 == 1) ones[n_ones++] = both[i];
  CHECK(same(ones, n_ones, a, na));
  free(b);
  CHECK(select_(ds, c1, 1, 3, 1, 8, &b, &nb) == A3_OK && !same(a, na, b, nb));
  free(a);
  free(b);
  free(both);
  CHECK(select_(ds, c1, 1, 7, 1, 3, &a, &na) == A3_OK && na == 7); // all of class 1
  free(a);
}

static void expect(a3_status got, a3_status want, const char *fragment) {
  CHECK_MSG(got == want, "status %s, expected %s (%s)", a3_status_name(got), a3_status_name(want),
            a3_error_message());
  CHECK_MSG(strstr(a3_error_message(), fragment) != NULL, "message lacks '%s': %s", fragment,
            a3_error_message());
}

static void test_select_errors(a3_dataset *ds) {
  int64_t *idx = NULL, n = 0;
  const int bad[1] = {3}, twice[2] = {1, 1}, c2[1] = {2};
  expect(select_(ds, bad, 1, 1, 0, 0, &idx, &n), A3_ERR_CONFIG, "class 3 does not exist");
  expect(select_(ds, twice, 2, 1, 0, 0, &idx, &n), A3_ERR_CONFIG, "listed twice");
  expect(select_(ds, c2, 1, 7, 1, 0, &idx, &n), A3_ERR_CONFIG, "class 2 ('two') has only 6");
  const a3_subset_spec spec = {"valid", NULL, 0, 0, 0, 0};
  expect(a3_dataset_select(ds, &spec, &idx, &n), A3_ERR_INPUT,
         "no split 'valid'; the file has: train, test");
  CHECK(idx == NULL && n == 0);
}

static void test_read(a3_dataset *ds) {
  const int64_t rows[5] = {5, 1, 5, 19, 0};
  uint8_t images[5 * H * W];
  int32_t labels[5];
  CHECK_MSG(a3_dataset_read(ds, "train", rows, 5, images, labels) == A3_OK, "%s",
            a3_error_message());
  for (int i = 0; i < 5; i++) {
    CHECK(labels[i] == rows[i] % 3);
    for (int k = 0; k < H * W; k++) CHECK(images[i * H * W + k] == pixel(rows[i], k));
  }
  const int64_t test_rows[2] = {2, 3};
  CHECK(a3_dataset_read(ds, "test", test_rows, 2, images, labels) == A3_OK);
  CHECK(labels[0] == 0 && labels[1] == 1 && images[H * W] == pixel(3, 0));
  CHECK(a3_dataset_read(ds, "train", NULL, 0, NULL, NULL) == A3_OK);
}

static void test_good_file(void) {
  const char *path = io_path(dir, "good.h5");
  write_good(path);
  a3_dataset *ds = NULL;
  CHECK_MSG(a3_dataset_open(MPI_COMM_WORLD, path, &ds) == A3_OK, "%s", a3_error_message());
  if (!ds) return;
  a3_split_info info;
  CHECK(a3_dataset_split_info(ds, "train", &info) == A3_OK);
  CHECK(info.n == N_TRAIN && info.channels == C && info.height == H && info.width == W);
  CHECK(info.num_classes == CLASSES && info.labels[4] == 1);
  CHECK(a3_dataset_num_splits(ds) == 2 && !strcmp(a3_dataset_split_name(ds, 0), "train"));
  CHECK(!strcmp(a3_dataset_class_name(ds, 2), "two") && !a3_dataset_class_name(ds, 3));
  CHECK(!strcmp(a3_dataset_source(ds), "test data"));
  test_select(ds);
  test_select_errors(ds);
  test_read(ds);
  a3_pixel_stats stats;
  CHECK(a3_dataset_pixel_stats(ds, "test", &stats) == A3_OK && stats.channels == 1);
  // test images i < 6, pixels 7 i + k, k < 6: mean = 7 * 2.5 + 2.5 = 20
  CHECK_MSG(stats.mean > 19.99 && stats.mean < 20.01, "mean %f", stats.mean);
  a3_dataset_close(ds);
}

// ---------------------------------------------------------------- bad files

typedef enum {
  NO_FORMAT,
  OTHER_FORMAT,
  VERSION_2,
  NAMES_MISMATCH,
  MISSING_LABELS,
  LABELS_SHORT,
  IMAGES_INT16,
  IMAGES_3D,
  LABEL_RANGE,
  FIXED_STRINGS
} variant;

static void attr_str(hid_t obj, const char *name, const char *value, int fixed) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, fixed ? strlen(value) + 1 : H5T_VARIABLE);
  hid_t s = H5Screate(H5S_SCALAR), a = H5Acreate2(obj, name, t, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, t, fixed ? (const void *)value : (const void *)&value);
  H5Aclose(a);
  H5Sclose(s);
  H5Tclose(t);
}

static void attr_int(hid_t obj, const char *name, int value) {
  hid_t s = H5Screate(H5S_SCALAR);
  hid_t a = H5Acreate2(obj, name, H5T_STD_I32LE, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, H5T_NATIVE_INT, &value);
  H5Aclose(a);
  H5Sclose(s);
}

static void class_names(hid_t file, int count) {
  const hsize_t dims[1] = {(hsize_t)count};
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, 8); // fixed-length, NUL-padded: what other tools often write
  H5Tset_strpad(t, H5T_STR_NULLPAD);
  const char names[3][8] = {"zero", "one", "two"};
  hid_t s = H5Screate_simple(1, dims, NULL);
  hid_t a = H5Acreate2(file, "class_names", t, s, H5P_DEFAULT, H5P_DEFAULT);
  H5Awrite(a, t, names);
  H5Aclose(a);
  H5Sclose(s);
  H5Tclose(t);
}

static void dataset(hid_t group, const char *name, hid_t type, int rank, const hsize_t *dims,
                    const void *data, hid_t mem_type) {
  hid_t s = H5Screate_simple(rank, dims, NULL);
  hid_t d = H5Dcreate2(group, name, type, s, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  H5Dwrite(d, mem_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
  H5Dclose(d);
  H5Sclose(s);
}

static void write_variant(const char *path, variant v) {
  hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (v != NO_FORMAT)
    attr_str(f, "format", v == OTHER_FORMAT ? "a3fta-checkpoint" : "a3fta-dataset",
             v == FIXED_STRINGS);
  attr_int(f, "format_version", v == VERSION_2 ? 2 : 1);
  attr_int(f, "num_classes", 3);
  class_names(f, v == NAMES_MISMATCH ? 2 : 3);
  hid_t g = H5Gcreate2(f, "train", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const hsize_t dims4[4] = {4, 1, 2, 2}, dims3[3] = {4, 2, 2};
  const hsize_t n_labels[1] = {v == LABELS_SHORT ? 3 : 4};
  int16_t px[16] = {0};
  int32_t labels[4] = {0, 1, v == LABEL_RANGE ? 12 : 2, 0};
  dataset(g, "images", v == IMAGES_INT16 ? H5T_STD_I16LE : H5T_STD_U8LE, v == IMAGES_3D ? 3 : 4,
          v == IMAGES_3D ? dims3 : dims4, px,
          v == IMAGES_INT16 ? H5T_NATIVE_INT16 : H5T_NATIVE_UINT8);
  if (v != MISSING_LABELS)
    dataset(g, "labels", H5T_STD_I32LE, 1, n_labels, labels, H5T_NATIVE_INT32);
  H5Gclose(g);
  H5Fclose(f);
}

static void expect_open(variant v, a3_status want, const char *fragment) {
  char name[32];
  snprintf(name, sizeof name, "variant%d.h5", (int)v);
  const char *path = io_path(dir, name);
  write_variant(path, v);
  a3_dataset *ds = NULL;
  const a3_status got = a3_dataset_open(MPI_COMM_WORLD, path, &ds);
  CHECK_MSG(got == want, "variant %d: status %s, expected %s (%s)", (int)v, a3_status_name(got),
            a3_status_name(want), a3_error_message());
  if (want != A3_OK)
    CHECK_MSG(strstr(a3_error_message(), fragment) && strstr(a3_error_message(), name),
              "variant %d: message lacks '%s' or the file name: %s", (int)v, fragment,
              a3_error_message());
  a3_dataset_close(ds);
}

static void test_bad_files(void) {
  expect_open(NO_FORMAT, A3_ERR_INPUT, "not an a3fta dataset (no 'format' attribute)");
  expect_open(OTHER_FORMAT, A3_ERR_INPUT, "a 'a3fta-checkpoint' file, not an a3fta dataset");
  expect_open(VERSION_2, A3_ERR_INPUT, "format_version 2");
  expect_open(NAMES_MISMATCH, A3_ERR_INPUT, "num_classes = 3 but class_names has 2");
  expect_open(MISSING_LABELS, A3_ERR_INPUT, "/train/labels: missing");
  expect_open(LABELS_SHORT, A3_ERR_INPUT,
              "/train/labels: expected int32 of shape (N) with N = 4 to match /train/images, "
              "found (3)");
  expect_open(IMAGES_INT16, A3_ERR_INPUT,
              "/train/images: expected uint8 of shape (N, C, H, W), "
              "found another type of shape (4, 1, 2, 2)");
  expect_open(IMAGES_3D, A3_ERR_INPUT, "found the right type of shape (4, 2, 2)");
  expect_open(LABEL_RANGE, A3_ERR_INPUT, "/train/labels[2] = 12 is outside [0, num_classes = 3)");
  expect_open(FIXED_STRINGS, A3_OK, "");
  CHECK(io_write_file(io_path(dir, "text.h5"), "not hdf5\n", 9) == 0);
  a3_dataset *ds = NULL;
  expect(a3_dataset_open(MPI_COMM_WORLD, io_path(dir, "text.h5"), &ds), A3_ERR_INPUT,
         "text.h5 is not an HDF5 file");
  expect(a3_dataset_open(MPI_COMM_WORLD, io_path(dir, "absent.h5"), &ds), A3_ERR_IO, "absent.h5");
  char format[32];
  expect(a3_file_format(io_path(dir, "text.h5"), format, sizeof format), A3_ERR_INPUT,
         "not an HDF5 file");
  CHECK(a3_file_format(io_path(dir, "variant0.h5"), format, sizeof format) == A3_OK && !format[0]);
}

static void test_shard_range(void) {
  for (int64_t m = 0; m <= 40; m++)
    for (int p = 1; p <= 9; p++) {
      int64_t prev_end = 0;
      for (int r = 0; r < p; r++) {
        int64_t b = -1, e = -1;
        a3_shard_range(m, r, p, &b, &e);
        CHECK(b == prev_end && e >= b && e - b >= m / p && e - b <= (m + p - 1) / p);
        prev_end = e;
      }
      CHECK(prev_end == m);
    }
  int64_t b = 0, e = 0;
  const int64_t big = (int64_t)1 << 60; // rank * count would overflow; 2^60 = 1 (mod 7)
  a3_shard_range(big, 6, 7, &b, &e);
  CHECK(e == big && b == big - big / 7 - 1); // floor(6 M / 7) = M - ceil(M / 7)
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
  dir = io_make_temp_dir("dataset");
  CHECK(dir != NULL);
  if (dir) {
    test_good_file();
    test_bad_files();
    test_shard_range();
    io_remove_tree(dir);
    free(dir);
  }
  MPI_Finalize();
  return TEST_DONE("test_io_dataset");
}
