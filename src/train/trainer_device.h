// The trainer's device side: when parallel.backend picks a GPU, the model,
// its gradients, the optimizer moments and the EMA live in device memory and
// the step runs there; the host keeps the data pipeline (images, uploaded
// per micro-batch; the device draws their timesteps and noise) and a host
// copy of the model that checkpoints, sampling and exports read after
// a3_train_device_pull.
#ifndef A3FTA_TRAINER_DEVICE_H
#define A3FTA_TRAINER_DEVICE_H

#include "a3fta/optim.h"
#include "a3fta/trainer.h"

#include <mpi.h>
#include <stdbool.h>

typedef struct a3_train_device a3_train_device;

// Picks the backend of cfg->parallel.backend for this rank (the local rank,
// modulo the visible devices, chooses the GPU): *out = NULL for the CPU (cpu,
// or auto without a usable GPU, which is logged); A3_ERR_CUDA for cuda
// without one. On a GPU: a copy of `host` (parameters and trainable flags)
// planned for `batch` images, the schedule's alphas_cumprod, and zeroed
// moments and EMA (push them).
a3_status a3_train_device_open(const a3_config *cfg, MPI_Comm comm, const a3_unet *host,
                               const a3_noise_schedule_table *sched, const a3_param_segment *segs,
                               int n_segs, int64_t batch, a3_train_device **out) A3_WARN_UNUSED;
void a3_train_device_free(a3_train_device *d); // NULL is fine
const char *a3_train_device_name(const a3_train_device *d);

// Forward and backward of one micro-batch whose images x0 (count,
// per_sample) are given on the host: the step's one upload. Its timesteps,
// noise and x_t are drawn on the device (the training_noise op) for the
// samples [sample0, sample0 + count) of step `step` of seed `seed`, as
// a3_diffusion_training_batch draws them on the host. Gradients accumulate
// (+=) as a3_unet_backward does; the backward reports its stages to hook
// (NULL: none; the NCCL gradient sum starts its buckets there); *loss = the
// micro-batch's mean squared error.
a3_status a3_train_device_micro(a3_train_device *d, const float *x0, uint64_t seed, uint64_t step,
                                uint64_t sample0, int64_t count, int64_t per_sample, double weight,
                                const a3_backward_hook *hook, double *loss) A3_WARN_UNUSED;
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
// update when ema_decay >= 0, all on the device.
a3_status a3_train_device_update(a3_train_device *d, const a3_adamw_hparams *h, int64_t t,
                                 double max_norm, double ema_decay) A3_WARN_UNUSED;
// The device backend and the device model's gradient buffer (num_floats
// layout), for the NCCL gradient sum.
const a3_backend *a3_train_device_backend(const a3_train_device *d);
float *a3_train_device_grads(a3_train_device *d);
// The trainable gradients, flat (num_floats layout), to and from the host,
// for the data-parallel reduction over MPI.
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
