// A fake but real-computing run function for sweep tests, and helpers to
// read a results file back with serial HDF5. Header-only (static functions):
// each test program includes it once.
//
// The fake run: every rank of the group computes its shard of an integer sum
// per training step (so the group communicator is really used, and the
// result does not depend on how many ranks share the work), the losses are
// a pure function of (train.lr, train.seed, train.steps, strategy.name), it
// sleeps a few milliseconds, fills the loss curve, two metrics, the peak
// memory (1e6 + group rank: the engine must take the group's maximum) and
// two sample images; the group leader appends "point <i>" to <dir>/log.<rank>.
#ifndef A3FTA_TESTS_SWEEP_FAKE_H
#define A3FTA_TESTS_SWEEP_FAKE_H
#define _XOPEN_SOURCE 700 // nftw, mkdtemp

#include "a3fta/config.h"
#include "a3fta/sweep.h"
#include "test_util.h"

#include <errno.h>
#include <ftw.h>
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// Helpers may go unused in a test program.
#define FAKE_FN static __attribute__((unused))

enum { FAKE_TERMS = 1000, FAKE_MAX_STEPS = 400, FAKE_SAMPLES = 2 };

typedef struct {
  char dir[1100]; // per-rank logs go here
  int world_rank;
  int64_t fail_point;    // this point fails on the group's last rank (-1: none)
  int64_t diverge_point; // this point diverges (A3_ERR_DIVERGED) there (0: none)
  int stop_after;        // > 0: world rank 0 requests a stop after running this many points
  int ran;               // points this rank ran (as any group rank)
  int sleep_ms;          // per point (0: 5 to 15 ms)
} fake_ctx;

FAKE_FN int64_t fake_lr_code(const a3_config *c) { return (int64_t)llround(c->train.lr * 1e6); }

// Losses of steps 1..steps; comm NULL = the whole sum on this rank.
FAKE_FN void fake_losses(const a3_config *c, MPI_Comm comm, double *loss) {
  int rank = 0, size = 1;
  if (comm != MPI_COMM_NULL) {
    MPI_Comm_rank(comm, &rank);
    MPI_Comm_size(comm, &size);
  }
  const int64_t lo = (int64_t)FAKE_TERMS * rank / size,
                hi = (int64_t)FAKE_TERMS * (rank + 1) / size;
  const int64_t seed = c->train.seed, code = fake_lr_code(c), strat = (int64_t)c->strategy.name;
  for (int64_t s = 1; s <= c->train.steps && s <= FAKE_MAX_STEPS; s++) {
    int64_t part = 0, total = 0;
    for (int64_t j = lo; j < hi; j++) part += (j * j * (seed + 1) + s * code + strat * 7) % 1000;
    if (comm != MPI_COMM_NULL)
      MPI_Allreduce(&part, &total, 1, MPI_INT64_T, MPI_SUM, comm);
    else
      total = part;
    loss[s - 1] = (double)total / 1e6 + 1.0 / (double)(s + seed + 1);
  }
}

FAKE_FN uint8_t fake_pixel(const a3_config *c, int k, int64_t p) {
  return (uint8_t)((fake_lr_code(c) + c->train.seed * 31 + k * 7 + p) & 255);
}

FAKE_FN void fake_expected(const a3_config *c, a3_run_result *r) {
  double loss[FAKE_MAX_STEPS];
  fake_losses(c, MPI_COMM_NULL, loss);
  const int64_t steps = c->train.steps < FAKE_MAX_STEPS ? c->train.steps : FAKE_MAX_STEPS;
  a3_run_result_set_curve(r, loss, steps);
  r->final_loss = loss[steps - 1];
  r->compute_s = 0.001 * (double)steps;
  r->metrics[A3_RESULT_FID] = 2.0 * r->final_loss;
  r->metrics[A3_RESULT_KID_MEAN] = (double)c->train.seed;
}

