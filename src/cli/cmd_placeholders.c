// Commands that later issues implement. They parse --help like the real ones
// and otherwise say plainly that they do not exist yet (exit 1).
#include "cli/commands.h"
#include "cli/options.h"

static a3_status not_yet(const char *name, const char *usage, const char *summary, int argc,
                         char **argv) {
  const a3_cli_command cmd = {name, usage, summary, NULL, NULL, 0, 0, 16};
  a3_cli_args args;
  A3_TRY(a3_cli_parse(&cmd, argc, argv, &args));
  if (args.help_requested) return A3_OK;
  return A3_FAIL(A3_ERR_UNIMPLEMENTED,
                 "'a3fta %s' is not implemented in this version; see the project's open issues",
                 name);
}

a3_status a3_cmd_eval(int argc, char **argv) {
  return not_yet("eval", "SAMPLES",
                 "Evaluate samples against a reference dataset (not implemented yet).", argc, argv);
}
