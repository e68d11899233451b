// a3fta training: the loop that fine-tunes (or pretrains) one U-Net with one
// resolved config, data-parallel over a communicator; its checkpoints; and
// sampling from a trained model.
//
// Determinism. Everything random is counter-based (core's Philox) and keyed
// by train.seed: the images of step s's batch, their flips, timesteps and
// noise are pure functions of (seed, s, global sample index). Resuming from a
// checkpoint at step k (params, AdamW moments, EMA, step) therefore gives
// bit-identical losses to a run that never stopped, and any number of ranks
// draws the same numbers (only the gradient sum's order differs).
//
// Batches. train.batch_size images per optimizer step over all ranks and
// micro-batches: grad_accum micro-batches of batch_size / grad_accum images;
// rank r of R takes the contiguous slice a3_shard_range(micro, r, R) of each.
// Global sample i of step s is image perm_e[g mod n] of the subset (n
// images), g = s * batch_size + i, e = g / n, where perm_e is a Fisher-Yates
// shuffle keyed by (seed, e) (stream A3_STREAM_SHUFFLE): every image once per
// epoch, in a fresh order each epoch. With data.hflip it is mirrored when
// bit 0 of a3_rng_u64(seed, A3_STREAM_HFLIP, g) is set.
//
// Images. uint8 (C, H, W) -> x = p / 127.5 - 1 in [-1, 1], brought to
// model.arch.sample_size S: centred padding with -1 (black) when H, W <= S
// (Fashion-MNIST 28x28 -> 2 pixels each side -> 32x32), area/bilinear
// resampling (a3_image_fit A3_FIT_RESIZE) when larger.
//
// Loss. mse(model(x_t, t), noise) over the whole global batch: each rank's
// backward is weighted by its share of the batch (n_r / micro / grad_accum),
// gradients are summed over the ranks, so the update equals the 1-rank one
// up to the summation order of fp32 gradients.
//
// Files in output.dir: checkpoint.h5 (rewritten atomically every
// train.checkpoint_every steps and at the end), losses.csv
// ("step,loss,lr,heldout", one row per step, heldout empty where it was not
// evaluated; on resume, rows after the checkpoint's step are dropped and a
// file of an older a3fta without the heldout column gets it), loss.png (the
// whole history of losses.csv: training loss faint with its moving average,
// held-out loss, log y axis; written when the loop ends), config.yaml (the
// resolved config).
#ifndef A3FTA_TRAINER_H
#define A3FTA_TRAINER_H

#include "a3fta/comm.h"
#include "a3fta/config.h"
#include "a3fta/core.h"
#include "a3fta/diffusion.h"
#include "a3fta/model.h"
#include "a3fta/optim.h"

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

// RNG stream of the flip augmentation (diffusion owns 16..19).
enum { A3_STREAM_HFLIP = 24 };

// ---------------------------------------------------------------- data
typedef struct {
  int64_t n;          // images in the subset
  int channels, size; // C and S = model.arch.sample_size
  uint8_t *images;    // (n, C, S, S) fitted to the model's size, 0 = black
  int64_t *indices;   // (n) their indices in the dataset split (ascending)
} a3_train_data;

// Opens cfg->data.path on `comm` (collective), selects the subset
// (data.classes, data.shots drawn with data.subset_seed) and reads all of it
// on every rank (few-shot subsets are small; each rank needs any image).
a3_status a3_train_data_load(MPI_Comm comm, const a3_config *cfg,
                             a3_train_data *out) A3_WARN_UNUSED;
void a3_train_data_free(a3_train_data *d); // safe on a zeroed struct

// Subset image of global sample g (see "Batches"); `perm` (n) and `*epoch`
// (-1 initially) cache the current epoch's permutation.
int64_t a3_train_sample_image(uint64_t seed, int64_t n, int64_t g, int64_t *perm, int64_t *epoch);
// The images of global samples [g0, g0 + count) as the backend's
// batch_images op takes them: items[i] = subset image << 1 | mirrored.
void a3_train_batch_items(const a3_train_data *d, uint64_t seed, bool hflip, int64_t g0,
                          int64_t count, int64_t *perm, int64_t *epoch, uint32_t *items);

