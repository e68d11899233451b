// The parameter table: google/ddpm-cifar10-32's counts and names (from
// configs/ddpm-cifar10-32.yaml), and that frozen parameters get no gradient
// while the trainable ones get exactly what a full backward gives them.
#include "model_test_util.h"
#include "test_util.h"

static const char *TINY = "model:\n"
                          "  arch:\n"
                          "    sample_size: 8\n"
                          "    in_channels: 2\n"
                          "    out_channels: 2\n"
                          "    block_out_channels: [4, 8]\n"
                          "    layers_per_block: 1\n"
                          "    down_block_types: [AttnDownBlock2D, DownBlock2D]\n"
                          "    up_block_types: [UpBlock2D, AttnUpBlock2D]\n"
                          "    norm_num_groups: 2\n"
                          "    attention_head_dim: 2\n";

static int index_of(const a3_unet *m, const char *name) {
  int i = a3_unet_param_index(m, name);
  CHECK_MSG(i >= 0, "missing parameter %s", name);
  return i;
}

static void check_shape(const a3_unet *m, const char *name, int ndim, int d0, int d1, int d2,
                        int d3) {
  const a3_param *p = a3_unet_param_find(m, name);
  CHECK_MSG(p != NULL, "missing parameter %s", name);
  if (!p) return;
  const int want[4] = {d0, d1, d2, d3};
  int ok = p->ndim == ndim;
  for (int d = 0; ok && d < ndim; d++) ok = p->shape[d] == want[d];
  CHECK_MSG(ok, "%s: shape (%d, %d, %d, %d) ndim %d", name, p->shape[0], p->shape[1], p->shape[2],
            p->shape[3], p->ndim);
}

static void check_cifar_names(const a3_unet *m) {
  CHECK(strcmp(a3_unet_param_at(m, 0)->name, "conv_in.weight") == 0);
  CHECK(strcmp(a3_unet_param_at(m, a3_unet_param_count(m) - 1)->name, "conv_out.bias") == 0);
  static const char *present[] = {"down_blocks.1.attentions.0.to_q.weight",
                                  "down_blocks.0.resnets.0.time_emb_proj.bias",
                                  "mid_block.attentions.0.group_norm.weight",
                                  "up_blocks.0.upsamplers.0.conv.weight",
                                  "conv_norm_out.weight",
                                  "time_embedding.linear_1.weight",
                                  "down_blocks.0.downsamplers.0.conv.weight",
                                  "down_blocks.1.resnets.0.conv_shortcut.weight",
                                  "up_blocks.2.attentions.2.to_out.0.bias",
                                  "mid_block.resnets.1.conv2.bias"};
  for (size_t i = 0; i < sizeof present / sizeof *present; i++) index_of(m, present[i]);
  static const char *absent[] = {
      "down_blocks.3.downsamplers.0.conv.weight", "up_blocks.3.upsamplers.0.conv.weight",
      "down_blocks.0.resnets.0.conv_shortcut.weight", "mid_block.resnets.0.conv_shortcut.weight"};
  for (size_t i = 0; i < sizeof absent / sizeof *absent; i++)
    CHECK_MSG(a3_unet_param_index(m, absent[i]) < 0, "unexpected parameter %s", absent[i]);
  // diffusers' registration order: attentions before resnets, up_blocks before mid_block.
  CHECK(index_of(m, "down_blocks.1.attentions.1.to_out.0.bias") <
        index_of(m, "down_blocks.1.resnets.0.norm1.weight"));
  CHECK(index_of(m, "up_blocks.3.resnets.2.conv_shortcut.bias") <
        index_of(m, "mid_block.attentions.0.group_norm.weight"));
  CHECK(index_of(m, "mid_block.attentions.0.to_out.0.bias") <
        index_of(m, "mid_block.resnets.0.norm1.weight"));
  CHECK(index_of(m, "time_embedding.linear_2.bias") <
        index_of(m, "down_blocks.0.resnets.0.norm1.weight"));
  check_shape(m, "conv_in.weight", 4, 128, 3, 3, 3);
  check_shape(m, "time_embedding.linear_1.weight", 2, 512, 128, 0, 0);
  check_shape(m, "up_blocks.0.resnets.0.conv1.weight", 4, 256, 512, 3, 3);
  check_shape(m, "up_blocks.3.resnets.2.conv1.weight", 4, 128, 256, 3, 3);
  check_shape(m, "up_blocks.3.resnets.0.conv_shortcut.weight", 4, 128, 384, 1, 1);
  check_shape(m, "down_blocks.1.attentions.0.to_k.weight", 2, 256, 256, 0, 0);
  check_shape(m, "conv_out.weight", 4, 3, 128, 3, 3);
}

