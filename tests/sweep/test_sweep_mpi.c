// The sweep engine on real MPI ranks with a fake run function (sweep_fake.h):
//   run       every point done exactly once, file contents right: ranks_per_run
//             1 and 2, dynamic and static
//   resume    a stop after K points, then a rerun: nothing redone, values equal
//             to an uninterrupted sweep
//   failed    a failing point is marked failed with its reason; reruns retry
//             it up to the attempt limit; a diverging one is marked diverged
//             with its reason and never retried; --retry-failed runs both again
//   other     a results file of another sweep (or not HDF5 at all) is a clear
//             error on every rank; --force-new replaces it
//   mismatch  ranks with different configs, a rank whose points are invalid,
//             a world size ranks_per_run does not divide: errors on every rank,
//             never a hang (SIGALRM ends the test after 20 s)
#include "sweep_fake.h"

#include <signal.h>

static int world_rank = 0, world_size = 1;

static const char *const SWEEP_YAML =
    "train: {steps: 12, warmup: 0}\n"
    "output: {dir: @DIR@, samples_per_run: 3}\n"
    "model: {arch: {sample_size: 8, block_out_channels: [8, 8], down_block_types: "
    "[DownBlock2D, AttnDownBlock2D], up_block_types: [AttnUpBlock2D, UpBlock2D], "
    "norm_num_groups: 4}}\n"
    "sweep:\n"
    "  grid: {train.lr: [1.0e-4, 3.0e-4, 1.0e-3], strategy.name: [full, a3fta]}\n"
    "  zip: {train.seed: [0, 1], data.subset_seed: [5, 6]}\n"
    "  points: [{train.lr: 0.01, train.steps: 7}, {strategy.name: lora}]\n";
enum { N_POINTS = 14, S = 3, C = 1, H = 8, W = 8, K = A3_RESULT_CURVE_MAX };

// Point i's config, derived here independently of the engine's expansion:
// axes in schema order data.subset_seed+train.seed (zip), strategy.name,
// train.lr (fastest), then the two explicit points.
static a3_status expected_config(const char *dir, int64_t i, a3_config *cfg) {
  static const char *const lrs[3] = {"1.0e-4", "3.0e-4", "1.0e-3"};
  static const char *const strategies[2] = {"full", "a3fta"};
  A3_TRY(load_config("train: {steps: 12, warmup: 0}\n"
                     "output: {dir: @DIR@, samples_per_run: 3}\n",
                     dir, cfg));
  if (i < 12) {
    const int z = (int)(i / 6), s = (int)(i / 3 % 2), l = (int)(i % 3);
    char seed[16], subset[16];
    snprintf(seed, sizeof seed, "%d", z);
    snprintf(subset, sizeof subset, "%d", 5 + z);
    A3_TRY(a3_config_set(cfg, "train.seed", seed, "test"));
    A3_TRY(a3_config_set(cfg, "data.subset_seed", subset, "test"));
    A3_TRY(a3_config_set(cfg, "strategy.name", strategies[s], "test"));
    A3_TRY(a3_config_set(cfg, "train.lr", lrs[l], "test"));
  } else if (i == 12) {
    A3_TRY(a3_config_set(cfg, "train.lr", "0.01", "test"));
    A3_TRY(a3_config_set(cfg, "train.steps", "7", "test"));
  } else {
    A3_TRY(a3_config_set(cfg, "strategy.name", "lora", "test"));
  }
  return A3_OK;
}

// ---------------------------------------------------------------- file contents
typedef struct {
  int8_t status[N_POINTS];
  int32_t attempts[N_POINTS], n_samples[N_POINTS];
  double final_loss[N_POINTS], curve[N_POINTS * K], fid[N_POINTS], kid[N_POINTS],
      diversity[N_POINTS], compute[N_POINTS], wall[N_POINTS], lr[N_POINTS];
  int64_t curve_step[N_POINTS * K], peak[N_POINTS], seed[N_POINTS], steps[N_POINTS];
  uint8_t samples[N_POINTS * S * C * H * W];
  char strategy[N_POINTS][32];
  char reason[N_POINTS][A3_RESULT_REASON_MAX];
  char config[N_POINTS][4096];
} dump;

