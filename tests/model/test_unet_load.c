// Loading pretrained weights (src/model/unet_load.c): the committed diffusers
// folders tests/model/diffusers_tiny (current attention names) and
// diffusers_tiny_legacy (query/key/value/proj_attn), written by
// tools/unet_reference.py --export DIR --config micro [--old-names] with the
// reference's output in reference.safetensors.
//
// - Both load through a3_unet_load_diffusers; the forward on the reference's
//   inputs matches its output with the golden test's tolerance (rtol 1e-4,
//   atol 1e-5 max|ref|); both name styles (and a file mixing them) give
//   bitwise the same parameters.
// - Errors, from files rewritten with a3_safetensors_write_f32 (or patched):
//   a wrong shape of the same size, missing base tensors (one; seven, of
//   which five are listed), a misspelt name, a parameter under both names, an
//   integer dtype; each leaves the parameters untouched. A config.json of
//   another architecture fails in a3_unet_load_diffusers with no model.
// - Unused tensors (an EMA copy, a class embedding) are a warning in the report.
// - Extras (adapter + LoRA) with a base-only file: OK, the added parameters
//   keep their init, and step 0 is the base model (same output).
#include "a3fta/diffusers.h"
#include "a3fta/safetensors.h"
#include "io/io_test_util.h"
#include "model_test_util.h"
#include "safetensors/st_test_util.h"
#include "test_util.h"

static const double OUT_RTOL = 1e-4, OUT_ATOL_REL = 1e-5;

static char fixture_new[4096], fixture_old[4096];
static char *tmp;

// ---------------------------------------------------------------- helpers
// The model of a diffusers folder (NULL on failure, printed).
static a3_unet *load_dir(const char *dir, const a3_unet_extras *extras) {
  a3_unet *m = NULL;
  a3_config cfg;
  a3_status s = a3_unet_load_diffusers(dir, extras, &m, &cfg);
  CHECK_MSG(s == A3_OK, "%s: %s", dir, a3_error_message());
  if (s != A3_OK) return NULL;
  a3_config_free(&cfg);
  CHECK(m != NULL);
  return m;
}

typedef struct {
  float *x, *t, *out;
  size_t nx, nout;
  int batch;
} reference;

static int read_reference(const char *dir, reference *r) {
  a3_safetensors *st = NULL;
  memset(r, 0, sizeof *r);
  CHECK(a3_safetensors_open(io_path(dir, "reference.safetensors"), &st) == A3_OK);
  if (!st) return -1;
  const a3_st_tensor *x = a3_safetensors_find(st, "x"), *t = a3_safetensors_find(st, "timesteps");
  const a3_st_tensor *o = a3_safetensors_find(st, "out");
  int ok = x && t && o && x->ndim == 4 && t->ndim == 1;
  if (ok) {
    r->batch = (int)t->shape[0];
    r->nx = (size_t)x->numel, r->nout = (size_t)o->numel;
    r->x = malloc(r->nx * sizeof(float));
    r->t = malloc((size_t)r->batch * sizeof(float));
    r->out = malloc(r->nout * sizeof(float));
    ok = r->x && r->t && r->out && a3_safetensors_read_f32(st, x, r->x, x->numel) == A3_OK &&
         a3_safetensors_read_f32(st, t, r->t, t->numel) == A3_OK &&
         a3_safetensors_read_f32(st, o, r->out, o->numel) == A3_OK;
  }
  a3_safetensors_close(st);
  CHECK_MSG(ok, "%s/reference.safetensors: x, timesteps or out missing", dir);
  return ok ? 0 : -1;
}

static void free_reference(reference *r) { free(r->x), free(r->t), free(r->out); }

// out = m(x, t) of the reference's batch (malloc'd), NULL on failure.
static float *forward(a3_unet *m, const reference *r) {
  CHECK(a3_unet_plan(m, r->batch) == A3_OK);
  CHECK(mt_numel_in(m) == r->nx && mt_numel_out(m) == r->nout);
  if (mt_numel_in(m) != r->nx || mt_numel_out(m) != r->nout) return NULL;
  float *out = calloc(r->nout, sizeof(float));
  if (out && a3_unet_forward(m, r->x, r->t, out) != A3_OK) {
    CHECK_MSG(0, "forward: %s", a3_error_message());
    free(out);
    return NULL;
  }
  return out;
}

