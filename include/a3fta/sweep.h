// a3fta sweeps: the points of a config's sweep section, run across groups of
// MPI ranks, with every outcome gathered in one parallel-HDF5 results file
// (a3fta/results.h) that is also the resume state.
//
// Points. sweep.grid axes (one key each) and the sweep.zip tuple (its keys
// advance together: one axis, placed where its first key is in schema order)
// are combined as a cartesian product, axes in schema order of their keys,
// the last axis varying fastest; then each entry of sweep.points is one more
// point. With no grid, no zip and no points the sweep is the config alone.
// Point i's config = the config without its sweep section, plus the point's
// assignments (a3_config_set, in schema order), plus output.dir =
// "<output.dir>/point-<i, 6 digits>" (its own folder for checkpoints and
// logs), then a3_config_validate. Every point is built and checked before
// anything runs; an invalid point is A3_ERR_CONFIG naming its index, its
// assignments and the key. output.dir, parallel.ranks_per_run and
// parallel.schedule cannot be swept, and every point must store samples of
// one shape (output.samples_per_run, model.arch.in_channels, sample_size).
//
// Hashes. sweep_hash (stored in the results file) is FNV-1a over the
// canonical YAML of every point config, in order, with output.dir,
// parallel.schedule and parallel.nccl_timeout_s reset to fixed values (they
// do not change results: a sweep may move or change schedule and resume),
// then ranks_per_run (int64 little-endian). agree_hash covers the config as
// given (sweep section included), every full point YAML and ranks_per_run:
// all ranks must hold the same one before anything collective happens.
//
// Ranks. The world is split into world_size / ranks_per_run groups of
// consecutive ranks (an error unless it divides); group rank 0 is the
// leader. Every rank of a group calls the run function with the same point
// config and the group's communicator; the leader's result is recorded
// (status: failed or diverged if the run was on any rank of the group, with
// that rank's status and reason; wall_s and peak_mem_bytes: the group's maximum).
//
// Scheduling. Before anything runs, world rank 0 reads the results file and
// every rank receives the same list of pending points: not done, and not
// failed A3_RESULT_MAX_ATTEMPTS times, and not diverged (points left running
// count as pending). `dynamic`: leaders take the next pending point from a counter in
// an MPI window on world rank 0 (MPI_Fetch_and_op under a shared passive-
// target lock; rank 0 runs points like every other rank) and broadcast it to
// their group; the list is ordered longest first (estimated cost
// train.steps x train.batch_size, ties by index), so that a long point does
// not start last and leave the other groups idle. `static`: group g runs pending points g, g + G, g
// + 2G, ...
//
// Stopping. SIGTERM and SIGUSR1 (with handle_signals), or
// a3_sweep_request_stop() on any rank, raise a flag; each group checks it
// before taking a point, publishes it to all leaders through the window, and
// stops after finishing its current point. The file is then closed
// collectively and a3_sweep_run returns A3_OK with summary.interrupted set;
// rerunning the same command resumes.
#ifndef A3FTA_SWEEP_H
#define A3FTA_SWEEP_H

#include "a3fta/config.h"
#include "a3fta/core.h"
#include "a3fta/results.h" // a3_run_result, a3_point_status, metric slots

#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>

// Trains (and evaluates) one point on the ranks of `group` (collective over
// it). Fills `result` (already initialised by a3_run_result_init, inputs
// set). A returned failure marks the point failed with the error message as
// reason, exactly like result->status = A3_POINT_FAILED with a reason
// (A3_ERR_DIVERGED: A3_POINT_DIVERGED, which is never retried); the sweep
// goes on either way.
typedef a3_status (*a3_run_fn)(const a3_config *point_cfg, MPI_Comm group, a3_run_result *result,
                               void *ctx);

// ---------------------------------------------------------------- points
enum { A3_SWEEP_MAX_POINTS = 10000000 };

typedef struct a3_sweep_axis_ref a3_sweep_axis_ref; // private

