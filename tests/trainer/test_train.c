// The training loop on the tiny U-Net: the loss goes down, two runs agree
// bit for bit, a run stopped and resumed agrees bit for bit with one that
// never stopped, frozen parameters stay bitwise unchanged, gradient
// accumulation matches one big batch, fine-tuning from a checkpoint, and
// sampling from the result.
#include "a3fta/checkpoint.h"
#include "a3fta/dataset.h"
#include "a3fta/strategy.h"
#include "io/io_test_util.h"
#include "test_util.h"
#include "trainer_test_util.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;
static char data[4200];

static int load(a3_config *cfg, const char *sub, const char *const *extra, int n_extra) {
  const int rc = tt_config(cfg, data, io_path(dir, sub), extra, n_extra);
  CHECK(rc == 0);
  return rc;
}

static double mean(const double *x, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += x[i];
  return s / n;
}

static int count_lines(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  int n = 0, c;
  while ((c = fgetc(f)) != EOF) n += c == '\n';
  fclose(f);
  return n;
}

// The reference run (20 steps, checkpoints every 5) and its twin.
static void test_decreases_and_deterministic(tt_losses *ref) {
  a3_config cfg;
  const char *every5[] = {"train.checkpoint_every=5"};
  if (load(&cfg, "ref", every5, 1)) return;
  CHECK(tt_train(&cfg, MPI_COMM_WORLD, 0, 0, ref) == 0);
  CHECK(ref->n == 20 && ref->step[0] == 1 && ref->step[19] == 20);
  const double first = mean(ref->loss, 5), last = mean(ref->loss + 15, 5);
  CHECK_MSG(last < 0.8 * first, "mean loss of steps 1-5 %.5f, of 16-20 %.5f", first, last);
  fprintf(stderr, "loss: steps 1-5 %.5f, steps 16-20 %.5f\n", first, last);
  CHECK(io_exists(io_path(dir, "ref/checkpoint.h5")) && io_exists(io_path(dir, "ref/config.yaml")));
  CHECK(count_lines(io_path(dir, "ref/losses.csv")) == 21);
  a3_config_free(&cfg);

  a3_config twin;
  tt_losses again;
  if (load(&twin, "twin", every5, 1)) return;
  CHECK(tt_train(&twin, MPI_COMM_WORLD, 0, 0, &again) == 0);
  CHECK(again.n == 20 && !memcmp(again.loss, ref->loss, sizeof(double) * 20));
  a3_config_free(&twin);
}

// Stop after 7 (checkpoint at 5), resume to 10 (stop), resume to the end.
static void test_resume(const tt_losses *ref) {
  // Its own folder (output.dir is part of the config, not of the numbers).
  a3_config cfg;
  const char *every5[] = {"train.checkpoint_every=5"};
  if (load(&cfg, "resumed", every5, 1)) return;
  tt_losses a, b, c;
  CHECK(tt_train(&cfg, MPI_COMM_WORLD, 0, 7, &a) == 0);
  CHECK(a.n == 7 && !memcmp(a.loss, ref->loss, sizeof(double) * 7));
  CHECK(tt_train(&cfg, MPI_COMM_WORLD, 1, 10, &b) == 0);
  CHECK(b.n == 5 && b.step[0] == 6);
  CHECK_MSG(!memcmp(b.loss, ref->loss + 5, sizeof(double) * 5),
            "step 6: resumed %.17g, uninterrupted %.17g", b.loss[0], ref->loss[5]);
  CHECK(tt_train(&cfg, MPI_COMM_WORLD, 1, 0, &c) == 0);
  CHECK(c.n == 10 && c.step[0] == 11 && !memcmp(c.loss, ref->loss + 10, sizeof(double) * 10));
  // losses.csv: rows 6 and 7 of the first session were replaced, not repeated.
  CHECK(count_lines(io_path(dir, "resumed/losses.csv")) == 21);
  a3_config_free(&cfg);
}

