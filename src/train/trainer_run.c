// a3_train: the whole run around the trainer — output folder, resume, the
// loop with its log lines, held-out losses, losses.csv, periodic checkpoints
// and loss.png.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/dist.h"
#include "a3fta/plot.h"
#include "a3fta/strategy.h"
#include "a3fta/trainer.h"

#include <errno.h>
#include <math.h>
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

static const char CSV_HEADER[] = "step,loss,lr,heldout\n", OLD_HEADER[] = "step,loss,lr\n";

// Keeps the header and the rows of steps <= last (a resumed run rewrites the
// rest); a file without the heldout column (older a3fta) gets an empty one.
static a3_status truncate_csv(const char *path, int64_t last) {
  char *text = NULL;
  size_t len = 0;
  if (access(path, F_OK) != 0) return A3_OK;
  A3_TRY(a3_read_file(path, (size_t)1 << 30, &text, &len));
  const bool upgrade = !strncmp(text, OLD_HEADER, sizeof OLD_HEADER - 1);
  size_t keep = 0, rows = 0;
  for (char *line = text; line < text + len;) {
    char *nl = memchr(line, '\n', (size_t)(text + len - line));
    char *end = nl ? nl + 1 : text + len;
    char *after = NULL;
    const long long step = strtoll(line, &after, 10);
    if (after != line && step > last) break;
    keep = (size_t)(end - text);
    rows++;
    line = end;
  }
  text[keep] = '\0';
  char *out = text;
  if (upgrade) { // one ',' more per row
    a3_status s = a3_alloc((void **)&out, keep + rows + sizeof CSV_HEADER, 1);
    if (s != A3_OK) {
      free(text);
      A3_TRY(s);
    }
    memcpy(out, CSV_HEADER, sizeof CSV_HEADER - 1);
    size_t o = sizeof CSV_HEADER - 1;
    for (const char *c = text + sizeof OLD_HEADER - 1; *c; c++) {
      if (*c == '\n') out[o++] = ',';
      out[o++] = *c;
    }
    out[o] = '\0';
  }
  a3_status s = write_text(path, out);
  if (out != text) free(out);
  free(text);
  return s;
}

