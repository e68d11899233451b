// a3_sweep_run: the whole sweep on every rank (see a3fta/sweep.h).
#define _POSIX_C_SOURCE 200809L
#include "dist/sweep_internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  MPI_Comm world, group;
  int rank, size, group_rank, group_index, n_groups;
  const a3_sweep_options *opt;
  a3_sweep_plan *plan;
  char path[A3_CONFIG_STR_MAX + 32];
  int create;        // the results file is new
  int8_t *status;    // (n_points) at the start, every rank
  int32_t *attempts; // (n_points) at the start, kept up to date by leaders
  int64_t *pending, n_pending;
  int64_t n_selected;                   // points of the slice (all without one)
  int64_t done_before, failed_for_good; // failed for good: diverged, or failed too often
  int64_t diverged_before;              // of those failed for good
  a3_results *results;
  a3_sweep_sched *sched;
  double t0;
  // Set on every rank of a group that stopped taking points because one of
  // its ranks can run no more (opt->lost): that rank's reason, with where.
  char lost[512];
} engine;

// ---------------------------------------------------------------- helpers
// Rank 0's status on every rank, with its message.
static a3_status share_root_status(const engine *e, a3_status s) {
  struct {
    int code;
    char msg[1536];
  } m;
  memset(&m, 0, sizeof m);
  if (e->rank == 0) {
    m.code = (int)s;
    snprintf(m.msg, sizeof m.msg, "%s", s == A3_OK ? "" : a3_error_message());
  }
  MPI_Bcast(&m, (int)sizeof m, MPI_BYTE, 0, e->world);
  if (e->rank == 0 || m.code == A3_OK) return e->rank == 0 ? s : A3_OK;
  return A3_FAIL((a3_status)m.code, "%s", m.msg);
}

// The lowest rank of comm for which `mine` holds, INT_MAX when none does.
static int lowest_rank(MPI_Comm comm, int rank, bool mine) {
  int r = mine ? rank : INT_MAX, first = INT_MAX;
  MPI_Allreduce(&r, &first, 1, MPI_INT, MPI_MIN, comm);
  return first;
}

// A status shared by all ranks (the worst one; messages stay on their ranks).
static a3_status agree_all(MPI_Comm comm, a3_status mine, const char *what) {
  int code = (int)mine, worst = 0;
  MPI_Allreduce(&code, &worst, 1, MPI_INT, MPI_MAX, comm);
  if (worst == A3_OK || mine != A3_OK) return mine;
  return A3_FAIL((a3_status)worst, "%s failed on another rank (see its message)", what);
}

static a3_status make_dirs(const char *dir) {
  char path[A3_CONFIG_STR_MAX + 32];
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

static int64_t process_peak_rss(void) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return (int64_t)ru.ru_maxrss * 1024; // kilobytes on Linux
}

static void format_duration(double seconds, char *buf, size_t size) {
  const long s = seconds > 0 && seconds < 1e9 ? (long)(seconds + 0.5) : 0;
  if (seconds < 9.95)
    snprintf(buf, size, "%.1fs", seconds > 0 ? seconds : 0.0);
  else if (s >= 3600)
    snprintf(buf, size, "%ldh%02ldm", s / 3600, s / 60 % 60);
  else if (s >= 60)
    snprintf(buf, size, "%ldm%02lds", s / 60, s % 60);
  else
    snprintf(buf, size, "%lds", s);
}

