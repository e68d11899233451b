// The feature network fmnist-cnn-v1 (a3fta/features.h):
//   - softmax cross-entropy ops against double-precision sums, extreme logits included;
//   - a gradient check: an independent double-precision forward of the whole
//     network (naive loops here), central finite differences of its loss,
//     against the backend's analytic gradients (parameters and input);
//   - short training runs on Fashion-MNIST: the loss decreases, two runs with
//     one seed are bitwise equal, another seed differs; save/load round trip;
//   - the committed network (argv[1]): >= 90% accuracy on the full 10,000-image
//     test split, the 32x32 (centre-crop) path equals the 28x28 one, and FID
//     in its feature space separates classes: FID(test 9, train 9) is below
//     a fifth of FID(test 9, train 0).
// On 2+ ranks it checks data-parallel training instead: equal to one rank up
// to rounding, and bitwise reproducible.
//
// Also the tool that made the committed network:
//   test_eval_feature_net --train OUT.h5 [--seed S] [--epochs E] [--dataset FILE]
//                         [--max-steps N]
// imports Fashion-MNIST from /usr/share/datasets/fashion-mnist (unless
// --dataset names an imported file), trains with the default hyperparameters
// on all ranks, evaluates on the test split and writes OUT.h5.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/dataset.h"
#include "a3fta/features.h"
#include "a3fta/metrics.h"
#include "test_util.h"

#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank = 0, nranks = 1;

static double now(void) { return MPI_Wtime(); }

// ---------------------------------------------------------------- softmax cross-entropy op
static void test_xent_op(void) {
  const a3_backend *be = a3_backend_cpu();
  enum { N = 5, K = 10 };
  float z[N * K], p[N * K], d[N * K], loss = 0;
  int32_t y[N] = {0, 3, 9, 7, 2};
  for (int i = 0; i < N * K; i++)
    z[i] = (float)((double)(a3_rng_u64(3, 7, (uint64_t)i) >> 40) / 16777216.0 * 8.0 - 4.0);
  z[1 * K + 3] = 80.0f;  // confident and right: loss ~ 0
  z[2 * K + 0] = 95.0f;  // confident and wrong: loss ~ 95 - z[9], p[9] underflows
  z[4 * K + 5] = -90.0f; // a very negative logit
  const float scale = 1.0f / N;
  be->ops->softmax_xent_forward(be, &loss, p, z, y, N, K, scale);
  be->ops->softmax_xent_backward(be, d, p, y, N, K, scale);
  double ref = 0.0;
  for (int i = 0; i < N; i++) {
    double mx = -INFINITY, sum = 0.0;
    for (int k = 0; k < K; k++) mx = fmax(mx, z[i * K + k]);
    for (int k = 0; k < K; k++) sum += exp(z[i * K + k] - mx);
    double psum = 0.0;
    for (int k = 0; k < K; k++) {
      const double pk = exp(z[i * K + k] - mx) / sum;
      psum += p[i * K + k];
      CHECK_MSG(fabs(p[i * K + k] - pk) <= 1e-6 * pk + 1e-30, "p[%d,%d] %g vs %g", i, k,
                p[i * K + k], pk);
      const double dk = (pk - (k == y[i])) / N;
      CHECK_MSG(fabs(d[i * K + k] - dk) <= 1e-6 * fabs(dk) + 1e-12, "dz[%d,%d] %g vs %g", i, k,
                d[i * K + k], dk);
    }
    CHECK(fabs(psum - 1.0) < 1e-5);
    ref += mx + log(sum) - z[i * K + y[i]];
  }
  ref /= N;
  CHECK_MSG(isfinite(loss) && fabs(loss - ref) <= 1e-6 * ref, "loss %.9g vs %.9g", loss, ref);
  CHECK(ref > 95.0 / N - 1); // the confidently wrong row dominates
}

