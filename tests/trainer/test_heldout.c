// The held-out denoising loss (eval.heldout_*) and loss.png: a fixed
// model's held-out loss is the same twice and leaves the weights alone;
// training with it on gives bit-identical losses and weights to training
// with it off; losses.csv gets the heldout column at the due steps (and the
// result its last value); a run stopped and resumed writes the same
// losses.csv as one that never stopped and a loss.png; an older losses.csv
// without the column is upgraded on resume; a dataset without a test split
// is a config error.
#include "a3fta/plot.h"
#include "a3fta/trainer.h"
#include "heldout_test_util.h"
#include "io/io_test_util.h"
#include "test_util.h"
#include "trainer_test_util.h"

#include <math.h>
#include <mpi.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;
static char data[4200];

static const char *const heldout_on[] = {"eval.heldout_every=4", "eval.heldout_images=5",
                                         "eval.heldout_timesteps=3"};

static int config(a3_config *cfg, const char *sub, const char *const *extra, int n_extra) {
  const char *all[8];
  for (int i = 0; i < 3; i++) all[i] = heldout_on[i];
  for (int i = 0; i < n_extra && i < 5; i++) all[3 + i] = extra[i];
  const int rc = tt_config(cfg, data, io_path(dir, sub), all, 3 + n_extra);
  CHECK(rc == 0);
  return rc;
}

static char *slurp(const char *path) {
  char *text = NULL;
  if (a3_read_file(path, 1 << 24, &text, NULL) != A3_OK) {
    a3_error_clear();
    return NULL;
  }
  return text;
}

static void test_fixed_model(void) {
  a3_config cfg;
  if (config(&cfg, "fixed", NULL, 0)) return;
  a3_trainer *t = NULL;
  a3_heldout_set h = {0};
  CHECK(a3_trainer_create(&cfg, MPI_COMM_WORLD, &t) == A3_OK);
  CHECK(a3_heldout_load(MPI_COMM_WORLD, &cfg, &h) == A3_OK);
  if (t && h.x0) {
    // 5 test images of class 1 (of 10), 3 timesteps: midpoints of 1000 / 3.
    CHECK(h.n_images == 5 && h.n_timesteps == 3 && h.per_sample == 16 * 16);
    CHECK(h.t[0] == 166 && h.t[1] == 500 && h.t[2] == 833);
    a3_unet *m = a3_trainer_model(t);
    const size_t n = a3_unet_num_floats(m);
    float *before = malloc(n * sizeof(float));
    if (before) memcpy(before, a3_unet_params(m), n * sizeof(float));
    double a = NAN, b = NAN;
    CHECK(a3_trainer_heldout_loss(t, MPI_COMM_WORLD, &h, &a) == A3_OK);
    CHECK(a3_trainer_heldout_loss(t, MPI_COMM_WORLD, &h, &b) == A3_OK);
    CHECK_MSG(isfinite(a) && a > 0.1 && a < 10.0, "held-out loss of the random model %g", a);
    CHECK_MSG(!memcmp(&a, &b, sizeof a), "twice: %.17g and %.17g", a, b);
    CHECK(before && !memcmp(before, a3_unet_params(m), n * sizeof(float)));
    free(before);
    fprintf(stderr, "held-out loss of the initial model: %.9g\n", a);
  }
  a3_heldout_free(&h);
  a3_trainer_free(t);
  a3_config_free(&cfg);
}

static int png_size(const char *path, int *w, int *h) {
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&img, path)) return 1;
  *w = (int)img.width;
  *h = (int)img.height;
  png_image_free(&img);
  return 0;
}

// Row `step` of losses.csv: its heldout field (NULL if the row is missing).
static const char *heldout_field(const char *csv, int step, char *buf, size_t cap) {
  char head[32];
  snprintf(head, sizeof head, "\n%d,", step);
  const char *row = strstr(csv, head);
  if (!row) return NULL;
  const char *end = strchr(row + 1, '\n'), *p = row + 1;
  for (int commas = 0; commas < 3 && p < end; p++) commas += *p == ',';
  snprintf(buf, cap, "%.*s", (int)(end - p), p);
  return buf;
}

