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
// h* (training only: inference runs SiLU in place, so h* = a*).
typedef struct {
  int B, train;
  float *x;              // (B, 1, 28, 28)
  float *a1, *h1;        // (B, 32, 28, 28)
  float *a2, *h2;        // (B, 64, 14, 14)
  float *a3, *h3;        // (B, 32, 7, 7) = (B, 1568)
  float *a4, *h4;        // (B, 128): h4 = the features
  float *logits, *probs; // (B, 10)
  float *gA, *gB;        // activation-gradient ping-pong, the largest activation each
  float *loss;           // (1)
  float *dx_dev;         // (B, 1, 28, 28) input gradient
  float *grads;          // (A3_FEATNET_NUM_PARAMS) parameter gradients
  int32_t *labels;       // (B)
  void *ws;              // conv workspace
  size_t ws_bytes;
} fn_bufs;

a3_status fn_bufs_alloc(const a3_backend *be, int B, int train, fn_bufs *b) A3_WARN_UNUSED;
void fn_bufs_free(const a3_backend *be, fn_bufs *b);
void fn_forward(const a3_feature_net *net, fn_bufs *b, int n);
void fn_loss_backward(const a3_feature_net *net, fn_bufs *b, int n, float scale, int want_dx);
void fn_scale_images(const uint8_t *images, int64_t n, int h, int w, float *x);
a3_status fn_check_size(int h, int w) A3_WARN_UNUSED;

#endif
