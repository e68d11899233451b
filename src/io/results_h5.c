// Results files (see a3fta/results.h for the format and why a kill never
// corrupts one): collective creation with fixed shapes, serial inspection for
// resume, independent row writes by group leaders.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/results.h"
#include "io/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

// ---------------------------------------------------------------- metric names
static const struct {
  const char *name, *description;
} metric_info[A3_RESULT_N_METRICS] = {
    {"fid", "Frechet Inception-style distance of the samples to the reference set (lower is "
            "better); NaN = not computed"},
    {"kid_mean", "kernel inception-style distance, mean over subsets (unbiased); NaN = not "
                 "computed"},
    {"kid_std", "kernel inception-style distance, standard deviation over subsets; NaN = not "
                "computed"},
    {"diversity", "mean pairwise feature distance between samples; NaN = not computed"},
    {"intra_cluster_diversity", "mean pairwise distance of samples within the cluster of their "
                                "nearest training image; NaN = not computed"},
    {"memorization", "fraction of samples that are near-copies of a training image (ratio test); "
                     "NaN = not computed"},
    {"heldout_loss", "diffusion loss on held-out images (overfitting signal); NaN = not "
                     "computed"},
    {"precision", "precision (fraction of samples inside the real manifold); NaN = not computed"},
    {"recall", "recall (fraction of real images inside the sample manifold); NaN = not computed"},
    {"density", "density (precision counting neighbourhoods); NaN = not computed"},
    {"coverage", "coverage (real neighbourhoods containing a sample); NaN = not computed"},
};

const char *a3_result_metric_name(int m) {
  return m >= 0 && m < A3_RESULT_N_METRICS ? metric_info[m].name : "?";
}
const char *a3_result_metric_description(int m) {
  return m >= 0 && m < A3_RESULT_N_METRICS ? metric_info[m].description : "?";
}

// ---------------------------------------------------------------- point status
const char *a3_point_status_name(int status) {
  switch (status) {
  case A3_POINT_PENDING: return "pending";
  case A3_POINT_DONE: return "done";
  case A3_POINT_FAILED: return "failed";
  case A3_POINT_RUNNING: return "running";
  case A3_POINT_DIVERGED: return "diverged";
  default: return "?";
  }
}

a3_status a3_point_status_mask(const char *list, unsigned *mask) {
  *mask = 0;
  for (const char *p = list;;) {
    const size_t len = strcspn(p, ",");
    int found = -1;
    for (int k = A3_POINT_PENDING; k <= A3_POINT_DIVERGED && found < 0; k++)
      if (len == strlen(a3_point_status_name(k)) && !strncmp(p, a3_point_status_name(k), len))
        found = k;
    if (found < 0)
      return A3_FAIL(A3_ERR_USAGE,
                     "--status: '%.*s' is not a point status; give a comma-separated list of "
                     "pending, done, failed, running and diverged",
                     (int)len, p);
    *mask |= 1u << found;
    if (!p[len]) return A3_OK;
    p += len + 1;
  }
}

bool a3_point_failed(int status) {
  return status == A3_POINT_FAILED || status == A3_POINT_DIVERGED;
}

bool a3_point_to_run(int status, int32_t attempts, bool retry_failed) {
  if (retry_failed && a3_point_failed(status)) return true;
  if (status == A3_POINT_FAILED) return attempts < A3_RESULT_MAX_ATTEMPTS;
  return status != A3_POINT_DONE && status != A3_POINT_DIVERGED;
}

// ---------------------------------------------------------------- run results
void a3_run_result_init(a3_run_result *r) {
  memset(r, 0, sizeof *r);
  r->status = A3_POINT_DONE;
  r->final_loss = r->wall_s = r->compute_s = NAN;
  r->step_compute_s = r->step_comm_s = r->idle_s = NAN;
  for (int m = 0; m < A3_RESULT_N_METRICS; m++) r->metrics[m] = NAN;
  for (int k = 0; k < A3_RESULT_CURVE_MAX; k++) {
    r->curve_loss[k] = r->heldout_loss[k] = NAN;
    r->curve_step[k] = r->heldout_step[k] = -1;
  }
  for (int k = 0; k < A3_RESULT_MEMORIZED_MAX; k++) r->memorized_d1[k] = r->memorized_d2[k] = NAN;
}

// K slots of ceil(n / K) consecutive values each: their mean, and the step
// of the slot's last value (steps[i], or i + 1 without steps). Returns the
// slots used.
static int fill_curve(double *loss, int64_t *step, const int64_t *steps, const double *values,
                      int64_t n) {
  int used = 0;
  if (n <= 0) return 0;
  const int64_t every = (n + A3_RESULT_CURVE_MAX - 1) / A3_RESULT_CURVE_MAX;
  for (int64_t first = 0; first < n && used < A3_RESULT_CURVE_MAX; first += every) {
    const int64_t last = first + every < n ? first + every : n; // exclusive
    double sum = 0.0;
    for (int64_t s = first; s < last; s++) sum += values[s];
    loss[used] = sum / (double)(last - first);
    step[used] = steps ? steps[last - 1] : last;
    used++;
  }
  return used;
}

void a3_run_result_set_curve(a3_run_result *r, const double *losses, int64_t n) {
  r->n_curve = fill_curve(r->curve_loss, r->curve_step, NULL, losses, n);
}

void a3_run_result_set_heldout(a3_run_result *r, const int64_t *steps, const double *losses,
                               int64_t n) {
  r->n_heldout = fill_curve(r->heldout_loss, r->heldout_step, steps, losses, n);
}

// ---------------------------------------------------------------- dataset table
// The per-point datasets besides /points/* and /metrics/* (order = enum).
enum {
  DS_STATUS,
  DS_ATTEMPTS,
  DS_REASON,
  DS_FINAL_LOSS,
  DS_LOSS_CURVE,
  DS_LOSS_CURVE_STEP,
  DS_WALL,
  DS_COMPUTE,
  DS_PEAK_MEM,
  DS_N_SAMPLES,
  DS_SAMPLES,
  N_DS
};

static const struct {
  const char *name, *description;
} ds_info[N_DS] = {
    {"status", "per point: 0 pending, 1 done, 2 failed (see /reason), 3 running (a point left "
               "running by a killed job is pending again on resume), 4 diverged (its loss became "
               "NaN or infinite, see /reason; not retried)"},
    {"attempts",
     "per point: times the point was started; a failed point is retried on resume "
     "while attempts < 3 (a diverged one is not; a3fta sweep --retry-failed retries both)"},
    {"reason", "per point: why it failed or diverged (empty when done)"},
    {"final_loss", "per point: training loss of the last step; NaN until done"},
    {"loss_curve", "per point (N, K): mean training loss over each interval of the run "
                   "(loss_curve_step holds each interval's last step); NaN in unused slots"},
    {"loss_curve_step", "per point (N, K): last training step of each loss_curve interval; -1 in "
                        "unused slots"},
    {"wall_s", "per point: seconds the run took, slowest rank of its group; NaN until done"},
    {"compute_s", "per point: seconds of training and evaluation compute reported by the run; "
                  "NaN if unknown"},
    {"peak_mem_bytes", "per point: peak memory in bytes of the busiest rank of the group (process "
                       "peak RSS when the run did not report its own); 0 until done"},
    {"n_samples", "per point: number of valid images at the start of /samples[i]"},
    {"samples", "per point (N, S, C, H, W) uint8: sample images of the trained model, 0 = black; "
                "only the first n_samples are valid"},
};

