// a3fta feature network: a small CNN classifier of Fashion-MNIST-like images,
// trained by a3fta itself, whose penultimate activations are the feature
// space of FID, KID, precision/recall and diversity (a3fta/metrics.h).
// Inception is not appropriate for 28x28 grey images, nor available offline.
//
// The network "fmnist-cnn-v1" (version 1; the architecture is fixed in
// code, not configured, so that a name always means the same function):
//   input  (N, 1, 28, 28): uint8 pixels p scaled to p / 127.5 - 1 in [-1, 1]
//   conv1  3x3, 1 -> 32, stride 1, pad 1   -> (N, 32, 28, 28), SiLU
//   conv2  3x3, 32 -> 64, stride 2, pad 1  -> (N, 64, 14, 14), SiLU
//   conv3  3x3, 64 -> 32, stride 2, pad 1  -> (N, 32, 7, 7),   SiLU
//   flatten (N, 1568) in (C, H, W) order (PyTorch's nn.Flatten)
//   fc1    1568 -> 128, SiLU                -> (N, 128) = the FEATURES
//   fc2    128 -> 10                        -> logits; softmax cross-entropy
// 239,402 parameters (0.96 MB in float32), named as a PyTorch state dict
// (conv1.weight (32, 1, 3, 3), conv1.bias, ..., fc2.bias): a torch.nn
// model with these layers loads them unchanged.
// 32x32 images (the diffusion models' sample size: 28x28 padded with black,
// i.e. -1) are centre-cropped to 28x28 (the 2-pixel border is dropped).
//
// Training (a3_feature_net_train): every hyperparameter is in
// a3_feature_net_default_hparams (one table in src/eval/feature_net_train.c):
// AdamW lr 1e-3 with a cosine decay to 0, betas (0.9, 0.999), eps 1e-8,
// weight decay 1e-4 (weights only, not biases), batch 128 (global, split
// over the ranks), 8 epochs over the 60,000 training images, each epoch a
// Philox shuffle keyed by (seed, epoch), the last partial batch dropped.
// Initialisation as PyTorch's default (uniform +-1/sqrt(fan_in) for weights
// and biases) from Philox. Data-parallel over the ranks of a communicator:
// each rank computes the gradient of its shard of every batch, the gradients
// are summed with MPI_Allreduce, and every rank applies the same update.
// Bitwise reproducible for a fixed build (backend kernels), number of ranks
// and threads per rank (the sum over ranks changes the rounding, so 1 and 2
// ranks differ by rounding only).
//
// File: an a3fta checkpoint (a3fta/checkpoint.h; format "a3fta-checkpoint"
// is the container) with root attributes content = "a3fta-feature-net",
// network = "fmnist-cnn-v1", network_version = 1, and the training record
// as int64 attributes (seed, epochs, steps, ranks, test_accuracy_ppm =
// round(accuracy * 1e6) or -1, train_seconds); tensors in /params.
//
// The committed network tests/eval/fmnist_cnn_v1.h5 was written by
//   build/tests/eval/test_eval_feature_net --train OUT.h5 --seed 1
// (tests/eval/test_feature_net.c; also --epochs, --max-steps, --dataset),
// which imports Fashion-MNIST from the Debian package and trains with the
// defaults above on one rank with 2 OpenMP threads: 3744 steps in 962 s on
// the 2-core build machine (shared with other jobs: 650 s of CPU time),
// test accuracy 0.9132 (mean cross-entropy 0.275) on the 10,000 test images.
#ifndef A3FTA_FEATURES_H
#define A3FTA_FEATURES_H

#include "a3fta/backend.h"
#include "a3fta/core.h"

#include <mpi.h>
#include <stdint.h>

#define A3_FEATNET_NAME "fmnist-cnn-v1"
#define A3_FEATNET_CONTENT "a3fta-feature-net"
enum {
  A3_FEATNET_VERSION = 1,
  A3_FEATNET_DIM = 128,    // feature dimension D
  A3_FEATNET_CLASSES = 10, // logits
  A3_FEATNET_SIZE = 28,    // input height and width (32 is centre-cropped)
  A3_FEATNET_NUM_TENSORS = 10,
  A3_FEATNET_NUM_PARAMS = 239402,
};
// RNG streams of the feature network (core < 16, diffusion 16..31, metrics 32..).
enum { A3_STREAM_FEATNET_INIT = 40, A3_STREAM_FEATNET_SHUFFLE = 41 };

// One parameter tensor of the flat parameter vector (PyTorch layout).
typedef struct {
  const char *name; // "conv1.weight"
  int ndim;
  int64_t shape[4];
  int64_t offset, numel; // in the flat vector of A3_FEATNET_NUM_PARAMS floats
} a3_featnet_tensor;
const a3_featnet_tensor *a3_featnet_tensor_at(int i); // i < A3_FEATNET_NUM_TENSORS

typedef struct a3_feature_net a3_feature_net;

// ---------------------------------------------------------------- building and files
// A network with PyTorch's default initialisation drawn from Philox
// (stream A3_STREAM_FEATNET_INIT; element j of the flat vector uses index j).
a3_status a3_feature_net_create(const a3_backend *be, uint64_t seed,
                                a3_feature_net **out) A3_WARN_UNUSED;
