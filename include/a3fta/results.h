// a3fta results files: one parallel-HDF5 file per sweep, indexed by grid
// point, that holds every run's outcome and is also the sweep's resume state.
//
// File format (format_version 1). N = points, K = A3_RESULT_CURVE_MAX,
// S = output.samples_per_run, C = model.arch.in_channels, H = W = sample_size.
// Every dataset has a "description" attribute (h5dump / h5py users need no code).
//   /                      attributes: format = "a3fta-results", format_version = 1 (int32),
//                          sweep_hash ("%016llx", see a3fta/sweep.h), n_points (int32),
//                          ranks_per_run (int32), config (the sweep's base config as YAML,
//                          sweep section included; a variable-length string, so any size),
//                          created_utc ("2024-05-01T12:00:00Z"), varied_keys (strings)
//                          merged_from (strings; only in a file written by a3fta merge: its inputs)
//   /status        int8    (N)        0 pending, 1 done, 2 failed, 3 running, 4 diverged
//   /attempts      int32   (N)        times the point was started (resume retries
//                                     a failed point while attempts < A3_RESULT_MAX_ATTEMPTS)
//   /reason        string  (N)        fixed A3_RESULT_REASON_MAX bytes: why a point failed
//   /final_loss    float64 (N)        NaN until done
//   /loss_curve    float64 (N, K)     mean training loss per interval, NaN in unused slots
//   /loss_curve_step int64 (N, K)     last step of each interval, -1 in unused slots
//   /wall_s        float64 (N)        seconds the point took (max over its group's ranks)
//   /compute_s     float64 (N)        seconds of training/evaluation compute (run's own)
//   /peak_mem_bytes int64  (N)        peak memory of the busiest rank of the group
//   /timing/compute_s float64 (N, R)  per rank of the point's group (R = ranks_per_run, group
//                                     rank order): seconds inside training steps not waiting for
//                                     communication (a3fta/trainer.h a3_step_timing); NaN until
//                                     done
//   /timing/comm_s float64 (N, R)     per rank: seconds waiting for the data-parallel gradient
//                                     and loss sums (0 with one rank per run); NaN until done
//   /timing/steps  int64   (N)        training steps those times cover (the last attempt's:
//                                     a resumed point's earlier steps are not in them); 0 until
//                                     done
//   /timing/grad_bytes int64 (N)      bytes of gradient each step's data-parallel sum reduces
//                                     (4 x trainable parameters); 0 until done or unknown
//   /timing/idle_s float64 (N)        the group's load imbalance: mean over its ranks of
//                                     (max over ranks of compute_s - the rank's compute_s), the
//                                     part of comm_s spent waiting for the slowest rank; NaN until
//                                     done. (Files written before /timing existed lack the group;
//                                     readers treat it as absent, writers skip it.)
//   /metrics/<name> float64 (N)       evaluation metrics (a3_result_metric), NaN until filled
//   /trainable_params int64 (N)       parameters the point's strategy trains (what `a3fta info
//                                     --model` lists for it); 0 until done or unknown
//   /total_params  int64   (N)        all parameters of the point's model, the strategy's added
//                                     modules (adapter, LoRA) included; 0 until done or unknown
//   /heldout_curve float64 (N, K)     held-out loss (eval.heldout_every, losses.csv column
//                                     heldout): the mean of each slot's evaluations (one per
//                                     slot while there are at most K); NaN in unused slots, all
//                                     NaN with eval.heldout_every = 0
//   /heldout_curve_step int64 (N, K)  training step of each slot's last held-out evaluation; -1
//                                     in unused slots
//   /memorized/pairs uint8 (N, M, 2, 28, 28)  the M = A3_RESULT_MEMORIZED_MAX most-memorized
//                                     samples (a3fta/eval.h, smallest d1/d2 first): [k][0] the
//                                     sample's centre 28x28, [k][1] its nearest training image;
//                                     zeros in unused slots (memorization not computed)
//   /memorized/d1  float64 (N, M)     pixel distance of pair k's sample to its nearest training
//                                     image; NaN in unused slots
//   /memorized/d2  float64 (N, M)     ... to its second-nearest; NaN in unused slots
//                                     (Files written before these seven existed lack them;
//                                     readers treat each as absent, a resumed sweep warns once
//                                     and writes its points without them.)
//   /n_samples     int32   (N)        valid images in /samples[i] (the first n_samples)
//   /samples       uint8   (N, S, C, H, W)  sample images, 0 (black) when absent
//   /points/config string  (N)        fixed-length: each point's resolved config as YAML
//   /points/<key>  int64 | float64 | string (N): one per varied key path ("train.lr"),
//                                     attribute "key" = the key path; booleans are 0/1
//
// Why a kill never corrupts it. Every dataset is created collectively up front
// with fixed shapes, contiguous storage allocated and filled at creation
// (H5D_ALLOC_TIME_EARLY, H5D_FILL_TIME_ALLOC) and no modification-time
// tracking, in a file written as "<path>.partial", flushed, closed and renamed
// into place: after creation no HDF5 metadata ever changes. A finished point
// is then written by its group leader with independent MPI-IO (plain writes
// of raw bytes into space that already exists), the row's data first and its
// status last, followed by fdatasync. A process killed at any moment leaves a
// valid file in which each point is pending, running (treated as pending on
// resume), or done with all of its data. Default (earliest) file-format
// bounds: no superblock-v3 "file open for writing" flag that would make a
// killed file unopenable without h5clear.
#ifndef A3FTA_RESULTS_H
#define A3FTA_RESULTS_H

