// The trainer: one run's data, model, optimizer and EMA, and its step
// (a3fta/trainer.h explains the batch, RNG and loss conventions).
#include "a3fta/trainer.h"

#include "trainer_device.h"

#include "a3fta/dataset.h"
#include "a3fta/dist.h"
#include "a3fta/export.h"
#include "a3fta/strategy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct a3_trainer {
  a3_config cfg; // a deep copy
  char *config_yaml;
  uint64_t config_hash;
  MPI_Comm comm;
  int rank, size;
  a3_train_data data;
  a3_unet *m;
  const a3_backend *be;
  a3_noise_schedule_table sched;
  // optimizer over the trainable segments; m, v, ema compact (n_train)
  a3_param_segment *segs;
  int n_segs;
  int64_t n_train;
  float *adam_m, *adam_v, *ema;
  a3_grad_comm *gc; // the gradient sum over comm (a3fta/comm.h); NULL on one rank
  bool nccl;        // gc sums the device gradients (NCCL), not the host's (MPI)
  a3_adamw_hparams hp;
  // batch: micro global images per micro-batch, this rank's slice of it
  int64_t micro, r_begin, r_count, per_sample;
  float *x0, *noise, *x_t, *tf, *out, *dout; // (r_count, per_sample) or (r_count)
  int32_t *t;                                // (r_count)
  uint32_t *items;                           // (r_count) a micro-batch's images (batch_images)
  int64_t *perm, epoch;                      // batch permutation cache (n subset images)
  // Steps done whose losses are not yet taken (a3_trainer_take_losses):
  // first_pending + 1 .. step. Their learning rates, and on the CPU their
  // losses (this rank's share); on a GPU the losses wait in device memory.
  int64_t first_pending, pending_cap;
  double *pending_lr, *pending_loss; // (pending_cap)
  float *micro_losses;               // (the device loss capacity) a GPU's, once taken
  int64_t step;                      // optimizer steps done
  a3_step_timing timing;             // of the steps this trainer ran
  char base_hash[A3_BASE_HASH_MAX];  // of the weights model.init gave (checkpoints)
  a3_train_device *dev; // the GPU side, or NULL: m, its optimizer and EMA train on the CPU
};

int64_t a3_trainer_steps_done(const a3_trainer *t) { return t->step; }
a3_unet *a3_trainer_model(a3_trainer *t) { return t->m; }
a3_train_device *a3_trainer_device(a3_trainer *t) { return t->dev; }
const float *a3_trainer_ema(const a3_trainer *t) { return t->ema; }
a3_step_timing a3_trainer_timing(const a3_trainer *t) {
  a3_step_timing out = t->timing;
  out.grad_bytes = t->n_train * (int64_t)sizeof(float);
  return out;
}

void a3_trainer_free(a3_trainer *t) {
  if (!t) return;
  a3_grad_comm_free(t->gc); // before the device: NCCL's streams and buffers live there
  a3_train_device_free(t->dev);
  a3_unet_free(t->m);
  a3_train_data_free(&t->data);
  a3_schedule_free(&t->sched);
  free(t->segs);
  free(t->adam_m);
  free(t->adam_v);
  free(t->ema);
  free(t->x0);
  free(t->noise);
  free(t->x_t);
  free(t->tf);
  free(t->out);
  free(t->dout);
  free(t->t);
  free(t->items);
  free(t->perm);
  free(t->pending_lr);
  free(t->pending_loss);
  free(t->micro_losses);
  free(t->config_yaml);
  a3_config_free(&t->cfg);
  free(t);
}

// ---------------------------------------------------------------- create

// Ranks sharing a node share its cores: unless OMP_NUM_THREADS says
// otherwise, each of L local ranks gets cores / L threads (2 ranks with 2
// threads each on 2 cores run ~3x slower than with 1 each).
static void split_threads(MPI_Comm comm) {
  static int cores = 0; // the default count, before any split
  if (getenv("OMP_NUM_THREADS")) return;
  if (!cores) cores = a3_backend_cpu_threads();
  int local_rank = 0, local_size = 1;
  if (a3_node_place(comm, &local_rank, &local_size) != A3_OK) {
    a3_error_clear(); // then as if alone on the node
    local_size = 1;
  }
  const int threads = cores / local_size > 0 ? cores / local_size : 1;
  a3_backend_cpu_set_threads(threads);
  a3_debug("trainer: %d rank(s) on this node, %d CPU thread(s) each", local_size, threads);
}

