// a3fta train: one run (pretraining or fine-tuning) from a config, over all
// ranks of the job (data parallel), then a sample grid of the result.
#include "a3fta/config.h"
#include "a3fta/trainer.h"
#include "cli/commands.h"
#include "cli/options.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

static int world_rank(void) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

static a3_status print_config(const a3_config *cfg) {
  if (world_rank() != 0 || a3_log_get_level() < A3_LOG_INFO) return A3_OK;
  char *yaml = NULL;
  A3_TRY(a3_config_to_yaml(cfg, &yaml, NULL));
  printf("# resolved config (hash %016llx)\n%s", (unsigned long long)a3_config_hash(cfg), yaml);
  fflush(stdout);
  free(yaml);
  return A3_OK;
}

// output.samples_per_run images from the final checkpoint, with the eval sampler.
static a3_status sample_grid(const a3_config *cfg) {
  if (cfg->output.samples_per_run <= 0) return A3_OK;
  A3_TRY(a3_sample_run(MPI_COMM_WORLD, cfg, cfg->output.samples_per_run));
  if (world_rank() == 0)
    a3_info("samples: %s/" A3_SAMPLES_PNG " and " A3_SAMPLES_H5, cfg->output.dir);
  return A3_OK;
}

a3_status a3_cmd_train(int argc, char **argv) {
  a3_cli_list overrides = {0};
  int resume = 0, no_samples = 0;
  const a3_cli_option options[] = {
      {"override", 'o', A3_OPT_LIST, "KEY=VALUE",
       "set a config key (YAML value), after the file; repeatable", &overrides, 0, 0},
      {"resume", 0, A3_OPT_FLAG, NULL,
       "continue from OUTPUT_DIR/checkpoint.h5 if it exists (same config: bit-identical "
       "losses)",
       &resume, 0, 0},
      {"no-samples", 0, A3_OPT_FLAG, NULL,
       "skip the sample grid at the end (output.samples_per_run images)", &no_samples, 0, 0},
  };
  const a3_cli_command cmd = {
      "train",
      "CONFIG [-o key.path=value]... [--resume]",
      "Train or fine-tune one model with one config.",
      "Pretrains (model.init: random) or fine-tunes (model.init: an a3fta checkpoint or a\n"
      "diffusers folder) the U-Net of model.arch on data.path with strategy.name, data\n"
      "parallel over the ranks of the job (mpirun -n R a3fta train ...).\n"
      "\n"
      "Writes to output.dir: config.yaml (the resolved config), losses.csv\n"
      "(step,loss,lr,heldout), loss.png (the loss curve of the whole run, resumed sessions\n"
      "included: training loss and its moving average, and the held-out loss, log scale),\n"
      "checkpoint.h5 (every train.checkpoint_every steps and at the end; written atomically),\n"
      "samples.png and samples.h5 (output.samples_per_run images from the final weights,\n"
      "EMA when train.ema, with eval.sampler and eval.sampler_steps).\n"
      "\n"
      "With eval.heldout_every > 0 the held-out denoising loss (test images of data.classes at\n"
      "fixed timesteps and noise) is computed every that many steps and at the end: in the\n"
      "log line, the heldout column and loss.png. It does not change the training losses.\n"
      "\n"
      "The same config and seed give bit-identical losses, also after --resume.",
      options,
      (int)(sizeof options / sizeof options[0]),
      1,
      1};
  a3_cli_args args;
  A3_TRY(a3_cli_parse(&cmd, argc, argv, &args));
  if (args.help_requested) return A3_OK;
  A3_TRY(a3_cli_start_mpi());
  a3_config cfg;
  A3_TRY(a3_config_load(args.positional[0], overrides.items, overrides.count, &cfg));
  a3_status s = print_config(&cfg);
  const a3_train_options opt = {.resume = resume != 0};
  a3_train_result result;
  if (s == A3_OK) s = a3_train(&cfg, MPI_COMM_WORLD, &opt, &result);
  if (s == A3_OK && world_rank() == 0)
    a3_info("train: done, %lld steps (%lld this session) in %.1f s, last loss %.5f; checkpoint "
            "%s/checkpoint.h5, loss curve %s/loss.png",
            (long long)result.steps_done, (long long)(result.steps_done - result.first_step),
            result.seconds, result.last_loss, cfg.output.dir, cfg.output.dir);
  if (s == A3_OK && !no_samples) s = sample_grid(&cfg);
  if (s == A3_OK) s = a3_run_drop_weights(MPI_COMM_WORLD, &cfg);
  a3_config_free(&cfg);
  A3_TRY(s);
  return A3_OK;
}