static int read_dump(const char *path, dump *d) {
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return 0;
  int ok = h5_read(f, "status", H5T_NATIVE_INT8, d->status) &&
           h5_read(f, "attempts", H5T_NATIVE_INT32, d->attempts) &&
           h5_read(f, "n_samples", H5T_NATIVE_INT32, d->n_samples) &&
           h5_read(f, "final_loss", H5T_NATIVE_DOUBLE, d->final_loss) &&
           h5_read(f, "loss_curve", H5T_NATIVE_DOUBLE, d->curve) &&
           h5_read(f, "loss_curve_step", H5T_NATIVE_INT64, d->curve_step) &&
           h5_read(f, "metrics/fid", H5T_NATIVE_DOUBLE, d->fid) &&
           h5_read(f, "metrics/kid_mean", H5T_NATIVE_DOUBLE, d->kid) &&
           h5_read(f, "metrics/diversity", H5T_NATIVE_DOUBLE, d->diversity) &&
           h5_read(f, "compute_s", H5T_NATIVE_DOUBLE, d->compute) &&
           h5_read(f, "wall_s", H5T_NATIVE_DOUBLE, d->wall) &&
           h5_read(f, "peak_mem_bytes", H5T_NATIVE_INT64, d->peak) &&
           h5_read(f, "samples", H5T_NATIVE_UINT8, d->samples) &&
           h5_read(f, "points/train.lr", H5T_NATIVE_DOUBLE, d->lr) &&
           h5_read(f, "points/train.seed", H5T_NATIVE_INT64, d->seed) &&
           h5_read(f, "points/train.steps", H5T_NATIVE_INT64, d->steps) &&
           h5_read_strings(f, "points/strategy.name", N_POINTS, d->strategy[0], 32) &&
           h5_read_strings(f, "reason", N_POINTS, d->reason[0], A3_RESULT_REASON_MAX) &&
           h5_read_strings(f, "points/config", N_POINTS, d->config[0], 4096);
  H5Fclose(f);
  return ok;
}

// A point expected not done: its status, reason and attempts.
typedef struct {
  int64_t point; // -1: none
  int8_t status;
  const char *reason;
  int attempts;
} not_done;

static const not_done *find_not_done(const not_done *list, int n, int64_t point) {
  for (int k = 0; k < n; k++)
    if (list[k].point == point) return &list[k];
  return NULL;
}

