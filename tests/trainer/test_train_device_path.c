// The GPU's training path (trainer_device.c) on a machine without a GPU:
// A3FTA_TRAIN_DEVICE=cpu runs it on a copy of the CPU backend that counts
// its host <-> device copies. Checked here:
// - a training step copies nothing: 7 steps advanced make no upload and no
//   download; taking their losses is one download (the issue's "no copies
//   inside a step except the loss at logging intervals);
// - the device path trains like the host path: the same losses bit for bit
//   (same CPU ops, and the backend's batch_images, training_noise, clipping,
//   AdamW and EMA ops give the host functions' numbers), for a3fta
//   (adapters, EMA) with gradient accumulation, a warmup + cosine lr, weight
//   decay on the decayed segments only and clipping; and the weights and EMA
//   after the steps, bit for bit;
// - with the images over A3FTA_DEVICE_IMAGES_MAX_MB (0), each micro-batch
//   uploads its images (one copy each), with the same losses; a bad value
//   is a usage error;
// - a3_trainer_step refuses to run while losses are pending, and
//   a3_trainer_take_losses returns the steps in order with their lrs.
// (The rest of the trainer tests run on this path too: CMakeLists.txt.)
#define _POSIX_C_SOURCE 200809L
#include "io/io_test_util.h"
#include "test_util.h"
#include "train/trainer_device.h"
#include "trainer_test_util.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { STEPS = 12 };

static char *dir;
static char data[4200];

// Weight decay large enough that 1 - lr * decay is not 1.0f (so the
// segments' decay flags show), and a clip that acts.
static const char *const extra[] = {
    "strategy.name=a3fta",    "train.batch_size=4",       "train.grad_accum=2", "train.steps=12",
    "train.log_every=4",      "train.lr_schedule=cosine", "train.warmup=3",     "train.lr=1e-3",
    "train.weight_decay=0.1", "train.grad_clip=0.05"};
enum { N_EXTRA = (int)(sizeof extra / sizeof extra[0]) };

static int load(a3_config *cfg, const char *sub) {
  const int rc = tt_config(cfg, data, io_path(dir, sub), extra, N_EXTRA);
  CHECK(rc == 0);
  return rc;
}

static void use_device_path(int on) {
  if (on)
    setenv("A3FTA_TRAIN_DEVICE", "cpu", 1);
  else
    unsetenv("A3FTA_TRAIN_DEVICE");
}

static void copies(a3_trainer *t, int64_t *up, int64_t *down) {
  a3_train_device_copies(a3_trainer_device(t), up, down);
}

// Advance without reading: no copy at all; then one take is one download.
static void test_step_copies_nothing(void) {
  a3_config cfg;
  if (load(&cfg, "copies")) return;
  use_device_path(1);
  a3_trainer *t = NULL;
  CHECK(a3_trainer_create(&cfg, MPI_COMM_WORLD, &t) == A3_OK);
  CHECK(t && a3_trainer_device(t) != NULL);
  if (t && a3_trainer_device(t)) {
    int64_t up0 = 0, down0 = 0, up = 0, down = 0;
    copies(t, &up0, &down0);
    CHECK(up0 > 0); // the model, moments and images went up once
    for (int i = 0; i < 7; i++) CHECK(a3_trainer_advance(t) == A3_OK);
    copies(t, &up, &down);
    CHECK_MSG(up == up0 && down == down0, "7 steps made %lld uploads and %lld downloads",
              (long long)(up - up0), (long long)(down - down0));
    CHECK(a3_trainer_pending(t) == 7);
    double loss = 0, lr = 0;
    CHECK(a3_trainer_step(t, &loss, &lr) != A3_OK); // losses pending
    a3_error_clear();
    a3_step_losses L;
    CHECK(a3_trainer_take_losses(t, &L) == A3_OK);
    copies(t, &up, &down);
    CHECK(up == up0 && down == down0 + 1);
    CHECK(L.first_step == 1 && L.n == 7 && a3_trainer_pending(t) == 0);
    for (int64_t i = 0; i < L.n; i++) CHECK(isfinite(L.loss[i]) && L.loss[i] > 0);
    CHECK(L.lr[0] < L.lr[2]); // warmup
    CHECK(a3_trainer_step(t, &loss, &lr) == A3_OK && isfinite(loss));
    copies(t, &up, &down);
    CHECK(up == up0 && down == down0 + 2);
  }
  a3_trainer_free(t);
  use_device_path(0);
  a3_config_free(&cfg);
}

