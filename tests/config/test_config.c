// The config system: schema table sanity, defaults, overrides, canonical
// text round trips, hash stability, limits, sweeps, cross-key checks, and
// that mangled input never crashes or leaks (this runs under ASan + LSan).
#include "a3fta/config.h"
#include "test_util.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static a3_status load_text(const char *text, const char *const *ov, int n, a3_config *cfg) {
  return a3_config_load_string("t.yaml", text, strlen(text), ov, n, cfg);
}

// Loads text expecting a config error whose message contains `want`.
static void expect_error(const char *text, const char *want) {
  a3_config cfg;
  a3_status s = load_text(text, NULL, 0, &cfg);
  CHECK_MSG(s == A3_ERR_CONFIG, "'%s': status %d, wanted a config error", text, (int)s);
  CHECK_MSG(strstr(a3_error_message(), want), "'%s': message '%s' lacks '%s'", text,
            a3_error_message(), want);
  a3_config_free(&cfg);
}

static void expect_override_error(const char *assignment, const char *want) {
  a3_config cfg;
  const char *ov[] = {assignment};
  a3_status s = a3_config_load(NULL, ov, 1, &cfg);
  CHECK_MSG(s == A3_ERR_CONFIG, "'%s': status %d", assignment, (int)s);
  CHECK_MSG(strstr(a3_error_message(), want), "'%s': message '%s' lacks '%s'", assignment,
            a3_error_message(), want);
  a3_config_free(&cfg);
}

static void test_schema_table(void) {
  int n = 0;
  const a3_config_key *keys = a3_config_schema(&n);
  CHECK(n > 60 && n <= A3_CONFIG_SCHEMA_MAX);
  for (int i = 0; i < n; i++) {
    const a3_config_key *k = &keys[i];
    CHECK_MSG(strlen(k->path) < A3_CONFIG_KEY_MAX, "%s: path too long", k->path);
    CHECK_MSG(a3_config_find_key(k->path) == k, "%s: not found or listed twice", k->path);
    CHECK_MSG(k->help && strlen(k->help) > 10, "%s: no help", k->path);
    CHECK_MSG((k->type == A3_KEY_SECTION) == (k->def == NULL), "%s: default", k->path);
    const char *dot = strrchr(k->path, '.');
    if (dot) { // the parent section exists and comes first
      char parent[A3_CONFIG_KEY_MAX];
      snprintf(parent, sizeof parent, "%.*s", (int)(dot - k->path), k->path);
      const a3_config_key *p = a3_config_find_key(parent);
      CHECK_MSG(p && p->type == A3_KEY_SECTION && p < k, "%s: parent section", k->path);
    }
    if (k->type == A3_KEY_OPT_INT) // 0 stands for null, so it cannot be a value
      CHECK_MSG(k->imin >= 1, "%s: optional integers need imin >= 1", k->path);
    if (k->type == A3_KEY_ENUM || k->type == A3_KEY_ENUM_LIST)
      CHECK_MSG(k->names && k->n_names > 0, "%s: names", k->path);
  }
}