#include "a3fta/core.h"

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define A3_RESULTS_FORMAT "a3fta-results"
enum {
  A3_RESULTS_FORMAT_VERSION = 1,
  A3_RESULT_CURVE_MAX = 100,     // loss-curve slots per point (K)
  A3_RESULT_REASON_MAX = 512,    // bytes of a failure reason, NUL included
  A3_RESULT_MAX_ATTEMPTS = 3,    // resume retries a failed point until it was started this often
  A3_RESULT_KEY_MAX = 64,        // bytes of a varied key path, NUL included
  A3_RESULT_MEMORIZED_MAX = 16,  // most-memorized pairs per point (M)
  A3_RESULT_MEMORIZED_SIZE = 28, // side of their images
};

typedef enum {
  A3_POINT_PENDING = 0,
  A3_POINT_DONE = 1,
  A3_POINT_FAILED = 2,
  A3_POINT_RUNNING = 3,
  // Its training loss became NaN or infinite (A3_ERR_DIVERGED). Failed for
  // good: a rerun of the same point diverges again, so resume retries it only
  // when asked to (a3_sweep_options.retry_failed).
  A3_POINT_DIVERGED = 4,
} a3_point_status;

const char *a3_point_status_name(int status); // "pending", "done", ..., "?" if unknown
// A comma-separated list of status names ("failed,diverged") as a mask with
// bit (1 << status) per name; a usage error naming the choices otherwise.
a3_status a3_point_status_mask(const char *list, unsigned *mask) A3_WARN_UNUSED;
bool a3_point_failed(int status); // failed or diverged
// Whether a resumed sweep runs the point: not done, not diverged, and not
// failed A3_RESULT_MAX_ATTEMPTS times (a point left running is pending); with
// retry_failed (a3fta sweep --retry-failed) every failed or diverged one too.
bool a3_point_to_run(int status, int32_t attempts, bool retry_failed);

// Metric slots (each one dataset /metrics/<name>); NaN until a run fills it.
typedef enum {
  A3_RESULT_FID,
  A3_RESULT_KID_MEAN,
  A3_RESULT_KID_STD,
  A3_RESULT_DIVERSITY,
  A3_RESULT_INTRA_CLUSTER_DIVERSITY,
  A3_RESULT_MEMORIZATION,
  A3_RESULT_HELDOUT_LOSS,
  A3_RESULT_PRECISION,
  A3_RESULT_RECALL,
  A3_RESULT_DENSITY,
  A3_RESULT_COVERAGE,
  A3_RESULT_N_METRICS
} a3_result_metric;

const char *a3_result_metric_name(int metric);        // "fid", "kid_mean", ...
const char *a3_result_metric_description(int metric); // one line, stored as attribute