// ---------------------------------------------------------------- setting up
static void log_plan(const engine *e) {
  const a3_sweep_plan *p = e->plan;
  if (e->rank != 0) return;
  char keys[2048] = "";
  size_t used = 0;
  for (int v = 0; v < p->n_varied && used < sizeof keys; v++) {
    int w = snprintf(keys + used, sizeof keys - used, "%s%s", v ? ", " : "", p->varied[v]);
    if (w > 0) used += (size_t)w;
  }
  a3_info("sweep: %lld point%s (%lld from grid/zip, %lld explicit), varied keys: %s; %lld "
          "training steps in all; %d group%s of %d rank%s, %s scheduling",
          (long long)p->n_points, p->n_points == 1 ? "" : "s", (long long)p->n_combos,
          (long long)(p->n_points - p->n_combos), p->n_varied ? keys : "none",
          (long long)p->total_steps, e->n_groups, e->n_groups == 1 ? "" : "s", p->ranks_per_run,
          p->ranks_per_run == 1 ? "" : "s",
          p->schedule == A3_SCHEDULE_DYNAMIC ? "dynamic" : "static");
}

// Rank 0: the file's state (or a fresh one), before any collective HDF5 call.
static a3_status inspect_file(engine *e) {
  const a3_sweep_plan *p = e->plan;
  char parent[sizeof e->path];
  snprintf(parent, sizeof parent, "%s", e->path);
  char *slash = strrchr(parent, '/');
  if (slash && slash != parent) {
    *slash = '\0';
    A3_TRY(make_dirs(parent));
  }
  if (e->opt->force_new && unlink(e->path) != 0 && errno != ENOENT)
    return A3_FAIL(A3_ERR_IO, "--force-new: cannot remove %s: %s", e->path, strerror(errno));
  if (access(e->path, F_OK) != 0) {
    e->create = 1;
    return A3_OK;
  }
  A3_TRY(a3_results_inspect(e->path, p->sweep_hash, p->n_points, true, e->status, e->attempts));
  return A3_OK;
}

static a3_status point_yaml(void *ctx, int64_t i, char **out) {
  const a3_sweep_plan *p = ctx;
  a3_config *pc = NULL;
  A3_TRY(A3_ALLOC(pc, 1));
  a3_status s = a3_sweep_point_config(p, i, pc);
  if (s == A3_OK) {
    s = a3_config_to_yaml(pc, out, NULL);
    a3_config_free(pc);
  }
  free(pc);
  return s;
}

static a3_status create_file(engine *e) {
  const a3_sweep_plan *p = e->plan;
  const a3_results_layout layout = {
      .n_points = p->n_points,
      .sweep_hash = p->sweep_hash,
      .ranks_per_run = p->ranks_per_run,
      .base_yaml = p->base_yaml,
      .columns = p->columns,
      .n_columns = p->n_varied,
      .samples = p->samples,
      .channels = p->channels,
      .height = p->height,
      .width = p->width,
      .config_len = p->config_len,
      .point_yaml = point_yaml,
      .ctx = e->plan,
  };
  A3_TRY(a3_results_create(e->world, e->path, &layout));
  return A3_OK;
}

// Whether point i belongs to this invocation's slice (every point without one).
static bool selected(const engine *e, int64_t i) {
  return e->opt->slice_count <= 0 || i % e->opt->slice_count == e->opt->slice_index;
}

// Every rank: the file's state from rank 0, the pending points from it.
static a3_status share_state(engine *e) {
  const int64_t n = e->plan->n_points;
  MPI_Bcast(&e->create, 1, MPI_INT, 0, e->world);
  MPI_Bcast(e->status, (int)n, MPI_INT8_T, 0, e->world);
  MPI_Bcast(e->attempts, (int)n, MPI_INT32_T, 0, e->world);
  A3_TRY(a3_alloc((void **)&e->pending, (size_t)n + 1, sizeof *e->pending));
  for (int64_t i = 0; i < n; i++) {
    if (!selected(e, i)) continue;
    e->n_selected++;
    if (a3_point_to_run(e->status[i], e->attempts[i], e->opt->retry_failed))
      e->pending[e->n_pending++] = i;
    else if (e->status[i] == A3_POINT_DONE)
      e->done_before++;
    else {
      e->failed_for_good++;
      e->diverged_before += e->status[i] == A3_POINT_DIVERGED;
    }
  }
  if (e->rank == 0 && e->opt->slice_count > 0)
    a3_info("slice %lld/%lld: %lld of the %lld points (those with index %% %lld == %lld)",
            (long long)e->opt->slice_index, (long long)e->opt->slice_count,
            (long long)e->n_selected, (long long)n, (long long)e->opt->slice_count,
            (long long)e->opt->slice_index);
  if (e->rank == 0 && e->create)
    a3_info("results: %s (new)", e->path);
  else if (e->rank == 0 && e->failed_for_good)
    a3_info("results: %s (resuming: %lld done, %lld not retried (%lld diverged, %lld failed %d "
            "times), %lld to run)",
            e->path, (long long)e->done_before, (long long)e->failed_for_good,
            (long long)e->diverged_before, (long long)(e->failed_for_good - e->diverged_before),
            A3_RESULT_MAX_ATTEMPTS, (long long)e->n_pending);
  else if (e->rank == 0)
    a3_info("results: %s (resuming: %lld done, %lld to run)", e->path, (long long)e->done_before,
            (long long)e->n_pending);
  return A3_OK;
}

