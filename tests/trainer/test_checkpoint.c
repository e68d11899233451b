// Checkpoint files: the generic named-tensor file (round trip bitwise,
// errors naming the dataset path, atomic replacement) and the model mapping
// (params, AdamW moments, EMA, step; config hash check; model.init rules).
#define _POSIX_C_SOURCE 200809L // open_memstream
#include "a3fta/checkpoint.h"
#include "a3fta/diffusers.h"
#include "a3fta/safetensors.h"
#include "a3fta/strategy.h"
#include "a3fta/trainer.h"
#include "io/io_test_util.h"
#include "test_util.h"
#include "trainer_test_util.h"

#include <math.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void fill(float *x, int64_t n, uint64_t seed) {
  for (int64_t i = 0; i < n; i++)
    x[i] = (float)((double)(a3_rng_u64(seed, 1, (uint64_t)i) >> 11) * 0x1p-53 * 2.0 - 1.0);
}

static int has(const char *haystack, const char *needle) {
  return strstr(haystack, needle) != NULL;
}

static int write_generic(const char *path, const float *a, const float *b, const float *c) {
  a3_ckpt_writer *w = NULL;
  const a3_ckpt_spec sa = {"down_blocks.0.resnets.0.conv1.weight", 4, {8, 4, 3, 3}};
  const a3_ckpt_spec sb = {"conv_in.bias", 1, {8}};
  const a3_ckpt_spec sc = {"gate", 0, {0}};
  const a3_ckpt_spec se = {"empty", 2, {0, 5}};
  a3_status s = a3_ckpt_create(path, &w);
  if (s == A3_OK) s = a3_ckpt_write_attr_string(w, "/", "config", "model: {}\n");
  if (s == A3_OK) s = a3_ckpt_write_attr_int(w, "/", "step", 1234567890123LL);
  if (s == A3_OK) s = a3_ckpt_write_tensor(w, "params", &sa, a);
  if (s == A3_OK) s = a3_ckpt_write_tensor(w, "params", &sb, b);
  if (s == A3_OK) s = a3_ckpt_write_tensor(w, "optimizer/m", &sc, c);
  if (s == A3_OK) s = a3_ckpt_write_tensor(w, "optimizer/m", &se, NULL);
  if (s == A3_OK) s = a3_ckpt_write_attr_int(w, "optimizer", "step", 7);
  if (s == A3_OK) {
    const a3_status twice = a3_ckpt_write_tensor(w, "params", &sb, b);
    CHECK(twice == A3_ERR_INTERNAL);
    const a3_ckpt_spec bad = {"a/b", 1, {1}};
    CHECK(a3_ckpt_write_tensor(w, "params", &bad, b) == A3_ERR_INTERNAL);
  }
  if (s == A3_OK)
    s = a3_ckpt_commit(w);
  else
    a3_ckpt_discard(w);
  if (s != A3_OK) a3_log_error_status(s);
  return s != A3_OK;
}

static double max_abs(const float *x, int n) {
  double m = 0;
  for (int i = 0; i < n; i++) m = fabs((double)x[i]) > m ? fabs((double)x[i]) : m;
  return m;
}

// Shapes as the file holds them, and a group's scan (write_generic's file).
static void test_scan(const a3_ckpt_reader *r, const float *a, const float *b) {
  a3_ckpt_spec spec;
  CHECK(a3_ckpt_tensor_spec(r, "params", "down_blocks.0.resnets.0.conv1.weight", &spec) == A3_OK &&
        spec.ndim == 4 && spec.shape[0] == 8 && spec.shape[1] == 4 && spec.shape[3] == 3);
  CHECK(a3_ckpt_tensor_spec(r, "optimizer/m", "gate", &spec) == A3_OK && spec.ndim == 0);
  CHECK(a3_ckpt_tensor_spec(r, "params", "nothere", &spec) == A3_ERR_INPUT);
  CHECK_MSG(has(a3_error_message(), "/params/nothere is missing"), "%s", a3_error_message());
  a3_ckpt_group_scan g;
  CHECK(a3_ckpt_scan_group(r, "params", &g) == A3_OK);
  const double want = fmax(max_abs(a, 288), max_abs(b, 8));
  CHECK_MSG(g.tensors == 2 && g.values == 296 && g.nonfinite == 0 && !g.first_nonfinite[0] &&
                g.max_abs == want,
            "%d tensors, %lld values, %lld non-finite, max %g (want %g)", g.tensors,
            (long long)g.values, (long long)g.nonfinite, g.max_abs, want);
  CHECK(a3_ckpt_scan_group(r, "optimizer/m", &g) == A3_OK && g.tensors == 2 && g.values == 1);
  CHECK(a3_ckpt_scan_group(r, "ema", &g) == A3_ERR_INPUT);
}

