// Padding and separable resampling of planar uint8 images.
#include "io/image_fit.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// Resampling weights of one axis: output o reads `taps` inputs from first[o].
typedef struct {
  int taps;      // per output (unused weights are 0)
  int *first;    // (out)
  float *weight; // (out, taps)
} axis_weights;

static void axis_free(axis_weights *ax) {
  free(ax->first);
  free(ax->weight);
}

// Output o covers input [o*scale, (o+1)*scale): each input pixel weighs by
// how much of it lies inside, normalised by the span.
static void area_weights(int in, int out, axis_weights *ax) {
  const double scale = (double)in / out;
  for (int o = 0; o < out; o++) {
    const double lo = o * scale, hi = (o + 1) * scale;
    const int first = (int)floor(lo);
    ax->first[o] = first;
    for (int t = 0; t < ax->taps && first + t < in; t++) {
      const double a = fmax(lo, first + t), b = fmin(hi, first + t + 1);
      ax->weight[(size_t)o * ax->taps + t] = b > a ? (float)((b - a) / scale) : 0.0f;
    }
  }
}

// Output o samples input position (o + 0.5) * scale - 0.5, clamped to the image.
static void bilinear_weights(int in, int out, axis_weights *ax) {
  const double scale = (double)in / out;
  for (int o = 0; o < out; o++) {
    const double x = fmin(fmax((o + 0.5) * scale - 0.5, 0.0), in - 1);
    const int i0 = (int)floor(x);
    const float f = (float)(x - i0);
    ax->first[o] = i0;
    ax->weight[(size_t)o * 2] = 1.0f - f;
    ax->weight[(size_t)o * 2 + 1] = i0 + 1 < in ? f : 0.0f;
  }
}

static a3_status axis_init(int in, int out, axis_weights *ax) {
  memset(ax, 0, sizeof *ax);
  const int shrink = in > out;
  ax->taps = shrink ? (int)ceil((double)in / out) + 1 : 2;
  A3_TRY(A3_ALLOC(ax->first, (size_t)out));
  A3_TRY(A3_ALLOC(ax->weight, (size_t)out * (size_t)ax->taps));
  if (shrink)
    area_weights(in, out, ax);
  else
    bilinear_weights(in, out, ax);
  return A3_OK;
}

static float apply(const axis_weights *ax, int o, const float *src, size_t stride) {
  const float *w = ax->weight + (size_t)o * ax->taps;
  float acc = 0.0f;
  for (int t = 0; t < ax->taps; t++)
    if (w[t] != 0.0f) acc += w[t] * src[(size_t)(ax->first[o] + t) * stride];
  return acc;
}

// (C, h, w) -> (C, H, W): rows first into tmp (C, h, W), then columns.
static void resample(const a3_image *in, const axis_weights *ax_x, const axis_weights *ax_y,
                     int height, int width, float *src, float *tmp, uint8_t *out) {
  const int c_n = in->channels, h = in->height, w = in->width;
  for (size_t i = 0; i < (size_t)c_n * h * w; i++) src[i] = in->pixels[i];
  for (int c = 0; c < c_n; c++)
    for (int y = 0; y < h; y++)
      for (int x = 0; x < width; x++)
        tmp[((size_t)c * h + y) * width + x] = apply(ax_x, x, src + ((size_t)c * h + y) * w, 1);
  for (int c = 0; c < c_n; c++)
    for (int y = 0; y < height; y++)
      for (int x = 0; x < width; x++) {
        const float v = apply(ax_y, y, tmp + (size_t)c * h * width + x, (size_t)width);
        out[((size_t)c * height + y) * width + x] = (uint8_t)fminf(fmaxf(v + 0.5f, 0.0f), 255.0f);
      }
}

static a3_status resize(const a3_image *in, int height, int width, uint8_t *out) {
  axis_weights ax_x, ax_y;
  float *src = NULL, *tmp = NULL;
  a3_status s = axis_init(in->width, width, &ax_x);
  if (s == A3_OK) s = axis_init(in->height, height, &ax_y);
  if (s == A3_OK) s = A3_ALLOC(src, (size_t)in->channels * in->height * in->width);
  if (s == A3_OK) s = A3_ALLOC(tmp, (size_t)in->channels * in->height * width);
  if (s == A3_OK) resample(in, &ax_x, &ax_y, height, width, src, tmp, out);
  free(src);
  free(tmp);
  axis_free(&ax_x);
  axis_free(&ax_y);
  return s;
}

static a3_status pad(const a3_image *in, int height, int width, const char *path, uint8_t *out) {
  if (in->height > height || in->width > width)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: the image is %dx%d (HxW), larger than the target %dx%d; --fit pad never "
                   "crops: use --fit resize, or a larger --size",
                   path, in->height, in->width, height, width);
  const int top = (height - in->height) / 2, left = (width - in->width) / 2;
  memset(out, 0, (size_t)in->channels * height * width);
  for (int c = 0; c < in->channels; c++)
    for (int y = 0; y < in->height; y++)
      memcpy(out + ((size_t)c * height + top + y) * width + left,
             in->pixels + ((size_t)c * in->height + y) * in->width, (size_t)in->width);
  return A3_OK;
}

a3_status a3_image_fit(const a3_image *in, int height, int width, a3_fit fit, const char *path,
                       uint8_t *out) {
  switch (fit) {
  case A3_FIT_PAD: A3_TRY(pad(in, height, width, path, out)); return A3_OK;
  case A3_FIT_RESIZE: A3_TRY(resize(in, height, width, out)); return A3_OK;
  case A3_FIT_NONE: break;
  }
  if (in->height != height || in->width != width)
    return A3_FAIL(A3_ERR_INTERNAL, "%s: image is %dx%d, expected %dx%d", path, in->height,
                   in->width, height, width);
  memcpy(out, in->pixels, (size_t)in->channels * height * width);
  return A3_OK;
}
