// The held-out loss tests' dataset: the trainer tests' tiny images in a
// train and a test split (header-only, shared by the serial and MPI tests).
#ifndef A3FTA_HELDOUT_TEST_UTIL_H
#define A3FTA_HELDOUT_TEST_UTIL_H

#include "a3fta/core.h"
#include "io/dataset_write.h"

#include <string.h>

enum { HT_SIDE = 14, HT_TRAIN = 16, HT_TEST = 10 };

// Class 0 a bright square, class 1 a horizontal bar, at a place drawn from (split, i).
static void ht_draw(int cls, int split, int i, uint8_t *img) {
  memset(img, 0, HT_SIDE * HT_SIDE);
  const uint64_t r = a3_rng_u64(11, 98, (uint64_t)(split * 1000 + i));
  const int x0 = (int)(r % 8), y0 = (int)((r >> 8) % 8);
  for (int y = 0; y < HT_SIDE; y++)
    for (int x = 0; x < HT_SIDE; x++) {
      const int in = cls == 0 ? (x >= x0 && x < x0 + 6 && y >= y0 && y < y0 + 6)
                              : (y >= y0 + 2 && y < y0 + 5 && x >= 1 && x < HT_SIDE - 1);
      img[y * HT_SIDE + x] = in ? (uint8_t)(200 + (int)((r >> 16) % 56)) : 0;
    }
}

static a3_status ht_split(a3_ds_writer *w, const char *name, int n, int split) {
  uint8_t images[HT_TRAIN][HT_SIDE * HT_SIDE];
  int32_t labels[HT_TRAIN];
  for (int i = 0; i < n; i++) {
    labels[i] = i % 2;
    ht_draw(labels[i], split, i, images[i]);
  }
  A3_TRY(a3_ds_writer_add_split(w, name, n, 1, HT_SIDE, HT_SIDE));
  return a3_ds_writer_write(w, 0, n, &images[0][0], labels);
}

// 16 train and 10 test images (5 per class). Serial. 0 on success.
static int ht_make_dataset(const char *path) {
  const char *names[2] = {"square", "bar"};
  a3_ds_writer *w = NULL;
  a3_status s = a3_ds_writer_create(path, "held-out test", names, 2, &w);
  if (s == A3_OK) s = ht_split(w, "train", HT_TRAIN, 0);
  if (s == A3_OK) s = ht_split(w, "test", HT_TEST, 1);
  if (s == A3_OK)
    s = a3_ds_writer_commit(w);
  else
    a3_ds_writer_abort(w);
  if (s != A3_OK) a3_log_error_status(s);
  return s != A3_OK;
}

#endif