static void test_generic(const char *dir) {
  const char *path = io_path(dir, "generic.h5");
  float a[8 * 4 * 9], b[8], c[1], a2[8 * 4 * 9], b2[8], c2[1];
  fill(a, 288, 1);
  fill(b, 8, 2);
  fill(c, 1, 3);
  CHECK(write_generic(path, a, b, c) == 0);
  CHECK(!io_exists(io_path(dir, "generic.h5.tmp")));
  a3_ckpt_reader *r = NULL;
  CHECK(a3_ckpt_open(path, &r) == A3_OK);
  if (!r) return;
  char **names = NULL;
  int n = 0;
  CHECK(a3_ckpt_list(r, "params", &names, &n) == A3_OK);
  CHECK(n == 2 && !strcmp(names[0], "down_blocks.0.resnets.0.conv1.weight") &&
        !strcmp(names[1], "conv_in.bias")); // creation order, not name order
  a3_ckpt_free_names(names, n);
  const a3_ckpt_spec sa = {"down_blocks.0.resnets.0.conv1.weight", 4, {8, 4, 3, 3}};
  const a3_ckpt_spec sb = {"conv_in.bias", 1, {8}};
  const a3_ckpt_spec sc = {"gate", 0, {0}};
  CHECK(a3_ckpt_read_tensor(r, "params", &sa, a2) == A3_OK && !memcmp(a, a2, sizeof a));
  CHECK(a3_ckpt_read_tensor(r, "params", &sb, b2) == A3_OK && !memcmp(b, b2, sizeof b));
  CHECK(a3_ckpt_read_tensor(r, "optimizer/m", &sc, c2) == A3_OK && c[0] == c2[0]);
  int64_t step = 0, ostep = 0;
  char *config = NULL;
  CHECK(a3_ckpt_read_attr_int(r, "/", "step", &step) == A3_OK && step == 1234567890123LL);
  CHECK(a3_ckpt_read_attr_int(r, "optimizer", "step", &ostep) == A3_OK && ostep == 7);
  CHECK(a3_ckpt_read_attr_string(r, "", "config", &config) == A3_OK && config &&
        !strcmp(config, "model: {}\n"));
  free(config);
  CHECK(a3_ckpt_has_group(r, "optimizer/m") && !a3_ckpt_has_group(r, "ema") &&
        !a3_ckpt_has_group(r, "nothere/deeper"));

  // Wrong shape: names the dataset path and both shapes.
  const a3_ckpt_spec wrong = {"conv_in.bias", 1, {16}};
  float big[16];
  CHECK(a3_ckpt_read_tensor(r, "params", &wrong, big) == A3_ERR_INPUT);
  CHECK_MSG(has(a3_error_message(), "/params/conv_in.bias: shape (8) in the file, (16) expected"),
            "%s", a3_error_message());
  // A set: one missing non-optional name -> error naming it; nothing read.
  float untouched[8];
  memset(untouched, 0x7f, sizeof untouched);
  a3_ckpt_item items[3] = {{sb, untouched, false, false},
                           {{"mid_block.attentions.0.adapter.up.weight", 1, {8}}, b2, true, false},
                           {{"missing.weight", 1, {8}}, b2, false, false}};
  int n_extra = -1;
  CHECK(a3_ckpt_read_set(r, "params", items, 3, NULL, &n_extra) == A3_ERR_INPUT);
  CHECK_MSG(has(a3_error_message(), "/params/missing.weight") &&
                !has(a3_error_message(), "adapter"),
            "%s", a3_error_message());
  CHECK(untouched[0] != b[0]);
  // Optional missing is fine; the extra tensor is reported.
  char **extra = NULL;
  CHECK(a3_ckpt_read_set(r, "params", items, 2, &extra, &n_extra) == A3_OK);
  CHECK(!memcmp(untouched, b, sizeof b) && items[0].found && !items[1].found);
  CHECK(n_extra == 1 && extra && !strcmp(extra[0], "down_blocks.0.resnets.0.conv1.weight"));
  a3_ckpt_free_names(extra, n_extra);
  test_scan(r, a, b);
  a3_ckpt_close(r);
}

