// The U-Net against PyTorch: tests/model/golden_unet.h5, written by
// tools/unet_reference.py (an independent PyTorch implementation of diffusers'
// UNet2DModel, run in float64), holds for each config (/tiny, /multi) the
// architecture, random weights by diffusers name, inputs, the output, the MSE
// loss and every gradient. This test builds the model from the stored config,
// loads the weights by name (any missing, extra, reordered or reshaped name
// fails: that checks the parameter naming), runs forward + MSE + backward in
// fp32 and compares every tensor with |a - b| <= atol + rtol |b|:
//
// - output: rtol 1e-4, atol 1e-5 * max|b|; loss: rtol 1e-5. A forward of ~40
//   fp32 layers accumulates rounding of a few 1e-7 relative per element
//   (fp32 epsilon 6e-8, sums of a few hundred terms); 1e-4 leaves a margin of
//   ~100 while any semantic slip (a wrong pad, head split or eps) is O(1e-2)
//   or more.
// - gradients (dx and every parameter): rtol 1e-3, atol 1e-4 * max|b| over
//   that tensor, plus 1e-6 * the largest gradient of the case. The backward
//   goes through twice as many ops and subtracts nearly equal terms (GroupNorm
//   and softmax backward), so elements much smaller than their tensor's
//   largest lose relative accuracy: they are judged on the tensor's scale.
//   The global floor covers tensors whose exact gradient is zero: the bias of
//   to_k cannot change softmax(q k^T) (it adds the same q.b to a whole row),
//   so PyTorch's float64 gives ~1e-17 and fp32 ~1e-9.
//
// The strategy-added modules (/tiny_pre: adapter pre_out, gelu, gated;
// /tiny_post: adapter post_out, silu; /tiny_lora: LoRA r 2, alpha 3;
// /tiny_relu: adapter post_out, relu, gated): the
// tiny model with its weights and inputs plus random non-zero added weights.
// The table must list the base names in /tiny's order with each added
// parameter at the file's index; output, loss, dx and the added parameters'
// gradients are compared with the same tolerances.
//
// --cuda fp32 | bf16 (the CUDA backend, a GPU or the emulator; exit 77
// without one): /tiny and /multi on that backend instead. fp32 keeps the
// tolerances above. bf16 (activations stored in bf16, products on bf16
// operands) cannot meet them: it is held to PyTorch's own bf16 instead. The
// file holds, per case, how far torch.autocast(bfloat16) on the CPU lands
// from the float64 values on the same model, weights and inputs
// (/CASE/torch_bf16: relative L2 errors of out, dx and each gradient); a3fta's
// relative L2 errors of out and dx, and the median over the gradient tensors,
// must be within BF16_VS_TORCH times torch's: no worse than PyTorch's bf16.
// Measured on the emulator: 0.40 to 0.56 of torch's (torch 1.13's CPU
// autocast also runs the softmax in bf16, where a3fta keeps it fp32; a3fta
// stores GroupNorm outputs in bf16, which autocast keeps fp32).
#include "model_test_util.h"
#include "test_util.h"

#include <hdf5.h>
#include <math.h>

enum { MAX_NAME = 256 };
static const double OUT_RTOL = 1e-4, OUT_ATOL_REL = 1e-5, LOSS_RTOL = 1e-5;
static const double GRAD_RTOL = 1e-3, GRAD_ATOL_REL = 1e-4, GRAD_ATOL_GLOBAL = 1e-6;
static const double BF16_VS_TORCH = 1.0;
static const a3_backend *device; // --cuda: the candidate backend, else NULL (the CPU)

// ---------------------------------------------------------------- HDF5 reading
// A fixed-length string attribute as an owned NUL-terminated string, or NULL.
static char *read_string_attr(hid_t loc, const char *name) {
  hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
  if (attr < 0) return NULL;
  hid_t type = H5Aget_type(attr);
  char *buf = NULL;
  if (H5Tget_class(type) == H5T_STRING && !H5Tis_variable_str(type)) {
    size_t size = H5Tget_size(type);
    buf = calloc(size + 1, 1);
    if (buf && H5Aread(attr, type, buf) < 0) {
      free(buf);
      buf = NULL;
    }
  }
  H5Tclose(type);
  H5Aclose(attr);
  return buf;
}

