// a3fta info CHECKPOINT: what a training checkpoint holds (layout in
// a3fta/trainer.h). The file is loaded as sampling loads it, so a summary
// also says that it loads; every group is then scanned for NaN or infinite
// values, which a diverged run leaves behind.
#include "a3fta/checkpoint.h"
#include "a3fta/export.h"
#include "a3fta/strategy.h"
#include "a3fta/trainer.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

// The keys a reader of a sweep most often asks a checkpoint about.
static const char *const summary_keys[] = {"strategy.name",      "strategy.adapter.rank",
                                           "strategy.lora.rank", "train.steps",
                                           "train.batch_size",   "train.lr",
                                           "train.precision",    "train.seed",
                                           "data.path",          "data.shots",
                                           "model.init"};

static bool key_applies(const a3_config *cfg, const char *key) {
  const a3_strategy_name st = cfg->strategy.name;
  if (!strcmp(key, "strategy.adapter.rank"))
    return st == A3_STRATEGY_A3FTA || st == A3_STRATEGY_ADAPTER;
  if (!strcmp(key, "strategy.lora.rank")) return st == A3_STRATEGY_LORA;
  return true;
}

static a3_status print_keys(const a3_config *cfg, FILE *f) {
  for (size_t i = 0; i < sizeof summary_keys / sizeof summary_keys[0]; i++) {
    const a3_config_key *key = a3_config_find_key(summary_keys[i]);
    if (!key || !key_applies(cfg, summary_keys[i])) continue;
    char *value = NULL;
    A3_TRY(a3_config_format_value(cfg, key, &value));
    fprintf(f, "  %-22s %s\n", summary_keys[i], value);
    free(value);
  }
  return A3_OK;
}

// The root's step and config_hash attributes.
typedef struct {
  int64_t step;
  char config_hash[32];
} root_attrs;

static a3_status read_root(const a3_ckpt_reader *r, root_attrs *out) {
  A3_TRY(a3_ckpt_read_attr_int(r, "/", "step", &out->step));
  char *hash = NULL;
  A3_TRY(a3_ckpt_read_attr_string(r, "/", "config_hash", &hash));
  snprintf(out->config_hash, sizeof out->config_hash, "%s", hash);
  free(hash);
  return A3_OK;
}

static void print_header(const char *path, const root_attrs *a, const a3_config *cfg, FILE *f) {
  struct stat st;
  const double mib = stat(path, &st) == 0 ? (double)st.st_size / (1024.0 * 1024.0) : 0.0;
  fprintf(f, "checkpoint  %s (%.1f MiB)\n", path, mib);
  fprintf(f, "step        %lld of train.steps %lld%s\n", (long long)a->step,
          (long long)cfg->train.steps, a->step < cfg->train.steps ? " (unfinished)" : "");
  char now[32];
  snprintf(now, sizeof now, "%016llx", (unsigned long long)a3_config_hash(cfg));
  // The stored hash is what sweeps and resumes compared; another a3fta
  // version may hash the same config differently.
  fprintf(f, "config      hash %s%s%s (all of it: a3fta info %s --config)\n", a->config_hash,
          strcmp(now, a->config_hash) ? ", this a3fta hashes it " : "",
          strcmp(now, a->config_hash) ? now : "", path);
}

static void print_model(const a3_strategy_stats *s, FILE *f) {
  fprintf(f, "model       %d tensors, %zu parameters", s->tensors, s->params);
  if (s->adapter_tensors) fprintf(f, " (%d adapter tensors)", s->adapter_tensors);
  if (s->lora_tensors) fprintf(f, " (%d LoRA tensors)", s->lora_tensors);
  fprintf(f, "\ntrainable   %d tensors, %zu parameters (%.2f%%)\n", s->trainable_tensors,
          s->trainable_params,
          s->params ? 100.0 * (double)s->trainable_params / (double)s->params : 0.0);
}

// One row of the group table; *bad counts the groups with non-finite values.
static a3_status print_group(const a3_ckpt_reader *r, const char *group, FILE *f, int *bad) {
  if (!a3_ckpt_has_group(r, group)) {
    fprintf(f, "  /%-12s absent\n", group);
    return A3_OK;
  }
  a3_ckpt_group_scan s;
  A3_TRY(a3_ckpt_scan_group(r, group, &s));
  fprintf(f, "  /%-12s %8d %12lld %12.4g %10lld\n", group, s.tensors, (long long)s.values,
          s.max_abs, (long long)s.nonfinite);
  if (!s.nonfinite) return A3_OK;
  ++*bad;
  fprintf(f, "  NOT FINITE: /%s holds %lld NaN or infinite values in %d tensors (first: %s)\n",
          group, (long long)s.nonfinite, s.nonfinite_tensors, s.first_nonfinite);
  return A3_OK;
}

static a3_status print_groups(const a3_ckpt_reader *r, FILE *f) {
  static const char *const groups[] = {"params", "ema", "optimizer/m", "optimizer/v"};
  fprintf(f, "  %-13s %8s %12s %12s %10s\n", "group", "tensors", "values", "max |value|",
          "non-finite");
  a3_status s = A3_OK;
  int bad = 0;
  for (size_t i = 0; s == A3_OK && i < sizeof groups / sizeof groups[0]; i++)
    s = print_group(r, groups[i], f, &bad);
  A3_TRY(s);
  fprintf(f, "values      %s\n",
          bad ? "NOT all finite: the run has most likely diverged (a lower train.lr or "
                "train.grad_clip may help)"
              : "all finite");
  return A3_OK;
}

static a3_status print_loaded(const a3_ckpt_reader *r, a3_config *cfg, a3_unet *m, FILE *f) {
  const char *path = a3_ckpt_path(r);
  root_attrs attrs;
  A3_TRY(read_root(r, &attrs));
  a3_strategy_stats stats = {0};
  A3_TRY(a3_strategy_apply(m, cfg->strategy.name, &stats));
  char base[A3_BASE_HASH_MAX];
  A3_TRY(a3_model_checkpoint_base_hash(path, base));
  print_header(path, &attrs, cfg, f);
  A3_TRY(print_keys(cfg, f));
  fprintf(f, "base model  %s\n", base);
  print_model(&stats, f);
  return print_groups(r, f);
}

a3_status a3_model_checkpoint_print(const char *path, FILE *f) {
  a3_config cfg;
  a3_unet *m = NULL;
  bool used_ema = false;
  A3_TRY(a3_model_checkpoint_load(path, false, &cfg, &m, &used_ema));
  a3_ckpt_reader *r = NULL;
  a3_status s = a3_ckpt_open(path, &r);
  if (s == A3_OK) s = print_loaded(r, &cfg, m, f);
  a3_ckpt_close(r);
  a3_unet_free(m);
  a3_config_free(&cfg);
  A3_TRY(s);
  return A3_OK;
}

a3_status a3_model_checkpoint_print_config(const char *path, FILE *f) {
  a3_ckpt_reader *r = NULL;
  A3_TRY(a3_ckpt_open(path, &r));
  char *yaml = NULL;
  const a3_status s = a3_ckpt_read_attr_string(r, "/", "config", &yaml);
  a3_ckpt_close(r);
  A3_TRY(s);
  fputs(yaml, f);
  if (yaml[0] && yaml[strlen(yaml) - 1] != '\n') fputc('\n', f);
  free(yaml);
  return A3_OK;
}
