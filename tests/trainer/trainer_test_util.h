// Helpers for the trainer tests: a tiny synthetic dataset, the tiny U-Net
// config, and loss recording.
#ifndef A3FTA_TRAINER_TEST_UTIL_H
#define A3FTA_TRAINER_TEST_UTIL_H

#include "a3fta/config.h"
#include "a3fta/trainer.h"

#include <stdint.h>

enum { TT_MAX_STEPS = 256 };

// Two classes of 8 grey 14x14 images each (class 0: a bright square at a
// random place, class 1: a horizontal bar): the model pads them to 16x16.
// Serial (call on one rank). 0 on success.
int tt_make_dataset(const char *path);

// The tiny U-Net run: channels [8, 16], 1 resnet per block, GroupNorm(4),
// attention at 8x8 (down, mid, up), sample 16; class 1, 6 shots; strategy
// full; 20 steps of 4 images, constant lr 1e-3, EMA; no samples at the end.
// `extra` overrides (n_extra of them) apply last. 0 on success.
int tt_config(a3_config *cfg, const char *data_path, const char *out_dir, const char *const *extra,
              int n_extra);

typedef struct {
  int64_t step[TT_MAX_STEPS];
  double loss[TT_MAX_STEPS], lr[TT_MAX_STEPS];
  int n;
} tt_losses;
// An a3_train_options.on_step callback that appends to a tt_losses (ctx).
void tt_record(void *ctx, int64_t step, double loss, double lr);

// A fresh temporary folder made by rank 0 of comm and shared with every rank
// (out = "" when it could not be made).
void tt_shared_temp_dir(MPI_Comm comm, const char *tag, char *out, size_t size);
// That folder, and in it data = "<dir>/data.h5" written by rank 0 with make
// (tt_make_dataset or another maker, 0 on success). Collective: 1 on every
// rank when both are there, else 0 on every rank.
int tt_shared_dataset(MPI_Comm comm, const char *tag, int (*make)(const char *path), char *dir,
                      size_t dir_size, char *data, size_t data_size);

// a3_train with recording; prints the error and returns non-zero on failure.
int tt_train(const a3_config *cfg, MPI_Comm comm, int resume, int64_t stop_after, tt_losses *out);

#endif