static int read_scalar_attr(hid_t loc, const char *name, hid_t memtype, void *out) {
  hid_t attr = H5Aopen(loc, name, H5P_DEFAULT);
  if (attr < 0) return -1;
  herr_t e = H5Aread(attr, memtype, out);
  H5Aclose(attr);
  return e < 0 ? -1 : 0;
}

// Reads dataset `path` into an owned float buffer; *n gets its element count
// and dims/ndim its shape (dims may be NULL).
static float *read_floats(hid_t loc, const char *path, size_t *n, hsize_t *dims, int *ndim) {
  hid_t d = H5Dopen2(loc, path, H5P_DEFAULT);
  if (d < 0) return NULL;
  hid_t space = H5Dget_space(d);
  hsize_t shape[8] = {0};
  int nd = H5Sget_simple_extent_ndims(space);
  float *buf = NULL;
  if (nd >= 0 && nd <= 8 && H5Sget_simple_extent_dims(space, shape, NULL) >= 0) {
    *n = 1;
    for (int i = 0; i < nd; i++) *n *= (size_t)shape[i];
    buf = malloc(*n * sizeof(float) + 1);
    if (buf && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
      free(buf);
      buf = NULL;
    }
    if (dims)
      for (int i = 0; i < nd; i++) dims[i] = shape[i];
    if (ndim) *ndim = nd;
  }
  H5Sclose(space);
  H5Dclose(d);
  return buf;
}

// ---------------------------------------------------------------- comparison
typedef struct {
  char name[MAX_NAME];
  size_t n;
  double max_b, max_err, ratio; // ratio: max |a-b| / (atol + rtol |b|); <= 1 passes
  size_t worst_index;
} cmp_row;

static cmp_row compare(const char *name, const float *a, const float *b, size_t n, double rtol,
                       double atol) {
  cmp_row r = {.n = n};
  snprintf(r.name, sizeof r.name, "%s", name);
  for (size_t i = 0; i < n; i++) {
    const double err = fabs((double)a[i] - b[i]), ratio = err / (atol + rtol * fabs(b[i]));
    r.max_b = fmax(r.max_b, fabs(b[i]));
    r.max_err = fmax(r.max_err, err);
    if (ratio > r.ratio || i == 0) {
      r.ratio = ratio;
      r.worst_index = i;
    }
  }
  return r;
}

static double max_abs(const float *b, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s = fmax(s, fabs(b[i]));
  return s;
}

static void print_row(const cmp_row *r) {
  printf("  %-50s %8zu %11.4e %11.4e %8.4f %s\n", r->name, r->n, r->max_b, r->max_err, r->ratio,
         r->ratio <= 1.0 ? "ok" : "FAIL");
}

static int by_ratio_desc(const void *pa, const void *pb) {
  const cmp_row *a = pa, *b = pb;
  return (a->ratio < b->ratio) - (a->ratio > b->ratio);
}

// ---------------------------------------------------------------- one config
typedef struct {
  hid_t g;
  a3_unet *m;
  int batch;
  float *x, *t, *noise, *out_ref, *dx_ref; // from the file
  size_t nx, nout;
} golden_case;

// The model's table must list exactly the file's names, in the file's order
// (diffusers' registration order), with the same shapes; then weights load.
static int load_weights(golden_case *c) {
  char *order = read_string_attr(c->g, "param_order");
  CHECK_MSG(order != NULL, "param_order attribute missing");
  if (!order) return -1;
  int i = 0, bad = 0;
  float *params = a3_unet_params(c->m);
  char path[MAX_NAME + 8];
  for (char *name = strtok(order, "\n"); name; name = strtok(NULL, "\n"), i++) {
    const a3_param *p = i < a3_unet_param_count(c->m) ? a3_unet_param_at(c->m, i) : NULL;
    if (!p || strcmp(p->name, name) != 0) {
      fprintf(stderr, "parameter %d: file has %s, model has %s\n", i, name, p ? p->name : "none");
      bad++;
      continue;
    }
    hsize_t dims[8];
    int nd = 0;
    size_t n = 0;
    snprintf(path, sizeof path, "param/%s", name);
    float *w = read_floats(c->g, path, &n, dims, &nd);
    int same = w && nd == p->ndim && n == p->numel;
    for (int d = 0; same && d < nd; d++) same = dims[d] == (hsize_t)p->shape[d];
    if (!same) {
      fprintf(stderr, "%s: shape differs from the file's (or unreadable)\n", name);
      bad++;
    } else {
      memcpy(params + p->offset, w, n * sizeof(float));
    }
    free(w);
  }
  if (i != a3_unet_param_count(c->m)) {
    fprintf(stderr, "file has %d parameters, model %d\n", i, a3_unet_param_count(c->m));
    bad++;
  }
  free(order);
  CHECK_MSG(bad == 0, "%d naming/shape mismatches", bad);
  return bad ? -1 : 0;
}

