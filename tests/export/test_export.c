// Export and base model hash in C: the hash covers the base parameters only
// (not the adapter/LoRA ones) and every value; training records it in the
// checkpoint (the base's hash for a fine-tune, "random" for a random init)
// and keeps it across a resume even if the base file changed meanwhile;
// a3_export_deltas writes the trained tensors with the metadata; an old
// checkpoint without the attribute exports as "unknown"; the diffusers JSON
// of the architecture reads back as the same architecture.
#include "a3fta/checkpoint.h"
#include "a3fta/diffusers.h"
#include "a3fta/export.h"
#include "a3fta/safetensors.h"
#include "a3fta/strategy.h"
#include "io/io_test_util.h"
#include "test_util.h"
#include "trainer_test_util.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;
static char data[4200];

static int load(a3_config *cfg, const char *sub, const char *const *extra, int n_extra) {
  const int rc = tt_config(cfg, data, io_path(dir, sub), extra, n_extra);
  CHECK(rc == 0);
  return rc;
}

static void attr_of(const char *path, char out[A3_BASE_HASH_MAX]) {
  out[0] = '\0';
  const a3_status s = a3_model_checkpoint_base_hash(path, out);
  if (s != A3_OK) a3_log_error_status(s);
  CHECK(s == A3_OK);
}

// The hash of the base parameters of a checkpoint's /params (raw weights).
static uint64_t params_hash(const char *path) {
  a3_config cfg;
  a3_unet *m = NULL;
  bool used_ema = true;
  if (a3_model_checkpoint_load(path, false, &cfg, &m, &used_ema) != A3_OK) {
    CHECK(0);
    return 0;
  }
  const uint64_t h = a3_unet_base_hash(m);
  a3_unet_free(m);
  a3_config_free(&cfg);
  return h;
}

static void test_hash_covers_base_only(void) {
  a3_config cfg;
  if (load(&cfg, "unused", NULL, 0)) return;
  const a3_unet_extras extras = {.adapter_rank = 4, .adapter_activation = A3_ACT_GELU};
  a3_unet *plain = NULL, *with = NULL;
  CHECK(a3_unet_build(&cfg.model.arch, &plain) == A3_OK);
  CHECK(a3_unet_build_ex(&cfg.model.arch, &extras, &with) == A3_OK);
  if (plain && with) {
    a3_unet_init_random(plain, 3);
    a3_unet_init_random(with, 3);
    const uint64_t h = a3_unet_base_hash(plain);
    CHECK(h == a3_unet_base_hash(with)); // same base weights, extras ignored
    const a3_param *up = a3_unet_param_find(with, "mid_block.attentions.0.adapter.up.weight");
    CHECK(up != NULL);
    if (up) a3_unet_params(with)[up->offset] = 0.5f; // a trained adapter: same base
    CHECK(h == a3_unet_base_hash(with));
    a3_unet_params(plain)[a3_unet_num_floats(plain) - 1] += 1e-7f; // one base value
    CHECK(h != a3_unet_base_hash(plain));
    char text[A3_BASE_HASH_MAX];
    a3_base_model_hash_text(with, "random", text);
    CHECK(!strcmp(text, "random"));
    a3_base_model_hash_text(with, "base.h5", text);
    char want[A3_BASE_HASH_MAX];
    snprintf(want, sizeof want, "%016llx", (unsigned long long)h);
    CHECK(!strcmp(text, want));
  }
  a3_unet_free(plain);
  a3_unet_free(with);
  a3_config_free(&cfg);
}

static void test_recorded_and_resumed(void) {
  a3_config base, other, ft;
  tt_losses l;
  const char *short_run[] = {"train.steps=4", "data.classes=[0]"};
  const char *other_run[] = {"train.steps=4", "data.classes=[0]", "train.seed=9"};
  if (load(&base, "base", short_run, 2) || load(&other, "other", other_run, 3)) return;
  CHECK(tt_train(&base, MPI_COMM_WORLD, 0, 0, &l) == 0);
  CHECK(tt_train(&other, MPI_COMM_WORLD, 0, 0, &l) == 0);
  char got[A3_BASE_HASH_MAX], want[A3_BASE_HASH_MAX];
  attr_of(io_path(dir, "base/checkpoint.h5"), got);
  CHECK_MSG(!strcmp(got, "random"), "pretraining from random weights records '%s'", got);

  // The fine-tune copies the base to init.h5 and starts from it.
  char init_o[4300];
  const char *init = io_path(dir, "init.h5");
  CHECK(rename(io_path(dir, "base/checkpoint.h5"), init) == 0);
  snprintf(init_o, sizeof init_o, "model.init=%s", init);
  const char *ft_run[] = {init_o, "strategy.name=a3fta", "train.steps=6",
                          "train.checkpoint_every=3"};
  if (load(&ft, "ft", ft_run, 4)) return;
  snprintf(want, sizeof want, "%016llx", (unsigned long long)params_hash(init));
  CHECK(tt_train(&ft, MPI_COMM_WORLD, 0, 3, &l) == 0); // killed after step 3
  attr_of(io_path(dir, "ft/checkpoint.h5"), got);
  CHECK_MSG(!strcmp(got, want), "fine-tune records %s, the base's hash is %s", got, want);
  // The base file is replaced by other weights: the resumed run's base is still the first.
  CHECK(rename(io_path(dir, "other/checkpoint.h5"), init) == 0);
  CHECK(tt_train(&ft, MPI_COMM_WORLD, 1, 0, &l) == 0);
  CHECK(l.n == 3 && l.step[0] == 4);
  attr_of(io_path(dir, "ft/checkpoint.h5"), got);
  CHECK_MSG(!strcmp(got, want), "resumed fine-tune records %s, its base's hash is %s", got, want);
  a3_config_free(&base);
  a3_config_free(&other);
  a3_config_free(&ft);
}