// ---------------------------------------------------------------- gradients
// The trainer sums gradients over its ranks with a3fta/comm.h's bucketed
// communicator: buckets start during the last micro-batch's backward as its
// stages finish (a3_unet_backward_hooked), sized by a3_grad_bucket_bytes().
// No 1/size scaling: each rank weights its loss by its share of the batch,
// so a batch that does not split evenly (5 images on 2 ranks) is still exact.
// With 2 ranks the result is bitwise that of one MPI_Allreduce over all the
// gradients for any bucket size (see comm.h, "Numbers"). Ranks that all train
// on GPUs sum the device gradients with NCCL (a3_grad_comm_create_nccl, with
// its watchdog), the others through host memory with MPI; A3FTA_GRAD_COMM=
// mpi|nccl forces one (nccl also on one rank, to exercise the path).

// One piece per trainable parameter, in table order, with its backward stage.
a3_status a3_trainer_grad_pieces(const a3_unet *m, a3_grad_piece **pieces,
                                 int *n_pieces) A3_WARN_UNUSED;

// The same sum in one blocking call (MPI_Allreduce, SUM, in place); scratch
// holds a3_segments_numel floats (the segments are packed into it). The
// reference the bucketed sum is tested against.
a3_status a3_grad_allreduce(MPI_Comm comm, const a3_param_segment *segs, int n_segs, float *grads,
                            float *scratch) A3_WARN_UNUSED;

// One AdamW segment per trainable parameter, in table order (so compact
// optimizer/EMA arrays list the trainable tensors in table order); weight
// decay only on tensors of 2+ dimensions (not on biases or norm scales).
a3_status a3_trainable_segments(const a3_unet *m, a3_param_segment **segs,
                                int *n_segs) A3_WARN_UNUSED;

// ---------------------------------------------------------------- checkpoints
// A training checkpoint (on a3fta/checkpoint.h's generic file):
//   /                        format, format_version, config (resolved YAML),
//                            config_hash ("%016llx" of a3_config_hash), step,
//                            base_model_hash (a3fta/export.h: of the weights
//                            model.init gave, "random" for a random init)
//   /params/<name>           every parameter of the model, strategy modules included
//   /ema/<name>              EMA of each trainable parameter (when train.ema)
//   /optimizer/m/<name>      AdamW first moments of each trainable parameter
//   /optimizer/v/<name>      second moments; /optimizer has attribute step
//   /rng                     attributes seed and step (the RNG is counter-based:
//                            (seed, step) is its whole state)
typedef struct {
  const char *config_yaml; // stored verbatim
  uint64_t config_hash;
  int64_t step;                 // optimizer steps done
  uint64_t seed;                // train.seed
  const float *adam_m, *adam_v; // compact over the trainable tensors in table order, or NULL
  const float *ema;             // same layout, or NULL
  const char *base_model_hash;  // a3_base_model_hash_text, or NULL (not written)
} a3_model_ckpt;

// Writes a checkpoint atomically (serial: call on one rank).
a3_status a3_model_checkpoint_write(const char *path, a3_unet *m,
                                    const a3_model_ckpt *st) A3_WARN_UNUSED;

// model.init: loads parameters by name from an a3fta checkpoint's /params,
// a .safetensors file (such as `a3fta export` of a pretraining run: its EMA
// weights), or a diffusers model folder (config.json + safetensors; older
// attention names accepted). Parameters the strategy added (adapter, LoRA) may be
// absent and keep their initialisation; any other absent name or a shape
// mismatch is an error naming it; tensors the model lacks are logged.
a3_status a3_model_load_init(a3_unet *m, const char *path) A3_WARN_UNUSED;

// Resume state: /params into the model, moments and EMA (compact, as above;
// NULL to skip), the step. The checkpoint's stored config must equal `cfg`
// in every key that changes the numbers: A3_ERR_CONFIG naming the keys that
// differ otherwise. output.*, eval.*, sweep.*, parallel.*, model.init,
// train.log_every and train.checkpoint_every may differ (a resumed run may
// log more often or live in a copied folder).
a3_status a3_model_checkpoint_read_state(const char *path, a3_unet *m, const a3_config *cfg,
                                         float *adam_m, float *adam_v, float *ema,
                                         int64_t *step) A3_WARN_UNUSED;

