// a3_train: the whole run around the trainer — output folder, resume, the
// loop with its log lines, losses.csv and periodic checkpoints.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/strategy.h"
#include "a3fta/trainer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum { PATH_CAP = A3_CONFIG_STR_MAX + 32 };

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// mkdir -p
static a3_status make_dirs(const char *dir) {
  char path[PATH_CAP];
  snprintf(path, sizeof path, "%s", dir);
  for (char *p = path + 1;; p++) {
    const char c = *p;
    if (c != '/' && c != '\0') continue;
    *p = '\0';
    if (mkdir(path, 0777) != 0 && errno != EEXIST)
      return A3_FAIL(A3_ERR_IO, "output.dir: cannot create %s: %s", path, strerror(errno));
    *p = c;
    if (!c) break;
  }
  return A3_OK;
}

static a3_status write_text(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (!f) return A3_FAIL(A3_ERR_IO, "cannot write %s: %s", path, strerror(errno));
  const size_t len = strlen(text);
  const int ok = fwrite(text, 1, len, f) == len;
  if (fclose(f) != 0 || !ok) return A3_FAIL(A3_ERR_IO, "cannot write %s (disk full?)", path);
  return A3_OK;
}

// Rank 0's status, on every rank.
static a3_status agree(MPI_Comm comm, int rank, a3_status mine) {
  int code = (int)mine;
  MPI_Bcast(&code, 1, MPI_INT, 0, comm);
  if (rank != 0 && code != A3_OK)
    return A3_FAIL((a3_status)code, "rank 0 failed to prepare the output folder");
  return mine;
}

static a3_status prepare_dir(const a3_config *cfg) {
  A3_TRY(make_dirs(cfg->output.dir));
  char path[PATH_CAP], *yaml = NULL;
  snprintf(path, sizeof path, "%s/config.yaml", cfg->output.dir);
  A3_TRY(a3_config_to_yaml(cfg, &yaml, NULL));
  a3_status s = write_text(path, yaml);
  free(yaml);
  return s;
}

// ---------------------------------------------------------------- losses.csv

// Keeps the header and the rows of steps <= last (a resumed run rewrites the rest).
static a3_status truncate_csv(const char *path, int64_t last) {
  char *text = NULL;
  size_t len = 0;
  if (access(path, F_OK) != 0) return A3_OK;
  A3_TRY(a3_read_file(path, (size_t)1 << 30, &text, &len));
  size_t keep = 0;
  for (char *line = text; line < text + len;) {
    char *nl = memchr(line, '\n', (size_t)(text + len - line));
    char *end = nl ? nl + 1 : text + len;
    char *after = NULL;
    const long long step = strtoll(line, &after, 10);
    if (after != line && step > last) break;
    keep = (size_t)(end - text);
    line = end;
  }
  text[keep] = '\0';
  a3_status s = write_text(path, text);
  free(text);
  return s;
}

static a3_status open_csv(const char *dir, int64_t resumed_step, FILE **out) {
  char path[PATH_CAP];
  snprintf(path, sizeof path, "%s/losses.csv", dir);
  if (resumed_step > 0) A3_TRY(truncate_csv(path, resumed_step));
  FILE *f = fopen(path, resumed_step > 0 ? "a" : "w");
  if (!f) return A3_FAIL(A3_ERR_IO, "cannot write %s: %s", path, strerror(errno));
  if (resumed_step == 0 || ftell(f) == 0) fputs("step,loss,lr\n", f);
  *out = f;
  return A3_OK;
}

// ---------------------------------------------------------------- the loop

typedef struct {
  const a3_config *cfg;
  MPI_Comm comm;
  int rank;
  FILE *csv;            // rank 0
  char ckpt[PATH_CAP];  // output.dir/checkpoint.h5
  double t0, t_log;     // loop start, last log line
  int64_t first, s_log; // steps at the loop start and at the last log line
  double last_loss;
} run_state;