// Frozen parameters keep their initial values bit for bit (a3fta: only the
// attention blocks and their adapters move).
static void test_frozen(void) {
  a3_config cfg;
  const char *attn[] = {"strategy.name=a3fta", "train.steps=4"};
  if (load(&cfg, "attention", attn, 2)) return;
  tt_losses l;
  CHECK(tt_train(&cfg, MPI_COMM_WORLD, 0, 0, &l) == 0 && l.n == 4);
  a3_unet *init = NULL, *trained = NULL;
  a3_config stored;
  bool used_ema = true;
  CHECK(a3_strategy_build_model(&cfg, &init) == A3_OK);
  CHECK(a3_model_checkpoint_load(io_path(dir, "attention/checkpoint.h5"), false, &stored, &trained,
                                 &used_ema) == A3_OK);
  if (init && trained) {
    a3_unet_init_random(init, (uint64_t)cfg.train.seed);
    int frozen_changed = 0, trained_same = 0, n_trained = 0;
    for (int i = 0; i < a3_unet_param_count(init); i++) {
      const a3_param *p = a3_unet_param_at(init, i);
      const int same = !memcmp(a3_unet_params(init) + p->offset,
                               a3_unet_params(trained) + p->offset, p->numel * sizeof(float));
      if (a3_strategy_trains(A3_STRATEGY_A3FTA, p->name)) {
        n_trained++;
        trained_same += same;
      } else {
        frozen_changed += !same;
      }
    }
    CHECK_MSG(frozen_changed == 0, "%d frozen tensors changed", frozen_changed);
    // (the adapters' down-projections get zero gradients at step 1, since up is
    // zero, but move later; a few tensors may stay put: most must move)
    CHECK_MSG(trained_same < n_trained / 4, "%d of %d trained tensors unchanged", trained_same,
              n_trained);
    CHECK(!used_ema);
    a3_config_free(&stored);
  }
  a3_unet_free(init);
  a3_unet_free(trained);
  a3_config_free(&cfg);
}

// Step 0 of every strategy is the same model (added modules start as exact
// no-ops, base weights do not depend on them): the first loss is bitwise the
// same; later ones differ (different parameters train).
static void test_strategies_start_equal(const tt_losses *ref) {
  const char *names[] = {"strategy.name=attention", "strategy.name=a3fta", "strategy.name=adapter",
                         "strategy.name=lora", "strategy.name=bitfit"};
  for (int i = 0; i < 5; i++) {
    a3_config cfg;
    const char *extra[] = {names[i]};
    if (load(&cfg, "strategies", extra, 1)) continue;
    tt_losses l;
    CHECK(tt_train(&cfg, MPI_COMM_WORLD, 0, 2, &l) == 0 && l.n == 2);
    CHECK_MSG(l.loss[0] == ref->loss[0], "%s: first loss %.17g, full's %.17g", names[i], l.loss[0],
              ref->loss[0]);
    CHECK_MSG(l.loss[1] != ref->loss[1], "%s: second loss equals full's", names[i]);
    a3_config_free(&cfg);
  }
}

// 2 micro-batches of 2 = one batch of 4, up to fp32 summation order.
static void test_grad_accum(const tt_losses *ref) {
  a3_config cfg;
  const char *accum[] = {"train.grad_accum=2", "train.steps=20"};
  if (load(&cfg, "accum", accum, 2)) return;
  tt_losses l;
  CHECK(tt_train(&cfg, MPI_COMM_WORLD, 0, 3, &l) == 0 && l.n == 3);
  for (int i = 0; i < l.n; i++)
    CHECK_MSG(fabs(l.loss[i] - ref->loss[i]) <= 1e-5 * fabs(ref->loss[i]),
              "step %d: accumulated %.9g, one batch %.9g", i + 1, l.loss[i], ref->loss[i]);
  a3_config_free(&cfg);
}

// Fine-tuning starts from the reference's weights (a3fta: the adapters,
// absent from the full model's checkpoint, keep their own init): its first
// loss is near the reference's late ones, far below a fresh start's.
static void test_init_from_checkpoint(const tt_losses *ref) {
  a3_config cfg;
  char init[4200];
  snprintf(init, sizeof init, "model.init=%s", io_path(dir, "ref/checkpoint.h5"));
  const char *extra[] = {init, "strategy.name=a3fta", "train.steps=2"};
  if (load(&cfg, "finetune", extra, 3)) return;
  tt_losses l;
  CHECK(tt_train(&cfg, MPI_COMM_WORLD, 0, 0, &l) == 0 && l.n == 2);
  CHECK_MSG(l.loss[0] < mean(ref->loss, 3), "fine-tune starts at %.5f, fresh at %.5f", l.loss[0],
            mean(ref->loss, 3));
  a3_config_free(&cfg);
}

