// The feature network fmnist-cnn-v1 (see a3fta/features.h): parameters,
// forward and backward through the backend op table, files, inference.
#include "eval/feature_net_internal.h"

#include "a3fta/checkpoint.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- parameters
#define T4(name, a, b, c, d, off)                                                                  \
  { name, 4, {a, b, c, d}, off, (int64_t)(a) * (b) * (c) * (d) }
#define T2(name, a, b, off)                                                                        \
  { name, 2, {a, b, 0, 0}, off, (int64_t)(a) * (b) }
#define T1(name, a, off)                                                                           \
  { name, 1, {a, 0, 0, 0}, off, (int64_t)(a) }

enum {
  OFF_C1W = 0,
  OFF_C1B = OFF_C1W + FN_C1 * 1 * 9,
  OFF_C2W = OFF_C1B + FN_C1,
  OFF_C2B = OFF_C2W + FN_C2 * FN_C1 * 9,
  OFF_C3W = OFF_C2B + FN_C2,
  OFF_C3B = OFF_C3W + FN_C3 * FN_C2 * 9,
  OFF_F1W = OFF_C3B + FN_C3,
  OFF_F1B = OFF_F1W + A3_FEATNET_DIM * FN_FLAT,
  OFF_F2W = OFF_F1B + A3_FEATNET_DIM,
  OFF_F2B = OFF_F2W + A3_FEATNET_CLASSES * A3_FEATNET_DIM,
  OFF_END = OFF_F2B + A3_FEATNET_CLASSES,
};
_Static_assert((int)OFF_END == (int)A3_FEATNET_NUM_PARAMS, "A3_FEATNET_NUM_PARAMS is out of date");

static const a3_featnet_tensor tensors[A3_FEATNET_NUM_TENSORS] = {
    T4("conv1.weight", FN_C1, 1, 3, 3, OFF_C1W),
    T1("conv1.bias", FN_C1, OFF_C1B),
    T4("conv2.weight", FN_C2, FN_C1, 3, 3, OFF_C2W),
    T1("conv2.bias", FN_C2, OFF_C2B),
    T4("conv3.weight", FN_C3, FN_C2, 3, 3, OFF_C3W),
    T1("conv3.bias", FN_C3, OFF_C3B),
    T2("fc1.weight", A3_FEATNET_DIM, FN_FLAT, OFF_F1W),
    T1("fc1.bias", A3_FEATNET_DIM, OFF_F1B),
    T2("fc2.weight", A3_FEATNET_CLASSES, A3_FEATNET_DIM, OFF_F2W),
    T1("fc2.bias", A3_FEATNET_CLASSES, OFF_F2B),
};

const a3_featnet_tensor *a3_featnet_tensor_at(int i) {
  return i >= 0 && i < A3_FEATNET_NUM_TENSORS ? &tensors[i] : NULL;
}

// fan_in of a tensor: weights and their biases share the layer's fan-in.
static int64_t fan_in(int i) {
  const a3_featnet_tensor *t = &tensors[i & ~1]; // the layer's weight
  return t->numel / t->shape[0];
}

// Uniform in [-1, 1) from 24 random bits (exact in a float), as the U-Net's init.
static float uniform_pm1(uint64_t seed, uint64_t index) {
  const uint64_t r = a3_rng_u64(seed, A3_STREAM_FEATNET_INIT, index);
  return (float)((double)(r >> 40) * (1.0 / 8388608.0) - 1.0);
}

// The three convolutions for a batch of B.
static a3_conv2d_shape conv_shape(int layer, int B) {
  switch (layer) {
  case 0: return (a3_conv2d_shape){B, 1, 28, 28, FN_C1, 3, 3, 1, 1, 1, 1, 1};
  case 1: return (a3_conv2d_shape){B, FN_C1, 28, 28, FN_C2, 3, 3, 2, 1, 1, 1, 1};
  default: return (a3_conv2d_shape){B, FN_C2, 14, 14, FN_C3, 3, 3, 2, 1, 1, 1, 1};
  }
}