static void test_defaults(void) {
  a3_error_clear();
  a3_config cfg;
  a3_config_init_defaults(&cfg);
  CHECK_MSG(a3_error_message()[0] == '\0', "a default failed: %s", a3_error_message());
  const a3_arch_config *a = &cfg.model.arch;
  CHECK(!strcmp(cfg.model.init, "random"));
  CHECK(a->sample_size == 32 && a->in_channels == 1 && a->out_channels == 1);
  CHECK(a->n_block_out_channels == 3 && a->block_out_channels[0] == 32 &&
        a->block_out_channels[2] == 64);
  CHECK(a->n_down_block_types == 3 && a->down_block_types[2] == A3_DOWN_ATTN);
  CHECK(a->n_up_block_types == 3 && a->up_block_types[0] == A3_UP_ATTN);
  CHECK(a->norm_num_groups == 8 && a->norm_eps == 1e-5 && a->attention_head_dim == 0);
  CHECK(a->downsample_padding == 1 && a->flip_sin_to_cos && a->act_fn == A3_ACT_SILU);
  CHECK(!strcmp(cfg.data.path, "data/fashion-mnist.h5") && cfg.data.n_classes == 0);
  CHECK(cfg.strategy.name == A3_STRATEGY_A3FTA && cfg.strategy.adapter.rank == 8);
  CHECK(cfg.strategy.adapter.activation == A3_ACT_GELU && cfg.strategy.lora.alpha == 4.0);
  CHECK(cfg.train.steps == 1000 && cfg.train.lr == 1e-4 && cfg.train.adam_beta1 == 0.95);
  CHECK(cfg.train.lr_schedule == A3_LR_COSINE && cfg.train.ema && cfg.train.warmup == 50);
  CHECK(cfg.eval.n_metrics == 4 && cfg.eval.metrics[3] == A3_METRIC_MEMORIZATION);
  CHECK(cfg.sweep.grid.n == 0 && cfg.sweep.zip.n == 0 && cfg.sweep.points.n == 0);
  CHECK(cfg.parallel.ranks_per_run == 1 && cfg.parallel.nccl_timeout_s == 600);
  CHECK(!strcmp(cfg.output.dir, "runs/default") && cfg.output.samples_per_run == 16);
  CHECK(a3_config_validate(&cfg) == A3_OK);
  a3_config loaded;
  CHECK(a3_config_load(NULL, NULL, 0, &loaded) == A3_OK);
  CHECK(a3_config_equal(&cfg, &loaded));
  a3_config_free(&loaded);
  a3_config_free(&cfg);
}

// configs/default.yaml is `config show --commented` of the defaults, and loads to them.
static void test_default_file(void) {
  const char *src = getenv("A3FTA_SOURCE_DIR");
  if (!src) return;
  char path[4096];
  snprintf(path, sizeof path, "%s/configs/default.yaml", src);
  char *text = NULL;
  size_t len = 0;
  CHECK_MSG(a3_read_file(path, 1 << 20, &text, &len) == A3_OK, "%s", a3_error_message());
  a3_config file, defaults;
  a3_config_init_defaults(&defaults);
  CHECK_MSG(a3_config_load(path, NULL, 0, &file) == A3_OK, "%s", a3_error_message());
  CHECK(a3_config_equal(&file, &defaults));
  FILE *f = tmpfile();
  CHECK(f && a3_config_write_yaml_commented(&defaults, f) == A3_OK);
  char *made = calloc(len + 2, 1);
  size_t got = 0;
  if (f && made) {
    rewind(f);
    got = fread(made, 1, len + 1, f);
  }
  CHECK_MSG(text && made && got == len && !memcmp(made, text, len),
            "configs/default.yaml differs from 'a3fta config show --commented'; regenerate it");
  if (f) fclose(f);
  free(made);
  free(text);
  a3_config_free(&file);
  a3_config_free(&defaults);
}

static void test_overrides(void) {
  const char *ov[] = {
      "train.lr=3e-4",   "data.classes=[0, 9]",     "model.arch.attention_head_dim=16",
      "train.lr=2.5e-4", "output.dir=\"runs/x y\"", "strategy.lora={rank: 8}",
      "eval.metrics=[]"};
  a3_config cfg;
  CHECK_MSG(a3_config_load(NULL, ov, 7, &cfg) == A3_OK, "%s", a3_error_message());
  CHECK(cfg.train.lr == 2.5e-4); // the last override wins
  CHECK(cfg.data.n_classes == 2 && cfg.data.classes[1] == 9);
  CHECK(cfg.model.arch.attention_head_dim == 16);
  CHECK(!strcmp(cfg.output.dir, "runs/x y"));
  CHECK(cfg.strategy.lora.rank == 8 && cfg.strategy.lora.alpha == 4.0);
  CHECK(cfg.eval.n_metrics == 0);
  CHECK(a3_config_apply_override(&cfg, "model.arch.attention_head_dim=null") == A3_OK);
  CHECK(cfg.model.arch.attention_head_dim == 0);
  CHECK(a3_config_set(&cfg, "train.seed", "7", "sweep run 1") == A3_OK && cfg.train.seed == 7);
  CHECK(a3_config_set(&cfg, "train.seed", "-7", "sweep run 1") == A3_ERR_CONFIG);
  CHECK(strstr(a3_error_message(), "sweep run 1: train.seed: -7 is out of range"));
  a3_config_free(&cfg);
  expect_override_error("train.lr=abc", "override 'train.lr=abc': train.lr: expected a number, "
                                        "got 'abc'");
  expect_override_error("train.lerning_rate=1", "unknown key 'lerning_rate' in train (did you "
                                                "mean 'lr'?)");
  expect_override_error("nonsense", "override 'nonsense': expected KEY=VALUE");
  expect_override_error("=5", "expected KEY=VALUE");
  expect_override_error("train.steps=", "train.steps: expected an integer, got nothing");
  expect_override_error("data.classes=[1,", "invalid YAML");
  expect_override_error("train={steps: x}", "train.steps: expected an integer, got 'x'");
  expect_override_error("train.warmup=5000", "train.warmup: train.warmup = 5000 exceeds");
  expect_override_error("train.lr.x=1", "train.lr: a number has no keys below it");
}