// Checks a finished sweep's file against the expected values (rank 0): the
// points of `fails` (n_fails of them) as they say, the others done.
static void check_file(const char *dir, int ranks_per_run, const not_done *fails, int n_fails) {
  if (world_rank != 0) return;
  char path[600];
  snprintf(path, sizeof path, "%s/results.h5", dir);
  static dump d;
  memset(&d, 0, sizeof d);
  CHECK_MSG(read_dump(path, &d), "cannot read %s", path);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  CHECK(f >= 0);
  if (f >= 0) {
    hid_t a = H5Aopen(f, "format", H5P_DEFAULT);
    CHECK(a >= 0);
    if (a >= 0) H5Aclose(a);
    CHECK(H5Aexists(f, "sweep_hash") > 0 && H5Aexists(f, "config") > 0 &&
          H5Aexists(f, "created_utc") > 0);
    hid_t ds = H5Dopen2(f, "loss_curve", H5P_DEFAULT);
    CHECK(ds >= 0 && H5Aexists(ds, "description") > 0);
    if (ds >= 0) H5Dclose(ds);
    H5Fclose(f);
  }
  for (int64_t i = 0; i < N_POINTS; i++) {
    a3_config cfg;
    if (expected_config(dir, i, &cfg) != A3_OK) {
      CHECK_MSG(0, "expected_config %lld: %s", (long long)i, a3_error_message());
      continue;
    }
    a3_run_result e;
    a3_run_result_init(&e);
    fake_expected(&cfg, &e);
    CHECK_MSG(d.lr[i] == cfg.train.lr, "point %lld lr %g vs %g", (long long)i, d.lr[i],
              cfg.train.lr);
    CHECK(d.seed[i] == cfg.train.seed && d.steps[i] == cfg.train.steps);
    CHECK_MSG(!strcmp(d.strategy[i], i == 13                    ? "lora"
                                     : i < 12 && i / 3 % 2 == 0 ? "full"
                                                                : "a3fta"),
              "point %lld strategy %s", (long long)i, d.strategy[i]);
    char want_dir[700];
    snprintf(want_dir, sizeof want_dir, "dir: %s/point-%06lld", dir, (long long)i);
    CHECK_MSG(strstr(d.config[i], want_dir) != NULL, "point %lld config lacks '%s'", (long long)i,
              want_dir);
    const not_done *x = find_not_done(fails, n_fails, i);
    if (x) {
      CHECK_MSG(d.status[i] == x->status, "point %lld status %d", (long long)i, d.status[i]);
      CHECK_MSG(!strcmp(d.reason[i], x->reason), "reason '%s' vs '%s'", d.reason[i], x->reason);
      CHECK_MSG(d.attempts[i] == x->attempts, "point %lld attempts %d vs %d", (long long)i,
                d.attempts[i], x->attempts);
    } else {
      CHECK_MSG(d.status[i] == A3_POINT_DONE, "point %lld status %d", (long long)i, d.status[i]);
      CHECK_MSG(d.reason[i][0] == '\0', "point %lld reason '%s'", (long long)i, d.reason[i]);
      CHECK_MSG(d.attempts[i] == 1, "point %lld attempts %d", (long long)i, d.attempts[i]);
    }
    CHECK_MSG(d.final_loss[i] == e.final_loss, "point %lld final loss %.17g vs %.17g", (long long)i,
              d.final_loss[i], e.final_loss);
    for (int k = 0; k < K; k++) {
      CHECK(same_double(d.curve[i * K + k], k < e.n_curve ? e.curve_loss[k] : NAN));
      CHECK(d.curve_step[i * K + k] == (k < e.n_curve ? e.curve_step[k] : -1));
    }
    CHECK(d.fid[i] == e.metrics[A3_RESULT_FID] && d.kid[i] == e.metrics[A3_RESULT_KID_MEAN]);
    CHECK(isnan(d.diversity[i]));
    CHECK(d.compute[i] == e.compute_s);
    CHECK_MSG(d.wall[i] >= 0.005 && d.wall[i] < 10.0, "point %lld wall %g", (long long)i,
              d.wall[i]);
    CHECK_MSG(d.peak[i] == 1000000 + ranks_per_run - 1, "point %lld peak %lld", (long long)i,
              (long long)d.peak[i]);
    CHECK(d.n_samples[i] == FAKE_SAMPLES);
    int pixels_ok = 1;
    for (int k = 0; k < S; k++)
      for (int64_t p = 0; p < C * H * W; p++) {
        const uint8_t got = d.samples[((size_t)i * S + (size_t)k) * C * H * W + (size_t)p];
        if (got != (k < FAKE_SAMPLES ? fake_pixel(&cfg, k, p) : 0)) pixels_ok = 0;
      }
    CHECK_MSG(pixels_ok, "point %lld: sample images differ", (long long)i);
    a3_config_free(&cfg);
  }
}

// Every point in the logs exactly `want` times (rank 0).
static void check_logs(const char *dir, int want_each) {
  if (world_rank != 0) return;
  int counts[N_POINTS] = {0};
  read_logs(dir, world_size, N_POINTS, counts);
  for (int i = 0; i < N_POINTS; i++)
    CHECK_MSG(counts[i] == want_each, "point %d ran %d times, expected %d", i, counts[i],
              want_each);
}

// The test sweep with a parallel section and an optional override ("sweep.points=[...]").
enum { FORCE_NEW = 1, RETRY_FAILED = 2 }; // run_sweep's flags