// ---------------------------------------------------------------- network object
a3_status a3_feature_net_create(const a3_backend *be, uint64_t seed, a3_feature_net **out) {
  *out = NULL;
  float *host = NULL;
  A3_TRY(A3_ALLOC(host, A3_FEATNET_NUM_PARAMS));
  for (int i = 0; i < A3_FEATNET_NUM_TENSORS; i++) {
    const float bound = (float)(1.0 / sqrt((double)fan_in(i)));
    float *w = host + tensors[i].offset;
    for (int64_t j = 0; j < tensors[i].numel; j++)
      w[j] = bound * uniform_pm1(seed, (uint64_t)(tensors[i].offset + j));
  }
  a3_feature_net *net = NULL;
  a3_status s = A3_ALLOC(net, 1);
  if (s == A3_OK) {
    net->be = be;
    s = be->ops->alloc(be, (void **)&net->params, sizeof(float) * A3_FEATNET_NUM_PARAMS);
  }
  if (s == A3_OK) s = a3_feature_net_set_params(net, host);
  free(host);
  if (s != A3_OK) {
    a3_feature_net_free(net);
    A3_TRY(s);
  }
  *out = net;
  return A3_OK;
}

void a3_feature_net_free(a3_feature_net *net) {
  if (!net) return;
  net->be->ops->release(net->be, net->params);
  free(net);
}

a3_status a3_feature_net_get_params(const a3_feature_net *net, float *host) {
  A3_TRY(net->be->ops->download(net->be, host, net->params, sizeof(float) * A3_FEATNET_NUM_PARAMS));
  return A3_OK;
}

a3_status a3_feature_net_set_params(a3_feature_net *net, const float *host) {
  A3_TRY(net->be->ops->upload(net->be, net->params, host, sizeof(float) * A3_FEATNET_NUM_PARAMS));
  return A3_OK;
}

// ---------------------------------------------------------------- activations
// Every buffer of b, with its element count and whether it is an activation
// (be->act_bytes each) or fp32, and whether inference needs it.
typedef struct {
  void **p;
  size_t n;
  int act, train_only;
} fn_buf_spec;

enum { FN_NBUFS = 18 };

static void fn_buf_specs(fn_bufs *b, size_t nB, fn_buf_spec *w) {
  const fn_buf_spec all[FN_NBUFS] = {
      {(void **)&b->x, nB * 28 * 28, 1, 0},
      {(void **)&b->a1, nB * FN_C1 * 28 * 28, 1, 0},
      {(void **)&b->h1, nB * FN_C1 * 28 * 28, 1, 1},
      {(void **)&b->a2, nB * FN_C2 * 14 * 14, 1, 0},
      {(void **)&b->h2, nB * FN_C2 * 14 * 14, 1, 1},
      {(void **)&b->a3, nB * FN_FLAT, 1, 0},
      {(void **)&b->h3, nB * FN_FLAT, 1, 1},
      {(void **)&b->a4, nB * A3_FEATNET_DIM, 1, 0},
      {(void **)&b->h4, nB * A3_FEATNET_DIM, 1, 1},
      {(void **)&b->logits, nB * A3_FEATNET_CLASSES, 1, 0},
      {(void **)&b->zf, nB * A3_FEATNET_CLASSES, 0, 0},
      {(void **)&b->probs, nB * A3_FEATNET_CLASSES, 0, 1},
      {(void **)&b->f32, nB * 28 * 28, 0, 0},
      {(void **)&b->gA, nB * FN_C1 * 28 * 28, 1, 1},
      {(void **)&b->gB, nB * FN_C1 * 28 * 28, 1, 1},
      {(void **)&b->loss, 1, 0, 1},
      {(void **)&b->dx_dev, nB * 28 * 28, 1, 1},
      {(void **)&b->grads, A3_FEATNET_NUM_PARAMS, 0, 1},
  };
  memcpy(w, all, sizeof all);
}

