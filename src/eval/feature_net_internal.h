// The feature network's internals shared by src/eval/feature_net*.c.
#ifndef A3FTA_EVAL_FEATURE_NET_INTERNAL_H
#define A3FTA_EVAL_FEATURE_NET_INTERNAL_H

#include "a3fta/features.h"

#include <stddef.h>
#include <stdint.h>

// Channels of the three convolutions and the flattened conv3 output.
enum { FN_C1 = 32, FN_C2 = 64, FN_C3 = 32, FN_FLAT = FN_C3 * 7 * 7 };

struct a3_feature_net {
  const a3_backend *be;
  float *params; // (A3_FEATNET_NUM_PARAMS) backend memory
};

// Activations of one batch (backend memory). Pre-activations a*, post-SiLU
// h* (training only: inference runs SiLU in place, so h* = a*). Activations
// are in the backend's storage type (be->act_bytes each); what crosses to
// fp32 (the input images, the logits for the softmax, the features and the
// input gradient handed back) goes through the fp32 buffers f32 and zf.
typedef struct {
  int B, train;
  a3_act *x;       // (B, 1, 28, 28)
  a3_act *a1, *h1; // (B, 32, 28, 28)
  a3_act *a2, *h2; // (B, 64, 14, 14)
  a3_act *a3, *h3; // (B, 32, 7, 7) = (B, 1568)
  a3_act *a4, *h4; // (B, 128): h4 = the features
  a3_act *logits;  // (B, 10)
  float *zf;       // (B, 10) fp32 logits, then (training) their gradient
  float *probs;    // (B, 10)
  float *f32;      // (B, 784) fp32 staging: images in, features or dx out
  a3_act *gA, *gB; // activation-gradient ping-pong, the largest activation each
  float *loss;     // (1)
  a3_act *dx_dev;  // (B, 1, 28, 28) input gradient
  float *grads;    // (A3_FEATNET_NUM_PARAMS) parameter gradients
  int32_t *labels; // (B)
  void *ws;        // conv workspace
  size_t ws_bytes;
} fn_bufs;

a3_status fn_bufs_alloc(const a3_backend *be, int B, int train, fn_bufs *b) A3_WARN_UNUSED;
void fn_bufs_free(const a3_backend *be, fn_bufs *b);
// Uploads n images of fp32 pixels (n, 1, 28, 28) from the host into b->x.
a3_status fn_upload_images(const a3_backend *be, fn_bufs *b, const float *host,
                           int n) A3_WARN_UNUSED;
// Downloads n rows of `dim` activations from `src` (backend memory) to the
// host as fp32, by way of b->f32 (dim <= 784).
a3_status fn_download_act(const a3_backend *be, fn_bufs *b, float *host, const a3_act *src, int n,
                          int dim) A3_WARN_UNUSED;
void fn_forward(const a3_feature_net *net, fn_bufs *b, int n);
void fn_loss_backward(const a3_feature_net *net, fn_bufs *b, int n, float scale, int want_dx);
void fn_scale_images(const uint8_t *images, int64_t n, int h, int w, float *x);
a3_status fn_check_size(int h, int w) A3_WARN_UNUSED;

#endif
