// The memory plan reserves the workspace every convolution asks for, the
// resnets' 1x1 shortcuts included (on the GPU a shortcut's weight gradient
// can need more than conv1 and conv2 on cuDNN; an H100 step once wrote past
// the arena there).
//
// A backend that is the CPU's but whose convolutions ask for more workspace
// than the CPU needs (EXTRA bytes more for 1x1 shapes, so a shortcut needs the
// most) and fill all of it after each call: a plan that reserves less lets
// those writes run past the arena (AddressSanitizer in CI reports the heap
// overflow) or over saved activations, and then the step's output, input
// gradient and every parameter gradient differ from the plain CPU backend's,
// which the test compares bitwise.
#include "model_test_util.h"
#include "test_util.h"

#include <string.h>

// Channels 4 -> 8 down (a 1x1 shortcut) and 16 -> 8, 12 -> 4 ... up.
static const char *CONFIG = "model:\n"
                            "  arch:\n"
                            "    sample_size: 8\n"
                            "    in_channels: 1\n"
                            "    out_channels: 1\n"
                            "    block_out_channels: [4, 8]\n"
                            "    layers_per_block: 1\n"
                            "    down_block_types: [DownBlock2D, AttnDownBlock2D]\n"
                            "    up_block_types: [AttnUpBlock2D, UpBlock2D]\n"
                            "    norm_num_groups: 2\n";

enum { BATCH = 2, EXTRA = 32 << 20 }; // beyond everything else the plan holds

static int pointwise_calls; // 1x1 convolutions run on the greedy backend

static size_t greedy_size(const a3_backend *be, const a3_conv2d_shape *s) {
  (void)be;
  const a3_backend *cpu = a3_backend_cpu();
  const bool pointwise = s->KH == 1 && s->KW == 1;
  return cpu->ops->conv2d_workspace_size(cpu, s) + (pointwise ? EXTRA : 64);
}

static void greedy_forward(const a3_backend *be, const a3_conv2d_shape *s, a3_act *out,
                           const a3_act *inp, const float *weight, const float *bias,
                           void *workspace) {
  const a3_backend *cpu = a3_backend_cpu();
  cpu->ops->conv2d_forward(cpu, s, out, inp, weight, bias, workspace);
  memset(workspace, 0x7f, greedy_size(be, s));
  pointwise_calls += s->KH == 1 && s->KW == 1;
}

static void greedy_backward(const a3_backend *be, const a3_conv2d_shape *s, a3_act *dinp,
                            float *dweight, float *dbias, const a3_act *dout, const a3_act *inp,
                            const float *weight, void *workspace) {
  const a3_backend *cpu = a3_backend_cpu();
  cpu->ops->conv2d_backward(cpu, s, dinp, dweight, dbias, dout, inp, weight, workspace);
  memset(workspace, 0x7f, greedy_size(be, s));
  pointwise_calls += s->KH == 1 && s->KW == 1;
}

// The U-Net on `be`, random weights (the same for every backend), planned for BATCH.
static a3_unet *build(const a3_backend *be) {
  a3_config cfg;
  a3_unet *m = NULL;
  a3_status s = a3_config_load_string("workspace", CONFIG, strlen(CONFIG), NULL, 0, &cfg);
  if (s == A3_OK) {
    s = a3_unet_build_on(&cfg.model.arch, NULL, be, &m);
    a3_config_free(&cfg);
  }
  if (s == A3_OK) {
    mt_randomize(m, 7);
    s = a3_unet_plan(m, BATCH);
  }
  CHECK_MSG(s == A3_OK, "%s", a3_error_message());
  return m;
}

typedef struct {
  float *out, *dout, *dx, *grads;
} step_result;

static void step(a3_unet *m, const float *x, const float *t, const float *target, step_result *r) {
  const size_t nout = mt_numel_out(m), nin = mt_numel_in(m);
  const size_t ngrad = (size_t)a3_unet_num_floats(m);
  r->out = calloc(nout, sizeof(float));
  r->dout = calloc(nout, sizeof(float));
  r->dx = calloc(nin, sizeof(float));
  r->grads = calloc(ngrad, sizeof(float));
  float loss = 0.0f;
  CHECK(mt_step(m, x, t, target, r->out, r->dout, r->dx, &loss) == A3_OK);
  memcpy(r->grads, a3_unet_grads(m), ngrad * sizeof(float));
}

static void free_result(step_result *r) {
  free(r->out), free(r->dout), free(r->dx), free(r->grads);
}

int main(void) {
  a3_log_set_level(A3_LOG_WARN);
  a3_backend_ops ops = *a3_backend_cpu()->ops;
  ops.conv2d_workspace_size = greedy_size;
  ops.conv2d_forward = greedy_forward;
  ops.conv2d_backward = greedy_backward;
  const a3_backend greedy = {
      .name = "cpu-greedy-workspace", .ops = &ops, .impl = NULL, .act_bytes = sizeof(float)};
  a3_unet *ref = build(a3_backend_cpu()), *m = build(&greedy);
  if (!ref || !m) return TEST_DONE("test_unet_workspace");
  const a3_unet_memory plan = a3_unet_planned_bytes(m);
  CHECK_MSG(plan.scratch >= EXTRA, "the plan's scratch is %zu bytes, under a shortcut's %d",
            plan.scratch, EXTRA);
  const size_t nin = mt_numel_in(m), nout = mt_numel_out(m);
  float *x = calloc(nin, sizeof(float)), *target = calloc(nout, sizeof(float));
  const float t[BATCH] = {3.0f, 700.0f};
  mt_fill(x, nin, 1, 1.0f, 0.0f);
  mt_fill(target, nout, 2, 1.0f, 0.0f);
  step_result want, got;
  step(ref, x, t, target, &want);
  step(m, x, t, target, &got);
  CHECK_MSG(pointwise_calls > 0, "no 1x1 convolution ran: the model has no shortcut");
  CHECK(memcmp(want.out, got.out, nout * sizeof(float)) == 0);
  CHECK(memcmp(want.dx, got.dx, nin * sizeof(float)) == 0);
  CHECK_MSG(memcmp(want.grads, got.grads, (size_t)a3_unet_num_floats(m) * sizeof(float)) == 0,
            "parameter gradients differ from the CPU backend's");
  fprintf(stderr, "%d 1x1 convolution calls, plan scratch %zu bytes\n", pointwise_calls,
          plan.scratch);
  free_result(&want), free_result(&got);
  free(x), free(target);
  a3_unet_free(ref), a3_unet_free(m);
  return TEST_DONE("test_unet_workspace");
}