void fn_bufs_free(const a3_backend *be, fn_bufs *b) {
  fn_buf_spec w[FN_NBUFS];
  fn_buf_specs(b, 0, w);
  for (int i = 0; i < FN_NBUFS; i++) {
    be->ops->release(be, *w[i].p);
    *w[i].p = NULL;
  }
  be->ops->release(be, b->labels);
  be->ops->release(be, b->ws);
  b->labels = NULL;
  b->ws = NULL;
}

a3_status fn_bufs_alloc(const a3_backend *be, int B, int train, fn_bufs *b) {
  memset(b, 0, sizeof *b);
  b->B = B;
  b->train = train;
  const size_t nB = (size_t)B;
  fn_buf_spec w[FN_NBUFS];
  fn_buf_specs(b, nB, w);
  a3_status s = A3_OK;
  for (int i = 0; i < FN_NBUFS && s == A3_OK; i++)
    if (train || !w[i].train_only)
      s = be->ops->alloc(be, w[i].p, w[i].n * (w[i].act ? be->act_bytes : sizeof(float)));
  if (s == A3_OK && train) s = be->ops->alloc(be, (void **)&b->labels, nB * sizeof(int32_t));
  size_t ws = 0;
  for (int l = 0; l < 3; l++) {
    const a3_conv2d_shape cs = conv_shape(l, B);
    const size_t need = be->ops->conv2d_workspace_size(be, &cs);
    ws = need > ws ? need : ws;
  }
  b->ws_bytes = ws;
  if (s == A3_OK) s = be->ops->alloc(be, &b->ws, ws);
  if (s != A3_OK) {
    fn_bufs_free(be, b);
    A3_TRY(s);
  }
  return A3_OK;
}

a3_status fn_upload_images(const a3_backend *be, fn_bufs *b, const float *host, int n) {
  const size_t count = (size_t)n * 28 * 28;
  A3_TRY(be->ops->upload(be, b->f32, host, sizeof(float) * count));
  be->ops->act_from_f32(be, b->x, b->f32, count);
  return A3_OK;
}

a3_status fn_download_act(const a3_backend *be, fn_bufs *b, float *host, const a3_act *src, int n,
                          int dim) {
  const size_t count = (size_t)n * dim;
  be->ops->act_to_f32(be, b->f32, src, count);
  A3_TRY(be->ops->download(be, host, b->f32, sizeof(float) * count));
  return A3_OK;
}

// Forward of the first n <= B rows of b->x. Inference (not b->train) runs the
// activations in place: h1 = a1, and so on.
void fn_forward(const a3_feature_net *net, fn_bufs *b, int n) {
  const a3_backend *be = net->be;
  const a3_backend_ops *o = be->ops;
  const float *P = net->params;
  a3_act *h1 = b->train ? b->h1 : b->a1, *h2 = b->train ? b->h2 : b->a2;
  a3_act *h3 = b->train ? b->h3 : b->a3, *h4 = b->train ? b->h4 : b->a4;
  a3_conv2d_shape s = conv_shape(0, n);
  o->conv2d_forward(be, &s, b->a1, b->x, P + OFF_C1W, P + OFF_C1B, b->ws);
  o->silu_forward(be, h1, b->a1, (size_t)n * FN_C1 * 28 * 28);
  s = conv_shape(1, n);
  o->conv2d_forward(be, &s, b->a2, h1, P + OFF_C2W, P + OFF_C2B, b->ws);
  o->silu_forward(be, h2, b->a2, (size_t)n * FN_C2 * 14 * 14);
  s = conv_shape(2, n);
  o->conv2d_forward(be, &s, b->a3, h2, P + OFF_C3W, P + OFF_C3B, b->ws);
  o->silu_forward(be, h3, b->a3, (size_t)n * FN_FLAT);
  o->linear_forward(be, b->a4, h3, P + OFF_F1W, P + OFF_F1B, n, FN_FLAT, A3_FEATNET_DIM);
  o->silu_forward(be, h4, b->a4, (size_t)n * A3_FEATNET_DIM);
  o->linear_forward(be, b->logits, h4, P + OFF_F2W, P + OFF_F2B, n, A3_FEATNET_DIM,
                    A3_FEATNET_CLASSES);
  o->act_to_f32(be, b->zf, b->logits, (size_t)n * A3_FEATNET_CLASSES); // softmax and callers: fp32
}

