// a3fta strategies: which parameters of a U-Net train (config strategy.name).
//
// The rules go by parameter NAME (diffusers state-dict keys), so they hold
// for any architecture and for the modules a strategy adds:
//   full       every parameter
//   attention  the base parameters of every attention block:
//              <...>.attentions.<i>.{group_norm, to_q, to_k, to_v, to_out.0}.{weight, bias}
//   a3fta      attention + the adapters
//   adapter    the adapters only (attention frozen)
//   lora       the LoRA parameters only
//   bitfit     the biases (".bias") of the base model, GroupNorm biases included
// Added modules are recognised by name:
//   adapter    <...>.attentions.<i>.adapter.<anything>   ("...adapter.down.weight",
//   "...adapter.gate") lora       a name component containing "lora" ("...to_q.lora_A.weight")
#ifndef A3FTA_STRATEGY_H
#define A3FTA_STRATEGY_H

#include "a3fta/config.h"
#include "a3fta/model.h"

#include <stdbool.h>

typedef enum {
  A3_PARAM_BASE = 0, // a parameter of diffusers' UNet2DModel itself
  A3_PARAM_ADAPTER,  // added by strategies a3fta / adapter
  A3_PARAM_LORA,     // added by strategy lora
} a3_param_origin;

a3_param_origin a3_param_origin_of(const char *name);
// A base parameter of an attention block (group_norm, to_q/k/v, to_out.0).
bool a3_param_is_attention(const char *name);
// Whether `strategy` trains the parameter called `name`.
bool a3_strategy_trains(a3_strategy_name strategy, const char *name);
const char *a3_strategy_label(a3_strategy_name strategy); // "a3fta", "full", ...

// Builds the U-Net of cfg->model.arch with the modules cfg->strategy adds
// (a3_unet_extras_from_strategy: the adapter for a3fta and adapter, LoRA for lora).
a3_status a3_strategy_build_model(const a3_config *cfg, a3_unet **out) A3_WARN_UNUSED;

typedef struct {
  int tensors, trainable_tensors;
  size_t params, trainable_params;
  int adapter_tensors, lora_tensors; // added modules present in the model
} a3_strategy_stats;

// Marks the trainable set of `strategy` in the model's table. Errors:
// A3_ERR_UNIMPLEMENTED when a3fta / adapter / lora find none of their
// modules in the model (built without them: "strategy a3fta needs adapter
// modules, not built yet");
// A3_ERR_CONFIG when the strategy would train nothing (e.g. attention on an
// architecture without attention blocks). stats may be NULL.
a3_status a3_strategy_apply(a3_unet *m, a3_strategy_name strategy,
                            a3_strategy_stats *stats) A3_WARN_UNUSED;

#endif