// ---------------------------------------------------------------- one point
// Every rank's step timings on the leader (timing: 2 x ranks_per_run doubles,
// compute then comm), the most steps and gradient bytes any rank counted, and
// the group's imbalance: mean over its ranks of (slowest compute - its own).
static void gather_timing(engine *e, a3_run_result *r, double *timing) {
  const int R = e->plan->ranks_per_run;
  int64_t counts[2] = {r->steps, r->grad_bytes}, most[2] = {0, 0};
  MPI_Gather(&r->step_compute_s, 1, MPI_DOUBLE, timing, 1, MPI_DOUBLE, 0, e->group);
  MPI_Gather(&r->step_comm_s, 1, MPI_DOUBLE, timing + R, 1, MPI_DOUBLE, 0, e->group);
  MPI_Allreduce(counts, most, 2, MPI_INT64_T, MPI_MAX, e->group);
  r->steps = most[0];
  r->grad_bytes = most[1];
  if (e->group_rank != 0) return;
  r->n_ranks = R;
  r->rank_compute_s = timing;
  r->rank_comm_s = timing + R;
  double slowest = -INFINITY, sum = 0.0;
  for (int k = 0; k < R; k++) slowest = fmax(slowest, timing[k]);
  for (int k = 0; k < R; k++) sum += slowest - timing[k];
  r->idle_s = sum / R; // NaN when any rank reported none
}

// The group's outcome on its leader: failed (or diverged) if any rank was
// (the lowest such rank's status and reason), the slowest wall time, the
// largest peak memory, the step timings.
static a3_status combine_group(engine *e, a3_run_result *r, double *timing) {
  const int first = lowest_rank(e->group, e->group_rank, a3_point_failed(r->status));
  if (first != INT_MAX && first != 0) {
    char reason[A3_RESULT_REASON_MAX];
    memcpy(reason, r->reason, sizeof reason);
    reason[sizeof reason - 1] = '\0';
    int status = r->status;
    MPI_Bcast(reason, (int)sizeof reason, MPI_CHAR, first, e->group);
    MPI_Bcast(&status, 1, MPI_INT, first, e->group);
    if (e->group_rank == 0) {
      char text[A3_RESULT_REASON_MAX + 64];
      snprintf(text, sizeof text, "rank %d of the group: %s", first, reason);
      memcpy(r->reason, text, sizeof r->reason - 1);
      r->reason[sizeof r->reason - 1] = '\0';
      r->status = status;
    }
  }
  double wall = 0.0;
  int64_t mem = 0;
  MPI_Allreduce(&r->wall_s, &wall, 1, MPI_DOUBLE, MPI_MAX, e->group);
  MPI_Allreduce(&r->peak_mem_bytes, &mem, 1, MPI_INT64_T, MPI_MAX, e->group);
  r->wall_s = wall;
  r->peak_mem_bytes = mem;
  gather_timing(e, r, timing);
  return A3_OK;
}

