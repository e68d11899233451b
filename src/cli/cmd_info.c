// a3fta info FILE: recognise the file (HDF5 by its root `format` attribute,
// safetensors by its name, a sweep's or run's folder by its results.h5 or
// checkpoint.h5) and summarise it: datasets, results files (a table of
// points, --csv for tools), training checkpoints and safetensors files
// (--config: the config they were trained with).
// a3fta info --model CONFIG: the parameter table of the U-Net a config builds.
#include "a3fta/checkpoint.h"
#include "a3fta/config.h"
#include "a3fta/dataset.h"
#include "a3fta/diffusers.h"
#include "a3fta/model.h"
#include "a3fta/results.h"
#include "a3fta/safetensors.h"
#include "a3fta/strategy.h"
#include "a3fta/trainer.h"
#include "cli/commands.h"
#include "cli/options.h"

#include <string.h>
#include <sys/stat.h>

typedef enum { KIND_DATASET, KIND_RESULTS, KIND_CHECKPOINT, KIND_SAFETENSORS } file_kind;

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

// A sweep's or a run's folder stands for the file that sums it up: its
// results.h5, else its checkpoint.h5 (the path itself when neither is there).
static const char *file_in_folder(const char *path, char *buf, size_t size) {
  static const char *const names[] = {"results.h5", "checkpoint.h5"};
  struct stat st;
  if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode)) return path;
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    snprintf(buf, size, "%s/%s", path, names[i]);
    if (stat(buf, &st) == 0 && S_ISREG(st.st_mode)) return buf;
  }
  return path;
}

// Rank 0 looks at the file alone (no MPI-IO) and tells the others, so that a
// wrong file gives one message, not one per rank.
static a3_status check_kind(const char *path, int rank, file_kind *kind) {
  a3_status s = A3_OK;
  int k = KIND_DATASET;
  struct stat st;
  if (rank == 0 && stat(path, &st) == 0 && S_ISDIR(st.st_mode))
    s = A3_FAIL(A3_ERR_INPUT,
                "%s is a folder without results.h5 or checkpoint.h5; give a3fta info a dataset, "
                "results, checkpoint or .safetensors file",
                path);
  else if (rank == 0 && ends_with(path, ".safetensors"))
    k = KIND_SAFETENSORS;
  else if (rank == 0) {
    char format[256];
    s = a3_file_format(path, format, sizeof format);
    if (s == A3_OK && !format[0])
      s = A3_FAIL(A3_ERR_INPUT,
                  "%s: not an a3fta file (no 'format' attribute); a3fta info reads datasets, "
                  "results files and checkpoints",
                  path);
    else if (s == A3_OK && !strcmp(format, A3_RESULTS_FORMAT))
      k = KIND_RESULTS;
    else if (s == A3_OK && !strcmp(format, A3_CHECKPOINT_FORMAT))
      k = KIND_CHECKPOINT;
    else if (s == A3_OK && strcmp(format, A3_DATASET_FORMAT))
      s = A3_FAIL(A3_ERR_INPUT,
                  "%s: format '%s' is not one a3fta info reads; it reads datasets "
                  "(format '%s'), results files (format '%s') and checkpoints (format '%s')",
                  path, format, A3_DATASET_FORMAT, A3_RESULTS_FORMAT, A3_CHECKPOINT_FORMAT);
  }
  int msg[2] = {(int)s, k};
  MPI_Bcast(msg, 2, MPI_INT, 0, MPI_COMM_WORLD);
  *kind = (file_kind)msg[1];
  return rank == 0 ? s : (a3_status)msg[0];
}

static a3_status dataset_info(const char *path) {
  a3_dataset *ds = NULL;
  A3_TRY(a3_dataset_open(MPI_COMM_WORLD, path, &ds));
  const a3_status s = a3_dataset_print_summary(ds, stdout);
  a3_dataset_close(ds);
  A3_TRY(s);
  return A3_OK;
}

// What --csv, --config and --params ask of a results, checkpoint or safetensors file.
typedef struct {
  int csv, config, params;
  unsigned status_mask; // --status (results files only); 0 = every point
} print_flags;

