// The held-out denoising loss (a3fta/trainer.h, "held-out loss"): the test
// images of the training classes at fixed timesteps and fixed noise, through
// the model that trains, split across the ranks.
#include "a3fta/dataset.h"
#include "a3fta/trainer.h"
#include "io/image_fit.h"
#include "trainer_device.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char HELDOUT_SPLIT[] = "test";
enum { MAX_SAMPLES = 1 << 22 }; // images x timesteps (their losses are all-reduced at once)

void a3_heldout_free(a3_heldout_set *h) {
  if (!h) return;
  free(h->x0);
  free(h->t);
  a3_schedule_free(&h->sched);
  a3_unet_free(h->model);
  memset(h, 0, sizeof *h);
}

static a3_status check_split(a3_dataset *ds, const a3_config *cfg) {
  for (int i = 0; i < a3_dataset_num_splits(ds); i++)
    if (!strcmp(a3_dataset_split_name(ds, i), HELDOUT_SPLIT)) return A3_OK;
  return A3_FAIL(A3_ERR_CONFIG,
                 "eval.heldout_every = %lld needs the held-out images of split '%s' in "
                 "data.path %s, which has no such split (set eval.heldout_every: 0)",
                 (long long)cfg->eval.heldout_every, HELDOUT_SPLIT, cfg->data.path);
}

// The first eval.heldout_images test images of data.classes, in file order.
static a3_status select_heldout(a3_dataset *ds, const a3_config *cfg, int64_t **indices,
                                int64_t *count) {
  const a3_data_config *dc = &cfg->data;
  int classes[A3_CONFIG_MAX_CLASSES];
  for (int i = 0; i < dc->n_classes; i++) classes[i] = (int)dc->classes[i];
  const a3_subset_spec spec = {.split = HELDOUT_SPLIT,
                               .classes = dc->n_classes ? classes : NULL,
                               .n_classes = dc->n_classes};
  A3_TRY(a3_dataset_select(ds, &spec, indices, count));
  if (*count == 0)
    return A3_FAIL(A3_ERR_CONFIG,
                   "eval.heldout_every: split %s of %s has no images of data.classes",
                   HELDOUT_SPLIT, dc->path);
  if (*count > cfg->eval.heldout_images) *count = cfg->eval.heldout_images;
  if (*count * cfg->eval.heldout_timesteps > MAX_SAMPLES)
    return A3_FAIL(A3_ERR_CONFIG,
                   "eval.heldout_images x eval.heldout_timesteps = %lld x %lld held-out samples "
                   "are more than the %d allowed",
                   (long long)*count, (long long)cfg->eval.heldout_timesteps, MAX_SAMPLES);
  return A3_OK;
}

// uint8 (n, C, H, W) -> fitted to S x S like the training images -> [-1, 1].
static a3_status to_model_input(const uint8_t *raw, const a3_split_info *info, int S,
                                const char *path, a3_heldout_set *h) {
  const int C = info->channels, Hh = info->height, Ww = info->width;
  const a3_fit fit = (Hh == S && Ww == S)   ? A3_FIT_NONE
                     : (Hh <= S && Ww <= S) ? A3_FIT_PAD
                                            : A3_FIT_RESIZE;
  uint8_t *img = NULL;
  A3_TRY(a3_alloc((void **)&img, (size_t)h->per_sample, 1));
  a3_status s = A3_OK;
  for (int64_t i = 0; s == A3_OK && i < h->n_images; i++) {
    const a3_image in = {C, Hh, Ww, (uint8_t *)(uintptr_t)(raw + (size_t)i * C * Hh * Ww)};
    s = a3_image_fit(&in, S, S, fit, path, img);
    float *x = h->x0 + (size_t)i * h->per_sample;
    for (int64_t k = 0; s == A3_OK && k < h->per_sample; k++) x[k] = (float)img[k] / 127.5f - 1.0f;
  }
  free(img);
  return s;
}

static a3_status read_heldout(a3_dataset *ds, const a3_config *cfg, const int64_t *indices,
                              a3_heldout_set *h) {
  a3_split_info info;
  A3_TRY(a3_dataset_split_info(ds, HELDOUT_SPLIT, &info));
  if (info.channels != cfg->model.arch.in_channels)
    return A3_FAIL(A3_ERR_CONFIG,
                   "eval.heldout_every: split %s of %s has %d-channel images but "
                   "model.arch.in_channels is %lld",
                   HELDOUT_SPLIT, cfg->data.path, info.channels,
                   (long long)cfg->model.arch.in_channels);
  const int S = (int)cfg->model.arch.sample_size;
  h->per_sample = (int64_t)info.channels * S * S;
  uint8_t *raw = NULL;
  A3_TRY(
      a3_alloc((void **)&raw, (size_t)h->n_images * info.channels * info.height * info.width, 1));
  a3_status s = A3_ALLOC(h->x0, (size_t)(h->n_images * h->per_sample));
  // Collective: every rank reads all of them (a few dozen images).
  if (s == A3_OK) s = a3_dataset_read(ds, HELDOUT_SPLIT, indices, h->n_images, raw, NULL);
  if (s == A3_OK) s = to_model_input(raw, &info, S, cfg->data.path, h);
  free(raw);
  A3_TRY(s);
  return A3_OK;
}