static void test_on_off(void) {
  a3_config off, on;
  const char *no[] = {"eval.heldout_every=0"};
  if (config(&off, "off", no, 1) || config(&on, "on", NULL, 0)) return;
  tt_losses a, b;
  CHECK(tt_train(&off, MPI_COMM_WORLD, 0, 0, &a) == 0);
  const a3_train_options opt = {false, 0, tt_record, &b};
  a3_train_result res;
  memset(&b, 0, sizeof b);
  CHECK(a3_train(&on, MPI_COMM_WORLD, &opt, &res) == A3_OK);
  CHECK(a.n == 20 && b.n == 20);
  CHECK_MSG(!memcmp(a.loss, b.loss, sizeof(double) * 20), "step 1: %.17g vs %.17g", a.loss[0],
            b.loss[0]);
  // The same weights at the end.
  a3_config ca, cb;
  a3_unet *ma = NULL, *mb = NULL;
  bool ea = false, eb = false;
  CHECK(a3_model_checkpoint_load(io_path(dir, "off/checkpoint.h5"), false, &ca, &ma, &ea) == A3_OK);
  CHECK(a3_model_checkpoint_load(io_path(dir, "on/checkpoint.h5"), false, &cb, &mb, &eb) == A3_OK);
  if (ma && mb)
    CHECK(a3_unet_num_floats(ma) == a3_unet_num_floats(mb) &&
          !memcmp(a3_unet_params(ma), a3_unet_params(mb), a3_unet_num_floats(ma) * sizeof(float)));
  a3_unet_free(ma);
  a3_unet_free(mb);
  a3_config_free(&ca);
  a3_config_free(&cb);

  // losses.csv: the column, filled at steps 4, 8, ..., 20.
  char *csv = slurp(io_path(dir, "on/losses.csv"));
  CHECK(csv && !strncmp(csv, "step,loss,lr,heldout\n", 21));
  char buf[64];
  double last = NAN;
  for (int step = 1; csv && step <= 20; step++) {
    const char *f = heldout_field(csv, step, buf, sizeof buf);
    CHECK_MSG(f != NULL, "no row %d", step);
    if (!f) continue;
    if (step % 4 == 0) {
      char *end = NULL;
      last = strtod(f, &end);
      CHECK_MSG(end != f && *end == '\0' && isfinite(last) && last > 0, "step %d: '%s'", step, f);
    } else {
      CHECK_MSG(f[0] == '\0', "step %d: '%s' where none was due", step, f);
    }
  }
  CHECK_MSG(fabs(res.final_heldout_loss - last) <= 1e-8 * fabs(last), "result %.17g, csv %.17g",
            res.final_heldout_loss, last);
  free(csv);
  // Without held-out losses the column is there but empty, and the result NaN.
  char *plain = slurp(io_path(dir, "off/losses.csv"));
  CHECK(plain && !strncmp(plain, "step,loss,lr,heldout\n", 21) &&
        heldout_field(plain, 20, buf, sizeof buf) && buf[0] == '\0');
  free(plain);
  int w = 0, h = 0;
  CHECK(png_size(io_path(dir, "on/loss.png"), &w, &h) == 0 && w == A3_PLOT_WIDTH &&
        h == A3_PLOT_HEIGHT);
  CHECK(png_size(io_path(dir, "off/loss.png"), &w, &h) == 0);
  // The sweep's view: a run that never computed one has NaN.
  const a3_train_options quiet = {true, 0, NULL, NULL};
  CHECK(a3_train(&off, MPI_COMM_WORLD, &quiet, &res) == A3_OK && isnan(res.final_heldout_loss));
  // Resumed at its end: nothing runs, the value comes from losses.csv.
  CHECK(a3_train(&on, MPI_COMM_WORLD, &quiet, &res) == A3_OK && res.final_heldout_loss == last);
  a3_config_free(&off);
  a3_config_free(&on);
}

