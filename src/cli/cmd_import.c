// a3fta import: Fashion-MNIST IDX files or a folder of PNGs -> a dataset file.
// Writing is serial (one HDF5 file, no parallel filters needed), so rank 0
// imports and any other ranks of an mpirun simply finish.
#include "a3fta/dataset.h"
#include "cli/commands.h"
#include "cli/options.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const a3_cli_command import_cmd = {
    "import",
    "fashion-mnist|images ... --out FILE",
    "Import a dataset into one a3fta dataset file (HDF5).",
    "kinds:\n"
    "  fashion-mnist  the gzipped IDX files of Debian's dataset-fashion-mnist package\n"
    "  images DIR     a folder of PNG files, one subfolder per class\n"
    "\n"
    "See 'a3fta import fashion-mnist --help' and 'a3fta import images --help'.",
    NULL,
    0,
    0,
    0};

static int world_rank(void) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

static double now_s(void) {
  struct timespec t;
  timespec_get(&t, TIME_UTC);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void print_report(const a3_import_report *r, const char *out, double seconds) {
  for (int i = 0; i < r->n_splits; i++) {
    const a3_import_split *sp = &r->splits[i];
    printf("%-5s %6lld images  %d x %d x %d (C x H x W)  %d classes  -> %s\n", sp->name,
           (long long)sp->n, sp->channels, sp->height, sp->width, r->num_classes, out);
  }
  printf("imported in %.2f s\n", seconds);
  fflush(stdout);
}

static a3_status import_fashion_mnist(int argc, char **argv) {
  const char *out = NULL, *source = A3_FASHION_MNIST_DEFAULT_DIR;
  const a3_cli_option options[] = {
      {"out", 'o', A3_OPT_STRING, "FILE", "dataset file to write (required)", &out, 0, 0},
      {"source", 0, A3_OPT_STRING, "DIR",
       "folder with the four .gz files (default " A3_FASHION_MNIST_DEFAULT_DIR ")", &source, 0, 0},
  };
  const a3_cli_command cmd = {
      "import fashion-mnist",
      "--out FILE [--source DIR]",
      "Import Fashion-MNIST (60,000 train + 10,000 test 28x28 grey images, 10 classes).",
      "Reads train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz\n"
      "and t10k-labels-idx1-ubyte.gz (apt-get install dataset-fashion-mnist) and writes splits\n"
      "/train and /test. FILE is written as FILE.tmp and renamed when complete.",
      options,
      2,
      0,
      0};
  a3_cli_args args;
  A3_TRY(a3_cli_parse(&cmd, argc, argv, &args));
  if (args.help_requested) return A3_OK;
  if (!out) return A3_FAIL(A3_ERR_USAGE, "a3fta import fashion-mnist: --out FILE is required");
  A3_TRY(a3_cli_start_mpi());
  if (world_rank() != 0) return A3_OK;
  a3_import_report report;
  const double start = now_s();
  A3_TRY(a3_import_fashion_mnist(source, out, &report));
  print_report(&report, out, now_s() - start);
  return A3_OK;
}

// "HxW" or "N" (square).
static a3_status parse_size(const char *text, int *height, int *width) {
  char *end = NULL;
  errno = 0;
  const long h = strtol(text, &end, 10);
  long w = h;
  if (!errno && end != text && (*end == 'x' || *end == 'X')) {
    const char *rest = end + 1;
    w = strtol(rest, &end, 10);
    if (end == rest) w = 0;
  }
  if (errno || end == text || *end || h < 1 || h > 65535 || w < 1 || w > 65535)
    return A3_FAIL(A3_ERR_USAGE,
                   "a3fta import images: --size expects HxW (e.g. 32x32) or N for NxN, with "
                   "sizes in 1..65535; got '%s'",
                   text);
  *height = (int)h;
  *width = (int)w;
  return A3_OK;
}

typedef struct {
  const char *out, *size, *fit, *split, *test_dir;
  long channels;
} image_args;

static a3_status image_options(const image_args *a, const char *dir, a3_image_import_options *opt) {
  memset(opt, 0, sizeof *opt);
  opt->dir = dir;
  opt->out_path = a->out;
  opt->split = a->split;
  opt->test_dir = a->test_dir;
  opt->channels = (int)a->channels;
  if (!a->out) return A3_FAIL(A3_ERR_USAGE, "a3fta import images: --out FILE is required");
  if (a->channels == 2)
    return A3_FAIL(A3_ERR_USAGE, "a3fta import images: --channels expects 1 or 3, got 2");
  if (strcmp(a->split, "train") && strcmp(a->split, "test"))
    return A3_FAIL(A3_ERR_USAGE, "a3fta import images: --split expects train or test, got '%s'",
                   a->split);
  if (a->fit && !a->size)
    return A3_FAIL(A3_ERR_USAGE, "a3fta import images: --fit needs --size HxW");
  if (!a->size) return A3_OK;
  A3_TRY(parse_size(a->size, &opt->height, &opt->width));
  const char *fit = a->fit ? a->fit : "pad";
  if (strcmp(fit, "pad") && strcmp(fit, "resize"))
    return A3_FAIL(A3_ERR_USAGE, "a3fta import images: --fit expects pad or resize, got '%s'", fit);
  opt->fit = strcmp(fit, "pad") ? A3_FIT_RESIZE : A3_FIT_PAD;
  return A3_OK;
}

static const char images_description[] =
    "DIR holds one subfolder per class (class names = subfolder names, classes numbered in\n"
    "sorted name order), each holding PNG files (any colour type or bit depth; stored class by\n"
    "class in sorted file-name order). Hidden entries are skipped; other files are errors.\n"
    "Without --size all images must have one size. With --size, --fit pad centres each image\n"
    "on black (never crops), --fit resize resamples it (area average when shrinking, bilinear\n"
    "when enlarging). Transparency is composited onto black; colour becomes grey with\n"
    "0.299 R + 0.587 G + 0.114 B. FILE is written as FILE.tmp and renamed when complete.";

static a3_status import_images(int argc, char **argv) {
  image_args a = {NULL, NULL, NULL, "train", NULL, 0};
  const a3_cli_option options[] = {
      {"out", 'o', A3_OPT_STRING, "FILE", "dataset file to write (required)", &a.out, 0, 0},
      {"size", 0, A3_OPT_STRING, "HxW|N", "bring every image to this size (see --fit)", &a.size, 0,
       0},
      {"fit", 0, A3_OPT_STRING, "pad|resize", "how to reach --size (default pad)", &a.fit, 0, 0},
      {"channels", 0, A3_OPT_INT, "1|3", "channels to store (default: 1 if all PNGs are grey)",
       &a.channels, 1, 3},
      {"split", 0, A3_OPT_STRING, "train|test", "split to write (default train)", &a.split, 0, 0},
      {"test", 0, A3_OPT_STRING, "DIR2",
       "also write DIR2 (the same class subfolders) as the test split of FILE", &a.test_dir, 0, 0},
  };
  const a3_cli_command cmd = {"import images",
                              "DIR --out FILE [--size HxW|N] [--fit pad|resize] [--channels 1|3] "
                              "[--split train|test] [--test DIR2]",
                              "Import a folder of PNG images, one subfolder per class.",
                              images_description,
                              options,
                              (int)(sizeof options / sizeof options[0]),
                              1,
                              1};
  a3_cli_args args;
  A3_TRY(a3_cli_parse(&cmd, argc, argv, &args));
  if (args.help_requested) return A3_OK;
  A3_TRY(a3_cli_start_mpi());
  if (world_rank() != 0) return A3_OK;
  a3_image_import_options opt;
  A3_TRY(image_options(&a, args.positional[0], &opt));
  a3_import_report report;
  const double start = now_s();
  A3_TRY(a3_import_images(&opt, &report));
  print_report(&report, a.out, now_s() - start);
  return A3_OK;
}

a3_status a3_cmd_import(int argc, char **argv) {
  const char *kind = argc > 1 ? argv[1] : NULL;
  if (kind && (!strcmp(kind, "--help") || !strcmp(kind, "-h"))) {
    a3_cli_print_help(&import_cmd, stdout);
    return A3_OK;
  }
  if (kind && !strcmp(kind, "fashion-mnist")) return import_fashion_mnist(argc - 1, argv + 1);
  if (kind && !strcmp(kind, "images")) return import_images(argc - 1, argv + 1);
  return A3_FAIL(A3_ERR_USAGE,
                 "a3fta import: %s%s%s; expected fashion-mnist or images (see 'a3fta import "
                 "--help')",
                 kind ? "unknown kind '" : "missing the kind of data", kind ? kind : "",
                 kind ? "'" : "");
}
