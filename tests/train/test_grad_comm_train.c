// Training with the bucketed gradient sum on 2 ranks (batch 6 in 2
// micro-batches of 3: slices of 1 and 2 images, so the uneven weighting is
// exercised), for the full model and for the a3fta strategy (whose backward
// stops at the lowest attention block):
// - against 1 rank: the first step's summed gradients and every step's
//   loss to fp32 rounding (the gradients are summed in another order); the
//   largest differences are printed, and the final parameters' (AdamW
//   divides by sqrt(v), so a gradient near 0 may move by up to lr: no bound);
// - two runs with 4 KiB buckets (dozens of buckets, started during the
//   backward) are bitwise identical, and bitwise identical to one bucket
//   (A3FTA_BUCKET_BYTES=2^40): bucketing and overlap change no bit.
#define _POSIX_C_SOURCE 200809L // setenv
#include "io/io_test_util.h"
#include "mpi_test_util.h"
#include "trainer/trainer_test_util.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { STEPS = 5 };

typedef struct {
  double loss[STEPS];
  float *params; // (n) at the end
  float *grad1;  // (n) the gradients of the first step (summed over the ranks, clipped)
  size_t n;
} run_out;

static float *copy(a3_unet *m, float *(*what)(a3_unet *), size_t *n) {
  *n = a3_unet_num_floats(m);
  float *c = malloc(*n * sizeof(float));
  if (c) memcpy(c, what(m), *n * sizeof(float));
  return c;
}

static int run(const char *data, const char *out, const char *strategy, const char *bucket_bytes,
               MPI_Comm comm, run_out *r) {
  char strat[64];
  snprintf(strat, sizeof strat, "strategy.name=%s", strategy);
  const char *const extra[] = {"train.batch_size=6", "train.grad_accum=2", strat};
  a3_config cfg;
  if (tt_config(&cfg, data, out, extra, 3)) return 1;
  setenv("A3FTA_BUCKET_BYTES", bucket_bytes, 1);
  a3_trainer *t = NULL;
  a3_status s = a3_trainer_create(&cfg, comm, &t);
  for (int i = 0; s == A3_OK && i < STEPS; i++) {
    double lr = 0.0;
    s = a3_trainer_step(t, &r->loss[i], &lr);
    if (s == A3_OK && i == 0) r->grad1 = copy(a3_trainer_model(t), a3_unet_grads, &r->n);
  }
  if (s == A3_OK) r->params = copy(a3_trainer_model(t), a3_unet_params, &r->n);
  if (s != A3_OK) a3_log_error_status(s);
  a3_trainer_free(t);
  a3_config_free(&cfg);
  unsetenv("A3FTA_BUCKET_BYTES");
  return s != A3_OK || !r->params || !r->grad1;
}

static bool same_bits(const run_out *a, const run_out *b) {
  return a->n == b->n && memcmp(a->loss, b->loss, sizeof a->loss) == 0 &&
         memcmp(a->params, b->params, a->n * sizeof(float)) == 0 &&
         memcmp(a->grad1, b->grad1, a->n * sizeof(float)) == 0;
}

// One strategy: the 1-rank reference on rank 0, three 2-rank runs.
static void check_strategy(const char *dir, const char *data, const char *strategy, int rank) {
  char out[4300];
  run_out one = {0}, tiny = {0}, tiny2 = {0}, big = {0};
  snprintf(out, sizeof out, "%s/%s-one", dir, strategy);
  int rc = rank == 0 ? run(data, out, strategy, "4096", MPI_COMM_SELF, &one) : 0;
  MPI_Bcast(&rc, 1, MPI_INT, 0, MPI_COMM_WORLD);
  CHECK(rc == 0);
  MPI_Bcast(one.loss, STEPS, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  snprintf(out, sizeof out, "%s/%s-two", dir, strategy);
  CHECK(run(data, out, strategy, "4096", MPI_COMM_WORLD, &tiny) == 0);
  CHECK(run(data, out, strategy, "4096", MPI_COMM_WORLD, &tiny2) == 0);
  CHECK(run(data, out, strategy, "1099511627776", MPI_COMM_WORLD, &big) == 0);
  CHECK_MSG(tiny.params && tiny2.params && same_bits(&tiny, &tiny2), "%s: two 2-rank runs differ",
            strategy);
  CHECK_MSG(tiny.params && big.params && same_bits(&tiny, &big),
            "%s: 4 KiB buckets and one bucket differ", strategy);
  double loss_rel = 0.0, param_abs = 0.0;
  for (int i = 0; i < STEPS; i++)
    loss_rel = fmax(loss_rel, fabs(tiny.loss[i] - one.loss[i]) / fabs(one.loss[i]));
  CHECK_MSG(loss_rel <= 1e-5, "%s: losses on 2 ranks differ from 1 rank by %.3g", strategy,
            loss_rel);
  if (rank == 0 && one.params && tiny.params) {
    double grad_abs = 0.0, grad_max = 0.0;
    for (size_t k = 0; k < one.n; k++) {
      param_abs = fmax(param_abs, fabs((double)tiny.params[k] - one.params[k]));
      grad_abs = fmax(grad_abs, fabs((double)tiny.grad1[k] - one.grad1[k]));
      grad_max = fmax(grad_max, fabs((double)one.grad1[k]));
    }
    CHECK_MSG(grad_abs <= 1e-5 * grad_max, "%s: step-1 gradients differ by %.3g (largest %.3g)",
              strategy, grad_abs, grad_max);
    fprintf(stderr,
            "%s: 2 ranks vs 1: step-1 gradients differ by at most %.3g of the largest, losses "
            "(%d steps) by %.3g relative, parameters by %.3g; 4 KiB buckets = one bucket, "
            "bitwise\n",
            strategy, grad_abs / grad_max, STEPS, loss_rel, param_abs);
  }
  run_out *all[] = {&one, &tiny, &tiny2, &big};
  for (int i = 0; i < 4; i++) free(all[i]->params), free(all[i]->grad1);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  a3_log_set_level(A3_LOG_WARN);
  int rank = 0, size = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  CHECK(size == 2);
  char dir[4096], data[4200];
  const int ok = tt_shared_dataset(MPI_COMM_WORLD, "grad-comm", tt_make_dataset, dir, sizeof dir,
                                   data, sizeof data);
  CHECK(ok);
  if (ok && size == 2) {
    check_strategy(dir, data, "full", rank);
    check_strategy(dir, data, "a3fta", rank);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0 && dir[0]) io_remove_tree(dir);
  const int rc = test_done_all_ranks("test_train_grad_comm_trainer", MPI_COMM_WORLD);
  MPI_Finalize();
  return rc;
}