static const char *const rich_config =
    "# a config with every kind of value\n"
    "model:\n  init: 'checkpoints/base run.h5'\n"
    "  arch: {block_out_channels: [64, 128, 128, 256], norm_num_groups: 32,\n"
    "         down_block_types: [DownBlock2D, AttnDownBlock2D, DownBlock2D, AttnDownBlock2D],\n"
    "         up_block_types: [AttnUpBlock2D, UpBlock2D, AttnUpBlock2D, UpBlock2D],\n"
    "         attention_head_dim: 32, norm_eps: 1.0e-6, dropout: 0.1}\n"
    "data: {classes: [9, 0, 3], shots: 10, hflip: true}\n"
    "strategy: {name: lora, lora: {rank: 16, alpha: 0.1}}\n"
    "train: {lr: 0.1, adam_beta2: 0.3, weight_decay: 0, precision: bf16, seed: "
    "9223372036854775807}\n"
    "eval: {metrics: [kid, fid], eta: 1e-300}\n"
    "sweep:\n"
    "  grid: {train.lr: [1e-4, 3.0e-4, .5], strategy.name: [full, a3fta], data.classes: [[1], "
    "[2, 3]]}\n"
    "  zip: {train.seed: [1, 2], data.subset_seed: [3, 4]}\n"
    "  points: [{train.steps: 20, model.init: random}, {}]\n"
    "output: {dir: \"weird \\\"dir\\\" \\\\ é\"}\n";

static void test_round_trip(void) {
  a3_config a, b;
  CHECK_MSG(load_text(rich_config, NULL, 0, &a) == A3_OK, "%s", a3_error_message());
  char *text = NULL;
  size_t len = 0;
  CHECK(a3_config_to_yaml(&a, &text, &len) == A3_OK);
  CHECK_MSG(a3_config_load_string("printed", text, len, NULL, 0, &b) == A3_OK, "%s\n%s",
            a3_error_message(), text);
  CHECK(a3_config_equal(&a, &b) && a3_config_hash(&a) == a3_config_hash(&b));
  CHECK(a.train.adam_beta2 == b.train.adam_beta2 && a.eval.eta == b.eval.eta);
  CHECK(!strcmp(b.output.dir, "weird \"dir\" \\ é"));
  CHECK(b.sweep.grid.n == 3 && !strcmp(b.sweep.grid.items[0].key, "data.classes"));
  CHECK(!strcmp(b.sweep.grid.items[2].values[0], "0.0001"));
  CHECK(b.sweep.points.n == 2 && !strcmp(b.sweep.points.items[0].settings[0].key, "model.init"));
  a3_config c;
  CHECK(a3_config_copy(&c, &b) == A3_OK && a3_config_equal(&b, &c));
  a3_config_free(&b);
  CHECK(a3_config_equal(&a, &c)); // the copy owns its own sweep lists
  char *text2 = NULL;
  CHECK(a3_config_to_yaml(&c, &text2, NULL) == A3_OK && text2 && !strcmp(text, text2));
  free(text);
  free(text2);
  a3_config_free(&a);
  a3_config_free(&c);
  a3_config_free(&c); // safe twice
}