static void test_export_api(void) {
  const char *ckpt = io_path(dir, "ft/checkpoint.h5");
  char out[4200];
  snprintf(out, sizeof out, "%s", io_path(dir, "ft.safetensors"));
  a3_export_report rep;
  const a3_export_options opt = {.use_ema = true};
  a3_status s = a3_export_deltas(ckpt, out, &opt, &rep);
  if (s != A3_OK) a3_log_error_status(s);
  CHECK(s == A3_OK);
  if (s != A3_OK) return;
  CHECK(rep.used_ema && rep.step == 6 && !strcmp(rep.strategy, "a3fta"));
  char want[A3_BASE_HASH_MAX];
  attr_of(ckpt, want);
  CHECK(!strcmp(rep.base_model_hash, want));

  // The tensors: exactly what a3fta trains, with the EMA's values.
  a3_config cfg;
  a3_unet *m = NULL;
  bool used_ema = false;
  a3_safetensors *st = NULL;
  CHECK(a3_model_checkpoint_load(ckpt, true, &cfg, &m, &used_ema) == A3_OK && used_ema);
  CHECK(a3_safetensors_open(out, &st) == A3_OK);
  if (!m || !st) return;
  int trained = 0;
  size_t floats = 0;
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    const a3_st_tensor *t = a3_safetensors_find(st, p->name);
    const bool want_it = a3_strategy_trains(A3_STRATEGY_A3FTA, p->name);
    CHECK_MSG((t != NULL) == want_it, "%s: %s", p->name, t ? "exported" : "missing");
    if (!t) continue;
    trained++;
    floats += p->numel;
    float *v = malloc(p->numel * sizeof *v);
    CHECK(v && a3_safetensors_read_f32(st, t, v, (int64_t)p->numel) == A3_OK);
    CHECK_MSG(v && !memcmp(v, a3_unet_params(m) + p->offset, p->numel * sizeof *v),
              "%s: values differ from the EMA's", p->name);
    free(v);
  }
  CHECK(a3_safetensors_count(st) == trained && rep.tensors == trained && rep.params == floats);
  const char *meta[][2] = {{"strategy", "a3fta"},
                           {"weights", "ema"},
                           {"adapter_rank", "8"},
                           {"adapter_activation", "gelu"},
                           {"adapter_placement", "pre_out"},
                           {"adapter_gate", "false"},
                           {"format", "pt"},
                           {"a3fta_format", A3_DELTAS_FORMAT},
                           {"step", "6"},
                           {"apply", "replace"}};
  for (size_t i = 0; i < sizeof meta / sizeof *meta; i++) {
    const char *v = a3_safetensors_metadata_get(st, meta[i][0]);
    CHECK_MSG(v && !strcmp(v, meta[i][1]), "metadata %s = %s, expected %s", meta[i][0],
              v ? v : "(absent)", meta[i][1]);
  }
  const char *bh = a3_safetensors_metadata_get(st, "base_model_hash");
  CHECK(bh && !strcmp(bh, want));
  CHECK(a3_safetensors_metadata_get(st, "lora_rank") == NULL);
  const char *cfg_text = a3_safetensors_metadata_get(st, "config");
  a3_config back;
  CHECK(cfg_text &&
        a3_config_load_string("meta", cfg_text, strlen(cfg_text), NULL, 0, &back) == A3_OK);
  if (cfg_text) {
    CHECK(a3_config_equal(&back, &cfg));
    a3_config_free(&back);
  }
  a3_safetensors_close(st);

  // --no-ema: the raw weights.
  CHECK(a3_export_deltas(ckpt, out, &(a3_export_options){.use_ema = false}, &rep) == A3_OK);
  CHECK(!rep.used_ema);
  a3_unet_free(m);
  a3_config_free(&cfg);
}