static a3_status run_sweep(const char *dir, const char *parallel_yaml, const char *override,
                           fake_ctx *ctx, unsigned flags, a3_sweep_summary *sum) {
  char yaml[4096];
  snprintf(yaml, sizeof yaml, "%s%s", SWEEP_YAML, parallel_yaml);
  a3_config cfg;
  A3_TRY(load_config(yaml, dir, &cfg));
  if (override) {
    a3_status o = a3_config_apply_override(&cfg, override);
    if (o == A3_OK) o = a3_config_validate(&cfg);
    if (o != A3_OK) {
      a3_config_free(&cfg);
      return o;
    }
  }
  snprintf(ctx->dir, sizeof ctx->dir, "%s", dir);
  ctx->world_rank = world_rank;
  const a3_sweep_options opt = {.run = fake_run,
                                .ctx = ctx,
                                .force_new = flags & FORCE_NEW,
                                .retry_failed = flags & RETRY_FAILED};
  a3_status s = a3_sweep_run(MPI_COMM_WORLD, &cfg, &opt, sum);
  a3_config_free(&cfg);
  return s;
}

static double now_s(void) { return MPI_Wtime(); }

// ---------------------------------------------------------------- scenarios
static void scenario_run(void) {
  static const struct {
    int rpr;
    const char *schedule;
  } cases[4] = {{1, "dynamic"}, {1, "static"}, {2, "dynamic"}, {2, "static"}};
  for (int c = 0; c < 4; c++) {
    const double t0 = now_s();
    char dir[512], extra[256];
    make_temp_dir(MPI_COMM_WORLD, "sweep-run", dir, sizeof dir);
    snprintf(extra, sizeof extra, "parallel: {ranks_per_run: %d, schedule: %s}\n", cases[c].rpr,
             cases[c].schedule);
    fake_ctx ctx = {.fail_point = -1};
    a3_sweep_summary sum;
    a3_status s = run_sweep(dir, extra, NULL, &ctx, 0, &sum);
    CHECK_MSG(s == A3_OK, "rpr %d %s: %s", cases[c].rpr, cases[c].schedule, a3_error_message());
    CHECK(sum.n_points == N_POINTS && sum.done == N_POINTS && sum.failed == 0 && sum.pending == 0 &&
          sum.ran == N_POINTS && !sum.interrupted && sum.done_before == 0);
    MPI_Barrier(MPI_COMM_WORLD);
    check_logs(dir, 1);
    check_file(dir, cases[c].rpr, NULL, 0);
    // Static: group g ran pending points g, g + G, ... (the logs say which rank led).
    if (world_rank == 0 && !strcmp(cases[c].schedule, "static")) {
      const int groups = world_size / cases[c].rpr;
      for (int g = 0; g < groups; g++) {
        int counts[N_POINTS] = {0};
        char path[600];
        snprintf(path, sizeof path, "%s/log.%d", dir, g * cases[c].rpr);
        FILE *f = fopen(path, "r");
        char line[64];
        while (f && fgets(line, sizeof line, f)) {
          long long i = -1;
          if (sscanf(line, "point %lld", &i) == 1 && i >= 0 && i < N_POINTS) counts[i]++;
        }
        if (f) fclose(f);
        for (int i = 0; i < N_POINTS; i++)
          CHECK_MSG(counts[i] == (i % groups == g), "static: group %d point %d count %d", g, i,
                    counts[i]);
      }
    }
    // A rerun finds nothing to do.
    MPI_Barrier(MPI_COMM_WORLD); // rank 0 has read the logs
    if (world_rank == 0) remove_logs(dir, world_size);
    MPI_Barrier(MPI_COMM_WORLD);
    s = run_sweep(dir, extra, NULL, &ctx, 0, &sum);
    CHECK(s == A3_OK && sum.ran == 0 && sum.done_before == N_POINTS && sum.done == N_POINTS);
    MPI_Barrier(MPI_COMM_WORLD);
    check_logs(dir, 0);
    if (world_rank == 0 && !test_failures) remove_tree(dir);
    if (world_rank == 0)
      fprintf(stderr, "run: rpr %d %s: %.2f s\n", cases[c].rpr, cases[c].schedule, now_s() - t0);
  }
}