static int load_case(golden_case *c, const char *group) {
  char *yaml = read_string_attr(c->g, "config_yaml");
  CHECK_MSG(yaml != NULL, "%s: config_yaml missing", group);
  if (!yaml) return -1;
  printf("%s: config\n%s", group, yaml);
  c->m = mt_build_yaml(group, yaml);
  free(yaml);
  CHECK(c->m != NULL);
  if (!c->m || read_scalar_attr(c->g, "batch", H5T_NATIVE_INT, &c->batch) < 0) return -1;
  CHECK(a3_unet_plan(c->m, c->batch) == A3_OK);
  size_t nt = 0, nn = 0, nd = 0;
  c->x = read_floats(c->g, "x", &c->nx, NULL, NULL);
  c->t = read_floats(c->g, "timesteps", &nt, NULL, NULL);
  c->noise = read_floats(c->g, "noise", &nn, NULL, NULL);
  c->out_ref = read_floats(c->g, "out", &c->nout, NULL, NULL);
  c->dx_ref = read_floats(c->g, "dx", &nd, NULL, NULL);
  int ok = c->x && c->t && c->noise && c->out_ref && c->dx_ref && c->nx == mt_numel_in(c->m) &&
           nt == (size_t)c->batch && nn == c->nout && c->nout == mt_numel_out(c->m) && nd == c->nx;
  CHECK_MSG(ok, "%s: inputs missing or of the wrong size", group);
  return ok ? load_weights(c) : -1;
}

// Every gradient tensor of the case, compared; returns the number failing.
static int compare_grads(golden_case *c, cmp_row *rows, double floor_atol) {
  const float *grads = a3_unet_grads(c->m);
  char path[MAX_NAME + 8];
  int failed = 0;
  for (int i = 0; i < a3_unet_param_count(c->m); i++) {
    const a3_param *p = a3_unet_param_at(c->m, i);
    size_t n = 0;
    snprintf(path, sizeof path, "grad/%s", p->name);
    float *ref = read_floats(c->g, path, &n, NULL, NULL);
    CHECK_MSG(ref && n == p->numel, "%s missing", path);
    if (!ref || n != p->numel) {
      free(ref);
      failed++;
      continue;
    }
    const double atol = GRAD_ATOL_REL * max_abs(ref, n) + floor_atol;
    rows[i] = compare(p->name, grads + p->offset, ref, n, GRAD_RTOL, atol);
    failed += rows[i].ratio > 1.0;
    free(ref);
  }
  return failed;
}

// The largest |gradient| over every parameter tensor of the reference.
static double largest_grad(golden_case *c) {
  char path[MAX_NAME + 8];
  double s = 0.0;
  for (int i = 0; i < a3_unet_param_count(c->m); i++) {
    size_t n = 0;
    snprintf(path, sizeof path, "grad/%s", a3_unet_param_at(c->m, i)->name);
    float *ref = read_floats(c->g, path, &n, NULL, NULL);
    if (ref) s = fmax(s, max_abs(ref, n));
    free(ref);
  }
  return s;
}

// ---------------------------------------------------------------- on a device
// A device tensor of n floats, uploaded from host (or zeroed when NULL).
static a3_status dev_floats(float **d, const float *host, size_t n) {
  A3_TRY(device->ops->alloc(device, (void **)d, n * sizeof(float)));
  return host ? device->ops->upload(device, *d, host, n * sizeof(float)) : A3_OK;
}