static void test_not_checkpoint(const char *dir) {
  a3_ckpt_reader *r = NULL;
  CHECK(a3_ckpt_open(io_path(dir, "absent.h5"), &r) == A3_ERR_IO && !r);
  io_write_file(io_path(dir, "text.h5"), "hello", 5);
  CHECK(a3_ckpt_open(io_path(dir, "text.h5"), &r) == A3_ERR_INPUT && !r);
  CHECK(tt_make_dataset(io_path(dir, "ds.h5")) == 0);
  CHECK(a3_ckpt_open(io_path(dir, "ds.h5"), &r) == A3_ERR_INPUT && !r);
  CHECK_MSG(has(a3_error_message(), "a3fta-dataset"), "%s", a3_error_message());
}

// A discarded writer never touches the file in place; a commit replaces it.
static void test_atomic(const char *dir) {
  const char *path = io_path(dir, "atomic.h5");
  float a[288], b[8], c[1];
  fill(a, 288, 4);
  fill(b, 8, 5);
  fill(c, 1, 6);
  CHECK(write_generic(path, a, b, c) == 0);
  a3_ckpt_writer *w = NULL;
  CHECK(a3_ckpt_create(path, &w) == A3_OK);
  CHECK(io_exists(io_path(dir, "atomic.h5.tmp")));
  a3_ckpt_discard(w);
  CHECK(!io_exists(io_path(dir, "atomic.h5.tmp")));
  a3_ckpt_reader *r = NULL;
  CHECK(a3_ckpt_open(path, &r) == A3_OK);
  float b2[8];
  const a3_ckpt_spec sb = {"conv_in.bias", 1, {8}};
  CHECK(r && a3_ckpt_read_tensor(r, "params", &sb, b2) == A3_OK && !memcmp(b, b2, sizeof b));
  a3_ckpt_close(r);
}

static size_t trainable_numel(const a3_unet *m) {
  size_t n = 0;
  for (int i = 0; i < a3_unet_param_count(m); i++)
    if (a3_unet_param_at(m, i)->trainable) n += a3_unet_param_at(m, i)->numel;
  return n;
}