static a3_status check_batch(const a3_config *cfg) {
  const a3_train_config *tc = &cfg->train;
  if (tc->batch_size % tc->grad_accum)
    return A3_FAIL(A3_ERR_CONFIG,
                   "train.batch_size = %lld is not a multiple of train.grad_accum = %lld; the "
                   "micro-batches must be equal",
                   (long long)tc->batch_size, (long long)tc->grad_accum);
  return A3_OK;
}

static a3_status alloc_batch(a3_trainer *t) {
  const size_t n = (size_t)(t->r_count > 0 ? t->r_count : 1), per = (size_t)t->per_sample;
  A3_TRY(A3_ALLOC(t->x0, n * per));
  A3_TRY(A3_ALLOC(t->noise, n * per));
  A3_TRY(A3_ALLOC(t->x_t, n * per));
  A3_TRY(A3_ALLOC(t->out, n * per));
  A3_TRY(A3_ALLOC(t->dout, n * per));
  A3_TRY(A3_ALLOC(t->tf, n));
  A3_TRY(A3_ALLOC(t->t, n));
  A3_TRY(A3_ALLOC(t->items, n));
  A3_TRY(A3_ALLOC(t->perm, (size_t)t->data.n));
  t->epoch = -1;
  return A3_OK;
}

static a3_status init_weights(a3_trainer *t) {
  // Random first, so that modules a checkpoint lacks (the strategy's) keep
  // their own initialisation (zero up-projections, ...).
  a3_unet_init_random(t->m, (uint64_t)t->cfg.train.seed);
  if (strcmp(t->cfg.model.init, "random") != 0) A3_TRY(a3_model_load_init(t->m, t->cfg.model.init));
  a3_base_model_hash_text(t->m, t->cfg.model.init, t->base_hash);
  return A3_OK;
}

static a3_status setup_optimizer(a3_trainer *t) {
  A3_TRY(a3_trainable_segments(t->m, &t->segs, &t->n_segs));
  t->n_train = a3_segments_numel(t->segs, t->n_segs);
  const size_t n = (size_t)t->n_train + 1;
  A3_TRY(A3_ALLOC(t->adam_m, n));
  A3_TRY(A3_ALLOC(t->adam_v, n));
  if (t->cfg.train.ema) {
    A3_TRY(A3_ALLOC(t->ema, n));
    a3_segments_gather(t->segs, t->n_segs, a3_unet_params(t->m), t->ema);
  }
  t->hp = a3_adamw_from_config(&t->cfg.train);
  return A3_OK;
}

static a3_status setup_model(a3_trainer *t) {
  A3_TRY(a3_strategy_build_model(&t->cfg, &t->m));
  t->be = a3_backend_cpu();
  A3_TRY(init_weights(t));
  a3_strategy_stats st;
  A3_TRY(a3_strategy_apply(t->m, t->cfg.strategy.name, &st));
  if (t->rank == 0)
    a3_info("model: %zu parameters in %d tensors; strategy %s trains %zu (%.2f%%) in %d tensors",
            st.params, st.tensors, a3_strategy_label(t->cfg.strategy.name), st.trainable_params,
            100.0 * (double)st.trainable_params / (double)(st.params ? st.params : 1),
            st.trainable_tensors);
  return A3_OK;
}

// On a GPU the device model trains and the host model only holds the weights
// for checkpoints, so only one of the two needs activation memory.
static a3_status setup_device(a3_trainer *t) {
  A3_TRY(a3_train_device_open(&t->cfg, t->comm, t->m, &t->sched, &t->data, t->segs, t->n_segs,
                              t->r_count, &t->dev));
  if (!t->dev) {
    if (t->r_count > 0) A3_TRY(a3_unet_plan(t->m, (int)t->r_count));
    return A3_OK;
  }
  a3_info("backend: %s", a3_train_device_name(t->dev));
  return a3_train_device_push(t->dev, t->m, t->adam_m, t->adam_v, t->ema);
}

