// 'import images' on PNG folders generated here with libpng: grey, RGB,
// RGBA, palette and 16-bit inputs; class and file ordering; padding and
// resizing; and the errors (mixed sizes, corrupt and non-PNG files, empty
// folders, no class subfolders, a class without images).
#define _POSIX_C_SOURCE 200809L
#include "a3fta/dataset.h"
#include "io_test_util.h"
#include "test_util.h"

#include <png.h>
#include <stdlib.h>
#include <string.h>

static char *root;

// Writes an 8-bit (or, with PNG_FORMAT_FLAG_LINEAR, 16-bit) PNG through
// libpng's simplified API; `format` is a PNG_FORMAT_* value.
static void write_png(const char *path, int h, int w, png_uint_32 format, const void *pixels,
                      const void *colormap, int colormap_entries) {
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  img.width = (png_uint_32)w;
  img.height = (png_uint_32)h;
  img.format = format;
  img.colormap_entries = (png_uint_32)colormap_entries;
  const int ok = png_image_write_to_file(&img, path, 0, pixels, 0, colormap);
  CHECK_MSG(ok, "cannot write %s: %s", path, img.message);
}

static void write_grey(const char *path, int h, int w, uint8_t base) {
  uint8_t px[64 * 64];
  for (int i = 0; i < h * w; i++) px[i] = (uint8_t)(base + i);
  write_png(path, h, w, PNG_FORMAT_GRAY, px, NULL, 0);
}

static char *make_dir(const char *parent, const char *name) {
  char *path = strdup(io_path(parent, name));
  CHECK(io_mkdir(path) == 0);
  return path;
}

// The whole train split of `file`: pixels (N, C, H, W), labels (N).
typedef struct {
  int64_t n;
  int c, h, w, num_classes;
  char names[8][32];
  uint8_t px[4096];
  int32_t labels[64];
} loaded;

static int load(const char *file, loaded *out) {
  memset(out, 0, sizeof *out);
  a3_dataset *ds = NULL;
  a3_split_info info;
  if (a3_dataset_open(MPI_COMM_WORLD, file, &ds) != A3_OK) return -1;
  int rc = a3_dataset_split_info(ds, "train", &info) == A3_OK ? 0 : -1;
  out->n = info.n;
  out->c = info.channels;
  out->h = info.height;
  out->w = info.width;
  out->num_classes = a3_dataset_num_classes(ds);
  for (int c = 0; c < out->num_classes && c < 8; c++)
    snprintf(out->names[c], sizeof out->names[c], "%s", a3_dataset_class_name(ds, c));
  int64_t idx[64];
  for (int64_t i = 0; i < info.n && i < 64; i++) idx[i] = i;
  if (rc == 0 && (info.n > 64 || info.n * info.channels * info.height * info.width > 4096)) rc = -1;
  if (rc == 0)
    rc = a3_dataset_read(ds, "train", idx, info.n, out->px, out->labels) == A3_OK ? 0 : -1;
  a3_dataset_close(ds);
  return rc;
}

static a3_status import(const char *dir, const char *out, int h, int w, a3_fit fit, int channels) {
  a3_image_import_options opt = {dir, out, h, w, fit, channels, NULL, NULL};
  return a3_import_images(&opt, NULL);
}

static void expect_error(a3_status got, const char *fragment, const char *fragment2) {
  CHECK_MSG(got == A3_ERR_INPUT, "status %s, expected input error (%s)", a3_status_name(got),
            a3_error_message());
  CHECK_MSG(strstr(a3_error_message(), fragment) != NULL, "message lacks '%s': %s", fragment,
            a3_error_message());
  CHECK_MSG(!fragment2 || strstr(a3_error_message(), fragment2) != NULL, "message lacks '%s': %s",
            fragment2, a3_error_message());
}