// The step timings, group /timing (see a3fta/results.h); files written before
// it existed lack it: their rows are written without timings.
enum { TM_COMPUTE, TM_COMM, TM_STEPS, TM_GRAD_BYTES, TM_IDLE, N_TM };
static const struct {
  const char *name, *description;
  int per_rank; // (N, ranks_per_run) rather than (N)
} tm_info[N_TM] = {
    {"compute_s",
     "per point (N, R = ranks_per_run), one column per rank of its group (group rank "
     "order): seconds inside training steps not waiting for communication (batch, "
     "forward, backward, optimizer); NaN until done or when the run reports none",
     1},
    {"comm_s",
     "per point (N, R): seconds each rank waited for the data-parallel gradient and loss "
     "sums to finish (a faster rank also waits here for the slowest); 0 with one rank "
     "per run, NaN until done",
     1},
    {"steps",
     "per point: training steps the compute_s and comm_s cover (those of the last "
     "attempt: a point resumed from its checkpoint does not count the earlier ones); 0 "
     "until done",
     0},
    {"grad_bytes",
     "per point: bytes of gradient each training step's data-parallel sum reduces "
     "(4 x trainable parameters, whatever the rank count); 0 until done",
     0},
    {"idle_s",
     "per point: load imbalance of the group, mean over its ranks of (largest compute_s "
     "of the group - the rank's compute_s): the part of comm_s spent waiting for the "
     "slowest rank; 0 with one rank per run, NaN until done",
     0},
};

// Datasets added after format_version 1's first files (see a3fta/results.h):
// each optional when opening, skipped when absent. Dimensions after the
// first (0 ends the list).
enum { EX_TRAINABLE, EX_TOTAL, EX_HELDOUT, EX_HELDOUT_STEP, EX_PAIRS, EX_D1, EX_D2, N_EX };
enum { MEMO_M = A3_RESULT_MEMORIZED_MAX, MEMO_S = A3_RESULT_MEMORIZED_SIZE };
static const struct {
  const char *name, *description;
  int64_t dims[4];
} ex_info[N_EX] = {
    {"trainable_params",
     "per point: parameters the point's strategy trains (as 'a3fta info --model' lists them); 0 "
     "until done or unknown",
     {0}},
    {"total_params",
     "per point: all parameters of the point's model, modules the strategy adds (adapter, LoRA) "
     "included; trainable_params / total_params is the trainable fraction; 0 until done or "
     "unknown",
     {0}},
    {"heldout_curve",
     "per point (N, K): held-out denoising loss (eval.heldout_every; losses.csv column heldout), "
     "the mean of each slot's consecutive evaluations (one evaluation per slot while there are "
     "at most K); NaN in unused slots, all NaN when eval.heldout_every is 0",
     {A3_RESULT_CURVE_MAX, 0}},
    {"heldout_curve_step",
     "per point (N, K): training step of each heldout_curve slot's last evaluation; -1 in unused "
     "slots",
     {A3_RESULT_CURVE_MAX, 0}},
    {"memorized/pairs",
     "per point (N, M, 2, 28, 28) uint8: the M most-memorized samples, smallest d1/d2 first; "
     "[k][0] the sample (centre 28x28), [k][1] its nearest training image; zeros in unused slots "
     "(memorization not computed)",
     {MEMO_M, 2, MEMO_S, MEMO_S}},
    {"memorized/d1",
     "per point (N, M): pixel distance (0..255 scale) of pair k's sample to its nearest training "
     "image; NaN in unused slots",
     {MEMO_M, 0}},
    {"memorized/d2",
     "per point (N, M): pixel distance of pair k's sample to its second-nearest training image "
     "(memorized when d1 < d2 / 3); NaN in unused slots",
     {MEMO_M, 0}},
};

struct a3_results {
  MPI_Comm comm;
  hid_t file, dxpl;
  hid_t ds[N_DS];
  hid_t extra[N_EX];    // H5I_INVALID_HID where an older file lacks the dataset
  hid_t timing[N_TM];   // all H5I_INVALID_HID in a file without /timing
  int64_t timing_ranks; // R of /timing/compute_s
  hid_t metrics[A3_RESULT_N_METRICS];
  int64_t n_points;
  size_t reason_len;
  int64_t sample_elems; // S * C * H * W
  int fd;               // plain descriptor for fdatasync (-1 until first needed)
  char *path;
};

// ---------------------------------------------------------------- helpers
static a3_status h5fail(const char *path, const char *what) {
  return A3_FAIL(A3_ERR_HDF5, "%s: cannot %s%s", path, what, a3_h5_detail());
}

// A status that every rank of comm shares: the first failing rank's message
// on that rank, a pointer to it on the others.
static a3_status agree(MPI_Comm comm, a3_status mine, const char *what) {
  int code = (int)mine, worst = 0;
  MPI_Allreduce(&code, &worst, 1, MPI_INT, MPI_MAX, comm);
  if (worst == A3_OK || mine != A3_OK) return mine;
  return A3_FAIL((a3_status)worst, "%s failed on another rank (see its message)", what);
}

static hid_t fixed_string_type(size_t len) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, len);
  H5Tset_strpad(t, H5T_STR_NULLTERM);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