static int params_equal(a3_unet *a, a3_unet *b) {
  return a3_unet_num_floats(a) == a3_unet_num_floats(b) &&
         !memcmp(a3_unet_params(a), a3_unet_params(b), a3_unet_num_floats(a) * sizeof(float));
}

// The model's parameters as tensors to write, names and shapes owned here.
typedef struct {
  int n;
  a3_st_f32_tensor *t;
  char (*names)[128];
  int64_t (*shapes)[A3_PARAM_MAX_DIMS];
  bool *dropped; // left out when written
} tensor_set;

static tensor_set tensors_of(a3_unet *m) {
  tensor_set s = {.n = a3_unet_param_count(m)};
  s.t = calloc((size_t)s.n + 8, sizeof *s.t);
  s.names = calloc((size_t)s.n + 8, sizeof *s.names);
  s.shapes = calloc((size_t)s.n + 8, sizeof *s.shapes);
  s.dropped = calloc((size_t)s.n + 8, sizeof *s.dropped);
  for (int i = 0; i < s.n; i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    snprintf(s.names[i], sizeof s.names[i], "%s", p->name);
    for (int d = 0; d < p->ndim; d++) s.shapes[i][d] = p->shape[d];
    s.t[i] = (a3_st_f32_tensor){s.names[i], p->ndim, s.shapes[i], a3_unet_params(m) + p->offset};
  }
  return s;
}

static void free_set(tensor_set *s) {
  free(s->t), free(s->names), free(s->shapes), free(s->dropped);
}

static int find_in_set(const tensor_set *s, const char *name) {
  for (int i = 0; i < s->n; i++)
    if (!strcmp(s->names[i], name)) return i;
  return -1;
}

static void drop(tensor_set *s, const char *name) {
  const int i = find_in_set(s, name);
  CHECK_MSG(i >= 0, "%s not in the set", name);
  if (i >= 0) s->dropped[i] = true;
}

static void rename_tensor(tensor_set *s, const char *from, const char *to) {
  const int i = find_in_set(s, from);
  CHECK_MSG(i >= 0, "%s not in the set", from);
  if (i >= 0) snprintf(s->names[i], sizeof s->names[i], "%s", to);
}

// Appends a tensor (the same names/shapes storage, after the model's).
static void add_tensor(tensor_set *s, const char *name, int ndim, const int64_t *shape,
                       const float *data) {
  const int i = s->n++;
  snprintf(s->names[i], sizeof s->names[i], "%s", name);
  for (int d = 0; d < ndim; d++) s->shapes[i][d] = shape[d];
  s->t[i] = (a3_st_f32_tensor){s->names[i], ndim, s->shapes[i], data};
}

static const char *write_set(const tensor_set *s, const char *file) {
  const char *path = io_path(tmp, file);
  a3_st_f32_tensor *kept = calloc((size_t)s->n + 1, sizeof *kept);
  int n = 0;
  for (int i = 0; i < s->n; i++)
    if (!s->dropped[i]) kept[n++] = s->t[i];
  a3_status st = a3_safetensors_write_f32(path, kept, n, NULL, 0);
  CHECK_MSG(st == A3_OK, "%s: %s", path, a3_error_message());
  free(kept);
  return path;
}

// A copy of m (same arch, same extras) with every parameter = `value`.
static a3_unet *sentinel_model(a3_unet *m, float value) {
  a3_unet *c = NULL;
  CHECK(a3_unet_build_ex(a3_unet_arch(m), a3_unet_get_extras(m), &c) == A3_OK);
  if (!c) return NULL;
  for (size_t i = 0; i < a3_unet_num_floats(c); i++) a3_unet_params(c)[i] = value;
  return c;
}

static int all_equal(a3_unet *m, float value) {
  for (size_t i = 0; i < a3_unet_num_floats(m); i++)
    if (a3_unet_params(m)[i] != value) return 0;
  return 1;
}