static void test_model(const char *dir) {
  a3_config cfg;
  if (tt_config(&cfg, "unused.h5", dir, (const char *[]){"strategy.name=attention"}, 1)) {
    CHECK(0);
    return;
  }
  a3_unet *m = NULL, *m2 = NULL;
  CHECK(a3_strategy_build_model(&cfg, &m) == A3_OK);
  CHECK(a3_strategy_build_model(&cfg, &m2) == A3_OK);
  if (!m || !m2) return;
  a3_unet_init_random(m, 11);
  CHECK(a3_strategy_apply(m, A3_STRATEGY_ATTENTION, NULL) == A3_OK);
  CHECK(a3_strategy_apply(m2, A3_STRATEGY_ATTENTION, NULL) == A3_OK);
  const size_t nt = trainable_numel(m), nf = a3_unet_num_floats(m);
  float *mm = calloc(nt, 4), *vv = calloc(nt, 4), *ee = calloc(nt, 4);
  float *mm2 = calloc(nt, 4), *vv2 = calloc(nt, 4), *ee2 = calloc(nt, 4);
  fill(mm, (int64_t)nt, 21);
  fill(vv, (int64_t)nt, 22);
  fill(ee, (int64_t)nt, 23);
  const char *path = io_path(dir, "model.h5");
  char *yaml = NULL;
  CHECK(a3_config_to_yaml(&cfg, &yaml, NULL) == A3_OK);
  const a3_model_ckpt st = {yaml, a3_config_hash(&cfg), 42, 5, mm, vv, ee, NULL};
  CHECK(a3_model_checkpoint_write(path, m, &st) == A3_OK);
  free(yaml);
  int64_t step = 0;
  CHECK(a3_model_checkpoint_read_state(path, m2, &cfg, mm2, vv2, ee2, &step) == A3_OK);
  CHECK(step == 42);
  CHECK(!memcmp(a3_unet_params(m), a3_unet_params(m2), nf * sizeof(float)));
  CHECK(!memcmp(mm, mm2, nt * 4) && !memcmp(vv, vv2, nt * 4) && !memcmp(ee, ee2, nt * 4));
  // Another folder and log interval: the same run. Another lr: refused, naming it.
  a3_config moved;
  const char *moved_o[] = {"strategy.name=attention", "train.log_every=1", "output.dir=/elsewhere"};
  if (tt_config(&moved, "unused.h5", dir, moved_o, 3) == 0) {
    CHECK(a3_model_checkpoint_read_state(path, m2, &moved, mm2, vv2, ee2, &step) == A3_OK);
    a3_config_free(&moved);
  }
  const char *lr_o[] = {"strategy.name=attention", "train.lr=0.5"};
  if (tt_config(&moved, "unused.h5", dir, lr_o, 2) == 0) {
    CHECK(a3_model_checkpoint_read_state(path, m2, &moved, mm2, vv2, ee2, &step) == A3_ERR_CONFIG);
    CHECK_MSG(has(a3_error_message(), "train.lr: 0.001 in the checkpoint, 0.5 now"), "%s",
              a3_error_message());
    a3_config_free(&moved);
  }
  // model.init into a different architecture: the first bad shape is named.
  a3_config other;
  if (tt_config(&other, "unused.h5", dir, (const char *[]){"model.arch.block_out_channels=[8, 8]"},
                1) == 0) {
    a3_unet *m3 = NULL;
    CHECK(a3_strategy_build_model(&other, &m3) == A3_OK);
    CHECK(m3 && a3_model_load_init(m3, path) == A3_ERR_INPUT);
    CHECK_MSG(has(a3_error_message(), "/params/") && has(a3_error_message(), "expected"), "%s",
              a3_error_message());
    a3_unet_free(m3);
    a3_config_free(&other);
  }
  free(mm);
  free(vv);
  free(ee);
  free(mm2);
  free(vv2);
  free(ee2);
  a3_unet_free(m);
  a3_unet_free(m2);
  a3_config_free(&cfg);
}

// a3fta info's summary of a model checkpoint: counts that agree with the
// model's table, and a NaN and an infinity found and named.
static void test_info(const char *dir) {
  a3_config cfg;
  if (tt_config(&cfg, "unused.h5", dir, (const char *[]){"strategy.name=a3fta"}, 1)) {
    CHECK(0);
    return;
  }
  a3_unet *m = NULL;
  CHECK(a3_strategy_build_model(&cfg, &m) == A3_OK);
  a3_strategy_stats st = {0};
  CHECK(m && a3_strategy_apply(m, A3_STRATEGY_A3FTA, &st) == A3_OK);
  if (!m) return;
  a3_unet_init_random(m, 3);
  const size_t nt = trainable_numel(m);
  const a3_param *victim = a3_unet_param_at(m, 5);
  a3_unet_params(m)[victim->offset + 1] = NAN;
  float *ema = calloc(nt, 4);
  ema[nt - 1] = -INFINITY;
  char *yaml = NULL;
  CHECK(a3_config_to_yaml(&cfg, &yaml, NULL) == A3_OK);
  const char *path = io_path(dir, "info.h5");
  const a3_model_ckpt ck = {yaml, a3_config_hash(&cfg), 7, 5, NULL, NULL, ema, "random"};
  CHECK(a3_model_checkpoint_write(path, m, &ck) == A3_OK);
  char *text = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&text, &len);
  CHECK(f && a3_model_checkpoint_print(path, f) == A3_OK);
  if (f) fclose(f);
  char want[4][256];
  snprintf(want[0], sizeof want[0], "step        7 of train.steps %lld (unfinished)",
           (long long)cfg.train.steps);
  snprintf(want[1], sizeof want[1], "trainable   %d tensors, %zu parameters", st.trainable_tensors,
           nt);
  snprintf(want[2], sizeof want[2],
           "/params holds 1 NaN or infinite values in 1 tensors (first: %s)", victim->name);
  snprintf(want[3], sizeof want[3], "config      hash %016llx", (unsigned long long)ck.config_hash);
  for (int i = 0; i < 4; i++)
    CHECK_MSG(text && has(text, want[i]), "no '%s' in:\n%s", want[i], text);
  CHECK_MSG(text && has(text, "/ema holds 1 NaN or infinite values") &&
                has(text, "/optimizer/m  absent") && has(text, "values      NOT all finite") &&
                has(text, "strategy.adapter.rank") && !has(text, "strategy.lora.rank"),
            "%s", text);
  free(text);
  free(yaml);
  free(ema);
  a3_unet_free(m);
  a3_config_free(&cfg);
}