// Backward after fn_forward on a training buffer with labels uploaded:
// b->grads += d(scale * summed loss)/d params, b->loss = the scaled loss;
// the input gradient into b->dx_dev when want_dx.
void fn_loss_backward(const a3_feature_net *net, fn_bufs *b, int n, float scale, int want_dx) {
  const a3_backend *be = net->be;
  const a3_backend_ops *o = be->ops;
  const float *P = net->params;
  float *G = b->grads;
  const size_t nz = (size_t)n * A3_FEATNET_CLASSES;
  o->softmax_xent_forward(be, b->loss, b->probs, b->zf, b->labels, n, A3_FEATNET_CLASSES, scale);
  // The fp32 logits are spent: zf takes their gradient, rounded into gA.
  o->softmax_xent_backward(be, b->zf, b->probs, b->labels, n, A3_FEATNET_CLASSES, scale);
  o->act_from_f32(be, b->gA, b->zf, nz);
  o->linear_backward(be, b->gB, G + OFF_F2W, G + OFF_F2B, b->gA, b->h4, P + OFF_F2W, n,
                     A3_FEATNET_DIM, A3_FEATNET_CLASSES);
  o->silu_backward(be, b->gB, b->gB, b->a4, (size_t)n * A3_FEATNET_DIM);
  o->linear_backward(be, b->gA, G + OFF_F1W, G + OFF_F1B, b->gB, b->h3, P + OFF_F1W, n, FN_FLAT,
                     A3_FEATNET_DIM);
  o->silu_backward(be, b->gA, b->gA, b->a3, (size_t)n * FN_FLAT);
  a3_conv2d_shape s = conv_shape(2, n);
  o->conv2d_backward(be, &s, b->gB, G + OFF_C3W, G + OFF_C3B, b->gA, b->h2, P + OFF_C3W, b->ws);
  o->silu_backward(be, b->gB, b->gB, b->a2, (size_t)n * FN_C2 * 14 * 14);
  s = conv_shape(1, n);
  o->conv2d_backward(be, &s, b->gA, G + OFF_C2W, G + OFF_C2B, b->gB, b->h1, P + OFF_C2W, b->ws);
  o->silu_backward(be, b->gA, b->gA, b->a1, (size_t)n * FN_C1 * 28 * 28);
  s = conv_shape(0, n);
  o->conv2d_backward(be, &s, want_dx ? b->dx_dev : NULL, G + OFF_C1W, G + OFF_C1B, b->gA, b->x,
                     P + OFF_C1W, b->ws);
}

// uint8 (n, 1, h, w), h = w = 28 or 32 -> floats (n, 1, 28, 28) in [-1, 1].
void fn_scale_images(const uint8_t *images, int64_t n, int h, int w, float *x) {
  const int off = (h - 28) / 2;
  for (int64_t i = 0; i < n; i++) {
    const uint8_t *img = images + (size_t)i * h * w;
    float *xi = x + (size_t)i * 28 * 28;
    for (int y = 0; y < 28; y++)
      for (int c = 0; c < 28; c++)
        xi[y * 28 + c] = (float)img[(y + off) * w + c + off] * (1.0f / 127.5f) - 1.0f;
  }
}

a3_status fn_check_size(int h, int w) {
  if (h != w || (h != 28 && h != 32))
    return A3_FAIL(A3_ERR_INPUT,
                   "feature network %s: images are %dx%d; it takes 28x28 (or 32x32, "
                   "centre-cropped to 28x28) single-channel images",
                   A3_FEATNET_NAME, h, w);
  return A3_OK;
}

// ---------------------------------------------------------------- inference
enum { FN_INFER_BATCH = 256 };