static void test_grey_and_order(void) {
  char *dir = make_dir(root, "grey");
  char *b = make_dir(dir, "b-class"), *a = make_dir(dir, "a-class");
  write_grey(io_path(a, "2.png"), 3, 4, 100);
  write_grey(io_path(a, "10.png"), 3, 4, 0); // "10.png" < "2.png": byte-wise order
  write_grey(io_path(b, "x.png"), 3, 4, 200);
  CHECK(io_write_file(io_path(a, ".hidden"), "x", 1) == 0); // skipped
  const char *out = io_path(root, "grey.h5");
  CHECK_MSG(import(dir, out, 0, 0, A3_FIT_NONE, 0) == A3_OK, "%s", a3_error_message());
  loaded d;
  CHECK(load(out, &d) == 0);
  CHECK(d.n == 3 && d.c == 1 && d.h == 3 && d.w == 4 && d.num_classes == 2);
  CHECK(!strcmp(d.names[0], "a-class") && !strcmp(d.names[1], "b-class"));
  CHECK(d.labels[0] == 0 && d.labels[1] == 0 && d.labels[2] == 1);
  CHECK(d.px[0] == 0 && d.px[11] == 11 && d.px[12] == 100 && d.px[24] == 200 && d.px[35] == 211);
  free(a);
  free(b);
  free(dir);
}

static void test_colour(void) {
  char *dir = make_dir(root, "rgb"), *cls = make_dir(dir, "only");
  const uint8_t rgb[2 * 3] = {255, 0, 0, 10, 20, 30}; // (H=1, W=2, RGB)
  write_png(io_path(cls, "c.png"), 1, 2, PNG_FORMAT_RGB, rgb, NULL, 0);
  const char *out = io_path(root, "rgb.h5");
  loaded d;
  CHECK_MSG(import(dir, out, 0, 0, A3_FIT_NONE, 0) == A3_OK, "%s", a3_error_message());
  CHECK(load(out, &d) == 0 && d.c == 3 && d.h == 1 && d.w == 2);
  const uint8_t planar[6] = {255, 10, 0, 20, 0, 30}; // (C, H, W)
  CHECK(!memcmp(d.px, planar, 6));
  CHECK_MSG(import(dir, out, 0, 0, A3_FIT_NONE, 1) == A3_OK, "%s", a3_error_message());
  CHECK(load(out, &d) == 0 && d.c == 1);
  CHECK_MSG(d.px[0] == 76 && d.px[1] == 18, "luma %d %d, expected 76 18", d.px[0], d.px[1]);
  free(cls);
  free(dir);
}

// RGBA onto black, a palette image and a 16-bit grey image, all as grey.
static void test_formats(void) {
  char *dir = make_dir(root, "formats"), *cls = make_dir(dir, "c");
  const uint8_t rgba[4] = {200, 200, 200, 128};
  write_png(io_path(cls, "1-rgba.png"), 1, 1, PNG_FORMAT_RGBA, rgba, NULL, 0);
  const uint8_t map[2 * 3] = {0, 0, 0, 90, 90, 90}, index[1] = {1};
  write_png(io_path(cls, "2-palette.png"), 1, 1, PNG_FORMAT_RGB_COLORMAP, index, map, 2);
  const uint16_t deep[1] = {0xABCD};
  write_png(io_path(cls, "3-deep.png"), 1, 1, PNG_FORMAT_LINEAR_Y, deep, NULL, 0);
  const char *out = io_path(root, "formats.h5");
  loaded d;
  CHECK_MSG(import(dir, out, 0, 0, A3_FIT_NONE, 1) == A3_OK, "%s", a3_error_message());
  CHECK(load(out, &d) == 0 && d.n == 3 && d.c == 1);
  CHECK_MSG(d.px[0] == 100, "RGBA 200 at alpha 128 over black: got %d, expected 100", d.px[0]);
  CHECK_MSG(d.px[1] == 90, "palette: got %d, expected 90", d.px[1]);
  CHECK_MSG(d.px[2] == 0xAB || d.px[2] == 0xAC, "16-bit 0xABCD: got 0x%02x", d.px[2]);
  free(cls);
  free(dir);
}