// ---------------------------------------------------------------- double reference network
// conv (B, C, H, W) -> (B, OC, OH, OW), 3x3, pad 1, stride s, plus bias.
static void ref_conv(const double *x, int B, int C, int H, int W, const double *w, const double *b,
                     int OC, int s, double *y) {
  const int OH = (H + 2 - 3) / s + 1, OW = (W + 2 - 3) / s + 1;
  for (int n = 0; n < B; n++)
    for (int o = 0; o < OC; o++)
      for (int oy = 0; oy < OH; oy++)
        for (int ox = 0; ox < OW; ox++) {
          double acc = b[o];
          for (int c = 0; c < C; c++)
            for (int ky = 0; ky < 3; ky++) {
              const int iy = oy * s - 1 + ky;
              if (iy < 0 || iy >= H) continue;
              for (int kx = 0; kx < 3; kx++) {
                const int ix = ox * s - 1 + kx;
                if (ix < 0 || ix >= W) continue;
                acc += w[((o * C + c) * 3 + ky) * 3 + kx] * x[((n * C + c) * H + iy) * W + ix];
              }
            }
          y[((n * OC + o) * OH + oy) * OW + ox] = acc;
        }
}

static void ref_silu(double *x, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0 + exp(-x[i]));
}

static void ref_linear(const double *x, int N, int IN, const double *w, const double *b, int OUT,
                       double *y) {
  for (int n = 0; n < N; n++)
    for (int o = 0; o < OUT; o++) {
      double acc = b[o];
      for (int i = 0; i < IN; i++) acc += w[o * IN + i] * x[n * IN + i];
      y[n * OUT + o] = acc;
    }
}

static const double *T(const double *P, int i) { return P + a3_featnet_tensor_at(i)->offset; }

// Mean cross-entropy of the network with parameters P on x (B, 1, 28, 28);
// logits (B, 10) and features (B, 128) out when not NULL.
static double ref_loss(const double *P, const double *x, const int32_t *y, int B, double *logits,
                       double *features) {
  double *a1 = malloc(sizeof(double) * (size_t)B * 32 * 784);
  double *a2 = malloc(sizeof(double) * (size_t)B * 64 * 196);
  double *a3 = malloc(sizeof(double) * (size_t)B * 1568);
  double a4[8 * 128], z[8 * 10];
  ref_conv(x, B, 1, 28, 28, T(P, 0), T(P, 1), 32, 1, a1);
  ref_silu(a1, (size_t)B * 32 * 784);
  ref_conv(a1, B, 32, 28, 28, T(P, 2), T(P, 3), 64, 2, a2);
  ref_silu(a2, (size_t)B * 64 * 196);
  ref_conv(a2, B, 64, 14, 14, T(P, 4), T(P, 5), 32, 2, a3);
  ref_silu(a3, (size_t)B * 1568);
  ref_linear(a3, B, 1568, T(P, 6), T(P, 7), 128, a4);
  ref_silu(a4, (size_t)B * 128);
  ref_linear(a4, B, 128, T(P, 8), T(P, 9), 10, z);
  double loss = 0.0;
  for (int n = 0; n < B; n++) {
    double mx = -INFINITY, sum = 0.0;
    for (int k = 0; k < 10; k++) mx = fmax(mx, z[n * 10 + k]);
    for (int k = 0; k < 10; k++) sum += exp(z[n * 10 + k] - mx);
    loss += mx + log(sum) - z[n * 10 + y[n]];
  }
  if (logits) memcpy(logits, z, sizeof(double) * (size_t)B * 10);
  if (features) memcpy(features, a4, sizeof(double) * (size_t)B * 128);
  free(a1);
  free(a2);
  free(a3);
  return loss / B;
}

