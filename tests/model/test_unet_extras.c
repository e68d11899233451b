// The strategy-added modules (adapter, LoRA; include/a3fta/model.h):
// - step 0 reproduces the base model BITWISE (memcmp of the output, of dx
//   and of every base parameter's gradient) for the adapter pre_out and
//   post_out, with and without gate, with each activation, and for LoRA;
// - parameter counts, names, shapes and table order on google/ddpm-cifar10-32
//   (configs/ddpm-cifar10-32.yaml): an adapter C -> r -> C with biases has
//   2Cr + r + C = 513r + 256 parameters per block at C = 256 (+1 with the
//   gate), LoRA r = 4 on q/k/v/out 49,152 in all;
// - initialisation: up / lora_B zeros, gate 1, down / lora_A within
//   U(+-1/sqrt(C)), and the base weights independent of the extras;
// - frozen parameters (the strategies' trainable sets) get no gradient and the
//   trainable ones exactly the full backward's;
// - errors and a3_unet_extras_from_strategy.
#include "model_test_util.h"
#include "test_util.h"

// Attention everywhere: down (C 4 and 8), mid (scale 1.5), up (8 and 4).
static const char *CONFIG = "model:\n"
                            "  arch:\n"
                            "    sample_size: 8\n"
                            "    in_channels: 2\n"
                            "    out_channels: 3\n"
                            "    block_out_channels: [4, 8]\n"
                            "    layers_per_block: 1\n"
                            "    down_block_types: [AttnDownBlock2D, AttnDownBlock2D]\n"
                            "    up_block_types: [AttnUpBlock2D, AttnUpBlock2D]\n"
                            "    norm_num_groups: 2\n"
                            "    attention_head_dim: 2\n"
                            "    center_input_sample: true\n"
                            "    mid_block_scale_factor: 1.5\n";

enum { BATCH = 2 };

typedef struct {
  float *x, *t, *y, *out, *dout, *dx;
  size_t nin, nout;
} io_buffers;

static void io_alloc(io_buffers *b, const a3_unet *m) {
  b->nin = mt_numel_in(m);
  b->nout = mt_numel_out(m);
  b->x = calloc(b->nin, sizeof(float));
  b->dx = calloc(b->nin, sizeof(float));
  b->t = calloc(BATCH, sizeof(float));
  b->y = calloc(b->nout, sizeof(float));
  b->out = calloc(b->nout, sizeof(float));
  b->dout = calloc(b->nout, sizeof(float));
  mt_fill(b->x, b->nin, 21, 0.5f, 0.5f);
  mt_fill(b->y, b->nout, 22, 1.0f, 0.0f);
  b->t[0] = 17.0f;
  b->t[1] = 640.0f;
}

static void io_free(io_buffers *b) {
  free(b->x), free(b->dx), free(b->t), free(b->y), free(b->out), free(b->dout);
}

// Copies every base parameter of `from` into `to` by name.
static void copy_base(a3_unet *to, a3_unet *from) {
  for (int i = 0; i < a3_unet_param_count(to); i++) {
    const a3_param *p = a3_unet_param_at(to, i);
    if (p->added) continue;
    const a3_param *q = a3_unet_param_find(from, p->name);
    CHECK_MSG(q && q->numel == p->numel, "%s missing in the base model", p->name);
    if (q)
      memcpy(a3_unet_params(to) + p->offset, a3_unet_params(from) + q->offset,
             p->numel * sizeof(float));
  }
}

// ---------------------------------------------------------------- step 0
static const char *const ACT_NAMES[] = {"silu", "gelu", "relu", "identity"};

