// export_helper: the C side of the export test (tests/export/export_test.sh), in one
// process (each start of an ASan build costs seconds):
//   export_helper run DIR SPEC...
// makes the trainer tests' tiny dataset (DIR/data.h5), pretrains the tiny U-Net of
// trainer_test_util.h on class 0 (strategy full, random init: DIR/base), exports it
// (--no-ema: DIR/base.safetensors) and runs it on fixed inputs (DIR/base.fwd.h5); then for
// each SPEC "NAME:STRATEGY[:raw]|K=V K=V ..." fine-tunes from DIR/base/checkpoint.h5 on
// class 1 with the overrides (DIR/NAME), exports (a3_export_deltas; :raw = --no-ema:
// DIR/NAME.safetensors) and runs the fine-tuned model (EMA weights unless :raw, as the
// export takes them: DIR/NAME.fwd.h5). A forward file holds /x (2, C, S, S),
// /timesteps (2) and /out (2, C, S, S), float32.
#include "a3fta/export.h"
#include "io/io_test_util.h"
#include "trainer_test_util.h"

#include <hdf5.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { BATCH = 2 };

static int write_dataset(hid_t file, const char *name, int rank, const hsize_t *dims,
                         const float *data) {
  hid_t space = H5Screate_simple(rank, dims, NULL);
  hid_t d = H5Dcreate2(file, name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  const int ok = d >= 0 && H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) >= 0;
  if (d >= 0) H5Dclose(d);
  H5Sclose(space);
  return ok ? 0 : 1;
}

