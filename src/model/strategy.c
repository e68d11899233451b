// Trainable-set rules of the strategies, by parameter name (a3fta/strategy.h).
#include "a3fta/strategy.h"

#include <ctype.h>
#include <string.h>

static const char *const strategy_labels[] = {"full",    "attention", "a3fta",
                                              "adapter", "lora",      "bitfit"};

const char *a3_strategy_label(a3_strategy_name strategy) {
  const int i = (int)strategy;
  return i >= 0 && i < (int)(sizeof strategy_labels / sizeof *strategy_labels) ? strategy_labels[i]
                                                                               : "?";
}

// The part after "attentions.<i>." ("to_q.weight"), or NULL when the name
// is not inside an attention block.
static const char *attention_suffix(const char *name) {
  for (const char *p = strstr(name, "attentions."); p; p = strstr(p + 1, "attentions.")) {
    if (p != name && p[-1] != '.') continue;
    const char *q = p + strlen("attentions.");
    if (!isdigit((unsigned char)*q)) continue;
    while (isdigit((unsigned char)*q)) q++;
    if (*q == '.') return q + 1;
  }
  return NULL;
}

// No base UNet2DModel name contains "lora"; every LoRA naming in use does
// ("to_q.lora_A.weight", "to_q_lora.down.weight", "lora.up.weight").
static bool has_lora_component(const char *name) { return strstr(name, "lora") != NULL; }

a3_param_origin a3_param_origin_of(const char *name) {
  if (has_lora_component(name)) return A3_PARAM_LORA;
  const char *suffix = attention_suffix(name);
  if (suffix && !strncmp(suffix, "adapter.", strlen("adapter."))) return A3_PARAM_ADAPTER;
  return A3_PARAM_BASE;
}

bool a3_param_is_attention(const char *name) {
  static const char *const leaves[] = {
      "group_norm.weight", "group_norm.bias", "to_q.weight", "to_q.bias",       "to_k.weight",
      "to_k.bias",         "to_v.weight",     "to_v.bias",   "to_out.0.weight", "to_out.0.bias",
  };
  const char *suffix = attention_suffix(name);
  if (!suffix) return false;
  for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++)
    if (!strcmp(suffix, leaves[i])) return true;
  return false;
}

static bool ends_with(const char *s, const char *tail) {
  const size_t n = strlen(s), k = strlen(tail);
  return n >= k && !strcmp(s + n - k, tail);
}

bool a3_strategy_trains(a3_strategy_name strategy, const char *name) {
  const a3_param_origin origin = a3_param_origin_of(name);
  switch (strategy) {
  case A3_STRATEGY_FULL: return true;
  case A3_STRATEGY_ATTENTION: return a3_param_is_attention(name);
  case A3_STRATEGY_A3FTA: return origin == A3_PARAM_ADAPTER || a3_param_is_attention(name);
  case A3_STRATEGY_ADAPTER: return origin == A3_PARAM_ADAPTER;
  case A3_STRATEGY_LORA: return origin == A3_PARAM_LORA;
  case A3_STRATEGY_BITFIT: return origin == A3_PARAM_BASE && ends_with(name, ".bias");
  }
  return false;
}

a3_status a3_strategy_build_model(const a3_config *cfg, a3_unet **out) {
  const a3_unet_extras extras = a3_unet_extras_from_strategy(&cfg->strategy);
  A3_TRY(a3_unet_build_ex(&cfg->model.arch, &extras, out));
  return A3_OK;
}

static a3_strategy_stats count(const a3_unet *m) {
  a3_strategy_stats st = {0};
  st.tensors = a3_unet_param_count(m);
  for (int i = 0; i < st.tensors; i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    const a3_param_origin origin = a3_param_origin_of(p->name);
    st.params += p->numel;
    st.adapter_tensors += origin == A3_PARAM_ADAPTER;
    st.lora_tensors += origin == A3_PARAM_LORA;
    if (!p->trainable) continue;
    st.trainable_tensors++;
    st.trainable_params += p->numel;
  }
  return st;
}

// The added modules a strategy depends on must exist before it can train.
static a3_status check_modules(a3_strategy_name strategy, const a3_strategy_stats *st) {
  const bool wants_adapter = strategy == A3_STRATEGY_A3FTA || strategy == A3_STRATEGY_ADAPTER;
  if (wants_adapter && st->adapter_tensors == 0)
    return A3_FAIL(A3_ERR_UNIMPLEMENTED,
                   "strategy %s needs adapter modules, not built yet (the model has no "
                   "'<block>.attentions.<i>.adapter.*' parameters); use strategy attention, "
                   "full or bitfit for now",
                   a3_strategy_label(strategy));
  if (strategy == A3_STRATEGY_LORA && st->lora_tensors == 0)
    return A3_FAIL(A3_ERR_UNIMPLEMENTED,
                   "strategy lora needs LoRA modules, not built yet (the model has no "
                   "'*.lora_*' parameters); use strategy attention, full or bitfit for now");
  return A3_OK;
}

a3_status a3_strategy_apply(a3_unet *m, a3_strategy_name strategy, a3_strategy_stats *stats) {
  const int n = a3_unet_param_count(m);
  for (int i = 0; i < n; i++)
    a3_unet_set_trainable(m, i, a3_strategy_trains(strategy, a3_unet_param_at(m, i)->name));
  const a3_strategy_stats st = count(m);
  if (stats) *stats = st;
  A3_TRY(check_modules(strategy, &st));
  if (st.trainable_tensors == 0)
    return A3_FAIL(A3_ERR_CONFIG,
                   "strategy.name: %s trains no parameter of this architecture (%s); choose "
                   "another strategy or add attention blocks (AttnDownBlock2D / AttnUpBlock2D)",
                   a3_strategy_label(strategy),
                   strategy == A3_STRATEGY_BITFIT ? "it has no biases" : "no attention blocks");
  return A3_OK;
}