// Creates a dataset whose storage is allocated and filled now: nothing about
// it changes later but raw bytes.
static a3_status make_dataset(hid_t loc, const char *name, hid_t type, int ndims,
                              const hsize_t *dims, const void *fill, const char *description,
                              const char *path, hid_t *out) {
  hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
  H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
  H5Pset_fill_time(dcpl, H5D_FILL_TIME_ALLOC);
  H5Pset_fill_value(dcpl, type, fill);
  H5Pset_obj_track_times(dcpl, 0);
  hid_t space = H5Screate_simple(ndims, dims, NULL);
  hid_t ds = H5Dcreate2(loc, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
  H5Sclose(space);
  H5Pclose(dcpl);
  if (ds < 0) {
    char what[256];
    snprintf(what, sizeof what, "create dataset %s", name);
    return h5fail(path, what);
  }
  char where[1200];
  snprintf(where, sizeof where, "%s: %s", path, name);
  a3_status s = a3_h5_write_string_attr(ds, "description", description, where);
  if (s != A3_OK || !out)
    H5Dclose(ds);
  else
    *out = ds;
  return s;
}

// Writes rows [first, first + count) of a dataset (count may be 0: the rank
// still joins a collective write with an empty selection).
static a3_status write_rows(hid_t ds, hid_t memtype, hid_t dxpl, int64_t first, int64_t count,
                            const void *buf, const char *path) {
  hid_t fspace = H5Dget_space(ds);
  hsize_t dims[8] = {0}, start[8] = {0};
  const int nd = H5Sget_simple_extent_ndims(fspace);
  H5Sget_simple_extent_dims(fspace, dims, NULL);
  hsize_t per_row = 1;
  for (int d = 1; d < nd; d++) per_row *= dims[d];
  hsize_t count_dims[8];
  memcpy(count_dims, dims, sizeof dims);
  count_dims[0] = (hsize_t)count;
  start[0] = (hsize_t)first;
  const hsize_t mem_n = count > 0 && per_row > 0 ? (hsize_t)count * per_row : 1;
  hid_t mspace = H5Screate_simple(1, &mem_n, NULL);
  if (count > 0 && per_row > 0) {
    H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start, NULL, count_dims, NULL);
  } else {
    H5Sselect_none(fspace);
    H5Sselect_none(mspace);
  }
  herr_t rc = H5Dwrite(ds, memtype, mspace, fspace, dxpl, buf);
  H5Sclose(mspace);
  H5Sclose(fspace);
  if (rc < 0) return h5fail(path, "write results rows");
  return A3_OK;
}

// After a failed H5Fcreate/H5Fopen: the fix when HDF5's file lock was refused
// (NFS, Lustre and other file systems without working locks), else "".
static const char *lock_hint(void) {
  return strstr(a3_h5_detail(), "lock")
             ? "; the file system refused HDF5's file lock: set HDF5_USE_FILE_LOCKING=FALSE "
               "in the job's environment (file systems without working locks: NFS, Lustre)"
             : "";
}

static hid_t collective_dxpl(void) {
  hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
  H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
  return dxpl;
}

static hid_t mpio_fapl(MPI_Comm comm) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL);
  return fapl;
}