static void test_gradients(void) {
  const double t0 = now();
  enum { B = 3, P = A3_FEATNET_NUM_PARAMS };
  a3_feature_net *net = NULL;
  CHECK_MSG(a3_feature_net_create(a3_backend_cpu(), 5, &net) == A3_OK, "%s", a3_error_message());
  if (!net) return;
  float *pf = malloc(sizeof(float) * P), *g = malloc(sizeof(float) * P);
  double *pd = malloc(sizeof(double) * P);
  float xf[B * 784], dx[B * 784];
  double xd[B * 784];
  const int32_t y[B] = {1, 4, 9};
  CHECK(a3_feature_net_get_params(net, pf) == A3_OK);
  for (int i = 0; i < P; i++) pd[i] = pf[i];
  for (int i = 0; i < B * 784; i++) {
    xf[i] = (float)((double)(a3_rng_u64(9, 7, (uint64_t)i) >> 40) / 8388608.0 - 1.0);
    xd[i] = xf[i];
  }
  double loss = 0.0;
  CHECK_MSG(a3_feature_net_loss_grad(net, xf, y, B, 1.0f / B, &loss, g, dx) == A3_OK, "%s",
            a3_error_message());
  double zref[B * 10], fref[B * 128];
  const double lref = ref_loss(pd, xd, y, B, zref, fref);
  CHECK_MSG(fabs(loss - lref) <= 1e-5 * lref, "loss %.9g vs the double reference %.9g", loss, lref);
  // The inference path (uint8 input) against the reference on the same pixels.
  uint8_t img[B * 784];
  for (int i = 0; i < B * 784; i++) img[i] = (uint8_t)(a3_rng_u64(9, 8, (uint64_t)i) & 255);
  float feat[B * 128], logit[B * 10];
  CHECK(a3_feature_net_forward(net, img, B, 28, 28, feat, logit) == A3_OK);
  for (int i = 0; i < B * 784; i++) xd[i] = img[i] / 127.5 - 1.0;
  ref_loss(pd, xd, y, B, zref, fref);
  double fe = 0, fs = 0, ze = 0, zs = 0;
  for (int i = 0; i < B * 128; i++) {
    fe = fmax(fe, fabs(feat[i] - fref[i]));
    fs = fmax(fs, fabs(fref[i]));
  }
  for (int i = 0; i < B * 10; i++) {
    ze = fmax(ze, fabs(logit[i] - zref[i]));
    zs = fmax(zs, fabs(zref[i]));
  }
  CHECK_MSG(fe <= 1e-5 * fs && ze <= 1e-5 * zs,
            "features (logits) differ from the double reference by %.3g of %.3g (%.3g of %.3g)", fe,
            fs, ze, zs);
  for (int i = 0; i < B * 784; i++) xd[i] = xf[i];

  // Central differences in double, h relative to the tensor's init scale.
  int worst_i = -1;
  double worst = 0.0;
  for (int t = 0; t < A3_FEATNET_NUM_TENSORS; t++) {
    const a3_featnet_tensor *ts = a3_featnet_tensor_at(t);
    double gmax = 0.0;
    for (int64_t j = 0; j < ts->numel; j++) gmax = fmax(gmax, fabs(g[ts->offset + j]));
    for (int k = 0; k < 4; k++) {
      // the element with the largest gradient, then three at random
      int64_t j = 0;
      if (k == 0) {
        for (int64_t e = 0; e < ts->numel; e++)
          if (fabs(g[ts->offset + e]) == gmax) {
            j = e;
            break;
          }
      } else {
        j = (int64_t)a3_rng_below(17, 7, (uint64_t)(t * 8 + k), (uint64_t)ts->numel);
      }
      const int64_t idx = ts->offset + j;
      const double h = 1e-5, keep = pd[idx];
      pd[idx] = keep + h;
      const double lp = ref_loss(pd, xd, y, B, NULL, NULL);
      pd[idx] = keep - h;
      const double lm = ref_loss(pd, xd, y, B, NULL, NULL);
      pd[idx] = keep;
      const double fd = (lp - lm) / (2 * h);
      const double err = fabs(g[idx] - fd) / (fabs(fd) + 1e-3 * gmax + 1e-12);
      CHECK_MSG(err < 2e-3, "%s[%lld]: analytic %.7g, finite difference %.7g", ts->name,
                (long long)j, g[idx], fd);
      if (err > worst) {
        worst = err;
        worst_i = t;
      }
    }
  }
  double dxmax = 0.0;
  for (int i = 0; i < B * 784; i++) dxmax = fmax(dxmax, fabs(dx[i]));
  for (int k = 0; k < 6; k++) {
    const int i = (int)a3_rng_below(19, 7, (uint64_t)k, B * 784);
    const double h = 1e-5, keep = xd[i];
    xd[i] = keep + h;
    const double lp = ref_loss(pd, xd, y, B, NULL, NULL);
    xd[i] = keep - h;
    const double lm = ref_loss(pd, xd, y, B, NULL, NULL);
    xd[i] = keep;
    const double fd = (lp - lm) / (2 * h);
    const double err = fabs(dx[i] - fd) / (fabs(fd) + 1e-3 * dxmax + 1e-12);
    CHECK_MSG(err < 2e-3, "dx[%d]: analytic %.7g, finite difference %.7g", i, dx[i], fd);
    worst = fmax(worst, err);
  }
  fprintf(stderr,
          "gradient check: loss %.6f (double %.6f), worst relative error %.2e (%s), %.2f s\n", loss,
          lref, worst, worst_i >= 0 ? a3_featnet_tensor_at(worst_i)->name : "-", now() - t0);
  free(pf);
  free(g);
  free(pd);
  a3_feature_net_free(net);
}