static void format_eta(double seconds, char *buf, size_t size) {
  const long s = seconds > 0 && seconds < 1e9 ? (long)(seconds + 0.5) : 0;
  if (s >= 3600)
    snprintf(buf, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
  else if (s >= 60)
    snprintf(buf, size, "%ldm%02lds", s / 60, s % 60);
  else
    snprintf(buf, size, "%lds", s);
}

static void log_step(run_state *r, int64_t step, double loss, double lr) {
  const a3_train_config *tc = &r->cfg->train;
  if (r->rank != 0 || (step % tc->log_every != 0 && step != tc->steps)) return;
  const double now = now_s();
  const double rate = (double)(step - r->s_log) / (now - r->t_log > 1e-9 ? now - r->t_log : 1e-9);
  const double avg = (double)(step - r->first) / (now - r->t0 > 1e-9 ? now - r->t0 : 1e-9);
  char eta[32];
  format_eta((double)(tc->steps - step) / avg, eta, sizeof eta);
  a3_info("step %lld/%lld  loss %.5f  lr %.3e  %.2f steps/s  ETA %s", (long long)step,
          (long long)tc->steps, loss, lr, rate, eta);
  r->t_log = now;
  r->s_log = step;
}

static a3_status after_step(run_state *r, a3_trainer *t, const a3_train_options *opt, double loss,
                            double lr) {
  const int64_t step = a3_trainer_steps_done(t);
  if (r->csv) {
    fprintf(r->csv, "%lld,%.17g,%.9g\n", (long long)step, loss, lr);
    fflush(r->csv); // a killed run keeps its rows
  }
  if (opt && opt->on_step) opt->on_step(opt->ctx, step, loss, lr);
  log_step(r, step, loss, lr);
  const int64_t every = r->cfg->train.checkpoint_every;
  const bool last = step == r->cfg->train.steps;
  if (last || (every > 0 && step % every == 0)) A3_TRY(a3_trainer_save(t, r->ckpt));
  return A3_OK;
}

static a3_status maybe_resume(run_state *r, a3_trainer *t, const a3_train_options *opt) {
  if (!opt || !opt->resume) return A3_OK;
  int exists = r->rank == 0 ? access(r->ckpt, F_OK) == 0 : 0;
  MPI_Bcast(&exists, 1, MPI_INT, 0, r->comm);
  if (!exists) {
    if (r->rank == 0) a3_info("resume: no %s yet, starting from step 0", r->ckpt);
    return A3_OK;
  }
  A3_TRY(a3_trainer_resume(t, r->ckpt));
  if (r->rank == 0)
    a3_info("resume: continuing from step %lld of %s", (long long)a3_trainer_steps_done(t),
            r->ckpt);
  return A3_OK;
}

static a3_status loop(run_state *r, a3_trainer *t, const a3_train_options *opt) {
  const int64_t steps = r->cfg->train.steps;
  const int64_t stop =
      opt && opt->stop_after > 0 && opt->stop_after < steps ? opt->stop_after : steps;
  r->first = r->s_log = a3_trainer_steps_done(t);
  r->t0 = r->t_log = now_s();
  int size = 1;
  MPI_Comm_size(r->comm, &size);
  if (r->rank == 0)
    a3_info("train: strategy %s, steps %lld..%lld of %lld, %lld images per step on %d rank%s, "
            "lr %g",
            a3_strategy_label(r->cfg->strategy.name), (long long)r->first + 1, (long long)stop,
            (long long)steps, (long long)r->cfg->train.batch_size, size, size == 1 ? "" : "s",
            r->cfg->train.lr);
  while (a3_trainer_steps_done(t) < stop) {
    double loss = 0.0, lr = 0.0;
    A3_TRY(a3_trainer_step(t, &loss, &lr));
    r->last_loss = loss;
    A3_TRY(after_step(r, t, opt, loss, lr));
  }
  return A3_OK;
}

static a3_status run(run_state *r, const a3_train_options *opt, a3_train_result *result) {
  a3_trainer *t = NULL;
  A3_TRY(a3_trainer_create(r->cfg, r->comm, &t));
  a3_status s = maybe_resume(r, t, opt);
  const int64_t first = a3_trainer_steps_done(t);
  if (s == A3_OK) { // the CSV is rank 0's
    const a3_status c = r->rank == 0 ? open_csv(r->cfg->output.dir, first, &r->csv) : A3_OK;
    s = agree(r->comm, r->rank, c);
  }
  if (s == A3_OK) s = loop(r, t, opt);
  if (result) {
    result->first_step = first;
    result->steps_done = a3_trainer_steps_done(t);
    result->last_loss = r->last_loss;
    result->seconds = now_s() - r->t0;
  }
  a3_trainer_free(t);
  A3_TRY(s);
  return A3_OK;
}

a3_status a3_train(const a3_config *cfg, MPI_Comm comm, const a3_train_options *opt,
                   a3_train_result *result) {
  run_state r = {.cfg = cfg, .comm = comm};
  MPI_Comm_rank(comm, &r.rank);
  snprintf(r.ckpt, sizeof r.ckpt, "%s/checkpoint.h5", cfg->output.dir);
  if (result) memset(result, 0, sizeof *result);
  A3_TRY(agree(comm, r.rank, r.rank == 0 ? prepare_dir(cfg) : A3_OK));
  a3_status s = run(&r, opt, result);
  if (r.csv && fclose(r.csv) != 0 && s == A3_OK)
    s = A3_FAIL(A3_ERR_IO, "cannot write %s/losses.csv (disk full?)", cfg->output.dir);
  A3_TRY(s);
  return A3_OK;
}
