// Line charts as PNG (a3fta/plot.h): an RGB canvas, integer blending,
// Bresenham lines, a built-in bitmap font, libpng to write it.
#include "a3fta/plot.h"

#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { W = A3_PLOT_WIDTH, H = A3_PLOT_HEIGHT, L = A3_PLOT_LEFT, R = A3_PLOT_RIGHT };
enum { T = A3_PLOT_TOP, B = A3_PLOT_BOTTOM, MAX_TICKS = 40 };

// ---------------------------------------------------------------- the font
// 5 columns (bit 4 = the leftmost) x 9 rows: rows 0-6 above the baseline,
// 7-8 the descenders. Advance 6 pixels per character (times the scale).
typedef struct {
  char c;
  uint8_t rows[9];
} glyph;

static const glyph font[] = {
    {' ', {0}},
    {'.', {0, 0, 0, 0, 0, 0x0C, 0x0C}},
    {',', {0, 0, 0, 0, 0, 0x0C, 0x0C, 0x04, 0x08}},
    {':', {0, 0x0C, 0x0C, 0, 0x0C, 0x0C}},
    {';', {0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0x04, 0x08}},
    {'-', {0, 0, 0, 0x0E}},
    {'+', {0, 0x04, 0x04, 0x1F, 0x04, 0x04}},
    {'=', {0, 0, 0x1F, 0, 0x1F}},
    {'_', {0, 0, 0, 0, 0, 0, 0, 0x1F}},
    {'/', {0x01, 0x01, 0x02, 0x04, 0x08, 0x10, 0x10}},
    {'(', {0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02}},
    {')', {0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08}},
    {'[', {0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E}},
    {']', {0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E}},
    {'%', {0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03}},
    {'<', {0x02, 0x04, 0x08, 0x10, 0x08, 0x04, 0x02}},
    {'>', {0x08, 0x04, 0x02, 0x01, 0x02, 0x04, 0x08}},
    {'#', {0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A}},
    {'\'', {0x04, 0x04, 0x08}},
    {'*', {0, 0x04, 0x15, 0x0E, 0x15, 0x04}},
    {'?', {0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04}},
    {'0', {0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E}},
    {'1', {0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'2', {0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F}},
    {'3', {0x0E, 0x11, 0x01, 0x06, 0x01, 0x11, 0x0E}},
    {'4', {0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02}},
    {'5', {0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E}},
    {'6', {0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E}},
    {'7', {0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08}},
    {'8', {0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E}},
    {'9', {0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C}},
    {'a', {0, 0, 0x0E, 0x01, 0x0F, 0x11, 0x0F}},
    {'b', {0x10, 0x10, 0x1E, 0x11, 0x11, 0x11, 0x1E}},
    {'c', {0, 0, 0x0E, 0x10, 0x10, 0x11, 0x0E}},
    {'d', {0x01, 0x01, 0x0F, 0x11, 0x11, 0x11, 0x0F}},
    {'e', {0, 0, 0x0E, 0x11, 0x1F, 0x10, 0x0E}},
    {'f', {0x06, 0x09, 0x08, 0x1C, 0x08, 0x08, 0x08}},
    {'g', {0, 0, 0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E}},
    {'h', {0x10, 0x10, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'i', {0x04, 0, 0x0C, 0x04, 0x04, 0x04, 0x0E}},
    {'j', {0x02, 0, 0x06, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C}},
    {'k', {0x10, 0x10, 0x12, 0x14, 0x18, 0x14, 0x12}},
    {'l', {0x0C, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'m', {0, 0, 0x1A, 0x15, 0x15, 0x15, 0x15}},
    {'n', {0, 0, 0x16, 0x19, 0x11, 0x11, 0x11}},
    {'o', {0, 0, 0x0E, 0x11, 0x11, 0x11, 0x0E}},
    {'p', {0, 0, 0x1E, 0x11, 0x11, 0x11, 0x1E, 0x10, 0x10}},
    {'q', {0, 0, 0x0F, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x01}},
    {'r', {0, 0, 0x16, 0x19, 0x10, 0x10, 0x10}},
    {'s', {0, 0, 0x0F, 0x10, 0x0E, 0x01, 0x1E}},
    {'t', {0x08, 0x08, 0x1C, 0x08, 0x08, 0x09, 0x06}},
    {'u', {0, 0, 0x11, 0x11, 0x11, 0x13, 0x0D}},
    {'v', {0, 0, 0x11, 0x11, 0x11, 0x0A, 0x04}},
    {'w', {0, 0, 0x11, 0x11, 0x15, 0x15, 0x0A}},
    {'x', {0, 0, 0x11, 0x0A, 0x04, 0x0A, 0x11}},
    {'y', {0, 0, 0x11, 0x11, 0x11, 0x11, 0x0F, 0x01, 0x0E}},
    {'z', {0, 0, 0x1F, 0x02, 0x04, 0x08, 0x1F}},
};

static const glyph *find_glyph(char c) {
  if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
  const int n = (int)(sizeof font / sizeof font[0]);
  for (int i = 0; i < n; i++)
    if (font[i].c == c) return &font[i];
  return find_glyph('?');
}

// ---------------------------------------------------------------- the canvas
typedef struct {
  uint8_t *px; // (H, W, 3)
} canvas;

static const uint8_t BLACK[3] = {0, 0, 0}, GRID[3] = {225, 225, 225}, TEXT[3] = {40, 40, 40};

static void put(canvas *c, int x, int y, const uint8_t rgb[3]) {
  if (x < 0 || x >= W || y < 0 || y >= H) return;
  memcpy(c->px + ((size_t)y * W + (size_t)x) * 3, rgb, 3);
}

static void fill_rect(canvas *c, int x0, int y0, int x1, int y1, const uint8_t rgb[3]) {
  for (int y = y0; y <= y1; y++)
    for (int x = x0; x <= x1; x++) put(c, x, y, rgb);
}

static int text_width(const char *s, int scale) {
  const int n = (int)strlen(s);
  return n ? (6 * n - 1) * scale : 0;
}

// Text with its top-left corner at (x, y).
static void draw_text(canvas *c, int x, int y, const char *s, int scale, const uint8_t rgb[3]) {
  for (; *s; s++, x += 6 * scale) {
    const glyph *g = find_glyph(*s);
    for (int row = 0; row < 9; row++)
      for (int col = 0; col < 5; col++)
        if (g->rows[row] & (0x10 >> col))
          fill_rect(c, x + col * scale, y + row * scale, x + col * scale + scale - 1,
                    y + row * scale + scale - 1, rgb);
  }
}

// Bresenham from (x0, y0) to (x1, y1) into a mask (W x H), clipped to the plot area.
static void mask_line(uint8_t *mask, int x0, int y0, int x1, int y1, int width) {
  const int dx = abs(x1 - x0), sx = x0 < x1 ? 1 : -1;
  const int dy = -abs(y1 - y0), sy = y0 < y1 ? 1 : -1;
  int err = dx + dy;
  for (;;) {
    for (int oy = 0; oy < width; oy++)
      for (int ox = 0; ox < width; ox++) {
        const int x = x0 + ox, y = y0 + oy;
        if (x >= L && x <= R && y >= T && y <= B) mask[(size_t)y * W + (size_t)x] = 1;
      }
    if (x0 == x1 && y0 == y1) break;
    const int e2 = 2 * err;
    if (e2 >= dy) {
      err += dy;
      x0 += sx;
    }
    if (e2 <= dx) {
      err += dx;
      y0 += sy;
    }
  }
}

// Paints the mask's pixels with rgb at opacity alpha (0..256), then clears it.
static void composite(canvas *c, uint8_t *mask, const uint8_t rgb[3], int alpha) {
  for (size_t i = 0; i < (size_t)W * H; i++) {
    if (!mask[i]) continue;
    mask[i] = 0;
    uint8_t *p = c->px + i * 3;
    for (int k = 0; k < 3; k++)
      p[k] = (uint8_t)((rgb[k] * alpha + p[k] * (256 - alpha) + 128) >> 8);
  }
}

// ---------------------------------------------------------------- axes
typedef struct {
  double lo, hi; // in axis units (log10 of the value on a log axis)
  bool log;
} axis;

static bool usable(double y, bool log) { return isfinite(y) && (!log || y > 0); }
static double to_axis(double v, bool log) { return log ? log10(v) : v; }

static int col_of(const axis *a, double x) {
  return L + (int)lround((to_axis(x, a->log) - a->lo) / (a->hi - a->lo) * (R - L));
}
static int row_of(const axis *a, double y) {
  return B - (int)lround((to_axis(y, a->log) - a->lo) / (a->hi - a->lo) * (B - T));
}

static void data_range(const a3_plot_series *s, int n_series, bool y, bool log, double *lo,
                       double *hi) {
  *lo = INFINITY;
  *hi = -INFINITY;
  for (int k = 0; k < n_series; k++)
    for (int64_t i = 0; i < s[k].n; i++) {
      if (!s[k].x || !s[k].y || !isfinite(s[k].x[i]) || !usable(s[k].y[i], log)) continue;
      const double v = y ? to_axis(s[k].y[i], log) : s[k].x[i];
      *lo = v < *lo ? v : *lo;
      *hi = v > *hi ? v : *hi;
    }
}

static axis x_axis(const a3_plot_series *s, int n) {
  axis a = {0.0, 1.0, false};
  double lo, hi;
  data_range(s, n, false, false, &lo, &hi);
  if (lo > hi) return a;
  a.lo = lo;
  a.hi = hi;
  if (lo == hi) {
    a.lo -= 0.5;
    a.hi += 0.5;
  }
  return a;
}

static axis y_axis(const a3_plot_series *s, int n, bool log) {
  axis a = {0.0, 1.0, log};
  double lo, hi;
  data_range(s, n, true, log, &lo, &hi);
  if (lo > hi) return a;
  const double pad = hi > lo ? A3_PLOT_Y_PAD * (hi - lo) : 0.5;
  a.lo = lo - pad;
  a.hi = hi + pad;
  return a;
}

// The multiple of 1, 2 or 5 x 10^k nearest above span / target.
static double nice_step(double span, int target) {
  const double raw = span / target, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
  return (f <= 1.0 ? 1.0 : f <= 2.0 ? 2.0 : f <= 5.0 ? 5.0 : 10.0) * mag;
}

// Tick values (not axis units) inside [lo, hi] of a linear axis; their decimals.
static int linear_ticks(double lo, double hi, int target, double *ticks, int *decimals) {
  const double step = nice_step(hi - lo, target);
  *decimals = step >= 1.0 ? 0 : (int)ceil(-log10(step) - 1e-9);
  int n = 0;
  for (double k = ceil(lo / step - 1e-9); n < MAX_TICKS && k * step <= hi + 1e-9 * step; k++)
    ticks[n++] = k * step;
  return n;
}

// 1, 2, 5 (or 1..9, or 1) x 10^d inside the range of a log axis.
static int log_ticks(const axis *a, double *ticks) {
  const double span = a->hi - a->lo;
  static const double every[] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, some[] = {1, 2, 5}, one[] = {1};
  const double *m = span > 4 ? one : span > 1.2 ? some : every;
  const int n_m = span > 4 ? 1 : span > 1.2 ? 3 : 9;
  int n = 0;
  for (int d = (int)floor(a->lo); d <= (int)ceil(a->hi) && n < MAX_TICKS; d++)
    for (int j = 0; j < n_m && n < MAX_TICKS; j++) {
      const double v = m[j] * pow(10.0, d), e = log10(v);
      if (e >= a->lo && e <= a->hi) ticks[n++] = v;
    }
  return n;
}

// "%g" with 3 significant digits, exponents without '+' and leading zeros.
static void format_g(double v, char *buf, size_t cap) {
  char tmp[48];
  snprintf(tmp, sizeof tmp, "%.3g", v);
  char *e = strchr(tmp, 'e');
  if (!e) {
    snprintf(buf, cap, "%s", tmp);
    return;
  }
  char *p = e + 1, sign = 0;
  if (*p == '+' || *p == '-') sign = *p++;
  while (*p == '0' && p[1]) p++;
  snprintf(buf, cap, "%.*se%s%s", (int)(e - tmp), tmp, sign == '-' ? "-" : "", p);
}

static void draw_y_ticks(canvas *c, const axis *a) {
  double ticks[MAX_TICKS];
  int decimals = 0, n = a->log ? log_ticks(a, ticks) : 0;
  bool linear = !a->log || n < 2;
  if (linear) {
    const double lo = a->log ? pow(10.0, a->lo) : a->lo, hi = a->log ? pow(10.0, a->hi) : a->hi;
    n = linear_ticks(lo, hi, 6, ticks, &decimals);
  }
  for (int i = 0; i < n; i++) {
    const int y = row_of(a, ticks[i]);
    if (y < T || y > B) continue;
    for (int x = L + 1; x < R; x++) put(c, x, y, GRID);
    fill_rect(c, L - 4, y, L - 1, y, BLACK);
    char label[48];
    if (linear && !a->log && fabs(ticks[i]) < 1e6 && decimals <= 6)
      snprintf(label, sizeof label, "%.*f", decimals, fabs(ticks[i]) < 1e-12 ? 0.0 : ticks[i]);
    else
      format_g(ticks[i], label, sizeof label);
    draw_text(c, L - 8 - text_width(label, 1), y - 3, label, 1, TEXT);
  }
}

static void draw_x_ticks(canvas *c, const axis *a) {
  double ticks[MAX_TICKS];
  int decimals = 0;
  const int n = linear_ticks(a->lo, a->hi, 8, ticks, &decimals);
  for (int i = 0; i < n; i++) {
    const int x = col_of(a, ticks[i]);
    if (x < L || x > R) continue;
    for (int y = T + 1; y < B; y++) put(c, x, y, GRID);
    fill_rect(c, x, B + 1, x, B + 4, BLACK);
    char label[48];
    if (fabs(ticks[i]) < 1e9 && decimals <= 6)
      snprintf(label, sizeof label, "%.*f", decimals, fabs(ticks[i]) < 1e-12 ? 0.0 : ticks[i]);
    else
      format_g(ticks[i], label, sizeof label);
    draw_text(c, x - text_width(label, 1) / 2, B + 8, label, 1, TEXT);
  }
  draw_text(c, (L + R) / 2 - text_width("step", 2) / 2, B + 24, "step", 2, TEXT);
}

// ---------------------------------------------------------------- series

// The trailing moving average over the last `smooth` usable points (fewer at
// the start), summed afresh at each point: NaN where y is not usable.
static a3_status moving_average(const a3_plot_series *s, bool log, double **out) {
  A3_TRY(a3_alloc((void **)out, (size_t)s->n + 1, sizeof **out));
  double *avg = *out;
  int64_t *ring = NULL; // indices of the usable points in the window
  a3_status st = a3_alloc((void **)&ring, (size_t)s->smooth, sizeof *ring);
  if (st != A3_OK) {
    free(avg);
    *out = NULL;
    A3_TRY(st);
  }
  int64_t count = 0;
  for (int64_t i = 0; i < s->n; i++) {
    avg[i] = NAN;
    if (!isfinite(s->x[i]) || !usable(s->y[i], log)) continue;
    ring[count % s->smooth] = i;
    count++;
    const int64_t k = count < s->smooth ? count : s->smooth;
    double sum = 0.0;
    for (int64_t j = count - k; j < count; j++) sum += s->y[ring[j % s->smooth]];
    avg[i] = sum / (double)k;
  }
  free(ring);
  return A3_OK;
}

// The polyline through the usable points of y (isolated points as dots).
static void mask_polyline(uint8_t *mask, const axis *ax, const axis *ay, const double *x,
                          const double *y, int64_t n, int width) {
  bool have = false;
  int px = 0, py = 0;
  for (int64_t i = 0; i < n; i++) {
    if (!isfinite(x[i]) || !usable(y[i], ay->log)) {
      have = false;
      continue;
    }
    const int cx = col_of(ax, x[i]), cy = row_of(ay, y[i]);
    const bool isolated =
        !have && (i + 1 >= n || !isfinite(x[i + 1]) || !usable(y[i + 1], ay->log));
    if (isolated)
      mask_line(mask, cx - 1, cy - 1, cx + 1, cy + 1, 2); // a small dot
    else if (have)
      mask_line(mask, px, py, cx, cy, width);
    px = cx;
    py = cy;
    have = true;
  }
}

static void mask_markers(uint8_t *mask, const axis *ax, const axis *ay, const a3_plot_series *s) {
  for (int64_t i = 0; i < s->n; i++) {
    if (!isfinite(s->x[i]) || !usable(s->y[i], ay->log)) continue;
    const int cx = col_of(ax, s->x[i]), cy = row_of(ay, s->y[i]);
    for (int dy = -2; dy <= 2; dy++) mask_line(mask, cx - 2, cy + dy, cx + 2, cy + dy, 1);
  }
}

static a3_status draw_series(canvas *c, uint8_t *mask, const axis *ax, const axis *ay,
                             const a3_plot_series *s) {
  if (!s->x || !s->y || s->n <= 0) return A3_OK;
  const double alpha = s->alpha < 0 ? 0 : s->alpha > 1 ? 1 : s->alpha;
  if (alpha > 0) {
    mask_polyline(mask, ax, ay, s->x, s->y, s->n, 1);
    composite(c, mask, s->rgb, (int)lround(alpha * 256));
  }
  if (s->smooth > 1) {
    double *avg = NULL;
    A3_TRY(moving_average(s, ay->log, &avg));
    mask_polyline(mask, ax, ay, s->x, avg, s->n, 2);
    free(avg);
    composite(c, mask, s->rgb, 256);
  }
  if (s->markers) {
    mask_markers(mask, ax, ay, s);
    composite(c, mask, s->rgb, 256);
  }
  return A3_OK;
}

// ---------------------------------------------------------------- legend
typedef struct {
  char text[128];
  uint8_t rgb[3];
  int alpha, width; // of the sample line
  bool marker;
} legend_entry;

static int legend_entries(const a3_plot_series *s, int n_series, legend_entry *e, int cap) {
  int n = 0;
  for (int k = 0; k < n_series && n + 2 <= cap; k++) {
    if (!s[k].label || !s[k].label[0]) continue;
    const double alpha = s[k].alpha < 0 ? 0 : s[k].alpha > 1 ? 1 : s[k].alpha;
    if (alpha > 0 || s[k].smooth <= 1) {
      legend_entry *x = &e[n++];
      snprintf(x->text, sizeof x->text, "%s", s[k].label);
      memcpy(x->rgb, s[k].rgb, 3);
      x->alpha = alpha > 0 ? (int)lround(alpha * 256) : 256;
      x->width = 1;
      x->marker = s[k].markers;
    }
    if (s[k].smooth > 1) {
      legend_entry *x = &e[n++];
      snprintf(x->text, sizeof x->text, "%.90s, mean of %lld", s[k].label, (long long)s[k].smooth);
      memcpy(x->rgb, s[k].rgb, 3);
      x->alpha = 256;
      x->width = 2;
      x->marker = false;
    }
  }
  return n;
}

static void draw_legend(canvas *c, uint8_t *mask, const a3_plot_series *s, int n_series) {
  legend_entry e[16];
  const int n = legend_entries(s, n_series, e, 16);
  if (!n) return;
  int text_w = 0;
  for (int i = 0; i < n; i++) {
    const int w = text_width(e[i].text, 1);
    text_w = w > text_w ? w : text_w;
  }
  const int line = 14, box_w = 8 + 24 + 6 + text_w + 8, box_h = 6 + n * line + 2;
  const int x0 = R - 10 - box_w, y0 = T + 10;
  fill_rect(c, x0, y0, x0 + box_w, y0 + box_h, (const uint8_t[3]){255, 255, 255});
  fill_rect(c, x0, y0, x0 + box_w, y0, GRID);
  fill_rect(c, x0, y0 + box_h, x0 + box_w, y0 + box_h, GRID);
  fill_rect(c, x0, y0, x0, y0 + box_h, GRID);
  fill_rect(c, x0 + box_w, y0, x0 + box_w, y0 + box_h, GRID);
  for (int i = 0; i < n; i++) {
    const int ym = y0 + 6 + i * line + 4;
    mask_line(mask, x0 + 8, ym, x0 + 8 + 24, ym, e[i].width);
    if (e[i].marker)
      for (int dy = -2; dy <= 2; dy++) mask_line(mask, x0 + 18, ym + dy, x0 + 22, ym + dy, 1);
    composite(c, mask, e[i].rgb, e[i].alpha);
    draw_text(c, x0 + 8 + 24 + 6, ym - 3, e[i].text, 1, TEXT);
  }
}

// ---------------------------------------------------------------- PNG

static a3_status png_encode(FILE *f, const char *path, const uint8_t *px, int width, int height,
                            int channels) {
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
  png_infop info = png ? png_create_info_struct(png) : NULL;
  if (!info) {
    png_destroy_write_struct(&png, NULL);
    return A3_FAIL(A3_ERR_NOMEM, "%s: cannot set up libpng", path);
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    return A3_FAIL(A3_ERR_IO, "%s: libpng failed to write the image (disk full?)", path);
  }
  png_init_io(png, f);
  png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8,
               channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int y = 0; y < height; y++)
    png_write_row(png, (png_const_bytep)(px + (size_t)y * width * channels));
  png_write_end(png, NULL);
  png_destroy_write_struct(&png, &info);
  return A3_OK;
}

a3_status a3_write_png(const char *path, const uint8_t *px, int width, int height, int channels) {
  if (channels != 1 && channels != 3)
    return A3_FAIL(A3_ERR_USAGE, "%s: a PNG needs 1 or 3 channels, not %d", path, channels);
  char tmp[4200];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
    return A3_FAIL(A3_ERR_USAGE, "png: the path %.80s... is too long", path);
  FILE *f = fopen(tmp, "wb");
  if (!f) return A3_FAIL(A3_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
  a3_status s = png_encode(f, tmp, px, width, height, channels);
  if (fclose(f) != 0 && s == A3_OK) s = A3_FAIL(A3_ERR_IO, "cannot write %s (disk full?)", tmp);
  if (s == A3_OK) s = a3_publish_file(tmp, path);
  if (s != A3_OK) remove(tmp);
  A3_TRY(s);
  return A3_OK;
}

static a3_status render(canvas *c, uint8_t *mask, const char *title, const a3_plot_series *series,
                        int n_series, bool log_y) {
  memset(c->px, 255, (size_t)W * H * 3);
  const axis ax = x_axis(series, n_series), ay = y_axis(series, n_series, log_y);
  draw_y_ticks(c, &ay);
  draw_x_ticks(c, &ax);
  if (title && *title) draw_text(c, W / 2 - text_width(title, 2) / 2, 12, title, 2, TEXT);
  for (int k = 0; k < n_series; k++) A3_TRY(draw_series(c, mask, &ax, &ay, &series[k]));
  // The frame last, over the curves' ends.
  fill_rect(c, L, T, R, T, BLACK);
  fill_rect(c, L, B, R, B, BLACK);
  fill_rect(c, L, T, L, B, BLACK);
  fill_rect(c, R, T, R, B, BLACK);
  draw_legend(c, mask, series, n_series);
  return A3_OK;
}

a3_status a3_plot_png(const char *path, const char *title, const a3_plot_series *series,
                      int n_series, bool log_y) {
  if (n_series < 0 || (n_series > 0 && !series))
    return A3_FAIL(A3_ERR_USAGE, "plot %s: bad series list", path);
  canvas c = {NULL};
  uint8_t *mask = NULL;
  A3_TRY(a3_alloc((void **)&c.px, (size_t)W * H * 3, 1));
  a3_status s = a3_alloc((void **)&mask, (size_t)W * H, 1);
  if (s == A3_OK) s = render(&c, mask, title, series, n_series, log_y);
  if (s == A3_OK) s = a3_write_png(path, c.px, W, H, 3);
  free(mask);
  free(c.px);
  A3_TRY(s);
  return A3_OK;
}