static void test_pad_and_resize(void) {
  char *dir = make_dir(root, "fit"), *cls = make_dir(dir, "c");
  const uint8_t two[4] = {10, 20, 30, 40};
  write_png(io_path(cls, "a.png"), 2, 2, PNG_FORMAT_GRAY, two, NULL, 0);
  const uint8_t four[16] = {0, 10, 20, 30, 0, 10, 20, 30, 0, 10, 20, 30, 0, 10, 20, 30};
  write_png(io_path(cls, "b.png"), 4, 4, PNG_FORMAT_GRAY, four, NULL, 0);
  const char *out = io_path(root, "fit.h5");
  loaded d;
  CHECK_MSG(import(dir, out, 4, 4, A3_FIT_PAD, 0) == A3_OK, "%s", a3_error_message());
  CHECK(load(out, &d) == 0 && d.n == 2 && d.h == 4 && d.w == 4);
  const uint8_t padded[16] = {0, 0, 0, 0, 0, 10, 20, 0, 0, 30, 40, 0, 0, 0, 0, 0};
  CHECK(!memcmp(d.px, padded, 16) && !memcmp(d.px + 16, four, 16));
  expect_error(import(dir, out, 3, 3, A3_FIT_PAD, 0), "b.png", "never crops");
  CHECK_MSG(import(dir, out, 2, 2, A3_FIT_RESIZE, 0) == A3_OK, "%s", a3_error_message());
  CHECK(load(out, &d) == 0 && d.h == 2 && d.w == 2);
  CHECK(!memcmp(d.px, two, 4));           // same size: unchanged
  const uint8_t area[4] = {5, 25, 5, 25}; // 4 -> 2: means of pixel pairs
  CHECK_MSG(!memcmp(d.px + 4, area, 4), "area: %d %d %d %d", d.px[4], d.px[5], d.px[6], d.px[7]);
  CHECK_MSG(import(dir, out, 2, 4, A3_FIT_RESIZE, 0) == A3_OK, "%s", a3_error_message());
  CHECK(load(out, &d) == 0 && d.h == 2 && d.w == 4);
  // 2 -> 4 columns, bilinear at centres 0, 0.25, 0.75, 1 (clamped): 10 12.5 17.5 20
  CHECK_MSG(d.px[0] == 10 && d.px[1] == 13 && d.px[2] == 18 && d.px[3] == 20,
            "bilinear: %d %d %d %d", d.px[0], d.px[1], d.px[2], d.px[3]);
  free(cls);
  free(dir);
}

static void test_errors(void) {
  char *dir = make_dir(root, "mixed"), *cls = make_dir(dir, "c");
  write_grey(io_path(cls, "a.png"), 3, 3, 0);
  write_grey(io_path(cls, "b.png"), 4, 3, 0);
  char *out = strdup(io_path(root, "bad.h5"));
  expect_error(import(dir, out, 0, 0, A3_FIT_NONE, 0), "a.png is 3x3", "b.png is 4x3");
  CHECK(strstr(a3_error_message(), "--size") != NULL);
  CHECK(remove(io_path(cls, "b.png")) == 0);
  // A PNG cut in half: libpng's error must come back as ours, naming the file.
  write_grey(io_path(cls, "cut.png"), 3, 3, 0);
  FILE *f = fopen(io_path(cls, "cut.png"), "rb");
  static uint8_t bytes[8192];
  const size_t len = f ? fread(bytes, 1, sizeof bytes, f) : 0;
  if (f) fclose(f);
  CHECK(len > 40 && io_write_file(io_path(cls, "cut.png"), bytes, len / 2) == 0);
  expect_error(import(dir, out, 0, 0, A3_FIT_NONE, 0), "cut.png", "corrupt or truncated PNG");
  CHECK(io_write_file(io_path(cls, "cut.png"), "GIF89a....", 10) == 0);
  expect_error(import(dir, out, 0, 0, A3_FIT_NONE, 0), "cut.png", "not a PNG file");
  char *empty = make_dir(root, "empty");
  expect_error(import(empty, out, 0, 0, A3_FIT_NONE, 0), "empty", "empty folder");
  CHECK(io_write_file(io_path(empty, "loose.png"), bytes, len) == 0);
  expect_error(import(empty, out, 0, 0, A3_FIT_NONE, 0), "empty", "no class subfolders");
  char *lonely = make_dir(root, "lonely"), *none = make_dir(lonely, "nothing");
  expect_error(import(lonely, out, 0, 0, A3_FIT_NONE, 0), "lonely/nothing", "has no images");
  expect_error(import(io_path(root, "nowhere"), out, 0, 0, A3_FIT_NONE, 0), "nowhere", "No such");
  CHECK(!io_exists(out) && !io_exists(io_path(root, "bad.h5.tmp")));
  free(out);
  free(none);
  free(lonely);
  free(empty);
  free(cls);
  free(dir);
}