static uint64_t hash_of(const char *text) {
  a3_config cfg;
  a3_status s = load_text(text, NULL, 0, &cfg);
  CHECK_MSG(s == A3_OK, "%s", a3_error_message());
  uint64_t h = s == A3_OK ? a3_config_hash(&cfg) : 0;
  a3_config_free(&cfg);
  return h;
}

static void test_hash(void) {
  const char *a = "train: {lr: 1e-4, steps: 500}\n"
                  "sweep: {grid: {train.seed: [1, 2], data.shots: [5]}}\ndata: {hflip: true}\n";
  const char *b = "# the same config, written differently\n"
                  "data:\n  hflip: true   # flips\nsweep:\n  grid:\n    data.shots: [5]\n"
                  "    train.seed:\n      - 1\n      - 2\n"
                  "train:\n  steps: +500\n  lr: 0.0001\n";
  const char *c = "train: {lr: 1.0e-4, steps: 501}\n"
                  "sweep: {grid: {train.seed: [1, 2], data.shots: [5]}}\ndata: {hflip: true}\n";
  uint64_t ha = hash_of(a), hb = hash_of(b), hc = hash_of(c);
  CHECK(ha != 0 && ha == hb);
  CHECK(ha != hc);
  CHECK(hash_of(a) == ha); // stable across calls
  a3_config d;
  a3_config_init_defaults(&d);
  uint64_t hd = a3_config_hash(&d);
  CHECK(hash_of("train: {lr: 0.0001}\n") == hd);                  // the default, written out
  CHECK(hash_of("train: {lr: 1.000000000000000001e-4}\n") == hd); // the same double
  CHECK(hash_of("train: {lr: 0.0001000001}\n") != hd);
  a3_config_free(&d);
}

static void test_value_grammar(void) {
  expect_error("train: {steps: 1e3}", "expected an integer, got '1e3'");
  expect_error("train: {steps: 0x10}", "expected an integer, got '0x10'");
  expect_error("train: {steps: 1_000}", "expected an integer, got '1_000'");
  expect_error("train: {steps: 010}", "leading zero");
  expect_error("train: {seed: 12345678901234567890}", "does not fit in a 64-bit integer");
  expect_error("train: {seed: -9223372036854775809}", "does not fit in a 64-bit integer");
  expect_error("train: {steps: '5'}", "the quoted string '5'; remove the quotes");
  expect_error("train: {lr: .NaN}", "expected a finite number, got '.NaN'");
  expect_error("train: {lr: -inf}", "expected a finite number");
  expect_error("train: {lr: 1e400}", "too large for a double");
  expect_error("train: {lr: 1.2.3}", "expected a number, got '1.2.3'");
  expect_error("train: {lr: 0}", "train.lr: 0 is out of range; expected a number in (0, 10]");
  expect_error("train: {ema: True}", "expected true or false, got 'True'");
  expect_error("train: {ema: off}", "write true or false");
  expect_error("train: {precision: FP32}", "(did you mean 'fp32'?)");
  expect_error("data: {path: ~}", "expected a string, got null");
  expect_error("data: {path: \"a\\nb\"}", "control character or line break");
  expect_error("data: {path: \"a\\u2028b\"}", "control character or line break");
  expect_error("data: {classes: [1, 1]}", "data.classes[1]: the same value as data.classes[0]");
  expect_error("data: {classes: [-1]}", "data.classes[0]: -1 is out of range");
  a3_config cfg;
  CHECK(load_text("train: {lr: .5, grad_clip: 3, adam_eps: -0.0e0}\n", NULL, 0, &cfg) ==
        A3_ERR_CONFIG); // adam_eps must be > 0
  a3_config_free(&cfg);
  CHECK(load_text("train: {lr: .5, grad_clip: 3, steps: -0}\ndata: {shots: +7}\n", NULL, 0,
                  &cfg) == A3_ERR_CONFIG); // steps -0 = 0 < 1
  a3_config_free(&cfg);
  CHECK(load_text("train: {lr: .5, grad_clip: 3}\ndata: {shots: +7}\n", NULL, 0, &cfg) == A3_OK);
  CHECK(cfg.train.lr == 0.5 && cfg.train.grad_clip == 3.0 && cfg.data.shots == 7);
  a3_config_free(&cfg);
}