// The outcome of one run (one grid point), as a run function fills it.
// a3_run_result_init sets: status DONE, reason "", every number NaN (counts
// 0, peak_mem_bytes 0, parameter counts 0), no curves, no samples, no
// memorized pairs, no per-rank timings.
typedef struct {
  // ---- inputs, set by the sweep engine before the run function is called
  int64_t point;   // index of the grid point
  int samples_cap; // S: images the samples buffer holds (0: none wanted)
  int channels, height, width;
  uint8_t *samples; // (samples_cap, C, H, W), zeroed, owned by the engine
  // ---- outputs
  a3_point_status status;            // DONE, or FAILED with a reason (the sweep goes on)
  char reason[A3_RESULT_REASON_MAX]; // why it failed ("loss is NaN at step 120")
  double final_loss;
  int n_curve;                             // slots used of the loss curve
  double curve_loss[A3_RESULT_CURVE_MAX];  // mean loss over each interval
  int64_t curve_step[A3_RESULT_CURVE_MAX]; // last step of each interval
  double wall_s;          // set by the engine (time in the run function, max over the group)
  double compute_s;       // the run's own compute time (NaN if unknown)
  int64_t peak_mem_bytes; // 0: the engine uses the process's peak RSS
  // This rank's time in training steps (a3fta/trainer.h a3_step_timing): NaN
  // (steps 0) when the run does not report it. The engine gathers them over
  // the group into rank_compute_s / rank_comm_s on the group's first rank.
  double step_compute_s, step_comm_s;
  int64_t steps;
  int64_t grad_bytes; // 4 x trainable parameters (0: unknown)
  // ---- set by the engine after the run (group's first rank): per group
  // rank (n_ranks of them, engine-owned), and their imbalance (/timing/idle_s)
  int n_ranks;
  double *rank_compute_s, *rank_comm_s;
  double idle_s;
  double metrics[A3_RESULT_N_METRICS];
  int n_samples; // images written into samples (<= samples_cap)
  // Parameters the strategy trains and all of the model's (0: unknown).
  int64_t trainable_params, total_params;
  int n_heldout;                             // slots used of the held-out loss curve
  double heldout_loss[A3_RESULT_CURVE_MAX];  // held-out loss (mean of the slot's evaluations)
  int64_t heldout_step[A3_RESULT_CURVE_MAX]; // step of the slot's last evaluation
  // The most-memorized pairs (sample, nearest training image), most memorized first.
  int n_memorized;
  uint8_t memorized[A3_RESULT_MEMORIZED_MAX][2]
                   [A3_RESULT_MEMORIZED_SIZE * A3_RESULT_MEMORIZED_SIZE];
  double memorized_d1[A3_RESULT_MEMORIZED_MAX], memorized_d2[A3_RESULT_MEMORIZED_MAX];
} a3_run_result;

void a3_run_result_init(a3_run_result *r);

// Fills the loss curve from one loss per step (losses[s-1] is step s's loss,
// steps 1..n): K slots of ceil(n / K) steps each, each the mean of its steps
// (non-finite losses propagate), curve_step the slot's last step.
void a3_run_result_set_curve(a3_run_result *r, const double *losses, int64_t n);
// Fills the held-out curve from n evaluations (steps ascending): K slots of
// ceil(n / K) consecutive evaluations each, the mean of their losses,
// heldout_step the slot's last step.
void a3_run_result_set_heldout(a3_run_result *r, const int64_t *steps, const double *losses,
                               int64_t n);

// ---------------------------------------------------------------- creating
typedef enum { A3_RESULT_INT64, A3_RESULT_FLOAT64, A3_RESULT_STRING } a3_result_type;

// One varied key: its values for all N points (the array of its type).
typedef struct {
  char key[A3_RESULT_KEY_MAX];
  a3_result_type type;
  const char *description; // "train.lr (float)"; NULL: the key path
  int64_t *ints;           // N, A3_RESULT_INT64
  double *floats;          // N, A3_RESULT_FLOAT64
  char **strings;          // N, A3_RESULT_STRING
} a3_result_column;

typedef struct {
  int64_t n_points;
  uint64_t sweep_hash;
  int ranks_per_run;
  const char *base_yaml; // the sweep's config (root attribute "config")
  const a3_result_column *columns;
  int n_columns;
  int samples, channels, height, width; // S, C, H, W
  size_t config_len;                    // bytes of each /points/config string (>= longest YAML + 1)
  // Point i's resolved YAML (malloc'd; the writer frees it). Called on the
  // rank that writes row i only: ranks write disjoint slices of /points/config.
  a3_status (*point_yaml)(void *ctx, int64_t i, char **out);
  void *ctx;
} a3_results_layout;

// Collective over comm (every rank passes identical layouts, point_yaml aside):
// creates <path>.partial, writes everything, closes it and renames it to path
// (replacing any file there).
a3_status a3_results_create(MPI_Comm comm, const char *path,
                            const a3_results_layout *layout) A3_WARN_UNUSED;

