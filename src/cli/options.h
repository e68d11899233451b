// Command-line option tables: each command declares its options once, and
// both the parser and its --help text are generated from that table, so the
// help cannot drift from what is accepted.
#ifndef A3FTA_CLI_OPTIONS_H
#define A3FTA_CLI_OPTIONS_H

#include "a3fta/core.h"

#include <stdbool.h>
#include <stdio.h>

typedef enum {
  A3_OPT_FLAG,   // int target set to 1
  A3_OPT_STRING, // const char * target (points into argv)
  A3_OPT_INT,    // long target, checked range [min, max]
  A3_OPT_LIST,   // repeatable string: target is an a3_cli_list
} a3_opt_kind;

enum { A3_CLI_LIST_MAX = 64 };
typedef struct {
  const char *items[A3_CLI_LIST_MAX];
  int count;
} a3_cli_list;

typedef struct {
  const char *long_name; // "out" for --out
  char short_name;       // 'o' for -o, or 0
  a3_opt_kind kind;
  const char *metavar; // "FILE"
  const char *help;
  void *target;
  long min, max; // for A3_OPT_INT
} a3_cli_option;

typedef struct {
  const char *name;        // "import"
  const char *usage;       // "fashion-mnist --out FILE [--source DIR]"
  const char *summary;     // one line for the command list
  const char *description; // paragraph(s) for --help, may be NULL
  const a3_cli_option *options;
  int n_options;
  int min_positional, max_positional;
} a3_cli_command;

enum { A3_CLI_POSITIONAL_MAX = 1024 }; // a3fta merge takes one input per array task
typedef struct {
  const char *positional[A3_CLI_POSITIONAL_MAX];
  int n_positional;
  int help_requested; // --help / -h seen: help was printed, the caller returns A3_OK
} a3_cli_args;

// Parses argv (argv[0] is the command name). Usage errors are A3_ERR_USAGE
// with a message naming the offending argument and pointing at --help.
a3_status a3_cli_parse(const a3_cli_command *cmd, int argc, char **argv, a3_cli_args *out);

// --backend NAME of `command` (auto, cpu or cuda) as an a3_backend_kind in
// *kind; *set = false when name is NULL (the option was not given).
// A3_ERR_USAGE naming the choices otherwise.
a3_status a3_cli_backend(const char *command, const char *name, bool *set, int *kind);
void a3_cli_print_help(const a3_cli_command *cmd, FILE *f);

#endif