// ---------------------------------------------------------------- Fashion-MNIST
static char tmpdir[256], dataset_path[512];

// Rank 0 imports into a fresh temporary folder and tells the others where.
static a3_status import_shared(void) {
  int code = A3_OK;
  if (rank == 0) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/a3fta-featnet-XXXXXX");
    const char *dir = mkdtemp(tmpdir);
    snprintf(dataset_path, sizeof dataset_path, "%s/fmnist.h5", dir ? dir : "/tmp");
    const double t0 = now();
    code = dir ? a3_import_fashion_mnist(NULL, dataset_path, NULL) : A3_ERR_IO;
    if (code)
      fprintf(stderr, "import failed: %s\n", a3_error_message());
    else
      fprintf(stderr, "imported Fashion-MNIST in %.2f s\n", now() - t0);
  }
  MPI_Bcast(&code, 1, MPI_INT, 0, MPI_COMM_WORLD);
  MPI_Bcast(tmpdir, sizeof tmpdir, MPI_CHAR, 0, MPI_COMM_WORLD);
  MPI_Bcast(dataset_path, sizeof dataset_path, MPI_CHAR, 0, MPI_COMM_WORLD);
  MPI_Barrier(MPI_COMM_WORLD);
  return (a3_status)code;
}

static void remove_shared(void) {
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0 && tmpdir[0]) {
    unlink(dataset_path);
    char p[600];
    snprintf(p, sizeof p, "%s/net.h5", tmpdir);
    unlink(p);
    rmdir(tmpdir);
  }
}

// Images and labels of a split, optionally one class only and its first
// `first` images (0: all) (collective).
static int read_images(const char *split, int cls, int64_t first, uint8_t **images,
                       int32_t **labels, int64_t *n) {
  a3_dataset *ds = NULL;
  if (a3_dataset_open(MPI_COMM_WORLD, dataset_path, &ds) != A3_OK) {
    fprintf(stderr, "open: %s\n", a3_error_message());
    return -1;
  }
  const int classes[1] = {cls};
  const a3_subset_spec spec = {.split = split,
                               .classes = cls >= 0 ? classes : NULL,
                               .n_classes = cls >= 0,
                               .shots_per_class = first};
  int64_t *idx = NULL;
  int rc = a3_dataset_select(ds, &spec, &idx, n) == A3_OK ? 0 : -1;
  if (rc == 0) {
    *images = malloc((size_t)*n * 784);
    *labels = malloc(sizeof(int32_t) * (size_t)*n);
    rc = a3_dataset_read(ds, split, idx, *n, *images, *labels) == A3_OK ? 0 : -1;
  }
  if (rc) fprintf(stderr, "read %s: %s\n", split, a3_error_message());
  free(idx);
  a3_dataset_close(ds);
  return rc;
}

// ---------------------------------------------------------------- short training
enum { SHORT_STEPS = 20 };

static a3_feature_net *short_run(MPI_Comm comm, uint64_t seed, int steps, float *losses,
                                 double *seconds) {
  a3_feature_net_train_options opt = {
      .seed = seed, .max_steps = steps, .step_losses = losses, .step_losses_cap = steps};
  a3_feature_net *net = NULL;
  a3_feature_net_train_report rep;
  const a3_status s = a3_feature_net_train(comm, dataset_path, NULL, &opt, &net, &rep);
  CHECK_MSG(s == A3_OK, "train: %s", a3_error_message());
  if (s == A3_OK) {
    CHECK(rep.steps == steps && rep.test_accuracy == -1.0);
    *seconds = rep.seconds;
  }
  return net;
}

