// Evaluation of a checkpoint (a3fta/eval.h): sampling split over the ranks,
// then the reference and training images, features and metrics on rank 0.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/eval.h"

#include "a3fta/backend.h"
#include "a3fta/dataset.h"
#include "a3fta/diffusion.h"
#include "a3fta/features.h"
#include "a3fta/metrics.h"
#include "a3fta/model.h"
#include "a3fta/trainer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { PIX = A3_EVAL_SIZE * A3_EVAL_SIZE, PAIR_GAP = 2 };

// ---------------------------------------------------------------- configuration
unsigned a3_eval_metric_set(const a3_config *cfg) {
  unsigned set = 0;
  for (int i = 0; i < cfg->eval.n_metrics; i++)
    if (cfg->eval.metrics[i] != A3_METRIC_HELDOUT_LOSS)
      set |= A3_EVAL_METRIC_BIT(cfg->eval.metrics[i]);
  return set;
}

bool a3_eval_supported(const a3_config *cfg, char *why, size_t cap) {
  const a3_arch_config *a = &cfg->model.arch;
  if (a->in_channels == 1 && (a->sample_size == 28 || a->sample_size == 32)) return true;
  snprintf(why, cap,
           "the feature network %s evaluates 1-channel 28x28 images (models of sample_size 28 or "
           "32); this model draws %lld-channel %lldx%lld images",
           A3_FEATNET_NAME, (long long)a->in_channels, (long long)a->sample_size,
           (long long)a->sample_size);
  return false;
}

const char *a3_eval_features_path(const char *explicit_path) {
  if (explicit_path && explicit_path[0]) return explicit_path;
  const char *env = getenv("A3FTA_FEATURES");
  if (env && env[0]) return env;
  // The build compiles this file by its absolute path (CMake does), so
  // __FILE__ is <source dir>/src/eval/eval_run.c.
  static char path[4096];
  const char *self = __FILE__, *tail = strstr(self, "/src/eval/eval_run.c");
  if (self[0] == '/' && tail && (size_t)(tail - self) + 64 < sizeof path)
    snprintf(path, sizeof path, "%.*s/tests/eval/fmnist_cnn_v1.h5", (int)(tail - self), self);
  else
    snprintf(path, sizeof path, "tests/eval/fmnist_cnn_v1.h5");
  return path;
}

void a3_eval_report_free(a3_eval_report *r) {
  if (!r) return;
  a3_config_free(&r->cfg);
  free(r->images);
  r->images = NULL;
  r->n_images = 0;
}