// Room for the losses of PENDING_STEPS steps (fewer when the device's
// buffer holds fewer micro-batches): the loop takes them far more often.
enum { PENDING_STEPS = 1024 };
static a3_status alloc_pending(a3_trainer *t) {
  const int64_t accum = t->cfg.train.grad_accum;
  int64_t cap = PENDING_STEPS;
  if (t->dev && a3_train_device_loss_capacity(t->dev) / accum < cap)
    cap = a3_train_device_loss_capacity(t->dev) / accum;
  if (cap < 1)
    return A3_FAIL(A3_ERR_CONFIG,
                   "train.grad_accum = %lld is more than the %lld micro-batches a step may have",
                   (long long)accum, (long long)a3_train_device_loss_capacity(t->dev));
  t->pending_cap = cap;
  A3_TRY(A3_ALLOC(t->pending_lr, (size_t)cap));
  A3_TRY(A3_ALLOC(t->pending_loss, (size_t)cap));
  // As many as the device may hold (not cap * accum): a run that goes on
  // after a failed step may have left more there.
  if (t->dev) A3_TRY(A3_ALLOC(t->micro_losses, (size_t)a3_train_device_loss_capacity(t->dev)));
  return A3_OK;
}

// The log's word on the sum: host copies, or NCCL's communicator.
static const char *grad_comm_note(const a3_trainer *t) {
  if (!t->nccl) return t->dev ? " (through host memory)" : "";
  return a3_grad_comm_reused(t->gc) ? ", the group's NCCL communicator reused"
                                    : ", a new NCCL communicator";
}

// Every rank of a group must make the same sum in the same buckets, and
// what picks them (A3FTA_GRAD_COMM, A3FTA_BUCKET_BYTES) is each rank's own
// environment: a difference would hang the first sum (MPI) or mix buckets
// (NCCL), so it is an error on every rank.
static a3_status agree_on_sum(a3_trainer *t, a3_status mine, a3_grad_comm_kind use, size_t bytes) {
  if (t->size == 1) return mine;
  A3_TRY(a3_agree(t->comm, mine, "choosing the gradient sum"));
  const long long v[4] = {(long long)use, (long long)bytes, -(long long)use, -(long long)bytes};
  long long most[4] = {0, 0, 0, 0};
  if (MPI_Allreduce(v, most, 4, MPI_LONG_LONG, MPI_MAX, t->comm) != MPI_SUCCESS)
    return A3_FAIL(A3_ERR_MPI, "agreeing on the gradient sum over %d ranks failed", t->size);
  if (most[0] != -most[2] || most[1] != -most[3])
    return A3_FAIL(A3_ERR_CONFIG,
                   "the ranks of this group chose different gradient sums or bucket sizes (%lld to "
                   "%lld bytes): set A3FTA_GRAD_COMM and A3FTA_BUCKET_BYTES alike on every rank, "
                   "or on none",
                   -most[3], most[1]);
  return A3_OK;
}

// More than one rank: the bucketed gradient sum, its buckets in backward
// order; NCCL when every rank trains on a GPU (A3FTA_GRAD_COMM decides
// otherwise, and can ask for NCCL on one rank), else MPI over host memory.
static a3_status setup_grad_comm(a3_trainer *t) {
  int on_gpu = t->dev && a3_backend_is_cuda(a3_train_device_backend(t->dev)), all_on_gpu = on_gpu;
  if (t->size > 1 &&
      MPI_Allreduce(&on_gpu, &all_on_gpu, 1, MPI_INT, MPI_MIN, t->comm) != MPI_SUCCESS)
    return A3_FAIL(A3_ERR_MPI, "agreeing on the gradient sum over %d ranks failed", t->size);
  a3_grad_comm_kind asked = A3_GRAD_COMM_AUTO, use = A3_GRAD_COMM_NONE;
  a3_status s = a3_grad_comm_kind_parse(getenv("A3FTA_GRAD_COMM"), &asked);
  if (s == A3_OK) s = a3_grad_comm_choose(asked, t->size, all_on_gpu != 0, &use);
  const size_t bytes = a3_grad_bucket_bytes();
  A3_TRY(agree_on_sum(t, s, use, bytes));
  if (use == A3_GRAD_COMM_NONE) return A3_OK;
  a3_grad_piece *pieces = NULL;
  int n = 0;
  s = a3_trainer_grad_pieces(t->m, &pieces, &n);
  if (s == A3_OK && use == A3_GRAD_COMM_NCCL)
    s = a3_grad_comm_create_nccl(t->comm, a3_train_device_backend(t->dev), pieces, n, bytes,
                                 (double)t->cfg.parallel.nccl_timeout_s, &t->gc);
  else if (s == A3_OK)
    s = a3_grad_comm_create_mpi(t->comm, pieces, n, bytes, &t->gc);
  free(pieces);
  A3_TRY(s);
  t->nccl = use == A3_GRAD_COMM_NCCL;
  if (t->rank == 0)
    a3_info("gradient sum: %s over %d rank(s), %d bucket(s) of up to %zu bytes%s",
            a3_grad_comm_name(t->gc), t->size, a3_grad_comm_buckets(t->gc)->n_buckets, bytes,
            grad_comm_note(t));
  return A3_OK;
}

