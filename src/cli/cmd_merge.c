// a3fta merge: the results files of a sweep's slices (job-array tasks, each
// 'a3fta sweep --slice I/N') combined into one (a3_results_merge).
#include "a3fta/results.h"
#include "cli/commands.h"
#include "cli/options.h"

#include <mpi.h>
#include <stdio.h>

a3_status a3_cmd_merge(int argc, char **argv) {
  int force = 0;
  const a3_cli_option options[] = {
      {"force", 'f', A3_OPT_FLAG, NULL, "replace OUT.h5 if it exists", &force, 0, 0},
  };
  const a3_cli_command cmd = {
      "merge",
      "OUT.h5 IN.h5... [--force]",
      "Combine the results files of one sweep's slices into one results file.",
      "The inputs are the files of 'a3fta sweep --slice I/N' (one per job-array task,\n"
      "OUTPUT_DIR/results-slice-I-of-N.h5; jobs/sweep-array.sbatch). OUT.h5 gets every\n"
      "dataset of a single sweep's results file, each point's row taken from the input\n"
      "that ran the point; points no input ran stay pending, so 'a3fta sweep' on OUT.h5's\n"
      "folder (as results.h5) resumes them.\n"
      "\n"
      "The inputs must come from the same sweep (root attribute sweep_hash), have the same\n"
      "datasets, shapes and types, and cover disjoint points; each error names the file and\n"
      "dataset (exit 2). Runs on one process (under mpirun, rank 0 merges).",
      options,
      (int)(sizeof options / sizeof options[0]),
      2,
      A3_CLI_POSITIONAL_MAX};
  a3_cli_args args;
  A3_TRY(a3_cli_parse(&cmd, argc, argv, &args));
  if (args.help_requested) return A3_OK;
  A3_TRY(a3_cli_start_mpi());
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  // Only rank 0 merges and reports; the others end quietly (the exit code is agreed).
  if (rank != 0) return A3_OK;
  a3_merge_summary sum;
  A3_TRY(a3_results_merge(args.positional[0], &args.positional[1], args.n_positional - 1,
                          force != 0, &sum));
  char diverged[48] = "";
  if (sum.diverged)
    snprintf(diverged, sizeof diverged, " (%lld diverged)", (long long)sum.diverged);
  a3_info("merged %d file%s into %s: %lld points, %lld done, %lld failed%s, %lld pending (%lld "
          "run by no input)",
          args.n_positional - 1, args.n_positional == 2 ? "" : "s", args.positional[0],
          (long long)sum.n_points, (long long)sum.done, (long long)sum.failed, diverged,
          (long long)sum.pending, (long long)sum.not_started);
  if (sum.pending)
    a3_warn("%lld of %lld points are not done in %s: run the missing slices and merge again, or "
            "rename it to OUTPUT_DIR/results.h5 and run 'a3fta sweep' to finish them",
            (long long)sum.pending, (long long)sum.n_points, args.positional[0]);
  return A3_OK;
}