static void check_step0(a3_unet *base, const io_buffers *ref, const float *ref_grads,
                        const a3_unet_extras *e, const char *label) {
  a3_unet *m = mt_build_yaml_ex(label, CONFIG, e);
  CHECK(m != NULL);
  if (!m) return;
  copy_base(m, base);
  a3_unet_init_extras(m, 5);
  CHECK(a3_unet_plan(m, BATCH) == A3_OK);
  io_buffers b = {0};
  io_alloc(&b, m);
  float loss;
  CHECK(mt_step(m, b.x, b.t, b.y, b.out, b.dout, b.dx, &loss) == A3_OK);
  CHECK_MSG(memcmp(b.out, ref->out, b.nout * sizeof(float)) == 0, "%s: output differs", label);
  CHECK_MSG(memcmp(b.dx, ref->dx, b.nin * sizeof(float)) == 0, "%s: dx differs", label);
  int base_differ = 0, up_grads = 0, down_nonzero = 0;
  const float *g = a3_unet_grads(m);
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    if (!p->added) {
      const a3_param *q = a3_unet_param_find(base, p->name);
      base_differ += memcmp(g + p->offset, ref_grads + q->offset, p->numel * sizeof(float)) != 0;
      continue;
    }
    // Zero-initialised up / lora_B get a gradient; down / lora_A / gate get exactly 0
    // (their gradients all pass through the zero matrix).
    const bool zero_init = strstr(p->name, ".up.") || strstr(p->name, "lora_B");
    for (size_t j = 0; j < p->numel; j++) {
      if (zero_init) up_grads += g[p->offset + j] != 0.0f;
      if (!zero_init) down_nonzero += g[p->offset + j] != 0.0f;
    }
  }
  CHECK_MSG(base_differ == 0, "%s: %d base gradient tensors differ", label, base_differ);
  CHECK_MSG(up_grads > 0, "%s: the zero-initialised matrices get no gradient", label);
  CHECK_MSG(down_nonzero == 0, "%s: %d non-zero down/lora_A/gate gradients", label, down_nonzero);
  io_free(&b);
  a3_unet_free(m);
}

static void test_step0(void) {
  a3_unet *base = mt_build_yaml("base", CONFIG);
  CHECK(base != NULL);
  if (!base) return;
  mt_randomize(base, 3);
  CHECK(a3_unet_plan(base, BATCH) == A3_OK);
  io_buffers ref = {0};
  io_alloc(&ref, base);
  float loss;
  CHECK(mt_step(base, ref.x, ref.t, ref.y, ref.out, ref.dout, ref.dx, &loss) == A3_OK);
  float *ref_grads = malloc(a3_unet_num_floats(base) * sizeof(float));
  memcpy(ref_grads, a3_unet_grads(base), a3_unet_num_floats(base) * sizeof(float));
  int variants = 0;
  char label[96];
  for (int place = 0; place < 2; place++)
    for (int gate = 0; gate < 2; gate++)
      for (int act = 0; act < 4; act++) {
        const a3_unet_extras e = {.adapter_rank = 3,
                                  .adapter_activation = (a3_activation)act,
                                  .adapter_placement = (a3_adapter_placement)place,
                                  .adapter_gate = gate};
        snprintf(label, sizeof label, "adapter %s %s%s", place ? "post_out" : "pre_out",
                 ACT_NAMES[act], gate ? " gated" : "");
        check_step0(base, &ref, ref_grads, &e, label);
        variants++;
      }
  const a3_unet_extras lora = {.lora_rank = 2, .lora_alpha = 3.0};
  check_step0(base, &ref, ref_grads, &lora, "lora r=2 alpha=3");
  const a3_unet_extras both = {.adapter_rank = 2,
                               .adapter_activation = A3_ACT_GELU,
                               .adapter_gate = true,
                               .lora_rank = 4,
                               .lora_alpha = 4.0};
  check_step0(base, &ref, ref_grads, &both, "adapter + lora");
  printf("step 0: %d adapter variants, LoRA, adapter + LoRA: output, dx and base gradients "
         "bitwise equal to the base model's\n",
         variants);
  free(ref_grads);
  io_free(&ref);
  a3_unet_free(base);
}

// ---------------------------------------------------------------- counts on ddpm-cifar10-32
static size_t added_params(const a3_unet *m) { return a3_unet_get_stats(m).added_params; }