// The steps of setup after the data, none of them collective.
static a3_status setup_local(a3_trainer *t) {
  t->micro = t->cfg.train.batch_size / t->cfg.train.grad_accum;
  int64_t end = 0;
  a3_shard_range(t->micro, t->rank, t->size, &t->r_begin, &end);
  t->r_count = end - t->r_begin;
  t->per_sample = (int64_t)t->data.channels * t->data.size * t->data.size;
  A3_TRY(alloc_batch(t));
  A3_TRY(a3_schedule_init(&t->sched, t->cfg.train.noise_schedule, t->cfg.train.num_train_timesteps,
                          A3_BETA_START, A3_BETA_END)); // before the device, which keeps a copy
  A3_TRY(setup_model(t));
  A3_TRY(setup_optimizer(t));
  A3_TRY(setup_device(t));
  return alloc_pending(t);
}

// check_batch and the YAML cannot fail on one rank alone (one config, agreed
// by the caller; an allocation aside). From the data on, a rank may fail
// alone (its share of the images, no GPU there, out of its GPU's memory):
// every rank learns it before the gradient sum's collectives, which a rank
// that returned would never join.
static a3_status setup(a3_trainer *t) {
  A3_TRY(check_batch(&t->cfg));
  A3_TRY(a3_config_to_yaml(&t->cfg, &t->config_yaml, NULL));
  t->config_hash = a3_config_hash(&t->cfg);
  MPI_Comm_rank(t->comm, &t->rank);
  MPI_Comm_size(t->comm, &t->size);
  split_threads(t->comm);
  a3_status s =
      a3_train_data_load(t->comm, &t->cfg, &t->data); // local failures after its collectives
  if (s == A3_OK) {
    if (t->rank == 0) a3_info("data: %lld images from %s", (long long)t->data.n, t->cfg.data.path);
    s = setup_local(t);
  }
  A3_TRY(a3_agree(t->comm, s, "setting up training"));
  A3_TRY(setup_grad_comm(t)); // after the device: NCCL sums its gradients
  return A3_OK;
}

a3_status a3_trainer_create(const a3_config *cfg, MPI_Comm comm, a3_trainer **out) {
  *out = NULL;
  a3_trainer *t = NULL;
  A3_TRY(A3_ALLOC(t, 1));
  a3_status s = a3_config_copy(&t->cfg, cfg);
  if (s != A3_OK) {
    free(t);
    A3_TRY(s);
  }
  t->comm = comm;
  s = setup(t);
  if (s != A3_OK) {
    a3_trainer_free(t);
    A3_TRY(s);
  }
  *out = t;
  return A3_OK;
}

// ---------------------------------------------------------------- step

// The gradients the sum works on: the device's for NCCL, else the host's.
static float *comm_grads(a3_trainer *t) {
  return t->nccl ? a3_train_device_grads(t->dev) : a3_unet_grads(t->m);
}

// Stages 0..stage of the last micro-batch's backward are done (on a GPU:
// enqueued): their buckets of the gradient sum can start (earlier
// micro-batches still add to them all).
static a3_status grads_ready(void *ctx, int stage) {
  a3_trainer *t = ctx;
  return a3_grad_comm_ready(t->gc, comm_grads(t), stage);
}

// A micro-batch's share of the step's mean loss on this rank: n_r / micro / accum.
static double micro_weight(const a3_trainer *t) {
  return (double)t->r_count / (double)t->micro / (double)t->cfg.train.grad_accum;
}

static a3_status backward(a3_trainer *t, int64_t k) {
  const a3_backward_hook hook = {grads_ready, t};
  const bool last = k == t->cfg.train.grad_accum - 1;
  return a3_unet_backward_hooked(t->m, t->dout, NULL, t->gc && last ? &hook : NULL);
}