static a3_status open_csv(const char *dir, int64_t resumed_step, FILE **out) {
  char path[PATH_CAP];
  snprintf(path, sizeof path, "%s/losses.csv", dir);
  if (resumed_step > 0) A3_TRY(truncate_csv(path, resumed_step));
  FILE *f = fopen(path, resumed_step > 0 ? "a" : "w");
  if (!f) return A3_FAIL(A3_ERR_IO, "cannot write %s: %s", path, strerror(errno));
  if (resumed_step == 0 || ftell(f) == 0) fputs(CSV_HEADER, f);
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
  a3_heldout_set heldout; // when eval.heldout_every > 0
  double last_heldout;    // NaN until one is computed
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

// Whether a task done every `every` steps (0: never) falls on `step`.
static bool every_due(int64_t step, int64_t every) { return every > 0 && step % every == 0; }

static void log_step(run_state *r, int64_t step, double loss, double lr, double heldout) {
  const a3_train_config *tc = &r->cfg->train;
  const bool due = every_due(step, tc->log_every) || step == tc->steps || !isnan(heldout);
  if (r->rank != 0 || !due) return;
  const double now = now_s();
  const double rate = (double)(step - r->s_log) / (now - r->t_log > 1e-9 ? now - r->t_log : 1e-9);
  const double avg = (double)(step - r->first) / (now - r->t0 > 1e-9 ? now - r->t0 : 1e-9);
  char eta[32];
  format_eta((double)(tc->steps - step) / avg, eta, sizeof eta);
  char held[48] = "";
  if (!isnan(heldout)) snprintf(held, sizeof held, "  heldout %.5f", heldout);
  a3_info("step %lld/%lld  loss %.5f%s  lr %.3e  %.2f steps/s  ETA %s", (long long)step,
          (long long)tc->steps, loss, held, lr, rate, eta);
  r->t_log = now;
  r->s_log = step;
}

// The held-out loss after this step, or NaN when it is not due (collective).
static a3_status heldout_after(run_state *r, a3_trainer *t, int64_t step, double *heldout) {
  *heldout = NAN;
  const int64_t every = r->cfg->eval.heldout_every;
  if (every <= 0 || (!every_due(step, every) && step != r->cfg->train.steps)) return A3_OK;
  A3_TRY(a3_trainer_heldout_loss(t, r->comm, &r->heldout, heldout));
  r->last_heldout = *heldout;
  return A3_OK;
}

// A step after which the loop reads the pending losses: one it logs,
// evaluates or checkpoints, the last, or one that fills the pending buffer.
// In between, a GPU step only queues work.
static bool take_due(const run_state *r, const a3_trainer *t, int64_t step, int64_t stop) {
  const a3_train_config *tc = &r->cfg->train;
  return step == stop || step == tc->steps || every_due(step, tc->log_every) ||
         every_due(step, r->cfg->eval.heldout_every) || every_due(step, tc->checkpoint_every) ||
         a3_trainer_pending(t) >= a3_trainer_pending_capacity(t);
}

static void write_row(run_state *r, int64_t step, double loss, double lr, double heldout) {
  if (!r->csv) return;
  fprintf(r->csv, "%lld,%.17g,%.9g,", (long long)step, loss, lr);
  if (!isnan(heldout)) fprintf(r->csv, "%.9g", heldout);
  fputc('\n', r->csv);
}

// A NaN or infinite loss: the run has diverged, and every later step would
// only spend compute on NaN weights. Every rank holds the same losses, so all
// stop here together, before this take's checkpoint (losses.csv keeps the
// rows, the log the error).
static a3_status check_finite(const run_state *r, const a3_step_losses *L) {
  for (int64_t i = 0; i < L->n; i++) {
    if (isfinite(L->loss[i])) continue;
    return A3_FAIL(A3_ERR_DIVERGED,
                   "train: the loss is %g at step %lld (output.dir %s). Lower train.lr (%g "
                   "now) or train.grad_clip (%g now, 0 = off), or check the base (model.init "
                   "%s) with 'a3fta info'; the last checkpoint, if any, is %s",
                   L->loss[i], (long long)(L->first_step + i), r->cfg->output.dir, r->cfg->train.lr,
                   r->cfg->train.grad_clip, r->cfg->model.init, r->ckpt);
  }
  return A3_OK;
}

// The pending steps' losses into losses.csv, on_step and the log; then the
// held-out loss and checkpoint the last of them is due for.
static a3_status take_losses(run_state *r, a3_trainer *t, const a3_train_options *opt) {
  a3_step_losses L;
  A3_TRY(a3_trainer_agree(t, a3_trainer_take_losses(t, &L))); // before the held-out loss's
                                                              // collectives
  const int64_t last = L.first_step + L.n - 1;
  double heldout = NAN;
  A3_TRY(heldout_after(r, t, last, &heldout));
  for (int64_t i = 0; i < L.n; i++) {
    const int64_t step = L.first_step + i;
    const double held = step == last ? heldout : NAN;
    write_row(r, step, L.loss[i], L.lr[i], held);
    if (opt && opt->on_step) opt->on_step(opt->ctx, step, L.loss[i], L.lr[i]);
    log_step(r, step, L.loss[i], L.lr[i], held);
    r->last_loss = L.loss[i];
  }
  if (r->csv) fflush(r->csv); // a killed run keeps its rows
  A3_TRY(check_finite(r, &L));
  if (last == r->cfg->train.steps || every_due(last, r->cfg->train.checkpoint_every))
    A3_TRY(a3_trainer_save(t, r->ckpt));
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
    // One rank's failed step stops the group here, before any other
    // collective (take_losses agrees on each of its own parts).
    A3_TRY(a3_trainer_agree(t, a3_trainer_advance(t)));
    if (take_due(r, t, a3_trainer_steps_done(t), stop)) A3_TRY(take_losses(r, t, opt));
  }
  return A3_OK;
}