// ---------------------------------------------------------------- sampling
// Every rank returns the worst status of all (so no rank enters a collective
// that another has abandoned).
static a3_status agree(MPI_Comm comm, a3_status s, const char *what) {
  int code = (int)s, worst = 0;
  if (MPI_Allreduce(&code, &worst, 1, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS)
    return A3_FAIL(A3_ERR_MPI, "eval: %s: MPI_Allreduce failed", what);
  if (s != A3_OK) return s;
  if (worst != A3_OK) return A3_FAIL((a3_status)worst, "eval: %s failed on another rank", what);
  return A3_OK;
}

// The images of a3fta sample (the same noise; batches of the same size when
// both pick the same backend), gathered on rank 0, sampled where training
// runs (a3_sampling_model_open: a GPU copy of the model when
// parallel.backend picks one).
static a3_status sample_shard(MPI_Comm comm, a3_unet *m, const a3_config *cfg, a3_sample_options o,
                              int64_t n, uint8_t *all) {
  a3_noise_schedule_table sched = {0};
  a3_sampling_model sm = {0};
  a3_status s = a3_schedule_init(&sched, cfg->train.noise_schedule, cfg->train.num_train_timesteps,
                                 A3_BETA_START, A3_BETA_END);
  s = agree(comm, s, "the noise schedule");
  if (s == A3_OK) s = a3_sampling_model_open(cfg, comm, m, o.max_batch, "eval", &sm);
  s = agree(comm, s, "choosing the sampling backend");
  o.max_batch = sm.batch;
  if (s == A3_OK) s = a3_sample_gather(comm, sm.model, &sched, &o, n, all);
  a3_sampling_model_close(&sm);
  a3_schedule_free(&sched);
  return s;
}

// ---------------------------------------------------------------- rank 0: images
typedef struct {
  uint8_t *ref;   // (R, 1, 28, 28) test images of data.classes
  int64_t n_ref;  //
  uint8_t *train; // (T, 1, 28, 28) the fine-tuning subset
  int64_t *train_index;
  int64_t n_train;
} real_sets;

static void free_sets(real_sets *r) {
  free(r->ref);
  free(r->train);
  free(r->train_index);
  memset(r, 0, sizeof *r);
}

static a3_status check_split(a3_dataset *ds, const char *split, const char *path) {
  a3_split_info info;
  A3_TRY(a3_dataset_split_info(ds, split, &info));
  if (info.channels != 1 || info.height != A3_EVAL_SIZE || info.width != A3_EVAL_SIZE)
    return A3_FAIL(A3_ERR_CONFIG,
                   "eval: %s split '%s' has %dx%dx%d images; the feature network %s evaluates "
                   "1x28x28 (Fashion-MNIST-like) images",
                   path, split, info.channels, info.height, info.width, A3_FEATNET_NAME);
  return A3_OK;
}

// The test images of data.classes, read as stored (1 x 28 x 28).
static a3_status read_reference(const a3_config *cfg, real_sets *out) {
  a3_dataset *ds = NULL;
  A3_TRY(a3_dataset_open(MPI_COMM_SELF, cfg->data.path, &ds));
  int classes[A3_CONFIG_MAX_CLASSES];
  for (int i = 0; i < cfg->data.n_classes; i++) classes[i] = (int)cfg->data.classes[i];
  const a3_subset_spec spec = {.split = "test",
                               .classes = cfg->data.n_classes ? classes : NULL,
                               .n_classes = cfg->data.n_classes};
  int64_t *idx = NULL;
  a3_status s = check_split(ds, "test", cfg->data.path);
  if (s == A3_OK)
    s = check_split(ds, cfg->data.split == A3_SPLIT_TEST ? "test" : "train", cfg->data.path);
  if (s == A3_OK) s = a3_dataset_select(ds, &spec, &idx, &out->n_ref);
  if (s == A3_OK) s = a3_alloc((void **)&out->ref, (size_t)out->n_ref * PIX + 1, 1);
  if (s == A3_OK) s = a3_dataset_read(ds, "test", idx, out->n_ref, out->ref, NULL);
  free(idx);
  a3_dataset_close(ds);
  A3_TRY(s);
  return A3_OK;
}

// (n, 1, S, S) -> (n, 1, 28, 28): the centre, which undoes the trainer's padding.
static void crop_centre(const uint8_t *in, int64_t n, int S, uint8_t *out) {
  const int off = (S - A3_EVAL_SIZE) / 2;
  for (int64_t i = 0; i < n; i++)
    for (int y = 0; y < A3_EVAL_SIZE; y++)
      memcpy(out + (size_t)i * PIX + (size_t)y * A3_EVAL_SIZE,
             in + (size_t)i * S * S + (size_t)(y + off) * S + off, A3_EVAL_SIZE);
}

// The training subset exactly as the trainer selects it, back at 28x28.
static a3_status read_train(const a3_config *cfg, real_sets *out) {
  a3_train_data td;
  A3_TRY(a3_train_data_load(MPI_COMM_SELF, cfg, &td));
  a3_status s = A3_OK;
  if (td.channels != 1 || td.size != (int)cfg->model.arch.sample_size)
    s = A3_FAIL(A3_ERR_INTERNAL, "eval: training images of %dx%d, expected 1x%lld", td.channels,
                td.size, (long long)cfg->model.arch.sample_size);
  if (s == A3_OK) s = a3_alloc((void **)&out->train, (size_t)td.n * PIX + 1, 1);
  if (s == A3_OK) {
    crop_centre(td.images, td.n, td.size, out->train);
    out->n_train = td.n;
    out->train_index = td.indices;
    td.indices = NULL;
  }
  a3_train_data_free(&td);
  A3_TRY(s);
  return A3_OK;
}

// ---------------------------------------------------------------- rank 0: metrics
typedef struct {
  float *fs, *fr, *ft; // features of samples, reference, training images
  float *ps, *pt;      // pixels (0..255) of the samples' and training images' centres
  int64_t *idx;        // (N) nearest training image
  double *d1, *d2;     // (N)
  int64_t *order;      // (N)
} scratch;

static void free_scratch(scratch *w) {
  free(w->fs);
  free(w->fr);
  free(w->ft);
  free(w->ps);
  free(w->pt);
  free(w->idx);
  free(w->d1);
  free(w->d2);
  free(w->order);
}

static bool want(unsigned set, a3_metric m) { return (set & A3_EVAL_METRIC_BIT(m)) != 0; }

static a3_status feature_metrics(scratch *w, int64_t n, const real_sets *rs, uint64_t seed,
                                 unsigned set, a3_eval_report *out) {
  const int64_t D = A3_FEATNET_DIM;
  double *m = out->metrics;
  if (want(set, A3_METRIC_FID)) {
    a3_fid_result fid;
    A3_TRY(a3_fid(w->fs, n, w->fr, rs->n_ref, D, &fid));
    m[A3_RESULT_FID] = fid.fid;
    out->fid_mean_dist2 = fid.mean_dist2;
    out->fid_trace_sqrt = fid.trace_sqrt;
    out->fid_clamped_rel = fid.clamped_rel;
  }
  if (want(set, A3_METRIC_KID)) {
    a3_kid_result kid;
    A3_TRY(a3_kid(w->fs, n, w->fr, rs->n_ref, D, A3_EVAL_KID_SUBSETS, A3_EVAL_KID_SUBSET_SIZE, seed,
                  &kid));
    m[A3_RESULT_KID_MEAN] = kid.mean;
    m[A3_RESULT_KID_STD] = kid.std;
    out->kid_subsets = kid.n_subsets;
    out->kid_subset_size = kid.subset_size;
  }
  if (want(set, A3_METRIC_PRECISION_RECALL)) {
    a3_prdc_result p;
    A3_TRY(a3_prdc(w->fr, rs->n_ref, w->fs, n, D, A3_EVAL_PRDC_K, &p));
    m[A3_RESULT_PRECISION] = p.precision;
    m[A3_RESULT_RECALL] = p.recall;
    m[A3_RESULT_DENSITY] = p.density;
    m[A3_RESULT_COVERAGE] = p.coverage;
    out->prdc_k = p.k;
  }
  if (want(set, A3_METRIC_DIVERSITY)) {
    A3_TRY(a3_mean_pairwise_distance(w->fs, n, D, &m[A3_RESULT_DIVERSITY]));
    A3_TRY(a3_nearest2(w->fs, n, w->ft, rs->n_train, D, w->idx, w->d1, NULL, NULL));
    a3_cluster_diversity cd;
    A3_TRY(a3_intra_cluster_diversity(w->fs, n, D, w->idx, rs->n_train, NULL, &cd));
    m[A3_RESULT_INTRA_CLUSTER_DIVERSITY] = cd.mean;
    out->n_clusters = cd.n_clusters;
  }
  return A3_OK;
}

// Each pair (sample | nearest training image) as one 28 x 58 image, a grey
// bar between them; a grid of the pairs, most memorized first.
static a3_status write_pairs_png(const char *path, const uint8_t *samples28, const real_sets *rs,
                                 const a3_eval_report *r) {
  const int W = 2 * A3_EVAL_SIZE + PAIR_GAP;
  uint8_t *px = NULL;
  A3_TRY(a3_alloc((void **)&px, (size_t)(r->n_top > 0 ? r->n_top : 1) * A3_EVAL_SIZE * W, 1));
  for (int k = 0; k < r->n_top; k++) {
    const uint8_t *a = samples28 + (size_t)r->top[k].sample * PIX;
    const uint8_t *b = NULL;
    for (int64_t j = 0; j < rs->n_train && !b; j++)
      if (rs->train_index[j] == r->top[k].train_index) b = rs->train + (size_t)j * PIX;
    uint8_t *dst = px + (size_t)k * A3_EVAL_SIZE * W;
    for (int y = 0; y < A3_EVAL_SIZE; y++) {
      uint8_t *row = dst + (size_t)y * W;
      memcpy(row, a + (size_t)y * A3_EVAL_SIZE, A3_EVAL_SIZE);
      memset(row + A3_EVAL_SIZE, 128, PAIR_GAP);
      if (b) memcpy(row + A3_EVAL_SIZE + PAIR_GAP, b + (size_t)y * A3_EVAL_SIZE, A3_EVAL_SIZE);
    }
  }
  a3_status s = a3_write_png_grid(path, px, r->n_top, 1, A3_EVAL_SIZE, W);
  free(px);
  A3_TRY(s);
  return A3_OK;
}

static a3_status memorization(scratch *w, const uint8_t *samples28, int64_t n, const real_sets *rs,
                              const char *png, a3_eval_report *out) {
  a3_memorization_result mr;
  A3_TRY(a3_memorization(w->ps, n, w->pt, rs->n_train, PIX, A3_EVAL_MEMO_RATIO, w->idx, w->d1,
                         w->d2, &mr));
  out->metrics[A3_RESULT_MEMORIZATION] = mr.fraction;
  out->n_memorized = mr.n_memorized;
  A3_TRY(a3_memorization_order(w->d1, w->d2, n, w->order));
  out->n_top = (int)(n < A3_EVAL_TOP_MEMORIZED ? n : A3_EVAL_TOP_MEMORIZED);
  for (int k = 0; k < out->n_top; k++) {
    const int64_t i = w->order[k];
    out->top[k] = (a3_eval_memorized){i, rs->train_index[w->idx[i]], w->d1[i], w->d2[i]};
    memcpy(out->top_pixels[k][0], samples28 + (size_t)i * PIX, PIX);
    memcpy(out->top_pixels[k][1], rs->train + (size_t)w->idx[i] * PIX, PIX);
  }
  if (png) A3_TRY(write_pairs_png(png, samples28, rs, out));
  return A3_OK;
}

static a3_status measure(const a3_config *cfg, const a3_eval_options *o, const uint8_t *samples,
                         int64_t n, int S, a3_eval_report *out) {
  const unsigned set = out->computed;
  const bool features = (set & ~A3_EVAL_METRIC_BIT(A3_METRIC_MEMORIZATION)) != 0;
  if (o->memorized_png && !want(set, A3_METRIC_MEMORIZATION))
    return A3_FAIL(A3_ERR_USAGE, "eval: the memorized-pairs PNG needs the memorization metric");
  real_sets rs = {0};
  scratch w = {0};
  a3_feature_net *net = NULL;
  uint8_t *s28 = NULL;
  const int64_t D = A3_FEATNET_DIM;
  a3_status s = read_reference(cfg, &rs);
  if (s == A3_OK) s = read_train(cfg, &rs);
  if (s == A3_OK && features) s = a3_feature_net_load(a3_backend_cpu(), out->features, &net);
  const int64_t T = rs.n_train;
  if (s == A3_OK) s = a3_alloc((void **)&s28, (size_t)n * PIX + 1, 1);
  if (s == A3_OK) s = A3_ALLOC(w.idx, (size_t)n + 1);
  if (s == A3_OK) s = A3_ALLOC(w.d1, (size_t)n + 1);
  if (s == A3_OK) s = A3_ALLOC(w.d2, (size_t)n + 1);
  if (s == A3_OK) s = A3_ALLOC(w.order, (size_t)n + 1);
  if (s == A3_OK && features) s = A3_ALLOC(w.fs, (size_t)(n * D) + 1);
  if (s == A3_OK && features) s = A3_ALLOC(w.fr, (size_t)(rs.n_ref * D) + 1);
  if (s == A3_OK && features) s = A3_ALLOC(w.ft, (size_t)(T * D) + 1);
  if (s == A3_OK) s = A3_ALLOC(w.ps, (size_t)(n * PIX) + 1);
  if (s == A3_OK) s = A3_ALLOC(w.pt, (size_t)(T * PIX) + 1);
  if (s == A3_OK) {
    crop_centre(samples, n, S, s28);
    for (int64_t k = 0; k < n * PIX; k++) w.ps[k] = (float)s28[k];
    for (int64_t k = 0; k < T * PIX; k++) w.pt[k] = (float)rs.train[k];
    out->n_reference = rs.n_ref;
    out->n_train = T;
  }
  if (s == A3_OK && features)
    s = a3_features_extract(net, s28, n, A3_EVAL_SIZE, A3_EVAL_SIZE, w.fs);
  if (s == A3_OK && features)
    s = a3_features_extract(net, rs.ref, rs.n_ref, A3_EVAL_SIZE, A3_EVAL_SIZE, w.fr);
  if (s == A3_OK && features)
    s = a3_features_extract(net, rs.train, T, A3_EVAL_SIZE, A3_EVAL_SIZE, w.ft);
  if (s == A3_OK && features) s = feature_metrics(&w, n, &rs, out->seed, set, out);
  if (s == A3_OK && want(set, A3_METRIC_MEMORIZATION))
    s = memorization(&w, s28, n, &rs, o->memorized_png, out);
  a3_feature_net_free(net);
  free_scratch(&w);
  free(s28);
  free_sets(&rs);
  A3_TRY(s);
  return A3_OK;
}

// ---------------------------------------------------------------- the whole evaluation
static a3_status evaluate(MPI_Comm comm, const char *checkpoint, const a3_eval_options *o,
                          a3_eval_report *out) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  a3_unet *m = NULL;
  a3_status s = a3_model_checkpoint_load(checkpoint, true, &out->cfg, &m, &out->used_ema);
  A3_TRY(agree(comm, s, "loading the checkpoint"));
  if (o->set_backend) out->cfg.parallel.backend = o->backend;
  const a3_config *cfg = &out->cfg;
  const int S = (int)cfg->model.arch.sample_size;
  const int64_t n = o->num_samples > 0 ? o->num_samples : cfg->eval.samples;
  if (o->seed == A3_EVAL_SEED_TRAIN) out->seed = (uint64_t)cfg->train.seed;
  out->n_samples = n;
  out->sampler = cfg->eval.sampler;
  out->sampler_steps = cfg->eval.sampler_steps;
  out->eta = cfg->eval.eta;
  out->computed = o->metrics ? o->metrics : A3_EVAL_ALL_METRICS;
  const char *features = a3_eval_features_path(o->features);
  const size_t features_len = strlen(features);
  if (features_len < sizeof out->features) memcpy(out->features, features, features_len + 1);
  char why[256];
  if (features_len >= sizeof out->features)
    s = A3_FAIL(A3_ERR_USAGE, "eval: the feature network's path is longer than %zu bytes: %s",
                sizeof out->features - 1, features);
  else if (!a3_eval_supported(cfg, why, sizeof why))
    s = A3_FAIL(A3_ERR_CONFIG, "eval: %s: %s", checkpoint, why);
  else if (n < A3_EVAL_PRDC_K + 1)
    s = A3_FAIL(A3_ERR_USAGE, "eval: %lld samples are too few; at least %d are needed",
                (long long)n, A3_EVAL_PRDC_K + 1);
  uint8_t *all = NULL;
  if (s == A3_OK && rank == 0) s = a3_alloc((void **)&all, (size_t)n * S * S + 1, 1);
  s = agree(comm, s, "preparing");
  const double t0 = MPI_Wtime();
  if (s == A3_OK) {
    const a3_sample_options so = {.sampler = cfg->eval.sampler,
                                  .steps = cfg->eval.sampler_steps,
                                  .eta = cfg->eval.eta,
                                  .seed = out->seed,
                                  .max_batch = o->max_batch}; // <= 0: the backend's default
    s = sample_shard(comm, m, cfg, so, n, all);
  }
  a3_unet_free(m);
  double dt = MPI_Wtime() - t0;
  MPI_Allreduce(MPI_IN_PLACE, &dt, 1, MPI_DOUBLE, MPI_MAX, comm);
  out->sampling_s = dt;
  if (s == A3_OK && rank == 0) {
    const double t1 = MPI_Wtime();
    s = measure(cfg, o, all, n, S, out);
    out->metrics_s = MPI_Wtime() - t1;
    if (s == A3_OK && o->keep_images > 0) {
      out->n_images = o->keep_images < n ? o->keep_images : n;
      out->image_size = S;
      out->images = all;
      all = NULL;
    }
  }
  free(all);
  A3_TRY(s);
  return A3_OK;
}

a3_status a3_eval_checkpoint(MPI_Comm comm, const char *checkpoint, const a3_eval_options *opt,
                             a3_eval_report *out) {
  memset(out, 0, sizeof *out);
  for (int i = 0; i < A3_RESULT_N_METRICS; i++) out->metrics[i] = NAN;
  out->seed = opt->seed;
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  a3_status s = evaluate(comm, checkpoint, opt, out);
  // Rank 0's outcome is everyone's (the metrics ran there alone).
  int code = (int)s;
  MPI_Bcast(&code, 1, MPI_INT, 0, comm);
  if (s == A3_OK && code != A3_OK) s = A3_FAIL((a3_status)code, "eval: failed on rank 0");
  if (s != A3_OK) {
    a3_eval_report_free(out);
    A3_TRY(s);
  }
  return A3_OK;
}