// Forward and backward of micro-batch k on this rank's slice; on the CPU
// *loss_share = the slice's share of the global mean loss (its mean times
// n_r / micro / accum); on a GPU the loss stays there (take_losses).
static a3_status micro_step(a3_trainer *t, int64_t k, double *loss_share) {
  *loss_share = 0.0;
  if (t->r_count == 0) return A3_OK; // more ranks than images in a micro-batch
  const uint64_t seed = (uint64_t)t->cfg.train.seed;
  const int64_t sample0 = k * t->micro + t->r_begin; // within the step
  const int64_t g0 = t->step * t->cfg.train.batch_size + sample0;
  a3_train_batch_items(&t->data, seed, t->cfg.data.hflip, g0, t->r_count, t->perm, &t->epoch,
                       t->items);
  const double weight = micro_weight(t);
  if (t->dev) {
    const a3_backward_hook hook = {grads_ready, t};
    const bool last = k == t->cfg.train.grad_accum - 1;
    return a3_train_device_micro(t->dev, t->items, seed, (uint64_t)t->step, (uint64_t)sample0,
                                 t->r_count, weight, t->nccl && last ? &hook : NULL);
  }
  t->be->ops->batch_images(t->be, t->x0, t->data.images, t->items, (int)t->r_count,
                           t->data.channels, t->data.size);
  A3_TRY(a3_diffusion_training_batch(&t->sched, seed, (uint64_t)t->step, (uint64_t)sample0,
                                     t->r_count, t->per_sample, t->x0, t->t, t->noise, t->x_t));
  for (int64_t i = 0; i < t->r_count; i++) t->tf[i] = (float)t->t[i];
  A3_TRY(a3_unet_forward(t->m, t->x_t, t->tf, t->out));
  const size_t n = (size_t)(t->r_count * t->per_sample);
  float loss = 0.0f;
  t->be->ops->mse_forward(t->be, &loss, t->out, t->noise, n);
  t->be->ops->mse_backward(t->be, t->dout, t->out, t->noise, n, (float)weight);
  A3_TRY(backward(t, k));
  *loss_share = (double)loss * weight;
  return A3_OK;
}

// The data-parallel gradient sum: its buckets started during the last
// backward (CPU, or NCCL on the GPU: the sums stay in device memory and the
// update waits for them on the device); with MPI on a GPU all of them start
// here, through host memory.
// *summed: a3_grad_comm_finish returned (the step's sums are done or, with
// NCCL, queued), whatever fails after it.
static a3_status reduce_grads(a3_trainer *t, bool *summed) {
  float *grads = a3_unet_grads(t->m);
  if (!t->gc) return A3_OK; // one rank
  if (t->nccl) {
    A3_TRY(a3_grad_comm_finish(t->gc, a3_train_device_grads(t->dev)));
    *summed = true;
    return A3_OK;
  }
  if (t->dev) A3_TRY(a3_train_device_grads_to_host(t->dev, grads));
  A3_TRY(a3_grad_comm_finish(t->gc, grads));
  *summed = true;
  if (t->dev) A3_TRY(a3_train_device_grads_from_host(t->dev, grads));
  return A3_OK;
}

static a3_status update(a3_trainer *t, double lr_factor) {
  if (t->dev) {
    a3_adamw_hparams h = t->hp;
    h.lr = t->hp.lr * lr_factor;
    const double decay = t->ema ? a3_ema_decay(t->step + 1, t->cfg.train.ema_max_decay) : -1.0;
    return a3_train_device_update(t->dev, &h, t->step + 1, t->cfg.train.grad_clip, decay);
  }
  float *params = a3_unet_params(t->m), *grads = a3_unet_grads(t->m);
  a3_clip_grad_norm(t->segs, t->n_segs, grads, t->cfg.train.grad_clip);
  a3_adamw_hparams h = t->hp;
  h.lr = t->hp.lr * lr_factor;
  A3_TRY(a3_adamw_step(&h, t->step + 1, t->segs, t->n_segs, params, grads, t->adam_m, t->adam_v));
  if (t->ema)
    a3_ema_update(t->segs, t->n_segs, params, t->ema,
                  a3_ema_decay(t->step + 1, t->cfg.train.ema_max_decay));
  return A3_OK;
}

// The NCCL sums of this step, waited for under the watchdog; *comm_s grows.
static a3_status settle_sums(a3_trainer *t, double *comm_s) {
  const double t0 = MPI_Wtime();
  const a3_status s = a3_grad_comm_settle(t->gc);
  *comm_s += MPI_Wtime() - t0;
  return s;
}

