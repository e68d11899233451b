// The trainer's device side: when parallel.backend picks a GPU, the model,
// its gradients, the optimizer moments, the EMA and the training subset's
// images live in device memory and the step runs there. The host only
// launches: it picks each micro-batch's images (a3_train_batch_items, handed
// to the batch_images op as launch arguments), the device draws their
// timesteps and noise and keeps each micro-batch's loss, which the host
// reads in one copy when it logs (a3_train_device_take_losses). So a step
// neither copies nor waits (with NCCL the host still waits for the gradient
// sum, under its watchdog), and the host runs ahead of the GPU. The host
// keeps a copy of the model that checkpoints, sampling and exports read
// after a3_train_device_pull.
//
// A3FTA_TRAIN_DEVICE=cpu (tests) runs this side on a copy of the CPU
// backend that counts its copies (a3_train_device_copies), so that a
// machine without a GPU exercises the GPU's training path.
#ifndef A3FTA_TRAINER_DEVICE_H
#define A3FTA_TRAINER_DEVICE_H

#include "a3fta/optim.h"
#include "a3fta/trainer.h"

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct a3_train_device a3_train_device;

// Picks the backend of cfg->parallel.backend for this rank (the local rank,
// modulo the visible devices, chooses the GPU): *out = NULL for the CPU (cpu,
// or auto without a usable GPU, which is logged); A3_ERR_CUDA for cuda
// without one. On a GPU: a copy of `host` (parameters and trainable flags)
// planned for `batch` images, the schedule's alphas_cumprod, the images of
// `data` (when device memory holds them; else each micro-batch uploads its
// images, which is logged), and zeroed moments and EMA (push them).
a3_status a3_train_device_open(const a3_config *cfg, MPI_Comm comm, const a3_unet *host,
                               const a3_noise_schedule_table *sched, const a3_train_data *data,
                               const a3_param_segment *segs, int n_segs, int64_t batch,
                               a3_train_device **out) A3_WARN_UNUSED;
void a3_train_device_free(a3_train_device *d); // NULL is fine
const char *a3_train_device_name(const a3_train_device *d);

// Forward and backward of one micro-batch: the images `items` (count, host;
// a3_train_batch_items) of the data given to open; their timesteps, noise
// and x_t drawn on the device (the training_noise op) for the samples
// [sample0, sample0 + count) of step `step` of seed `seed`, as
// a3_diffusion_training_batch draws them on the host; dout weighted by
// `weight`. Gradients accumulate (+=) as a3_unet_backward does; the backward
// reports its stages to hook (NULL: none; the NCCL gradient sum starts its
// buckets there). The micro-batch's mean squared error stays on the device,
// after the ones before it: at most a3_train_device_loss_capacity of them
// until a3_train_device_take_losses. Only queues work.
a3_status a3_train_device_micro(a3_train_device *d, const uint32_t *items, uint64_t seed,
                                uint64_t step, uint64_t sample0, int64_t count, double weight,
                                const a3_backward_hook *hook) A3_WARN_UNUSED;
int64_t a3_train_device_loss_capacity(const a3_train_device *d);
// The losses of the micro-batches since the last call, in order (*n of
// them, at most the capacity): one download, after which the queued work
// has finished and its first error, if any, is returned.
a3_status a3_train_device_take_losses(a3_train_device *d, float *losses, int64_t *n) A3_WARN_UNUSED;
// Host <-> device copies so far (A3FTA_TRAIN_DEVICE=cpu only; -1 on a GPU).
void a3_train_device_copies(const a3_train_device *d, int64_t *uploads, int64_t *downloads);
// Evaluation forward (the held-out loss): x_t and noise (count, per_sample),
// tf (count) given on the host, count <= a3_train_device_batch (the rest of
// the planned batch runs on whatever the input buffers hold and is
// ignored); losses[i] = sample i's mean squared error. Touches no
// parameter, gradient or optimizer state.
a3_status a3_train_device_eval(a3_train_device *d, const float *x_t, const float *tf,
                               const float *noise, int64_t count, int64_t per_sample,
                               float *losses) A3_WARN_UNUSED;
int64_t a3_train_device_batch(const a3_train_device *d); // images the device model is planned for
void a3_train_device_zero_grads(a3_train_device *d);
// Gradient clipping (max_norm <= 0: none), AdamW step t (from 1), and the EMA
// update when ema_decay >= 0, all on the device; only queues work.
a3_status a3_train_device_update(a3_train_device *d, const a3_adamw_hparams *h, int64_t t,
                                 double max_norm, double ema_decay) A3_WARN_UNUSED;
// The device backend and the device model's gradient buffer (num_floats
// layout), for the NCCL gradient sum.
const a3_backend *a3_train_device_backend(const a3_train_device *d);
float *a3_train_device_grads(a3_train_device *d);
// The trainable gradients, flat (num_floats layout), to and from the host,
// for the data-parallel reduction over MPI (which therefore waits for the
// backward).
a3_status a3_train_device_grads_to_host(a3_train_device *d, float *grads) A3_WARN_UNUSED;
a3_status a3_train_device_grads_from_host(a3_train_device *d, const float *grads) A3_WARN_UNUSED;
// Device -> host (parameters into `host`; m, v and ema compact, ema may be
// NULL) before a checkpoint; host -> device after a resume.
a3_status a3_train_device_pull(a3_train_device *d, a3_unet *host, float *m, float *v,
                               float *ema) A3_WARN_UNUSED;
a3_status a3_train_device_push(a3_train_device *d, const a3_unet *host, const float *m,
                               const float *v, const float *ema) A3_WARN_UNUSED;

// The trainer's device side, or NULL when it trains on the CPU (trainer.c).
a3_train_device *a3_trainer_device(a3_trainer *t);

#endif