// mt_step on the device: the host model's architecture and weights there,
// the output, loss, dx and every gradient (into hm's gradients) copied back.
static a3_status device_step(a3_unet *hm, const golden_case *c, float *out, float *dx,
                             float *loss) {
  a3_unet *dm = NULL;
  float *d[7] = {NULL}; // x, t, target, out, dout, dx, loss
  const size_t n[7] = {c->nx, (size_t)c->batch, c->nout, c->nout, c->nout, c->nx, 1};
  const float *host[7] = {c->x, c->t, c->noise, NULL, NULL, NULL, NULL};
  a3_status s = a3_unet_build_on(a3_unet_arch(hm), NULL, device, &dm);
  if (s == A3_OK) s = a3_unet_copy_params(dm, hm);
  if (s == A3_OK) s = a3_unet_plan(dm, c->batch);
  for (int i = 0; i < 7 && s == A3_OK; i++) s = dev_floats(&d[i], host[i], n[i]);
  if (s == A3_OK) {
    const a3_backend_ops *op = device->ops;
    a3_unet_zero_grads(dm);
    s = a3_unet_forward(dm, d[0], d[1], d[3]);
    op->mse_forward(device, d[6], d[3], d[2], c->nout);
    op->mse_backward(device, d[4], d[3], d[2], c->nout, 1.0f);
    if (s == A3_OK) s = a3_unet_backward(dm, d[4], d[5]);
  }
  const size_t nf = a3_unet_num_floats(hm);
  if (s == A3_OK) s = device->ops->download(device, out, d[3], c->nout * sizeof(float));
  if (s == A3_OK) s = device->ops->download(device, dx, d[5], c->nx * sizeof(float));
  if (s == A3_OK) s = device->ops->download(device, loss, d[6], sizeof(float));
  if (s == A3_OK)
    s = device->ops->download(device, a3_unet_grads(hm), a3_unet_grads(dm), nf * sizeof(float));
  if (s == A3_OK) s = device->ops->synchronize(device);
  for (int i = 0; i < 7; i++) device->ops->release(device, d[i]);
  a3_unet_free(dm);
  return s;
}

static double rel_l2(const float *a, const float *b, size_t n) {
  double d2 = 0.0, r2 = 0.0;
  for (size_t i = 0; i < n; i++) {
    d2 += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    r2 += (double)b[i] * b[i];
  }
  return sqrt(d2) / fmax(sqrt(r2), 1e-30); // as unet_reference.py computes torch's
}

static int by_double(const void *pa, const void *pb) {
  const double a = *(const double *)pa, b = *(const double *)pb;
  return (a > b) - (a < b);
}

// The median of the gradient tensors' relative L2 errors against the file's.
static double grad_median(golden_case *c) {
  const int np = a3_unet_param_count(c->m);
  double *e = calloc((size_t)np, sizeof *e);
  if (!e) return INFINITY;
  char path[MAX_NAME + 8];
  for (int i = 0; i < np; i++) {
    const a3_param *p = a3_unet_param_at(c->m, i);
    size_t n = 0;
    snprintf(path, sizeof path, "grad/%s", p->name);
    float *ref = read_floats(c->g, path, &n, NULL, NULL);
    e[i] = ref && n == p->numel ? rel_l2(a3_unet_grads(c->m) + p->offset, ref, n) : INFINITY;
    free(ref);
  }
  qsort(e, (size_t)np, sizeof *e, by_double);
  const double median = np % 2 ? e[np / 2] : 0.5 * (e[np / 2 - 1] + e[np / 2]);
  free(e);
  return median;
}