static a3_status timesteps(const a3_config *cfg, a3_heldout_set *h) {
  const int64_t T = cfg->train.num_train_timesteps, K = cfg->eval.heldout_timesteps;
  h->n_timesteps = K;
  A3_TRY(A3_ALLOC(h->t, (size_t)K));
  for (int64_t k = 0; k < K; k++) h->t[k] = (int32_t)((2 * k + 1) * T / (2 * K));
  A3_TRY(a3_schedule_init(&h->sched, cfg->train.noise_schedule, T, A3_BETA_START, A3_BETA_END));
  return A3_OK;
}

a3_status a3_heldout_load(MPI_Comm comm, const a3_config *cfg, a3_heldout_set *out) {
  memset(out, 0, sizeof *out);
  a3_dataset *ds = NULL;
  A3_TRY(a3_dataset_open(comm, cfg->data.path, &ds));
  int64_t *indices = NULL;
  a3_status s = check_split(ds, cfg); // the same answer on every rank
  if (s == A3_OK) s = select_heldout(ds, cfg, &indices, &out->n_images);
  // As with the training subset, a local failure after the select still
  // takes part in the collective read.
  if (s == A3_OK) s = read_heldout(ds, cfg, indices, out);
  free(indices);
  a3_dataset_close(ds);
  if (s == A3_OK) s = timesteps(cfg, out);
  if (s != A3_OK) {
    a3_heldout_free(out);
    A3_TRY(s);
  }
  return A3_OK;
}

// ---------------------------------------------------------------- the loss

typedef struct {
  int64_t cap;              // samples per forward
  float *x_t, *noise, *out; // (cap, per)
  float *tf;                // (cap)
  int32_t *t;               // (cap)
  float *x0;                // (cap, per)
} chunk_buffers;

static void free_buffers(chunk_buffers *b) {
  free(b->x_t);
  free(b->noise);
  free(b->out);
  free(b->tf);
  free(b->t);
  free(b->x0);
}

static a3_status alloc_buffers(chunk_buffers *b, int64_t cap, int64_t per) {
  b->cap = cap;
  const size_t n = (size_t)(cap * per);
  A3_TRY(A3_ALLOC(b->x_t, n));
  A3_TRY(A3_ALLOC(b->noise, n));
  A3_TRY(A3_ALLOC(b->out, n));
  A3_TRY(A3_ALLOC(b->x0, n));
  A3_TRY(A3_ALLOC(b->tf, (size_t)cap));
  A3_TRY(A3_ALLOC(b->t, (size_t)cap));
  return A3_OK;
}

// x_t, noise, timesteps of held-out samples [j0, j0 + count).
static a3_status prepare_chunk(const a3_heldout_set *h, int64_t j0, int64_t count,
                               chunk_buffers *b) {
  const int64_t per = h->per_sample, K = h->n_timesteps;
  for (int64_t i = 0; i < count; i++) {
    const int64_t j = j0 + i;
    memcpy(b->x0 + i * per, h->x0 + (j / K) * per, sizeof(float) * (size_t)per);
    b->t[i] = h->t[j % K];
    b->tf[i] = (float)b->t[i];
  }
  a3_diffusion_randn(A3_HELDOUT_SEED, A3_STREAM_HELDOUT_NOISE, 0, (uint64_t)j0, count, per,
                     b->noise);
  A3_TRY(a3_diffusion_add_noise(&h->sched, b->t, count, per, b->x0, b->noise, b->x_t));
  return A3_OK;
}

// Losses of samples [j0, j0 + count) through the CPU evaluation model
// (planned for cap samples: the rest of the batch is zeros, its outputs ignored).
static a3_status host_chunk(a3_unet *m, const a3_heldout_set *h, int64_t count, chunk_buffers *b,
                            float *losses) {
  const size_t per = (size_t)h->per_sample;
  memset(b->x_t + (size_t)count * per, 0, sizeof(float) * (size_t)(b->cap - count) * per);
  memset(b->tf + count, 0, sizeof(float) * (size_t)(b->cap - count));
  A3_TRY(a3_unet_forward(m, b->x_t, b->tf, b->out));
  const a3_backend *be = a3_backend_cpu();
  for (int64_t i = 0; i < count; i++)
    be->ops->mse_forward(be, &losses[i], b->out + (size_t)i * per, b->noise + (size_t)i * per, per);
  return A3_OK;
}