// ---------------------------------------------------------------- loss.png

typedef struct {
  double *step, *loss;      // every row
  double *h_step, *heldout; // the rows with a held-out loss
  int64_t n, n_heldout;
} loss_history;

static void history_free(loss_history *h) {
  free(h->step);
  free(h->loss);
  free(h->h_step);
  free(h->heldout);
}

// losses.csv back (the whole run, earlier sessions included).
static a3_status read_history(const char *path, loss_history *h) {
  char *text = NULL;
  size_t len = 0;
  A3_TRY(a3_read_file(path, (size_t)1 << 30, &text, &len));
  size_t rows = 1;
  for (size_t i = 0; i < len; i++) rows += text[i] == '\n';
  a3_status s = A3_ALLOC(h->step, rows);
  if (s == A3_OK) s = A3_ALLOC(h->loss, rows);
  if (s == A3_OK) s = A3_ALLOC(h->h_step, rows);
  if (s == A3_OK) s = A3_ALLOC(h->heldout, rows);
  for (char *line = text; s == A3_OK && line && *line;) {
    char *next = strchr(line, '\n');
    if (next) *next++ = '\0';
    char *end = NULL;
    const double step = (double)strtoll(line, &end, 10);
    if (end != line && *end == ',') {
      h->step[h->n] = step;
      h->loss[h->n++] = strtod(end + 1, &end);
      // lr, then heldout (empty where not evaluated)
      char *comma = *end == ',' ? strchr(end + 1, ',') : NULL;
      char *num = comma ? comma + 1 : NULL, *num_end = NULL;
      const double v = num && *num ? strtod(num, &num_end) : NAN;
      if (num_end && num_end != num) {
        h->h_step[h->n_heldout] = step;
        h->heldout[h->n_heldout++] = v;
      }
    }
    line = next;
  }
  free(text);
  return s;
}

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

// output.dir/loss.png from losses.csv (rank 0); *last_heldout from its last held-out row.
static a3_status write_loss_png(const a3_config *cfg, double *last_heldout) {
  char csv[PATH_CAP], png[PATH_CAP], title[PATH_CAP + 64];
  snprintf(csv, sizeof csv, "%s/losses.csv", cfg->output.dir);
  snprintf(png, sizeof png, "%s/loss.png", cfg->output.dir);
  loss_history h = {0};
  a3_status s = read_history(csv, &h);
  if (s == A3_OK) {
    *last_heldout = h.n_heldout ? h.heldout[h.n_heldout - 1] : NAN;
    const char *slash = strrchr(cfg->output.dir, '/');
    const char *name = slash && slash[1] ? slash + 1 : cfg->output.dir;
    snprintf(title, sizeof title, "%s: %s, %lld steps", name, a3_strategy_label(cfg->strategy.name),
             (long long)h.n);
    // Raw training loss faint under its moving average; the held-out loss as points.
    const a3_plot_series series[] = {
        {.label = "training loss",
         .x = h.step,
         .y = h.loss,
         .n = h.n,
         .rgb = {31, 119, 180},
         .alpha = 0.3,
         .smooth = clamp64(h.n / 25, 5, 200)},
        {.label = "held-out loss",
         .x = h.h_step,
         .y = h.heldout,
         .n = h.n_heldout,
         .rgb = {230, 100, 10},
         .alpha = 1.0,
         .markers = true},
    };
    s = a3_plot_png(png, title, series, h.n_heldout ? 2 : 1, true);
  }
  history_free(&h);
  A3_TRY(s);
  return A3_OK;
}

