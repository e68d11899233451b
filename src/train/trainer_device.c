// The trainer's device side (see trainer_device.h): a device copy of the
// model, the optimizer's moments, the EMA and the training images in device
// memory, and the step's batch, loss, clipping, AdamW and EMA as backend
// ops, so that a step only launches.
#include "trainer_device.h"

#include "a3fta/dist.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Micro-batch losses the device keeps between two reads by the host.
enum { LOSS_CAPACITY = 4096 };

// A3FTA_TRAIN_DEVICE=cpu: a copy of the CPU backend whose impl counts copies.
typedef struct {
  a3_backend be;
  a3_backend_ops ops;
  int64_t uploads, downloads;
} counted_cpu;

struct a3_train_device {
  const a3_backend *be;
  counted_cpu *cpu; // the A3FTA_TRAIN_DEVICE=cpu backend (be), or NULL
  a3_unet *m;       // the device copy
  char name[400];
  const a3_param_segment *segs; // the trainer's, flat offsets
  int n_segs;
  a3_segment_table table; // segs in device memory: the optimizer's one launch per op
  int64_t n_train, batch, per_sample, T;
  const a3_train_data *data;       // the trainer's (host) subset
  uint8_t *images;                 // (n, C, S, S) its device copy, or NULL: upload per micro-batch
  float *x0_host;                  // (batch, per_sample) host scratch when images is NULL
  float *x_t, *noise, *out, *dout; // (batch, per_sample)
  float *tf;                       // (batch)
  float *acp;                      // (T) the schedule's alphas_cumprod
  float *losses;                   // (LOSS_CAPACITY) micro-batch losses not yet read
  int64_t n_losses;
  float *scale;                 // (1)
  double *partials, *norm;      // (n_segs), (1)
  float *adam_m, *adam_v, *ema; // (n_train) compact
};

static a3_status alloc_floats(const a3_backend *be, float **p, size_t n) {
  return be->ops->alloc(be, (void **)p, (n ? n : 1) * sizeof(float));
}

static a3_status alloc_buffers(a3_train_device *d) {
  const a3_backend *be = d->be;
  const size_t act = (size_t)(d->batch * d->per_sample), nt = (size_t)d->n_train;
  A3_TRY(alloc_floats(be, &d->x_t, act));
  A3_TRY(alloc_floats(be, &d->noise, act));
  A3_TRY(alloc_floats(be, &d->out, act));
  A3_TRY(alloc_floats(be, &d->dout, act));
  A3_TRY(alloc_floats(be, &d->tf, (size_t)d->batch));
  A3_TRY(alloc_floats(be, &d->acp, (size_t)d->T));
  A3_TRY(alloc_floats(be, &d->losses, LOSS_CAPACITY));
  A3_TRY(alloc_floats(be, &d->scale, 1));
  A3_TRY(alloc_floats(be, &d->adam_m, nt));
  A3_TRY(alloc_floats(be, &d->adam_v, nt));
  A3_TRY(alloc_floats(be, &d->ema, nt));
  A3_TRY(be->ops->alloc(be, (void **)&d->partials, sizeof(double) * (size_t)(d->n_segs + 1)));
  A3_TRY(be->ops->alloc(be, (void **)&d->norm, sizeof(double)));
  return A3_OK;
}

// The device model: the host model's architecture, extras, trainable flags
// and parameters.
static a3_status copy_model(a3_train_device *d, const a3_unet *host) {
  A3_TRY(a3_unet_build_on(a3_unet_arch(host), a3_unet_get_extras(host), d->be, &d->m));
  for (int i = 0; i < a3_unet_param_count(host); i++)
    a3_unet_set_trainable(d->m, i, a3_unet_param_at(host, i)->trainable);
  A3_TRY(a3_unet_copy_params(d->m, host));
  A3_TRY(a3_unet_plan(d->m, (int)d->batch));
  const a3_unet_memory mem = a3_unet_planned_bytes(d->m);
  a3_log(A3_LOG_INFO,
         "activations on %s (micro-batch %d, %s): %.1f MiB (%.1f MiB saved for the backward)",
         d->be->name, (int)d->batch, d->be->act_bytes == 2 ? "bf16" : "fp32", mem.total / 1048576.0,
         mem.saved / 1048576.0);
  return A3_OK;
}

// ---------------------------------------------------------------- A3FTA_TRAIN_DEVICE=cpu