// One step's work; *summed: its gradient sum is complete.
static a3_status run_step(a3_trainer *t, double factor, double *total, double *comm, bool *summed) {
  if (t->dev)
    a3_train_device_zero_grads(t->dev);
  else
    a3_unet_zero_grads(t->m);
  for (int64_t k = 0; k < t->cfg.train.grad_accum; k++) {
    double share = 0.0;
    A3_TRY(micro_step(t, k, &share));
    *total += share;
  }
  // Communication: waiting for the gradient sum the backward started (on a
  // GPU with MPI, with its copies through host memory, which wait for the
  // backward). With NCCL the device waits for the comm stream, and the host
  // waits for the sums (settle) after it has queued the update behind them,
  // so that the update is ready when they arrive. That is 4 launches
  // (a3_train_device_update, whatever the segments): behind a hung sum, CUDA
  // blocks a launch only once about a thousand are pending, so the host
  // still reaches the watchdog.
  const double comm0 = MPI_Wtime();
  A3_TRY(reduce_grads(t, summed));
  *comm = MPI_Wtime() - comm0;
  A3_TRY(update(t, factor));
  if (t->nccl) A3_TRY(settle_sums(t, comm));
  return A3_OK;
}

// A step that failed on this rank must not leave the others of its group
// waiting for its sums for good (a3_grad_comm_fail); the group then learns of
// the failure at a3_trainer_agree.
static a3_status end_step(a3_trainer *t, a3_status s, bool summed) {
  if (s == A3_OK || !t->gc || t->size == 1) return s;
  if (a3_grad_comm_fail(t->gc, a3_unet_grads(t->m), summed) != A3_OK)
    a3_log(A3_LOG_ERROR, "after a failed step: %s", a3_error_message());
  return s;
}

a3_status a3_trainer_agree(a3_trainer *t, a3_status mine) {
  if (t->size == 1) return mine;
  return a3_agree(t->comm, mine, "training");
}

a3_status a3_trainer_advance(a3_trainer *t) {
  const double t0 = MPI_Wtime();
  const a3_train_config *tc = &t->cfg.train;
  const int64_t pending = t->step - t->first_pending;
  if (pending >= t->pending_cap)
    return A3_FAIL(A3_ERR_INTERNAL, "trainer: the losses of %lld steps were not taken",
                   (long long)pending);
  const double factor = a3_lr_factor(tc->lr_schedule, t->step, tc->warmup, tc->steps);
  double total = 0.0, comm = 0.0;
  bool summed = false;
  A3_TRY(end_step(t, run_step(t, factor, &total, &comm, &summed), summed));
  t->timing.comm_s += comm;
  t->timing.compute_s += MPI_Wtime() - t0 - comm;
  t->timing.steps++;
  t->pending_loss[pending] = total;
  t->pending_lr[pending] = t->hp.lr * factor;
  t->step++;
  return A3_OK;
}

int64_t a3_trainer_pending(const a3_trainer *t) { return t->step - t->first_pending; }
int64_t a3_trainer_pending_capacity(const a3_trainer *t) { return t->pending_cap; }

// A GPU's pending losses: each step's sum of its micro-batches' weighted
// means, in micro-batch order as on the CPU. The wait for the device is
// compute time.
static a3_status take_device_losses(a3_trainer *t, int64_t pending) {
  const double t0 = MPI_Wtime();
  int64_t n = 0;
  A3_TRY(a3_train_device_take_losses(t->dev, t->micro_losses, &n));
  t->timing.compute_s += MPI_Wtime() - t0;
  const int64_t accum = t->cfg.train.grad_accum, expect = t->r_count > 0 ? pending * accum : 0;
  if (n != expect)
    return A3_FAIL(A3_ERR_INTERNAL, "device: %lld micro-batch losses for %lld steps of %lld",
                   (long long)n, (long long)pending, (long long)accum);
  if (n == 0) return A3_OK; // no images on this rank: advance left its shares at 0
  const double weight = micro_weight(t);
  for (int64_t i = 0; i < pending; i++) {
    double total = 0.0;
    for (int64_t k = 0; k < accum; k++) total += (double)t->micro_losses[i * accum + k] * weight;
    t->pending_loss[i] = total;
  }
  return A3_OK;
}