// For sampling: the config stored in the checkpoint (*cfg owns its sweep
// lists: a3_config_free), the model built from it with /params loaded and,
// when use_ema and /ema exist, the EMA weights over the trained tensors.
// *used_ema says whether they were.
a3_status a3_model_checkpoint_load(const char *path, bool use_ema, a3_config *cfg, a3_unet **out,
                                   bool *used_ema) A3_WARN_UNUSED;

// a3fta info CHECKPOINT (serial): loads the file as sampling does, then
// prints its step, main config keys, hashes, the model's and the strategy's
// tensor counts, and per group (/params, /ema, /optimizer/m, /optimizer/v)
// tensors, values, the largest |value| and the NaN or infinite ones.
// A file that does not load is the loader's error.
a3_status a3_model_checkpoint_print(const char *path, FILE *f) A3_WARN_UNUSED;
// The config stored in the checkpoint, verbatim.
a3_status a3_model_checkpoint_print_config(const char *path, FILE *f) A3_WARN_UNUSED;

// ---------------------------------------------------------------- the trainer
typedef struct a3_trainer a3_trainer;

// Collective over comm: loads the data, builds the model (strategy modules
// included), initialises it (train.seed or model.init), marks the strategy's
// trainable set, plans memory for this rank's slice, sets up AdamW and EMA.
a3_status a3_trainer_create(const a3_config *cfg, MPI_Comm comm, a3_trainer **out) A3_WARN_UNUSED;
void a3_trainer_free(a3_trainer *t); // NULL is fine

// Continues from a checkpoint (collective; every rank reads it).
a3_status a3_trainer_resume(a3_trainer *t, const char *path) A3_WARN_UNUSED;

// One optimizer step (collective) whose loss is read later: on a GPU it
// only queues the step's work (no copy; no wait but for NCCL's watched
// gradient sum) and the loss stays in device memory. At most
// a3_trainer_pending_capacity steps may wait for a3_trainer_take_losses.
a3_status a3_trainer_advance(a3_trainer *t) A3_WARN_UNUSED;
int64_t a3_trainer_pending(const a3_trainer *t); // steps advanced, losses not yet taken
int64_t a3_trainer_pending_capacity(const a3_trainer *t);

// The pending steps' losses, first_step .. first_step + n - 1: loss[i] is
// the mean loss of step first_step + i's global batch (every rank gets it),
// lr[i] the learning rate its update used. Valid until the next advance.
typedef struct {
  int64_t first_step, n;
  const double *loss, *lr;
} a3_step_losses;
// Collective: one download of the device's losses (which waits for the
// queued work and reports its first error) and one all-reduce of n doubles.
a3_status a3_trainer_take_losses(a3_trainer *t, a3_step_losses *out) A3_WARN_UNUSED;

// The group's outcome (a3_agree; collective): a step, or a take_losses,
// may fail on one rank alone (its GPU). Call it with each advance's status,
// and each take_losses', right after the call, on every rank, before any
// other collective: a rank that failed stops the others there.
// A failed advance has already let the others' gradient sums of the step
// go (a3_grad_comm_fail).
a3_status a3_trainer_agree(a3_trainer *t, a3_status mine) A3_WARN_UNUSED;

// advance + take_losses (no steps may be pending): *loss is the mean loss of
// the global batch (every rank gets it), *lr the learning rate the update used.
a3_status a3_trainer_step(a3_trainer *t, double *loss, double *lr) A3_WARN_UNUSED;

// Writes a checkpoint of the current state (collective: rank 0 writes, all
// ranks return the worst status, a3_agree).
a3_status a3_trainer_save(a3_trainer *t, const char *path) A3_WARN_UNUSED;

