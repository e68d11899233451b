// A U-Net and its training state <-> the generic checkpoint file
// (layout in a3fta/trainer.h), and model.init from a checkpoint or a
// diffusers folder.
#include "a3fta/checkpoint.h"
#include "a3fta/diffusers.h"
#include "a3fta/safetensors.h"
#include "a3fta/strategy.h"
#include "a3fta/trainer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { MAX_LOGGED_EXTRA = 5 };

static a3_ckpt_spec param_spec(const a3_param *p) {
  a3_ckpt_spec s = {p->name, p->ndim, {0}};
  for (int d = 0; d < p->ndim; d++) s.shape[d] = p->shape[d];
  return s;
}

static void hash_hex(uint64_t hash, char buf[17]) {
  snprintf(buf, 17, "%016llx", (unsigned long long)hash);
}

// ---------------------------------------------------------------- writing

// Every parameter (all = true) or the trainable ones from a compact array.
static a3_status write_group(a3_ckpt_writer *w, const char *group, a3_unet *m, bool all,
                             const float *compact) {
  const float *params = a3_unet_params(m);
  size_t off = 0;
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    if (!all && !p->trainable) continue;
    const a3_ckpt_spec spec = param_spec(p);
    A3_TRY(a3_ckpt_write_tensor(w, group, &spec, all ? params + p->offset : compact + off));
    off += p->numel;
  }
  return A3_OK;
}

static a3_status write_all(a3_ckpt_writer *w, a3_unet *m, const a3_model_ckpt *st) {
  char hex[17];
  hash_hex(st->config_hash, hex);
  A3_TRY(a3_ckpt_write_attr_string(w, "/", "config", st->config_yaml ? st->config_yaml : ""));
  A3_TRY(a3_ckpt_write_attr_string(w, "/", "config_hash", hex));
  A3_TRY(a3_ckpt_write_attr_int(w, "/", "step", st->step));
  if (st->base_model_hash)
    A3_TRY(a3_ckpt_write_attr_string(w, "/", "base_model_hash", st->base_model_hash));
  A3_TRY(write_group(w, "params", m, true, NULL));
  if (st->ema) A3_TRY(write_group(w, "ema", m, false, st->ema));
  if (st->adam_m && st->adam_v) {
    A3_TRY(write_group(w, "optimizer/m", m, false, st->adam_m));
    A3_TRY(write_group(w, "optimizer/v", m, false, st->adam_v));
    A3_TRY(a3_ckpt_write_attr_int(w, "optimizer", "step", st->step));
  }
  A3_TRY(a3_ckpt_write_attr_int(w, "rng", "seed", (int64_t)st->seed));
  A3_TRY(a3_ckpt_write_attr_int(w, "rng", "step", st->step));
  return A3_OK;
}

a3_status a3_model_checkpoint_write(const char *path, a3_unet *m, const a3_model_ckpt *st) {
  a3_ckpt_writer *w = NULL;
  A3_TRY(a3_ckpt_create(path, &w));
  a3_status s = write_all(w, m, st);
  if (s != A3_OK) {
    a3_ckpt_discard(w);
    A3_TRY(s);
  }
  A3_TRY(a3_ckpt_commit(w));
  return A3_OK;
}

// ---------------------------------------------------------------- reading sets

typedef enum {
  SET_ALL_REQUIRED, // resume and sampling: the file must hold every parameter
  SET_INIT,         // model.init: modules the strategy added may be absent
  SET_TRAINABLE,    // /ema, /optimizer: the trainable tensors, compact
} set_kind;

static void log_extra(const char *path, const char *group, char **extra, int n_extra) {
  if (n_extra == 0) return;
  char list[512] = "";
  size_t used = 0;
  for (int i = 0; i < n_extra && i < MAX_LOGGED_EXTRA && used < sizeof list; i++)
    used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", extra[i]);
  a3_warn("%s: %d tensor%s in /%s that this model does not have, ignored: %s%s", path, n_extra,
          n_extra == 1 ? "" : "s", group, list, n_extra > MAX_LOGGED_EXTRA ? ", ..." : "");
}