static int params_equal(const a3_feature_net *a, const a3_feature_net *b) {
  float *pa = malloc(sizeof(float) * A3_FEATNET_NUM_PARAMS);
  float *pb = malloc(sizeof(float) * A3_FEATNET_NUM_PARAMS);
  int eq = a3_feature_net_get_params(a, pa) == A3_OK && a3_feature_net_get_params(b, pb) == A3_OK &&
           memcmp(pa, pb, sizeof(float) * A3_FEATNET_NUM_PARAMS) == 0;
  free(pa);
  free(pb);
  return eq;
}

static double mean(const float *x, int n) {
  double s = 0;
  for (int i = 0; i < n; i++) s += x[i];
  return s / n;
}

static void test_short_training(void) {
  float l1[SHORT_STEPS], l2[SHORT_STEPS], l3[3];
  double s1 = 0, s2 = 0, s3 = 0;
  a3_feature_net *n1 = short_run(MPI_COMM_WORLD, 11, SHORT_STEPS, l1, &s1);
  a3_feature_net *n2 = short_run(MPI_COMM_WORLD, 11, SHORT_STEPS, l2, &s2);
  a3_feature_net *n3 = short_run(MPI_COMM_WORLD, 12, 3, l3, &s3); // another seed
  if (!n1 || !n2 || !n3) goto done;
  const double first = mean(l1, 5), last = mean(l1 + SHORT_STEPS - 5, 5);
  fprintf(stderr, "short training (%d steps, %.2f s): loss %.4f (first 5 steps) -> %.4f (last 5)\n",
          SHORT_STEPS, s1, first, last);
  CHECK_MSG(first > 1.8 && last < 0.75 * first, "loss %.4f -> %.4f", first, last);
  CHECK_MSG(params_equal(n1, n2) && memcmp(l1, l2, sizeof l1) == 0,
            "two runs with one seed differ");
  CHECK_MSG(memcmp(l1, l3, sizeof l3) != 0, "seeds 11 and 12 gave the same losses");

  // Save / load round trip (rank 0's file), and the record.
  char path[600];
  snprintf(path, sizeof path, "%s/net.h5", tmpdir);
  if (rank == 0) {
    const a3_feature_net_record rec = {11, 5, SHORT_STEPS, 1, 0.5, 3};
    CHECK_MSG(a3_feature_net_save(n1, path, &rec) == A3_OK, "%s", a3_error_message());
    a3_feature_net *back = NULL;
    CHECK_MSG(a3_feature_net_load(a3_backend_cpu(), path, &back) == A3_OK, "%s",
              a3_error_message());
    CHECK(back && params_equal(n1, back));
    a3_feature_net_free(back);
    a3_feature_net_record r;
    CHECK(a3_feature_net_read_record(path, &r) == A3_OK);
    CHECK(r.seed == 11 && r.epochs == 5 && r.steps == SHORT_STEPS && r.test_accuracy == 0.5);
    // Not a feature network: a dataset file, and a missing file.
    CHECK(a3_feature_net_load(a3_backend_cpu(), dataset_path, &back) == A3_ERR_INPUT &&
          strstr(a3_error_message(), "fmnist.h5"));
    CHECK(a3_feature_net_load(a3_backend_cpu(), "/nonexistent/net.h5", &back) != A3_OK);
    uint8_t img[2 * 30 * 30] = {0};
    float f[2 * A3_FEATNET_DIM];
    CHECK(a3_features_extract(n1, img, 2, 30, 30, f) == A3_ERR_INPUT &&
          strstr(a3_error_message(), "30x30"));
  }
done:
  a3_feature_net_free(n1);
  a3_feature_net_free(n2);
  a3_feature_net_free(n3);
}

