// a3fta evaluation: samples from a checkpoint, measured against real images
// in the feature space of fmnist-cnn-v1 (a3fta/features.h) and in pixel
// space, with the metrics of a3fta/metrics.h. `a3fta eval` and the end of
// every `a3fta sweep` point run the same function, so a sweep's
// /metrics/<name> are what `a3fta eval CHECKPOINT` prints for that point's
// checkpoint (same ranks, samples and seed; the seed defaults to train.seed).
//
// Images. The model draws sample_size x sample_size images (32x32 for the
// Fashion-MNIST U-Net, whose 28x28 training images were padded with 2 black
// pixels on each side, a3fta/trainer.h "Images"); the feature network takes
// their centre 28x28, which undoes that padding exactly. The dataset's
// images (1 x 28 x 28) are used as stored. Evaluation therefore needs
// model.arch.in_channels = 1, sample_size 28 or 32, and a dataset of 1 x 28
// x 28 images (a3_eval_supported; anything else is A3_ERR_CONFIG).
//
// Sets (all from the checkpoint's stored config):
//   samples    N images drawn with eval.sampler / sampler_steps / eta, EMA
//              weights when the checkpoint has them, noise keyed by (seed,
//              sample index) exactly as `a3fta sample` (any rank count gives
//              the same images up to the batch composition)
//   reference  every image of data.classes in the "test" split of data.path
//              (all classes when data.classes is empty)
//   training   the fine-tuning subset itself: data.split, data.classes,
//              data.shots drawn with data.subset_seed (a3_train_data_load:
//              the exact images the run trained on)
// Metrics (a3fta/results.h slots; NaN when not requested):
//   fid, kid_mean, kid_std   samples vs reference, features; KID with 100
//                            subsets of min(1000, N, R) rows keyed by the seed
//   precision, recall,       samples vs reference, features, k = 5 (Naeem et
//   density, coverage        al.'s recommendation)
//   diversity                mean pairwise feature distance of the samples
//   intra_cluster_diversity  samples clustered by their nearest training image
//                            in feature space, the mean within-cluster
//                            pairwise feature distance (Ojha et al. 2021 with
//                            L2 features for LPIPS)
//   memorization             fraction of samples with d1 < d2 / 3 to the
//                            training images in pixel space (centre 28x28,
//                            0..255)
// eval.metrics names groups of these: fid; kid (mean, std); diversity (both
// diversities); memorization; precision_recall (all four). heldout_loss is the
// trainer's, not computed here.
#ifndef A3FTA_EVAL_H
#define A3FTA_EVAL_H

#include "a3fta/config.h"
#include "a3fta/core.h"
#include "a3fta/results.h"

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum {
  A3_EVAL_KID_SUBSETS = 100,
  A3_EVAL_KID_SUBSET_SIZE = 1000,
  A3_EVAL_PRDC_K = 5,
  A3_EVAL_MEMO_RATIO = 3,
  A3_EVAL_TOP_MEMORIZED = 16, // pairs in the JSON list and the PNG
  A3_EVAL_SIZE = 28,          // the feature network's image side
};

// The pairs fit a results file's /memorized slots.
_Static_assert((int)A3_EVAL_TOP_MEMORIZED == (int)A3_RESULT_MEMORIZED_MAX &&
                   (int)A3_EVAL_SIZE == (int)A3_RESULT_MEMORIZED_SIZE,
               "eval's memorized pairs and the results file's /memorized disagree");

// a3_eval_options.seed: the checkpoint config's train.seed (what a sweep point uses).
#define A3_EVAL_SEED_TRAIN UINT64_MAX

// Bit (1u << m) for each a3_metric m of eval.metrics.
#define A3_EVAL_METRIC_BIT(m) (1u << (unsigned)(m))
// Every metric the evaluation computes (all of a3_metric but heldout_loss).
#define A3_EVAL_ALL_METRICS                                                                        \
  (A3_EVAL_METRIC_BIT(A3_METRIC_FID) | A3_EVAL_METRIC_BIT(A3_METRIC_KID) |                         \
   A3_EVAL_METRIC_BIT(A3_METRIC_DIVERSITY) | A3_EVAL_METRIC_BIT(A3_METRIC_MEMORIZATION) |          \
   A3_EVAL_METRIC_BIT(A3_METRIC_PRECISION_RECALL))