a3_status a3_trainer_take_losses(a3_trainer *t, a3_step_losses *out) {
  const int64_t pending = t->step - t->first_pending;
  // A rank whose device failed still takes part in the all-reduce (with
  // zeros), so that the group's collectives stay matched until it agrees.
  const a3_status s = t->dev ? take_device_losses(t, pending) : A3_OK;
  if (s != A3_OK)
    for (int64_t i = 0; i < pending; i++) t->pending_loss[i] = 0.0;
  const double t0 = MPI_Wtime();
  if (t->size > 1 && pending > 0 &&
      MPI_Allreduce(MPI_IN_PLACE, t->pending_loss, (int)pending, MPI_DOUBLE, MPI_SUM, t->comm) !=
          MPI_SUCCESS &&
      s == A3_OK)
    return A3_FAIL(A3_ERR_MPI, "loss all-reduce over %d ranks failed", t->size);
  t->timing.comm_s += MPI_Wtime() - t0;
  A3_TRY(s);
  *out = (a3_step_losses){.first_step = t->first_pending + 1,
                          .n = pending,
                          .loss = t->pending_loss,
                          .lr = t->pending_lr};
  t->first_pending = t->step;
  return A3_OK;
}

a3_status a3_trainer_step(a3_trainer *t, double *loss, double *lr) {
  if (t->step > t->first_pending)
    return A3_FAIL(A3_ERR_INTERNAL, "trainer: a3_trainer_step with %lld steps' losses not taken",
                   (long long)(t->step - t->first_pending));
  A3_TRY(a3_trainer_agree(t, a3_trainer_advance(t)));
  a3_step_losses taken;
  A3_TRY(a3_trainer_agree(t, a3_trainer_take_losses(t, &taken)));
  *loss = taken.loss[0];
  *lr = taken.lr[0];
  return A3_OK;
}

// ---------------------------------------------------------------- checkpoints

a3_status a3_trainer_save(a3_trainer *t, const char *path) {
  // The device's state comes to every rank (a rank whose device failed says
  // so at the agreement, after the others' collectives it still joins).
  a3_status s = t->dev ? a3_train_device_pull(t->dev, t->m, t->adam_m, t->adam_v, t->ema) : A3_OK;
  if (s == A3_OK && t->rank == 0) {
    const a3_model_ckpt st = {t->config_yaml, t->config_hash, t->step, (uint64_t)t->cfg.train.seed,
                              t->adam_m,      t->adam_v,      t->ema,  t->base_hash};
    s = a3_model_checkpoint_write(path, t->m, &st);
  }
  A3_TRY(a3_agree(t->comm, s, "writing the checkpoint"));
  return A3_OK;
}

a3_status a3_trainer_resume(a3_trainer *t, const char *path) {
  if (t->step > t->first_pending) // their losses would be attributed to the resumed steps
    return A3_FAIL(A3_ERR_INTERNAL, "trainer: resuming %s with %lld steps' losses not taken", path,
                   (long long)(t->step - t->first_pending));
  int64_t step = 0;
  a3_status s =
      a3_model_checkpoint_read_state(path, t->m, &t->cfg, t->adam_m, t->adam_v, t->ema, &step);
  // The run's base is the one its first session started from.
  char stored[A3_BASE_HASH_MAX] = "";
  if (s == A3_OK) s = a3_model_checkpoint_base_hash(path, stored);
  if (s == A3_OK && strcmp(stored, "unknown") != 0)
    snprintf(t->base_hash, sizeof t->base_hash, "%s", stored);
  // Every rank reads the file itself; they must all have succeeded.
  int ok = s == A3_OK, all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_LAND, t->comm);
  A3_TRY(s);
  if (!all_ok) return A3_FAIL(A3_ERR_IO, "another rank could not read the checkpoint %s", path);
  if (step < 0 || step > t->cfg.train.steps)
    return A3_FAIL(A3_ERR_INPUT, "%s: step %lld is outside 0..train.steps (%lld)", path,
                   (long long)step, (long long)t->cfg.train.steps);
  t->step = t->first_pending = step;
  // The push may fail on one rank alone (its GPU): all learn it here.
  s = t->dev ? a3_train_device_push(t->dev, t->m, t->adam_m, t->adam_v, t->ema) : A3_OK;
  A3_TRY(a3_agree(t->comm, s, "resuming"));
  return A3_OK;
}