// ---------------------------------------------------------------- the committed network
static void test_committed(const char *net_path) {
  double t0 = now();
  a3_feature_net *net = NULL;
  CHECK_MSG(a3_feature_net_load(a3_backend_cpu(), net_path, &net) == A3_OK, "%s",
            a3_error_message());
  if (!net) return;
  a3_feature_net_record rec;
  CHECK(a3_feature_net_read_record(net_path, &rec) == A3_OK);
  uint8_t *img = NULL, *tr9 = NULL, *tr0 = NULL;
  int32_t *lab = NULL, *ltr9 = NULL, *ltr0 = NULL;
  float *feat = NULL, *logits = NULL, *f9 = NULL, *ft9 = NULL, *ft0 = NULL;
  int64_t n = 0, ntr9 = 0, ntr0 = 0;
  // FID against the first 1000 training images of classes 9 and 0 (of 6000
  // each: the ratio is large, and the sanitizer build is slow).
  if (read_images("test", -1, 0, &img, &lab, &n) ||
      read_images("train", 9, 1000, &tr9, &ltr9, &ntr9) ||
      read_images("train", 0, 1000, &tr0, &ltr0, &ntr0)) {
    CHECK(0);
    goto done;
  }
  // The whole test split once: features for FID, logits for the accuracy.
  feat = malloc(sizeof(float) * (size_t)n * A3_FEATNET_DIM);
  logits = malloc(sizeof(float) * (size_t)n * A3_FEATNET_CLASSES);
  CHECK_MSG(a3_feature_net_forward(net, img, n, 28, 28, feat, logits) == A3_OK, "%s",
            a3_error_message());
  int64_t correct = 0, n9 = 0;
  for (int64_t i = 0; i < n; i++) {
    const float *z = logits + i * A3_FEATNET_CLASSES;
    int best = 0;
    for (int k = 1; k < A3_FEATNET_CLASSES; k++) best = z[k] > z[best] ? k : best;
    correct += best == lab[i];
    n9 += lab[i] == 9;
  }
  const double acc = (double)correct / (double)n;
  fprintf(stderr,
          "committed %s (seed %llu, %lld epochs, %lld steps on %lld rank(s), %.0f s; recorded "
          "accuracy %.4f): test accuracy %.4f on %lld images (%.2f s)\n",
          A3_FEATNET_NAME, (unsigned long long)rec.seed, (long long)rec.epochs,
          (long long)rec.steps, (long long)rec.ranks, rec.train_seconds, rec.test_accuracy, acc,
          (long long)n, now() - t0);
  CHECK_MSG(n == 10000 && acc >= 0.90, "test accuracy %.4f on %lld images", acc, (long long)n);
  // What the file records was measured with the same network and split.
  CHECK_MSG(fabs(acc - rec.test_accuracy) < 2e-3, "accuracy %.4f, recorded %.4f", acc,
            rec.test_accuracy);
  // a3_feature_net_accuracy on the first 500 agrees with the argmax count.
  {
    enum { M = 500 };
    int64_t c = 0;
    for (int64_t i = 0; i < M; i++) {
      const float *z = logits + i * A3_FEATNET_CLASSES;
      int best = 0;
      for (int k = 1; k < A3_FEATNET_CLASSES; k++) best = z[k] > z[best] ? k : best;
      c += best == lab[i];
    }
    double a500 = -1, l500 = -1;
    CHECK_MSG(a3_feature_net_accuracy(net, img, lab, M, 28, 28, &a500, &l500) == A3_OK, "%s",
              a3_error_message());
    CHECK_MSG(a500 == (double)c / M && l500 > 0 && l500 < 0.5, "accuracy %.4f (%lld / %d), loss %g",
              a500, (long long)c, (int)M, l500);
  }

  // 32x32 inputs (28x28 padded with black, as the diffusion samples) give the
  // 28x28 features exactly.
  {
    enum { M = 64 };
    uint8_t *pad = calloc(M * 32 * 32, 1);
    for (int i = 0; i < M; i++)
      for (int y = 0; y < 28; y++)
        memcpy(pad + (i * 32 + y + 2) * 32 + 2, img + (i * 28 + y) * 28, 28);
    float *fa = malloc(sizeof(float) * M * A3_FEATNET_DIM);
    float *fb = malloc(sizeof(float) * M * A3_FEATNET_DIM);
    CHECK(a3_features_extract(net, img, M, 28, 28, fa) == A3_OK);
    CHECK(a3_features_extract(net, pad, M, 32, 32, fb) == A3_OK);
    CHECK_MSG(memcmp(fa, fb, sizeof(float) * M * A3_FEATNET_DIM) == 0,
              "32x32 features differ from the 28x28 ones");
    // Batches of 256 and of 64 give the same features (the first 64 rows), up
    // to rounding (a backend may pick another kernel for another batch size).
    double diff = 0, scale = 0;
    for (int i = 0; i < M * A3_FEATNET_DIM; i++) {
      diff = fmax(diff, fabs(fa[i] - feat[i]));
      scale = fmax(scale, fabs(feat[i]));
    }
    CHECK_MSG(diff <= 1e-5 * scale, "features depend on the batch: %.3g of %.3g", diff, scale);
    free(pad);
    free(fa);
    free(fb);
  }

  // FID in feature space: same class (test vs train) far below different classes.
  t0 = now();
  f9 = malloc(sizeof(float) * (size_t)(n9 ? n9 : 1) * A3_FEATNET_DIM);
  ft9 = malloc(sizeof(float) * (size_t)ntr9 * A3_FEATNET_DIM);
  ft0 = malloc(sizeof(float) * (size_t)ntr0 * A3_FEATNET_DIM);
  for (int64_t i = 0, j = 0; i < n; i++)
    if (lab[i] == 9)
      memcpy(f9 + j++ * A3_FEATNET_DIM, feat + i * A3_FEATNET_DIM, sizeof(float) * A3_FEATNET_DIM);
  CHECK(a3_features_extract(net, tr9, ntr9, 28, 28, ft9) == A3_OK);
  CHECK(a3_features_extract(net, tr0, ntr0, 28, 28, ft0) == A3_OK);
  a3_fid_result same = {0}, other = {0};
  CHECK(a3_fid(f9, n9, ft9, ntr9, A3_FEATNET_DIM, &same) == A3_OK);
  CHECK(a3_fid(f9, n9, ft0, ntr0, A3_FEATNET_DIM, &other) == A3_OK);
  fprintf(stderr,
          "FID(test 9 [%lld], train 9 [%lld]) = %.4f, FID(test 9, train 0 [%lld]) = %.4f, "
          "ratio %.1f (%.2f s)\n",
          (long long)n9, (long long)ntr9, same.fid, (long long)ntr0, other.fid,
          other.fid / same.fid, now() - t0);
  CHECK_MSG(same.fid >= 0 && same.fid < other.fid / 5, "FID same class %.4f, other class %.4f",
            same.fid, other.fid);
done:
  free(img);
  free(tr9);
  free(tr0);
  free(lab);
  free(ltr9);
  free(ltr0);
  free(feat);
  free(logits);
  free(f9);
  free(ft9);
  free(ft0);
  a3_feature_net_free(net);
}