static void run_point(engine *e, int64_t point, a3_run_result *r, uint8_t *samples,
                      size_t sample_bytes) {
  const a3_sweep_plan *p = e->plan;
  a3_run_result_init(r);
  r->point = point;
  r->samples_cap = p->samples;
  r->channels = p->channels;
  r->height = p->height;
  r->width = p->width;
  r->samples = samples;
  if (sample_bytes) memset(samples, 0, sample_bytes);
  a3_config pc;
  const double t = MPI_Wtime();
  a3_status s = a3_sweep_point_config(p, point, &pc);
  if (s == A3_OK) {
    s = e->opt->run(&pc, e->group, r, e->opt->ctx);
    a3_config_free(&pc);
  }
  r->wall_s = MPI_Wtime() - t;
  if (s != A3_OK) {
    r->status = s == A3_ERR_DIVERGED ? A3_POINT_DIVERGED : A3_POINT_FAILED;
    char text[A3_RESULT_REASON_MAX + 64];
    snprintf(text, sizeof text, "%s: %s", a3_status_name(s), a3_error_message());
    memcpy(r->reason, text, sizeof r->reason - 1);
    r->reason[sizeof r->reason - 1] = '\0';
    a3_error_clear();
  } else if (a3_point_failed(r->status) && !r->reason[0]) {
    snprintf(r->reason, sizeof r->reason, "the run reported a failure without a reason");
  } else if (!a3_point_failed(r->status)) {
    r->status = A3_POINT_DONE;
    r->reason[0] = '\0';
  }
  r->reason[sizeof r->reason - 1] = '\0';
  if (r->n_curve < 0) r->n_curve = 0;
  if (r->n_curve > A3_RESULT_CURVE_MAX) r->n_curve = A3_RESULT_CURVE_MAX;
  if (r->n_heldout < 0) r->n_heldout = 0;
  if (r->n_heldout > A3_RESULT_CURVE_MAX) r->n_heldout = A3_RESULT_CURVE_MAX;
  if (r->n_memorized < 0) r->n_memorized = 0;
  if (r->n_memorized > A3_RESULT_MEMORIZED_MAX) r->n_memorized = A3_RESULT_MEMORIZED_MAX;
  if (r->n_samples < 0) r->n_samples = 0;
  if (r->n_samples > r->samples_cap) r->n_samples = r->samples_cap;
  if (r->peak_mem_bytes <= 0) r->peak_mem_bytes = process_peak_rss();
  r->samples = samples; // the run must not replace the engine's buffer
}

static void log_progress(const engine *e, int64_t point, const a3_run_result *r,
                         const a3_sweep_counts *c) {
  const int64_t finished = c->done + c->failed;
  const int64_t remaining = e->n_pending - finished;
  const double elapsed = MPI_Wtime() - e->t0;
  char eta[32] = "-", wall[32];
  if (finished > 0 && remaining > 0)
    format_duration(elapsed / (double)finished * (double)remaining, eta, sizeof eta);
  else if (remaining <= 0)
    snprintf(eta, sizeof eta, "0s");
  format_duration(r->wall_s, wall, sizeof wall);
  const long long running = (long long)(c->started - finished);
  const long long done = (long long)(e->done_before + c->done);
  const long long failed = (long long)(e->failed_for_good + c->failed);
  if (a3_point_failed(r->status))
    a3_warn("point %lld %s after %s: %s | sweep: %lld/%lld done, %lld failed, %lld running, "
            "ETA %s",
            (long long)point, a3_point_status_name(r->status), wall, r->reason, done,
            (long long)e->n_selected, failed, running, eta);
  else
    a3_info("point %lld done in %s (loss %.5g) | sweep: %lld/%lld done, %lld failed, %lld "
            "running, ETA %s",
            (long long)point, wall, r->final_loss, done, (long long)e->n_selected, failed, running,
            eta);
}