// bf16: out, dx and the gradients' median against torch's bf16 errors.
static void compare_bf16(golden_case *c, const char *group, const float *out, const float *dx) {
  hid_t t = H5Gopen2(c->g, "torch_bf16", H5P_DEFAULT);
  CHECK_MSG(t >= 0, "%s/torch_bf16 missing (regenerate: tools/unet_reference.py --golden)", group);
  if (t < 0) return;
  const char *attr[3] = {"out_rel_l2", "dx_rel_l2", "grad_rel_l2_median"};
  const double ours[3] = {rel_l2(out, c->out_ref, c->nout), rel_l2(dx, c->dx_ref, c->nx),
                          grad_median(c)};
  printf("%s on %s, bf16: relative L2 error against float64 (torch bf16 autocast's; bound %gx)\n",
         group, device->name, BF16_VS_TORCH);
  for (int k = 0; k < 3; k++) {
    double torch = NAN;
    read_scalar_attr(t, attr[k], H5T_NATIVE_DOUBLE, &torch);
    const int ok = ours[k] <= BF16_VS_TORCH * torch;
    printf("  %-20s a3fta %10.3e  torch %10.3e  ratio %6.2f  %s\n", attr[k], ours[k], torch,
           ours[k] / torch, ok ? "ok" : "FAIL");
    CHECK_MSG(ok, "%s: %s %.3e over %g x torch's %.3e", group, attr[k], ours[k], BF16_VS_TORCH,
              torch);
  }
  H5Gclose(t);
}

static void run_case(hid_t file, const char *group) {
  golden_case c = {.g = H5Gopen2(file, group, H5P_DEFAULT)};
  CHECK_MSG(c.g >= 0, "group %s missing", group);
  if (c.g < 0) return;
  if (load_case(&c, group) == 0) {
    float *out = calloc(c.nout, sizeof(float)), *dout = calloc(c.nout, sizeof(float));
    float *dx = calloc(c.nx, sizeof(float));
    float loss = 0.0f;
    double loss_ref = 0.0;
    read_scalar_attr(c.g, "loss", H5T_NATIVE_DOUBLE, &loss_ref);
    if (device) {
      const a3_status s = device_step(c.m, &c, out, dx, &loss);
      CHECK_MSG(s == A3_OK, "%s on %s: %s", group, device->name, a3_error_message());
    } else {
      CHECK(mt_step(c.m, c.x, c.t, c.noise, out, dout, dx, &loss) == A3_OK);
    }
    if (device && device->act_bytes != sizeof(float)) {
      compare_bf16(&c, group, out, dx);
      free(out), free(dout), free(dx);
      goto done;
    }
    const int np = a3_unet_param_count(c.m);
    cmp_row *rows = calloc((size_t)np, sizeof(cmp_row));
    cmp_row head[3];
    head[0] =
        compare("out", out, c.out_ref, c.nout, OUT_RTOL, OUT_ATOL_REL * max_abs(c.out_ref, c.nout));
    const float loss_ref_f = (float)loss_ref;
    head[1] = compare("loss", &loss, &loss_ref_f, 1, LOSS_RTOL, 0.0);
    const double floor_atol = GRAD_ATOL_GLOBAL * largest_grad(&c);
    head[2] = compare("dx", dx, c.dx_ref, c.nx, GRAD_RTOL,
                      GRAD_ATOL_REL * max_abs(c.dx_ref, c.nx) + floor_atol);
    const int failed = compare_grads(&c, rows, floor_atol);
    printf("%s: %d parameters, batch %d; |a-b| <= atol + rtol|b| (ratio <= 1 passes)\n", group, np,
           c.batch);
    printf("  %-50s %8s %11s %11s %8s\n", "tensor", "numel", "max|ref|", "max|a-b|", "ratio");
    for (int i = 0; i < 3; i++) print_row(&head[i]);
    qsort(rows, (size_t)np, sizeof *rows, by_ratio_desc);
    printf("  -- the 8 worst of %d gradient tensors:\n", np);
    for (int i = 0; i < np && (i < 8 || rows[i].ratio > 1.0); i++) print_row(&rows[i]);
    CHECK_MSG(head[0].ratio <= 1.0 && head[1].ratio <= 1.0 && head[2].ratio <= 1.0,
              "%s: output, loss or dx mismatch", group);
    CHECK_MSG(failed == 0, "%s: %d gradient tensors mismatch (worst %s, ratio %.3f)", group, failed,
              rows[0].name, rows[0].ratio);
    free(rows), free(out), free(dout), free(dx);
  }
done:
  free(c.x), free(c.t), free(c.noise), free(c.out_ref), free(c.dx_ref);
  a3_unet_free(c.m);
  H5Gclose(c.g);
}