// Loading `path` into a fresh copy of base fails with A3_ERR_INPUT, a message
// holding every needle, and the parameters untouched.
static void expect_error(a3_unet *base, const char *path, const char *const *needles, int n) {
  a3_unet *c = sentinel_model(base, 7.0f);
  if (!c) return;
  a3_unet_load_report rep;
  const a3_status s = a3_unet_load_safetensors(c, path, &rep);
  const char *msg = a3_error_message();
  int ok = s == A3_ERR_INPUT && st_has(msg, path);
  for (int i = 0; i < n; i++) ok = ok && st_has(msg, needles[i]);
  CHECK_MSG(ok, "status %s, message: %s", a3_status_name(s), msg);
  printf("  expected error: %s\n", msg);
  CHECK_MSG(all_equal(c, 7.0f), "a failed load changed the parameters");
  a3_error_clear();
  a3_unet_free(c);
}

// ---------------------------------------------------------------- tests
static void test_reference_output(a3_unet *m, const char *dir, const reference *r) {
  float *out = forward(m, r);
  if (!out) return;
  double max_ref = 0.0, max_err = 0.0, ratio = 0.0;
  for (size_t i = 0; i < r->nout; i++) max_ref = fmax(max_ref, fabs(r->out[i]));
  for (size_t i = 0; i < r->nout; i++) {
    const double err = fabs((double)out[i] - r->out[i]);
    max_err = fmax(max_err, err);
    ratio = fmax(ratio, err / (OUT_ATOL_REL * max_ref + OUT_RTOL * fabs(r->out[i])));
  }
  printf("%s: out %zu values, max|ref| %.4e, max|a-b| %.4e, ratio %.4f (<= 1 passes)\n", dir,
         r->nout, max_ref, max_err, ratio);
  CHECK_MSG(ratio <= 1.0, "%s: output differs from the PyTorch reference (ratio %.3f)", dir, ratio);
  free(out);
}

static int count_legacy(a3_unet *m) {
  int n = 0;
  char old[256];
  for (int i = 0; i < a3_unet_param_count(m); i++)
    n += a3_diffusers_legacy_name(a3_unet_param_at(m, i)->name, old, sizeof old) == 1;
  return n;
}

static void test_reports(a3_unet *base) {
  const int np = a3_unet_param_count(base), n_legacy = count_legacy(base);
  char path[4200];
  a3_unet *c = sentinel_model(base, 0.0f);
  a3_unet_load_report rep;
  snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", fixture_new);
  CHECK(a3_unet_load_safetensors(c, path, &rep) == A3_OK);
  CHECK(rep.loaded == np && rep.legacy_names == 0 && rep.unused == 0 && rep.missing_added == 0);
  CHECK(params_equal(c, base));
  snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", fixture_old);
  CHECK(a3_unet_load_safetensors(c, path, &rep) == A3_OK);
  CHECK_MSG(rep.loaded == np && rep.legacy_names == n_legacy && n_legacy == 32 && rep.unused == 0 &&
                rep.missing_added == 0,
            "legacy: loaded %d of %d, %d legacy of %d", rep.loaded, np, rep.legacy_names, n_legacy);
  CHECK(params_equal(c, base));
  CHECK(a3_unet_load_safetensors(c, path, NULL) == A3_OK); // report optional
  printf("reports: %d parameters, %d under legacy names in %s\n", np, rep.legacy_names,
         fixture_old);

  // A file mixing both styles: every other attention linear under its old name.
  tensor_set s = tensors_of(base);
  int renamed = 0;
  char old[sizeof s.names[0]];
  for (int i = 0; i < s.n; i++)
    if (a3_diffusers_legacy_name(s.names[i], old, sizeof old) == 1 && (i % 2 == 0)) {
      snprintf(s.names[i], sizeof s.names[i], "%s", old);
      renamed++;
    }
  a3_unet *d = sentinel_model(base, 0.0f);
  CHECK(a3_unet_load_safetensors(d, write_set(&s, "mixed.safetensors"), &rep) == A3_OK);
  CHECK(rep.loaded == np && rep.legacy_names == renamed && renamed > 0 && renamed < n_legacy);
  CHECK(params_equal(d, base));
  free_set(&s);

  // Unused tensors: a warning, listed in name order.
  s = tensors_of(base);
  static const float ema[1] = {0.9999f};
  const int64_t one = 1, emb_shape[2] = {10, 16};
  float *emb = calloc(160, sizeof(float));
  add_tensor(&s, "class_embedding.weight", 2, emb_shape, emb);
  add_tensor(&s, "ema.decay", 1, &one, ema);
  CHECK(a3_unet_load_safetensors(d, write_set(&s, "unused.safetensors"), &rep) == A3_OK);
  CHECK(rep.loaded == np && rep.unused == 2 &&
        !strcmp(rep.unused_names[0], "class_embedding.weight") &&
        !strcmp(rep.unused_names[1], "ema.decay"));
  CHECK(params_equal(d, base));
  free(emb);
  free_set(&s);
  a3_unet_free(c);
  a3_unet_free(d);
}