static void test_structure_errors(void) {
  expect_error("", "t.yaml:1:1: the file is empty");
  expect_error("# only a comment\n", "t.yaml:1:1: the file is empty");
  expect_error("---\n", "the file is empty");
  expect_error("[1, 2]", "t.yaml:1:1: expected a map of sections");
  expect_error("train: {}\n---\neval: {}\n", "t.yaml:2:1: a second YAML document");
  expect_error("train: &a {steps: 1}\n", "anchors and aliases are not supported");
  expect_error("train: *a\n", "anchors and aliases are not supported");
  expect_error("train: !!map {steps: 1}\n", "tags are not supported");
  expect_error("train:\n  lr: 1e-4\n  lr: 2e-4\n", "t.yaml:3:3: train.lr: duplicate key 'lr' "
                                                   "(first at 2:3)");
  expect_error("train: [1]\n", "train: expected a map with the keys steps,");
  expect_error("? [a]\n: 1\n", "a key must be a name, got a list");
  expect_error("train.lr: 1\n", "dotted key 'train.lr'");
  expect_error("trian: {}\n", "unknown section 'trian' (did you mean 'train'?)");
  expect_error("train: {bs: 3}\n", "(did you mean 'batch_size'?)");
  expect_error("a: \xff\n", "not valid UTF-8");
  expect_error("a: \x01\n", "control characters are not allowed");
}

// A list nested `depth` levels deep (the top-level map is level 1).
static char *nested(int depth) {
  char *s = calloc((size_t)depth * 2 + 32, 1);
  if (!s) return NULL;
  strcpy(s, "sweep: ");
  for (int i = 1; i < depth; i++) strcat(s, "[");
  for (int i = 1; i < depth; i++) strcat(s, "]");
  return s;
}

static void test_limits(void) {
  char *ok_depth = nested(A3_CONFIG_MAX_DEPTH), *deep = nested(A3_CONFIG_MAX_DEPTH + 1);
  if (ok_depth && deep) {
    expect_error(ok_depth, "sweep: expected a map"); // parsed, then rejected by the schema
    expect_error(deep, "t.yaml:1:39: nesting is deeper than 32 levels");
  }
  free(ok_depth);
  free(deep);
  // 100001 values, well under 1 MiB.
  size_t n = A3_CONFIG_MAX_NODES + 1, len = 0;
  char *many = malloc(n * 2 + 16);
  if (many) {
    len = (size_t)sprintf(many, "x: [");
    for (size_t i = 0; i < n; i++) len += (size_t)sprintf(many + len, "0,");
    strcpy(many + len - 1, "]");
    expect_error(many, "more than 100000 values");
  }
  free(many);
  char *big = malloc(A3_CONFIG_MAX_BYTES + 2);
  if (big) {
    memset(big, '#', A3_CONFIG_MAX_BYTES + 1);
    big[A3_CONFIG_MAX_BYTES + 1] = '\0';
    expect_error(big, "t.yaml:1:1: the file is 1048577 bytes");
  }
  free(big);
}

static void test_cross_checks(void) {
  expect_error("model:\n  arch:\n    norm_num_groups: 7\n",
               "t.yaml:3:5: model.arch.norm_num_groups: block_out_channels[0] = 32 is not "
               "divisible by norm_num_groups = 7");
  expect_error("model:\n  arch:\n    norm_num_groups: 16\n    block_out_channels: [32, 40, 64]\n",
               "t.yaml:4:5: model.arch.block_out_channels: block_out_channels[1] = 40");
  expect_error("model: {arch: {attention_head_dim: 24}}",
               "model.arch.attention_head_dim: attention_head_dim = 24 does not divide");
  expect_error("model: {arch: {sample_size: 30}}", "sample_size = 30 is not divisible by 4");
  expect_error("model: {arch: {up_block_types: [UpBlock2D]}}",
               "up_block_types has 1 entries but block_out_channels has 3");
  expect_error("model: {arch: {down_block_types: [UpBlock2D]}}",
               "'UpBlock2D' is not allowed; expected one of: DownBlock2D, AttnDownBlock2D");
  expect_error("eval: {sampler_steps: 2000}", "sampler_steps = 2000 exceeds");
  expect_error("sweep: {grid: {train.seed: [1]}, zip: {train.seed: [2]}}",
               "train.seed is swept by both sweep.grid and sweep.zip");
}