// ---------------------------------------------------------------- added modules
static int read_int_attr(hid_t g, const char *name) {
  int v = 0;
  CHECK_MSG(read_scalar_attr(g, name, H5T_NATIVE_INT, &v) == 0, "attribute %s missing", name);
  return v;
}

static int enum_attr(hid_t g, const char *name, const char *const *names, int n) {
  char *v = read_string_attr(g, name);
  int found = -1;
  for (int i = 0; v && i < n; i++)
    if (!strcmp(v, names[i])) found = i;
  CHECK_MSG(found >= 0, "attribute %s: unknown value %s", name, v ? v : "(missing)");
  free(v);
  return found < 0 ? 0 : found;
}

static a3_unet_extras read_extras(hid_t g) {
  static const char *const acts[] = {"silu", "gelu", "relu", "identity"};
  static const char *const places[] = {"pre_out", "post_out"};
  a3_unet_extras e = {0};
  e.adapter_rank = read_int_attr(g, "adapter_rank");
  e.adapter_activation = (a3_activation)enum_attr(g, "adapter_activation", acts, 4);
  e.adapter_placement = (a3_adapter_placement)enum_attr(g, "adapter_placement", places, 2);
  e.adapter_gate = read_int_attr(g, "adapter_gate") != 0;
  e.lora_rank = read_int_attr(g, "lora_rank");
  CHECK(read_scalar_attr(g, "lora_alpha", H5T_NATIVE_DOUBLE, &e.lora_alpha) == 0);
  return e;
}

typedef struct {
  int index;
  char name[MAX_NAME];
  char shape[64];
} added_entry;

// "index name d0xd1" lines -> entries; returns the count (-1 on a parse error).
static int parse_added(char *text, added_entry *out, int cap) {
  int n = 0;
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    if (n == cap) return -1;
    if (sscanf(line, "%d %255s %63s", &out[n].index, out[n].name, out[n].shape) != 3) return -1;
    n++;
  }
  return n;
}

static void shape_text(const a3_param *p, char *buf, size_t size) {
  int o = 0;
  for (int d = 0; d < p->ndim && o < (int)size; d++)
    o += snprintf(buf + o, size - (size_t)o, "%s%d", d ? "x" : "", p->shape[d]);
}

// Checks the table order (base names in the base group's order, added ones at
// their indices) and loads the base weights from the base group's param/ and
// the added ones from the case's flat `added`. Returns the added entries'
// count, or -1.
static int load_extra_weights(a3_unet *m, hid_t base, hid_t g, added_entry *added, int cap) {
  char *order = read_string_attr(base, "param_order");
  char *text = read_string_attr(g, "added_params");
  size_t n_flat = 0;
  float *flat = read_floats(g, "added", &n_flat, NULL, NULL);
  const int n_added = text ? parse_added(text, added, cap) : -1;
  CHECK_MSG(order && n_added > 0 && flat, "param_order, added_params or added missing");
  int bad = 0, a = 0;
  size_t used = 0;
  char *save = NULL, *name = order ? strtok_r(order, "\n", &save) : NULL;
  float *params = a3_unet_params(m);
  char path[MAX_NAME + 8], shape[64];
  for (int i = 0; n_added > 0 && flat && i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    if (a < n_added && added[a].index == i) { // an added parameter, from the flat array
      shape_text(p, shape, sizeof shape);
      if (strcmp(p->name, added[a].name) || strcmp(shape, added[a].shape) || !p->added ||
          used + p->numel > n_flat) {
        fprintf(stderr, "parameter %d: file has added %s (%s), model has %s (%s)\n", i,
                added[a].name, added[a].shape, p->name, shape);
        bad++;
      } else {
        memcpy(params + p->offset, flat + used, p->numel * sizeof(float));
      }
      used += p->numel;
      a++;
      continue;
    }
    if (!name || strcmp(name, p->name) || p->added) {
      fprintf(stderr, "parameter %d: file has %s, model has %s\n", i, name ? name : "none",
              p->name);
      bad++;
    } else {
      size_t n = 0;
      snprintf(path, sizeof path, "param/%s", name);
      float *w = read_floats(base, path, &n, NULL, NULL);
      if (!w || n != p->numel) {
        fprintf(stderr, "%s: missing or of the wrong size\n", path);
        bad++;
      } else {
        memcpy(params + p->offset, w, n * sizeof(float));
      }
      free(w);
    }
    name = strtok_r(NULL, "\n", &save);
  }
  CHECK_MSG(a == n_added && !name && used == n_flat, "table and file differ in length");
  CHECK_MSG(bad == 0, "%d naming/shape mismatches", bad);
  const int ok = n_added > 0 && bad == 0 && a == n_added && !name && used == n_flat;
  free(order), free(text), free(flat);
  return ok ? n_added : -1;
}

