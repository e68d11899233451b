// The held-out loss on 2 ranks: the chunks of samples are split across
// them and the per-sample losses gathered, so a fixed model's held-out loss
// is the same bit for bit as on 1 rank (with the batch slices of 1 and 2
// images here, 3 on one rank, which must not matter). A short 2-rank run
// writes the column and gives every rank the same final value.
#include "a3fta/trainer.h"
#include "heldout_test_util.h"
#include "io/io_test_util.h"
#include "mpi_test_util.h"
#include "trainer_test_util.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const extra[] = {"train.batch_size=6",      "train.grad_accum=2",
                                    "train.steps=6",           "eval.heldout_every=3",
                                    "eval.heldout_images=5",   "eval.heldout_timesteps=7",
                                    "train.checkpoint_every=0"};
enum { N_EXTRA = sizeof extra / sizeof extra[0] };

static double fixed_model_loss(const char *data, const char *out, MPI_Comm comm) {
  a3_config cfg;
  double loss = NAN;
  if (tt_config(&cfg, data, out, extra, N_EXTRA)) return NAN;
  a3_trainer *t = NULL;
  a3_heldout_set h = {0};
  a3_status s = a3_trainer_create(&cfg, comm, &t);
  if (s == A3_OK) s = a3_heldout_load(comm, &cfg, &h);
  if (s == A3_OK) s = a3_trainer_heldout_loss(t, comm, &h, &loss);
  if (s != A3_OK) a3_log_error_status(s);
  a3_heldout_free(&h);
  a3_trainer_free(t);
  a3_config_free(&cfg);
  return loss;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  a3_log_set_level(A3_LOG_WARN);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  CHECK(size == 2);
  char dir[4096], data[4200], one[4200], two[4200];
  const int ok = tt_shared_dataset(MPI_COMM_WORLD, "heldout-mpi", ht_make_dataset, dir, sizeof dir,
                                   data, sizeof data);
  CHECK(ok);
  snprintf(one, sizeof one, "%s/one", dir);
  snprintf(two, sizeof two, "%s/two", dir);
  if (ok) {
    double ref = NAN;
    if (rank == 0) ref = fixed_model_loss(data, one, MPI_COMM_SELF);
    MPI_Bcast(&ref, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    const double dp = fixed_model_loss(data, two, MPI_COMM_WORLD);
    CHECK_MSG(isfinite(ref) && !memcmp(&ref, &dp, sizeof ref),
              "rank %d: 2 ranks %.17g, 1 rank %.17g", rank, dp, ref);
    if (rank == 0) fprintf(stderr, "held-out loss, 1 rank %.17g, 2 ranks %.17g\n", ref, dp);
    // A run on 2 ranks: the column at steps 3 and 6, the same value on every rank.
    a3_config cfg;
    CHECK(tt_config(&cfg, data, two, extra, N_EXTRA) == 0);
    const a3_train_options opt = {0};
    a3_train_result res;
    CHECK(a3_train(&cfg, MPI_COMM_WORLD, &opt, &res) == A3_OK);
    double all[2] = {0};
    MPI_Gather(&res.final_heldout_loss, 1, MPI_DOUBLE, all, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) {
      CHECK(isfinite(all[0]) && all[0] == all[1]);
      char *csv = NULL;
      CHECK(a3_read_file(io_path(two, "losses.csv"), 1 << 20, &csv, NULL) == A3_OK);
      int rows = 0, filled = 0; // rows, and rows whose last field is not empty
      for (char *line = csv ? strchr(csv, '\n') : NULL; line && line[1];
           line = strchr(line, '\n')) {
        line++;
        const size_t len = strcspn(line, "\n");
        rows++;
        filled += len > 0 && line[len - 1] != ',';
      }
      free(csv);
      CHECK_MSG(rows == 6 && filled == 2, "%d rows, %d with a held-out loss", rows, filled);
      CHECK(io_exists(io_path(two, "loss.png")));
    }
    a3_config_free(&cfg);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0 && dir[0]) io_remove_tree(dir);
  const int rc = test_done_all_ranks("test_trainer_heldout_mpi", MPI_COMM_WORLD);
  MPI_Finalize();
  return rc;
}