// ---------------------------------------------------------------- data parallel (2+ ranks)
static void test_data_parallel(void) {
  float single[SHORT_STEPS] = {0}, d1[SHORT_STEPS], d2[SHORT_STEPS];
  double sec = 0;
  if (rank == 0) { // the one-rank run, alone
    a3_feature_net *n = short_run(MPI_COMM_SELF, 11, SHORT_STEPS, single, &sec);
    a3_feature_net_free(n);
  }
  MPI_Bcast(single, SHORT_STEPS, MPI_FLOAT, 0, MPI_COMM_WORLD);
  a3_feature_net *a = short_run(MPI_COMM_WORLD, 11, SHORT_STEPS, d1, &sec);
  a3_feature_net *b = short_run(MPI_COMM_WORLD, 11, SHORT_STEPS, d2, &sec);
  if (a && b) {
    CHECK_MSG(params_equal(a, b) && memcmp(d1, d2, sizeof d1) == 0,
              "rank %d: two %d-rank runs differ", rank, nranks);
    double worst = 0;
    for (int i = 0; i < SHORT_STEPS; i++) worst = fmax(worst, fabs(d1[i] - single[i]) / single[i]);
    if (rank == 0)
      fprintf(stderr, "%d ranks vs 1: losses agree to %.2e relative over %d steps (%.2f s)\n",
              nranks, worst, SHORT_STEPS, sec);
    CHECK_MSG(worst < 1e-3, "%d-rank losses differ from one rank's by %.3g", nranks, worst);
    // Every rank holds the same network.
    float *p = malloc(sizeof(float) * A3_FEATNET_NUM_PARAMS);
    float *p0 = malloc(sizeof(float) * A3_FEATNET_NUM_PARAMS);
    CHECK(a3_feature_net_get_params(a, p) == A3_OK);
    memcpy(p0, p, sizeof(float) * A3_FEATNET_NUM_PARAMS);
    MPI_Bcast(p0, A3_FEATNET_NUM_PARAMS, MPI_FLOAT, 0, MPI_COMM_WORLD);
    CHECK_MSG(memcmp(p, p0, sizeof(float) * A3_FEATNET_NUM_PARAMS) == 0,
              "rank %d's network differs from rank 0's", rank);
    free(p);
    free(p0);
  }
  a3_feature_net_free(a);
  a3_feature_net_free(b);
}