static void utc_now(char *buf, size_t size) {
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

// ---------------------------------------------------------------- creating
typedef struct {
  MPI_Comm comm;
  int rank, size;
  const char *path; // for messages (the final path)
  const a3_results_layout *L;
  hid_t file, dxpl;
} creator;

static a3_status write_root_attrs(creator *c, const char *created) {
  const a3_results_layout *L = c->L;
  char hash[32], where[1100];
  snprintf(hash, sizeof hash, "%016llx", (unsigned long long)L->sweep_hash);
  snprintf(where, sizeof where, "%s: /", c->path);
  hid_t root = c->file;
  A3_TRY(a3_h5_write_string_attr(root, "format", A3_RESULTS_FORMAT, where));
  A3_TRY(a3_h5_write_int_attr(root, "format_version", A3_RESULTS_FORMAT_VERSION, where));
  A3_TRY(a3_h5_write_string_attr(root, "sweep_hash", hash, where));
  A3_TRY(a3_h5_write_int_attr(root, "n_points", (int32_t)L->n_points, where));
  A3_TRY(a3_h5_write_int_attr(root, "ranks_per_run", L->ranks_per_run, where));
  A3_TRY(a3_h5_write_string_attr(root, "config", L->base_yaml, where));
  A3_TRY(a3_h5_write_string_attr(root, "created_utc", created, where));
  const char **keys = NULL;
  A3_TRY(a3_alloc((void **)&keys, (size_t)L->n_columns + 1, sizeof *keys));
  for (int i = 0; i < L->n_columns; i++) keys[i] = L->columns[i].key;
  a3_status s = a3_h5_write_strings_attr(root, "varied_keys", keys, L->n_columns, where);
  free(keys);
  A3_TRY(s);
  A3_TRY(a3_h5_write_string_attr(
      root, "description",
      "a3fta sweep results: one row per grid point in every dataset (see each dataset's "
      "description); status says which rows are valid",
      where));
  return A3_OK;
}

// A group with a "description" attribute; *out is the open group (close it)
// or H5I_INVALID_HID after a failure.
static a3_status make_group(creator *c, const char *name, const char *description, hid_t *out) {
  *out = H5Gcreate2(c->file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  char where[1100];
  snprintf(where, sizeof where, "create group /%s", name);
  if (*out < 0) return h5fail(c->path, where);
  snprintf(where, sizeof where, "%s: /%s", c->path, name);
  a3_status s = a3_h5_write_string_attr(*out, "description", description, where);
  if (s != A3_OK) {
    H5Gclose(*out);
    *out = H5I_INVALID_HID;
  }
  return s;
}

static a3_status create_main_datasets(creator *c) {
  const a3_results_layout *L = c->L;
  const hsize_t n = (hsize_t)L->n_points;
  const double nan = NAN;
  const int8_t zero8 = 0;
  const int32_t zero32 = 0;
  const int64_t zero64 = 0, minus1 = -1;
  const uint8_t black = 0;
  char empty_reason[A3_RESULT_REASON_MAX] = "";
  hid_t reason_t = fixed_string_type(A3_RESULT_REASON_MAX);
  const hsize_t d1[1] = {n}, dk[2] = {n, A3_RESULT_CURVE_MAX};
  const hsize_t ds5[5] = {n, (hsize_t)L->samples, (hsize_t)L->channels, (hsize_t)L->height,
                          (hsize_t)L->width};
  struct {
    hid_t type;
    int nd;
    const hsize_t *dims;
    const void *fill;
  } spec[N_DS] = {
      [DS_STATUS] = {H5T_STD_I8LE, 1, d1, &zero8},
      [DS_ATTEMPTS] = {H5T_STD_I32LE, 1, d1, &zero32},
      [DS_REASON] = {reason_t, 1, d1, empty_reason},
      [DS_FINAL_LOSS] = {H5T_IEEE_F64LE, 1, d1, &nan},
      [DS_LOSS_CURVE] = {H5T_IEEE_F64LE, 2, dk, &nan},
      [DS_LOSS_CURVE_STEP] = {H5T_STD_I64LE, 2, dk, &minus1},
      [DS_WALL] = {H5T_IEEE_F64LE, 1, d1, &nan},
      [DS_COMPUTE] = {H5T_IEEE_F64LE, 1, d1, &nan},
      [DS_PEAK_MEM] = {H5T_STD_I64LE, 1, d1, &zero64},
      [DS_N_SAMPLES] = {H5T_STD_I32LE, 1, d1, &zero32},
      [DS_SAMPLES] = {H5T_STD_U8LE, 5, ds5, &black},
  };
  a3_status s = A3_OK;
  for (int i = 0; i < N_DS && s == A3_OK; i++)
    s = make_dataset(c->file, ds_info[i].name, spec[i].type, spec[i].nd, spec[i].dims, spec[i].fill,
                     ds_info[i].description, c->path, NULL);
  H5Tclose(reason_t);
  A3_TRY(s);
  hid_t g = H5I_INVALID_HID;
  A3_TRY(make_group(c, "metrics",
                    "evaluation metrics, one float64 dataset per metric indexed by point; NaN = "
                    "not computed",
                    &g));
  for (int m = 0; m < A3_RESULT_N_METRICS && s == A3_OK; m++)
    s = make_dataset(g, a3_result_metric_name(m), H5T_IEEE_F64LE, 1, d1, &nan,
                     a3_result_metric_description(m), c->path, NULL);
  H5Gclose(g);
  return s;
}

static a3_status create_timing(creator *c) {
  const hsize_t n = (hsize_t)c->L->n_points;
  const hsize_t ranks = (hsize_t)(c->L->ranks_per_run > 0 ? c->L->ranks_per_run : 1);
  const hsize_t d1[1] = {n}, dr[2] = {n, ranks};
  const double nan = NAN;
  const int64_t zero64 = 0;
  hid_t g = H5I_INVALID_HID;
  a3_status s = make_group(
      c, "timing",
      "where each point's training time went, per rank of its group: compute vs waiting for "
      "communication inside the training steps, the steps counted, the group's load imbalance",
      &g);
  A3_TRY(s);
  for (int i = 0; i < N_TM && s == A3_OK; i++) {
    const bool steps = i == TM_STEPS || i == TM_GRAD_BYTES; // the int64 ones
    s = make_dataset(g, tm_info[i].name, steps ? H5T_STD_I64LE : H5T_IEEE_F64LE,
                     tm_info[i].per_rank ? 2 : 1, tm_info[i].per_rank ? dr : d1,
                     steps ? (const void *)&zero64 : (const void *)&nan, tm_info[i].description,
                     c->path, NULL);
  }
  H5Gclose(g);
  return s;
}

static a3_status create_extras(creator *c) {
  const double nan = NAN;
  const int64_t zero64 = 0, minus1 = -1;
  const uint8_t black = 0;
  const void *fill[N_EX] = {&zero64, &zero64, &nan, &minus1, &black, &nan, &nan};
  const hid_t type[N_EX] = {H5T_STD_I64LE, H5T_STD_I64LE,  H5T_IEEE_F64LE, H5T_STD_I64LE,
                            H5T_STD_U8LE,  H5T_IEEE_F64LE, H5T_IEEE_F64LE};
  hid_t g = H5I_INVALID_HID;
  a3_status s = make_group(c, "memorized",
                           "each point's most-memorized samples beside their nearest training "
                           "images, with the pixel distances of the memorization ratio test",
                           &g);
  if (g >= 0) H5Gclose(g);
  for (int i = 0; i < N_EX && s == A3_OK; i++) {
    hsize_t dims[5] = {(hsize_t)c->L->n_points};
    int nd = 1;
    while (nd < 5 && ex_info[i].dims[nd - 1] > 0) {
      dims[nd] = (hsize_t)ex_info[i].dims[nd - 1];
      nd++;
    }
    s = make_dataset(c->file, ex_info[i].name, type[i], nd, dims, fill[i], ex_info[i].description,
                     c->path, NULL);
  }
  return s;
}

// This rank's share [lo, hi) of n rows.
static void my_rows(const creator *c, int64_t n, int64_t *lo, int64_t *hi) {
  *lo = n * c->rank / c->size;
  *hi = n * (c->rank + 1) / c->size;
}

static a3_status write_configs(creator *c, hid_t points) {
  const a3_results_layout *L = c->L;
  const hsize_t d1[1] = {(hsize_t)L->n_points};
  hid_t type = fixed_string_type(L->config_len);
  char *fill = NULL;
  a3_status s = a3_alloc((void **)&fill, L->config_len, 1);
  hid_t ds = H5I_INVALID_HID;
  if (s == A3_OK)
    s = make_dataset(points, "config", type, 1, d1, fill,
                     "per point: the point's resolved config as YAML (what the run used)", c->path,
                     &ds);
  int64_t lo = 0, hi = 0;
  my_rows(c, L->n_points, &lo, &hi);
  char *buf = NULL;
  if (s == A3_OK && hi > lo) s = a3_alloc((void **)&buf, (size_t)(hi - lo) * L->config_len, 1);
  for (int64_t i = lo; i < hi && s == A3_OK; i++) {
    char *yaml = NULL;
    s = L->point_yaml(L->ctx, i, &yaml);
    if (s == A3_OK && strlen(yaml) >= L->config_len)
      s = A3_FAIL(A3_ERR_INTERNAL, "point %lld: config YAML of %zu bytes exceeds the %zu-byte slot",
                  (long long)i, strlen(yaml), L->config_len);
    if (s == A3_OK) memcpy(buf + (size_t)(i - lo) * L->config_len, yaml, strlen(yaml));
    free(yaml);
  }
  // Every rank joins the write, also after a local failure (with no rows),
  // so that a failure here cannot leave the others waiting.
  if (ds >= 0) {
    a3_status w = write_rows(ds, type, c->dxpl, lo, s == A3_OK ? hi - lo : 0, buf, c->path);
    if (s == A3_OK) s = w;
    H5Dclose(ds);
  }
  free(buf);
  free(fill);
  H5Tclose(type);
  return s;
}

static a3_status write_column(creator *c, hid_t points, const a3_result_column *col) {
  const a3_results_layout *L = c->L;
  const hsize_t d1[1] = {(hsize_t)L->n_points};
  int64_t lo = 0, hi = 0;
  my_rows(c, L->n_points, &lo, &hi);
  size_t len = 16;
  if (col->type == A3_RESULT_STRING)
    for (int64_t i = 0; i < L->n_points; i++)
      if (strlen(col->strings[i]) + 1 > len) len = strlen(col->strings[i]) + 1;
  hid_t type = col->type == A3_RESULT_INT64     ? H5Tcopy(H5T_STD_I64LE)
               : col->type == A3_RESULT_FLOAT64 ? H5Tcopy(H5T_IEEE_F64LE)
                                                : fixed_string_type(len);
  const int64_t zero = 0;
  const double nan = NAN;
  char *sbuf = NULL;
  a3_status s = col->type == A3_RESULT_STRING
                    ? a3_alloc((void **)&sbuf, (size_t)(hi - lo + 1) * len, 1)
                    : A3_OK;
  const void *fill = col->type == A3_RESULT_INT64     ? (const void *)&zero
                     : col->type == A3_RESULT_FLOAT64 ? (const void *)&nan
                                                      : (const void *)sbuf; // zeros
  char description[512];
  snprintf(description, sizeof description, "per point: value of the swept config key %s%s%s",
           col->key, col->description ? " - " : "", col->description ? col->description : "");
  hid_t ds = H5I_INVALID_HID;
  if (s == A3_OK) s = make_dataset(points, col->key, type, 1, d1, fill, description, c->path, &ds);
  if (s == A3_OK) {
    char where[1200];
    snprintf(where, sizeof where, "%s: /points/%s", c->path, col->key);
    s = a3_h5_write_string_attr(ds, "key", col->key, where);
  }
  const void *buf = NULL;
  if (s == A3_OK && col->type == A3_RESULT_STRING) {
    memset(sbuf, 0, (size_t)(hi - lo + 1) * len);
    for (int64_t i = lo; i < hi; i++)
      memcpy(sbuf + (size_t)(i - lo) * len, col->strings[i], strlen(col->strings[i]));
    buf = sbuf;
  } else if (col->type == A3_RESULT_INT64) {
    buf = col->ints + lo;
  } else if (col->type == A3_RESULT_FLOAT64) {
    buf = col->floats + lo;
  }
  if (ds >= 0) {
    a3_status w = write_rows(ds, type, c->dxpl, lo, s == A3_OK ? hi - lo : 0, buf, c->path);
    if (s == A3_OK) s = w;
    H5Dclose(ds);
  }
  free(sbuf);
  H5Tclose(type);
  return s;
}

static a3_status create_points(creator *c) {
  hid_t g = H5I_INVALID_HID;
  A3_TRY(make_group(c, "points",
                    "what each point is: its resolved config, and one typed dataset per swept key "
                    "(named by the key path)",
                    &g));
  a3_status s = write_configs(c, g);
  for (int i = 0; i < c->L->n_columns && s == A3_OK; i++) s = write_column(c, g, &c->L->columns[i]);
  H5Gclose(g);
  return s;
}

static a3_status create_file(creator *c, const char *tmp) {
  char created[32] = "";
  if (c->rank == 0) utc_now(created, sizeof created);
  MPI_Bcast(created, sizeof created, MPI_CHAR, 0, c->comm); // identical attribute on all ranks
  hid_t fapl = mpio_fapl(c->comm);
  H5Pset_all_coll_metadata_ops(fapl, 1);
  H5Pset_coll_metadata_write(fapl, 1);
  c->file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
  H5Pclose(fapl);
  if (c->file < 0)
    return A3_FAIL(A3_ERR_IO, "cannot create results file %s%s (is output.dir writable?)%s", tmp,
                   a3_h5_detail(), lock_hint());
  c->dxpl = collective_dxpl();
  a3_status s = write_root_attrs(c, created);
  if (s == A3_OK) s = create_main_datasets(c);
  if (s == A3_OK) s = create_timing(c);
  if (s == A3_OK) s = create_extras(c);
  if (s == A3_OK) s = create_points(c);
  if (s == A3_OK && H5Fflush(c->file, H5F_SCOPE_GLOBAL) < 0) s = h5fail(tmp, "flush");
  H5Pclose(c->dxpl);
  if (H5Fclose(c->file) < 0 && s == A3_OK) s = h5fail(tmp, "close");
  return s;
}

a3_status a3_results_create(MPI_Comm comm, const char *path, const a3_results_layout *layout) {
  a3_h5_quiet();
  creator c = {.comm = comm, .path = path, .L = layout};
  MPI_Comm_rank(comm, &c.rank);
  MPI_Comm_size(comm, &c.size);
  char tmp[4200];
  snprintf(tmp, sizeof tmp, "%s.partial", path);
  a3_status s = agree(comm, create_file(&c, tmp), "creating the results file");
  A3_TRY(s);
  if (c.rank == 0 && rename(tmp, path) != 0)
    s = A3_FAIL(A3_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
  A3_TRY(agree(comm, s, "renaming the results file into place"));
  return A3_OK;
}

// ---------------------------------------------------------------- inspecting
static a3_status read_whole(hid_t file, const char *name, hid_t memtype, int64_t n, void *buf,
                            const char *path) {
  hid_t ds = H5Dopen2(file, name, H5P_DEFAULT);
  if (ds < 0)
    return A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s is missing; is this an a3fta results file?", path,
                   name);
  hid_t space = H5Dget_space(ds);
  hsize_t dims[1] = {0};
  const int nd = H5Sget_simple_extent_ndims(space);
  H5Sget_simple_extent_dims(space, dims, NULL);
  H5Sclose(space);
  a3_status s = A3_OK;
  if (nd != 1 || (int64_t)dims[0] != n)
    s = A3_FAIL(A3_ERR_INPUT, "%s: /%s holds %lld points, the sweep has %lld", path, name,
                nd == 1 ? (long long)dims[0] : -1LL, (long long)n);
  else if (n > 0 && H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
    s = h5fail(path, "read the point statuses");
  H5Dclose(ds);
  return s;
}

static a3_status check_identity(hid_t f, const char *path, uint64_t sweep_hash) {
  char where[1100];
  snprintf(where, sizeof where, "%s: /", path);
  int has_format = 0;
  A3_TRY(a3_h5_attr_exists(f, "format", where, &has_format));
  if (!has_format)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s is not an a3fta results file (no 'format' attribute); use a new "
                   "output.dir or --force-new to replace it",
                   path);
  char *format = NULL, *hash = NULL;
  int64_t version = 0;
  A3_TRY(a3_h5_read_string_attr(f, "format", where, &format));
  a3_status s = A3_OK;
  if (strcmp(format, A3_RESULTS_FORMAT))
    s = A3_FAIL(A3_ERR_INPUT,
                "%s is an '%s' file, not an a3fta results file; use a new output.dir or "
                "--force-new to replace it",
                path, format);
  free(format);
  A3_TRY(s);
  A3_TRY(a3_h5_read_int_attr(f, "format_version", where, &version));
  if (version != A3_RESULTS_FORMAT_VERSION)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s has results format version %lld; this a3fta writes version %d (use a new "
                   "output.dir or --force-new)",
                   path, (long long)version, A3_RESULTS_FORMAT_VERSION);
  A3_TRY(a3_h5_read_string_attr(f, "sweep_hash", where, &hash));
  char mine[32];
  snprintf(mine, sizeof mine, "%016llx", (unsigned long long)sweep_hash);
  if (strcmp(hash, mine))
    s = A3_FAIL(A3_ERR_CONFIG,
                "%s: results file belongs to a different sweep (hash %s vs %s); use a new "
                "output.dir or --force-new",
                path, hash, mine);
  free(hash);
  return s;
}

static a3_status reset_running(hid_t f, const char *path, int64_t n, int8_t *status) {
  int any = 0;
  for (int64_t i = 0; i < n; i++)
    if (status[i] == A3_POINT_RUNNING) any = 1;
  if (!any) return A3_OK;
  // Only the status of running points changes; the rest are rewritten as they are.
  int8_t *fixed = NULL;
  A3_TRY(a3_alloc((void **)&fixed, (size_t)n, 1));
  for (int64_t i = 0; i < n; i++)
    fixed[i] = status[i] == A3_POINT_RUNNING ? A3_POINT_PENDING : status[i];
  hid_t ds = H5Dopen2(f, "status", H5P_DEFAULT);
  a3_status s = A3_OK;
  if (ds < 0 || H5Dwrite(ds, H5T_NATIVE_INT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, fixed) < 0)
    s = h5fail(path, "reset the status of points left running");
  if (ds >= 0) H5Dclose(ds);
  free(fixed);
  return s;
}

a3_status a3_results_inspect(const char *path, uint64_t sweep_hash, int64_t n_points, bool reset,
                             int8_t *status, int32_t *attempts) {
  a3_h5_quiet();
  htri_t is_h5 = H5Fis_hdf5(path);
  if (is_h5 <= 0)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s exists but is not a readable HDF5 file; use a new output.dir or "
                   "--force-new to replace it",
                   path);
  hid_t f = H5Fopen(path, reset ? H5F_ACC_RDWR : H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0)
    return A3_FAIL(A3_ERR_IO,
                   "cannot open results file %s%s (another job using it? set "
                   "HDF5_USE_FILE_LOCKING=FALSE on file systems without locks)",
                   path, a3_h5_detail());
  a3_status s = check_identity(f, path, sweep_hash);
  if (s == A3_OK) s = read_whole(f, "status", H5T_NATIVE_INT8, n_points, status, path);
  if (s == A3_OK) s = read_whole(f, "attempts", H5T_NATIVE_INT32, n_points, attempts, path);
  if (s == A3_OK && reset) s = reset_running(f, path, n_points, status);
  if (H5Fclose(f) < 0 && s == A3_OK) s = h5fail(path, "close");
  A3_TRY(s);
  return A3_OK;
}

// ---------------------------------------------------------------- writing
// /timing when the file has it (all of it: a partial group is an error).
static a3_status open_timing(a3_results *r) {
  const htri_t has = H5Lexists(r->file, "timing", H5P_DEFAULT);
  if (has < 0) return h5fail(r->path, "look for /timing");
  if (has == 0) return A3_OK;
  for (int i = 0; i < N_TM; i++) {
    char name[64];
    snprintf(name, sizeof name, "timing/%s", tm_info[i].name);
    r->timing[i] = H5Dopen2(r->file, name, H5P_DEFAULT);
    if (r->timing[i] < 0)
      return A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s is missing%s", r->path, name, a3_h5_detail());
  }
  hid_t space = H5Dget_space(r->timing[TM_COMPUTE]);
  hsize_t dims[2] = {0, 0};
  const int nd = H5Sget_simple_extent_ndims(space);
  if (nd == 2) H5Sget_simple_extent_dims(space, dims, NULL);
  H5Sclose(space);
  if (nd != 2 || dims[1] < 1)
    return A3_FAIL(A3_ERR_INPUT, "%s: /timing/compute_s is not (points, ranks)", r->path);
  r->timing_ranks = (int64_t)dims[1];
  return A3_OK;
}

// The datasets of ex_info the file has (each one's shape checked); rank 0 of
// the communicator warns once about those an older file lacks.
static a3_status open_extras(a3_results *r) {
  char missing[512] = "";
  size_t used = 0;
  const htri_t group = H5Lexists(r->file, "memorized", H5P_DEFAULT);
  if (group < 0) return h5fail(r->path, "look for /memorized");
  for (int i = 0; i < N_EX; i++) {
    const char *name = ex_info[i].name;
    htri_t has =
        group > 0 || strncmp(name, "memorized/", 10) ? H5Lexists(r->file, name, H5P_DEFAULT) : 0;
    if (has < 0)
      return A3_FAIL(A3_ERR_HDF5, "%s: cannot look for /%s%s", r->path, name, a3_h5_detail());
    if (has == 0) {
      const int w =
          snprintf(missing + used, sizeof missing - used, "%s/%s", used ? ", " : "", name);
      if (w > 0 && (size_t)w < sizeof missing - used) used += (size_t)w;
      continue;
    }
    r->extra[i] = H5Dopen2(r->file, name, H5P_DEFAULT);
    if (r->extra[i] < 0)
      return A3_FAIL(A3_ERR_INPUT, "%s: cannot open /%s%s", r->path, name, a3_h5_detail());
    hid_t space = H5Dget_space(r->extra[i]);
    hsize_t dims[8] = {0};
    const int nd = H5Sget_simple_extent_ndims(space);
    if (nd >= 1 && nd <= 8) H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    bool ok = nd >= 1 && nd <= 5 && (int64_t)dims[0] == r->n_points;
    int want = 1;
    while (want < 5 && ex_info[i].dims[want - 1] > 0) {
      if (ok && (want >= nd || (int64_t)dims[want] != ex_info[i].dims[want - 1])) ok = false;
      want++;
    }
    if (!ok || nd != want)
      return A3_FAIL(A3_ERR_INPUT,
                     "%s: /%s has another shape than this a3fta writes (see its "
                     "description); use a new output.dir or --force-new",
                     r->path, name);
  }
  int rank = 0;
  MPI_Comm_rank(r->comm, &rank);
  if (used && rank == 0)
    a3_warn("results file %s was written by an older a3fta and lacks %s: the points run now are "
            "recorded without them (a new output.dir or --force-new records everything)",
            r->path, missing);
  return A3_OK;
}

static a3_status open_all(a3_results *r) {
  for (int i = 0; i < N_DS; i++) {
    r->ds[i] = H5Dopen2(r->file, ds_info[i].name, H5P_DEFAULT);
    if (r->ds[i] < 0)
      return A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s is missing%s", r->path, ds_info[i].name,
                     a3_h5_detail());
  }
  for (int m = 0; m < A3_RESULT_N_METRICS; m++) {
    char name[128];
    snprintf(name, sizeof name, "metrics/%s", a3_result_metric_name(m));
    r->metrics[m] = H5Dopen2(r->file, name, H5P_DEFAULT);
    if (r->metrics[m] < 0)
      return A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s is missing%s", r->path, name, a3_h5_detail());
  }
  A3_TRY(open_timing(r));
  hid_t space = H5Dget_space(r->ds[DS_SAMPLES]);
  hsize_t dims[5] = {0};
  if (H5Sget_simple_extent_ndims(space) != 5) {
    H5Sclose(space);
    return A3_FAIL(A3_ERR_INPUT, "%s: /samples is not 5-dimensional", r->path);
  }
  H5Sget_simple_extent_dims(space, dims, NULL);
  H5Sclose(space);
  r->n_points = (int64_t)dims[0];
  r->sample_elems = (int64_t)(dims[1] * dims[2] * dims[3] * dims[4]);
  hid_t type = H5Dget_type(r->ds[DS_REASON]);
  r->reason_len = H5Tget_size(type);
  H5Tclose(type);
  A3_TRY(open_extras(r));
  return A3_OK;
}