// Leader: record a finished point. Errors here end the sweep (for everyone).
static a3_status record_point(engine *e, int64_t point, const a3_run_result *r) {
  A3_TRY(a3_results_write_point(e->results, point, r));
  a3_sweep_counts c = {0, 0, 0};
  A3_TRY(a3_sweep_sched_report(e->sched, a3_point_failed(r->status), &c));
  log_progress(e, point, r, &c);
  return A3_OK;
}

// Whether a rank of the group can run no more points (opt->lost, asked on
// every rank after each point); if so, e->lost gets the lowest such rank's
// reason on every rank of the group, and the leader says so.
static bool group_lost(engine *e, int64_t point) {
  const char *why = e->opt->lost ? e->opt->lost() : NULL;
  const int first = lowest_rank(e->group, e->group_rank, why != NULL);
  if (first == INT_MAX) return false;
  if (why && e->group_rank == first) {
    char host[64] = "?";
    gethostname(host, sizeof host - 1);
    snprintf(e->lost, sizeof e->lost, "rank %d (group %d) on %s can run no more points: %s",
             e->rank, e->group_index, host, why);
  }
  MPI_Bcast(e->lost, (int)sizeof e->lost, MPI_CHAR, first, e->group);
  if (e->group_rank == 0)
    a3_warn("%s; its group takes no more points after point %lld (the other groups go on)", e->lost,
            (long long)point);
  return true;
}

// The group's loop; returns this rank's first error (after which its
// leader has stopped every group) or A3_OK. A group whose rank can run no
// more (group_lost) leaves it after recording its point, without stopping
// the others.
static a3_status run_points(engine *e, int64_t *ran) {
  const a3_sweep_plan *p = e->plan;
  const size_t sample_bytes =
      (size_t)p->samples * (size_t)p->channels * (size_t)p->height * (size_t)p->width;
  uint8_t *samples = NULL;
  a3_run_result *r = NULL;
  double *timing = NULL; // the group's step timings (gather_timing)
  a3_status s = A3_ALLOC(r, 1);
  if (s == A3_OK && sample_bytes) s = a3_alloc((void **)&samples, sample_bytes, 1);
  if (s == A3_OK) s = A3_ALLOC(timing, 2 * (size_t)p->ranks_per_run);
  if (s != A3_OK && e->group_rank == 0) a3_sweep_sched_stop(e->sched);
  a3_status first_error = s;
  for (;;) {
    int64_t point = -1;
    s = a3_sweep_sched_next(e->sched, &point);
    if (s != A3_OK && first_error == A3_OK) first_error = s;
    if (s != A3_OK || point < 0) break;
    int go = 1; // the leader could mark the point running: the whole group runs it
    if (e->group_rank == 0) {
      e->attempts[point]++;
      s = a3_results_mark_running(e->results, point, e->attempts[point]);
      if (s != A3_OK && first_error == A3_OK) first_error = s;
      go = first_error == A3_OK;
      if (!go) a3_sweep_sched_stop(e->sched);
    }
    MPI_Bcast(&go, 1, MPI_INT, 0, e->group);
    if (!go) continue; // the scheduler now says stop
    run_point(e, point, r, samples, sample_bytes);
    combine_group(e, r, timing);
    if (e->group_rank == 0) {
      s = record_point(e, point, r);
      if (s != A3_OK) {
        first_error = s;
        a3_sweep_sched_stop(e->sched);
      }
      (*ran)++;
    }
    if (group_lost(e, point)) break;
  }
  free(samples);
  free(timing);
  free(r);
  return first_error;
}