static a3_status print_serial(file_kind kind, const char *path, print_flags flags) {
  if (kind == KIND_RESULTS) return a3_results_print(path, stdout, flags.csv, flags.status_mask);
  if (flags.status_mask)
    return A3_FAIL(A3_ERR_USAGE, "a3fta info: --status is for a results file; %s is not one", path);
  if (kind == KIND_SAFETENSORS && flags.config) return a3_safetensors_print_config(path, stdout);
  if (kind == KIND_SAFETENSORS) return a3_safetensors_print_summary(path, flags.params, stdout);
  if (flags.config) return a3_model_checkpoint_print_config(path, stdout);
  return a3_model_checkpoint_print(path, stdout);
}

// Rank 0 reads and prints; the exit code is agreed so no rank hides a failure.
static a3_status serial_info(file_kind kind, const char *path, print_flags flags, int rank) {
  a3_status s = rank == 0 ? print_serial(kind, path, flags) : A3_OK;
  int code = (int)s;
  MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (rank != 0) return A3_OK; // rank 0 reports
  A3_TRY(s);
  return A3_OK;
}

// A model config is an a3fta YAML file, a diffusers config.json, or a
// diffusers model folder holding one.
static a3_status load_model_config(const char *path, const a3_cli_list *overrides, a3_config *cfg) {
  struct stat st;
  const int is_dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
  if (!is_dir && !ends_with(path, ".json"))
    return a3_config_load(path, overrides->items, overrides->count, cfg);
  a3_config_init_defaults(cfg);
  a3_diffusers_files files;
  if (is_dir) A3_TRY(a3_diffusers_find_files(path, &files));
  A3_TRY(a3_diffusers_load_config(is_dir ? files.config_json : path, cfg));
  for (int i = 0; i < overrides->count; i++)
    A3_TRY(a3_config_apply_override(cfg, overrides->items[i]));
  return a3_config_validate(cfg);
}

static void print_param_table(const a3_unet *m, FILE *f) {
  fprintf(f, "\n%-64s %-18s %10s %s\n", "name", "shape", "numel", "flags");
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    char shape[64] = "(";
    for (int d = 0; d < p->ndim; d++) {
      size_t used = strlen(shape);
      snprintf(shape + used, sizeof shape - used, "%s%lld", d ? ", " : "", (long long)p->shape[d]);
    }
    strncat(shape, ")", sizeof shape - strlen(shape) - 1);
    fprintf(f, "%-64s %-18s %10lld %s%s\n", p->name, shape, (long long)p->numel,
            p->in_attention ? "attention " : "", p->is_bias ? "bias" : "");
  }
}

// What each strategy trains on this architecture, with the config's adapter
// and LoRA settings; percentages of the base model (without added modules).
static a3_status print_strategies(const a3_config *cfg, size_t base_params) {
  const a3_strategy_config *st = &cfg->strategy;
  printf("trainable per strategy (adapter rank %lld, LoRA rank %lld):\n",
         (long long)st->adapter.rank, (long long)st->lora.rank);
  for (int k = A3_STRATEGY_FULL; k <= A3_STRATEGY_BITFIT; k++) {
    a3_config c;
    A3_TRY(a3_config_copy(&c, cfg));
    c.strategy.name = (a3_strategy_name)k;
    a3_unet *m = NULL;
    a3_strategy_stats stats = {0};
    a3_status s = a3_strategy_build_model(&c, &m);
    if (s == A3_OK) s = a3_strategy_apply(m, c.strategy.name, &stats);
    if (s == A3_OK)
      printf("  %-10s %12zu (%.2f%%)%s\n", a3_strategy_label(c.strategy.name),
             stats.trainable_params, 100.0 * (double)stats.trainable_params / (double)base_params,
             k == (int)cfg->strategy.name ? "  <- strategy.name" : "");
    a3_unet_free(m);
    a3_config_free(&c);
    A3_TRY(s);
  }
  return A3_OK;
}

static a3_status model_info(const char *path, const a3_cli_list *overrides, int all_params,
                            long batch, int rank) {
  a3_config cfg;
  A3_TRY(load_model_config(path, overrides, &cfg));
  a3_unet *m = NULL;
  a3_status s = a3_unet_build(&cfg.model.arch, &m);
  if (s == A3_OK && batch > 0) s = a3_unet_plan(m, (int)batch);
  if (s == A3_OK && rank == 0) {
    printf("config: %s\n", path);
    a3_unet_summary(m, stdout);
    s = print_strategies(&cfg, a3_unet_num_floats(m));
    if (s == A3_OK && all_params) print_param_table(m, stdout);
  }
  a3_unet_free(m);
  a3_config_free(&cfg);
  return s;
}

