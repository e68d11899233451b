// a3fta eval: samples from a checkpoint measured against the real images
// (FID, KID, precision/recall, density/coverage, diversity, memorization).
#include "a3fta/eval.h"
#include "cli/commands.h"
#include "cli/options.h"

#include <mpi.h>
#include <stdio.h>

a3_status a3_cmd_eval(int argc, char **argv) {
  long samples = 0, seed = -1;
  const char *json = NULL, *png = NULL, *features = NULL, *backend = NULL;
  const a3_cli_option options[] = {
      {"samples", 'n', A3_OPT_INT, "N", "images to sample (default: eval.samples of the config)",
       &samples, A3_EVAL_PRDC_K + 1, 10000000},
      {"seed", 0, A3_OPT_INT, "K",
       "seed of the sample noise and the KID subsets (default: train.seed of the config, as a "
       "sweep point uses)",
       &seed, 0, 2147483647L},
      {"json", 0, A3_OPT_STRING, "OUT.json", "also write the report as JSON", &json, 0, 0},
      {"png-memorized", 0, A3_OPT_STRING, "OUT.png",
       "write the most-memorized samples beside their nearest training images", &png, 0, 0},
      {"features", 0, A3_OPT_STRING, "PATH",
       "feature network file (default: $A3FTA_FEATURES, else the source tree's "
       "tests/eval/fmnist_cnn_v1.h5)",
       &features, 0, 0},
      {"backend", 0, A3_OPT_STRING, "auto|cpu|cuda",
       "where to sample (default: the checkpoint config's parallel.backend)", &backend, 0, 0},
  };
  const a3_cli_command cmd = {
      "eval",
      "CHECKPOINT [--samples N] [--seed K] [--json OUT.json] [--png-memorized OUT.png]\n"
      "                   [--features PATH] [--backend auto|cpu|cuda]",
      "Evaluate a checkpoint: FID, KID, precision/recall, diversity, memorization.",
      "Samples N images from the checkpoint (its EMA weights when it has them) with the\n"
      "config's eval.sampler, eval.sampler_steps and eval.eta, split over the MPI ranks (each\n"
      "on the GPU that the config's parallel.backend picks for it, as in training, else the\n"
      "CPU; --backend overrides it), and measures them on rank 0 against the config's data:\n"
      "  reference: every test-split image of data.classes in data.path: FID, KID (mean, std),\n"
      "             precision, recall, density, coverage (k = 5) in the feature space of the\n"
      "             network fmnist-cnn-v1 (centre 28x28 of the samples);\n"
      "  training:  the fine-tuning subset (data.split, data.classes, data.shots, subset_seed):\n"
      "             intra-cluster diversity (features) and memorization (pixels: a sample is a\n"
      "             copy when d1 < d2/3 to its two nearest training images);\n"
      "  diversity: the mean pairwise feature distance of the samples.\n"
      "With the same samples and seed (the defaults), the numbers are those a3fta sweep writes\n"
      "into the results file's /metrics for the point of this checkpoint.",
      options,
      (int)(sizeof options / sizeof options[0]),
      1,
      1};
  a3_cli_args args;
  A3_TRY(a3_cli_parse(&cmd, argc, argv, &args));
  if (args.help_requested) return A3_OK;
  A3_TRY(a3_cli_start_mpi());
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const char *ckpt = args.positional[0];
  bool set_backend = false;
  int kind = 0;
  A3_TRY(a3_cli_backend("eval", backend, &set_backend, &kind));
  const a3_eval_options opt = {.num_samples = samples,
                               .seed = seed < 0 ? A3_EVAL_SEED_TRAIN : (uint64_t)seed,
                               .metrics = A3_EVAL_ALL_METRICS,
                               .features = features,
                               .memorized_png = png,
                               .set_backend = set_backend,
                               .backend = (a3_backend_kind)kind};
  a3_eval_report rep;
  A3_TRY(a3_eval_checkpoint(MPI_COMM_WORLD, ckpt, &opt, &rep));
  a3_status s = A3_OK;
  if (rank == 0) {
    a3_eval_print(&rep, ckpt, stdout);
    fflush(stdout);
    if (json) s = a3_eval_write_json(&rep, ckpt, json);
    if (s == A3_OK && json) a3_info("eval: wrote %s", json);
    if (s == A3_OK && png) a3_info("eval: wrote %s", png);
  }
  a3_eval_report_free(&rep);
  // Rank 0 wrote the files: every rank exits with its status.
  int code = (int)s;
  MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD);
  A3_TRY(s);
  if (code != A3_OK) return A3_FAIL((a3_status)code, "eval: writing the report failed on rank 0");
  return A3_OK;
}