// The CPU evaluation model: the host model's architecture, planned for
// A3_HELDOUT_CHUNK samples (fewer when there are fewer), with its current weights.
static a3_status eval_model(a3_heldout_set *h, const a3_unet *host) {
  if (!h->model) {
    const int64_t n = h->n_images * h->n_timesteps;
    A3_TRY(a3_unet_build_on(a3_unet_arch(host), a3_unet_get_extras(host), a3_backend_cpu(),
                            &h->model));
    A3_TRY(a3_unet_plan(h->model, (int)(n < A3_HELDOUT_CHUNK ? n : A3_HELDOUT_CHUNK)));
  }
  A3_TRY(a3_unet_copy_params(h->model, host));
  return A3_OK;
}

// Losses of samples [begin, end) in chunks of cap (indexed by sample into all).
static a3_status chunk_losses(a3_train_device *dev, a3_unet *m, const a3_heldout_set *h,
                              int64_t begin, int64_t end, int64_t cap, double *all) {
  chunk_buffers b = {0};
  float *losses = NULL;
  a3_status s = alloc_buffers(&b, cap, h->per_sample);
  if (s == A3_OK) s = A3_ALLOC(losses, (size_t)cap);
  for (int64_t j0 = begin; s == A3_OK && j0 < end; j0 += cap) {
    const int64_t count = end - j0 < cap ? end - j0 : cap;
    s = prepare_chunk(h, j0, count, &b);
    if (s == A3_OK)
      s = dev ? a3_train_device_eval(dev, b.x_t, b.tf, b.noise, count, h->per_sample, losses)
              : host_chunk(m, h, count, &b, losses);
    for (int64_t i = 0; s == A3_OK && i < count; i++) all[j0 + i] = (double)losses[i];
  }
  free(losses);
  free_buffers(&b);
  return s;
}

// This rank's share: on the CPU whole chunks of the evaluation model's batch
// (chunk c = samples [c E, (c + 1) E), the same chunks for any rank count);
// on a GPU its slice of the samples in chunks of the device model's batch.
static a3_status my_losses(a3_trainer *t, a3_heldout_set *h, int rank, int size, double *all) {
  const int64_t n = h->n_images * h->n_timesteps;
  a3_train_device *dev = a3_trainer_device(t);
  int64_t begin = 0, end = 0;
  if (dev) {
    a3_shard_range(n, rank, size, &begin, &end);
    if (begin == end) return A3_OK;
    return chunk_losses(dev, NULL, h, begin, end, a3_train_device_batch(dev), all);
  }
  const int64_t E = n < A3_HELDOUT_CHUNK ? n : A3_HELDOUT_CHUNK, chunks = (n + E - 1) / E;
  a3_shard_range(chunks, rank, size, &begin, &end);
  if (begin == end) return A3_OK;
  A3_TRY(eval_model(h, a3_trainer_model(t)));
  return chunk_losses(NULL, h->model, h, begin * E, end * E < n ? end * E : n, E, all);
}

a3_status a3_trainer_heldout_loss(a3_trainer *t, MPI_Comm comm, a3_heldout_set *h, double *loss) {
  *loss = NAN;
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  const int64_t n = h->n_images * h->n_timesteps;
  double *all = NULL; // zero except this rank's samples: the sum over ranks is exact
  A3_TRY(A3_ALLOC(all, (size_t)n));
  a3_status s = my_losses(t, h, rank, size, all);
  int ok = s == A3_OK, all_ok = 0;
  MPI_Allreduce(&ok, &all_ok, 1, MPI_INT, MPI_LAND, comm);
  if (s == A3_OK && !all_ok)
    s = A3_FAIL(A3_ERR_MPI, "held-out loss: another rank failed to compute its share");
  if (s == A3_OK && size > 1 &&
      MPI_Allreduce(MPI_IN_PLACE, all, (int)n, MPI_DOUBLE, MPI_SUM, comm) != MPI_SUCCESS)
    s = A3_FAIL(A3_ERR_MPI, "held-out loss: the all-reduce over %d ranks failed", size);
  if (s == A3_OK) {
    double sum = 0.0;
    for (int64_t j = 0; j < n; j++) sum += all[j];
    *loss = sum / (double)n;
  }
  free(all);
  A3_TRY(s);
  return A3_OK;
}