static void test_errors(a3_unet *base) {
  // A wrong shape of the same size: (8, 8) as (4, 16).
  tensor_set s = tensors_of(base);
  const char *q = "mid_block.attentions.0.to_q.weight";
  int i = find_in_set(&s, q);
  CHECK(i >= 0 && s.t[i].ndim == 2 && s.shapes[i][0] == 8 && s.shapes[i][1] == 8);
  s.shapes[i][0] = 4, s.shapes[i][1] = 16;
  expect_error(base, write_set(&s, "shape.safetensors"),
               (const char *[]){q, "(4, 16)", "(8, 8)", "1 tensor of another shape"}, 4);
  // The same under the legacy name: the message names both.
  rename_tensor(&s, q, "mid_block.attentions.0.query.weight");
  expect_error(base, write_set(&s, "shape_legacy.safetensors"),
               (const char *[]){"mid_block.attentions.0.query.weight (for " /**/, q, "(4, 16)"}, 3);
  // A conv weight with a dimension fewer.
  free_set(&s);
  s = tensors_of(base);
  i = find_in_set(&s, "conv_in.weight");
  s.t[i].ndim = 3, s.shapes[i][2] *= s.shapes[i][3];
  expect_error(base, write_set(&s, "ndim.safetensors"),
               (const char *[]){"conv_in.weight has shape (4, 3, 9)", "expects (4, 3, 3, 3)"}, 2);
  free_set(&s);

  // A missing base tensor; then seven (five listed, and the count).
  s = tensors_of(base);
  drop(&s, "conv_out.bias");
  expect_error(base, write_set(&s, "missing1.safetensors"),
               (const char *[]){"1 parameter of the model is not in the file: conv_out.bias (0 of "
                                "its 143 tensors unused)"},
               1);
  static const char *const more[] = {"conv_in.weight",
                                     "conv_in.bias",
                                     "time_embedding.linear_1.weight",
                                     "time_embedding.linear_1.bias",
                                     "up_blocks.0.attentions.1.to_out.0.bias",
                                     "conv_out.weight"};
  for (int k = 0; k < 6; k++) drop(&s, more[k]);
  expect_error(base, write_set(&s, "missing7.safetensors"),
               (const char *[]){"7 parameters of the model are not in the file: conv_in.weight, "
                                "conv_in.bias, time_embedding.linear_1.weight, "
                                "time_embedding.linear_1.bias, ",
                                ", ..."},
               2);
  free_set(&s);

  // A mixed-up name: missing under its name, and the stray one reported.
  s = tensors_of(base);
  rename_tensor(&s, "down_blocks.1.attentions.0.to_k.bias", "down_blocks.1.attention.0.to_k.bias");
  expect_error(base, write_set(&s, "misspelt.safetensors"),
               (const char *[]){"not in the file: down_blocks.1.attentions.0.to_k.bias",
                                "1 of its 144 tensors unused: down_blocks.1.attention.0.to_k.bias"},
               2);
  free_set(&s);

  // Both the current and the legacy name: ambiguous.
  s = tensors_of(base);
  i = find_in_set(&s, "up_blocks.0.attentions.1.to_v.weight");
  add_tensor(&s, "up_blocks.0.attentions.1.value.weight", s.t[i].ndim, s.shapes[i], s.t[i].data);
  expect_error(base, write_set(&s, "both.safetensors"),
               (const char *[]){"up_blocks.0.attentions.1.to_v.weight and "
                                "up_blocks.0.attentions.1.value.weight",
                                "ambiguous"},
               2);
  free_set(&s);

  // An integer dtype (patched in the header: I32 has F32's size).
  s = tensors_of(base);
  const char *path = write_set(&s, "dtype.safetensors");
  char *bytes = NULL;
  size_t len = 0;
  CHECK(a3_read_file(path, 1u << 24, &bytes, &len) == A3_OK);
  char *at = bytes ? strstr(bytes + 8, "\"conv_norm_out.weight\"") : NULL;
  at = at ? strstr(at, "F32") : NULL;
  CHECK(at != NULL);
  if (at) {
    at[0] = 'I';
    CHECK(io_write_file(path, bytes, len) == 0);
    expect_error(base, path, (const char *[]){"conv_norm_out.weight is I32", "F16, BF16"}, 2);
  }
  free(bytes);
  free_set(&s);
}

