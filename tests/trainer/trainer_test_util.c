// Helpers for the trainer tests (see trainer_test_util.h).
#include "trainer_test_util.h"

#include "io/dataset_write.h"
#include "io/io_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N_PER_CLASS = 8, SIDE = 14 };

static void draw(int cls, int i, uint8_t *img) {
  memset(img, 0, SIDE * SIDE);
  const uint64_t r = a3_rng_u64(7, 99, (uint64_t)(cls * 100 + i));
  const int x0 = (int)(r % 8), y0 = (int)((r >> 8) % 8);
  for (int y = 0; y < SIDE; y++)
    for (int x = 0; x < SIDE; x++) {
      const int in = cls == 0 ? (x >= x0 && x < x0 + 6 && y >= y0 && y < y0 + 6)
                              : (y >= y0 + 2 && y < y0 + 5 && x >= 1 && x < SIDE - 1);
      img[y * SIDE + x] = in ? (uint8_t)(200 + (int)((r >> 16) % 56)) : 0;
    }
}

int tt_make_dataset(const char *path) {
  const char *names[2] = {"square", "bar"};
  a3_ds_writer *w = NULL;
  uint8_t images[2 * N_PER_CLASS][SIDE * SIDE];
  int32_t labels[2 * N_PER_CLASS];
  for (int i = 0; i < 2 * N_PER_CLASS; i++) {
    labels[i] = i % 2; // classes interleaved, as in real files
    draw(labels[i], i / 2, images[i]);
  }
  a3_status s = a3_ds_writer_create(path, "trainer test", names, 2, &w);
  if (s == A3_OK) s = a3_ds_writer_add_split(w, "train", 2 * N_PER_CLASS, 1, SIDE, SIDE);
  if (s == A3_OK) s = a3_ds_writer_write(w, 0, 2 * N_PER_CLASS, &images[0][0], labels);
  if (s == A3_OK)
    s = a3_ds_writer_commit(w);
  else
    a3_ds_writer_abort(w);
  if (s != A3_OK) a3_log_error_status(s);
  return s != A3_OK;
}

static const char tiny_yaml[] =
    "model:\n"
    "  init: random\n"
    "  arch: {sample_size: 16, in_channels: 1, out_channels: 1, block_out_channels: [8, 16],\n"
    "         layers_per_block: 1, down_block_types: [DownBlock2D, AttnDownBlock2D],\n"
    "         up_block_types: [AttnUpBlock2D, UpBlock2D], norm_num_groups: 4}\n"
    "data: {classes: [1], shots: 6, subset_seed: 0, hflip: true}\n"
    "strategy: {name: full}\n"
    "train: {steps: 20, batch_size: 4, lr: 1.0e-3, lr_schedule: constant, warmup: 0, ema: true,\n"
    "        seed: 0, log_every: 10, checkpoint_every: 0}\n"
    "eval: {sampler: ddim, sampler_steps: 5}\n"
    "output: {samples_per_run: 0}\n";

int tt_config(a3_config *cfg, const char *data_path, const char *out_dir, const char *const *extra,
              int n_extra) {
  char data_o[4200], out_o[4200];
  snprintf(data_o, sizeof data_o, "data.path=%s", data_path);
  snprintf(out_o, sizeof out_o, "output.dir=%s", out_dir);
  const char *overrides[40] = {data_o, out_o};
  for (int i = 0; i < n_extra && i < 38; i++) overrides[2 + i] = extra[i];
  const a3_status s = a3_config_load_string("tiny.yaml", tiny_yaml, sizeof tiny_yaml - 1, overrides,
                                            2 + n_extra, cfg);
  if (s != A3_OK) a3_log_error_status(s);
  return s != A3_OK;
}

void tt_record(void *ctx, int64_t step, double loss, double lr) {
  tt_losses *l = ctx;
  if (l->n >= TT_MAX_STEPS) return;
  l->step[l->n] = step;
  l->loss[l->n] = loss;
  l->lr[l->n] = lr;
  l->n++;
}

int tt_train(const a3_config *cfg, MPI_Comm comm, int resume, int64_t stop_after, tt_losses *out) {
  memset(out, 0, sizeof *out);
  const a3_train_options opt = {resume != 0, stop_after, tt_record, out};
  const a3_status s = a3_train(cfg, comm, &opt, NULL);
  if (s != A3_OK) a3_log_error_status(s);
  return s != A3_OK;
}

int tt_shared_dataset(MPI_Comm comm, const char *tag, int (*make)(const char *path), char *dir,
                      size_t dir_size, char *data, size_t data_size) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  tt_shared_temp_dir(comm, tag, dir, dir_size);
  snprintf(data, data_size, "%s/data.h5", dir);
  int ok = dir[0] != '\0';
  if (rank == 0 && ok) ok = make(data) == 0;
  MPI_Bcast(&ok, 1, MPI_INT, 0, comm);
  return ok;
}

void tt_shared_temp_dir(MPI_Comm comm, const char *tag, char *out, size_t size) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  char buf[4096] = "";
  if (rank == 0) {
    char *d = io_make_temp_dir(tag);
    if (d) snprintf(buf, sizeof buf, "%s", d);
    free(d);
  }
  MPI_Bcast(buf, sizeof buf, MPI_CHAR, 0, comm);
  snprintf(out, size, "%s", buf);
}
