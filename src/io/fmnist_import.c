// Fashion-MNIST (gzipped IDX, as installed by Debian's dataset-fashion-mnist)
// -> an a3fta dataset file with splits train and test.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/dataset.h"
#include "io/dataset_write.h"
#include "io/idx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { FMNIST_CLASSES = 10, FMNIST_FILES = 4, PATH_CAP = 4096 };

static const char *const fmnist_class_names[FMNIST_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

// File order: split train's images and labels, then split test's.
static const char *const fmnist_files[FMNIST_FILES] = {
    "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz"};

static const char source_hint[] = "Debian's package dataset-fashion-mnist installs the four .gz "
                                  "files in " A3_FASHION_MNIST_DEFAULT_DIR
                                  " (apt-get install dataset-fashion-mnist); or pass --source DIR "
                                  "naming a folder that holds them";

typedef struct {
  char paths[FMNIST_FILES][PATH_CAP];
  a3_idx idx[FMNIST_FILES];
} fmnist_files_t;

// Missing folder or files are input errors (exit 2): the user named the
// wrong place, nothing is broken. All missing files are named at once.
static a3_status check_source(const char *dir, fmnist_files_t *f) {
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return A3_FAIL(A3_ERR_INPUT, "Fashion-MNIST source folder %s does not exist; %s", dir,
                   source_hint);
  char missing[1024] = "";
  for (int i = 0; i < FMNIST_FILES; i++) {
    snprintf(f->paths[i], PATH_CAP, "%s/%s", dir, fmnist_files[i]);
    if (stat(f->paths[i], &st) != 0 && strlen(missing) + strlen(fmnist_files[i]) + 3 < 1024) {
      if (missing[0]) strcat(missing, ", ");
      strcat(missing, fmnist_files[i]);
    }
  }
  if (missing[0])
    return A3_FAIL(A3_ERR_INPUT, "Fashion-MNIST source folder %s lacks %s; %s", dir, missing,
                   source_hint);
  return A3_OK;
}

static a3_status check_pair(const fmnist_files_t *f, int images, int labels) {
  const a3_idx *im = &f->idx[images], *lb = &f->idx[labels];
  if (im->dims[0] != lb->dims[0])
    return A3_FAIL(A3_ERR_INPUT,
                   "%s holds %u images but %s holds %u labels; expected one label "
                   "per image (are the files from different releases?)",
                   f->paths[images], im->dims[0], f->paths[labels], lb->dims[0]);
  for (size_t i = 0; i < lb->size; i++)
    if (lb->data[i] >= FMNIST_CLASSES)
      return A3_FAIL(A3_ERR_INPUT,
                     "%s: label %u of image %zu (byte offset %zu) is out of range, expected "
                     "0..%d (Fashion-MNIST has %d classes)",
                     f->paths[labels], lb->data[i], i, lb->header_bytes + i, FMNIST_CLASSES - 1,
                     FMNIST_CLASSES);
  return A3_OK;
}

static a3_status read_files(fmnist_files_t *f) {
  for (int i = 0; i < FMNIST_FILES; i++)
    A3_TRY(a3_idx_read(f->paths[i], i % 2 ? A3_IDX_MAGIC_LABELS : A3_IDX_MAGIC_IMAGES, &f->idx[i]));
  A3_TRY(check_pair(f, 0, 1));
  A3_TRY(check_pair(f, 2, 3));
  const a3_idx *train = &f->idx[0], *test = &f->idx[2];
  if (train->dims[1] > 65535 || train->dims[2] > 65535)
    return A3_FAIL(A3_ERR_INPUT, "%s: images of %ux%u pixels, expected at most 65535x65535",
                   f->paths[0], train->dims[1], train->dims[2]);
  if (train->dims[1] != test->dims[1] || train->dims[2] != test->dims[2])
    return A3_FAIL(A3_ERR_INPUT, "%s holds %ux%u images but %s holds %ux%u; expected one size",
                   f->paths[0], train->dims[1], train->dims[2], f->paths[2], test->dims[1],
                   test->dims[2]);
  return A3_OK;
}

static a3_status write_split(a3_ds_writer *w, const char *name, const a3_idx *images,
                             const a3_idx *labels, a3_import_split *report) {
  const int64_t n = images->dims[0];
  const int h = (int)images->dims[1], wd = (int)images->dims[2];
  int32_t *wide = NULL; // (N) int32: the file stores labels as int32
  A3_TRY(A3_ALLOC(wide, (size_t)n));
  for (int64_t i = 0; i < n; i++) wide[i] = labels->data[i];
  A3_TRY(a3_ds_writer_add_split(w, name, n, 1, h, wd));
  a3_status s = a3_ds_writer_write(w, 0, n, images->data, wide);
  free(wide);
  A3_TRY(s);
  snprintf(report->name, sizeof report->name, "%s", name);
  report->n = n;
  report->channels = 1;
  report->height = h;
  report->width = wd;
  return A3_OK;
}

static a3_status write_file(const fmnist_files_t *f, const char *dir, const char *out_path,
                            a3_import_report *report) {
  char source[PATH_CAP + 256];
  snprintf(source, sizeof source, "%s: %s/{%s, %s, %s, %s}",
           strcmp(dir, A3_FASHION_MNIST_DEFAULT_DIR) ? "Fashion-MNIST IDX files"
                                                     : "Debian dataset-fashion-mnist",
           dir, fmnist_files[0], fmnist_files[1], fmnist_files[2], fmnist_files[3]);
  a3_ds_writer *w = NULL;
  A3_TRY(a3_ds_writer_create(out_path, source, fmnist_class_names, FMNIST_CLASSES, &w));
  a3_status s = write_split(w, "train", &f->idx[0], &f->idx[1], &report->splits[0]);
  if (s == A3_OK) s = write_split(w, "test", &f->idx[2], &f->idx[3], &report->splits[1]);
  if (s != A3_OK) {
    a3_ds_writer_abort(w);
    A3_TRY(s);
  }
  A3_TRY(a3_ds_writer_commit(w));
  report->n_splits = 2;
  report->num_classes = FMNIST_CLASSES;
  return A3_OK;
}

a3_status a3_import_fashion_mnist(const char *source_dir, const char *out_path,
                                  a3_import_report *report) {
  const char *dir = source_dir ? source_dir : A3_FASHION_MNIST_DEFAULT_DIR;
  a3_import_report unused;
  if (!report) report = &unused;
  memset(report, 0, sizeof *report);
  fmnist_files_t *f = NULL; // 16 KiB of paths: keep it off the stack
  A3_TRY(A3_ALLOC(f, 1));
  a3_status s = check_source(dir, f);
  if (s == A3_OK) s = read_files(f);
  if (s == A3_OK) s = write_file(f, dir, out_path, report);
  for (int i = 0; i < FMNIST_FILES; i++) a3_idx_free(&f->idx[i]);
  free(f);
  A3_TRY(s);
  return A3_OK;
}