// This rank's time inside a3_trainer_advance and a3_trainer_take_losses
// (MPI_Wtime), summed over the steps this trainer ran (not those before a
// resume): comm_s waits for the data-parallel sums to finish (the gradient
// sum the backward started, on a GPU with its copies through host memory,
// and the loss all-reduce); a rank that computes faster waits there for the
// slowest. compute_s is the rest: batch, forward, backward (starting the
// gradient buckets), clipping, AdamW, EMA, and on a GPU, whose steps only
// queue work, the waits for that work when the losses are taken. One rank:
// comm_s = 0. grad_bytes: the gradient the data-parallel sum reduces each
// step, 4 bytes per trainable parameter (also with one rank, where nothing
// is sent).
typedef struct {
  double compute_s, comm_s;
  int64_t steps;
  int64_t grad_bytes;
} a3_step_timing;

int64_t a3_trainer_steps_done(const a3_trainer *t);
a3_step_timing a3_trainer_timing(const a3_trainer *t);
a3_unet *a3_trainer_model(a3_trainer *t);
// The EMA (compact over the trainable tensors in table order), or NULL without train.ema.
const float *a3_trainer_ema(const a3_trainer *t);

// ---------------------------------------------------------------- held-out loss
// The held-out denoising loss (eval.heldout_every > 0): the first
// eval.heldout_images images (file order) of split "test" of data.path in
// data.classes, fitted like the training images (no flips), each at K =
// eval.heldout_timesteps fixed timesteps t_k = floor((2k + 1) T / (2K)).
// Held-out sample j = i K + k (image i, timestep k) gets the noise
// a3_diffusion_randn(A3_HELDOUT_SEED, A3_STREAM_HELDOUT_NOISE, 0, j, ...):
// the same for every run, whatever its train.seed, so runs compare on the
// same noise. The loss is the mean over the N K samples of each sample's
// mse(model(x_t, t), noise) (per-sample means in fp32 as the training loss,
// summed in double in sample order).
//
// It is computed with the weights that train, split across the ranks, and
// the per-sample losses are gathered (an exact sum of zeros and one value
// each), then summed in sample order on every rank:
// - CPU: a copy of the host model's current weights in an evaluation model
//   planned for E = min(A3_HELDOUT_CHUNK, N K) samples, whole chunks of
//   samples [c E, (c + 1) E) per rank (a3_shard_range over the chunks), the
//   last one padded with zeros. Every sample meets the same batch shape and
//   neighbours for any number of ranks (and any train.batch_size), so the
//   value is bitwise the same for them (oneDNN's kernels may round
//   differently with another thread count). The training model is not
//   touched at all.
// - GPU: the device model itself (a3_train_device_eval), this rank's slice
//   of the samples (a3_shard_range) in chunks of its planned batch: the same
//   value for any rank count up to fp32 rounding (another batch size may
//   take other cuBLAS kernels). Its activation buffers are rewritten by the
//   next step, which recomputes them.
// Either way parameters, gradients, optimizer state and the training RNG
// streams are not changed: training losses are bit-identical with or
// without it.
enum { A3_STREAM_HELDOUT_NOISE = 48, A3_HELDOUT_CHUNK = 16 };
#define A3_HELDOUT_SEED UINT64_C(0)

typedef struct {
  int64_t n_images, n_timesteps; // N, K
  int64_t per_sample;            // C * S * S
  float *x0;                     // (N, C, S, S) in [-1, 1]
  int32_t *t;                    // (K)
  a3_noise_schedule_table sched; // train.noise_schedule
  a3_unet *model;                // CPU: the evaluation copy (built at the first use)
} a3_heldout_set;

// Reads the held-out images on every rank of comm (collective).
a3_status a3_heldout_load(MPI_Comm comm, const a3_config *cfg, a3_heldout_set *out) A3_WARN_UNUSED;
void a3_heldout_free(a3_heldout_set *h); // safe on a zeroed struct

// The held-out loss of the trainer's current weights (collective over the
// trainer's comm, passed again as comm; every rank gets the same *loss).
a3_status a3_trainer_heldout_loss(a3_trainer *t, MPI_Comm comm, a3_heldout_set *h,
                                  double *loss) A3_WARN_UNUSED;