static void run_extra_case(hid_t file, const char *group) {
  hid_t g = H5Gopen2(file, group, H5P_DEFAULT);
  CHECK_MSG(g >= 0, "group %s missing", group);
  if (g < 0) return;
  char *base_name = read_string_attr(g, "base");
  hid_t base = base_name ? H5Gopen2(file, base_name, H5P_DEFAULT) : -1;
  char *yaml = base >= 0 ? read_string_attr(base, "config_yaml") : NULL;
  CHECK_MSG(yaml != NULL, "%s: base group or its config missing", group);
  const a3_unet_extras e = read_extras(g);
  printf("%s: %s + adapter r=%d act=%d placement=%d gate=%d, LoRA r=%d alpha=%g\n", group,
         base_name ? base_name : "?", e.adapter_rank, (int)e.adapter_activation,
         (int)e.adapter_placement, (int)e.adapter_gate, e.lora_rank, e.lora_alpha);
  a3_unet *m = yaml ? mt_build_yaml_ex(group, yaml, &e) : NULL;
  CHECK(m != NULL);
  int batch = 0;
  if (m) CHECK(read_scalar_attr(base, "batch", H5T_NATIVE_INT, &batch) == 0);
  added_entry *added = calloc(1024, sizeof(added_entry));
  const int n_added = m && batch > 0 && a3_unet_plan(m, batch) == A3_OK
                          ? load_extra_weights(m, base, g, added, 1024)
                          : -1;
  size_t nx = 0, nt = 0, nn = 0, nout = 0, nd = 0, ng = 0;
  float *x = read_floats(base, "x", &nx, NULL, NULL),
        *t = read_floats(base, "timesteps", &nt, NULL, NULL);
  float *noise = read_floats(base, "noise", &nn, NULL, NULL);
  float *out_ref = read_floats(g, "out", &nout, NULL, NULL),
        *dx_ref = read_floats(g, "dx", &nd, NULL, NULL);
  float *grad_ref = read_floats(g, "grad", &ng, NULL, NULL);
  const int ok = n_added > 0 && x && t && noise && out_ref && dx_ref && grad_ref &&
                 nx == mt_numel_in(m) && nout == mt_numel_out(m) && nn == nout && nd == nx;
  CHECK_MSG(ok, "%s: weights or inputs missing or of the wrong size", group);
  if (ok) {
    float *out = calloc(nout, sizeof(float)), *dout = calloc(nout, sizeof(float));
    float *dx = calloc(nx, sizeof(float));
    float loss = 0.0f;
    double loss_ref = 0.0;
    read_scalar_attr(g, "loss", H5T_NATIVE_DOUBLE, &loss_ref);
    CHECK(mt_step(m, x, t, noise, out, dout, dx, &loss) == A3_OK);
    const double floor_atol = GRAD_ATOL_GLOBAL * fmax(max_abs(grad_ref, ng), max_abs(dx_ref, nx));
    cmp_row head[3];
    head[0] = compare("out", out, out_ref, nout, OUT_RTOL, OUT_ATOL_REL * max_abs(out_ref, nout));
    const float loss_ref_f = (float)loss_ref;
    head[1] = compare("loss", &loss, &loss_ref_f, 1, LOSS_RTOL, 0.0);
    head[2] =
        compare("dx", dx, dx_ref, nx, GRAD_RTOL, GRAD_ATOL_REL * max_abs(dx_ref, nx) + floor_atol);
    cmp_row *rows = calloc((size_t)n_added, sizeof(cmp_row));
    const float *grads = a3_unet_grads(m);
    size_t used = 0;
    int failed = 0;
    for (int a = 0; a < n_added; a++) {
      const a3_param *p = a3_unet_param_at(m, added[a].index);
      const float *ref = grad_ref + used;
      used += p->numel;
      if (used > ng) break;
      rows[a] = compare(p->name, grads + p->offset, ref, p->numel, GRAD_RTOL,
                        GRAD_ATOL_REL * max_abs(ref, p->numel) + floor_atol);
      failed += rows[a].ratio > 1.0;
    }
    CHECK_MSG(used == ng, "%s: grad holds %zu floats, the added parameters %zu", group, ng, used);
    printf("%s: %d added tensors, batch %d; |a-b| <= atol + rtol|b| (ratio <= 1 passes)\n", group,
           n_added, batch);
    printf("  %-50s %8s %11s %11s %8s\n", "tensor", "numel", "max|ref|", "max|a-b|", "ratio");
    for (int i = 0; i < 3; i++) print_row(&head[i]);
    qsort(rows, (size_t)n_added, sizeof *rows, by_ratio_desc);
    printf("  -- the 6 worst of %d added gradient tensors:\n", n_added);
    for (int i = 0; i < n_added && (i < 6 || rows[i].ratio > 1.0); i++) print_row(&rows[i]);
    CHECK_MSG(head[0].ratio <= 1.0 && head[1].ratio <= 1.0 && head[2].ratio <= 1.0,
              "%s: output, loss or dx mismatch", group);
    CHECK_MSG(failed == 0, "%s: %d added gradient tensors mismatch (worst %s, ratio %.3f)", group,
              failed, rows[0].name, rows[0].ratio);
    free(rows), free(out), free(dout), free(dx);
  }
  free(x), free(t), free(noise), free(out_ref), free(dx_ref), free(grad_ref), free(added);
  free(yaml), free(base_name);
  a3_unet_free(m);
  if (base >= 0) H5Gclose(base);
  H5Gclose(g);
}

