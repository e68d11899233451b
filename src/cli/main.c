// a3fta: the command-line entry point. Parses the global flags, picks the
// subcommand, starts MPI when the command needs it, and turns the command's
// status into the exit code (0 ok, 1 runtime failure, 2 usage/config error).
#include "a3fta/backend.h"
#include "a3fta/build_info.h"
#include "a3fta/core.h"
#include "a3fta/dist.h"
#include "cli/commands.h"

#include <H5public.h>
#include <stdio.h>
#include <string.h>

#ifdef A3FTA_HAVE_CUDA
#include "a3fta/cuda_probe.h"
#endif

typedef struct {
  const char *name;
  const char *summary;
  a3_status (*run)(int argc, char **argv);
} command_entry;

static const command_entry commands[] = {
    {"import", "import a dataset (Fashion-MNIST IDX files, a folder of PNGs) into HDF5",
     a3_cmd_import},
    {"info", "summarise a dataset, results, checkpoint or safetensors file, or a model config",
     a3_cmd_info},
    {"config", "show, check or hash a resolved config; print the config schema", a3_cmd_config},
    {"train", "train or fine-tune one model (data-parallel over the MPI ranks)", a3_cmd_train},
    {"sweep", "run a hyperparameter sweep over MPI rank groups; resumable", a3_cmd_sweep},
    {"merge", "combine the results files of a sweep's slices (job arrays) into one", a3_cmd_merge},
    {"sample", "sample images from a checkpoint (DDPM or DDIM)", a3_cmd_sample},
    {"export", "export a fine-tune's trained weights (adapter, LoRA, ...) as safetensors",
     a3_cmd_export},
    {"eval", "evaluate a checkpoint's samples: FID, KID, precision/recall, diversity, memorization",
     a3_cmd_eval},
};
enum { N_COMMANDS = sizeof commands / sizeof commands[0] };

static void print_usage(FILE *f) {
  fputs("usage: a3fta [--quiet | --verbose] <command> [args]\n"
        "       a3fta --help | --version\n\n"
        "Adapter-Augmented Attention Fine-Tuning of diffusion U-Nets, at sweep scale.\n\n"
        "commands:\n",
        f);
  for (int i = 0; i < N_COMMANDS; i++)
    fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
  fputs("\nglobal options (anywhere on the line):\n"
        "  -q, --quiet     only warnings and errors on stderr\n"
        "  -v, --verbose   debug messages, and the source trail of errors\n"
        "  -h, --help      this help; 'a3fta <command> --help' for a command\n"
        "      --version   version, git commit and build options\n\n"
        "exit codes: 0 success, 1 runtime failure, 2 usage or configuration error\n",
        f);
}

static void print_cuda_line(void) {
#ifdef A3FTA_HAVE_CUDA
  a3_cuda_info info;
  a3_cuda_probe(&info);
  printf("cuda:     on (architectures %s, runtime %d, NCCL %d)\n", A3FTA_CUDA_ARCHS,
         info.runtime_version, info.nccl_version);
  if (info.device_count > 0)
    printf("gpu:      %d device(s), first: %s (sm_%d%d)\n", info.device_count, info.device_name,
           info.cc_major, info.cc_minor);
  else
    printf("gpu:      none usable (%s)\n", info.error_name);
#else
  printf("cuda:     off (built with -DA3FTA_CUDA=OFF or without nvcc)\n");
#endif
}

static void print_version(void) {
  unsigned h5_major = 0, h5_minor = 0, h5_release = 0;
  H5get_libversion(&h5_major, &h5_minor, &h5_release);
  char mpi_version[MPI_MAX_LIBRARY_VERSION_STRING] = "";
  int len = 0;
  MPI_Get_library_version(mpi_version, &len);
  char *newline = strchr(mpi_version, '\n');
  if (newline) *newline = '\0';
  printf("a3fta %s (git %s, %s build%s)\n", A3FTA_VERSION_STRING, A3FTA_GIT_COMMIT,
         A3FTA_BUILD_TYPE, strcmp(A3FTA_SANITIZED, "ON") ? "" : ", ASan+UBSan");
  printf("hdf5:     %u.%u.%u (parallel)\n", h5_major, h5_minor, h5_release);
  printf("mpi:      %s\n", mpi_version);
  printf("math:     %s\n", a3_backend_cpu_blas_info());
  print_cuda_line();
}

// Removes global flags wherever they appear; returns 1 if one is unknown-ish.
static int strip_global_flags(int *argc, char **argv) {
  int out = 1;
  for (int i = 1; i < *argc; i++) {
    const char *a = argv[i];
    if (!strcmp(a, "--")) { // everything after belongs to the command
      while (i < *argc) argv[out++] = argv[i++];
      break;
    }
    if (!strcmp(a, "-q") || !strcmp(a, "--quiet"))
      a3_log_set_level(A3_LOG_WARN);
    else if (!strcmp(a, "-v") || !strcmp(a, "--verbose"))
      a3_log_set_level(A3_LOG_DEBUG);
    else
      argv[out++] = argv[i];
  }
  *argc = out;
  return 0;
}

static const command_entry *find_command(const char *name) {
  for (int i = 0; i < N_COMMANDS; i++)
    if (!strcmp(commands[i].name, name)) return &commands[i];
  return NULL;
}

static int requested_exit_code = 0;

void a3_cli_request_exit_code(int code) { requested_exit_code = code; }

// The MPI world: started by the command once its options are parsed
// (a3_cli_start_mpi), so that --help and a usage error start no MPI (an
// Open MPI singleton's start costs 0.5-2 s); finished by run_command, which
// agrees on the exit code over the ranks when MPI runs.
static a3_world world;

a3_status a3_cli_start_mpi(void) {
  return world.initialized ? A3_OK : a3_world_init(NULL, NULL, &world);
}

static int run_command(const command_entry *cmd, int argc, char **argv) {
  const int code = a3_world_finish(&world, cmd->run(argc - 1, argv + 1));
  return code == 0 ? requested_exit_code : code;
}

int main(int argc, char **argv) {
  strip_global_flags(&argc, argv);
  if (argc < 2) {
    print_usage(stderr);
    return 2;
  }
  const char *first = argv[1];
  if (!strcmp(first, "--help") || !strcmp(first, "-h") || !strcmp(first, "help")) {
    print_usage(stdout);
    return 0;
  }
  if (!strcmp(first, "--version")) {
    print_version();
    return 0;
  }
  const command_entry *cmd = find_command(first);
  if (!cmd) {
    fprintf(stderr,
            "a3fta: usage error: unknown command '%s' (commands: import, info, config, "
            "train, sweep, merge, sample, export, eval; see 'a3fta --help')\n",
            first);
    return 2;
  }
  return run_command(cmd, argc, argv);
}
