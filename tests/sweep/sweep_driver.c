// A stand-in for `a3fta sweep` with the fake run function (sweep_fake.h), for
// the process-level tests (kill_resume.sh): signals, kill -9, reruns.
//
//   sweep_driver CONFIG.yaml run     the sweep (SIGTERM/SIGUSR1 stop it); per-point
//                                    sleep from FAKE_SLEEP_MS; exit 0 also when
//                                    interrupted ("interrupted: N points remain")
//   sweep_driver CONFIG.yaml check   (one rank) opens the results file if there is
//                                    one, checks every done point's values against
//                                    the fake run's, prints "done: i j ..." and
//                                    "complete" when every point is done
#include "sweep_fake.h"

static int check(const a3_config *cfg) {
  a3_sweep_plan *plan = NULL;
  if (a3_sweep_plan_make(cfg, &plan) != A3_OK) {
    fprintf(stderr, "check: %s\n", a3_error_message());
    return 1;
  }
  char path[A3_CONFIG_STR_MAX + 32];
  snprintf(path, sizeof path, "%s/results.h5", cfg->output.dir);
  if (access(path, F_OK) != 0) {
    printf("no results file\n");
    a3_sweep_plan_free(plan);
    return 0;
  }
  const int64_t n = plan->n_points, K = A3_RESULT_CURVE_MAX;
  const int64_t img = (int64_t)plan->samples * plan->channels * plan->height * plan->width;
  int8_t *status = calloc((size_t)n, 1);
  int32_t *n_samples = calloc((size_t)n, sizeof *n_samples);
  double *loss = calloc((size_t)n, sizeof *loss), *curve = calloc((size_t)(n * K), sizeof *curve),
         *fid = calloc((size_t)n, sizeof *fid);
  int64_t *steps = calloc((size_t)(n * K), sizeof *steps);
  uint8_t *samples = calloc((size_t)(n * img + 1), 1);
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  CHECK_MSG(f >= 0, "%s does not open", path);
  if (f >= 0) {
    CHECK(h5_read(f, "status", H5T_NATIVE_INT8, status) &&
          h5_read(f, "n_samples", H5T_NATIVE_INT32, n_samples) &&
          h5_read(f, "final_loss", H5T_NATIVE_DOUBLE, loss) &&
          h5_read(f, "loss_curve", H5T_NATIVE_DOUBLE, curve) &&
          h5_read(f, "loss_curve_step", H5T_NATIVE_INT64, steps) &&
          h5_read(f, "metrics/fid", H5T_NATIVE_DOUBLE, fid) &&
          h5_read(f, "samples", H5T_NATIVE_UINT8, samples));
    H5Fclose(f);
  }
  int64_t done = 0;
  printf("done:");
  for (int64_t i = 0; i < n; i++) {
    CHECK_MSG(status[i] == A3_POINT_PENDING || status[i] == A3_POINT_DONE ||
                  status[i] == A3_POINT_RUNNING,
              "point %lld has status %d", (long long)i, status[i]);
    if (status[i] != A3_POINT_DONE) continue;
    printf(" %lld", (long long)i);
    done++;
    a3_config pc;
    if (a3_sweep_point_config(plan, i, &pc) != A3_OK) continue;
    a3_run_result e;
    a3_run_result_init(&e);
    fake_expected(&pc, &e);
    int ok = loss[i] == e.final_loss && fid[i] == e.metrics[A3_RESULT_FID] &&
             n_samples[i] == (plan->samples < FAKE_SAMPLES ? plan->samples : FAKE_SAMPLES);
    for (int64_t k = 0; k < K; k++)
      ok = ok && same_double(curve[i * K + k], k < e.n_curve ? e.curve_loss[k] : NAN) &&
           steps[i * K + k] == (k < e.n_curve ? e.curve_step[k] : -1);
    const int64_t per = img / (plan->samples ? plan->samples : 1);
    for (int64_t k = 0; k < plan->samples; k++)
      for (int64_t p = 0; p < per; p++)
        ok = ok &&
             samples[i * img + k * per + p] == (k < FAKE_SAMPLES ? fake_pixel(&pc, (int)k, p) : 0);
    CHECK_MSG(ok, "point %lld is done but its values differ from the run's", (long long)i);
    a3_config_free(&pc);
  }
  printf("\n");
  if (done == n) printf("complete\n");
  free(status);
  free(n_samples);
  free(loss);
  free(curve);
  free(fid);
  free(steps);
  free(samples);
  a3_sweep_plan_free(plan);
  return test_failures ? 1 : 0;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  a3_log_set_rank(rank, size);
  if (argc != 3) {
    if (rank == 0) fprintf(stderr, "usage: sweep_driver CONFIG.yaml run|check\n");
    MPI_Finalize();
    return 2;
  }
  a3_config cfg;
  a3_status s = a3_config_load(argv[1], NULL, 0, &cfg);
  int rc = 0;
  if (s != A3_OK) {
    a3_log_error_status(s);
    rc = 2;
  } else if (!strcmp(argv[2], "check")) {
    rc = rank == 0 ? check(&cfg) : 0;
  } else {
    const char *ms = getenv("FAKE_SLEEP_MS");
    fake_ctx ctx = {.fail_point = -1, .world_rank = rank, .sleep_ms = ms ? atoi(ms) : 0};
    snprintf(ctx.dir, sizeof ctx.dir, "%s", cfg.output.dir);
    const a3_sweep_options opt = {.run = fake_run, .ctx = &ctx, .handle_signals = true};
    a3_sweep_summary sum;
    s = a3_sweep_run(MPI_COMM_WORLD, &cfg, &opt, &sum);
    if (s != A3_OK) {
      a3_log_error_status(s);
      rc = a3_status_exit_code(s);
    } else if (rank == 0 && sum.interrupted) {
      printf("interrupted: %lld points remain; rerun the same command to resume\n",
             (long long)(sum.n_points - sum.done - sum.failed));
    } else if (rank == 0) {
      printf("finished: %lld done, %lld failed\n", (long long)sum.done, (long long)sum.failed);
    }
  }
  a3_config_free(&cfg);
  MPI_Finalize();
  return rc;
}