// The bits of cfg->eval.metrics that the evaluation computes (0: nothing to do).
unsigned a3_eval_metric_set(const a3_config *cfg);

// Whether a config's model can be evaluated (1 channel, sample_size 28 or
// 32); false with a one-line reason in why (cap bytes) otherwise. The
// dataset's image size is checked when the evaluation reads it.
bool a3_eval_supported(const a3_config *cfg, char *why, size_t cap);

// The feature network file: `explicit_path` when not NULL, else the
// environment variable A3FTA_FEATURES, else the committed network
// tests/eval/fmnist_cnn_v1.h5 of the source tree this binary was built from
// (its absolute path is known at build time). Never NULL.
const char *a3_eval_features_path(const char *explicit_path);

typedef struct {
  int64_t num_samples;       // N >= 6 (PRDC's k + 1); 0: eval.samples of the config
  uint64_t seed;             // noise of the samples, KID subsets; A3_EVAL_SEED_TRAIN: train.seed
  unsigned metrics;          // A3_EVAL_METRIC_BIT set; 0: A3_EVAL_ALL_METRICS
  const char *features;      // feature network file (a3_eval_features_path(NULL) if NULL)
  int max_batch;             // images per forward pass when sampling (0: as a3fta sample, 16 on
                             // the CPU, 256 on a GPU)
  int64_t keep_images;       // > 0: the report keeps the first min(keep, N) samples (rank 0)
  const char *memorized_png; // rank 0 writes the most-memorized pairs here (NULL: none)
  bool set_backend;          // sample on `backend` instead of the checkpoint config's
  a3_backend_kind backend;   //   parallel.backend
} a3_eval_options;

typedef struct {
  int64_t sample;      // index of the sample
  int64_t train_index; // index of its nearest training image in data.split
  double d1, d2;       // pixel distances to the nearest and second-nearest training image
} a3_eval_memorized;

typedef struct {
  double metrics[A3_RESULT_N_METRICS]; // a3_result_metric slots, NaN when not computed
  unsigned computed;                   // the A3_EVAL_METRIC_BIT set that was computed
  int64_t n_samples, n_reference, n_train;
  uint64_t seed;
  bool used_ema;
  a3_sampler sampler;
  int64_t sampler_steps;
  double eta;
  // details
  int64_t kid_subsets, kid_subset_size, prdc_k, n_memorized, n_clusters;
  double fid_mean_dist2, fid_trace_sqrt, fid_clamped_rel;
  a3_eval_memorized top[A3_EVAL_TOP_MEMORIZED]; // most memorized first (by d1/d2)
  int n_top;
  // The pixels of each top pair (rank 0): [k][0] the sample's centre 28x28,
  // [k][1] its nearest training image; zeros beyond n_top.
  uint8_t top_pixels[A3_EVAL_TOP_MEMORIZED][2][A3_EVAL_SIZE * A3_EVAL_SIZE];
  double sampling_s, metrics_s; // wall seconds (sampling: max over ranks)
  char features[A3_CONFIG_STR_MAX];
  a3_config cfg;    // the checkpoint's config (a3_eval_report_free)
  uint8_t *images;  // (n_images, 1, S, S) when keep_images > 0, rank 0; else NULL
  int64_t n_images; //
  int image_size;   // S
} a3_eval_report;

void a3_eval_report_free(a3_eval_report *r); // safe on a zeroed report

// Collective over comm: loads the checkpoint on every rank, draws the
// samples split over the ranks, gathers them on rank 0, which reads the
// reference and training images, computes the features and the metrics and
// writes memorized_png. Every rank returns the same status; the report is
// complete on rank 0 (the others get the sampling fields and the config).
a3_status a3_eval_checkpoint(MPI_Comm comm, const char *checkpoint, const a3_eval_options *opt,
                             a3_eval_report *out) A3_WARN_UNUSED;

// The report as an aligned table (serial).
void a3_eval_print(const a3_eval_report *r, const char *checkpoint, FILE *f);
// The report as JSON (NaN as null), written atomically (serial).
a3_status a3_eval_write_json(const a3_eval_report *r, const char *checkpoint,
                             const char *path) A3_WARN_UNUSED;

#endif
