// a3fta sweep: every point of a config's sweep over groups of MPI ranks
// (a3fta/sweep.h), each point run by a3_sweep_train_point (cli/sweep_point.h)
// in output.dir/point-NNNNNN, all outcomes in output.dir/results.h5.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/backend.h"
#include "a3fta/config.h"
#include "a3fta/dist.h"
#include "a3fta/sweep.h"
#include "cli/commands.h"
#include "cli/options.h"
#include "cli/sweep_point.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

// ---------------------------------------------------------------- the command
// Reads decimal digits at *p (at least one, at most 9) into *v.
static bool read_count(const char **p, long long *v) {
  const char *start = *p;
  *v = 0;
  while (**p >= '0' && **p <= '9' && *p - start < 9) *v = *v * 10 + (*(*p)++ - '0');
  return *p > start && !(**p >= '0' && **p <= '9');
}

// --slice I/N: two decimal integers with 0 <= I < N <= A3_SWEEP_MAX_POINTS.
static a3_status parse_slice(const char *text, int64_t *index, int64_t *count) {
  const char *p = text;
  long long i = -1, n = -1;
  const bool ok = read_count(&p, &i) && *p++ == '/' && read_count(&p, &n) && *p == '\0';
  if (!ok || n < 1 || n > A3_SWEEP_MAX_POINTS || i >= n)
    return A3_FAIL(A3_ERR_USAGE,
                   "a3fta sweep: --slice expects I/N with 0 <= I < N (slice I of N: the points "
                   "whose index modulo N is I), e.g. 0/4 to 3/4 for 4 array tasks; got '%s'",
                   text);
  *index = i;
  *count = n;
  return A3_OK;
}

// What the command line asks of a sweep run.
typedef struct {
  a3_sweep_point_options point;
  bool force_new, retry_failed;
  int64_t slice_index, slice_count; // slice_count 0: the whole sweep
} run_request;

// The results file a run of req writes: output.dir/results.h5, or the slice's.
static void results_path(const a3_config *cfg, const run_request *req, char *out, size_t size) {
  if (req->slice_count > 0)
    snprintf(out, size, "%s/results-slice-%lld-of-%lld.h5", cfg->output.dir,
             (long long)req->slice_index, (long long)req->slice_count);
  else
    snprintf(out, size, "%s/results.h5", cfg->output.dir);
}

static bool selected(const run_request *req, int64_t i) {
  return req->slice_count <= 0 || i % req->slice_count == req->slice_index;
}

// The results file's state for a dry run: *status NULL without a file, or
// when it cannot be read now (a running sweep holds it: said, not an error).
// A file a run would refuse (another sweep's, not a results file) is its error.
static a3_status read_state(const char *path, const a3_sweep_plan *p, int8_t **status,
                            int32_t **attempts) {
  *status = NULL;
  *attempts = NULL;
  if (access(path, F_OK) != 0) return A3_OK;
  A3_TRY(a3_alloc((void **)status, (size_t)p->n_points + 1, sizeof **status));
  a3_status s = a3_alloc((void **)attempts, (size_t)p->n_points + 1, sizeof **attempts);
  if (s == A3_OK)
    s = a3_results_inspect(path, p->sweep_hash, p->n_points, false, *status, *attempts);
  if (s != A3_OK) {
    free(*status);
    free(*attempts);
    *status = NULL;
    *attempts = NULL;
  }
  if (s != A3_OK && s != A3_ERR_CONFIG && s != A3_ERR_INPUT) {
    printf("# results: %s cannot be read now (%s); the points are listed without their state\n",
           path, a3_error_message());
    a3_error_clear();
    return A3_OK;
  }
  return s;
}

// A point's state and what a run of req would do with it.
static const char *point_plan(const run_request *req, int8_t status, int32_t attempts, bool *runs) {
  *runs = a3_point_to_run(status, attempts, req->retry_failed);
  if (status == A3_POINT_DONE) return "done";
  if (status == A3_POINT_DIVERGED)
    return *runs ? "diverged: runs again (--retry-failed)" : "diverged: not retried";
  if (status == A3_POINT_FAILED)
    return *runs ? "failed: runs again" : "failed 3 times: not retried (--retry-failed would)";
  return status == A3_POINT_RUNNING ? "running or interrupted: runs" : "pending: runs";
}

static void print_points(const a3_sweep_plan *p, const run_request *req, const int8_t *status,
                         const int32_t *attempts) {
  char label[2048];
  int64_t runs = 0, n = 0;
  for (int64_t i = 0; i < p->n_points; i++) {
    if (!selected(req, i)) continue;
    a3_sweep_point_label(p, i, label, sizeof label);
    printf("%lld\t%s", (long long)i, label[0] ? label : "(the config as given)");
    bool run = true;
    if (status) printf("\t%s", point_plan(req, status[i], attempts[i], &run));
    printf("\n");
    runs += run;
    n++;
  }
  if (status)
    printf("# a run now would run %lld of these %lld points\n", (long long)runs, (long long)n);
}