// ---------------------------------------------------------------- the whole run
typedef struct {
  bool resume;        // continue from output.dir/checkpoint.h5 when it exists
  int64_t stop_after; // > 0: stop once this many steps are done (simulates a kill:
                      // no final checkpoint); 0: run to train.steps
  // Called on every rank after each step (may be NULL).
  void (*on_step)(void *ctx, int64_t step, double loss, double lr);
  void *ctx;
} a3_train_options;

typedef struct {
  int64_t first_step; // steps already done when the loop began (0, or the resumed step)
  int64_t steps_done; // at the end
  double last_loss;
  double seconds;            // wall time of the loop
  a3_step_timing timing;     // this rank's step time (a3_trainer_timing) over the loop's steps
  double final_heldout_loss; // the last held-out loss in losses.csv (NaN: eval.heldout_every 0
                             // or none yet); every rank gets it
} a3_train_result;

// a3fta train: trainer + loop + log lines + losses.csv + checkpoints, in
// cfg->output.dir (created). Collective over comm. result may be NULL.
a3_status a3_train(const a3_config *cfg, MPI_Comm comm, const a3_train_options *opt,
                   a3_train_result *result) A3_WARN_UNUSED;

// A finished run's last step (a3fta train and sweep, after its samples and
// evaluation): with output.save_weights false, rank 0 removes
// output.dir/checkpoint.h5 (training still writes it, for resume), saying so.
// Collective over comm; an error if the file cannot be removed.
a3_status a3_run_drop_weights(MPI_Comm comm, const a3_config *cfg) A3_WARN_UNUSED;

// ---------------------------------------------------------------- the backend
// The backend parallel.backend picks for this rank of comm, for training and
// sampling alike: *be = NULL for the CPU (cpu, or auto without a usable GPU,
// which is logged, and the error cleared), else a CUDA backend (free it with
// a3_backend_cuda_destroy) on the GPU of the rank's node-local rank in the
// whole job (a3_node_place; not in comm, which may be a sweep group) modulo
// the visible devices, in train.precision; a warning when the node has more
// ranks than GPUs, or when auto leaves a visible GPU that refused for the
// CPU. A3_ERR_CUDA for cuda without a usable GPU, A3_ERR_UNIMPLEMENTED for
// cuda in a build without CUDA. `name` ("cpu", or the device, its PCI bus
// id, host and node-local rank) is for logs. Not collective after
// a3_world_init (a3_node_place's fallback splits comm otherwise).
a3_status a3_backend_pick(const a3_config *cfg, MPI_Comm comm, const a3_backend **be, char *name,
                          size_t cap) A3_WARN_UNUSED;

// ---------------------------------------------------------------- sampling
typedef struct {
  a3_sampler sampler;
  int64_t steps; // sampler steps (1..T)
  double eta;    // DDIM only
  uint64_t seed;
  int64_t first; // global index of the first sample (noise is addressed by it)
  int64_t count; // samples to draw
  int max_batch; // images per forward pass (the model is planned for it)
} a3_sample_options;

// Samples with the diffusion layer's noise convention: x_T and each step's
// noise addressed by the global sample index, so a shard across ranks gives
// the same images. out (count, C, S, S) uint8 = clamp(round((x + 1) * 127.5)),
// in host memory. Re-plans the model's memory for the batch.
// The model may live on any backend (a3_unet_backend): the working tensors
// are in its memory, the noise is drawn on the host (Philox) and uploaded,
// the forward and the sampler step (the backend's sampler_step op) run
// there, and each chunk's images come down once. On the CPU backend the
// images are bitwise those of a3_unet_forward + a3_sampler_step on host
// arrays; on a GPU they follow them up to the model's fp32 rounding
// (the step itself is bitwise the CPU's).
a3_status a3_sample_images(a3_unet *m, const a3_noise_schedule_table *sched,
                           const a3_sample_options *o, uint8_t *out) A3_WARN_UNUSED;