static void free_handles(a3_results *r) {
  for (int i = 0; i < N_DS; i++)
    if (r->ds[i] >= 0) H5Dclose(r->ds[i]);
  for (int m = 0; m < A3_RESULT_N_METRICS; m++)
    if (r->metrics[m] >= 0) H5Dclose(r->metrics[m]);
  for (int i = 0; i < N_TM; i++)
    if (r->timing[i] >= 0) H5Dclose(r->timing[i]);
  for (int i = 0; i < N_EX; i++)
    if (r->extra[i] >= 0) H5Dclose(r->extra[i]);
  if (r->dxpl >= 0) H5Pclose(r->dxpl);
  for (int i = 0; i < N_DS; i++) r->ds[i] = H5I_INVALID_HID;
  for (int i = 0; i < N_TM; i++) r->timing[i] = H5I_INVALID_HID;
  for (int i = 0; i < N_EX; i++) r->extra[i] = H5I_INVALID_HID;
  for (int m = 0; m < A3_RESULT_N_METRICS; m++) r->metrics[m] = H5I_INVALID_HID;
  r->dxpl = H5I_INVALID_HID;
}

a3_status a3_results_open(MPI_Comm comm, const char *path, a3_results **out) {
  a3_h5_quiet();
  *out = NULL;
  a3_results *r = NULL;
  A3_TRY(A3_ALLOC(r, 1));
  r->file = r->dxpl = H5I_INVALID_HID;
  for (int i = 0; i < N_DS; i++) r->ds[i] = H5I_INVALID_HID;
  for (int m = 0; m < A3_RESULT_N_METRICS; m++) r->metrics[m] = H5I_INVALID_HID;
  for (int i = 0; i < N_TM; i++) r->timing[i] = H5I_INVALID_HID;
  for (int i = 0; i < N_EX; i++) r->extra[i] = H5I_INVALID_HID;
  r->fd = -1;
  a3_status s = a3_alloc((void **)&r->path, strlen(path) + 1, 1);
  if (s == A3_OK) memcpy(r->path, path, strlen(path) + 1);
  MPI_Comm_dup(comm, &r->comm);
  if (s == A3_OK) {
    hid_t fapl = mpio_fapl(r->comm);
    r->file = H5Fopen(path, H5F_ACC_RDWR, fapl);
    H5Pclose(fapl);
    if (r->file < 0)
      s = A3_FAIL(A3_ERR_IO, "cannot open results file %s for writing%s%s", path, a3_h5_detail(),
                  lock_hint());
  }
  if (s == A3_OK) s = open_all(r);
  if (s == A3_OK) {
    r->dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(r->dxpl, H5FD_MPIO_INDEPENDENT);
  }
  s = agree(r->comm, s, "opening the results file");
  if (s != A3_OK) {
    free_handles(r);
    if (r->file >= 0) H5Fclose(r->file); // every rank that opened it closes it
    MPI_Comm_free(&r->comm);
    free(r->path);
    free(r);
    A3_TRY(s);
  }
  *out = r;
  return A3_OK;
}