a3_status a3_feature_net_forward(const a3_feature_net *net, const uint8_t *images, int64_t n, int h,
                                 int w, float *features, float *logits) {
  A3_TRY(fn_check_size(h, w));
  if (n <= 0) return A3_OK;
  const a3_backend *be = net->be;
  const int B = n < FN_INFER_BATCH ? (int)n : FN_INFER_BATCH;
  fn_bufs b;
  A3_TRY(fn_bufs_alloc(be, B, 0, &b));
  float *hx = NULL;
  a3_status s = A3_ALLOC(hx, (size_t)B * 28 * 28);
  for (int64_t i0 = 0; i0 < n && s == A3_OK; i0 += B) {
    const int m = (int)(n - i0 < B ? n - i0 : B);
    fn_scale_images(images + (size_t)i0 * h * w, m, h, w, hx);
    s = fn_upload_images(be, &b, hx, m);
    if (s != A3_OK) break;
    fn_forward(net, &b, m);
    // Inference runs in place: the features are in a4, the logits in zf.
    if (features)
      s = fn_download_act(be, &b, features + (size_t)i0 * A3_FEATNET_DIM, b.a4, m, A3_FEATNET_DIM);
    if (s == A3_OK && logits)
      s = be->ops->download(be, logits + (size_t)i0 * A3_FEATNET_CLASSES, b.zf,
                            sizeof(float) * (size_t)m * A3_FEATNET_CLASSES);
  }
  if (s == A3_OK) s = be->ops->synchronize(be);
  free(hx);
  fn_bufs_free(be, &b);
  A3_TRY(s);
  return A3_OK;
}

a3_status a3_features_extract(const a3_feature_net *net, const uint8_t *images, int64_t n, int h,
                              int w, float *features) {
  A3_TRY(a3_feature_net_forward(net, images, n, h, w, features, NULL));
  return A3_OK;
}

a3_status a3_feature_net_accuracy(const a3_feature_net *net, const uint8_t *images,
                                  const int32_t *labels, int64_t n, int h, int w, double *accuracy,
                                  double *mean_loss) {
  if (n < 1) return A3_FAIL(A3_ERR_INPUT, "feature network accuracy: no images");
  for (int64_t i = 0; i < n; i++)
    if (labels[i] < 0 || labels[i] >= A3_FEATNET_CLASSES)
      return A3_FAIL(A3_ERR_INPUT,
                     "feature network accuracy: label %d of image %lld is not in "
                     "[0, %d)",
                     (int)labels[i], (long long)i, A3_FEATNET_CLASSES);
  float *logits = NULL;
  A3_TRY(A3_ALLOC(logits, (size_t)n * A3_FEATNET_CLASSES));
  a3_status s = a3_feature_net_forward(net, images, n, h, w, NULL, logits);
  if (s == A3_OK) {
    int64_t correct = 0;
    double loss = 0.0;
    for (int64_t i = 0; i < n; i++) {
      const float *z = logits + (size_t)i * A3_FEATNET_CLASSES;
      int best = 0;
      for (int k = 1; k < A3_FEATNET_CLASSES; k++) best = z[k] > z[best] ? k : best;
      correct += best == labels[i];
      double sum = 0.0;
      for (int k = 0; k < A3_FEATNET_CLASSES; k++) sum += exp((double)z[k] - z[best]);
      loss += (double)z[best] + log(sum) - (double)z[labels[i]];
    }
    *accuracy = (double)correct / (double)n;
    if (mean_loss) *mean_loss = loss / (double)n;
  }
  free(logits);
  A3_TRY(s);
  return A3_OK;
}

// ---------------------------------------------------------------- one training pass
a3_status a3_feature_net_loss_grad(a3_feature_net *net, const float *x, const int32_t *labels,
                                   int n, float scale, double *loss, float *grads, float *dx) {
  if (n < 1) return A3_FAIL(A3_ERR_INPUT, "feature network: empty batch");
  const a3_backend *be = net->be;
  fn_bufs b;
  A3_TRY(fn_bufs_alloc(be, n, 1, &b));
  float l = 0.0f;
  a3_status s = fn_upload_images(be, &b, x, n);
  if (s == A3_OK) s = be->ops->upload(be, b.labels, labels, sizeof(int32_t) * (size_t)n);
  if (s == A3_OK) {
    be->ops->zero(be, b.grads, A3_FEATNET_NUM_PARAMS);
    fn_forward(net, &b, n);
    fn_loss_backward(net, &b, n, scale, dx != NULL);
    s = be->ops->download(be, grads, b.grads, sizeof(float) * A3_FEATNET_NUM_PARAMS);
  }
  if (s == A3_OK && dx) s = fn_download_act(be, &b, dx, b.dx_dev, n, 784);
  if (s == A3_OK) s = be->ops->download(be, &l, b.loss, sizeof l);
  if (s == A3_OK) s = be->ops->synchronize(be);
  fn_bufs_free(be, &b);
  A3_TRY(s);
  *loss = l;
  return A3_OK;
}