static void check_layout(const a3_unet *m) {
  size_t offset = 0;
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    CHECK_MSG(p->offset == offset, "%s: offset %zu, expected %zu", p->name, p->offset, offset);
    offset += p->numel;
  }
  CHECK(offset == a3_unet_num_floats(m));
}

static void test_cifar(const char *path) {
  a3_config cfg;
  a3_unet *m = NULL;
  a3_status s = a3_config_load(path, NULL, 0, &cfg);
  CHECK_MSG(s == A3_OK, "%s: %s", path, a3_error_message());
  if (s != A3_OK) return;
  s = a3_unet_build(&cfg.model.arch, &m);
  a3_config_free(&cfg);
  CHECK_MSG(s == A3_OK, "build: %s", a3_error_message());
  if (s != A3_OK) return;
  const a3_unet_stats st = a3_unet_get_stats(m);
  CHECK_MSG(st.params == 35746307, "params %zu", st.params);
  CHECK_MSG(st.tensors == 328, "tensors %d", st.tensors);
  CHECK_MSG(st.attention_params == 1582080, "attention params %zu", st.attention_params);
  CHECK_MSG(st.attention_blocks == 6, "attention blocks %d", st.attention_blocks);
  CHECK_MSG(st.bias_params == 40835, "bias params %zu", st.bias_params);
  CHECK(st.trainable_params == st.params);
  check_cifar_names(m);
  check_layout(m);
  CHECK(a3_unet_plan(m, 2) == A3_OK);
  a3_unet_summary(m, stdout);
  a3_unet_free(m);
}

// configs/fmnist-unet.yaml: the DESIGN's peer-baseline U-Net (1,623,169 in PyTorch).
static void test_fmnist(const char *path) {
  a3_config cfg;
  a3_unet *m = NULL;
  CHECK_MSG(a3_config_load(path, NULL, 0, &cfg) == A3_OK, "%s: %s", path, a3_error_message());
  CHECK(a3_unet_build(&cfg.model.arch, &m) == A3_OK);
  a3_config_free(&cfg);
  if (!m) return;
  const a3_unet_stats st = a3_unet_get_stats(m);
  CHECK_MSG(st.params == 1623169 && st.tensors == 268, "fmnist: %zu in %d", st.params, st.tensors);
  CHECK_MSG(st.attention_params == 100608, "fmnist attention %zu", st.attention_params);
  a3_unet_free(m);
}

// ---------------------------------------------------------------- frozen parameters
typedef struct {
  float *x, *t, *target, *out, *dout, *dx, *grads;
} step_buffers;

// Gradients (and dx, if wanted) of one step into b->grads / b->dx.
static void step(a3_unet *m, step_buffers *b, bool want_dx) {
  float loss;
  a3_status s = mt_step(m, b->x, b->t, b->target, b->out, b->dout, want_dx ? b->dx : NULL, &loss);
  CHECK_MSG(s == A3_OK, "step: %s", a3_error_message());
  memcpy(b->grads, a3_unet_grads(m), a3_unet_num_floats(m) * sizeof(float));
}

// Only params whose name contains `pattern` train: they must get exactly the
// full backward's gradients, and every frozen slot must keep its sentinel.
static void check_partial(a3_unet *m, step_buffers *b, const float *full, const char *pattern) {
  const float sentinel = 12345.0f;
  for (int i = 0; i < a3_unet_param_count(m); i++)
    a3_unet_set_trainable(m, i, strstr(a3_unet_param_at(m, i)->name, pattern) != NULL);
  float *g = a3_unet_grads(m);
  // a3_unet_zero_grads would hide writes to frozen slots: fill by hand instead.
  for (size_t j = 0; j < a3_unet_num_floats(m); j++) g[j] = sentinel;
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    if (p->trainable) memset(g + p->offset, 0, p->numel * sizeof(float));
  }
  CHECK(a3_unet_forward(m, b->x, b->t, b->out) == A3_OK);
  const a3_backend *be = a3_backend_cpu();
  be->ops->mse_backward(be, b->dout, b->out, b->target, mt_numel_out(m), 1.0f);
  CHECK(a3_unet_backward(m, b->dout, NULL) == A3_OK);
  int frozen_written = 0, trainable_wrong = 0, trainable = 0;
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    trainable += p->trainable;
    for (size_t j = 0; j < p->numel; j++) {
      const float v = g[p->offset + j], want = full[p->offset + j];
      if (!p->trainable && v != sentinel) frozen_written++;
      if (p->trainable && v != want) trainable_wrong++; // same ops, same order: bitwise equal
    }
  }
  CHECK_MSG(trainable > 0, "pattern %s matches nothing", pattern);
  CHECK_MSG(frozen_written == 0, "%s: %d frozen gradient values written", pattern, frozen_written);
  CHECK_MSG(trainable_wrong == 0, "%s: %d trainable gradient values differ from the full backward",
            pattern, trainable_wrong);
}

