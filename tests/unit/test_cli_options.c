// The option-table parser: every kind of option, and each usage error.
#include "cli/options.h"
#include "test_util.h"

#include <string.h>

typedef struct {
  const char *out;
  long size;
  int force;
  a3_cli_list overrides;
} parsed_options;

static a3_status parse(parsed_options *p, a3_cli_args *args, int argc, const char **argv) {
  memset(p, 0, sizeof *p);
  const a3_cli_option options[] = {
      {"out", 0, A3_OPT_STRING, "FILE", "output file", &p->out, 0, 0},
      {"size", 's', A3_OPT_INT, "N", "image size", &p->size, 1, 4096},
      {"force", 'f', A3_OPT_FLAG, NULL, "overwrite", &p->force, 0, 0},
      {"override", 'o', A3_OPT_LIST, "K=V", "override", &p->overrides, 0, 0},
  };
  const a3_cli_command cmd = {"demo", "SRC [DST]", "Demo.", NULL, options, 4, 1, 2};
  return a3_cli_parse(&cmd, argc, (char **)argv, args);
}

static void test_good(void) {
  parsed_options p;
  a3_cli_args args;
  const char *argv[] = {"demo", "in",  "--out=x.h5", "-s",  "28", "-f",
                        "-o",   "a=1", "--override", "b=2", "dst"};
  CHECK(parse(&p, &args, 11, argv) == A3_OK);
  CHECK(p.out && !strcmp(p.out, "x.h5"));
  CHECK(p.size == 28 && p.force == 1);
  CHECK(p.overrides.count == 2 && !strcmp(p.overrides.items[1], "b=2"));
  CHECK(args.n_positional == 2 && !strcmp(args.positional[1], "dst"));
  const char *dashdash[] = {"demo", "--", "-weird-name"};
  CHECK(parse(&p, &args, 3, dashdash) == A3_OK && !strcmp(args.positional[0], "-weird-name"));
}

static void expect_usage_error(int argc, const char **argv, const char *needle) {
  parsed_options p;
  a3_cli_args args;
  CHECK(parse(&p, &args, argc, argv) == A3_ERR_USAGE);
  CHECK_MSG(strstr(a3_error_message(), needle) != NULL, "'%s' lacks '%s'", a3_error_message(),
            needle);
}

static void test_errors(void) {
  expect_usage_error(3, (const char *[]){"demo", "in", "--bogus"}, "unknown option '--bogus'");
  expect_usage_error(3, (const char *[]){"demo", "in", "--out"}, "needs a value");
  expect_usage_error(4, (const char *[]){"demo", "in", "-s", "0"}, "integer in [1, 4096]");
  expect_usage_error(4, (const char *[]){"demo", "in", "-s", "12x"}, "got '12x'");
  expect_usage_error(3, (const char *[]){"demo", "in", "--force=1"}, "takes no value");
  expect_usage_error(1, (const char *[]){"demo"}, "missing argument");
  expect_usage_error(4, (const char *[]){"demo", "a", "b", "c"}, "unexpected argument 'c'");
}

static void test_help(void) {
  parsed_options p;
  a3_cli_args args;
  CHECK(parse(&p, &args, 3, (const char *[]){"demo", "--bogus", "--help"}) == A3_OK);
  CHECK(args.help_requested == 1);
}

int main(void) {
  test_good();
  test_errors();
  test_help();
  return TEST_DONE("test_cli_options");
}