typedef struct {
  int64_t n_points; // n_combos grid x zip combinations, then the sweep.points entries
  int64_t n_combos;
  int n_varied;                                         // keys that vary, schema order
  char varied[A3_CONFIG_SCHEMA_MAX][A3_CONFIG_KEY_MAX]; // their key paths
  a3_result_column *columns;                            // n_varied: typed values per point
  int samples, channels, height, width;                 // shape of each point's samples
  size_t config_len;   // bytes of a /points/config slot (longest point YAML + 1, rounded up)
  int64_t total_steps; // sum of train.steps over the points (the work estimate)
  int ranks_per_run;
  a3_schedule schedule;
  uint64_t sweep_hash; // identifies the sweep's results (see above)
  uint64_t agree_hash; // what all ranks must share
  char *base_yaml;     // the config as given, sweep section included
  // private
  a3_config source; // the config as given (owns the sweep lists)
  a3_config base;   // the same without its sweep section
  a3_sweep_axis_ref *axes;
  int n_axes;
} a3_sweep_plan;

// Expands and validates every point, computes the columns and hashes (local:
// no MPI). *out is freed with a3_sweep_plan_free.
a3_status a3_sweep_plan_make(const a3_config *cfg, a3_sweep_plan **out) A3_WARN_UNUSED;
void a3_sweep_plan_free(a3_sweep_plan *p); // NULL is fine
// Point i's resolved config; *out owns nothing beforehand (a3_config_free it).
a3_status a3_sweep_point_config(const a3_sweep_plan *p, int64_t i, a3_config *out) A3_WARN_UNUSED;
// Point i's assignments as text, "train.lr=0.0001, train.seed=1" ("" for none).
void a3_sweep_point_label(const a3_sweep_plan *p, int64_t i, char *buf, size_t size);

// ---------------------------------------------------------------- groups
// Collective: checks that every rank holds the same sweep (status `local`
// and hash agree), else every rank returns an error (A3_ERR_CONFIG for a
// hash mismatch) and none hangs.
a3_status a3_sweep_agree(MPI_Comm world, a3_status local, uint64_t hash) A3_WARN_UNUSED;

// Collective: groups of ranks_per_run consecutive ranks. *group is freed
// with MPI_Comm_free.
a3_status a3_sweep_split(MPI_Comm world, int ranks_per_run, MPI_Comm *group, int *group_index,
                         int *n_groups) A3_WARN_UNUSED;

// ---------------------------------------------------------------- running
typedef struct {
  a3_run_fn run;
  void *ctx;
  const char *results_path; // NULL: <output.dir>/results.h5
  bool force_new;           // replace an existing results file (of any sweep)
  bool retry_failed;        // also run failed points started A3_RESULT_MAX_ATTEMPTS
                            // times, and diverged ones (after a fix of their cause)
  bool handle_signals;      // SIGTERM/SIGUSR1 request a stop while the sweep runs
  // A slice of the points (job arrays): with slice_count > 0 this invocation
  // runs only the points i with i % slice_count == slice_index (0 <= index <
  // count), in a results file of the whole sweep's layout (the other points
  // stay pending there); a3fta merge combines the slices' files. 0: all.
  int64_t slice_index, slice_count;
  // Why this rank can run no more points (a GPU whose CUDA context a sticky
  // error broke: every later point would fail at once), or NULL; asked after
  // each point. NULL function: never. A group with such a rank takes no more
  // points; the others go on, and a3_sweep_run then fails (A3_ERR_CUDA)
  // naming rank, host and reason, the points not run left pending.
  const char *(*lost)(void);
} a3_sweep_options;

typedef struct {
  int64_t n_points;
  int64_t n_selected;            // points of the slice (n_points without a slice)
  int64_t done, failed, pending; // statuses of the selected points in the results file at
                                 // the end (pending: neither done nor failed); a rerun
                                 // retries failed points started fewer than
                                 // A3_RESULT_MAX_ATTEMPTS times
  int64_t diverged;              // of the failed: diverged ones (never retried)
  int64_t done_before;           // points already done when this invocation started
  int64_t ran;                   // points this invocation ran, all groups
  bool interrupted;              // a stop was requested and selected points remain
  double seconds;
  char results_path[A3_CONFIG_STR_MAX + 32];
} a3_sweep_summary;

// The whole sweep, collective over world: plan, agreement, groups, results
// file (created, or checked and resumed), scheduling, the runs, collective
// close. Rank 0 logs the plan and each leader a progress line per point.
a3_status a3_sweep_run(MPI_Comm world, const a3_config *cfg, const a3_sweep_options *opt,
                       a3_sweep_summary *summary) A3_WARN_UNUSED;

// The stop flag (async-signal-safe to raise). It stays raised until cleared.
void a3_sweep_request_stop(void);
bool a3_sweep_stop_requested(void);
void a3_sweep_clear_stop(void);

#endif
