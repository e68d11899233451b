// The trained tensors of a checkpoint as a safetensors "deltas" file, and the
// base model hash (layout and metadata in a3fta/export.h).
#include "a3fta/export.h"

#include "a3fta/build_info.h"
#include "a3fta/checkpoint.h"
#include "a3fta/config.h"
#include "a3fta/safetensors.h"
#include "a3fta/strategy.h"
#include "a3fta/trainer.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- base model hash

static uint64_t hash_u32_le(uint64_t h, uint32_t v) {
  const unsigned char b[4] = {(unsigned char)v, (unsigned char)(v >> 8), (unsigned char)(v >> 16),
                              (unsigned char)(v >> 24)};
  return a3_hash64(b, sizeof b, h);
}

// float32 little-endian bytes, whatever the host's byte order.
static uint64_t hash_floats_le(uint64_t h, const float *x, size_t n) {
  enum { CHUNK = 1024 };
  unsigned char buf[4 * CHUNK];
  for (size_t i = 0; i < n; i += CHUNK) {
    const size_t k = n - i < CHUNK ? n - i : CHUNK;
    for (size_t j = 0; j < k; j++) {
      uint32_t u;
      memcpy(&u, &x[i + j], sizeof u);
      buf[4 * j] = (unsigned char)u;
      buf[4 * j + 1] = (unsigned char)(u >> 8);
      buf[4 * j + 2] = (unsigned char)(u >> 16);
      buf[4 * j + 3] = (unsigned char)(u >> 24);
    }
    h = a3_hash64(buf, 4 * k, h);
  }
  return h;
}

uint64_t a3_unet_base_hash(const a3_unet *m) {
  // a3_unet_params takes a non-const model; the values are only read.
  const float *params = a3_unet_params((a3_unet *)m);
  uint64_t h = A3_HASH_SEED;
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    if (p->added) continue;
    h = a3_hash64(p->name, strlen(p->name) + 1, h);
    for (int d = 0; d < p->ndim; d++) h = hash_u32_le(h, (uint32_t)p->shape[d]);
    h = hash_floats_le(h, params + p->offset, p->numel);
  }
  return h;
}

void a3_base_model_hash_text(const a3_unet *m, const char *model_init, char out[A3_BASE_HASH_MAX]) {
  if (!model_init || !strcmp(model_init, "random"))
    snprintf(out, A3_BASE_HASH_MAX, "random");
  else
    snprintf(out, A3_BASE_HASH_MAX, "%016llx", (unsigned long long)a3_unet_base_hash(m));
}

// An optional string attribute of the root: "" when absent.
static a3_status read_optional_attr(a3_ckpt_reader *r, const char *name, char *out, size_t size) {
  char *value = NULL;
  out[0] = '\0';
  const a3_status s = a3_ckpt_read_attr_string(r, "/", name, &value);
  if (s == A3_ERR_INPUT) { // missing (or not a string): the caller decides
    a3_error_clear();
    return A3_OK;
  }
  A3_TRY(s);
  snprintf(out, size, "%s", value);
  free(value);
  return A3_OK;
}

a3_status a3_model_checkpoint_base_hash(const char *path, char out[A3_BASE_HASH_MAX]) {
  a3_ckpt_reader *r = NULL;
  A3_TRY(a3_ckpt_open(path, &r));
  const a3_status s = read_optional_attr(r, "base_model_hash", out, A3_BASE_HASH_MAX);
  a3_ckpt_close(r);
  A3_TRY(s);
  if (!out[0]) snprintf(out, A3_BASE_HASH_MAX, "unknown");
  return A3_OK;
}

// ---------------------------------------------------------------- diffusers config.json

static const char *enum_name(const char *key_path, int value) {
  const a3_config_key *k = a3_config_find_key(key_path);
  return k && value >= 0 && value < k->n_names ? k->names[value] : "?";
}