static a3_status counted_upload(const a3_backend *be, void *dst, const void *src, size_t bytes) {
  ((counted_cpu *)be->impl)->uploads++;
  return a3_backend_cpu()->ops->upload(a3_backend_cpu(), dst, src, bytes);
}

static a3_status counted_download(const a3_backend *be, void *dst, const void *src, size_t bytes) {
  ((counted_cpu *)be->impl)->downloads++;
  return a3_backend_cpu()->ops->download(a3_backend_cpu(), dst, src, bytes);
}

static a3_status open_counted_cpu(counted_cpu **out, char *name, size_t cap) {
  A3_TRY(A3_ALLOC(*out, 1));
  counted_cpu *c = *out;
  c->ops = *a3_backend_cpu()->ops;
  c->ops.upload = counted_upload;
  c->ops.download = counted_download;
  c->be = (a3_backend){.name = "cpu-device", .ops = &c->ops, .impl = c, .act_bytes = sizeof(float)};
  snprintf(name, cap, "cpu, through the device path (A3FTA_TRAIN_DEVICE=cpu)");
  return A3_OK;
}

void a3_train_device_copies(const a3_train_device *d, int64_t *uploads, int64_t *downloads) {
  *uploads = d->cpu ? d->cpu->uploads : -1;
  *downloads = d->cpu ? d->cpu->downloads : -1;
}

// ---------------------------------------------------------------- open / free

static a3_status pick_backend(a3_train_device *d, const a3_config *cfg, MPI_Comm comm) {
  const char *env = getenv("A3FTA_TRAIN_DEVICE");
  if (env && strcmp(env, "cpu") == 0) {
    A3_TRY(open_counted_cpu(&d->cpu, d->name, sizeof d->name));
    d->be = &d->cpu->be;
    return A3_OK;
  }
  if (env && *env)
    return A3_FAIL(A3_ERR_USAGE, "A3FTA_TRAIN_DEVICE=%s: the only value is cpu (tests)", env);
  return a3_backend_pick(cfg, comm, &d->be, d->name, sizeof d->name);
}

// A3FTA_DEVICE_IMAGES_MAX_MB: the most training images kept in device
// memory (default: no limit), in MB; 0 uploads every micro-batch's images.
static a3_status images_limit(size_t *bytes) {
  *bytes = SIZE_MAX;
  const char *env = getenv("A3FTA_DEVICE_IMAGES_MAX_MB");
  if (!env || !*env) return A3_OK;
  char *end = NULL;
  const double mb = strtod(env, &end);
  if (*end || !(mb >= 0) || mb > 1e12)
    return A3_FAIL(A3_ERR_USAGE, "A3FTA_DEVICE_IMAGES_MAX_MB=%s: give a number of MB (0 or more)",
                   env);
  *bytes = (size_t)(mb * 1048576.0);
  return A3_OK;
}

// The subset's images in device memory, once; past the limit, or on a
// device too small for them, each micro-batch uploads its images instead
// (logged).
static a3_status keep_images(a3_train_device *d) {
  const a3_backend *be = d->be;
  const size_t bytes = (size_t)d->data->n * (size_t)d->per_sample;
  size_t limit = 0;
  A3_TRY(images_limit(&limit));
  if (bytes <= limit && be->ops->alloc(be, (void **)&d->images, bytes ? bytes : 1) == A3_OK) {
    const size_t used = strlen(d->name); // the log's "backend:" line says where the images are
    const int mb = bytes >= 1048576;
    snprintf(d->name + used, sizeof d->name - used, ", training images in device memory (%.1f %s)",
             (double)bytes / (mb ? 1048576.0 : 1024.0), mb ? "MB" : "kB");
    return be->ops->upload(be, d->images, d->data->images, bytes);
  }
  a3_warn("the %.1f MB of training images stay in host memory (%s): each micro-batch uploads its "
          "images",
          (double)bytes / 1048576.0,
          bytes > limit ? "over A3FTA_DEVICE_IMAGES_MAX_MB" : a3_error_message());
  a3_error_clear();
  d->images = NULL;
  return A3_ALLOC(d->x0_host, (size_t)(d->batch * d->per_sample));
}

static a3_status fill_device(a3_train_device *d, const a3_unet *host,
                             const a3_noise_schedule_table *sched) {
  const a3_backend *be = d->be;
  A3_TRY(copy_model(d, host));
  A3_TRY(alloc_buffers(d));
  A3_TRY(keep_images(d));
  A3_TRY(a3_segment_table_make(be, d->segs, d->n_segs, &d->table));
  // Once per run: every micro-batch's add_noise reads it on the device.
  A3_TRY(be->ops->upload(be, d->acp, sched->alphas_cumprod, (size_t)d->T * sizeof(float)));
  return be->ops->synchronize(be);
}