// ---------------------------------------------------------------- files
static a3_status write_net(const a3_feature_net *net, const float *host, const char *path,
                           const a3_feature_net_record *rec) {
  (void)net;
  a3_ckpt_writer *w = NULL;
  A3_TRY(a3_ckpt_create(path, &w));
  a3_status s = a3_ckpt_write_attr_string(w, "/", "content", A3_FEATNET_CONTENT);
  if (s == A3_OK) s = a3_ckpt_write_attr_string(w, "/", "network", A3_FEATNET_NAME);
  if (s == A3_OK) s = a3_ckpt_write_attr_int(w, "/", "network_version", A3_FEATNET_VERSION);
  if (s == A3_OK && rec) {
    s = a3_ckpt_write_attr_int(w, "/", "seed", (int64_t)rec->seed);
    if (s == A3_OK) s = a3_ckpt_write_attr_int(w, "/", "epochs", rec->epochs);
    if (s == A3_OK) s = a3_ckpt_write_attr_int(w, "/", "steps", rec->steps);
    if (s == A3_OK) s = a3_ckpt_write_attr_int(w, "/", "ranks", rec->ranks);
    if (s == A3_OK)
      s = a3_ckpt_write_attr_int(
          w, "/", "test_accuracy_ppm",
          rec->test_accuracy < 0 ? -1 : (int64_t)llround(rec->test_accuracy * 1e6));
    if (s == A3_OK)
      s = a3_ckpt_write_attr_int(w, "/", "train_seconds", (int64_t)llround(rec->train_seconds));
  }
  for (int i = 0; i < A3_FEATNET_NUM_TENSORS && s == A3_OK; i++) {
    const a3_featnet_tensor *t = &tensors[i];
    a3_ckpt_spec spec = {.name = t->name, .ndim = t->ndim};
    for (int d = 0; d < t->ndim; d++) spec.shape[d] = t->shape[d];
    s = a3_ckpt_write_tensor(w, "params", &spec, host + t->offset);
  }
  if (s != A3_OK) {
    a3_ckpt_discard(w);
    A3_TRY(s);
  }
  A3_TRY(a3_ckpt_commit(w));
  return A3_OK;
}

a3_status a3_feature_net_save(const a3_feature_net *net, const char *path,
                              const a3_feature_net_record *record) {
  float *host = NULL;
  A3_TRY(A3_ALLOC(host, A3_FEATNET_NUM_PARAMS));
  a3_status s = a3_feature_net_get_params(net, host);
  if (s == A3_OK) s = write_net(net, host, path, record);
  free(host);
  A3_TRY(s);
  return A3_OK;
}

static a3_status check_identity(const a3_ckpt_reader *r) {
  const char *path = a3_ckpt_path(r);
  char *content = NULL, *name = NULL;
  a3_status s = a3_ckpt_read_attr_string(r, "/", "content", &content);
  if (s == A3_OK && strcmp(content, A3_FEATNET_CONTENT) != 0)
    s = A3_FAIL(A3_ERR_INPUT, "%s is an a3fta checkpoint of '%s', not a feature network (%s)", path,
                content, A3_FEATNET_CONTENT);
  if (s == A3_OK) s = a3_ckpt_read_attr_string(r, "/", "network", &name);
  if (s == A3_OK && strcmp(name, A3_FEATNET_NAME) != 0)
    s = A3_FAIL(A3_ERR_INPUT, "%s holds feature network '%s'; this a3fta knows only '%s'", path,
                name, A3_FEATNET_NAME);
  int64_t version = 0;
  if (s == A3_OK) s = a3_ckpt_read_attr_int(r, "/", "network_version", &version);
  if (s == A3_OK && version != A3_FEATNET_VERSION)
    s = A3_FAIL(A3_ERR_INPUT, "%s: %s network_version %lld; this a3fta reads version %d", path,
                A3_FEATNET_NAME, (long long)version, A3_FEATNET_VERSION);
  free(content);
  free(name);
  A3_TRY(s);
  return A3_OK;
}