static a3_status add_json(cJSON *obj, const char *key, cJSON *item) {
  if (!item || !cJSON_AddItemToObject(obj, key, item)) {
    cJSON_Delete(item);
    return A3_FAIL(A3_ERR_NOMEM, "out of memory building the unet_config JSON");
  }
  return A3_OK;
}

static a3_status fill_arch_json(cJSON *o, const a3_arch_config *a) {
  A3_TRY(add_json(o, "_class_name", cJSON_CreateString("UNet2DModel")));
  A3_TRY(add_json(o, "sample_size", cJSON_CreateNumber((double)a->sample_size)));
  A3_TRY(add_json(o, "in_channels", cJSON_CreateNumber((double)a->in_channels)));
  A3_TRY(add_json(o, "out_channels", cJSON_CreateNumber((double)a->out_channels)));
  cJSON *ch = cJSON_CreateArray(), *down = cJSON_CreateArray(), *up = cJSON_CreateArray();
  for (int i = 0; ch && i < a->n_block_out_channels; i++)
    cJSON_AddItemToArray(ch, cJSON_CreateNumber((double)a->block_out_channels[i]));
  for (int i = 0; down && i < a->n_down_block_types; i++)
    cJSON_AddItemToArray(down, cJSON_CreateString(enum_name("model.arch.down_block_types",
                                                            (int)a->down_block_types[i])));
  for (int i = 0; up && i < a->n_up_block_types; i++)
    cJSON_AddItemToArray(
        up, cJSON_CreateString(enum_name("model.arch.up_block_types", (int)a->up_block_types[i])));
  A3_TRY(add_json(o, "block_out_channels", ch));
  A3_TRY(add_json(o, "down_block_types", down));
  A3_TRY(add_json(o, "up_block_types", up));
  A3_TRY(add_json(o, "layers_per_block", cJSON_CreateNumber((double)a->layers_per_block)));
  A3_TRY(add_json(o, "norm_num_groups", cJSON_CreateNumber((double)a->norm_num_groups)));
  A3_TRY(add_json(o, "norm_eps", cJSON_CreateNumber(a->norm_eps)));
  A3_TRY(add_json(o, "attention_head_dim",
                  a->attention_head_dim ? cJSON_CreateNumber((double)a->attention_head_dim)
                                        : cJSON_CreateNull()));
  A3_TRY(add_json(o, "downsample_padding", cJSON_CreateNumber((double)a->downsample_padding)));
  A3_TRY(add_json(o, "flip_sin_to_cos", cJSON_CreateBool(a->flip_sin_to_cos)));
  A3_TRY(add_json(o, "freq_shift", cJSON_CreateNumber((double)a->freq_shift)));
  A3_TRY(add_json(o, "time_embedding_type",
                  cJSON_CreateString(
                      enum_name("model.arch.time_embedding_type", (int)a->time_embedding_type))));
  A3_TRY(add_json(o, "act_fn", cJSON_CreateString(enum_name("model.arch.act_fn", (int)a->act_fn))));
  A3_TRY(add_json(o, "center_input_sample", cJSON_CreateBool(a->center_input_sample)));
  A3_TRY(add_json(o, "mid_block_scale_factor", cJSON_CreateNumber(a->mid_block_scale_factor)));
  A3_TRY(add_json(o, "dropout", cJSON_CreateNumber(a->dropout)));
  return A3_OK;
}

a3_status a3_arch_to_diffusers_json(const a3_arch_config *arch, char **out) {
  *out = NULL;
  cJSON *o = cJSON_CreateObject();
  if (!o) return A3_FAIL(A3_ERR_NOMEM, "out of memory building the unet_config JSON");
  a3_status s = fill_arch_json(o, arch);
  if (s == A3_OK) {
    *out = cJSON_PrintUnformatted(o);
    if (!*out) s = A3_FAIL(A3_ERR_NOMEM, "out of memory printing the unet_config JSON");
  }
  cJSON_Delete(o);
  A3_TRY(s);
  return A3_OK;
}

// ---------------------------------------------------------------- export