static void check_shape2(const a3_unet *m, const char *name, int ndim, int d0, int d1) {
  const a3_param *p = a3_unet_param_find(m, name);
  CHECK_MSG(p && p->ndim == ndim && p->shape[0] == d0 && (ndim < 2 || p->shape[1] == d1),
            "%s: missing or wrong shape", name);
  if (p) CHECK_MSG(p->added && !p->in_attention, "%s: flags", name);
}

static void test_cifar_counts(const char *path) {
  a3_config cfg;
  CHECK_MSG(a3_config_load(path, NULL, 0, &cfg) == A3_OK, "%s: %s", path, a3_error_message());
  const a3_arch_config *arch = &cfg.model.arch;
  a3_unet *m = NULL;
  const int per_block_r8 = 2 * 256 * 8 + 8 + 256; // 513 r + 256 at r = 8
  CHECK(per_block_r8 == 513 * 8 + 256 && per_block_r8 == 4360);

  a3_unet_extras e = {.adapter_rank = 8, .adapter_activation = A3_ACT_GELU};
  CHECK(a3_unet_build_ex(arch, &e, &m) == A3_OK);
  if (m) {
    const a3_unet_stats st = a3_unet_get_stats(m);
    CHECK_MSG(st.added_params == 6 * 4360 && st.added_tensors == 6 * 4, "adapter r=8: %zu in %d",
              st.added_params, st.added_tensors);
    CHECK_MSG(st.params - st.added_params == 35746307, "base params %zu", st.params);
    CHECK_MSG(st.attention_params == 1582080, "attention params %zu", st.attention_params);
    const char *blk = "mid_block.attentions.0";
    char name[128];
    snprintf(name, sizeof name, "%s.adapter.down.weight", blk);
    check_shape2(m, name, 2, 8, 256);
    snprintf(name, sizeof name, "%s.adapter.down.bias", blk);
    check_shape2(m, name, 1, 8, 0);
    snprintf(name, sizeof name, "%s.adapter.up.weight", blk);
    check_shape2(m, name, 2, 256, 8);
    snprintf(name, sizeof name, "%s.adapter.up.bias", blk);
    check_shape2(m, name, 1, 256, 0);
    CHECK(a3_unet_param_find(m, "up_blocks.2.attentions.2.adapter.up.bias") != NULL);
    CHECK(a3_unet_param_find(m, "down_blocks.1.attentions.1.adapter.down.weight") != NULL);
    // registered right after the block's own parameters
    const int out_b = a3_unet_param_index(m, "down_blocks.1.attentions.0.to_out.0.bias");
    CHECK(a3_unet_param_index(m, "down_blocks.1.attentions.0.adapter.down.weight") == out_b + 1);
    CHECK(a3_unet_param_index(m, "down_blocks.1.attentions.1.group_norm.weight") == out_b + 5);
    const a3_param *db = a3_unet_param_find(m, "mid_block.attentions.0.adapter.down.bias");
    CHECK(db && db->is_bias);
    a3_unet_free(m);
  }
  e.adapter_gate = true;
  CHECK(a3_unet_build_ex(arch, &e, &m) == A3_OK);
  if (m) {
    CHECK_MSG(added_params(m) == 6 * 4361, "gated adapter r=8: %zu", added_params(m));
    check_shape2(m, "mid_block.attentions.0.adapter.gate", 1, 1, 0);
    CHECK(a3_unet_param_index(m, "mid_block.attentions.0.adapter.gate") ==
          a3_unet_param_index(m, "mid_block.attentions.0.adapter.up.bias") + 1);
    a3_unet_free(m);
  }
  e = (a3_unet_extras){.adapter_rank = 16, .adapter_activation = A3_ACT_GELU};
  CHECK(a3_unet_build_ex(arch, &e, &m) == A3_OK);
  if (m) {
    CHECK_MSG(added_params(m) == 50784, "adapter r=16: %zu", added_params(m)); // issue 4
    a3_unet_free(m);
  }
  e = (a3_unet_extras){.lora_rank = 4, .lora_alpha = 4.0};
  CHECK(a3_unet_build_ex(arch, &e, &m) == A3_OK);
  if (m) {
    const a3_unet_stats st = a3_unet_get_stats(m);
    CHECK_MSG(st.added_params == 49152 && st.added_tensors == 6 * 8, "LoRA r=4: %zu in %d",
              st.added_params, st.added_tensors);
    const char *lin[] = {"to_q", "to_k", "to_v", "to_out.0"};
    char name[128];
    for (int i = 0; i < 4; i++) {
      snprintf(name, sizeof name, "up_blocks.2.attentions.1.%s.lora_A.weight", lin[i]);
      check_shape2(m, name, 2, 4, 256);
      const int a = a3_unet_param_index(m, name);
      snprintf(name, sizeof name, "up_blocks.2.attentions.1.%s.bias", lin[i]);
      CHECK_MSG(a == a3_unet_param_index(m, name) + 1, "lora_A right after %s", name);
      snprintf(name, sizeof name, "up_blocks.2.attentions.1.%s.lora_B.weight", lin[i]);
      check_shape2(m, name, 2, 256, 4);
      CHECK(a3_unet_param_index(m, name) == a + 1);
    }
    a3_unet_summary(m, stdout);
    a3_unet_free(m);
  }
  a3_config_free(&cfg);
}