static void scenario_resume(void) {
  char dir[512], ref[512];
  make_temp_dir(MPI_COMM_WORLD, "sweep-resume", dir, sizeof dir);
  make_temp_dir(MPI_COMM_WORLD, "sweep-ref", ref, sizeof ref);
  const char *extra = "parallel: {ranks_per_run: 1, schedule: dynamic}\n";
  // 1. Stopped after rank 0 ran 2 points.
  // 50 ms points: on an oversubscribed machine the other ranks must not finish
  // every point before rank 0's second one asks to stop.
  fake_ctx ctx = {.fail_point = -1, .stop_after = 2, .sleep_ms = 50};
  a3_sweep_summary sum;
  a3_status s = run_sweep(dir, extra, NULL, &ctx, 0, &sum);
  CHECK_MSG(s == A3_OK, "%s", a3_error_message());
  CHECK_MSG(sum.interrupted && sum.done >= 2 && sum.done < N_POINTS && sum.pending > 0 &&
                sum.done + sum.pending == N_POINTS && sum.ran == sum.done,
            "interrupted %d done %lld pending %lld ran %lld", sum.interrupted, (long long)sum.done,
            (long long)sum.pending, (long long)sum.ran);
  const int64_t first_done = sum.done;
  MPI_Barrier(MPI_COMM_WORLD);
  int first[N_POINTS] = {0};
  if (world_rank == 0) {
    read_logs(dir, world_size, N_POINTS, first);
    remove_logs(dir, world_size);
  }
  // 2. The same command again: only the rest runs.
  a3_sweep_clear_stop();
  MPI_Barrier(MPI_COMM_WORLD);
  fake_ctx ctx2 = {.fail_point = -1};
  s = run_sweep(dir, extra, NULL, &ctx2, 0, &sum);
  CHECK_MSG(s == A3_OK, "%s", a3_error_message());
  CHECK(!sum.interrupted && sum.done == N_POINTS && sum.done_before == first_done &&
        sum.ran == N_POINTS - first_done);
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank == 0) {
    int second[N_POINTS] = {0};
    read_logs(dir, world_size, N_POINTS, second);
    int n_first = 0;
    for (int i = 0; i < N_POINTS; i++) {
      n_first += first[i];
      CHECK_MSG(first[i] + second[i] == 1, "point %d ran %d + %d times", i, first[i], second[i]);
    }
    CHECK(n_first == first_done);
  }
  check_file(dir, 1, NULL, 0);
  // 3. Equal to an uninterrupted sweep, value for value.
  fake_ctx ctx3 = {.fail_point = -1};
  s = run_sweep(ref, extra, NULL, &ctx3, 0, &sum);
  CHECK(s == A3_OK && sum.done == N_POINTS);
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank == 0) {
    static dump a, b;
    char pa[600], pb[600];
    snprintf(pa, sizeof pa, "%s/results.h5", dir);
    snprintf(pb, sizeof pb, "%s/results.h5", ref);
    CHECK(read_dump(pa, &a) && read_dump(pb, &b));
    CHECK(!memcmp(a.status, b.status, sizeof a.status));
    CHECK(!memcmp(a.attempts, b.attempts, sizeof a.attempts));
    CHECK(!memcmp(a.final_loss, b.final_loss, sizeof a.final_loss));
    CHECK(!memcmp(a.curve, b.curve, sizeof a.curve));
    CHECK(!memcmp(a.curve_step, b.curve_step, sizeof a.curve_step));
    CHECK(!memcmp(a.fid, b.fid, sizeof a.fid) && !memcmp(a.kid, b.kid, sizeof a.kid));
    CHECK(!memcmp(a.samples, b.samples, sizeof a.samples));
    CHECK(!memcmp(a.peak, b.peak, sizeof a.peak) && !memcmp(a.lr, b.lr, sizeof a.lr));
    if (!test_failures) {
      remove_tree(dir);
      remove_tree(ref);
    }
  }
}