// ---------------------------------------------------------------- --train
static int train_main(int argc, char **argv) {
  const char *out = NULL, *ds = NULL;
  unsigned long long seed = 1;
  int epochs = 0;
  long long max_steps = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--train"))
      out = argv[i + 1];
    else if (!strcmp(argv[i], "--seed"))
      seed = strtoull(argv[i + 1], NULL, 10);
    else if (!strcmp(argv[i], "--epochs"))
      epochs = atoi(argv[i + 1]);
    else if (!strcmp(argv[i], "--max-steps"))
      max_steps = atoll(argv[i + 1]);
    else if (!strcmp(argv[i], "--dataset"))
      ds = argv[i + 1];
    else {
      fprintf(stderr, "unknown option %s\n", argv[i]);
      return 2;
    }
  }
  if (!out) {
    fprintf(stderr,
            "usage: %s --train OUT.h5 [--seed S] [--epochs E] [--dataset FILE] [--max-steps N]\n",
            argv[0]);
    return 2;
  }
  if (ds)
    snprintf(dataset_path, sizeof dataset_path, "%s", ds);
  else if (import_shared() != A3_OK)
    return 1;
  a3_feature_net_train_options opt = {
      .seed = seed, .epochs = epochs, .max_steps = max_steps, .evaluate = 1, .log_every = 50};
  a3_feature_net_train_report rep;
  const a3_status s = a3_feature_net_train(MPI_COMM_WORLD, dataset_path, out, &opt, NULL, &rep);
  if (s != A3_OK)
    fprintf(stderr, "rank %d: %s\n", rank, a3_error_message());
  else if (rank == 0)
    printf("%s: %lld steps on %d rank(s) x %d thread(s) in %.1f s, final train loss %.4f, test "
           "accuracy %.4f (loss %.4f)\n",
           out, (long long)rep.steps, rep.ranks, a3_backend_cpu_threads(), rep.seconds,
           rep.final_loss, rep.test_accuracy, rep.test_loss);
  if (!ds) remove_shared();
  return s == A3_OK ? 0 : 1;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  a3_log_set_rank(rank, nranks);
  if (nranks > 1) a3_backend_cpu_set_threads(1); // the ranks share the machine's cores
  for (int i = 1; i < argc; i++)
    if (!strcmp(argv[i], "--train")) {
      const int rc = train_main(argc, argv);
      MPI_Finalize();
      return rc;
    }
  const double t0 = now();
  if (nranks == 1) {
    test_xent_op();
    test_gradients();
  }
  if (import_shared() == A3_OK) {
    if (nranks == 1) {
      test_short_training();
      if (argc > 1)
        test_committed(argv[1]);
      else
        CHECK_MSG(0, "usage: %s COMMITTED_NET.h5", argv[0]);
    } else {
      test_data_parallel();
    }
  } else {
    CHECK(0);
  }
  remove_shared();
  if (rank == 0) fprintf(stderr, "total %.1f s\n", now() - t0);
  int failed = test_failures, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  const int rc = TEST_DONE("test_feature_net");
  MPI_Finalize();
  return rc | (any != 0);
}
