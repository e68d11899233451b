// The a3fta subcommands. Each takes argv with argv[0] = the command name
// (global flags such as --verbose already removed) and returns a status that
// main() turns into the exit code. A command that opens datasets (MPI-IO) or
// talks to other ranks starts MPI itself, once its options are parsed.
#ifndef A3FTA_CLI_COMMANDS_H
#define A3FTA_CLI_COMMANDS_H

#include "a3fta/core.h"

a3_status a3_cmd_import(int argc, char **argv); // src/cli/cmd_import.c
a3_status a3_cmd_info(int argc, char **argv);   // src/cli/cmd_info.c
a3_status a3_cmd_config(int argc, char **argv); // src/cli/cmd_config.c
a3_status a3_cmd_train(int argc, char **argv);  // src/cli/cmd_train.c
a3_status a3_cmd_sample(int argc, char **argv); // src/cli/cmd_sample.c
a3_status a3_cmd_sweep(int argc, char **argv);  // src/cli/cmd_sweep.c
a3_status a3_cmd_export(int argc, char **argv); // src/cli/cmd_export.c
a3_status a3_cmd_eval(int argc, char **argv);   // src/cli/cmd_eval.c
a3_status a3_cmd_merge(int argc, char **argv);  // src/cli/cmd_merge.c

// A command that succeeded may ask for another exit code than 0 (3..125:
// a3fta sweep --interrupted-exit). Every rank must ask for the same one.
void a3_cli_request_exit_code(int code); // src/cli/main.c

// Starts MPI (MPI_Init_thread, the world's checks) unless started already:
// every rank, after parsing its options and before any MPI or HDF5 call.
// main() finishes it. src/cli/main.c
a3_status a3_cli_start_mpi(void) A3_WARN_UNUSED;

#endif
