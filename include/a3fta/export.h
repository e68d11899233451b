// a3fta export: the tensors a fine-tune trained, as one safetensors file that
// PyTorch/diffusers tooling can load (tools/apply_deltas.py applies it to the
// reference model), and the hash that names the base model they apply to.
//
// Deltas file (a3fta export CHECKPOINT --out FILE.safetensors):
//   tensors     float32, under their diffusers names, the ones strategy.name
//               trains (a3_strategy_trains):
//                 full       every parameter
//                 attention  <block>.attentions.<i>.{group_norm,to_q,to_k,to_v,to_out.0}.*
//                 a3fta      those + <block>.attentions.<i>.adapter.*
//                 adapter    <block>.attentions.<i>.adapter.*
//                 lora       <linear>.lora_A.weight, <linear>.lora_B.weight (PEFT names)
//                 bitfit     every ".bias" of the base model (GroupNorm biases included)
//               Values are the fine-tuned weights themselves, not differences:
//               applying means replacing the base tensor of the same name, or
//               adding the module (adapter, LoRA) the base model lacks. The
//               EMA weights when the checkpoint has them (unless use_ema is off).
//   __metadata__ (strings):
//     format               "pt" (what diffusers/transformers expect)
//     a3fta_format         "a3fta-deltas", a3fta_format_version "1"
//     a3fta_version        e.g. "0.1.0"; a3fta_git: the commit a3fta was built from
//     strategy             full | attention | a3fta | adapter | lora | bitfit
//     apply                "replace" (see above)
//     weights              "ema" or "raw"
//     step                 optimizer steps of the fine-tune
//     config_hash          the checkpoint's config hash (a3fta config hash)
//     config               the resolved config (canonical YAML)
//     base_model           model.init of the fine-tune ("random" or a path)
//     base_model_hash      a3_unet_base_hash of the weights the fine-tune started
//                          from (16 hex digits), "random" for a random initialisation,
//                          "unknown" for a checkpoint written before a3fta recorded it
//     unet_config          the architecture as a diffusers UNet2DModel config.json
//     adapter_rank, adapter_activation, adapter_placement, adapter_gate
//                          (strategies a3fta and adapter)
//     lora_rank, lora_alpha (strategy lora; the update is (alpha / rank) B A x)
#ifndef A3FTA_EXPORT_H
#define A3FTA_EXPORT_H

#include "a3fta/core.h"
#include "a3fta/model.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define A3_DELTAS_FORMAT "a3fta-deltas"
enum {
  A3_DELTAS_FORMAT_VERSION = 1,
  A3_BASE_HASH_MAX = 24, // "random", "unknown" or 16 hex digits, NUL included
};

// ---------------------------------------------------------------- base model hash
// FNV-1a 64 (a3_hash64, seed A3_HASH_SEED) chained over the base parameters
// (added false: not the adapter or LoRA modules) in table order; for each:
// the name's bytes and a NUL, each dimension as an int32 little-endian, then
// the values as float32 little-endian. The same weights under the same
// architecture give the same hash on any machine (tools/apply_deltas.py
// computes it in Python to check the base it is given).
uint64_t a3_unet_base_hash(const a3_unet *m);

// The text a checkpoint records (attribute base_model_hash): "random" when
// model.init is "random", else "%016llx" of a3_unet_base_hash(m). Call it
// with the weights as model.init left them, before any step.
void a3_base_model_hash_text(const a3_unet *m, const char *model_init, char out[A3_BASE_HASH_MAX]);

// The base_model_hash attribute of a training checkpoint, or "unknown" when
// the checkpoint has none (written before a3fta recorded it). Errors: the file
// cannot be opened or is not an a3fta checkpoint.
a3_status a3_model_checkpoint_base_hash(const char *path,
                                        char out[A3_BASE_HASH_MAX]) A3_WARN_UNUSED;

// ---------------------------------------------------------------- export
typedef struct {
  bool use_ema; // the EMA weights of the trained tensors when the checkpoint has them
} a3_export_options;

typedef struct {
  int tensors;   // tensors written
  size_t params; // floats written
  bool used_ema; // the values are the EMA's
  int64_t step;  // the checkpoint's step
  char strategy[16];
  char base_model_hash[A3_BASE_HASH_MAX];
  char config_hash[24];
} a3_export_report;

// Writes the deltas file of the training checkpoint `checkpoint` to `out_path`
// (atomically: "<out_path>.tmp", then renamed). Serial. opt NULL: EMA weights when
// present; report may be NULL.
// Errors: the checkpoint cannot be read (A3_ERR_IO / A3_ERR_INPUT naming it),
// the output cannot be written (A3_ERR_IO).
a3_status a3_export_deltas(const char *checkpoint, const char *out_path,
                           const a3_export_options *opt, a3_export_report *report) A3_WARN_UNUSED;

// The architecture as a diffusers UNet2DModel config.json object (malloc'd
// JSON text, free() it): the keys a3_diffusers_load_config reads back, plus
// _class_name, act_fn, time_embedding_type and dropout.
a3_status a3_arch_to_diffusers_json(const a3_arch_config *arch, char **out) A3_WARN_UNUSED;

#endif