static void test_frozen(void) {
  a3_unet *m = mt_build_yaml("tiny", TINY);
  CHECK(m != NULL);
  if (!m) return;
  mt_randomize(m, 7);
  CHECK(a3_unet_plan(m, 2) == A3_OK);
  const size_t nin = mt_numel_in(m), nout = mt_numel_out(m), np = a3_unet_num_floats(m);
  step_buffers b = {0};
  float *full = calloc(np, sizeof(float)), *full_dx = calloc(nin, sizeof(float));
  b.x = calloc(nin, sizeof(float));
  b.dx = calloc(nin, sizeof(float));
  b.t = calloc(2, sizeof(float));
  b.target = calloc(nout, sizeof(float));
  b.out = calloc(nout, sizeof(float));
  b.dout = calloc(nout, sizeof(float));
  b.grads = calloc(np, sizeof(float));
  mt_fill(b.x, nin, 1, 1.0f, 0.0f);
  mt_fill(b.target, nout, 2, 1.0f, 0.0f);
  b.t[0] = 10.0f;
  b.t[1] = 700.0f;
  step(m, &b, true);
  memcpy(full, b.grads, np * sizeof(float));
  memcpy(full_dx, b.dx, nin * sizeof(float));
  check_partial(m, &b, full, ".attentions.");    // the "attention" strategy
  check_partial(m, &b, full, "conv_in.");        // the deepest parameter: every layer runs
  check_partial(m, &b, full, "time_embedding."); // reaches every resnet through temb
  check_partial(m, &b, full, ".bias");           // BitFit
  check_partial(m, &b, full, "conv_out.");       // only the head
  // Nothing trainable, dx wanted: the input gradient alone, equal to the full one.
  a3_unet_set_all_trainable(m, false);
  step(m, &b, true);
  int dx_wrong = 0;
  for (size_t j = 0; j < nin; j++) dx_wrong += b.dx[j] != full_dx[j];
  CHECK_MSG(dx_wrong == 0, "dx with everything frozen: %d values differ", dx_wrong);
  a3_unet_set_all_trainable(m, true);
  free(full), free(full_dx), free(b.x), free(b.dx), free(b.t), free(b.target), free(b.out),
      free(b.dout), free(b.grads);
  a3_unet_free(m);
}

static void test_errors(void) {
  a3_unet *m = mt_build_yaml("tiny", TINY);
  CHECK(m != NULL);
  if (!m) return;
  float dummy[4] = {0};
  CHECK(a3_unet_forward(m, dummy, dummy, dummy) == A3_ERR_INTERNAL); // not planned
  CHECK(a3_unet_plan(m, 0) == A3_ERR_INTERNAL);
  CHECK(a3_unet_plan(m, 1) == A3_OK);
  CHECK(a3_unet_backward(m, dummy, NULL) == A3_ERR_INTERNAL); // no forward yet
  a3_unet_free(m);
  a3_error_clear();
  a3_config cfg;
  CHECK(a3_config_load_string("t", TINY, strlen(TINY), NULL, 0, &cfg) == A3_OK);
  cfg.model.arch.attention_head_dim = 3; // divides neither 4 nor 8
  CHECK(a3_unet_build(&cfg.model.arch, &m) == A3_ERR_CONFIG && m == NULL);
  cfg.model.arch.attention_head_dim = 0;
  cfg.model.arch.n_up_block_types = 1;
  CHECK(a3_unet_build(&cfg.model.arch, &m) == A3_ERR_CONFIG && m == NULL);
  a3_config_free(&cfg);
  a3_error_clear();
}

// Usage: test_unet_params [CONFIGS_DIR] (default $A3FTA_SOURCE_DIR/configs).
int main(int argc, char **argv) {
  char dir[3072], path[4096];
  const char *src = getenv("A3FTA_SOURCE_DIR");
  if (argc > 1) {
    snprintf(dir, sizeof dir, "%s", argv[1]);
  } else {
    snprintf(dir, sizeof dir, "%s/configs", src ? src : ".");
  }
  // Tiny GEMMs: extra BLAS threads only spin against a parallel ctest.
  a3_backend_cpu_set_threads(1);
  snprintf(path, sizeof path, "%s/ddpm-cifar10-32.yaml", dir);
  test_cifar(path);
  snprintf(path, sizeof path, "%s/fmnist-unet.yaml", dir);
  test_fmnist(path);
  test_frozen();
  test_errors();
  return TEST_DONE("test_unet_params");
}
