// Finite-difference check of the whole U-Net's backward: for every parameter
// tensor a few elements (its largest-gradient element and two random ones),
// plus input elements, the analytic gradient of L = mean((unet(x, t) - y)^2)
// is compared with the five-point difference
//   (-L(w + 2h) + 8 L(w + h) - 8 L(w - h) + L(w - 2h)) / (12 h),
// the loss summed in double from the fp32 output.
//
// Tolerances: pass when |fd - g| <= atol + rtol |g| with rtol = 2e-2 and
// atol = 2e-3 * max|g| over the tensor (2e-5 floor, the noise level below). The stencil's
// truncation error is O(h^4) (h = 1e-2: ~1e-8 relative), so what remains is fp32 noise: the
// forward's rounding changes chaotically with w, about 1e-7 of L ~ 1 per evaluation, which the
// difference divides by h (1.5 * 1e-7 / 1e-2 ~ 2e-5 absolute). Gradient elements range over orders
// of magnitude inside one tensor, so small ones are judged against the tensor's scale (atol). A
// wrong backward (a missing term, a transposed index, a skipped accumulation) is off by O(1)
// relative and fails by orders of magnitude.
//
// The same check runs on the model with the strategy-added modules (adapter
// pre_out / post_out, gelu / silu / identity, gated or not, and LoRA), every
// added weight random and non-zero (up and lora_B too, so that no gradient is
// trivially zero): the added parameters (three elements each), the attention
// blocks' (whose backward the added modules change; the largest element each)
// and the input (whose gradient passes through every added module). Not ReLU: perturbing any weight
// by h moves some bottleneck values across ReLU's kink, where a difference quotient does not
// measure the derivative (~5% off everywhere); ReLU is checked against PyTorch in test_unet_golden
// and as an op in test_activation_ops.
#include "model_test_util.h"
#include "test_util.h"

static const char *CONFIG = "model:\n"
                            "  arch:\n"
                            "    sample_size: 8\n"
                            "    in_channels: 2\n"
                            "    out_channels: 3\n"
                            "    block_out_channels: [4, 8]\n"
                            "    layers_per_block: 1\n"
                            "    down_block_types: [AttnDownBlock2D, AttnDownBlock2D]\n"
                            "    up_block_types: [AttnUpBlock2D, UpBlock2D]\n"
                            "    norm_num_groups: 2\n"
                            "    norm_eps: 1.0e-6\n"
                            "    attention_head_dim: 2\n"
                            "    downsample_padding: 0\n"
                            "    flip_sin_to_cos: true\n"
                            "    freq_shift: 1\n"
                            "    center_input_sample: true\n"
                            "    mid_block_scale_factor: 1.5\n";

enum { BATCH = 2, RANDOM_PER_TENSOR = 2, INPUT_SAMPLES = 8 };
static const float H = 1e-2f, RTOL = 2e-2f, ATOL_REL = 2e-3f;

typedef struct {
  a3_unet *m;
  float *x, *t, *y, *out;
  size_t nin, nout;
} fd_ctx;

static double loss_of(fd_ctx *c) {
  if (a3_unet_forward(c->m, c->x, c->t, c->out) != A3_OK) return NAN;
  double sum = 0.0;
  for (size_t i = 0; i < c->nout; i++) {
    const double e = (double)c->out[i] - c->y[i];
    sum += e * e;
  }
  return sum / (double)c->nout;
}

// The five-point derivative of the loss in *w (restored afterwards).
static double fd_derivative(fd_ctx *c, float *w) {
  const float w0 = *w;
  double l[4];
  const float steps[4] = {2 * H, H, -H, -2 * H};
  for (int k = 0; k < 4; k++) {
    *w = w0 + steps[k];
    l[k] = loss_of(c);
  }
  *w = w0;
  return (-l[0] + 8 * l[1] - 8 * l[2] + l[3]) / (12.0 * (double)H);
}

typedef struct {
  int checked, failed;
  double worst_ratio; // max over elements of |fd - g| / (atol + rtol |g|)
  char worst[160];
} fd_stats;

static void judge(fd_stats *st, const char *what, size_t j, double fd, double g, double scale) {
  const double atol = fmax(ATOL_REL * scale, 2e-5), err = fabs(fd - g);
  const double ratio = err / (atol + RTOL * fabs(g));
  st->checked++;
  if (ratio > st->worst_ratio) {
    st->worst_ratio = ratio;
    snprintf(st->worst, sizeof st->worst, "%s[%zu]: fd %.6e, backward %.6e", what, j, fd, g);
  }
  if (ratio <= 1.0) return;
  st->failed++;
  fprintf(stderr, "FAIL %s[%zu]: fd %.6e backward %.6e |diff| %.2e > %.2e\n", what, j, fd, g, err,
          atol + RTOL * fabs(g));
}

// Elements to check in a tensor of n with gradient g: its largest |g| and random ones.
static int pick(const float *g, size_t n, uint64_t seed, size_t *idx) {
  size_t best = 0;
  for (size_t j = 1; j < n; j++)
    if (fabsf(g[j]) > fabsf(g[best])) best = j;
  int k = 0;
  idx[k++] = best;
  for (int r = 0; r < RANDOM_PER_TENSOR; r++) idx[k++] = a3_rng_below(seed, 5, (uint64_t)r, n);
  return k;
}