int64_t a3_results_n_points(const a3_results *r) { return r->n_points; }

static a3_status check_point(const a3_results *r, int64_t point) {
  if (point < 0 || point >= r->n_points)
    return A3_FAIL(A3_ERR_INTERNAL, "point %lld outside the results file's 0..%lld",
                   (long long)point, (long long)r->n_points - 1);
  return A3_OK;
}

static a3_status put(a3_results *r, hid_t ds, hid_t memtype, int64_t point, const void *buf) {
  return write_rows(ds, memtype, r->dxpl, point, 1, buf, r->path);
}

// Data reaches the disk before the status that declares it valid.
static a3_status sync_data(a3_results *r) {
  if (r->fd < 0) r->fd = open(r->path, O_RDONLY);
  if (r->fd < 0) return A3_FAIL(A3_ERR_IO, "cannot open %s: %s", r->path, strerror(errno));
  if (fdatasync(r->fd) != 0 && errno != EINVAL && errno != EROFS)
    return A3_FAIL(A3_ERR_IO, "cannot sync %s: %s", r->path, strerror(errno));
  return A3_OK;
}

a3_status a3_results_mark_running(a3_results *r, int64_t point, int32_t attempts) {
  A3_TRY(check_point(r, point));
  const int8_t running = A3_POINT_RUNNING;
  A3_TRY(put(r, r->ds[DS_ATTEMPTS], H5T_NATIVE_INT32, point, &attempts));
  A3_TRY(put(r, r->ds[DS_STATUS], H5T_NATIVE_INT8, point, &running));
  return A3_OK;
}