// model.init = a diffusers folder: every parameter by name, older attention
// names accepted, a missing base tensor named in the error.
static void test_diffusers_init(const char *dir) {
  a3_config cfg;
  if (tt_config(&cfg, "unused.h5", dir, NULL, 0)) {
    CHECK(0);
    return;
  }
  a3_unet *m = NULL, *m2 = NULL;
  CHECK(a3_strategy_build_model(&cfg, &m) == A3_OK && a3_strategy_build_model(&cfg, &m2) == A3_OK);
  if (!m || !m2) return;
  a3_unet_init_random(m, 3);
  const int n = a3_unet_param_count(m);
  a3_st_f32_tensor *ts = calloc((size_t)n, sizeof *ts);
  int64_t(*shapes)[A3_PARAM_MAX_DIMS] = calloc((size_t)n, sizeof *shapes);
  char(*names)[A3_PARAM_NAME_MAX] = calloc((size_t)n, sizeof *names);
  int renamed = 0;
  for (int i = 0; i < n && ts && shapes && names; i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    renamed += a3_diffusers_legacy_name(p->name, names[i], sizeof names[i]) == 1;
    for (int d = 0; d < p->ndim; d++) shapes[i][d] = p->shape[d];
    ts[i] = (a3_st_f32_tensor){names[i], p->ndim, shapes[i], a3_unet_params(m) + p->offset};
  }
  CHECK(renamed == 4 * 8); // 4 attention blocks, weight and bias of q, k, v, out
  const char *folder = io_path(dir, "diffusers");
  io_mkdir(folder);
  io_write_file(io_path(folder, "config.json"), "{}", 2);
  const char *weights = io_path(folder, "diffusion_pytorch_model.safetensors");
  CHECK(a3_safetensors_write_f32(weights, ts, n, NULL, 0) == A3_OK);
  CHECK(a3_model_load_init(m2, folder) == A3_OK);
  CHECK(!memcmp(a3_unet_params(m), a3_unet_params(m2), a3_unet_num_floats(m) * sizeof(float)));
  CHECK(a3_safetensors_write_f32(weights, ts + 1, n - 1, NULL, 0) == A3_OK); // no conv_in.weight
  CHECK(a3_model_load_init(m2, folder) == A3_ERR_INPUT);
  CHECK_MSG(has(a3_error_message(), "not in the file: conv_in.weight"), "%s", a3_error_message());
  free(ts);
  free(shapes);
  free(names);
  a3_unet_free(m);
  a3_unet_free(m2);
  a3_config_free(&cfg);
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  char *dir = io_make_temp_dir("ckpt");
  CHECK(dir != NULL);
  if (dir) {
    test_generic(dir);
    test_not_checkpoint(dir);
    test_atomic(dir);
    test_model(dir);
    test_info(dir);
    test_diffusers_init(dir);
    io_remove_tree(dir);
    free(dir);
  }
  MPI_Finalize();
  return TEST_DONE("test_trainer_checkpoint");
}