static double max_abs(const float *g, size_t n) {
  double s = 0.0;
  for (size_t j = 0; j < n; j++) s = fmax(s, fabs(g[j]));
  return s;
}

// subset: only the added parameters and (their largest element) the
// attention blocks'.
static void check_params(fd_ctx *c, const float *grads, fd_stats *st, bool subset) {
  float *params = a3_unet_params(c->m);
  for (int i = 0; i < a3_unet_param_count(c->m); i++) {
    const a3_param *p = a3_unet_param_at(c->m, i);
    if (subset && !p->added && !strstr(p->name, ".attentions.")) continue;
    const float *g = grads + p->offset;
    size_t idx[1 + RANDOM_PER_TENSOR];
    int k = pick(g, p->numel, (uint64_t)i, idx);
    if (subset && !p->added) k = 1; // its largest element only
    const double scale = max_abs(g, p->numel);
    CHECK_MSG(scale > 0.0, "%s: gradient is all zero", p->name);
    for (int e = 0; e < k; e++)
      judge(st, p->name, idx[e], fd_derivative(c, params + p->offset + idx[e]), g[idx[e]], scale);
  }
}

static void check_input(fd_ctx *c, const float *dx, fd_stats *st) {
  const double scale = max_abs(dx, c->nin);
  for (int e = 0; e < INPUT_SAMPLES; e++) {
    const size_t j = a3_rng_below(77, 6, (uint64_t)e, c->nin);
    judge(st, "x", j, fd_derivative(c, c->x + j), dx[j], scale);
  }
}

static void run_fd(const char *label, const a3_unet_extras *extras) {
  fd_ctx c = {.m = mt_build_yaml_ex(label, CONFIG, extras)};
  CHECK(c.m != NULL);
  if (!c.m) return;
  mt_randomize(c.m, 3);
  CHECK(a3_unet_plan(c.m, BATCH) == A3_OK);
  c.nin = mt_numel_in(c.m);
  c.nout = mt_numel_out(c.m);
  c.x = calloc(c.nin, sizeof(float));
  c.t = calloc(BATCH, sizeof(float));
  c.y = calloc(c.nout, sizeof(float));
  c.out = calloc(c.nout, sizeof(float));
  float *dout = calloc(c.nout, sizeof(float)), *dx = calloc(c.nin, sizeof(float));
  float *grads = calloc(a3_unet_num_floats(c.m), sizeof(float));
  mt_fill(c.x, c.nin, 11, 0.5f, 0.5f); // images in [0, 1] (the input is centred)
  mt_fill(c.y, c.nout, 12, 1.0f, 0.0f);
  c.t[0] = 41.0f;
  c.t[1] = 903.5f;
  float loss;
  CHECK(mt_step(c.m, c.x, c.t, c.y, c.out, dout, dx, &loss) == A3_OK);
  memcpy(grads, a3_unet_grads(c.m), a3_unet_num_floats(c.m) * sizeof(float));
  fd_stats st = {0};
  check_params(&c, grads, &st, extras != NULL);
  check_input(&c, dx, &st);
  printf("%s: finite differences: %d elements of %s%d tensors (%d added) + input, loss %.6f, "
         "%d failed\n",
         label, st.checked, extras ? "the added and attention ones of " : "",
         a3_unet_param_count(c.m), a3_unet_get_stats(c.m).added_tensors, loss, st.failed);
  printf("  worst (|fd - g| / (atol + rtol |g|) = %.3f): %s\n", st.worst_ratio, st.worst);
  CHECK_MSG(st.failed == 0, "%s: %d elements fail", label, st.failed);
  free(c.x), free(c.t), free(c.y), free(c.out), free(dout), free(dx), free(grads);
  a3_unet_free(c.m);
}

int main(void) {
  // Tiny GEMMs: extra BLAS threads only spin against a parallel ctest.
  a3_backend_cpu_set_threads(1);
  run_fd("base", NULL);
  const struct {
    const char *label;
    a3_unet_extras e;
  } cases[] = {
      {"adapter pre_out gelu gated + lora",
       {.adapter_rank = 3,
        .adapter_activation = A3_ACT_GELU,
        .adapter_gate = true,
        .lora_rank = 2,
        .lora_alpha = 3.0}},
      {"adapter post_out silu gated",
       {.adapter_rank = 2,
        .adapter_activation = A3_ACT_SILU,
        .adapter_placement = A3_PLACEMENT_POST_OUT,
        .adapter_gate = true}},
      {"adapter post_out identity + lora",
       {.adapter_rank = 2,
        .adapter_activation = A3_ACT_IDENTITY,
        .adapter_placement = A3_PLACEMENT_POST_OUT,
        .lora_rank = 1,
        .lora_alpha = 0.5}},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_fd(cases[i].label, &cases[i].e);
  return TEST_DONE("test_unet_fd");
}