// The point's /timing row (nothing in a file without /timing): per-rank
// columns from rank_compute_s / rank_comm_s, NaN beyond the n_ranks given.
static a3_status write_timing(a3_results *r, int64_t point, const a3_run_result *res) {
  if (r->timing[TM_COMPUTE] < 0) return A3_OK;
  const int64_t R = r->timing_ranks;
  double *row = NULL;
  A3_TRY(a3_alloc((void **)&row, (size_t)(2 * R), sizeof *row));
  for (int64_t k = 0; k < R; k++) {
    const bool have = k < res->n_ranks;
    row[k] = have && res->rank_compute_s ? res->rank_compute_s[k] : NAN;
    row[R + k] = have && res->rank_comm_s ? res->rank_comm_s[k] : NAN;
  }
  a3_status s = put(r, r->timing[TM_COMPUTE], H5T_NATIVE_DOUBLE, point, row);
  if (s == A3_OK) s = put(r, r->timing[TM_COMM], H5T_NATIVE_DOUBLE, point, row + R);
  free(row);
  A3_TRY(s);
  const int64_t steps = res->steps > 0 ? res->steps : 0;
  A3_TRY(put(r, r->timing[TM_STEPS], H5T_NATIVE_INT64, point, &steps));
  const int64_t bytes = res->grad_bytes > 0 ? res->grad_bytes : 0;
  A3_TRY(put(r, r->timing[TM_GRAD_BYTES], H5T_NATIVE_INT64, point, &bytes));
  A3_TRY(put(r, r->timing[TM_IDLE], H5T_NATIVE_DOUBLE, point, &res->idle_s));
  return A3_OK;
}