static a3_status read_params(a3_ckpt_reader *r, const char *group, a3_unet *m, set_kind kind,
                             float *compact) {
  const int n = a3_unet_param_count(m);
  a3_ckpt_item *items = NULL;
  A3_TRY(A3_ALLOC(items, (size_t)n + 1));
  float *params = a3_unet_params(m);
  int k = 0;
  size_t off = 0;
  for (int i = 0; i < n; i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    if (kind == SET_TRAINABLE && !p->trainable) continue;
    items[k].spec = param_spec(p);
    items[k].dst = kind == SET_TRAINABLE ? compact + off : params + p->offset;
    items[k].optional = kind == SET_INIT && a3_param_origin_of(p->name) != A3_PARAM_BASE;
    off += p->numel;
    k++;
  }
  char **extra = NULL;
  int n_extra = 0;
  a3_status s = a3_ckpt_read_set(r, group, items, k, &extra, &n_extra);
  free(items);
  A3_TRY(s);
  log_extra(a3_ckpt_path(r), group, extra, n_extra);
  a3_ckpt_free_names(extra, n_extra);
  return A3_OK;
}

// ---------------------------------------------------------------- model.init

static bool is_directory(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

// The model layer's loader checks names (new or legacy), shapes and dtypes.
static a3_status load_diffusers(a3_unet *m, const char *dir) {
  a3_diffusers_files files;
  A3_TRY(a3_diffusers_find_files(dir, &files));
  A3_TRY(a3_unet_load_safetensors(m, files.weights, NULL));
  return A3_OK;
}

static bool has_suffix(const char *s, const char *suffix) {
  const size_t n = strlen(s), k = strlen(suffix);
  return n >= k && !strcmp(s + n - k, suffix);
}

a3_status a3_model_load_init(a3_unet *m, const char *path) {
  if (is_directory(path)) {
    A3_TRY(load_diffusers(m, path));
    return A3_OK;
  }
  if (has_suffix(path, ".safetensors")) { // e.g. a base exported with `a3fta export` (EMA)
    A3_TRY(a3_unet_load_safetensors(m, path, NULL));
    return A3_OK;
  }
  a3_ckpt_reader *r = NULL;
  A3_TRY(a3_ckpt_open(path, &r));
  a3_status s = read_params(r, "params", m, SET_INIT, NULL);
  a3_ckpt_close(r);
  A3_TRY(s);
  return A3_OK;
}

// ---------------------------------------------------------------- resume

static a3_status load_config(a3_ckpt_reader *r, a3_config *cfg);

// Keys that do not change a run's numbers from a checkpoint on: where files
// go, how often it logs and saves, evaluation, sweep and rank layout, and
// model.init (the weights come from the checkpoint).
static bool resume_neutral(const char *key) {
  static const char *const prefixes[] = {"output",
                                         "eval",
                                         "sweep",
                                         "parallel",
                                         "model.init",
                                         "train.log_every",
                                         "train.checkpoint_every"};
  for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes; i++) {
    const size_t n = strlen(prefixes[i]);
    if (!strncmp(key, prefixes[i], n) && (key[n] == '\0' || key[n] == '.')) return true;
  }
  return false;
}

// The first keys (up to 3) whose values differ, into buf; 0 when none do.
static int differing_keys(const a3_config *a, const a3_config *b, char *buf, size_t size) {
  int n_keys = 0, differ = 0;
  const a3_config_key *keys = a3_config_schema(&n_keys);
  size_t used = 0;
  buf[0] = '\0';
  for (int i = 0; i < n_keys; i++) {
    if (keys[i].type == A3_KEY_SECTION || resume_neutral(keys[i].path)) continue;
    char *va = NULL, *vb = NULL;
    const bool same = a3_config_format_value(a, &keys[i], &va) == A3_OK &&
                      a3_config_format_value(b, &keys[i], &vb) == A3_OK && !strcmp(va, vb);
    if (!same && ++differ <= 3 && used < size)
      used += (size_t)snprintf(buf + used, size - used, "%s%s: %s in the checkpoint, %s now",
                               differ > 1 ? "; " : "", keys[i].path, va ? va : "?", vb ? vb : "?");
    free(va);
    free(vb);
  }
  return differ;
}

// The checkpoint must come from the same run: every key that changes the
// numbers equal (a new output.dir or log_every is fine).
static a3_status check_same_run(a3_ckpt_reader *r, const a3_config *cfg) {
  a3_config stored;
  A3_TRY(load_config(r, &stored));
  char diff[1024];
  const int n = differing_keys(&stored, cfg, diff, sizeof diff);
  a3_config_free(&stored);
  if (n == 0) return A3_OK;
  return A3_FAIL(A3_ERR_CONFIG,
                 "%s was written by another config (%s%s): resuming needs the same model, data, "
                 "strategy and train settings; remove the checkpoint or use another output.dir "
                 "to start afresh",
                 a3_ckpt_path(r), diff, n > 3 ? "; ..." : "");
}