// loss.png by rank 0, and the last held-out loss on every rank.
static a3_status finish_plot(run_state *r, double *final_heldout) {
  double history = NAN;
  a3_status s = r->rank == 0 ? write_loss_png(r->cfg, &history) : A3_OK;
  s = a3_agree(r->comm, s, "writing loss.png");
  *final_heldout = !isnan(r->last_heldout) ? r->last_heldout : history;
  if (r->cfg->eval.heldout_every <= 0) *final_heldout = NAN;
  MPI_Bcast(final_heldout, 1, MPI_DOUBLE, 0, r->comm);
  return s;
}

// The held-out images when eval.heldout_every > 0 (collective).
static a3_status load_heldout(run_state *r) {
  if (r->cfg->eval.heldout_every <= 0) return A3_OK;
  A3_TRY(a3_heldout_load(r->comm, r->cfg, &r->heldout));
  if (r->rank == 0)
    a3_info("heldout: %lld test images x %lld timesteps, every %lld steps",
            (long long)r->heldout.n_images, (long long)r->heldout.n_timesteps,
            (long long)r->cfg->eval.heldout_every);
  return A3_OK;
}

static a3_status run(run_state *r, const a3_train_options *opt, a3_train_result *result) {
  a3_trainer *t = NULL;
  A3_TRY(a3_trainer_create(r->cfg, r->comm, &t));
  a3_status s = load_heldout(r);
  if (s == A3_OK) s = maybe_resume(r, t, opt);
  const int64_t first = a3_trainer_steps_done(t);
  if (s == A3_OK) { // the CSV is rank 0's
    const a3_status c = r->rank == 0 ? open_csv(r->cfg->output.dir, first, &r->csv) : A3_OK;
    s = a3_agree(r->comm, c, "opening losses.csv");
  }
  if (s == A3_OK) s = loop(r, t, opt);
  double final_heldout = NAN;
  if (s == A3_OK) s = finish_plot(r, &final_heldout);
  if (result) {
    result->final_heldout_loss = final_heldout;
    result->first_step = first;
    result->steps_done = a3_trainer_steps_done(t);
    result->last_loss = r->last_loss;
    result->seconds = now_s() - r->t0;
    result->timing = a3_trainer_timing(t);
  }
  a3_trainer_free(t);
  a3_heldout_free(&r->heldout);
  A3_TRY(s);
  return A3_OK;
}

static a3_status remove_checkpoint(const char *dir) {
  char path[PATH_CAP];
  snprintf(path, sizeof path, "%s/checkpoint.h5", dir);
  if (unlink(path) != 0 && errno != ENOENT)
    return A3_FAIL(A3_ERR_IO, "cannot remove %s (output.save_weights is false): %s", path,
                   strerror(errno));
  a3_info("removed %s (output.save_weights: false)", path);
  return A3_OK;
}

a3_status a3_run_drop_weights(MPI_Comm comm, const a3_config *cfg) {
  if (cfg->output.save_weights) return A3_OK;
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  return a3_agree(comm, rank == 0 ? remove_checkpoint(cfg->output.dir) : A3_OK,
                  "removing the checkpoint");
}

a3_status a3_train(const a3_config *cfg, MPI_Comm comm, const a3_train_options *opt,
                   a3_train_result *result) {
  run_state r = {.cfg = cfg, .comm = comm, .last_heldout = NAN};
  MPI_Comm_rank(comm, &r.rank);
  snprintf(r.ckpt, sizeof r.ckpt, "%s/checkpoint.h5", cfg->output.dir);
  if (result) {
    memset(result, 0, sizeof *result);
    result->final_heldout_loss = NAN;
  }
  A3_TRY(a3_agree(comm, r.rank == 0 ? prepare_dir(cfg) : A3_OK, "preparing the output folder"));
  a3_status s = run(&r, opt, result);
  if (r.csv && fclose(r.csv) != 0 && s == A3_OK)
    s = A3_FAIL(A3_ERR_IO, "cannot write %s/losses.csv (disk full?)", cfg->output.dir);
  A3_TRY(s);
  return A3_OK;
}