// With the images over A3FTA_DEVICE_IMAGES_MAX_MB each micro-batch uploads
// its own (2 per step here), and still nothing comes down.
static void test_uploads_when_images_stay_on_host(void) {
  a3_config cfg;
  if (load(&cfg, "uploads")) return;
  use_device_path(1);
  setenv("A3FTA_DEVICE_IMAGES_MAX_MB", "0", 1);
  a3_trainer *t = NULL;
  CHECK(a3_trainer_create(&cfg, MPI_COMM_WORLD, &t) == A3_OK);
  if (t && a3_trainer_device(t)) {
    int64_t up0 = 0, down0 = 0, up = 0, down = 0;
    copies(t, &up0, &down0);
    for (int i = 0; i < 3; i++) CHECK(a3_trainer_advance(t) == A3_OK);
    copies(t, &up, &down);
    CHECK_MSG(up == up0 + 6 && down == down0, "3 steps made %lld uploads and %lld downloads",
              (long long)(up - up0), (long long)(down - down0));
  }
  a3_trainer_free(t);
  setenv("A3FTA_DEVICE_IMAGES_MAX_MB", "lots", 1);
  CHECK(a3_trainer_create(&cfg, MPI_COMM_WORLD, &t) == A3_ERR_USAGE && !t);
  CHECK(strstr(a3_error_message(), "A3FTA_DEVICE_IMAGES_MAX_MB=lots") != NULL);
  a3_error_clear();
  unsetenv("A3FTA_DEVICE_IMAGES_MAX_MB");
  use_device_path(0);
  a3_config_free(&cfg);
}

// The device path (images in device memory, or uploaded per micro-batch
// when A3FTA_DEVICE_IMAGES_MAX_MB is 0) against the host path.
static void test_matches_host_path(const char *sub, const char *images_max_mb) {
  a3_config host_cfg, dev_cfg;
  char host_sub[64];
  snprintf(host_sub, sizeof host_sub, "host-%s", sub);
  if (load(&host_cfg, host_sub) || load(&dev_cfg, sub)) return;
  tt_losses host, dev;
  CHECK(tt_train(&host_cfg, MPI_COMM_WORLD, 0, 0, &host) == 0);
  use_device_path(1);
  if (images_max_mb) setenv("A3FTA_DEVICE_IMAGES_MAX_MB", images_max_mb, 1);
  CHECK(tt_train(&dev_cfg, MPI_COMM_WORLD, 0, 0, &dev) == 0);
  unsetenv("A3FTA_DEVICE_IMAGES_MAX_MB");
  use_device_path(0);
  CHECK(host.n == STEPS && dev.n == STEPS);
  double worst = 0;
  for (int i = 0; i < STEPS && i < host.n && i < dev.n; i++) {
    CHECK(dev.step[i] == host.step[i] && dev.lr[i] == host.lr[i]);
    const double rel = fabs(dev.loss[i] - host.loss[i]) / fabs(host.loss[i]);
    worst = rel > worst ? rel : worst;
  }
  CHECK_MSG(worst == 0, "device path (%s) vs host path: loss differs by %.3g relative", sub, worst);
  a3_config_free(&host_cfg);
  a3_config_free(&dev_cfg);
}

// The weights and the EMA after the device path's steps (pulled by a
// checkpoint save) against the host path's, bit for bit: the losses alone
// cannot show a wrong EMA.
static void test_state_matches_host_path(void) {
  a3_config cfg;
  if (load(&cfg, "state")) return;
  a3_trainer *t[2] = {NULL, NULL};
  for (int k = 0; k < 2; k++) {
    use_device_path(k);
    CHECK(a3_trainer_create(&cfg, MPI_COMM_WORLD, &t[k]) == A3_OK);
    a3_step_losses L;
    for (int i = 0; t[k] && i < STEPS; i++) CHECK(a3_trainer_advance(t[k]) == A3_OK);
    if (t[k]) CHECK(a3_trainer_take_losses(t[k], &L) == A3_OK && L.n == STEPS);
    char name[32];
    snprintf(name, sizeof name, "state-%d.h5", k);
    if (t[k]) CHECK(a3_trainer_save(t[k], io_path(dir, name)) == A3_OK);
  }
  use_device_path(0);
  if (t[0] && t[1]) {
    CHECK(a3_trainer_device(t[0]) == NULL && a3_trainer_device(t[1]) != NULL);
    const a3_unet *m[2] = {a3_trainer_model(t[0]), a3_trainer_model(t[1])};
    const size_t nf = a3_unet_num_floats(m[0]);
    const size_t ne = (size_t)a3_trainer_timing(t[0]).grad_bytes / sizeof(float);
    const float *e[2] = {a3_trainer_ema(t[0]), a3_trainer_ema(t[1])};
    CHECK(a3_unet_num_floats(m[1]) == nf && e[0] && e[1] && ne > 0);
    CHECK_MSG(!memcmp(a3_unet_params((a3_unet *)m[0]), a3_unet_params((a3_unet *)m[1]),
                      nf * sizeof(float)),
              "device path: weights differ from the host path's");
    if (e[0] && e[1])
      CHECK_MSG(!memcmp(e[0], e[1], ne * sizeof(float)),
                "device path: the EMA differs from the host path's");
  }
  a3_trainer_free(t[0]);
  a3_trainer_free(t[1]);
  a3_config_free(&cfg);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  a3_log_set_level(A3_LOG_WARN);
  dir = io_make_temp_dir("train-device");
  CHECK(dir != NULL);
  if (dir) {
    snprintf(data, sizeof data, "%s", io_path(dir, "data.h5"));
    CHECK(tt_make_dataset(data) == 0);
    test_step_copies_nothing();
    test_uploads_when_images_stay_on_host();
    test_matches_host_path("device", NULL);
    test_matches_host_path("device-uploads", "0");
    test_state_matches_host_path();
    io_remove_tree(dir);
    free(dir);
  }
  MPI_Finalize();
  return TEST_DONE("test_train_device_path");
}