static a3_status read_state(a3_ckpt_reader *r, a3_unet *m, const a3_config *cfg, float *adam_m,
                            float *adam_v, float *ema, int64_t *step) {
  A3_TRY(check_same_run(r, cfg));
  A3_TRY(a3_ckpt_read_attr_int(r, "/", "step", step));
  A3_TRY(read_params(r, "params", m, SET_ALL_REQUIRED, NULL));
  if (ema) A3_TRY(read_params(r, "ema", m, SET_TRAINABLE, ema));
  if (adam_m) A3_TRY(read_params(r, "optimizer/m", m, SET_TRAINABLE, adam_m));
  if (adam_v) A3_TRY(read_params(r, "optimizer/v", m, SET_TRAINABLE, adam_v));
  return A3_OK;
}

a3_status a3_model_checkpoint_read_state(const char *path, a3_unet *m, const a3_config *cfg,
                                         float *adam_m, float *adam_v, float *ema, int64_t *step) {
  a3_ckpt_reader *r = NULL;
  A3_TRY(a3_ckpt_open(path, &r));
  a3_status s = read_state(r, m, cfg, adam_m, adam_v, ema, step);
  a3_ckpt_close(r);
  A3_TRY(s);
  return A3_OK;
}

// ---------------------------------------------------------------- sampling

// Overwrites the parameters that /ema holds (the trained ones) with their EMA.
static a3_status read_ema_overlay(a3_ckpt_reader *r, a3_unet *m) {
  char **names = NULL;
  int n = 0;
  A3_TRY(a3_ckpt_list(r, "ema", &names, &n));
  a3_ckpt_item *items = NULL;
  a3_status s = a3_alloc((void **)&items, (size_t)n + 1, sizeof *items);
  for (int i = 0; s == A3_OK && i < n; i++) {
    const a3_param *p = a3_unet_param_find(m, names[i]);
    if (!p)
      s = A3_FAIL(A3_ERR_INPUT, "%s: /ema/%s is not a parameter of the model", a3_ckpt_path(r),
                  names[i]);
    else {
      items[i].spec = param_spec(p);
      items[i].dst = a3_unet_params(m) + p->offset;
    }
  }
  int n_extra = 0;
  if (s == A3_OK) s = a3_ckpt_read_set(r, "ema", items, n, NULL, &n_extra);
  free(items);
  a3_ckpt_free_names(names, n);
  A3_TRY(s);
  return A3_OK;
}

static a3_status load_config(a3_ckpt_reader *r, a3_config *cfg) {
  char *yaml = NULL;
  A3_TRY(a3_ckpt_read_attr_string(r, "/", "config", &yaml));
  char name[1100];
  snprintf(name, sizeof name, "%s: /config", a3_ckpt_path(r));
  a3_status s = a3_config_load_string(name, yaml, strlen(yaml), NULL, 0, cfg);
  free(yaml);
  A3_TRY(s);
  return A3_OK;
}

static a3_status load_for_sampling(a3_ckpt_reader *r, bool use_ema, a3_config *cfg, a3_unet **out,
                                   bool *used_ema) {
  A3_TRY(load_config(r, cfg));
  a3_status s = a3_strategy_build_model(cfg, out);
  if (s == A3_OK) s = read_params(r, "params", *out, SET_ALL_REQUIRED, NULL);
  *used_ema = use_ema && a3_ckpt_has_group(r, "ema");
  if (s == A3_OK && *used_ema) s = read_ema_overlay(r, *out);
  if (s != A3_OK) {
    a3_unet_free(*out);
    *out = NULL;
    a3_config_free(cfg);
    A3_TRY(s);
  }
  return A3_OK;
}

a3_status a3_model_checkpoint_load(const char *path, bool use_ema, a3_config *cfg, a3_unet **out,
                                   bool *used_ema) {
  *out = NULL;
  *used_ema = false;
  a3_ckpt_reader *r = NULL;
  A3_TRY(a3_ckpt_open(path, &r));
  a3_status s = load_for_sampling(r, use_ema, cfg, out, used_ema);
  a3_ckpt_close(r);
  A3_TRY(s);
  return A3_OK;
}