a3_status a3_train_device_open(const a3_config *cfg, MPI_Comm comm, const a3_unet *host,
                               const a3_noise_schedule_table *sched, const a3_train_data *data,
                               const a3_param_segment *segs, int n_segs, int64_t batch,
                               a3_train_device **out) {
  *out = NULL;
  a3_train_device *d = NULL;
  A3_TRY(A3_ALLOC(d, 1));
  *d = (a3_train_device){
      .segs = segs, .n_segs = n_segs, .batch = batch > 0 ? batch : 1, .T = sched->T, .data = data};
  snprintf(d->name, sizeof d->name, "cpu");
  a3_status s = pick_backend(d, cfg, comm);
  if (s != A3_OK || !d->be) {
    a3_train_device_free(d);
    return s;
  }
  d->n_train = a3_segments_numel(segs, n_segs);
  const a3_arch_config *arch = a3_unet_arch(host);
  d->per_sample = arch->in_channels * arch->sample_size * arch->sample_size;
  A3_TRY_GOTO(s, fill_device(d, host, sched), fail);
  *out = d;
  return A3_OK;
fail:
  a3_train_device_free(d);
  return s;
}

void a3_train_device_free(a3_train_device *d) {
  if (!d) return;
  const a3_backend *be = d->be;
  if (be) {
    float *floats[] = {d->x_t,    d->noise, d->out,    d->dout,   d->tf, d->acp,
                       d->losses, d->scale, d->adam_m, d->adam_v, d->ema};
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) be->ops->release(be, floats[i]);
    be->ops->release(be, d->images);
    be->ops->release(be, d->partials);
    be->ops->release(be, d->norm);
    a3_segment_table_free(be, &d->table);
  }
  a3_unet_free(d->m);
  if (!d->cpu) a3_backend_cuda_destroy(be);
  free(d->cpu);
  free(d->x0_host);
  free(d);
}

const char *a3_train_device_name(const a3_train_device *d) { return d->name; }

// ---------------------------------------------------------------- the step

// x_t's buffer gets the micro-batch's images x0 (count, C, S, S).
static a3_status batch_images(a3_train_device *d, const uint32_t *items, int64_t count) {
  const a3_backend *be = d->be;
  const int C = d->data->channels, S = d->data->size;
  if (d->images) {
    be->ops->batch_images(be, d->x_t, d->images, items, (int)count, C, S);
    return A3_OK;
  }
  const a3_backend *cpu = a3_backend_cpu();
  cpu->ops->batch_images(cpu, d->x0_host, d->data->images, items, (int)count, C, S);
  return be->ops->upload(be, d->x_t, d->x0_host, (size_t)(count * d->per_sample) * sizeof(float));
}

a3_status a3_train_device_micro(a3_train_device *d, const uint32_t *items, uint64_t seed,
                                uint64_t step, uint64_t sample0, int64_t count, double weight,
                                const a3_backward_hook *hook) {
  const a3_backend *be = d->be;
  if (d->n_losses >= LOSS_CAPACITY)
    return A3_FAIL(A3_ERR_INTERNAL, "device: %d micro-batch losses not read", LOSS_CAPACITY);
  const size_t n = (size_t)(count * d->per_sample);
  A3_TRY(batch_images(d, items, count));
  // x_t's buffer holds x0, which the op turns into x_t in place.
  be->ops->training_noise(be, d->x_t, d->noise, d->tf, d->x_t, d->acp, seed, step, sample0,
                          (int)count, (int)d->per_sample, (int)d->T);
  A3_TRY(a3_unet_forward(d->m, d->x_t, d->tf, d->out));
  be->ops->mse_forward(be, d->losses + d->n_losses++, d->out, d->noise, n);
  be->ops->mse_backward(be, d->dout, d->out, d->noise, n, (float)weight);
  return a3_unet_backward_hooked(d->m, d->dout, NULL, hook);
}

int64_t a3_train_device_loss_capacity(const a3_train_device *d) {
  (void)d;
  return LOSS_CAPACITY;
}