a3_status a3_cmd_info(int argc, char **argv) {
  const char *model = NULL;
  long batch = 0;
  print_flags flags = {0, 0, 0, 0};
  const char *status = NULL;
  a3_cli_list overrides = {0};
  const a3_cli_option options[] = {
      {"model", 'm', A3_OPT_STRING, "CONFIG",
       "summarise the U-Net a config builds (a3fta YAML, config.json or diffusers folder)", &model,
       0, 0},
      {"override", 'o', A3_OPT_LIST, "KEY=VALUE", "override a config key (with --model)",
       &overrides, 0, 0},
      {"params", 0, A3_OPT_FLAG, NULL,
       "with --model or a .safetensors file: list every parameter tensor", &flags.params, 0, 0},
      {"batch", 'b', A3_OPT_INT, "N", "with --model: plan and report activation memory for batch N",
       &batch, 1, 1 << 20},
      {"csv", 0, A3_OPT_FLAG, NULL, "for a results file: print the points as CSV (for tools)",
       &flags.csv, 0, 0},
      {"status", 0, A3_OPT_STRING, "LIST",
       "for a results file: only the points of these statuses (e.g. failed,diverged; also "
       "pending, done, running)",
       &status, 0, 0},
      {"config", 0, A3_OPT_FLAG, NULL,
       "for a checkpoint or an export: print the config it was trained with", &flags.config, 0, 0},
  };
  const a3_cli_command cmd = {
      "info",
      "FILE [--csv] [--status LIST] | FILE [--config | --params] |\n"
      "                  --model CONFIG [--params] [--batch N]",
      "Summarise an a3fta file (dataset, results, checkpoint, safetensors), or a model config.",
      "By kind of FILE (HDF5 files by their format attribute):\n"
      "  dataset       source, classes, per split the image count and shape, pixel mean and\n"
      "                standard deviation (a parallel read under mpirun), images per class\n"
      "  results       one row per point: status, varied keys, final loss, wall time, metrics\n"
      "                ('-' = not computed), failure reason; --csv: the same as CSV;\n"
      "                --status failed,diverged: only those points\n"
      "  checkpoint    step, main config keys, config and base-model hashes, what the strategy\n"
      "                trains, and per group (params, ema, optimizer moments) tensors, values,\n"
      "                the largest |value| and any NaN or infinity (a diverged run);\n"
      "                --config: the config it was trained with\n"
      "  .safetensors  an a3fta export or diffusers weights: metadata, tensors by dtype, the\n"
      "                largest |value| and any NaN or infinity; --params lists the tensors,\n"
      "                --config prints the training config an export carries\n"
      "  a folder      a sweep's output.dir (its results.h5) or a run's (its checkpoint.h5)\n"
      "--model CONFIG: parameter count, tensors, attention and bias shares by diffusers name,\n"
      "and what each strategy trains (-o strategy.adapter.rank=16 ...).\n"
      "Printed to stdout by rank 0.",
      options,
      (int)(sizeof options / sizeof options[0]),
      0,
      1};
  a3_cli_args args;
  A3_TRY(a3_cli_parse(&cmd, argc, argv, &args));
  if (args.help_requested) return A3_OK;
  if (status) A3_TRY(a3_point_status_mask(status, &flags.status_mask));
  A3_TRY(a3_cli_start_mpi());
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (model) return model_info(model, &overrides, flags.params, batch, rank);
  if (args.n_positional != 1)
    return A3_FAIL(A3_ERR_USAGE, "a3fta info: give a FILE or --model CONFIG (see --help)");
  char in_folder[4096];
  const char *path = file_in_folder(args.positional[0], in_folder, sizeof in_folder);
  // Only rank 0 reports a wrong file; the others end quietly (exit code is agreed).
  file_kind kind = KIND_DATASET;
  const a3_status s = check_kind(path, rank, &kind);
  if (s != A3_OK && rank != 0) return A3_OK;
  A3_TRY(s);
  if (kind == KIND_DATASET) return dataset_info(path);
  return serial_info(kind, path, flags, rank);
}
