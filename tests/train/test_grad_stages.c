// The backward's stage reports (a3_unet_backward_hooked), on which the
// bucketed gradient sum relies: after stage s is reported, the gradient of
// every parameter of stage <= s must not change for the rest of the
// backward. Checked bitwise for several trainable sets (all, attention only:
// the backward stops early, adapter, LoRA, the time embedding only) with and
// without an input gradient; and the reports come once each, in order.
#include "model/model_test_util.h"
#include "test_util.h"

#include <stdlib.h>
#include <string.h>

static const char *CONFIG =
    "model:\n"
    "  arch:\n"
    "    sample_size: 8\n"
    "    in_channels: 1\n"
    "    out_channels: 1\n"
    "    block_out_channels: [4, 8, 8]\n"
    "    layers_per_block: 2\n"
    "    down_block_types: [DownBlock2D, AttnDownBlock2D, AttnDownBlock2D]\n"
    "    up_block_types: [AttnUpBlock2D, AttnUpBlock2D, UpBlock2D]\n"
    "    norm_num_groups: 2\n";

enum { B = 2 };

typedef struct {
  a3_unet *m;
  float *snap; // (num_floats) each parameter's gradient when its stage was reported
  int expected, fail_at;
  int bad_order;
} probe;

static a3_status on_stage(void *ctx, int stage) {
  probe *p = ctx;
  if (stage != p->expected) p->bad_order++;
  p->expected = stage + 1;
  const float *g = a3_unet_grads(p->m);
  for (int i = 0; i < a3_unet_param_count(p->m); i++) {
    const a3_param *q = a3_unet_param_at(p->m, i);
    if (q->trainable && a3_unet_param_grad_stage(p->m, i) == stage)
      memcpy(p->snap + q->offset, g + q->offset, q->numel * sizeof(float));
  }
  if (stage == p->fail_at) return A3_FAIL(A3_ERR_MPI, "the hook failed at stage %d", stage);
  return A3_OK;
}

typedef enum { ALL, ATTENTION, EXTRAS, TIME_ONLY } trainable_set;

static void mark(a3_unet *m, trainable_set set) {
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    bool on = true;
    if (set == ATTENTION) on = p->in_attention;
    if (set == EXTRAS) on = p->added;
    if (set == TIME_ONLY) on = strncmp(p->name, "time_embedding.", 15) == 0;
    a3_unet_set_trainable(m, i, on);
  }
}

// Forward, MSE against a fixed target, hooked backward; compares each
// trainable parameter's gradient at its report with the final one.
static void check(const a3_unet_extras *e, trainable_set set, bool want_dx, const char *label) {
  a3_unet *m = mt_build_yaml_ex(label, CONFIG, e);
  CHECK(m != NULL);
  if (!m || a3_unet_plan(m, B) != A3_OK) {
    a3_unet_free(m);
    CHECK(false);
    return;
  }
  mt_randomize(m, 3);
  mark(m, set);
  const size_t nin = mt_numel_in(m), nout = mt_numel_out(m), nf = a3_unet_num_floats(m);
  float *x = malloc(nin * sizeof *x), *dx = malloc(nin * sizeof *dx);
  float *out = malloc(nout * sizeof *out), *target = malloc(nout * sizeof *target);
  float *dout = malloc(nout * sizeof *dout), *snap = calloc(nf, sizeof *snap);
  const float t[B] = {3.0f, 700.0f};
  mt_fill(x, nin, 1, 1.0f, 0.0f);
  mt_fill(target, nout, 2, 1.0f, 0.0f);
  probe p = {.m = m, .snap = snap, .fail_at = -1};
  const a3_backward_hook hook = {on_stage, &p};
  const a3_backend *be = a3_backend_cpu();
  float loss = 0.0f;
  a3_unet_zero_grads(m);
  CHECK(a3_unet_forward(m, x, t, out) == A3_OK);
  be->ops->mse_forward(be, &loss, out, target, nout);
  be->ops->mse_backward(be, dout, out, target, nout, 1.0f);
  CHECK(a3_unet_backward_hooked(m, dout, want_dx ? dx : NULL, &hook) == A3_OK);
  CHECK_MSG(p.bad_order == 0 && p.expected == a3_unet_backward_stages(m),
            "%s: %d reports out of order, last %d of %d", label, p.bad_order, p.expected - 1,
            a3_unet_backward_stages(m));
  const float *g = a3_unet_grads(m);
  int changed = 0, trained = 0, nonzero = 0;
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *q = a3_unet_param_at(m, i);
    if (!q->trainable) continue;
    trained++;
    if (memcmp(snap + q->offset, g + q->offset, q->numel * sizeof(float)) != 0) {
      changed++;
      fprintf(stderr, "%s: %s (stage %d) changed after its report\n", label, q->name,
              a3_unet_param_grad_stage(m, i));
    }
    for (size_t k = 0; k < q->numel; k++) nonzero += g[q->offset + k] != 0.0f;
  }
  CHECK_MSG(changed == 0, "%s: %d of %d trainable tensors changed after their stage", label,
            changed, trained);
  CHECK_MSG(trained > 0 && nonzero > 0, "%s: nothing trained (%d tensors)", label, trained);
  // A failing hook stops the backward with its error.
  p = (probe){.m = m, .snap = snap, .fail_at = 2};
  CHECK(a3_unet_forward(m, x, t, out) == A3_OK);
  CHECK(a3_unet_backward_hooked(m, dout, NULL, &hook) == A3_ERR_MPI && p.expected == 3);
  a3_error_clear();
  free(x), free(dx), free(out), free(target), free(dout), free(snap);
  a3_unet_free(m);
}

int main(void) {
  a3_log_set_level(A3_LOG_WARN);
  const a3_unet_extras none = {0};
  const a3_unet_extras adapter = {.adapter_rank = 2,
                                  .adapter_activation = A3_ACT_GELU,
                                  .adapter_placement = A3_PLACEMENT_PRE_OUT,
                                  .adapter_gate = true};
  const a3_unet_extras lora = {.lora_rank = 2, .lora_alpha = 2.0};
  check(&none, ALL, false, "full");
  check(&none, ALL, true, "full, dx");
  check(&none, ATTENTION, false, "attention only");
  check(&adapter, ALL, false, "adapter, all");
  check(&adapter, EXTRAS, false, "adapter only");
  check(&lora, EXTRAS, true, "LoRA only, dx");
  check(&none, TIME_ONLY, false, "time embedding only");
  return TEST_DONE("test_train_grad_stages");
}
