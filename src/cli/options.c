// Table-driven option parsing and help printing.
#include "cli/options.h"

#include <errno.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

static const a3_cli_option *find_long(const a3_cli_command *cmd, const char *name, size_t len) {
  for (int i = 0; i < cmd->n_options; i++)
    if (strlen(cmd->options[i].long_name) == len && !strncmp(cmd->options[i].long_name, name, len))
      return &cmd->options[i];
  return NULL;
}

static const a3_cli_option *find_short(const a3_cli_command *cmd, char c) {
  for (int i = 0; i < cmd->n_options; i++)
    if (cmd->options[i].short_name == c) return &cmd->options[i];
  return NULL;
}

static a3_status store_value(const a3_cli_command *cmd, const a3_cli_option *opt,
                             const char *value) {
  switch (opt->kind) {
  case A3_OPT_FLAG: *(int *)opt->target = 1; return A3_OK;
  case A3_OPT_STRING: *(const char **)opt->target = value; return A3_OK;
  case A3_OPT_INT: {
    char *end = NULL;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (errno || end == value || *end || v < opt->min || v > opt->max)
      return A3_FAIL(A3_ERR_USAGE, "a3fta %s: --%s expects an integer in [%ld, %ld], got '%s'",
                     cmd->name, opt->long_name, opt->min, opt->max, value);
    *(long *)opt->target = v;
    return A3_OK;
  }
  case A3_OPT_LIST: {
    a3_cli_list *list = opt->target;
    if (list->count >= A3_CLI_LIST_MAX)
      return A3_FAIL(A3_ERR_USAGE, "a3fta %s: --%s given more than %d times", cmd->name,
                     opt->long_name, A3_CLI_LIST_MAX);
    list->items[list->count++] = value;
    return A3_OK;
  }
  }
  return A3_FAIL(A3_ERR_INTERNAL, "unknown option kind");
}

// Handles argv[*i] which starts with '-'; may consume the next argument.
static a3_status parse_option(const a3_cli_command *cmd, int argc, char **argv, int *i) {
  const char *arg = argv[*i];
  const a3_cli_option *opt = NULL;
  const char *inline_value = NULL;
  if (arg[1] == '-') {
    const char *name = arg + 2, *eq = strchr(name, '=');
    opt = find_long(cmd, name, eq ? (size_t)(eq - name) : strlen(name));
    if (eq) inline_value = eq + 1;
  } else {
    opt = arg[2] == '\0' ? find_short(cmd, arg[1]) : NULL;
  }
  if (!opt)
    return A3_FAIL(A3_ERR_USAGE, "a3fta %s: unknown option '%s' (see 'a3fta %s --help')", cmd->name,
                   arg, cmd->name);
  if (opt->kind == A3_OPT_FLAG) {
    if (inline_value)
      return A3_FAIL(A3_ERR_USAGE, "a3fta %s: --%s takes no value", cmd->name, opt->long_name);
    return store_value(cmd, opt, "");
  }
  if (!inline_value) {
    if (*i + 1 >= argc)
      return A3_FAIL(A3_ERR_USAGE, "a3fta %s: %s needs a value (%s)", cmd->name, arg,
                     opt->metavar ? opt->metavar : "VALUE");
    inline_value = argv[++*i];
  }
  return store_value(cmd, opt, inline_value);
}

static int is_help(const char *arg) { return !strcmp(arg, "--help") || !strcmp(arg, "-h"); }

a3_status a3_cli_parse(const a3_cli_command *cmd, int argc, char **argv, a3_cli_args *out) {
  memset(out, 0, sizeof *out);
  for (int i = 1; i < argc; i++) {
    if (is_help(argv[i])) {
      a3_cli_print_help(cmd, stdout);
      out->help_requested = 1;
      return A3_OK;
    }
  }
  int only_positional = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!only_positional && !strcmp(arg, "--")) {
      only_positional = 1;
    } else if (!only_positional && arg[0] == '-' && arg[1] != '\0') {
      A3_TRY(parse_option(cmd, argc, argv, &i));
    } else {
      if (out->n_positional >= cmd->max_positional || out->n_positional >= A3_CLI_POSITIONAL_MAX)
        return A3_FAIL(A3_ERR_USAGE, "a3fta %s: unexpected argument '%s' (usage: a3fta %s %s)",
                       cmd->name, arg, cmd->name, cmd->usage);
      out->positional[out->n_positional++] = arg;
    }
  }
  if (out->n_positional < cmd->min_positional)
    return A3_FAIL(A3_ERR_USAGE, "a3fta %s: missing argument (usage: a3fta %s %s)", cmd->name,
                   cmd->name, cmd->usage);
  return A3_OK;
}

void a3_cli_print_help(const a3_cli_command *cmd, FILE *f) {
  fprintf(f, "usage: a3fta %s %s\n\n%s\n", cmd->name, cmd->usage, cmd->summary);
  if (cmd->description) fprintf(f, "\n%s\n", cmd->description);
  fputs("\noptions:\n", f);
  for (int i = 0; i < cmd->n_options; i++) {
    const a3_cli_option *o = &cmd->options[i];
    char left[64];
    if (o->short_name)
      snprintf(left, sizeof left, "-%c, --%s%s%s", o->short_name, o->long_name,
               o->metavar ? " " : "", o->metavar ? o->metavar : "");
    else
      snprintf(left, sizeof left, "    --%s%s%s", o->long_name, o->metavar ? " " : "",
               o->metavar ? o->metavar : "");
    fprintf(f, "  %-28s %s\n", left, o->help);
  }
  fprintf(f, "  %-28s %s\n", "-h, --help", "show this help and exit");
}

a3_status a3_cli_backend(const char *command, const char *name, bool *set, int *kind) {
  static const char *const names[] = {"auto", "cpu", "cuda"}; // a3_backend_kind order
  *set = name != NULL;
  *kind = 0;
  if (!name) return A3_OK;
  for (int k = 0; k < 3; k++)
    if (!strcmp(name, names[k])) {
      *kind = k;
      return A3_OK;
    }
  return A3_FAIL(A3_ERR_USAGE, "a3fta %s: --backend expects auto, cpu or cuda, got '%s'", command,
                 name);
}