static void test_diffusers_errors(void) {
  a3_unet *m = (a3_unet *)&m; // must become NULL
  a3_config cfg;
  a3_status s = a3_unet_load_diffusers(io_path(tmp, "absent"), NULL, &m, &cfg);
  CHECK_STATUS(s, A3_ERR_INPUT, "absent");
  CHECK(m == NULL);

  // tiny's config.json (block_out_channels 8, 16) over micro's weights.
  char *dir = io_make_temp_dir("a3fta_load_arch");
  char *text = NULL;
  size_t len = 0;
  char src[4200];
  snprintf(src, sizeof src, "%s/config.json", fixture_new);
  CHECK(a3_read_file(src, 1u << 20, &text, &len) == A3_OK);
  char *b = text ? strstr(text, "\"block_out_channels\"") : NULL;
  char *four = b ? strstr(b, "4,") : NULL, *eight = four ? strstr(four + 2, "8") : NULL;
  CHECK(four && eight);
  if (four && eight) {
    char *patched = malloc(len + 8);
    const size_t a = (size_t)(four - text), e = (size_t)(eight - text);
    snprintf(patched, len + 8, "%.*s8,%.*s16%s", (int)a, text, (int)(e - a - 2), four + 2,
             eight + 1);
    CHECK(io_write_file(io_path(dir, "config.json"), patched, strlen(patched)) == 0);
    free(patched);
    snprintf(src, sizeof src, "%s/diffusion_pytorch_model.safetensors", fixture_new);
    char *w = NULL;
    size_t wlen = 0;
    CHECK(a3_read_file(src, 1u << 24, &w, &wlen) == A3_OK);
    CHECK(w && io_write_file(io_path(dir, "diffusion_pytorch_model.safetensors"), w, wlen) == 0);
    free(w);
    m = (a3_unet *)&m;
    s = a3_unet_load_diffusers(dir, NULL, &m, NULL);
    CHECK_STATUS(s, A3_ERR_INPUT,
                 "conv_in.weight has shape (4, 3, 3, 3), the model expects (8, 3, 3, 3)");
    CHECK(m == NULL);
  }
  free(text);
  io_remove_tree(dir);
  free(dir);
}