// Rank 0: the points (of the slice) and, when a results file exists, each
// one's state there and whether a run of req would run it.
static a3_status list_points(const a3_config *cfg, const a3_sweep_plan *p, const run_request *req) {
  printf("# %lld points, sweep hash %016llx", (long long)p->n_points,
         (unsigned long long)p->sweep_hash);
  if (req->slice_count > 0)
    printf("; slice %lld/%lld: the points with index %% %lld == %lld", (long long)req->slice_index,
           (long long)req->slice_count, (long long)req->slice_count, (long long)req->slice_index);
  printf("\n");
  char path[A3_CONFIG_STR_MAX + 96];
  results_path(cfg, req, path, sizeof path);
  int8_t *status = NULL;
  int32_t *attempts = NULL;
  a3_status s = req->force_new ? A3_OK : read_state(path, p, &status, &attempts);
  if (s == A3_OK && status) printf("# results: %s (state of each point, last column)\n", path);
  if (s == A3_OK) print_points(p, req, status, attempts);
  fflush(stdout);
  free(status);
  free(attempts);
  return s;
}

// --dry-run: every point checked (collectively) and listed by rank 0, with
// its state in an existing results file; the exit code is agreed.
static a3_status dry_run_list(const a3_config *cfg, const run_request *req) {
  a3_sweep_plan *p = NULL;
  a3_status s = a3_sweep_plan_make(cfg, &p);
  s = a3_sweep_agree(MPI_COMM_WORLD, s, p ? p->agree_hash : 0);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (s != A3_OK) { // every rank has it (a collective agreement)
    a3_sweep_plan_free(p);
    return s;
  }
  if (rank == 0) s = list_points(cfg, p, req);
  a3_sweep_plan_free(p);
  return a3_agree(MPI_COMM_WORLD, s, "the dry run");
}

static a3_status run_sweep(const a3_config *cfg, const run_request *req, a3_sweep_summary *sum) {
  a3_sweep_point_options ctx = req->point;
  char slice_path[A3_CONFIG_STR_MAX + 96];
  results_path(cfg, req, slice_path, sizeof slice_path);
  const a3_sweep_options opt = {.run = a3_sweep_train_point,
                                .lost = a3_backend_cuda_lost,
                                .ctx = &ctx,
                                .results_path = req->slice_count > 0 ? slice_path : NULL,
                                .force_new = req->force_new,
                                .retry_failed = req->retry_failed,
                                .handle_signals = true,
                                .slice_index = req->slice_index,
                                .slice_count = req->slice_count};
  A3_TRY(a3_sweep_run(MPI_COMM_WORLD, cfg, &opt, sum));
  return A3_OK;
}

// Rank 0's closing lines: what remains and how to go on.
static void report(const a3_sweep_summary *sum, int64_t slice_index, int64_t slice_count) {
  if (sum->interrupted)
    a3_warn("interrupted: %lld points remain; rerun the same command to resume",
            (long long)(sum->n_selected - sum->done - sum->failed));
  else if (sum->failed > sum->diverged)
    a3_warn("sweep finished with %lld of %lld points failed (their reasons are in /reason of "
            "%s); rerunning the same command retries each up to %d attempts (--retry-failed: "
            "beyond that)",
            (long long)(sum->failed - sum->diverged), (long long)sum->n_points, sum->results_path,
            A3_RESULT_MAX_ATTEMPTS);
  if (!sum->interrupted && sum->diverged)
    a3_warn("%lld of %lld points diverged (their loss became NaN or infinite; the step is in "
            "/reason of %s): a rerun does not retry them, since the same run diverges again "
            "(--retry-failed does); try them with a lower train.lr or train.grad_clip in a new "
            "sweep",
            (long long)sum->diverged, (long long)sum->n_points, sum->results_path);
  char of_all[96] = "";
  if (slice_count > 0)
    snprintf(of_all, sizeof of_all, " (slice %lld/%lld of the sweep's %lld)",
             (long long)slice_index, (long long)slice_count, (long long)sum->n_points);
  char diverged[48] = "";
  if (sum->diverged)
    snprintf(diverged, sizeof diverged, " (%lld diverged)", (long long)sum->diverged);
  a3_info("sweep: %lld done, %lld failed%s, %lld pending of %lld points%s (%lld run now) in %.1f "
          "s; results in %s",
          (long long)sum->done, (long long)sum->failed, diverged, (long long)sum->pending,
          (long long)sum->n_selected, of_all, (long long)sum->ran, sum->seconds, sum->results_path);
}