// ---------------------------------------------------------------- finishing
static a3_status count_final(engine *e, a3_sweep_summary *sum) {
  const int64_t n = e->plan->n_points;
  int64_t counts[4] = {0, 0, 0, 0}; // done, failed (diverged included), pending, diverged
  a3_status s = A3_OK;
  if (e->rank == 0) {
    s = a3_results_read_status(e->results, e->status);
    for (int64_t i = 0; s == A3_OK && i < n; i++) {
      if (!selected(e, i)) continue;
      if (e->status[i] == A3_POINT_DONE)
        counts[0]++;
      else if (a3_point_failed(e->status[i]))
        counts[1]++;
      else
        counts[2]++;
      if (e->status[i] == A3_POINT_DIVERGED) counts[3]++;
    }
  }
  s = share_root_status(e, s);
  MPI_Bcast(counts, 4, MPI_INT64_T, 0, e->world);
  sum->done = counts[0];
  sum->failed = counts[1];
  sum->pending = counts[2];
  sum->diverged = counts[3];
  return s;
}

// ---------------------------------------------------------------- longest first
// Dynamic scheduling hands out the pending points by decreasing estimated
// cost (train.steps x train.batch_size; ties in index order): a long point
// taken last would leave every other group idle while it runs. The order is
// a function of the plan alone, so every rank computes the same one.
typedef struct {
  double cost;
  int64_t point;
} costed_point;

static int by_cost_desc(const void *a, const void *b) {
  const costed_point *x = a, *y = b;
  if (x->cost != y->cost) return x->cost < y->cost ? 1 : -1;
  return (x->point > y->point) - (x->point < y->point);
}

static a3_status longest_first(const a3_sweep_plan *p, int64_t *pending, int64_t n) {
  costed_point *c = NULL;
  if (n < 2) return A3_OK;
  A3_TRY(A3_ALLOC(c, (size_t)n));
  a3_status s = A3_OK;
  for (int64_t i = 0; i < n && s == A3_OK; i++) {
    a3_config cfg;
    s = a3_sweep_point_config(p, pending[i], &cfg);
    if (s != A3_OK) break;
    c[i] = (costed_point){(double)cfg.train.steps * (double)cfg.train.batch_size, pending[i]};
    a3_config_free(&cfg);
  }
  if (s == A3_OK) {
    qsort(c, (size_t)n, sizeof *c, by_cost_desc);
    for (int64_t i = 0; i < n; i++) pending[i] = c[i].point;
  }
  free(c);
  return s;
}

// After the sweep, when a group stopped taking points (group_lost): with
// points left pending, A3_ERR_CUDA on every rank naming the lowest such
// rank's reason; with none (the other groups ran them), or when a signal
// stopped the sweep (its exit code asks for the requeue), a warning.
static a3_status lost_anywhere(engine *e, const a3_sweep_summary *sum) {
  const int first = lowest_rank(e->world, e->rank, e->lost[0] != '\0');
  if (first == INT_MAX) return A3_OK;
  MPI_Bcast(e->lost, (int)sizeof e->lost, MPI_CHAR, first, e->world);
  if (sum->pending == 0 || sum->interrupted) {
    if (e->rank == 0)
      a3_warn("%s; %s", e->lost,
              sum->pending ? "its group stopped taking points" : "the other groups ran its share");
    return A3_OK;
  }
  return A3_FAIL(A3_ERR_CUDA,
                 "%s. Its group stopped taking points; %lld point(s) left pending: rerun the same "
                 "command to run them (the finished ones are kept)",
                 e->lost, (long long)sum->pending);
}