static void test_sweep_errors(void) {
  expect_error("sweep: {grid: {train.lrr: [1]}}", "unknown key path 'train.lrr' (did you mean "
                                                  "'train.lr'?)");
  expect_error("sweep: {grid: {train.learning_rate: [1]}}", "(did you mean 'train.lr'?)");
  expect_error("sweep: {grid: {train.lr: [1e-4, x]}}",
               "t.yaml:1:33: sweep.grid.train.lr[1]: expected a number, got 'x'");
  expect_error("sweep: {grid: {train.lr: []}}", "sweep.grid.train.lr: the list is empty");
  expect_error("sweep: {grid: {train.lr: 1}}", "expected a list of values");
  expect_error("sweep: {grid: {model: [1]}}", "'model' is a section");
  expect_error("sweep: {grid: {sweep.zip: [1]}}", "cannot be swept");
  expect_error("sweep: {zip: {train.seed: [1, 2], data.shots: [1]}}",
               "data.shots has 1 values but train.seed has 2");
  expect_error("sweep: {points: [{train.seed: -1}]}", "sweep.points[0].train.seed: -1 is out");
  expect_error("sweep: {points: [{train.seed: 1, train.seed: 2}]}", "duplicate key 'train.seed'");
  expect_error("sweep: {points: {train.seed: 1}}", "expected a list of maps");
  expect_error("sweep: {grid: {data.classes: [1]}}", "sweep.grid.data.classes[0]: expected a list");
}

// Mangled variants of a valid config: any status but a crash, a leak or an
// error without a message is fine (ASan and LSan watch this).
static void test_mangled_input(void) {
  size_t len = strlen(rich_config);
  char *buf = malloc(len + 1);
  if (!buf) return;
  uint64_t ok = 0, failed = 0;
  for (size_t cut = 0; cut <= len; cut++) { // every prefix
    a3_config cfg;
    a3_status s = a3_config_load_string("cut", rich_config, cut, NULL, 0, &cfg);
    if (s == A3_OK)
      ok++;
    else
      failed++;
    CHECK(s == A3_OK || (s == A3_ERR_CONFIG && a3_error_message()[0]));
    a3_config_free(&cfg);
  }
  static const char bytes[] = "{}[],:-#&*!|>'\"%@` \n\t\x01\xff\xc3\x80x9.";
  for (uint64_t i = 0; i < 3000; i++) { // 1-3 random byte changes
    memcpy(buf, rich_config, len + 1);
    for (uint64_t j = 0; j <= a3_rng_below(42, 9, i, 3); j++) {
      size_t at = (size_t)a3_rng_below(42, 1, i * 4 + j, len);
      buf[at] = bytes[a3_rng_below(42, 2, i * 4 + j, sizeof bytes - 1)];
    }
    a3_config cfg;
    a3_status s = a3_config_load_string("mangled", buf, len, NULL, 0, &cfg);
    if (s == A3_OK)
      ok++;
    else
      failed++;
    CHECK(s == A3_OK || (s == A3_ERR_CONFIG && a3_error_message()[0]));
    a3_config_free(&cfg);
  }
  CHECK(ok > 0 && failed > 0);
  free(buf);
}

int main(void) {
  test_schema_table();
  test_defaults();
  test_default_file();
  test_overrides();
  test_round_trip();
  test_hash();
  test_value_grammar();
  test_structure_errors();
  test_limits();
  test_cross_checks();
  test_sweep_errors();
  test_mangled_input();
  return TEST_DONE("test_config");
}