// A checkpoint written without base_model_hash (an older a3fta): "unknown".
static void test_unknown_base(void) {
  a3_config cfg;
  const char *lora[] = {"strategy.name=lora"};
  if (load(&cfg, "old", lora, 1)) return;
  a3_unet *m = NULL;
  CHECK(a3_strategy_build_model(&cfg, &m) == A3_OK);
  if (!m) return;
  a3_unet_init_random(m, 1);
  char *yaml = NULL;
  CHECK(a3_config_to_yaml(&cfg, &yaml, NULL) == A3_OK);
  const a3_model_ckpt st = {yaml, a3_config_hash(&cfg), 2, 0, NULL, NULL, NULL, NULL};
  const char *path = io_path(dir, "old.h5");
  CHECK(a3_model_checkpoint_write(path, m, &st) == A3_OK);
  char got[A3_BASE_HASH_MAX];
  attr_of(path, got);
  CHECK(!strcmp(got, "unknown"));
  a3_export_report rep;
  char out[4200];
  snprintf(out, sizeof out, "%s", io_path(dir, "old.safetensors"));
  CHECK(a3_export_deltas(path, out, &(a3_export_options){.use_ema = true}, &rep) == A3_OK);
  CHECK(!strcmp(rep.base_model_hash, "unknown") && !rep.used_ema && rep.step == 2);
  CHECK(!strcmp(rep.strategy, "lora") && rep.tensors == 4 * 2 * 4); // q,k,v,out x A,B x 4 blocks
  a3_safetensors *sf = NULL;
  CHECK(a3_safetensors_open(out, &sf) == A3_OK);
  if (sf) {
    const char *r = a3_safetensors_metadata_get(sf, "lora_rank");
    const char *al = a3_safetensors_metadata_get(sf, "lora_alpha");
    CHECK(r && !strcmp(r, "4") && al && !strcmp(al, "4.0"));
    CHECK(a3_safetensors_metadata_get(sf, "adapter_rank") == NULL);
    a3_safetensors_close(sf);
  }
  // Not a checkpoint: an error naming the file, no output.
  char bad[4200];
  snprintf(bad, sizeof bad, "%s", io_path(dir, "bad.safetensors"));
  CHECK(a3_export_deltas(data, bad, NULL, NULL) == A3_ERR_INPUT);
  CHECK(strstr(a3_error_message(), "data.h5") != NULL);
  CHECK(!io_exists(bad));
  a3_error_clear();
  free(yaml);
  a3_unet_free(m);
  a3_config_free(&cfg);
}

// unet_config reads back (a3_diffusers_load_config) as the same architecture.
static void test_arch_json_round_trip(void) {
  const char *variants[][3] = {
      {"model.arch.attention_head_dim=8", "model.arch.flip_sin_to_cos=false",
       "model.arch.norm_eps=1.0e-6"},
      {"model.arch.center_input_sample=true", "model.arch.mid_block_scale_factor=1.5",
       "model.arch.downsample_padding=0"},
  };
  for (size_t v = 0; v < sizeof variants / sizeof *variants; v++) {
    a3_config cfg, back;
    if (load(&cfg, "unused", variants[v], 3)) return;
    if (load(&back, "unused", NULL, 0)) return;
    char *json = NULL;
    CHECK(a3_arch_to_diffusers_json(&cfg.model.arch, &json) == A3_OK);
    const char *path = io_path(dir, "config.json");
    CHECK(json && io_write_file(path, json, strlen(json)) == 0);
    back.model.arch.sample_size = 0; // must come from the JSON
    const a3_status s = a3_diffusers_load_config(path, &back);
    if (s != A3_OK) a3_log_error_status(s);
    CHECK(s == A3_OK);
    CHECK_MSG(a3_config_equal(&cfg, &back), "variant %zu: %s", v, json ? json : "");
    free(json);
    a3_config_free(&cfg);
    a3_config_free(&back);
  }
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  a3_log_set_level(A3_LOG_ERROR);
  dir = io_make_temp_dir("export");
  CHECK(dir != NULL);
  if (dir) {
    snprintf(data, sizeof data, "%s", io_path(dir, "data.h5"));
    CHECK(tt_make_dataset(data) == 0);
    test_hash_covers_base_only();
    test_recorded_and_resumed();
    test_export_api();
    test_unknown_base();
    test_arch_json_round_trip();
    io_remove_tree(dir);
    free(dir);
  }
  MPI_Finalize();
  return TEST_DONE("test_export");
}