// A base with one NaN weight (model.init): the loss is NaN from step 1 and
// the run stops at the first loss it reads, A3_ERR_DIVERGED naming the step,
// its rows in losses.csv, no checkpoint of NaN weights written.
static void test_diverged(void) {
  a3_config cfg;
  a3_unet *m = NULL;
  bool used_ema = false;
  CHECK(a3_model_checkpoint_load(io_path(dir, "ref/checkpoint.h5"), false, &cfg, &m, &used_ema) ==
        A3_OK);
  if (!m) return;
  a3_unet_params(m)[a3_unet_param_at(m, 0)->offset] = NAN; // conv_in.weight[0]
  char *yaml = NULL;
  CHECK(a3_config_to_yaml(&cfg, &yaml, NULL) == A3_OK);
  const a3_model_ckpt st = {yaml, a3_config_hash(&cfg), 0, 0, NULL, NULL, NULL, "random"};
  const char *nan_base = io_path(dir, "nan-base.h5");
  CHECK(a3_model_checkpoint_write(nan_base, m, &st) == A3_OK);
  free(yaml);
  a3_unet_free(m);
  a3_config_free(&cfg);
  char init[4200];
  snprintf(init, sizeof init, "model.init=%s", nan_base);
  const char *extra[] = {init, "train.log_every=3", "train.checkpoint_every=2"};
  if (load(&cfg, "diverged", extra, 3)) return;
  const a3_train_options opt = {0};
  a3_train_result res;
  CHECK(a3_train(&cfg, MPI_COMM_WORLD, &opt, &res) == A3_ERR_DIVERGED);
  CHECK_MSG(strstr(a3_error_message(), "the loss is nan at step 1 (output.dir ") &&
                strstr(a3_error_message(), "Lower train.lr"),
            "%s", a3_error_message());
  CHECK(count_lines(io_path(dir, "diverged/losses.csv")) == 3); // header + steps 1, 2
  CHECK(!io_exists(io_path(dir, "diverged/checkpoint.h5")));
  a3_config_free(&cfg);
}

// Configs the trainer refuses before doing anything.
static void test_refusals(void) {
  // batch_size not a multiple of grad_accum: the config itself is refused.
  a3_config cfg;
  const char *accum[] = {"train.grad_accum=3"};
  CHECK(tt_config(&cfg, data, io_path(dir, "refused"), accum, 1) != 0);
  CHECK_MSG(strstr(a3_error_message(), "not a multiple of train.grad_accum"), "%s",
            a3_error_message());
  const a3_sample_request req = {.num = 1,
                                 .sampler = A3_SAMPLER_DDIM,
                                 .steps = 2,
                                 .eta = 0.0,
                                 .seed = 0,
                                 .use_ema = true,
                                 .max_batch = 1,
                                 .out_h5 = NULL,
                                 .out_png = NULL};
  CHECK(a3_sample_checkpoint(MPI_COMM_WORLD, io_path(dir, "none.h5"), &req) == A3_ERR_IO);
}

static void test_sample(void) {
  const char *h5 = io_path(dir, "samples.h5"), *png = io_path(dir, "samples.png");
  const a3_sample_request req = {.num = 5,
                                 .sampler = A3_SAMPLER_DDIM,
                                 .steps = 4,
                                 .eta = 0.0,
                                 .seed = 3,
                                 .use_ema = true,
                                 .max_batch = 2,
                                 .out_h5 = h5,
                                 .out_png = png};
  CHECK(a3_sample_checkpoint(MPI_COMM_WORLD, io_path(dir, "ref/checkpoint.h5"), &req) == A3_OK);
  char format[64] = "";
  CHECK(a3_file_format(h5, format, sizeof format) == A3_OK && !strcmp(format, "a3fta-samples"));
  CHECK(io_exists(png));
  const a3_sample_request ddpm = {.num = 3,
                                  .sampler = A3_SAMPLER_DDPM,
                                  .steps = 3,
                                  .eta = 0.0,
                                  .seed = 3,
                                  .use_ema = false,
                                  .max_batch = 16,
                                  .out_h5 = NULL,
                                  .out_png = png};
  CHECK(a3_sample_checkpoint(MPI_COMM_WORLD, io_path(dir, "ref/checkpoint.h5"), &ddpm) == A3_OK);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  a3_log_set_level(A3_LOG_WARN);
  dir = io_make_temp_dir("train");
  CHECK(dir != NULL);
  if (dir) {
    snprintf(data, sizeof data, "%s", io_path(dir, "data.h5"));
    CHECK(tt_make_dataset(data) == 0);
    tt_losses ref;
    test_decreases_and_deterministic(&ref);
    if (ref.n == 20) {
      test_resume(&ref);
      test_grad_accum(&ref);
      test_strategies_start_equal(&ref);
      test_init_from_checkpoint(&ref);
      test_diverged();
      test_sample();
    }
    test_frozen();
    test_refusals();
    io_remove_tree(dir);
    free(dir);
  }
  MPI_Finalize();
  return TEST_DONE("test_trainer_train");
}