// ---------------------------------------------------------------- resume state
// Serial (one rank, sec2 driver; no other rank may have the file open):
// checks format, version, sweep_hash and n_points, and reads the status and
// attempts of every point (arrays of n_points). With reset_running, points
// left "running" by a killed job are set back to pending in the file.
// A file of another sweep is A3_ERR_CONFIG naming both hashes.
a3_status a3_results_inspect(const char *path, uint64_t sweep_hash, int64_t n_points,
                             bool reset_running, int8_t *status, int32_t *attempts) A3_WARN_UNUSED;

// ---------------------------------------------------------------- writing
typedef struct a3_results a3_results;

// Collective: opens the file read-write on comm and opens every dataset once.
// A file written before /trainable_params, /total_params, /heldout_curve*
// and /memorized existed is fine: rank 0 warns once naming what it lacks,
// and a3_results_write_point writes the rest of each row.
a3_status a3_results_open(MPI_Comm comm, const char *path, a3_results **out) A3_WARN_UNUSED;
// Independent (one rank): status RUNNING and the attempt count of a point.
a3_status a3_results_mark_running(a3_results *r, int64_t point, int32_t attempts) A3_WARN_UNUSED;
// Independent (one rank): the point's whole row, then its status (DONE or
// FAILED, from res->status), then fdatasync.
a3_status a3_results_write_point(a3_results *r, int64_t point,
                                 const a3_run_result *res) A3_WARN_UNUSED;
// Collective: flush (MPI_File_sync) and barrier, so that every rank's writes
// are visible to all.
a3_status a3_results_sync(a3_results *r) A3_WARN_UNUSED;
// Independent: statuses of all points (n_points int8) as the file has them.
a3_status a3_results_read_status(a3_results *r, int8_t *status) A3_WARN_UNUSED;
int64_t a3_results_n_points(const a3_results *r);
// Collective: closes datasets and file and frees r (also when an earlier call
// failed). NULL is fine (returns A3_OK without any MPI call).
a3_status a3_results_close(a3_results *r) A3_WARN_UNUSED;

// ---------------------------------------------------------------- merging
typedef struct {
  int64_t n_points;
  int64_t done, failed, pending; // statuses in the merged file (failed: diverged included)
  int64_t diverged;              // of the failed
  int64_t not_started;           // points no input had started (pending in the merged file)
} a3_merge_summary;

// Serial (one rank, default driver; the inputs must be closed): combines the
// results files of one sweep's slices (a3fta sweep --slice I/N, one file per
// job-array task) into out_path, a file equal to a single sweep's: every
// dataset of the first input, with each point's row (every dataset whose
// first dimension is n_points: status, metrics, curves, samples,
// /points/config, ...) taken from the input that started the point
// (attempts > 0 or status not pending). Points no input started stay pending;
// points left running by a killed job become pending (as a resume makes
// them). The root attribute merged_from lists the inputs. Written to
// "<out_path>.partial" and renamed into place.
// Errors (exit 2: A3_ERR_USAGE/A3_ERR_INPUT) name the file and dataset: an
// input that is missing or not a results file, inputs of different sweeps
// (sweep_hash) or with other datasets, shapes or types, a point started in
// two inputs (overlapping slices), out_path existing without force or being
// an input.
a3_status a3_results_merge(const char *out_path, const char *const *inputs, int n_inputs,
                           bool force, a3_merge_summary *summary) A3_WARN_UNUSED;

// ---------------------------------------------------------------- reporting
// Serial (one rank, default driver): prints one row per point to f: point,
// status (pending/done/failed/running/diverged), each varied key (/points/<key>),
// final_loss, wall_s, the step timings when the file has /timing
// (step_compute_s and step_comm_s: means over the group's ranks, idle_s; in
// CSV also steps, grad_bytes and step_compute_s_rK, step_comm_s_rK for each
// rank K), each metric, the parameter counts when the file has them
// (trainable_params, and in CSV total_params, in the table trainable_% of
// all), reason (failed and diverged points only). As an aligned table
// after a summary line (NaN as "-"), or with csv as a header line plus rows
// (RFC 4180 quoting, NaN empty, numbers that read back exactly).
// status_mask (a3_point_status_mask; 0 = all) selects the rows printed; the
// summary line counts every point.
a3_status a3_results_print(const char *path, FILE *f, bool csv,
                           unsigned status_mask) A3_WARN_UNUSED;

#endif