FAKE_FN a3_status fake_run(const a3_config *c, MPI_Comm group, a3_run_result *r, void *vctx) {
  fake_ctx *ctx = vctx;
  int grank = 0, gsize = 1;
  MPI_Comm_rank(group, &grank);
  MPI_Comm_size(group, &gsize);
  double loss[FAKE_MAX_STEPS];
  fake_losses(c, group, loss);
  const int64_t steps = c->train.steps < FAKE_MAX_STEPS ? c->train.steps : FAKE_MAX_STEPS;
  a3_run_result_set_curve(r, loss, steps);
  r->final_loss = loss[steps - 1];
  r->compute_s = 0.001 * (double)steps;
  r->peak_mem_bytes = 1000000 + grank;
  r->metrics[A3_RESULT_FID] = 2.0 * r->final_loss;
  r->metrics[A3_RESULT_KID_MEAN] = (double)c->train.seed;
  const int64_t per_image = (int64_t)r->channels * r->height * r->width;
  r->n_samples = r->samples_cap < FAKE_SAMPLES ? r->samples_cap : FAKE_SAMPLES;
  for (int k = 0; k < r->n_samples; k++)
    for (int64_t p = 0; p < per_image; p++) r->samples[k * per_image + p] = fake_pixel(c, k, p);
  const long ms = ctx->sleep_ms > 0 ? ctx->sleep_ms : 5 + (long)(r->point % 3) * 5;
  nanosleep(&(struct timespec){.tv_sec = ms / 1000, .tv_nsec = ms % 1000 * 1000000L}, NULL);
  if (grank == 0) {
    char path[1200];
    snprintf(path, sizeof path, "%s/log.%d", ctx->dir, ctx->world_rank);
    FILE *f = fopen(path, "a");
    if (f) {
      fprintf(f, "point %lld\n", (long long)r->point);
      fclose(f);
    }
  }
  ctx->ran++;
  if (ctx->stop_after > 0 && ctx->world_rank == 0 && ctx->ran == ctx->stop_after)
    a3_sweep_request_stop();
  if (r->point == ctx->fail_point && grank == gsize - 1)
    return A3_FAIL(A3_ERR_INPUT, "fake failure of point %lld", (long long)r->point);
  if (r->point == ctx->diverge_point && r->point > 0 && grank == gsize - 1)
    return A3_FAIL(A3_ERR_DIVERGED, "fake loss nan at step 3 of point %lld", (long long)r->point);
  return A3_OK;
}

// ---------------------------------------------------------------- logs
// counts[i] += times point i appears in the logs of dir (all ranks).
FAKE_FN void read_logs(const char *dir, int world_size, int64_t n, int *counts) {
  for (int r = 0; r < world_size; r++) {
    char path[600], line[128];
    snprintf(path, sizeof path, "%s/log.%d", dir, r);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    while (fgets(line, sizeof line, f)) {
      long long i = -1;
      if (sscanf(line, "point %lld", &i) == 1 && i >= 0 && i < n) counts[i]++;
    }
    fclose(f);
  }
}

FAKE_FN void remove_logs(const char *dir, int world_size) {
  for (int r = 0; r < world_size; r++) {
    char path[600];
    snprintf(path, sizeof path, "%s/log.%d", dir, r);
    unlink(path);
  }
}

// ---------------------------------------------------------------- files
FAKE_FN int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb, (void)flag, (void)ftw;
  return remove(path);
}
// A3FTA_TEST_KEEP=1 keeps the test folders (to look at the files).
FAKE_FN void remove_tree(const char *dir) {
  if (!getenv("A3FTA_TEST_KEEP")) nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

// A temporary directory named on rank 0 and shared with all ranks.
FAKE_FN void make_temp_dir(MPI_Comm comm, const char *tag, char *out, size_t size) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  char buf[512] = "";
  if (rank == 0) {
    snprintf(buf, sizeof buf, "/tmp/a3fta-%s-XXXXXX", tag);
    if (!mkdtemp(buf)) buf[0] = '\0';
  }
  MPI_Bcast(buf, sizeof buf, MPI_CHAR, 0, comm);
  snprintf(out, size, "%s", buf);
}

// Whole dataset `name` read as `type` into buf (serial HDF5); 0 on failure.
FAKE_FN int h5_read(hid_t f, const char *name, hid_t type, void *buf) {
  hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
  if (ds < 0) return 0;
  herr_t rc = H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
  H5Dclose(ds);
  return rc >= 0;
}

// A fixed-length string dataset of n entries, each copied into out[i] (cap bytes).
FAKE_FN int h5_read_strings(hid_t f, const char *name, int64_t n, char *out, size_t cap) {
  hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
  if (ds < 0) return 0;
  hid_t type = H5Dget_type(ds);
  const size_t len = H5Tget_size(type);
  char *raw = calloc((size_t)n, len);
  herr_t rc = raw ? H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) : -1;
  for (int64_t i = 0; rc >= 0 && i < n; i++) {
    size_t k = 0;
    for (; k < len && k + 1 < cap && raw[(size_t)i * len + k]; k++)
      out[(size_t)i * cap + k] = raw[(size_t)i * len + k];
    out[(size_t)i * cap + k] = '\0';
  }
  free(raw);
  H5Tclose(type);
  H5Dclose(ds);
  return rc >= 0;
}

// A config from YAML text (dir substituted for @DIR@); aborts the test on failure.
FAKE_FN a3_status load_config(const char *yaml, const char *dir, a3_config *cfg) {
  char text[8192];
  const char *at = strstr(yaml, "@DIR@");
  if (at)
    snprintf(text, sizeof text, "%.*s%s%s", (int)(at - yaml), yaml, dir, at + 5);
  else
    snprintf(text, sizeof text, "%s", yaml);
  return a3_config_load_string("test.yaml", text, strlen(text), NULL, 0, cfg);
}

FAKE_FN int same_double(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

// Sum of failures over ranks: the exit code of an MPI test.
FAKE_FN int mpi_test_done(const char *name) {
  int mine = test_failures, all = 0;
  MPI_Allreduce(&mine, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) fprintf(stderr, "%s: %d failures over all ranks\n", name, all);
  return all ? 1 : 0;
}

#endif