// The point's parameter counts, held-out curve and memorized pairs (each
// skipped where an older file lacks it).
static a3_status put_extra(a3_results *r, int which, hid_t memtype, int64_t point,
                           const void *buf) {
  if (r->extra[which] < 0) return A3_OK;
  return put(r, r->extra[which], memtype, point, buf);
}

static a3_status write_extras(a3_results *r, int64_t point, const a3_run_result *res) {
  const int64_t trainable = res->trainable_params > 0 ? res->trainable_params : 0;
  const int64_t total = res->total_params > 0 ? res->total_params : 0;
  A3_TRY(put_extra(r, EX_TRAINABLE, H5T_NATIVE_INT64, point, &trainable));
  A3_TRY(put_extra(r, EX_TOTAL, H5T_NATIVE_INT64, point, &total));
  double curve[A3_RESULT_CURVE_MAX];
  int64_t steps[A3_RESULT_CURVE_MAX];
  for (int k = 0; k < A3_RESULT_CURVE_MAX; k++) {
    const int used = k < res->n_heldout;
    curve[k] = used ? res->heldout_loss[k] : NAN;
    steps[k] = used ? res->heldout_step[k] : -1;
  }
  A3_TRY(put_extra(r, EX_HELDOUT, H5T_NATIVE_DOUBLE, point, curve));
  A3_TRY(put_extra(r, EX_HELDOUT_STEP, H5T_NATIVE_INT64, point, steps));
  static const uint8_t none[sizeof res->memorized[0]]; // zeros
  uint8_t *pairs = NULL;
  A3_TRY(a3_alloc((void **)&pairs, 1, sizeof res->memorized));
  double d1[MEMO_M], d2[MEMO_M];
  for (int k = 0; k < MEMO_M; k++) {
    const int used = k < res->n_memorized;
    memcpy(pairs + k * sizeof none, used ? res->memorized[k][0] : none, sizeof none);
    d1[k] = used ? res->memorized_d1[k] : NAN;
    d2[k] = used ? res->memorized_d2[k] : NAN;
  }
  a3_status s = put_extra(r, EX_PAIRS, H5T_NATIVE_UINT8, point, pairs);
  free(pairs);
  A3_TRY(s);
  A3_TRY(put_extra(r, EX_D1, H5T_NATIVE_DOUBLE, point, d1));
  A3_TRY(put_extra(r, EX_D2, H5T_NATIVE_DOUBLE, point, d2));
  return A3_OK;
}

a3_status a3_results_write_point(a3_results *r, int64_t point, const a3_run_result *res) {
  A3_TRY(check_point(r, point));
  const int8_t status = a3_point_failed(res->status) ? (int8_t)res->status : A3_POINT_DONE;
  char reason[A3_RESULT_REASON_MAX];
  memset(reason, 0, sizeof reason);
  if (a3_point_failed(status))
    snprintf(reason, sizeof reason, "%s", res->reason[0] ? res->reason : "failed (no reason)");
  hid_t reason_t = fixed_string_type(r->reason_len);
  a3_status s = r->reason_len == sizeof reason
                    ? put(r, r->ds[DS_REASON], reason_t, point, reason)
                    : A3_FAIL(A3_ERR_INPUT, "%s: /reason has %zu-byte strings, expected %d",
                              r->path, r->reason_len, A3_RESULT_REASON_MAX);
  H5Tclose(reason_t);
  A3_TRY(s);
  double curve[A3_RESULT_CURVE_MAX];
  int64_t steps[A3_RESULT_CURVE_MAX];
  for (int k = 0; k < A3_RESULT_CURVE_MAX; k++) {
    const int used = k < res->n_curve;
    curve[k] = used ? res->curve_loss[k] : NAN;
    steps[k] = used ? res->curve_step[k] : -1;
  }
  const int32_t n_samples = res->samples ? res->n_samples : 0;
  A3_TRY(put(r, r->ds[DS_FINAL_LOSS], H5T_NATIVE_DOUBLE, point, &res->final_loss));
  A3_TRY(put(r, r->ds[DS_LOSS_CURVE], H5T_NATIVE_DOUBLE, point, curve));
  A3_TRY(put(r, r->ds[DS_LOSS_CURVE_STEP], H5T_NATIVE_INT64, point, steps));
  A3_TRY(put(r, r->ds[DS_WALL], H5T_NATIVE_DOUBLE, point, &res->wall_s));
  A3_TRY(put(r, r->ds[DS_COMPUTE], H5T_NATIVE_DOUBLE, point, &res->compute_s));
  A3_TRY(put(r, r->ds[DS_PEAK_MEM], H5T_NATIVE_INT64, point, &res->peak_mem_bytes));
  for (int m = 0; m < A3_RESULT_N_METRICS; m++)
    A3_TRY(put(r, r->metrics[m], H5T_NATIVE_DOUBLE, point, &res->metrics[m]));
  A3_TRY(put(r, r->ds[DS_N_SAMPLES], H5T_NATIVE_INT32, point, &n_samples));
  A3_TRY(write_timing(r, point, res));
  A3_TRY(write_extras(r, point, res));
  if (r->sample_elems > 0) {
    const int64_t have = (int64_t)res->samples_cap * res->channels * res->height * res->width;
    if (!res->samples || have != r->sample_elems)
      return A3_FAIL(A3_ERR_INTERNAL,
                     "point %lld: sample buffer of %lld bytes, the file wants %lld",
                     (long long)point, (long long)have, (long long)r->sample_elems);
    A3_TRY(put(r, r->ds[DS_SAMPLES], H5T_NATIVE_UINT8, point, res->samples));
  }
  A3_TRY(sync_data(r));
  A3_TRY(put(r, r->ds[DS_STATUS], H5T_NATIVE_INT8, point, &status));
  A3_TRY(sync_data(r));
  return A3_OK;
}

a3_status a3_results_sync(a3_results *r) {
  a3_status s = A3_OK;
  if (H5Fflush(r->file, H5F_SCOPE_GLOBAL) < 0) s = h5fail(r->path, "flush");
  MPI_Barrier(r->comm);
  return agree(r->comm, s, "flushing the results file");
}

a3_status a3_results_read_status(a3_results *r, int8_t *status) {
  if (r->n_points == 0) return A3_OK;
  if (H5Dread(r->ds[DS_STATUS], H5T_NATIVE_INT8, H5S_ALL, H5S_ALL, r->dxpl, status) < 0)
    return h5fail(r->path, "read /status");
  return A3_OK;
}

a3_status a3_results_close(a3_results *r) {
  if (!r) return A3_OK;
  free_handles(r);
  a3_status s = A3_OK;
  if (H5Fclose(r->file) < 0) s = h5fail(r->path, "close");
  if (r->fd >= 0) close(r->fd);
  s = agree(r->comm, s, "closing the results file");
  MPI_Comm_free(&r->comm);
  free(r->path);
  free(r);
  return s;
}