// --test DIR2: one file with both splits; the folders must hold the same
// classes and reach the same size.
static void test_two_splits(void) {
  char *dir = make_dir(root, "two"), *train = make_dir(dir, "train"), *test = make_dir(dir, "test");
  char *tr_a = make_dir(train, "a"), *tr_b = make_dir(train, "b"), *te_a = make_dir(test, "a");
  write_grey(io_path(tr_a, "1.png"), 2, 2, 10);
  write_grey(io_path(tr_b, "1.png"), 2, 2, 20);
  write_grey(io_path(te_a, "1.png"), 4, 4, 30);
  const char *out = io_path(root, "two.h5");
  a3_image_import_options opt = {.dir = train, .out_path = out, .test_dir = test};
  expect_error(a3_import_images(&opt, NULL), "different class subfolders", test);
  char *te_b = make_dir(test, "b");
  write_grey(io_path(te_b, "1.png"), 4, 4, 40);
  expect_error(a3_import_images(&opt, NULL), "4x4", "--size");
  opt.height = opt.width = 4;
  opt.fit = A3_FIT_PAD;
  a3_import_report report;
  CHECK_MSG(a3_import_images(&opt, &report) == A3_OK, "%s", a3_error_message());
  CHECK(report.n_splits == 2 && report.splits[0].n == 2 && report.splits[1].n == 2);
  a3_dataset *ds = NULL;
  a3_split_info tr, te;
  CHECK(a3_dataset_open(MPI_COMM_WORLD, out, &ds) == A3_OK);
  if (ds) {
    CHECK(a3_dataset_split_info(ds, "train", &tr) == A3_OK && tr.n == 2 && tr.height == 4);
    CHECK(a3_dataset_split_info(ds, "test", &te) == A3_OK && te.n == 2 && te.width == 4);
    uint8_t px[2 * 16];
    int32_t labels[2];
    const int64_t idx[2] = {0, 1};
    CHECK(a3_dataset_read(ds, "test", idx, 2, px, labels) == A3_OK);
    CHECK(labels[0] == 0 && labels[1] == 1 && px[0] == 30 && px[16] == 40);
    a3_dataset_close(ds);
  }
  opt.split = "test";
  CHECK(a3_import_images(&opt, NULL) == A3_ERR_USAGE);
  char *paths[] = {te_b, te_a, tr_b, tr_a, test, train, dir};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) free(paths[i]);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  root = io_make_temp_dir("png");
  CHECK(root != NULL);
  if (root) {
    test_grey_and_order();
    test_colour();
    test_formats();
    test_pad_and_resize();
    test_errors();
    test_two_splits();
    io_remove_tree(root);
    free(root);
  }
  MPI_Finalize();
  return TEST_DONE("test_io_png_import");
}
