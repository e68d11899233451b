// Training the feature network fmnist-cnn-v1: data-parallel AdamW over the
// ranks of a communicator (see a3fta/features.h).
#include "eval/feature_net_internal.h"

#include "a3fta/dataset.h"
#include "a3fta/optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// Every training hyperparameter of fmnist-cnn-v1, in one place. Changing one
// changes the network that a seed gives: retrain and recommit the stored
// network (tests/eval/fmnist_cnn_v1.h5) when you do.
static const a3_feature_net_hparams featnet_hparams = {
    .batch_size = 128,
    .epochs = 8,
    .lr = 1e-3,
    .beta1 = 0.9,
    .beta2 = 0.999,
    .eps = 1e-8,
    .weight_decay = 1e-4,
    .cosine = 1,
};

a3_feature_net_hparams a3_feature_net_default_hparams(void) { return featnet_hparams; }

// One split of the dataset in memory (every rank holds all of it).
typedef struct {
  int64_t n;
  int h, w;
  uint8_t *images; // (n, 1, h, w)
  int32_t *labels; // (n)
} split_data;

static void split_free(split_data *d) {
  free(d->images);
  free(d->labels);
  memset(d, 0, sizeof *d);
}

// Collective: every rank reads the whole split.
static a3_status read_split(a3_dataset *ds, const char *split, split_data *out) {
  memset(out, 0, sizeof *out);
  a3_split_info info;
  A3_TRY(a3_dataset_split_info(ds, split, &info));
  if (info.channels != 1 || info.height != info.width || (info.height != 28 && info.height != 32) ||
      info.num_classes != A3_FEATNET_CLASSES)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: split %s has %d-channel %dx%d images in %d classes; the feature network "
                   "%s needs 1-channel 28x28 (or 32x32) images in %d classes",
                   a3_dataset_path(ds), split, info.channels, info.height, info.width,
                   info.num_classes, A3_FEATNET_NAME, A3_FEATNET_CLASSES);
  if (info.n < 1) return A3_FAIL(A3_ERR_INPUT, "%s: split %s is empty", a3_dataset_path(ds), split);
  int64_t *idx = NULL;
  A3_TRY(A3_ALLOC(idx, (size_t)info.n));
  for (int64_t i = 0; i < info.n; i++) idx[i] = i;
  out->n = info.n;
  out->h = info.height;
  out->w = info.width;
  a3_status s = a3_alloc((void **)&out->images, (size_t)info.n * info.height * info.width, 1);
  if (s == A3_OK) s = A3_ALLOC(out->labels, (size_t)info.n);
  // Collective: reached by every rank (an allocation failure is fatal anyway).
  if (s == A3_OK) s = a3_dataset_read(ds, split, idx, info.n, out->images, out->labels);
  free(idx);
  if (s != A3_OK) {
    split_free(out);
    A3_TRY(s);
  }
  return A3_OK;
}

// perm (n) = Fisher-Yates shuffle of 0..n-1 keyed by (seed, epoch), as the
// U-Net trainer's (src/train/trainer_data.c) on the feature network's stream.
static void epoch_permutation(uint64_t seed, int64_t n, int64_t epoch, int64_t *perm) {
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  for (int64_t j = 0; j + 1 < n; j++) {
    const uint64_t index = ((uint64_t)epoch << 32) | (uint64_t)j;
    const int64_t r =
        j + (int64_t)a3_rng_below(seed, A3_STREAM_FEATNET_SHUFFLE, index, (uint64_t)(n - j));
    const int64_t t = perm[j];
    perm[j] = perm[r];
    perm[r] = t;
  }
}