// --cuda fp32|bf16: the device candidate; 0 when fine, else the exit code.
static int open_device(const char *precision) {
  a3_precision p = A3_PRECISION_FP32;
  if (!strcmp(precision, "bf16")) {
    p = A3_PRECISION_BF16;
  } else if (strcmp(precision, "fp32") != 0) {
    fprintf(stderr, "--cuda takes fp32 or bf16, not %s\n", precision);
    return 2;
  }
  const a3_status s = a3_backend_cuda_create(0, p, &device);
  if (s == A3_ERR_CUDA || s == A3_ERR_UNIMPLEMENTED) {
    printf("SKIPPED: no usable CUDA backend: %s\n", a3_error_message());
    return 77;
  }
  if (s != A3_OK) fprintf(stderr, "FAIL: a3_backend_cuda_create: %s\n", a3_error_message());
  return s == A3_OK ? 0 : 1;
}

// Usage: test_unet_golden [FILE] [--cuda fp32|bf16]
int main(int argc, char **argv) {
  char path[4096];
  const char *src = getenv("A3FTA_SOURCE_DIR");
  snprintf(path, sizeof path, "%s/tests/model/golden_unet.h5", src ? src : ".");
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--cuda") && i + 1 < argc) {
      const int rc = open_device(argv[++i]);
      if (rc) return rc;
    } else {
      snprintf(path, sizeof path, "%s", argv[i]);
    }
  }
  // Tiny GEMMs: extra BLAS threads only spin against a parallel ctest.
  a3_backend_cpu_set_threads(1);
  hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  CHECK_MSG(file >= 0, "cannot open %s (regenerate: tools/unet_reference.py --golden)", path);
  if (file < 0) return TEST_DONE("test_unet_golden");
  run_case(file, "tiny");
  run_case(file, "multi");
  if (!device) { // the added modules: on the CPU (the device runs them in test_cuda_unet)
    run_extra_case(file, "tiny_pre");
    run_extra_case(file, "tiny_post");
    run_extra_case(file, "tiny_lora");
    run_extra_case(file, "tiny_relu");
  }
  H5Fclose(file);
  a3_backend_cuda_destroy(device);
  return TEST_DONE("test_unet_golden");
}
