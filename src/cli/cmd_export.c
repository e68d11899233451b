// a3fta export: the tensors a fine-tune trained (adapter, LoRA, attention
// weights, biases, ...) as a safetensors file for PyTorch/diffusers tooling.
#include "a3fta/dist.h"
#include "a3fta/export.h"
#include "cli/commands.h"
#include "cli/options.h"

#include <mpi.h>
#include <stdio.h>

a3_status a3_cmd_export(int argc, char **argv) {
  const char *out = NULL;
  int no_ema = 0;
  const a3_cli_option options[] = {
      {"out", 'o', A3_OPT_STRING, "FILE.safetensors", "write the deltas here (required)", &out, 0,
       0},
      {"no-ema", 0, A3_OPT_FLAG, NULL, "export the raw weights even if the checkpoint has an EMA",
       &no_ema, 0, 0},
  };
  const a3_cli_command cmd = {
      "export",
      "CHECKPOINT --out FILE.safetensors [--no-ema]",
      "Export the weights a fine-tune trained as safetensors.",
      "Writes the tensors the checkpoint's strategy trained, under their diffusers names:\n"
      "the adapters (a3fta, adapter) and LoRA matrices (lora), the attention weights (a3fta,\n"
      "attention), the biases (bitfit), every parameter (full). They hold the fine-tuned values\n"
      "(EMA weights when the checkpoint has them): load the base model, replace its tensors of\n"
      "the same names and add the adapter/LoRA modules (tools/apply_deltas.py does this with\n"
      "the PyTorch reference model).\n"
      "\n"
      "__metadata__: strategy, a3fta_version, config_hash, config, base_model,\n"
      "base_model_hash (FNV-1a of the weights the fine-tune started from; \"random\" for a\n"
      "random init), unet_config (diffusers config.json), weights (ema or raw), step, and the\n"
      "adapter (rank, activation, placement, gate) or LoRA (rank, alpha) settings.",
      options,
      (int)(sizeof options / sizeof options[0]),
      1,
      1};
  a3_cli_args args;
  A3_TRY(a3_cli_parse(&cmd, argc, argv, &args));
  if (args.help_requested) return A3_OK;
  if (!out)
    return A3_FAIL(A3_ERR_USAGE,
                   "a3fta export: --out FILE.safetensors is required (see 'a3fta export --help')");
  A3_TRY(a3_cli_start_mpi());
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  const a3_export_options opt = {.use_ema = !no_ema};
  a3_export_report rep;
  a3_status s = rank == 0 ? a3_export_deltas(args.positional[0], out, &opt, &rep) : A3_OK;
  A3_TRY(a3_agree(MPI_COMM_WORLD, s, "export")); // the file is written once, by rank 0
  if (rank == 0)
    a3_info("export: %d tensors (%zu parameters) of strategy %s, %s weights of step %lld -> %s "
            "(base model %s, config %s)",
            rep.tensors, rep.params, rep.strategy, rep.used_ema ? "EMA" : "raw",
            (long long)rep.step, out, rep.base_model_hash, rep.config_hash);
  return A3_OK;
}