// ---------------------------------------------------------------- init
static void test_init(void) {
  const a3_unet_extras e = {
      .adapter_rank = 3, .adapter_gate = true, .lora_rank = 2, .lora_alpha = 2.0};
  a3_unet *base = mt_build_yaml("base", CONFIG), *m = mt_build_yaml_ex("ex", CONFIG, &e);
  CHECK(base && m);
  if (!base || !m) {
    a3_unet_free(base), a3_unet_free(m);
    return;
  }
  a3_unet_init_random(base, 42);
  a3_unet_init_random(m, 42);
  int base_differ = 0, bad = 0;
  const float *w = a3_unet_params(m);
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    const float *v = w + p->offset;
    if (!p->added) {
      const a3_param *q = a3_unet_param_find(base, p->name);
      base_differ += memcmp(v, a3_unet_params(base) + q->offset, p->numel * sizeof(float)) != 0;
      continue;
    }
    const bool zero = strstr(p->name, ".up.") || strstr(p->name, "lora_B");
    const bool gate = strstr(p->name, ".gate") != NULL;
    const float bound = 1.0f / sqrtf((float)p->shape[p->ndim == 2 ? 1 : 0]);
    int nonzero = 0;
    for (size_t j = 0; j < p->numel; j++) {
      nonzero += v[j] != 0.0f;
      if (zero) bad += v[j] != 0.0f;
      if (gate) bad += v[j] != 1.0f;
      if (!zero && !gate && !(fabsf(v[j]) <= bound)) bad++;
    }
    if (!zero && !gate) bad += nonzero == 0;
  }
  CHECK_MSG(base_differ == 0, "%d base tensors depend on the extras", base_differ);
  CHECK_MSG(bad == 0, "%d added values initialised wrongly", bad);
  // init_extras touches only the added parameters and matches init_random's values.
  float *saved = malloc(a3_unet_num_floats(m) * sizeof(float));
  memcpy(saved, w, a3_unet_num_floats(m) * sizeof(float));
  mt_randomize(m, 9);
  for (int i = 0; i < a3_unet_param_count(m); i++) { // restore the base ones
    const a3_param *p = a3_unet_param_at(m, i);
    if (!p->added) memcpy(a3_unet_params(m) + p->offset, saved + p->offset, p->numel * 4);
  }
  a3_unet_init_extras(m, 42);
  CHECK(memcmp(saved, a3_unet_params(m), a3_unet_num_floats(m) * sizeof(float)) == 0);
  free(saved);
  a3_unet_free(base);
  a3_unet_free(m);
}

