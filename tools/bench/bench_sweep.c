// Sweep-overhead benchmark (tools/bench/run_sweep.sh runs it): one sweep of
// a config through the real engine (a3_sweep_run: plan, results file,
// scheduling, per-point HDF5 writes, close), each point trained by a3_train
// as `a3fta sweep --no-samples` does, and a timeline of every group:
//
//   |setup| run point | gap | run point | gap | ... | run point |tail|
//   0                                                            W
//
// busy = time inside the run function (a3_train: data, model, the steps,
// checkpoints, losses.csv); machinery = setup + gaps (plan, agreement,
// results file, mark running, write the point, take the next one, the
// group's reduction of the outcome) + the closing (the tail of the group that
// finished last: the others waited that long for nothing more than the
// close); idle = the rest of the other groups' tails (waiting for the last
// point). Fractions of G * W, W the sweep's wall time (slowest rank).
//
// usage: mpirun -np N a3fta_bench_sweep CONFIG [KEY=VALUE ...]
// prints one line: key=value pairs (run_sweep.sh makes the table).
#include "a3fta/sweep.h"
#include "a3fta/trainer.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_EVENTS = 4096 };

typedef struct {
  double origin;
  int n;
  double ev[MAX_EVENTS][3]; // start, end (from origin), a3_train's loop seconds
  double *losses;           // per step, for the result's loss curve
  int64_t cap;
} bench;

static void on_step(void *ctx, int64_t step, double loss, double lr) {
  (void)lr;
  bench *b = ctx;
  if (step >= 1 && step <= b->cap) b->losses[step - 1] = loss;
}

static a3_status run_point(const a3_config *pc, MPI_Comm group, a3_run_result *r, void *ctx) {
  bench *b = ctx;
  const double t0 = MPI_Wtime();
  free(b->losses);
  b->cap = pc->train.steps;
  A3_TRY(A3_ALLOC(b->losses, (size_t)b->cap));
  const a3_train_options opt = {.on_step = on_step, .ctx = b};
  a3_train_result tr = {0};
  A3_TRY(a3_train(pc, group, &opt, &tr));
  a3_run_result_set_curve(r, b->losses, tr.steps_done);
  r->final_loss = tr.last_loss;
  r->compute_s = tr.seconds;
  if (b->n < MAX_EVENTS) {
    b->ev[b->n][0] = t0 - b->origin;
    b->ev[b->n][1] = MPI_Wtime() - b->origin;
    b->ev[b->n][2] = tr.seconds;
    b->n++;
  }
  return A3_OK;
}

typedef struct {
  double busy, train, gaps, end; // of one group
} timeline;

static timeline group_timeline(const double (*ev)[3], int n) {
  timeline t = {0, 0, 0, 0};
  for (int i = 0; i < n; i++) {
    t.busy += ev[i][1] - ev[i][0];
    t.train += ev[i][2];
    t.gaps += ev[i][0] - (i ? ev[i - 1][1] : 0.0);
    t.end = ev[i][1];
  }
  return t;
}

// Rank 0: every group leader's events -> the fractions.
static void report(const bench *b, int rank, int size, int per_group, int64_t points, double W,
                   const char *label) {
  const int n_groups = size / per_group;
  int *counts = calloc((size_t)size, sizeof *counts),
      *displs = calloc((size_t)size, sizeof *displs);
  const int mine = (rank % per_group == 0 ? b->n : 0) * 3;
  MPI_Gather(&mine, 1, MPI_INT, counts, 1, MPI_INT, 0, MPI_COMM_WORLD);
  int total = 0;
  for (int r = 0; rank == 0 && r < size; r++) displs[r] = total, total += counts[r];
  double *all = malloc(((size_t)total + 3) * sizeof *all);
  MPI_Gatherv(b->ev, mine, MPI_DOUBLE, all, counts, displs, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    double busy = 0, train = 0, gaps = 0, last_end = 0, tails = 0;
    for (int g = 0; g < n_groups; g++) {
      const int r = g * per_group;
      const timeline t = group_timeline((const double(*)[3])(all + displs[r]), counts[r] / 3);
      busy += t.busy, train += t.train, gaps += t.gaps, tails += W - t.end;
      last_end = fmax(last_end, t.end);
    }
    const double GW = n_groups * W, close = n_groups * (W - last_end), idle = tails - close;
    printf("label=%s points=%lld groups=%d wall_s=%.3f busy=%.4f train_loop=%.4f "
           "machinery=%.4f setup_and_gaps=%.4f close=%.4f idle=%.4f\n",
           label, (long long)points, n_groups, W, busy / GW, train / GW, (gaps + close) / GW,
           gaps / GW, close / GW, idle / GW);
  }
  free(all), free(counts), free(displs);
}

int main(int argc, char **argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  a3_log_set_level(A3_LOG_WARN);
  if (argc < 2) {
    if (rank == 0) fprintf(stderr, "usage: a3fta_bench_sweep CONFIG [KEY=VALUE ...]\n");
    MPI_Finalize();
    return 2;
  }
  a3_config cfg;
  a3_status s = a3_config_load(argv[1], (const char *const *)argv + 2, argc - 2, &cfg);
  static bench b; // large: not on the stack
  const char *label = getenv("BENCH_LABEL") ? getenv("BENCH_LABEL") : "sweep";
  a3_sweep_summary sum = {0};
  double W = 0.0;
  if (s == A3_OK) {
    const a3_sweep_options opt = {.run = run_point, .ctx = &b, .force_new = true};
    MPI_Barrier(MPI_COMM_WORLD);
    b.origin = MPI_Wtime();
    s = a3_sweep_run(MPI_COMM_WORLD, &cfg, &opt, &sum);
    double mine = MPI_Wtime() - b.origin;
    MPI_Allreduce(&mine, &W, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  }
  if (s == A3_OK)
    report(&b, rank, size, (int)cfg.parallel.ranks_per_run, sum.n_points, W, label);
  else
    a3_log_error_status(s);
  if (s == A3_OK) a3_config_free(&cfg);
  free(b.losses);
  MPI_Finalize();
  return s == A3_OK ? 0 : 1;
}