a3_status a3_train_device_take_losses(a3_train_device *d, float *losses, int64_t *n) {
  const a3_backend *be = d->be;
  *n = d->n_losses;
  d->n_losses = 0;
  if (*n) A3_TRY(be->ops->download(be, losses, d->losses, (size_t)*n * sizeof(float)));
  return be->ops->synchronize(be);
}

int64_t a3_train_device_batch(const a3_train_device *d) { return d->batch; }

// The per-sample losses go through dout (overwritten by the next micro-batch).
a3_status a3_train_device_eval(a3_train_device *d, const float *x_t, const float *tf,
                               const float *noise, int64_t count, int64_t per_sample,
                               float *losses) {
  const a3_backend *be = d->be;
  if (count < 1 || count > d->batch || per_sample != d->per_sample)
    return A3_FAIL(A3_ERR_INTERNAL,
                   "device eval: %lld images of %lld values for a model planned "
                   "for %lld of %lld",
                   (long long)count, (long long)per_sample, (long long)d->batch,
                   (long long)d->per_sample);
  const size_t n = (size_t)(count * per_sample);
  A3_TRY(be->ops->upload(be, d->x_t, x_t, n * sizeof(float)));
  A3_TRY(be->ops->upload(be, d->noise, noise, n * sizeof(float)));
  A3_TRY(be->ops->upload(be, d->tf, tf, (size_t)count * sizeof(float)));
  A3_TRY(a3_unet_forward(d->m, d->x_t, d->tf, d->out));
  const size_t per = (size_t)per_sample;
  for (int64_t i = 0; i < count; i++)
    be->ops->mse_forward(be, d->dout + i, d->out + (size_t)i * per, d->noise + (size_t)i * per,
                         per);
  A3_TRY(be->ops->download(be, losses, d->dout, (size_t)count * sizeof(float)));
  return be->ops->synchronize(be); // a failed launch must not pass stale losses on
}

void a3_train_device_zero_grads(a3_train_device *d) { a3_unet_zero_grads(d->m); }

a3_status a3_train_device_update(a3_train_device *d, const a3_adamw_hparams *h, int64_t t,
                                 double max_norm, double ema_decay) {
  const a3_backend *be = d->be;
  float *params = a3_unet_params(d->m), *grads = a3_unet_grads(d->m);
  a3_clip_factor_on(be, &d->table, grads, max_norm, d->partials, d->scale, d->norm);
  A3_TRY(a3_adamw_step_on(be, h, t, &d->table, params, grads, d->adam_m, d->adam_v, d->scale));
  if (ema_decay >= 0) a3_ema_update_on(be, &d->table, params, d->ema, ema_decay);
  return A3_OK; // errors surface at the next take_losses or pull
}

const a3_backend *a3_train_device_backend(const a3_train_device *d) { return d->be; }
float *a3_train_device_grads(a3_train_device *d) { return a3_unet_grads(d->m); }

a3_status a3_train_device_grads_to_host(a3_train_device *d, float *grads) {
  return d->be->ops->download(d->be, grads, a3_unet_grads(d->m),
                              a3_unet_num_floats(d->m) * sizeof(float));
}

a3_status a3_train_device_grads_from_host(a3_train_device *d, const float *grads) {
  return d->be->ops->upload(d->be, a3_unet_grads(d->m), grads,
                            a3_unet_num_floats(d->m) * sizeof(float));
}

a3_status a3_train_device_pull(a3_train_device *d, a3_unet *host, float *m, float *v, float *ema) {
  const a3_backend *be = d->be;
  const size_t bytes = (size_t)d->n_train * sizeof(float);
  A3_TRY(a3_unet_copy_params(host, d->m));
  A3_TRY(be->ops->download(be, m, d->adam_m, bytes));
  A3_TRY(be->ops->download(be, v, d->adam_v, bytes));
  if (ema) A3_TRY(be->ops->download(be, ema, d->ema, bytes));
  return be->ops->synchronize(be); // an earlier step's error must not reach a checkpoint
}

a3_status a3_train_device_push(a3_train_device *d, const a3_unet *host, const float *m,
                               const float *v, const float *ema) {
  const a3_backend *be = d->be;
  const size_t bytes = (size_t)d->n_train * sizeof(float);
  A3_TRY(a3_unet_copy_params(d->m, host));
  A3_TRY(be->ops->upload(be, d->adam_m, m, bytes));
  A3_TRY(be->ops->upload(be, d->adam_v, v, bytes));
  if (ema) A3_TRY(be->ops->upload(be, d->ema, ema, bytes));
  return be->ops->synchronize(be);
}