static void scenario_failed(void) {
  char dir[512];
  make_temp_dir(MPI_COMM_WORLD, "sweep-failed", dir, sizeof dir);
  const char *extra = "parallel: {ranks_per_run: 2, schedule: dynamic}\n";
  enum { FAILS = 4, DIVERGES = 9 };
  for (int attempt = 1; attempt <= A3_RESULT_MAX_ATTEMPTS + 1; attempt++) {
    fake_ctx ctx = {.fail_point = FAILS, .diverge_point = DIVERGES};
    a3_sweep_summary sum;
    a3_status s = run_sweep(dir, extra, NULL, &ctx, 0, &sum);
    CHECK_MSG(s == A3_OK, "%s", a3_error_message());
    CHECK(sum.done == N_POINTS - 2 && sum.failed == 2 && sum.diverged == 1 && sum.pending == 0 &&
          !sum.interrupted);
    // First all points; then only the failed one, until it was tried 3 times;
    // the diverged one never again.
    const int tries = attempt < A3_RESULT_MAX_ATTEMPTS ? attempt : A3_RESULT_MAX_ATTEMPTS;
    const int64_t want_ran = attempt == 1 ? N_POINTS : attempt <= A3_RESULT_MAX_ATTEMPTS ? 1 : 0;
    CHECK_MSG(sum.ran == want_ran, "attempt %d ran %lld", attempt, (long long)sum.ran);
    MPI_Barrier(MPI_COMM_WORLD);
    const not_done fails[2] = {
        {FAILS, A3_POINT_FAILED, "rank 1 of the group: input error: fake failure of point 4",
         tries},
        {DIVERGES, A3_POINT_DIVERGED,
         "rank 1 of the group: training diverged: fake loss nan at step 3 of point 9", 1}};
    check_file(dir, 2, fails, 2);
    if (world_rank == 0) {
      int counts[N_POINTS] = {0};
      read_logs(dir, world_size, N_POINTS, counts);
      for (int i = 0; i < N_POINTS; i++) {
        const int want = i == FAILS ? tries : 1;
        CHECK_MSG(counts[i] == want, "attempt %d: point %d ran %d times", attempt, i, counts[i]);
      }
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
  // --retry-failed: both run once more, whatever their attempts.
  fake_ctx ctx = {.fail_point = -1};
  a3_sweep_summary sum;
  a3_status s = run_sweep(dir, extra, NULL, &ctx, RETRY_FAILED, &sum);
  CHECK_MSG(s == A3_OK, "%s", a3_error_message());
  CHECK_MSG(sum.ran == 2 && sum.done == N_POINTS && sum.failed == 0 && sum.diverged == 0,
            "retry: ran %lld, done %lld, failed %lld", (long long)sum.ran, (long long)sum.done,
            (long long)sum.failed);
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank == 0) {
    static dump d;
    char path[600];
    snprintf(path, sizeof path, "%s/results.h5", dir);
    CHECK(read_dump(path, &d));
    CHECK_MSG(d.attempts[FAILS] == A3_RESULT_MAX_ATTEMPTS + 1 && d.attempts[DIVERGES] == 2,
              "retry: attempts %d and %d", d.attempts[FAILS], d.attempts[DIVERGES]);
    CHECK(d.status[FAILS] == A3_POINT_DONE && d.status[DIVERGES] == A3_POINT_DONE);
    CHECK(d.reason[FAILS][0] == '\0' && d.reason[DIVERGES][0] == '\0');
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank == 0 && !test_failures) remove_tree(dir);
}

// The error must be `code` with `text` in its message on every rank.
static void check_error(a3_status s, a3_status code, const char *text, const char *what) {
  CHECK_MSG(s == code && strstr(a3_error_message(), text) != NULL,
            "%s: rank %d got status %d, message '%s' (want %d with '%s')", what, world_rank, s,
            a3_error_message(), code, text);
  a3_error_clear();
}

static void scenario_other(void) {
  char dir[512];
  make_temp_dir(MPI_COMM_WORLD, "sweep-other", dir, sizeof dir);
  fake_ctx ctx = {.fail_point = -1};
  a3_sweep_summary sum;
  a3_status s = run_sweep(dir, "", NULL, &ctx, 0, &sum);
  CHECK(s == A3_OK && sum.done == N_POINTS);
  // Another sweep (other explicit points) in the same folder.
  const char *other = "sweep.points=[{train.lr: 0.5}]";
  s = run_sweep(dir, "", other, &ctx, 0, &sum);
  check_error(s, A3_ERR_CONFIG, "results file belongs to a different sweep (hash", "other sweep");
  // The schedule is not part of the sweep's identity: resuming under static is fine.
  s = run_sweep(dir, "parallel: {schedule: static}\n", NULL, &ctx, 0, &sum);
  CHECK_MSG(s == A3_OK && sum.ran == 0 && sum.done == N_POINTS, "%s", a3_error_message());
  // --force-new replaces it.
  s = run_sweep(dir, "", other, &ctx, FORCE_NEW, &sum);
  CHECK_MSG(s == A3_OK && sum.n_points == 13 && sum.done == 13 && sum.ran == 13, "%s",
            a3_error_message());
  // Not an HDF5 file at all.
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank == 0) {
    char path[600];
    snprintf(path, sizeof path, "%s/results.h5", dir);
    FILE *f = fopen(path, "w");
    if (f) {
      fputs("not hdf5\n", f);
      fclose(f);
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
  s = run_sweep(dir, "", NULL, &ctx, 0, &sum);
  check_error(s, A3_ERR_INPUT, "is not a readable HDF5 file", "not HDF5");
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank == 0 && !test_failures) remove_tree(dir);
}

static void scenario_mismatch(void) {
  char dir[512];
  make_temp_dir(MPI_COMM_WORLD, "sweep-mismatch", dir, sizeof dir);
  fake_ctx ctx = {.fail_point = -1};
  a3_sweep_summary sum;
  // The last rank sees another grid.
  const char *grid = world_rank == world_size - 1 ? "sweep.grid={train.lr: [0.5]}" : NULL;
  a3_status s = run_sweep(dir, "", grid, &ctx, 0, &sum);
  check_error(s, A3_ERR_CONFIG, "ranks disagree on the sweep (hash", "different configs");
  // Rank 1's sweep has an invalid point (warmup > steps).
  const char *bad = world_rank == 1 ? "sweep.points=[{train.warmup: 100}]" : NULL;
  s = run_sweep(dir, "", bad, &ctx, 0, &sum);
  check_error(s, A3_ERR_CONFIG, world_rank == 1 ? "sweep point 12 (train.warmup=100)" : "rank 1",
              "invalid point on one rank");
  // ranks_per_run 3 does not divide 4 ranks.
  s = run_sweep(dir, "parallel: {ranks_per_run: 3}\n", NULL, &ctx, 0, &sum);
  check_error(s, A3_ERR_CONFIG, "parallel.ranks_per_run = 3 does not divide the 4 ranks",
              "ranks_per_run 3");
  // Nothing was created by any of these.
  MPI_Barrier(MPI_COMM_WORLD);
  if (world_rank == 0) {
    char path[600];
    snprintf(path, sizeof path, "%s/results.h5", dir);
    CHECK(access(path, F_OK) != 0);
    if (!test_failures) remove_tree(dir);
  }
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world_size);
  a3_log_set_rank(world_rank, world_size);
  a3_log_set_level(getenv("A3FTA_TEST_VERBOSE") ? A3_LOG_INFO : A3_LOG_WARN);
  alarm(60); // a hang fails the test instead of waiting for ctest's timeout
  const char *which = argc > 1 ? argv[1] : "";
  const double t0 = now_s();
  if (world_size != 4) {
    CHECK_MSG(0, "run on 4 ranks (got %d)", world_size);
  } else if (!strcmp(which, "run")) {
    scenario_run();
  } else if (!strcmp(which, "resume")) {
    scenario_resume();
  } else if (!strcmp(which, "failed")) {
    scenario_failed();
  } else if (!strcmp(which, "other")) {
    scenario_other();
  } else if (!strcmp(which, "mismatch")) {
    alarm(20);
    scenario_mismatch();
  } else {
    CHECK_MSG(0, "unknown scenario '%s' (run, resume, failed, other, mismatch)", which);
  }
  if (world_rank == 0) fprintf(stderr, "scenario %s: %.2f s\n", which, now_s() - t0);
  const int rc = mpi_test_done(which);
  MPI_Finalize();
  return rc;
}