// ---------------------------------------------------------------- frozen parameters
typedef bool (*trains_fn)(const a3_param *p);
static bool only_adapter(const a3_param *p) { return strstr(p->name, ".adapter.") != NULL; }
static bool only_lora(const a3_param *p) { return strstr(p->name, ".lora_") != NULL; }
static bool a3fta_set(const a3_param *p) { return p->in_attention || only_adapter(p); }
static bool only_gate(const a3_param *p) { return strstr(p->name, ".gate") != NULL; }
static bool only_up(const a3_param *p) { return strstr(p->name, ".adapter.up.") != NULL; }
static bool only_lora_b(const a3_param *p) { return strstr(p->name, "lora_B") != NULL; }
static bool not_added(const a3_param *p) { return !p->added; }

static void check_frozen(a3_unet *m, io_buffers *b, const float *full, trains_fn fn,
                         const char *label) {
  const float sentinel = 12345.0f;
  float *g = a3_unet_grads(m);
  int trainable = 0;
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    a3_unet_set_trainable(m, i, fn(p));
    trainable += p->trainable;
    for (size_t j = 0; j < p->numel; j++) g[p->offset + j] = p->trainable ? 0.0f : sentinel;
  }
  CHECK(a3_unet_forward(m, b->x, b->t, b->out) == A3_OK);
  const a3_backend *be = a3_backend_cpu();
  be->ops->mse_backward(be, b->dout, b->out, b->y, b->nout, 1.0f);
  CHECK(a3_unet_backward(m, b->dout, NULL) == A3_OK);
  int frozen_written = 0, wrong = 0;
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    for (size_t j = 0; j < p->numel; j++) {
      const float v = g[p->offset + j];
      if (!p->trainable && v != sentinel) frozen_written++;
      if (p->trainable && v != full[p->offset + j]) wrong++;
    }
  }
  CHECK_MSG(trainable > 0, "%s: nothing trains", label);
  CHECK_MSG(frozen_written == 0, "%s: %d frozen gradient values written", label, frozen_written);
  CHECK_MSG(wrong == 0, "%s: %d trainable gradient values differ from the full backward", label,
            wrong);
  a3_unet_set_all_trainable(m, true);
}

static void test_frozen(const a3_unet_extras *e, const char *label) {
  a3_unet *m = mt_build_yaml_ex(label, CONFIG, e);
  CHECK(m != NULL);
  if (!m) return;
  mt_randomize(m, 8); // non-zero added weights: every path carries gradient
  CHECK(a3_unet_plan(m, BATCH) == A3_OK);
  io_buffers b = {0};
  io_alloc(&b, m);
  float loss;
  CHECK(mt_step(m, b.x, b.t, b.y, b.out, b.dout, b.dx, &loss) == A3_OK);
  float *full = malloc(a3_unet_num_floats(m) * sizeof(float));
  memcpy(full, a3_unet_grads(m), a3_unet_num_floats(m) * sizeof(float));
  char what[160];
  const struct {
    trains_fn fn;
    const char *name;
  } sets[] = {{only_adapter, "adapter"}, {a3fta_set, "a3fta"},    {only_lora, "lora"},
              {only_gate, "gate"},       {only_up, "adapter.up"}, {only_lora_b, "lora_B"},
              {not_added, "base only"}};
  for (size_t k = 0; k < sizeof sets / sizeof *sets; k++) {
    bool any = false;
    for (int i = 0; i < a3_unet_param_count(m); i++) any |= sets[k].fn(a3_unet_param_at(m, i));
    if (!any) continue;
    snprintf(what, sizeof what, "%s, %s trainable", label, sets[k].name);
    check_frozen(m, &b, full, sets[k].fn, what);
  }
  free(full);
  io_free(&b);
  a3_unet_free(m);
}

