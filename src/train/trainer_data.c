// The training subset in memory, and the images of each step's batch as a
// pure function of (seed, global sample index): see a3fta/trainer.h.
#include "a3fta/dataset.h"
#include "a3fta/trainer.h"
#include "io/image_fit.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char *split_name(a3_split split) { return split == A3_SPLIT_TEST ? "test" : "train"; }

void a3_train_data_free(a3_train_data *d) {
  if (!d) return;
  free(d->images);
  free(d->indices);
  memset(d, 0, sizeof *d);
}

static a3_status select_subset(a3_dataset *ds, const a3_data_config *dc, int64_t **indices,
                               int64_t *count) {
  int classes[A3_CONFIG_MAX_CLASSES];
  for (int i = 0; i < dc->n_classes; i++) classes[i] = (int)dc->classes[i];
  const a3_subset_spec spec = {
      .split = split_name(dc->split),
      .classes = dc->n_classes ? classes : NULL,
      .n_classes = dc->n_classes,
      .shots_per_class = dc->shots,
      .random = dc->shots > 0, // few-shot subsets are drawn with data.subset_seed
      .seed = (uint64_t)dc->subset_seed,
  };
  A3_TRY(a3_dataset_select(ds, &spec, indices, count));
  if (*count == 0)
    return A3_FAIL(A3_ERR_CONFIG, "data: the subset of %s (split %s) is empty", dc->path,
                   spec.split);
  if (*count > INT32_MAX) // a batch item holds an image index in 31 bits
    return A3_FAIL(A3_ERR_CONFIG,
                   "data: the subset of %s (split %s) has %lld images, more than 2^31 - 1; "
                   "select fewer with data.classes or data.shots",
                   dc->path, spec.split, (long long)*count);
  return A3_OK;
}

// Pads (smaller images) or resamples (larger ones) every image to S x S.
static a3_status fit_images(const uint8_t *raw, int64_t n, int C, int H, int W, int S,
                            const char *path, uint8_t *out) {
  const a3_fit fit = (H == S && W == S)   ? A3_FIT_NONE
                     : (H <= S && W <= S) ? A3_FIT_PAD
                                          : A3_FIT_RESIZE;
  const size_t in_bytes = (size_t)C * H * W, out_bytes = (size_t)C * S * S;
  for (int64_t i = 0; i < n; i++) {
    const a3_image img = {C, H, W, (uint8_t *)(uintptr_t)(raw + (size_t)i * in_bytes)};
    A3_TRY(a3_image_fit(&img, S, S, fit, path, out + (size_t)i * out_bytes));
  }
  return A3_OK;
}

static a3_status read_subset(a3_dataset *ds, const a3_config *cfg, int rank, a3_train_data *d) {
  a3_split_info info;
  A3_TRY(a3_dataset_split_info(ds, split_name(cfg->data.split), &info));
  if (info.channels != cfg->model.arch.in_channels)
    return A3_FAIL(A3_ERR_CONFIG,
                   "data.path: %s has %d-channel images but model.arch.in_channels is %lld",
                   cfg->data.path, info.channels, (long long)cfg->model.arch.in_channels);
  const int C = info.channels, S = (int)cfg->model.arch.sample_size;
  d->channels = C;
  d->size = S;
  uint8_t *raw = NULL;
  A3_TRY(a3_alloc((void **)&raw, (size_t)d->n * C * info.height * info.width + 1, 1));
  a3_status s = a3_alloc((void **)&d->images, (size_t)d->n * C * S * S + 1, 1);
  // Collective: every rank reads the whole subset.
  if (s == A3_OK) s = a3_dataset_read(ds, info.name, d->indices, d->n, raw, NULL);
  if (s == A3_OK)
    s = fit_images(raw, d->n, C, info.height, info.width, S, cfg->data.path, d->images);
  free(raw);
  A3_TRY(s);
  if (rank == 0 && (info.height != S || info.width != S))
    a3_info("data: %dx%d images %s to %dx%d (model.arch.sample_size)", info.height, info.width,
            info.height <= S && info.width <= S ? "padded with black" : "resampled", S, S);
  return A3_OK;
}

a3_status a3_train_data_load(MPI_Comm comm, const a3_config *cfg, a3_train_data *out) {
  memset(out, 0, sizeof *out);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  a3_dataset *ds = NULL;
  A3_TRY(a3_dataset_open(comm, cfg->data.path, &ds));
  a3_status s = select_subset(ds, &cfg->data, &out->indices, &out->n);
  // A failure after select is local (allocation, image fit): the read is
  // collective, so every rank still takes part in it before checking.
  if (s == A3_OK) s = read_subset(ds, cfg, rank, out);
  a3_dataset_close(ds);
  if (s != A3_OK) {
    a3_train_data_free(out);
    A3_TRY(s);
  }
  return A3_OK;
}

// ---------------------------------------------------------------- batches

// perm (n) = Fisher-Yates shuffle of 0..n-1 keyed by (seed, epoch).
static void epoch_permutation(uint64_t seed, int64_t n, int64_t epoch, int64_t *perm) {
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  for (int64_t j = 0; j + 1 < n; j++) {
    const uint64_t index = ((uint64_t)epoch << 32) | (uint64_t)j;
    const int64_t r = j + (int64_t)a3_rng_below(seed, A3_STREAM_SHUFFLE, index, (uint64_t)(n - j));
    const int64_t tmp = perm[j];
    perm[j] = perm[r];
    perm[r] = tmp;
  }
}

int64_t a3_train_sample_image(uint64_t seed, int64_t n, int64_t g, int64_t *perm, int64_t *epoch) {
  const int64_t e = g / n;
  if (e != *epoch) {
    epoch_permutation(seed, n, e, perm);
    *epoch = e;
  }
  return perm[g % n];
}

void a3_train_batch_items(const a3_train_data *d, uint64_t seed, bool hflip, int64_t g0,
                          int64_t count, int64_t *perm, int64_t *epoch, uint32_t *items) {
  for (int64_t i = 0; i < count; i++) {
    const int64_t g = g0 + i;
    const int64_t k = a3_train_sample_image(seed, d->n, g, perm, epoch);
    const bool flip = hflip && (a3_rng_u64(seed, A3_STREAM_HFLIP, (uint64_t)g) & 1u);
    items[i] = (uint32_t)k << 1 | (uint32_t)flip; // k < 2^31 (a3_train_data_load)
  }
}
