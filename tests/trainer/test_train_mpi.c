// Data parallelism: 2 ranks train the same run as 1 rank, with the batch
// split across them (batch 6 in 2 micro-batches of 3: slices of 1 and 2
// images, so the uneven weighting is exercised). The gradients are summed in
// a different order, so losses agree to fp32 rounding: rtol 1e-5. And a
// bucket size set on one rank only is a config error on both.
#define _POSIX_C_SOURCE 200809L // setenv
#include "a3fta/dataset.h"
#include "io/io_test_util.h"
#include "mpi_test_util.h"
#include "trainer_test_util.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { STEPS = 10 };

static const char *const extra[] = {"train.batch_size=6", "train.grad_accum=2", "train.steps=10",
                                    "train.checkpoint_every=5"};

static int run(const char *data, const char *out, MPI_Comm comm, tt_losses *l) {
  a3_config cfg;
  if (tt_config(&cfg, data, out, extra, 4)) return 1;
  const int rc = tt_train(&cfg, comm, 0, 0, l);
  a3_config_free(&cfg);
  return rc;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  a3_log_set_level(A3_LOG_WARN);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  CHECK(size == 2);
  char dir[4096], data[4200], one[4200], two[4200];
  const int ok = tt_shared_dataset(MPI_COMM_WORLD, "train-mpi", tt_make_dataset, dir, sizeof dir,
                                   data, sizeof data);
  CHECK(ok);
  snprintf(one, sizeof one, "%s/one", dir);
  snprintf(two, sizeof two, "%s/two", dir);
  tt_losses ref = {0}, dp = {0};
  if (ok && rank == 0) CHECK(run(data, one, MPI_COMM_SELF, &ref) == 0 && ref.n == STEPS);
  MPI_Bcast(&ref, sizeof ref, MPI_BYTE, 0, MPI_COMM_WORLD);
  if (ok) CHECK(run(data, two, MPI_COMM_WORLD, &dp) == 0 && dp.n == STEPS);
  double worst = 0.0;
  for (int i = 0; i < dp.n && i < ref.n; i++) {
    const double rel = fabs(dp.loss[i] - ref.loss[i]) / fabs(ref.loss[i]);
    worst = rel > worst ? rel : worst;
    CHECK_MSG(rel <= 1e-5, "rank %d step %d: 2 ranks %.9g, 1 rank %.9g", rank, i + 1, dp.loss[i],
              ref.loss[i]);
  }
  if (rank == 0) fprintf(stderr, "largest relative loss difference, 2 ranks vs 1: %.3g\n", worst);
  // Sampling split across the 2 ranks.
  char h5[4200];
  snprintf(h5, sizeof h5, "%s/two/samples.h5", dir);
  char ckpt[4200];
  snprintf(ckpt, sizeof ckpt, "%s/two/checkpoint.h5", dir);
  const a3_sample_request req = {.num = 3,
                                 .sampler = A3_SAMPLER_DDIM,
                                 .steps = 3,
                                 .eta = 0.0,
                                 .seed = 0,
                                 .use_ema = true,
                                 .max_batch = 16,
                                 .out_h5 = h5,
                                 .out_png = NULL};
  if (ok) CHECK(a3_sample_checkpoint(MPI_COMM_WORLD, ckpt, &req) == A3_OK);
  if (rank == 0 && ok) CHECK(io_exists(h5));
  // The sum's environment must be alike on every rank: another bucket size
  // on rank 1 alone is a config error on both (it used to hang the first sum).
  if (ok) {
    a3_config cfg;
    if (rank == 1) setenv("A3FTA_BUCKET_BYTES", "1024", 1);
    CHECK(tt_config(&cfg, data, two, extra, 4) == 0);
    a3_trainer *t = NULL;
    const a3_status s = a3_trainer_create(&cfg, MPI_COMM_WORLD, &t);
    CHECK_MSG(s == A3_ERR_CONFIG && strstr(a3_error_message(), "A3FTA_BUCKET_BYTES"),
              "rank %d, bucket sizes differ: status %d, %s", rank, (int)s, a3_error_message());
    a3_trainer_free(t);
    a3_config_free(&cfg);
    unsetenv("A3FTA_BUCKET_BYTES");
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0 && dir[0]) io_remove_tree(dir);
  const int rc = test_done_all_ranks("test_trainer_mpi", MPI_COMM_WORLD);
  MPI_Finalize();
  return rc;
}