// Loads a network file (checks content, network name and version, every
// tensor's name and shape; errors name the file). Serial: each rank may
// call it on its own.
a3_status a3_feature_net_load(const a3_backend *be, const char *path,
                              a3_feature_net **out) A3_WARN_UNUSED;
void a3_feature_net_free(a3_feature_net *net); // NULL is fine

// What a file records about how its network was trained (all optional: 0).
typedef struct {
  uint64_t seed;
  int64_t epochs, steps, ranks;
  double test_accuracy; // in [0, 1]; < 0: not measured
  double train_seconds;
} a3_feature_net_record;
// Writes the network atomically (serial: one rank). record may be NULL.
a3_status a3_feature_net_save(const a3_feature_net *net, const char *path,
                              const a3_feature_net_record *record) A3_WARN_UNUSED;
// The record stored in a file (fields absent from it are 0, accuracy -1).
a3_status a3_feature_net_read_record(const char *path, a3_feature_net_record *out) A3_WARN_UNUSED;

// The flat parameter vector (A3_FEATNET_NUM_PARAMS floats, host memory).
a3_status a3_feature_net_get_params(const a3_feature_net *net, float *host) A3_WARN_UNUSED;
a3_status a3_feature_net_set_params(a3_feature_net *net, const float *host) A3_WARN_UNUSED;

// ---------------------------------------------------------------- inference
// images (N, 1, H, W) uint8 with H = W = 28, or 32 (centre-cropped to 28).
// Any N >= 0; runs in batches of 256. Outputs are host memory.
// features (N, A3_FEATNET_DIM): the fc1 + SiLU activations.
a3_status a3_features_extract(const a3_feature_net *net, const uint8_t *images, int64_t n, int h,
                              int w, float *features) A3_WARN_UNUSED;
// Both outputs at once; either may be NULL. logits (N, A3_FEATNET_CLASSES).
a3_status a3_feature_net_forward(const a3_feature_net *net, const uint8_t *images, int64_t n, int h,
                                 int w, float *features, float *logits) A3_WARN_UNUSED;
// Fraction of images whose argmax logit (lowest index on ties) equals the
// label, and the mean cross-entropy (mean_loss may be NULL). labels (N) in
// [0, 10); N >= 1.
a3_status a3_feature_net_accuracy(const a3_feature_net *net, const uint8_t *images,
                                  const int32_t *labels, int64_t n, int h, int w, double *accuracy,
                                  double *mean_loss) A3_WARN_UNUSED;

// ---------------------------------------------------------------- training
// One forward and backward on float inputs x (N, 1, 28, 28) (already scaled),
// for the training loop and gradient checks: *loss = scale * the summed
// cross-entropy over the N rows; grads (A3_FEATNET_NUM_PARAMS, host) =
// d loss / d params (overwritten); dx (N, 1, 28, 28, host) = d loss / d x,
// or NULL.
a3_status a3_feature_net_loss_grad(a3_feature_net *net, const float *x, const int32_t *labels,
                                   int n, float scale, double *loss, float *grads,
                                   float *dx) A3_WARN_UNUSED;

typedef struct {
  int batch_size; // global, over all ranks
  int epochs;
  double lr, beta1, beta2, eps, weight_decay;
  int cosine; // 1: lr * cosine decay to 0 over the run; 0: constant
} a3_feature_net_hparams;
a3_feature_net_hparams a3_feature_net_default_hparams(void);

typedef struct {
  uint64_t seed;           // initialisation and shuffle
  int epochs;              // 0: the default (a3_feature_net_default_hparams)
  int64_t max_steps;       // > 0: stop after this many steps (the schedule is still
                           // that of the full run; tests)
  float *step_losses;      // optional out: each step's mean training loss
  int64_t step_losses_cap; // entries step_losses can hold
  int evaluate;            // 1: accuracy on the dataset's "test" split at the end
  int log_every;           // log the loss every this many steps on rank 0 (0: never)
} a3_feature_net_train_options;

typedef struct {
  int64_t steps;        // optimizer steps done
  int ranks;            // data-parallel ranks
  double seconds;       // wall time of the training steps (not loading, not evaluation)
  double final_loss;    // mean training loss over the last min(steps, 100) steps
  double test_accuracy; // on the "test" split; -1 when not evaluated
  double test_loss;     // mean cross-entropy there; -1 when not evaluated
} a3_feature_net_train_report;

// Trains fmnist-cnn-v1 on the "train" split of an a3fta dataset file
// (1-channel 28x28 images, 10 classes; every rank reads all of it).
// Collective over comm. opt may be NULL (all zero: seed 0, default epochs).
// out_path (may be NULL) is written by rank 0 with the training record.
// net_out (may be NULL) gets the trained network on every rank; report may
// be NULL. Runs on the CPU backend (AdamW and the all-reduce on host memory).
a3_status a3_feature_net_train(MPI_Comm comm, const char *dataset_path, const char *out_path,
                               const a3_feature_net_train_options *opt, a3_feature_net **net_out,
                               a3_feature_net_train_report *report) A3_WARN_UNUSED;

#endif