static void test_extras(a3_unet *base, const reference *r) {
  const a3_unet_extras e = {.adapter_rank = 4,
                            .adapter_activation = A3_ACT_GELU,
                            .adapter_placement = A3_PLACEMENT_PRE_OUT,
                            .adapter_gate = true,
                            .lora_rank = 2,
                            .lora_alpha = 3.0};
  // Build, initialise the extras, load the base-only file: the added ones keep their init.
  a3_unet *m = NULL;
  CHECK(a3_unet_build_ex(a3_unet_arch(base), &e, &m) == A3_OK);
  if (!m) return;
  a3_unet_init_random(m, 11);
  a3_unet *init = sentinel_model(m, 0.0f);
  memcpy(a3_unet_params(init), a3_unet_params(m), a3_unet_num_floats(m) * sizeof(float));
  char path[4200];
  snprintf(path, sizeof path, "%s/diffusion_pytorch_model.safetensors", fixture_old);
  a3_unet_load_report rep;
  CHECK(a3_unet_load_safetensors(m, path, &rep) == A3_OK);
  const a3_unet_stats st = a3_unet_get_stats(m);
  CHECK_MSG(rep.loaded == a3_unet_param_count(base) && rep.missing_added == st.added_tensors &&
                st.added_tensors > 0 && rep.unused == 0,
            "loaded %d, missing_added %d of %d added", rep.loaded, rep.missing_added,
            st.added_tensors);
  int added_kept = 1, base_loaded = 1, nonzero_down = 0;
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    const float *v = a3_unet_params(m) + p->offset;
    if (p->added) {
      added_kept &= !memcmp(v, a3_unet_params(init) + p->offset, p->numel * sizeof(float));
      nonzero_down |= strstr(p->name, "adapter.down.weight") && v[0] != 0.0f;
    } else {
      const a3_param *q = a3_unet_param_find(base, p->name);
      base_loaded &= q && !memcmp(v, a3_unet_params(base) + q->offset, p->numel * sizeof(float));
    }
  }
  CHECK(added_kept && base_loaded && nonzero_down);

  // Step 0 is the base model: the same output (==, as -0 may become +0).
  float *out_base = forward(base, r), *out = forward(m, r);
  int same = out_base && out;
  for (size_t i = 0; same && i < r->nout; i++) same = out[i] == out_base[i];
  CHECK_MSG(same, "step 0 with extras differs from the base model");
  free(out);

  // a3_unet_load_diffusers with the extras: the same base, the extras initialised (seed 0).
  a3_unet *d = load_dir(fixture_new, &e);
  if (d) {
    int base_same = 1, down_set = 0;
    for (int i = 0; i < a3_unet_param_count(d); i++) {
      const a3_param *p = a3_unet_param_at(d, i);
      const float *v = a3_unet_params(d) + p->offset;
      if (p->added) {
        down_set |= strstr(p->name, "adapter.down.weight") && v[0] != 0.0f;
        continue;
      }
      base_same &= !memcmp(v, a3_unet_params(m) + p->offset, p->numel * sizeof(float));
    }
    CHECK(base_same && down_set);
    out = forward(d, r);
    same = out && out_base;
    for (size_t i = 0; same && i < r->nout; i++) same = out[i] == out_base[i];
    CHECK_MSG(same, "load_diffusers with extras: step 0 differs from the base model");
    free(out);
  }

  // A file that holds the added parameters too (trained values): all loaded.
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    if (p->added) mt_fill(a3_unet_params(m) + p->offset, p->numel, 500 + (uint64_t)i, 0.3f, 0.1f);
  }
  tensor_set s = tensors_of(m);
  a3_unet *c = sentinel_model(m, 0.0f);
  CHECK(a3_unet_load_safetensors(c, write_set(&s, "with_extras.safetensors"), &rep) == A3_OK);
  CHECK(rep.loaded == a3_unet_param_count(m) && rep.missing_added == 0 && rep.unused == 0);
  CHECK(params_equal(c, m));
  // ... and loaded into the base model, they are unused (a warning).
  a3_unet *b = sentinel_model(base, 0.0f);
  CHECK(a3_unet_load_safetensors(b, io_path(tmp, "with_extras.safetensors"), &rep) == A3_OK);
  CHECK(rep.unused == st.added_tensors && params_equal(b, base));
  printf("extras: %d added tensors kept their init; step 0 == base; %d loaded when present\n",
         st.added_tensors, st.added_tensors);
  free_set(&s);
  free(out_base);
  a3_unet_free(b);
  a3_unet_free(c);
  a3_unet_free(d);
  a3_unet_free(init);
  a3_unet_free(m);
}

int main(int argc, char **argv) {
  const char *src = getenv("A3FTA_SOURCE_DIR");
  char model_dir[4000];
  snprintf(model_dir, sizeof model_dir, "%s", argc > 1 ? argv[1] : "");
  if (argc <= 1) snprintf(model_dir, sizeof model_dir, "%s/tests/model", src ? src : ".");
  snprintf(fixture_new, sizeof fixture_new, "%s/diffusers_tiny", model_dir);
  snprintf(fixture_old, sizeof fixture_old, "%s/diffusers_tiny_legacy", model_dir);
  a3_backend_cpu_set_threads(1);
  a3_log_set_level(A3_LOG_WARN);
  tmp = io_make_temp_dir("a3fta_unet_load");

  reference r;
  a3_unet *m = load_dir(fixture_new, NULL), *old = load_dir(fixture_old, NULL);
  if (m && old && read_reference(fixture_new, &r) == 0) {
    test_reference_output(m, fixture_new, &r);
    test_reference_output(old, fixture_old, &r);
    CHECK_MSG(params_equal(m, old), "the two name styles load different parameters");
    test_reports(m);
    test_errors(m);
    test_diffusers_errors();
    test_extras(m, &r);
    free_reference(&r);
  }
  a3_unet_free(m);
  a3_unet_free(old);
  io_remove_tree(tmp);
  free(tmp);
  return TEST_DONE("test_unet_load");
}