enum { MAX_META = 24, VALUE_MAX = 64 };

typedef struct {
  a3_st_metadata items[MAX_META];
  char values[MAX_META][VALUE_MAX]; // short values live here
  int n;
} meta_list;

static void meta_add(meta_list *l, const char *key, const char *value) {
  if (l->n < MAX_META) l->items[l->n++] = (a3_st_metadata){key, value};
}

// A short value, copied into the list.
static void meta_add_copy(meta_list *l, const char *key, const char *value) {
  if (l->n >= MAX_META) return;
  snprintf(l->values[l->n], VALUE_MAX, "%s", value);
  meta_add(l, key, l->values[l->n]);
}

// One config key's canonical YAML text ("8", "gelu", "4.0", "false").
static a3_status meta_add_key(meta_list *l, const char *name, const a3_config *cfg,
                              const char *key_path) {
  char *text = NULL;
  A3_TRY(a3_config_format_value(cfg, a3_config_find_key(key_path), &text));
  meta_add_copy(l, name, text);
  free(text);
  return A3_OK;
}

static a3_status strategy_meta(meta_list *l, const a3_config *cfg) {
  switch (cfg->strategy.name) {
  case A3_STRATEGY_A3FTA:
  case A3_STRATEGY_ADAPTER:
    A3_TRY(meta_add_key(l, "adapter_rank", cfg, "strategy.adapter.rank"));
    A3_TRY(meta_add_key(l, "adapter_activation", cfg, "strategy.adapter.activation"));
    A3_TRY(meta_add_key(l, "adapter_placement", cfg, "strategy.adapter.placement"));
    A3_TRY(meta_add_key(l, "adapter_gate", cfg, "strategy.adapter.gate"));
    break;
  case A3_STRATEGY_LORA:
    A3_TRY(meta_add_key(l, "lora_rank", cfg, "strategy.lora.rank"));
    A3_TRY(meta_add_key(l, "lora_alpha", cfg, "strategy.lora.alpha"));
    break;
  case A3_STRATEGY_FULL:
  case A3_STRATEGY_ATTENTION:
  case A3_STRATEGY_BITFIT: break;
  }
  return A3_OK;
}

typedef struct {
  const char *checkpoint, *out_path;
  a3_config cfg;
  a3_unet *m;
  bool used_ema;
  int64_t step;
  char config_hash[24], base_hash[A3_BASE_HASH_MAX];
  char *yaml, *arch_json;
  a3_st_f32_tensor *tensors;
  int64_t (*shapes)[A3_PARAM_MAX_DIMS];
  int n_tensors;
  size_t n_params;
} export_job;

static a3_status read_attrs(export_job *j) {
  a3_ckpt_reader *r = NULL;
  A3_TRY(a3_ckpt_open(j->checkpoint, &r));
  a3_status s = read_optional_attr(r, "base_model_hash", j->base_hash, sizeof j->base_hash);
  if (s == A3_OK) s = read_optional_attr(r, "config_hash", j->config_hash, sizeof j->config_hash);
  if (s == A3_OK) s = a3_ckpt_read_attr_int(r, "/", "step", &j->step);
  a3_ckpt_close(r);
  A3_TRY(s);
  if (!j->base_hash[0]) {
    snprintf(j->base_hash, sizeof j->base_hash, "unknown");
    a3_warn("%s records no base_model_hash (written by an older a3fta): the deltas say "
            "base_model_hash \"unknown\"",
            j->checkpoint);
  }
  return A3_OK;
}

