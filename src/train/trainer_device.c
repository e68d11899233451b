// The trainer's device side (see trainer_device.h): a device copy of the
// model, the optimizer's moments and EMA in device memory, and the step's
// loss, clipping, AdamW and EMA as backend ops, so that a step moves only
// its micro-batches up and one loss float down.
#include "trainer_device.h"

#include "a3fta/dist.h"

#include <stdlib.h>

struct a3_train_device {
  const a3_backend *be;
  a3_unet *m; // the device copy
  char name[400];
  const a3_param_segment *segs; // the trainer's, flat offsets
  int n_segs;
  int64_t n_train, batch, per_sample, T;
  float *x_t, *noise, *out, *dout; // (batch, per_sample)
  float *tf;                       // (batch)
  float *acp;                      // (T) the schedule's alphas_cumprod
  float *loss, *scale;             // (1)
  double *partials, *norm;         // (n_segs), (1)
  float *adam_m, *adam_v, *ema;    // (n_train) compact
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
  A3_TRY(alloc_floats(be, &d->loss, 1));
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
  return A3_OK;
}

a3_status a3_train_device_open(const a3_config *cfg, MPI_Comm comm, const a3_unet *host,
                               const a3_noise_schedule_table *sched, const a3_param_segment *segs,
                               int n_segs, int64_t batch, a3_train_device **out) {
  *out = NULL;
  const a3_backend *be = NULL;
  char name[sizeof((a3_train_device *)0)->name] = "";
  A3_TRY(a3_backend_pick(cfg, comm, &be, name, sizeof name));
  if (!be) return A3_OK;
  a3_train_device *d = NULL;
  a3_status s = A3_ALLOC(d, 1);
  if (s != A3_OK) {
    a3_backend_cuda_destroy(be);
    A3_TRY(s);
  }
  *d = (a3_train_device){
      .be = be, .segs = segs, .n_segs = n_segs, .batch = batch > 0 ? batch : 1, .T = sched->T};
  snprintf(d->name, sizeof d->name, "%s", name);
  d->n_train = a3_segments_numel(segs, n_segs);
  const a3_arch_config *arch = a3_unet_arch(host);
  d->per_sample = arch->in_channels * arch->sample_size * arch->sample_size;
  A3_TRY_GOTO(s, copy_model(d, host), fail);
  A3_TRY_GOTO(s, alloc_buffers(d), fail);
  // Once per run: every micro-batch's add_noise reads it on the device.
  A3_TRY_GOTO(s, be->ops->upload(be, d->acp, sched->alphas_cumprod, (size_t)d->T * sizeof(float)),
              fail);
  A3_TRY_GOTO(s, be->ops->synchronize(be), fail);
  *out = d;
  return A3_OK;
fail:
  a3_train_device_free(d);
  return s;
}

void a3_train_device_free(a3_train_device *d) {
  if (!d) return;
  const a3_backend *be = d->be;
  float *floats[] = {d->x_t,  d->noise, d->out,    d->dout,   d->tf, d->acp,
                     d->loss, d->scale, d->adam_m, d->adam_v, d->ema};
  for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) be->ops->release(be, floats[i]);
  be->ops->release(be, d->partials);
  be->ops->release(be, d->norm);
  a3_unet_free(d->m);
  a3_backend_cuda_destroy(be);
  free(d);
}

const char *a3_train_device_name(const a3_train_device *d) { return d->name; }

a3_status a3_train_device_micro(a3_train_device *d, const float *x0, uint64_t seed, uint64_t step,
                                uint64_t sample0, int64_t count, int64_t per_sample, double weight,
                                const a3_backward_hook *hook, double *loss) {
  const a3_backend *be = d->be;
  const size_t n = (size_t)(count * per_sample);
  // x0 goes into x_t's buffer, which the op then turns into x_t in place.
  A3_TRY(be->ops->upload(be, d->x_t, x0, n * sizeof(float)));
  be->ops->training_noise(be, d->x_t, d->noise, d->tf, d->x_t, d->acp, seed, step, sample0,
                          (int)count, (int)per_sample, (int)d->T);
  A3_TRY(a3_unet_forward(d->m, d->x_t, d->tf, d->out));
  be->ops->mse_forward(be, d->loss, d->out, d->noise, n);
  be->ops->mse_backward(be, d->dout, d->out, d->noise, n, (float)weight);
  A3_TRY(a3_unet_backward_hooked(d->m, d->dout, NULL, hook));
  float l = 0.0f;
  A3_TRY(be->ops->download(be, &l, d->loss, sizeof l));
  *loss = (double)l;
  return A3_OK;
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
  return A3_OK;
}

void a3_train_device_zero_grads(a3_train_device *d) { a3_unet_zero_grads(d->m); }

a3_status a3_train_device_update(a3_train_device *d, const a3_adamw_hparams *h, int64_t t,
                                 double max_norm, double ema_decay) {
  const a3_backend *be = d->be;
  float *params = a3_unet_params(d->m), *grads = a3_unet_grads(d->m);
  a3_clip_factor_on(be, d->segs, d->n_segs, grads, max_norm, d->partials, d->scale, d->norm);
  A3_TRY(a3_adamw_step_on(be, h, t, d->segs, d->n_segs, params, grads, d->adam_m, d->adam_v,
                          d->scale));
  if (ema_decay >= 0) a3_ema_update_on(be, d->segs, d->n_segs, params, d->ema, ema_decay);
  return be->ops->synchronize(be);
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
  return A3_OK;
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
