// The run function a3fta sweep gives the sweep engine (a3fta/sweep.h).
#ifndef A3FTA_CLI_SWEEP_POINT_H
#define A3FTA_CLI_SWEEP_POINT_H

#include "a3fta/config.h"
#include "a3fta/results.h"

#include <mpi.h>
#include <stdbool.h>

typedef struct {
  bool samples; // draw output.samples_per_run images per point into the results
  bool eval;    // evaluate each point (eval.metrics) into its /metrics slots
} a3_sweep_point_options;

// An a3_run_fn (ctx: a3_sweep_point_options): trains the point in its
// output.dir (resuming from its checkpoint when the folder's config.yaml is
// this point's, i.e. an earlier attempt), fills the loss curves, held-out
// losses and parameter counts from its losses.csv, evaluates it (ctx->eval),
// stores its samples (ctx->samples) and removes its checkpoint when
// output.save_weights is false. A diverged run returns A3_ERR_DIVERGED; a
// failed evaluation marks the point failed and keeps its checkpoint.
// Collective over group.
a3_status a3_sweep_train_point(const a3_config *pc, MPI_Comm group, a3_run_result *r,
                               void *ctx) A3_WARN_UNUSED;

#endif