// All ranks agree on a status: the worst one (errors are positive).
static a3_status agree(MPI_Comm comm, a3_status s) {
  int mine = (int)s, worst = 0;
  if (MPI_Allreduce(&mine, &worst, 1, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS)
    return A3_FAIL(A3_ERR_MPI, "feature network: status all-reduce failed");
  if (worst != A3_OK && s == A3_OK)
    return A3_FAIL((a3_status)worst, "feature network training: another rank failed");
  return s;
}

// Accuracy and mean loss on a split, each rank a shard, counts summed.
static a3_status evaluate(MPI_Comm comm, const a3_feature_net *net, const split_data *d,
                          double *accuracy, double *mean_loss) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  int64_t b0 = 0, b1 = 0;
  a3_shard_range(d->n, rank, size, &b0, &b1);
  double acc = 0.0, loss = 0.0;
  a3_status s = A3_OK;
  if (b1 > b0)
    s = a3_feature_net_accuracy(net, d->images + (size_t)b0 * d->h * d->w, d->labels + b0, b1 - b0,
                                d->h, d->w, &acc, &loss);
  A3_TRY(agree(comm, s));
  double sums[2] = {acc * (double)(b1 - b0), loss * (double)(b1 - b0)};
  if (MPI_Allreduce(MPI_IN_PLACE, sums, 2, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS)
    return A3_FAIL(A3_ERR_MPI, "feature network: evaluation all-reduce failed");
  *accuracy = sums[0] / (double)d->n; // acc * count is an integer count, exactly
  *mean_loss = sums[1] / (double)d->n;
  return A3_OK;
}

typedef struct {
  a3_feature_net *net;
  fn_bufs b;
  float *params, *grads, *m, *v; // host (A3_FEATNET_NUM_PARAMS)
  float *hx;                     // host (Bl, 784)
  int32_t *hl;                   // host (Bl)
  int64_t *perm;                 // (n)
} train_state;

static void state_free(train_state *t) {
  if (t->net) fn_bufs_free(t->net->be, &t->b);
  a3_feature_net_free(t->net);
  free(t->params);
  free(t->grads);
  free(t->m);
  free(t->v);
  free(t->hx);
  free(t->hl);
  free(t->perm);
  memset(t, 0, sizeof *t);
}

static a3_status state_alloc(const a3_backend *be, uint64_t seed, int Bl, int64_t n,
                             train_state *t) {
  memset(t, 0, sizeof *t);
  A3_TRY(a3_feature_net_create(be, seed, &t->net));
  A3_TRY(fn_bufs_alloc(be, Bl, 1, &t->b));
  A3_TRY(A3_ALLOC(t->params, A3_FEATNET_NUM_PARAMS));
  A3_TRY(A3_ALLOC(t->grads, A3_FEATNET_NUM_PARAMS));
  A3_TRY(A3_ALLOC(t->m, A3_FEATNET_NUM_PARAMS));
  A3_TRY(A3_ALLOC(t->v, A3_FEATNET_NUM_PARAMS));
  A3_TRY(A3_ALLOC(t->hx, (size_t)Bl * 784));
  A3_TRY(A3_ALLOC(t->hl, (size_t)Bl));
  A3_TRY(A3_ALLOC(t->perm, (size_t)n));
  A3_TRY(a3_feature_net_get_params(t->net, t->params));
  return A3_OK;
}

// One step: this rank's shard of the global batch starting at perm[j0].
static a3_status train_step(MPI_Comm comm, train_state *t, const split_data *d, int64_t j0, int B,
                            int rank, int size, const a3_adamw_hparams *h, int64_t step,
                            const a3_param_segment *segs, double *loss_out) {
  const a3_backend *be = t->net->be;
  int64_t b0 = 0, b1 = 0;
  a3_shard_range(B, rank, size, &b0, &b1);
  const int m = (int)(b1 - b0);
  for (int i = 0; i < m; i++) {
    const int64_t img = t->perm[j0 + b0 + i];
    fn_scale_images(d->images + (size_t)img * d->h * d->w, 1, d->h, d->w, t->hx + (size_t)i * 784);
    t->hl[i] = d->labels[img];
  }
  double loss = 0.0;
  if (m > 0) {
    A3_TRY(fn_upload_images(be, &t->b, t->hx, m));
    A3_TRY(be->ops->upload(be, t->b.labels, t->hl, sizeof(int32_t) * (size_t)m));
    be->ops->zero(be, t->b.grads, A3_FEATNET_NUM_PARAMS);
    fn_forward(t->net, &t->b, m);
    fn_loss_backward(t->net, &t->b, m, 1.0f / (float)B, 0);
    float l = 0.0f;
    A3_TRY(be->ops->download(be, t->grads, t->b.grads, sizeof(float) * A3_FEATNET_NUM_PARAMS));
    A3_TRY(be->ops->download(be, &l, t->b.loss, sizeof l));
    A3_TRY(be->ops->synchronize(be));
    loss = l;
  } else {
    memset(t->grads, 0, sizeof(float) * A3_FEATNET_NUM_PARAMS);
  }
  if (size > 1) {
    if (MPI_Allreduce(MPI_IN_PLACE, t->grads, A3_FEATNET_NUM_PARAMS, MPI_FLOAT, MPI_SUM, comm) !=
            MPI_SUCCESS ||
        MPI_Allreduce(MPI_IN_PLACE, &loss, 1, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS)
      return A3_FAIL(A3_ERR_MPI, "feature network: gradient all-reduce over %d ranks failed", size);
  }
  A3_TRY(a3_adamw_step(h, step, segs, A3_FEATNET_NUM_TENSORS, t->params, t->grads, t->m, t->v));
  A3_TRY(a3_feature_net_set_params(t->net, t->params));
  *loss_out = loss;
  return A3_OK;
}

a3_status a3_feature_net_train(MPI_Comm comm, const char *dataset_path, const char *out_path,
                               const a3_feature_net_train_options *opt, a3_feature_net **net_out,
                               a3_feature_net_train_report *report) {
  if (net_out) *net_out = NULL;
  const a3_feature_net_train_options defaults = {0}; // seed 0, default epochs, no evaluation
  if (!opt) opt = &defaults;
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const a3_feature_net_hparams hp = featnet_hparams;
  const int epochs = opt->epochs > 0 ? opt->epochs : hp.epochs;
  const int B = hp.batch_size;

  // ---- data (collective reads; a3_dataset_open/read make the ranks agree)
  a3_dataset *ds = NULL;
  A3_TRY(a3_dataset_open(comm, dataset_path, &ds));
  split_data train = {0}, test = {0};
  a3_status s = read_split(ds, "train", &train);
  s = agree(comm, s);
  int have_test = 0;
  if (s == A3_OK && opt->evaluate) {
    a3_split_info info;
    have_test = a3_dataset_split_info(ds, "test", &info) == A3_OK; // same on every rank
    if (have_test)
      s = agree(comm, read_split(ds, "test", &test));
    else {
      a3_error_clear();
      if (rank == 0)
        a3_warn("%s has no test split: the feature network is not evaluated", dataset_path);
    }
  }
  a3_dataset_close(ds);
  if (s != A3_OK) {
    split_free(&train);
    split_free(&test);
    A3_TRY(s);
  }
  const int64_t spe = train.n / B; // steps per epoch, the last partial batch dropped
  if (spe < 1) {
    split_free(&train);
    split_free(&test);
    return A3_FAIL(A3_ERR_INPUT, "%s: %lld training images, fewer than one batch of %d",
                   dataset_path, (long long)train.n, B);
  }
  const int64_t total = spe * epochs;
  const int64_t run = opt->max_steps > 0 && opt->max_steps < total ? opt->max_steps : total;

  // ---- model and optimizer
  const int Bl = (B + size - 1) / size; // the largest shard
  train_state t;
  s = agree(comm, state_alloc(a3_backend_cpu(), opt->seed, Bl, train.n, &t));
  a3_param_segment segs[A3_FEATNET_NUM_TENSORS];
  for (int i = 0; i < A3_FEATNET_NUM_TENSORS; i++) {
    const a3_featnet_tensor *tt = a3_featnet_tensor_at(i);
    segs[i] = (a3_param_segment){tt->offset, tt->numel, tt->ndim >= 2};
  }
  if (rank == 0 && s == A3_OK)
    a3_info("feature network %s: %d parameters, %lld images, %d epochs of %lld steps "
            "(batch %d over %d rank%s), %lld steps to run",
            A3_FEATNET_NAME, A3_FEATNET_NUM_PARAMS, (long long)train.n, epochs, (long long)spe, B,
            size, size > 1 ? "s" : "", (long long)run);

  // ---- training
  double recent = 0.0;
  int64_t n_recent = 0, cur_epoch = -1;
  MPI_Barrier(comm);
  const double t0 = MPI_Wtime();
  for (int64_t step = 0; step < run && s == A3_OK; step++) {
    const int64_t e = step / spe;
    if (e != cur_epoch) {
      epoch_permutation(opt->seed, train.n, e, t.perm);
      cur_epoch = e;
    }
    a3_adamw_hparams h = {hp.lr, hp.beta1, hp.beta2, hp.eps, hp.weight_decay};
    if (hp.cosine) h.lr *= a3_lr_factor(A3_LR_COSINE, step, 0, total);
    double loss = 0.0;
    s = train_step(comm, &t, &train, (step % spe) * B, B, rank, size, &h, step + 1, segs, &loss);
    if (s != A3_OK) break;
    if (opt->step_losses && step < opt->step_losses_cap) opt->step_losses[step] = (float)loss;
    if (step >= run - 100) {
      recent += loss;
      n_recent++;
    }
    if (rank == 0 && opt->log_every > 0 && ((step + 1) % opt->log_every == 0 || step + 1 == run))
      a3_info("feature network: step %lld/%lld epoch %lld loss %.4f lr %.2e (%.1f s)",
              (long long)(step + 1), (long long)run, (long long)e + 1, loss, h.lr,
              MPI_Wtime() - t0);
  }
  const double seconds = MPI_Wtime() - t0;
  s = agree(comm, s);

  // ---- evaluation and file
  double acc = -1.0, test_loss = -1.0;
  if (s == A3_OK && have_test) {
    s = evaluate(comm, t.net, &test, &acc, &test_loss);
    if (s == A3_OK && rank == 0)
      a3_info("feature network: test accuracy %.4f, mean loss %.4f (%lld images)", acc, test_loss,
              (long long)test.n);
  }
  if (s == A3_OK && out_path) {
    a3_status w = A3_OK;
    if (rank == 0) {
      const a3_feature_net_record rec = {opt->seed, epochs, run, size, acc, seconds};
      w = a3_feature_net_save(t.net, out_path, &rec);
    }
    s = agree(comm, w);
  }
  if (s == A3_OK && report) {
    report->steps = run;
    report->ranks = size;
    report->seconds = seconds;
    report->final_loss = n_recent ? recent / (double)n_recent : NAN;
    report->test_accuracy = acc;
    report->test_loss = test_loss;
  }
  if (s == A3_OK && net_out) { // hand the network over; the rest of the state goes
    fn_bufs_free(t.net->be, &t.b);
    *net_out = t.net;
    t.net = NULL;
  }
  state_free(&t);
  split_free(&train);
  split_free(&test);
  A3_TRY(s);
  return A3_OK;
}
