// a3fta info FILE: recognise the file by its root `format` attribute and
// summarise it. Datasets only so far; checkpoints and results come later.
#include "a3fta/dataset.h"
#include "cli/commands.h"
#include "cli/options.h"

#include <string.h>

// Rank 0 looks at the file alone (no MPI-IO) and tells the others, so that a
// wrong file gives one message, not one per rank.
static a3_status check_kind(const char *path, int rank) {
  a3_status s = A3_OK;
  if (rank == 0) {
    char format[256];
    s = a3_file_format(path, format, sizeof format);
    if (s == A3_OK && !format[0])
      s = A3_FAIL(A3_ERR_INPUT,
                  "%s: not an a3fta dataset (no 'format' attribute); a3fta info reads datasets "
                  "(checkpoints and results come later)",
                  path);
    else if (s == A3_OK && strcmp(format, A3_DATASET_FORMAT))
      s = A3_FAIL(A3_ERR_INPUT,
                  "%s: format '%s' is not one a3fta info reads yet; it reads datasets "
                  "(format '%s')",
                  path, format, A3_DATASET_FORMAT);
  }
  int code = (int)s;
  MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return rank == 0 ? s : (a3_status)code;
}

a3_status a3_cmd_info(int argc, char **argv) {
  const a3_cli_command cmd = {
      "info",
      "FILE",
      "Summarise an a3fta file (datasets; checkpoints and results later).",
      "For a dataset: its source, classes, and per split the image count and shape, pixel\n"
      "mean and standard deviation (a parallel read when run under mpirun) and the number of\n"
      "images of each class. Printed to stdout by rank 0.",
      NULL,
      0,
      1,
      1};
  a3_cli_args args;
  A3_TRY(a3_cli_parse(&cmd, argc, argv, &args));
  if (args.help_requested) return A3_OK;
  const char *path = args.positional[0];
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  // Only rank 0 reports a wrong file; the others end quietly (exit code is agreed).
  const a3_status kind = check_kind(path, rank);
  if (kind != A3_OK && rank != 0) return A3_OK;
  A3_TRY(kind);
  a3_dataset *ds = NULL;
  A3_TRY(a3_dataset_open(MPI_COMM_WORLD, path, &ds));
  const a3_status s = a3_dataset_print_summary(ds, stdout);
  a3_dataset_close(ds);
  A3_TRY(s);
  return A3_OK;
}