static int forward(const char *ckpt, const char *out_path, bool use_ema) {
  a3_config cfg;
  a3_unet *m = NULL;
  bool used_ema = false;
  a3_status s = a3_model_checkpoint_load(ckpt, use_ema, &cfg, &m, &used_ema);
  if (s != A3_OK) {
    a3_log_error_status(s);
    return 1;
  }
  const a3_arch_config *a = &cfg.model.arch;
  const size_t S = (size_t)a->sample_size, cin = (size_t)a->in_channels,
               cout = (size_t)a->out_channels;
  const size_t nx = BATCH * cin * S * S, nout = BATCH * cout * S * S;
  float *x = malloc(nx * sizeof *x), *out = malloc(nout * sizeof *out);
  const float t[BATCH] = {17.0f, 640.0f};
  int rc = !x || !out;
  for (size_t i = 0; !rc && i < nx; i++) // U(-1.5, 1.5): noisy images
    x[i] = (float)((double)(a3_rng_u64(11, 5, i) >> 11) * 0x1.0p-53 * 3.0 - 1.5);
  if (!rc) {
    s = a3_unet_plan(m, BATCH);
    if (s == A3_OK) s = a3_unet_forward(m, x, t, out);
    if (s != A3_OK) a3_log_error_status(s);
    rc = s != A3_OK;
  }
  if (!rc) {
    hid_t f = H5Fcreate(out_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    const hsize_t dx[4] = {BATCH, cin, S, S}, dt[1] = {BATCH}, dout[4] = {BATCH, cout, S, S};
    rc = f < 0 || write_dataset(f, "x", 4, dx, x) || write_dataset(f, "timesteps", 1, dt, t) ||
         write_dataset(f, "out", 4, dout, out);
    if (f >= 0 && H5Fclose(f) < 0) rc = 1;
    if (rc) fprintf(stderr, "export_helper: cannot write %s\n", out_path);
  }
  if (!rc) printf("forward: %s (%s weights) -> %s\n", ckpt, used_ema ? "EMA" : "raw", out_path);
  free(x);
  free(out);
  a3_unet_free(m);
  a3_config_free(&cfg);
  return rc;
}

static int train(const char *data, const char *dir, const char *const *overrides, int n) {
  a3_config cfg;
  if (tt_config(&cfg, data, dir, overrides, n)) return 1;
  tt_losses losses;
  const int rc = tt_train(&cfg, MPI_COMM_WORLD, 0, 0, &losses);
  if (!rc)
    printf("train: %s, %d steps, loss %.4f -> %.4f\n", dir, losses.n, losses.loss[0],
           losses.loss[losses.n - 1]);
  a3_config_free(&cfg);
  return rc;
}

static int export_deltas(const char *ckpt, const char *out, bool use_ema) {
  a3_export_report rep;
  const a3_export_options opt = {.use_ema = use_ema};
  const a3_status s = a3_export_deltas(ckpt, out, &opt, &rep);
  if (s != A3_OK) {
    a3_log_error_status(s);
    return 1;
  }
  printf("export: %s, %d tensors, %s weights, base %s\n", out, rep.tensors,
         rep.used_ema ? "EMA" : "raw", rep.base_model_hash);
  return 0;
}

enum { MAX_OVERRIDES = 16, PATH_CAP = 4200 };

// One fine-tune: "NAME:STRATEGY[:raw]|K=V K=V ...".
static int run_case(const char *dir, const char *spec) {
  char buf[2048], init[PATH_CAP], stem[2048], ckpt[PATH_CAP], st[PATH_CAP], fwd[PATH_CAP];
  snprintf(buf, sizeof buf, "%s", spec);
  char *bar = strchr(buf, '|'), *colon = strchr(buf, ':');
  if (!bar || !colon || colon > bar) {
    fprintf(stderr, "export_helper: '%s' is not NAME:STRATEGY[:raw]|K=V ...\n", spec);
    return 2;
  }
  *bar = '\0';
  const bool raw = strstr(buf, ":raw") != NULL;
  *colon = '\0'; // buf: the name
  const char *overrides[MAX_OVERRIDES + 3];
  int n = 0;
  snprintf(init, sizeof init, "model.init=%s", io_path(dir, "base/checkpoint.h5"));
  overrides[n++] = init;
  overrides[n++] = "data.classes=[1]";
  overrides[n++] = "train.steps=4";
  for (char *tok = strtok(bar + 1, " "); tok && n < MAX_OVERRIDES + 3; tok = strtok(NULL, " "))
    overrides[n++] = tok;
  snprintf(stem, sizeof stem, "%s", io_path(dir, buf)); // DIR/NAME
  snprintf(ckpt, sizeof ckpt, "%s/checkpoint.h5", stem);
  snprintf(st, sizeof st, "%s.safetensors", stem);
  snprintf(fwd, sizeof fwd, "%s.fwd.h5", stem);
  return train(io_path(dir, "data.h5"), stem, overrides, n) || export_deltas(ckpt, st, !raw) ||
         forward(ckpt, fwd, !raw);
}

static int run_all(const char *dir, char **specs, int n) {
  char data[PATH_CAP], base[PATH_CAP], ckpt[PATH_CAP], st[PATH_CAP], fwd[PATH_CAP];
  snprintf(data, sizeof data, "%s", io_path(dir, "data.h5"));
  snprintf(base, sizeof base, "%s", io_path(dir, "base"));
  snprintf(ckpt, sizeof ckpt, "%s", io_path(dir, "base/checkpoint.h5"));
  snprintf(st, sizeof st, "%s", io_path(dir, "base.safetensors"));
  snprintf(fwd, sizeof fwd, "%s", io_path(dir, "base.fwd.h5"));
  const char *pretrain[] = {"data.classes=[0]", "train.steps=6"};
  if (tt_make_dataset(data) || train(data, base, pretrain, 2) || export_deltas(ckpt, st, false) ||
      forward(ckpt, fwd, false))
    return 1;
  for (int i = 0; i < n; i++)
    if (run_case(dir, specs[i])) return 1;
  return 0;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  a3_log_set_level(A3_LOG_WARN);
  int rc = 2;
  if (argc >= 3 && !strcmp(argv[1], "run"))
    rc = run_all(argv[2], argv + 3, argc - 3);
  else
    fprintf(stderr, "usage: export_helper run DIR [NAME:STRATEGY[:raw]|K=V ...]...\n");
  MPI_Finalize();
  return rc;
}