static a3_status collect_tensors(export_job *j) {
  const int n = a3_unet_param_count(j->m);
  A3_TRY(A3_ALLOC(j->tensors, (size_t)n + 1));
  A3_TRY(A3_ALLOC(j->shapes, (size_t)n + 1));
  const float *params = a3_unet_params(j->m);
  for (int i = 0; i < n; i++) {
    const a3_param *p = a3_unet_param_at(j->m, i);
    if (!a3_strategy_trains(j->cfg.strategy.name, p->name)) continue;
    const int k = j->n_tensors++;
    for (int d = 0; d < p->ndim; d++) j->shapes[k][d] = p->shape[d];
    j->tensors[k] = (a3_st_f32_tensor){p->name, p->ndim, j->shapes[k], params + p->offset};
    j->n_params += p->numel;
  }
  if (j->n_tensors == 0)
    return A3_FAIL(A3_ERR_INPUT, "%s: strategy %s trained no parameter of this model",
                   j->checkpoint, a3_strategy_label(j->cfg.strategy.name));
  return A3_OK;
}

static a3_status write_deltas(export_job *j) {
  meta_list l = {0};
  char step[32], version[8];
  snprintf(step, sizeof step, "%lld", (long long)j->step);
  snprintf(version, sizeof version, "%d", A3_DELTAS_FORMAT_VERSION);
  meta_add(&l, "format", "pt");
  meta_add(&l, "a3fta_format", A3_DELTAS_FORMAT);
  meta_add(&l, "a3fta_format_version", version);
  meta_add(&l, "a3fta_version", A3FTA_VERSION_STRING);
  meta_add(&l, "a3fta_git", A3FTA_GIT_COMMIT);
  meta_add(&l, "strategy", a3_strategy_label(j->cfg.strategy.name));
  meta_add(&l, "apply", "replace");
  meta_add(&l, "weights", j->used_ema ? "ema" : "raw");
  meta_add(&l, "step", step);
  meta_add(&l, "config_hash", j->config_hash);
  meta_add(&l, "config", j->yaml);
  meta_add(&l, "base_model", j->cfg.model.init);
  meta_add(&l, "base_model_hash", j->base_hash);
  meta_add(&l, "unet_config", j->arch_json);
  A3_TRY(strategy_meta(&l, &j->cfg));
  A3_TRY(a3_safetensors_write_f32(j->out_path, j->tensors, j->n_tensors, l.items, l.n));
  return A3_OK;
}

static a3_status run_export(export_job *j, const a3_export_options *opt) {
  A3_TRY(read_attrs(j));
  A3_TRY(a3_model_checkpoint_load(j->checkpoint, opt ? opt->use_ema : true, &j->cfg, &j->m,
                                  &j->used_ema));
  if (!j->config_hash[0])
    snprintf(j->config_hash, sizeof j->config_hash, "%016llx",
             (unsigned long long)a3_config_hash(&j->cfg));
  A3_TRY(a3_config_to_yaml(&j->cfg, &j->yaml, NULL));
  A3_TRY(a3_arch_to_diffusers_json(&j->cfg.model.arch, &j->arch_json));
  A3_TRY(collect_tensors(j));
  A3_TRY(write_deltas(j));
  return A3_OK;
}

a3_status a3_export_deltas(const char *checkpoint, const char *out_path,
                           const a3_export_options *opt, a3_export_report *report) {
  export_job j = {.checkpoint = checkpoint, .out_path = out_path};
  a3_config_init_defaults(&j.cfg); // owns nothing until the checkpoint's config replaces it
  const a3_status s = run_export(&j, opt);
  if (s == A3_OK && report) {
    memset(report, 0, sizeof *report);
    report->tensors = j.n_tensors;
    report->params = j.n_params;
    report->used_ema = j.used_ema;
    report->step = j.step;
    snprintf(report->strategy, sizeof report->strategy, "%s",
             a3_strategy_label(j.cfg.strategy.name));
    snprintf(report->base_model_hash, sizeof report->base_model_hash, "%s", j.base_hash);
    snprintf(report->config_hash, sizeof report->config_hash, "%s", j.config_hash);
  }
  free(j.tensors);
  free(j.shapes);
  free(j.yaml);
  free(j.arch_json);
  a3_unet_free(j.m);
  a3_config_free(&j.cfg);
  A3_TRY(s);
  return A3_OK;
}