// Images per forward pass when none is asked for: the CPU backend's is
// small (its threads are busy with any batch), a GPU needs large batches.
enum { A3_SAMPLE_BATCH_CPU = 16, A3_SAMPLE_BATCH_GPU = 256 };

// The model that sampling runs on, where training would run (a3_backend_pick
// with the loaded checkpoint's config): the host model itself on the CPU,
// else a copy of its parameters on the picked GPU (a3_unet_build_on +
// a3_unet_copy_params). batch = max_batch, or when that is <= 0 the backend's
// default above. Rank 0 logs "<who>: sampling on <backend>, <batch> images
// per forward pass". Collective over comm: every rank returns the worst
// status (a3_agree), so a rank whose GPU failed stops all; on failure
// nothing is left open. Close with a3_sampling_model_close (also safe on a
// zeroed struct).
typedef struct {
  a3_unet *model;           // the host model or device_copy: sample with this
  a3_unet *device_copy;     // NULL on the CPU
  const a3_backend *device; // NULL on the CPU
  int batch;                // images per forward pass
  char name[400];           // "cpu", or the GPU, for logs
} a3_sampling_model;
a3_status a3_sampling_model_open(const a3_config *cfg, MPI_Comm comm, a3_unet *host, int max_batch,
                                 const char *who, a3_sampling_model *out) A3_WARN_UNUSED;
void a3_sampling_model_close(a3_sampling_model *sm);
// Images [0, n) split across the ranks of comm (o->first and o->count are
// set per rank): each rank draws its shard with a3_sample_images, and rank 0
// receives all of them in `all` (n, C, S, S), in sample order (`all` is used
// on rank 0 only). Collective; every rank returns the worst status, so no
// rank waits in the gather for one that failed.
a3_status a3_sample_gather(MPI_Comm comm, a3_unet *m, const a3_noise_schedule_table *sched,
                           const a3_sample_options *o, int64_t n, uint8_t *all) A3_WARN_UNUSED;

// a3fta sample: loads a checkpoint (EMA weights when use_ema and present),
// draws num images split across the ranks of comm (the same images for any
// rank count, see a3_sample_images) on the backend its parallel.backend picks
// (a3_sampling_model_open), gathers them on rank 0, which writes out_h5
// and/or out_png (NULL: not written). Collective.
typedef struct {
  int64_t num;
  a3_sampler sampler;
  int64_t steps; // 0: the checkpoint config's eval.sampler_steps
  double eta;    // DDIM
  uint64_t seed;
  bool use_ema;
  int max_batch;           // images per forward pass (0: the backend's default, 16 or 256)
  bool set_backend;        // sample on `backend` instead of the checkpoint config's
  a3_backend_kind backend; //   parallel.backend (a GPU-trained run sampled on a laptop)
  const char *out_h5;      // /samples (N, C, H, W) uint8
  const char *out_png;     // a grid
} a3_sample_request;
a3_status a3_sample_checkpoint(MPI_Comm comm, const char *checkpoint,
                               const a3_sample_request *req) A3_WARN_UNUSED;

// A finished run's samples (a3fta train and sweep): num images from
// output.dir/checkpoint.h5 with the eval sampler, train.seed, and the EMA
// weights when train.ema, into output.dir/samples.h5 and samples.png
// (A3_SAMPLES_H5, A3_SAMPLES_PNG). Collective.
#define A3_SAMPLES_H5 "samples.h5"
#define A3_SAMPLES_PNG "samples.png"
a3_status a3_sample_run(MPI_Comm comm, const a3_config *cfg, int64_t num) A3_WARN_UNUSED;

// /samples (N, C, H, W) uint8 with attributes layout and source (serial; atomic).
a3_status a3_write_samples_h5(const char *path, const uint8_t *images, int64_t n, int channels,
                              int height, int width, const char *source) A3_WARN_UNUSED;
// A PNG grid of n images (C = 1 grey or 3 RGB), ceil(sqrt(n)) columns, 2-pixel
// gaps (black), written atomically.
a3_status a3_write_png_grid(const char *path, const uint8_t *images, int64_t n, int channels,
                            int height, int width) A3_WARN_UNUSED;

#endif