static a3_status sweep(engine *e, const a3_config *cfg, a3_sweep_summary *sum) {
  // 1. The same points on every rank, before anything collective.
  a3_status s = a3_sweep_plan_make(cfg, &e->plan);
  A3_TRY(a3_sweep_agree(e->world, s, e->plan ? e->plan->agree_hash : 0));
  const a3_sweep_plan *p = e->plan;
  sum->n_points = p->n_points;
  const int64_t si = e->opt->slice_index, sc = e->opt->slice_count;
  if (sc < 0 || (sc > 0 && (si < 0 || si >= sc)))
    return A3_FAIL(A3_ERR_USAGE, "sweep slice %lld/%lld: the index must lie in 0..%lld",
                   (long long)si, (long long)sc, (long long)sc - 1);
  // 2. Groups.
  A3_TRY(a3_sweep_split(e->world, p->ranks_per_run, &e->group, &e->group_index, &e->n_groups));
  MPI_Comm_rank(e->group, &e->group_rank);
  log_plan(e);
  // 3. The results file: rank 0 inspects it, everyone learns the outcome.
  if (e->opt->results_path)
    snprintf(e->path, sizeof e->path, "%s", e->opt->results_path);
  else
    snprintf(e->path, sizeof e->path, "%s/results.h5", p->base.output.dir);
  snprintf(sum->results_path, sizeof sum->results_path, "%s", e->path);
  s = a3_alloc((void **)&e->status, (size_t)p->n_points + 1, 1);
  if (s == A3_OK) s = a3_alloc((void **)&e->attempts, (size_t)p->n_points + 1, sizeof(int32_t));
  A3_TRY(agree_all(e->world, s, "allocating the sweep state"));
  A3_TRY(share_root_status(e, e->rank == 0 ? inspect_file(e) : A3_OK));
  A3_TRY(agree_all(e->world, share_state(e), "listing the pending points"));
  if (e->create) A3_TRY(create_file(e));
  A3_TRY(a3_results_open(e->world, e->path, &e->results));
  // 4. Run.
  sum->done_before = e->done_before;
  sum->n_selected = e->n_selected;
  if (p->schedule == A3_SCHEDULE_DYNAMIC)
    A3_TRY(agree_all(e->world, longest_first(p, e->pending, e->n_pending), "ordering the points"));
  s = a3_sweep_sched_create(e->world, e->group, e->group_index, e->n_groups, p->schedule,
                            e->pending, e->n_pending, &e->sched);
  if (s != A3_OK) return s; // results closed by the caller
  e->t0 = MPI_Wtime();
  int64_t ran = 0, ran_all = 0;
  a3_status loop = run_points(e, &ran);
  bool stop = false;
  s = a3_sweep_sched_finish(e->sched, &stop);
  e->sched = NULL;
  if (loop == A3_OK) loop = s;
  MPI_Allreduce(&ran, &ran_all, 1, MPI_INT64_T, MPI_SUM, e->world);
  sum->ran = ran_all;
  // 5. Every rank's writes are in the file; count them.
  a3_status synced = a3_results_sync(e->results);
  if (synced == A3_OK) synced = count_final(e, sum);
  if (loop == A3_OK) loop = synced;
  sum->interrupted = stop && sum->done + sum->failed < sum->n_selected;
  A3_TRY(agree_all(e->world, loop, "the sweep"));
  return lost_anywhere(e, sum);
}

a3_status a3_sweep_run(MPI_Comm world, const a3_config *cfg, const a3_sweep_options *opt,
                       a3_sweep_summary *summary) {
  engine e = {.world = world, .opt = opt, .group = MPI_COMM_NULL};
  MPI_Comm_rank(world, &e.rank);
  MPI_Comm_size(world, &e.size);
  a3_sweep_summary sum;
  memset(&sum, 0, sizeof sum);
  const double t0 = MPI_Wtime();
  if (opt->handle_signals) a3_sweep_signals_install();
  a3_status s =
      opt->run ? sweep(&e, cfg, &sum) : A3_FAIL(A3_ERR_INTERNAL, "a3_sweep_run: no run function");
  // The file is closed collectively on every path that opened it.
  a3_status c = a3_results_close(e.results);
  if (s == A3_OK) s = c;
  if (e.group != MPI_COMM_NULL) MPI_Comm_free(&e.group);
  if (opt->handle_signals) a3_sweep_signals_restore();
  free(e.status);
  free(e.attempts);
  free(e.pending);
  a3_sweep_plan_free(e.plan);
  sum.seconds = MPI_Wtime() - t0;
  if (summary) *summary = sum;
  A3_TRY(s);
  return A3_OK;
}