a3_status a3_cmd_sweep(int argc, char **argv) {
  a3_cli_list overrides = {0};
  int force_new = 0, retry_failed = 0, dry_run = 0, no_samples = 0, no_eval = 0;
  const char *slice = NULL;
  long interrupted_exit = 0;
  const a3_cli_option options[] = {
      {"override", 'o', A3_OPT_LIST, "KEY=VALUE",
       "set a config key (YAML value), after the file; repeatable", &overrides, 0, 0},
      {"force-new", 0, A3_OPT_FLAG, NULL,
       "replace an existing OUTPUT_DIR/results.h5 (of this or another sweep) with a new one",
       &force_new, 0, 0},
      {"retry-failed", 0, A3_OPT_FLAG, NULL,
       "run every failed or diverged point again, however often it was tried (once its cause "
       "is fixed); done points stay done",
       &retry_failed, 0, 0},
      {"dry-run", 0, A3_OPT_FLAG, NULL,
       "check every point and list them (index and assignments) with, where OUTPUT_DIR has "
       "results, each one's state and whether a run would run it; run nothing, write nothing",
       &dry_run, 0, 0},
      {"no-samples", 0, A3_OPT_FLAG, NULL, "store no sample images (skips sampling after each run)",
       &no_samples, 0, 0},
      {"no-eval", 0, A3_OPT_FLAG, NULL,
       "evaluate no point (the /metrics of eval.metrics stay NaN; see 'a3fta eval --help')",
       &no_eval, 0, 0},
      {"slice", 0, A3_OPT_STRING, "I/N",
       "run only slice I of N (points with index % N == I) into "
       "OUTPUT_DIR/results-slice-I-of-N.h5; for job arrays, combined by 'a3fta merge'",
       &slice, 0, 0},
      {"interrupted-exit", 0, A3_OPT_INT, "CODE",
       "exit with CODE (3-125) instead of 0 when stopped by a signal with points left to run "
       "(a job script then requeues)",
       &interrupted_exit, 3, 125},
  };
  const a3_cli_command cmd = {
      "sweep",
      "CONFIG [-o key.path=value]... [--force-new] [--retry-failed] [--dry-run]\n"
      "                   [--no-samples] [--no-eval] [--slice I/N] [--interrupted-exit CODE]",
      "Run every point of a config's sweep grid across MPI rank groups.",
      "Points: every combination of sweep.grid and sweep.zip, then each of sweep.points\n"
      "(see configs/README.md). Launch with mpirun or srun; the ranks form groups of\n"
      "parallel.ranks_per_run that train one point each (data parallel), taking points\n"
      "dynamically or round robin (parallel.schedule).\n"
      "\n"
      "Writes OUTPUT_DIR/results.h5 (one row per point: status, losses, held-out loss curve,\n"
      "timings, parameter counts, metrics, sample images, most-memorized pairs; h5dump\n"
      "shows what each dataset means) and OUTPUT_DIR/point-NNNNNN/\n"
      "(each point's config.yaml, losses.csv, checkpoint.h5, samples, eval.json).\n"
      "\n"
      "Evaluation: after training, each point's checkpoint is evaluated as 'a3fta eval' does\n"
      "(eval.samples images, seed train.seed) and the metrics eval.metrics names fill its\n"
      "/metrics slots; a failed evaluation fails the point with the reason.\n"
      "\n"
      "Resume: run the same command again. Done points are skipped, failed ones retried\n"
      "(up to 3 attempts), interrupted ones started again (from their checkpoint).\n"
      "A point whose loss became NaN or infinite is marked diverged (status 4) and not\n"
      "retried: the same run diverges again. --retry-failed runs every failed or diverged\n"
      "point again (from its checkpoint), e.g. after fixing a full disk.\n"
      "SIGTERM or SIGUSR1 (Slurm before a time limit) stops taking new points, finishes\n"
      "the running ones, closes the file and exits 0 (or --interrupted-exit's CODE when\n"
      "points are left; jobs/sweep.sbatch requeues the job on it).\n"
      "\n"
      "Job arrays: --slice I/N runs the points whose index modulo N is I, in a results\n"
      "file of the whole sweep's layout (OUTPUT_DIR/results-slice-I-of-N.h5, the other\n"
      "points left pending); 'a3fta merge OUT.h5 SLICE_FILES...' combines the N files into\n"
      "one equal to a single sweep's (jobs/sweep-array.sbatch).",
      options,
      (int)(sizeof options / sizeof options[0]),
      1,
      1};
  a3_cli_args args;
  A3_TRY(a3_cli_parse(&cmd, argc, argv, &args));
  if (args.help_requested) return A3_OK;
  int64_t slice_index = 0, slice_count = 0;
  if (slice) A3_TRY(parse_slice(slice, &slice_index, &slice_count));
  A3_TRY(a3_cli_start_mpi());
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  a3_config cfg;
  a3_status s = a3_config_load(args.positional[0], overrides.items, overrides.count, &cfg);
  // A config that fails to load on some ranks only must not leave the others waiting.
  A3_TRY(a3_sweep_agree(MPI_COMM_WORLD, s, 0));
  const run_request req = {.point = {.samples = !no_samples, .eval = !no_eval},
                           .force_new = force_new != 0,
                           .retry_failed = retry_failed != 0,
                           .slice_index = slice_index,
                           .slice_count = slice_count};
  a3_sweep_summary sum;
  s = dry_run ? dry_run_list(&cfg, &req) : run_sweep(&cfg, &req, &sum);
  a3_config_free(&cfg);
  A3_TRY(s);
  if (dry_run) return A3_OK;
  // Every rank has the same summary: all exit with the same code.
  if (sum.interrupted && interrupted_exit) a3_cli_request_exit_code((int)interrupted_exit);
  if (rank == 0) report(&sum, slice_index, slice_count);
  return A3_OK;
}