a3_status a3_feature_net_load(const a3_backend *be, const char *path, a3_feature_net **out) {
  *out = NULL;
  a3_ckpt_reader *r = NULL;
  A3_TRY(a3_ckpt_open(path, &r));
  float *host = NULL;
  a3_status s = check_identity(r);
  if (s == A3_OK) s = A3_ALLOC(host, A3_FEATNET_NUM_PARAMS);
  a3_ckpt_item items[A3_FEATNET_NUM_TENSORS];
  memset(items, 0, sizeof items);
  for (int i = 0; i < A3_FEATNET_NUM_TENSORS && host; i++) {
    const a3_featnet_tensor *t = &tensors[i];
    items[i].spec = (a3_ckpt_spec){.name = t->name, .ndim = t->ndim};
    for (int d = 0; d < t->ndim; d++) items[i].spec.shape[d] = t->shape[d];
    items[i].dst = host + t->offset;
  }
  int n_extra = 0;
  if (s == A3_OK) s = a3_ckpt_read_set(r, "params", items, A3_FEATNET_NUM_TENSORS, NULL, &n_extra);
  if (s == A3_OK && n_extra)
    s = A3_FAIL(A3_ERR_INPUT, "%s: /params has %d tensor(s) that %s does not have", path, n_extra,
                A3_FEATNET_NAME);
  for (int64_t j = 0; s == A3_OK && j < A3_FEATNET_NUM_PARAMS; j++)
    if (!isfinite(host[j]))
      s = A3_FAIL(A3_ERR_INPUT, "%s: parameter %lld is not finite", path, (long long)j);
  a3_ckpt_close(r);
  a3_feature_net *net = NULL;
  if (s == A3_OK) s = a3_feature_net_create(be, 0, &net);
  if (s == A3_OK) s = a3_feature_net_set_params(net, host);
  free(host);
  if (s != A3_OK) {
    a3_feature_net_free(net);
    A3_TRY(s);
  }
  *out = net;
  return A3_OK;
}

a3_status a3_feature_net_read_record(const char *path, a3_feature_net_record *out) {
  memset(out, 0, sizeof *out);
  out->test_accuracy = -1;
  a3_ckpt_reader *r = NULL;
  A3_TRY(a3_ckpt_open(path, &r));
  a3_status s = check_identity(r);
  int64_t v = 0;
  // Absent attributes stay 0; each read is independent.
  if (s == A3_OK && a3_ckpt_read_attr_int(r, "/", "seed", &v) == A3_OK) out->seed = (uint64_t)v;
  if (s == A3_OK && a3_ckpt_read_attr_int(r, "/", "epochs", &v) == A3_OK) out->epochs = v;
  if (s == A3_OK && a3_ckpt_read_attr_int(r, "/", "steps", &v) == A3_OK) out->steps = v;
  if (s == A3_OK && a3_ckpt_read_attr_int(r, "/", "ranks", &v) == A3_OK) out->ranks = v;
  if (s == A3_OK && a3_ckpt_read_attr_int(r, "/", "test_accuracy_ppm", &v) == A3_OK)
    out->test_accuracy = v < 0 ? -1.0 : (double)v * 1e-6;
  if (s == A3_OK && a3_ckpt_read_attr_int(r, "/", "train_seconds", &v) == A3_OK)
    out->train_seconds = (double)v;
  if (s == A3_OK) a3_error_clear(); // the absent attributes' messages
  a3_ckpt_close(r);
  A3_TRY(s);
  return A3_OK;
}