// Stop after 6 (checkpoint at 5), resume to the end: the same losses.csv as
// an uninterrupted run, and the same loss.png (both folders end in "run",
// the title's name), so the picture holds the whole history.
static void test_resume(void) {
  a3_config cfg, ref;
  const char *every5[] = {"train.checkpoint_every=5"};
  if (config(&cfg, "resumed/run", every5, 1) || config(&ref, "whole/run", every5, 1)) return;
  tt_losses a, b, c;
  CHECK(tt_train(&ref, MPI_COMM_WORLD, 0, 0, &c) == 0 && c.n == 20);
  CHECK(tt_train(&cfg, MPI_COMM_WORLD, 0, 6, &a) == 0 && a.n == 6);
  CHECK(io_exists(io_path(dir, "resumed/run/loss.png")));
  CHECK(tt_train(&cfg, MPI_COMM_WORLD, 1, 0, &b) == 0 && b.n == 15);
  char *x = slurp(io_path(dir, "resumed/run/losses.csv"));
  char *y = slurp(io_path(dir, "whole/run/losses.csv")), *z = slurp(io_path(dir, "on/losses.csv"));
  CHECK_MSG(x && y && !strcmp(x, y), "resumed losses.csv differs:\n%s\nuninterrupted:\n%s", x, y);
  CHECK(y && z && !strcmp(y, z)); // checkpoint_every changes nothing
  free(x);
  free(y);
  free(z);
  size_t lx = 0, ly = 0;
  x = y = NULL;
  CHECK(a3_read_file(io_path(dir, "resumed/run/loss.png"), 1 << 24, &x, &lx) == A3_OK);
  CHECK(a3_read_file(io_path(dir, "whole/run/loss.png"), 1 << 24, &y, &ly) == A3_OK);
  CHECK_MSG(x && y && lx == ly && !memcmp(x, y, lx), "loss.png: %zu and %zu bytes", lx, ly);
  free(x);
  free(y);
  a3_config_free(&cfg);
  a3_config_free(&ref);
}

// A losses.csv of an older a3fta ("step,loss,lr") gets the column on resume.
static void test_old_csv(void) {
  a3_config cfg;
  const char *every5[] = {"train.checkpoint_every=5"};
  if (config(&cfg, "old", every5, 1)) return;
  tt_losses a, b;
  CHECK(tt_train(&cfg, MPI_COMM_WORLD, 0, 6, &a) == 0);
  char *csv = slurp(io_path(dir, "old/losses.csv"));
  if (!csv) return;
  // Rewrite it as the old format: drop the header's and every row's last field.
  char *old = malloc(strlen(csv) + 1);
  size_t o = 0;
  for (char *line = csv; old && *line;) {
    char *nl = strchr(line, '\n');
    *nl = '\0';
    char *last = strrchr(line, ',');
    o += (size_t)sprintf(old + o, "%.*s\n", (int)(last - line), line);
    line = nl + 1;
  }
  CHECK(old && !strncmp(old, "step,loss,lr\n1,", 15));
  CHECK(old && io_write_file(io_path(dir, "old/losses.csv"), old, o) == 0);
  free(old);
  free(csv);
  CHECK(tt_train(&cfg, MPI_COMM_WORLD, 1, 8, &b) == 0 && b.n == 3);
  csv = slurp(io_path(dir, "old/losses.csv"));
  char buf[64];
  CHECK(csv && !strncmp(csv, "step,loss,lr,heldout\n1,", 23));
  CHECK(csv && heldout_field(csv, 4, buf, sizeof buf) && buf[0] == '\0'); // lost with the format
  CHECK(csv && heldout_field(csv, 8, buf, sizeof buf) && buf[0] != '\0'); // computed after resume
  CHECK(csv && !heldout_field(csv, 9, buf, sizeof buf));
  free(csv);
  a3_config_free(&cfg);
}

static void test_no_test_split(void) {
  char plain[4200];
  snprintf(plain, sizeof plain, "%s", io_path(dir, "train-only.h5"));
  CHECK(tt_make_dataset(plain) == 0);
  a3_config cfg;
  if (tt_config(&cfg, plain, io_path(dir, "nosplit"), heldout_on, 3)) return;
  const a3_train_options opt = {0};
  const a3_status s = a3_train(&cfg, MPI_COMM_WORLD, &opt, NULL);
  CHECK_MSG(s == A3_ERR_CONFIG && strstr(a3_error_message(), "eval.heldout_every"), "%s",
            a3_error_message());
  a3_error_clear();
  a3_config_free(&cfg);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  a3_log_set_level(A3_LOG_WARN);
  dir = io_make_temp_dir("heldout");
  CHECK(dir != NULL);
  if (dir) {
    snprintf(data, sizeof data, "%s", io_path(dir, "data.h5"));
    CHECK(ht_make_dataset(data) == 0);
    test_fixed_model();
    test_on_off();
    test_resume();
    test_old_csv();
    test_no_test_split();
    if (!test_failures)
      io_remove_tree(dir);
    else
      fprintf(stderr, "files kept in %s\n", dir);
    free(dir);
  }
  MPI_Finalize();
  return TEST_DONE("test_trainer_heldout");
}