// ---------------------------------------------------------------- errors, strategy mapping
static void test_errors(void) {
  a3_config cfg;
  CHECK(a3_config_load_string("t", CONFIG, strlen(CONFIG), NULL, 0, &cfg) == A3_OK);
  a3_unet *m = NULL;
  a3_unet_extras e = {.adapter_rank = -1};
  CHECK(a3_unet_build_ex(&cfg.model.arch, &e, &m) == A3_ERR_CONFIG && !m);
  e = (a3_unet_extras){.adapter_rank = 2, .adapter_activation = (a3_activation)9};
  CHECK(a3_unet_build_ex(&cfg.model.arch, &e, &m) == A3_ERR_CONFIG && !m);
  e = (a3_unet_extras){.adapter_rank = 2, .adapter_placement = (a3_adapter_placement)5};
  CHECK(a3_unet_build_ex(&cfg.model.arch, &e, &m) == A3_ERR_CONFIG && !m);
  e = (a3_unet_extras){.lora_rank = 2, .lora_alpha = NAN};
  CHECK(a3_unet_build_ex(&cfg.model.arch, &e, &m) == A3_ERR_CONFIG && !m);
  a3_error_clear();
  CHECK(a3_unet_build_ex(&cfg.model.arch, NULL, &m) == A3_OK && m);
  if (m) {
    CHECK(a3_unet_get_extras(m)->adapter_rank == 0 && a3_unet_get_extras(m)->lora_rank == 0);
    CHECK(a3_unet_get_stats(m).added_tensors == 0);
    a3_unet_free(m);
  }
  // the strategy mapping
  cfg.strategy.adapter = (a3_adapter_config){
      .rank = 8, .activation = A3_ACT_RELU, .placement = A3_PLACEMENT_POST_OUT, .gate = true};
  cfg.strategy.lora = (a3_lora_config){.rank = 4, .alpha = 8.0};
  const a3_strategy_name names[] = {A3_STRATEGY_FULL,    A3_STRATEGY_ATTENTION, A3_STRATEGY_A3FTA,
                                    A3_STRATEGY_ADAPTER, A3_STRATEGY_LORA,      A3_STRATEGY_BITFIT};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    cfg.strategy.name = names[i];
    const a3_unet_extras x = a3_unet_extras_from_strategy(&cfg.strategy);
    const bool adapter = names[i] == A3_STRATEGY_A3FTA || names[i] == A3_STRATEGY_ADAPTER;
    const bool lora = names[i] == A3_STRATEGY_LORA;
    CHECK(x.adapter_rank == (adapter ? 8 : 0) && x.lora_rank == (lora ? 4 : 0));
    if (adapter)
      CHECK(x.adapter_activation == A3_ACT_RELU && x.adapter_placement == A3_PLACEMENT_POST_OUT &&
            x.adapter_gate);
    if (lora) CHECK(x.lora_alpha == 8.0);
  }
  a3_config_free(&cfg);
}

// Usage: test_unet_extras [CONFIGS_DIR] (default $A3FTA_SOURCE_DIR/configs).
int main(int argc, char **argv) {
  char dir[3072], path[4096];
  const char *src = getenv("A3FTA_SOURCE_DIR");
  snprintf(dir, sizeof dir, "%s", argc > 1 ? argv[1] : "");
  if (argc <= 1) snprintf(dir, sizeof dir, "%s/configs", src ? src : ".");
  // Tiny GEMMs: extra BLAS threads only spin against a parallel ctest.
  a3_backend_cpu_set_threads(1);
  test_step0();
  snprintf(path, sizeof path, "%s/ddpm-cifar10-32.yaml", dir);
  test_cifar_counts(path);
  test_init();
  const a3_unet_extras pre = {.adapter_rank = 3,
                              .adapter_activation = A3_ACT_GELU,
                              .adapter_gate = true,
                              .lora_rank = 2,
                              .lora_alpha = 3.0};
  const a3_unet_extras post = {.adapter_rank = 2,
                               .adapter_activation = A3_ACT_SILU,
                               .adapter_placement = A3_PLACEMENT_POST_OUT,
                               .adapter_gate = true};
  test_frozen(&pre, "pre_out gelu gated + lora");
  test_frozen(&post, "post_out silu gated");
  test_errors();
  return TEST_DONE("test_unet_extras");
}
