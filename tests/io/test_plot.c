// Line charts (a3fta/plot.h): the PNG read back with libpng has the
// documented size, a constant series is one horizontal row where the axis
// mapping puts it (linear and log), a line crosses where it should, the
// moving average of an alternating series is flat, the output is byte for
// byte the same twice, and degenerate inputs (no series, empty, one point,
// all NaN, non-positive values on a log axis) still give a picture.
#include "a3fta/plot.h"
#include "io/io_test_util.h"
#include "test_util.h"

#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { N = 101 };

static char *dir;

typedef struct {
  int width, height;
  uint8_t *px; // RGB
} picture;

static int read_png(const char *path, picture *p) {
  png_image img;
  memset(&img, 0, sizeof img);
  img.version = PNG_IMAGE_VERSION;
  memset(p, 0, sizeof *p);
  if (!png_image_begin_read_from_file(&img, path)) return 1;
  img.format = PNG_FORMAT_RGB;
  p->width = (int)img.width;
  p->height = (int)img.height;
  p->px = malloc(PNG_IMAGE_SIZE(img));
  if (!p->px || !png_image_finish_read(&img, NULL, p->px, 0, NULL)) {
    png_image_free(&img);
    free(p->px);
    p->px = NULL;
    return 1;
  }
  return 0;
}

static int is(const picture *p, int x, int y, const uint8_t rgb[3]) {
  return !memcmp(p->px + ((size_t)y * p->width + x) * 3, rgb, 3);
}

static const uint8_t RED[3] = {220, 20, 20}, BLUE[3] = {20, 20, 220}, GREEN[3] = {20, 160, 20};

// The documented mapping of a value to its row / column.
static int row_of(double y, double lo, double hi) {
  return A3_PLOT_BOTTOM - (int)lround((y - lo) / (hi - lo) * (A3_PLOT_BOTTOM - A3_PLOT_TOP));
}
static int col_of(double x, double lo, double hi) {
  return A3_PLOT_LEFT + (int)lround((x - lo) / (hi - lo) * (A3_PLOT_RIGHT - A3_PLOT_LEFT));
}

// Rows holding pixels of rgb below the legend (which sits at the top right).
static int rows_with(const picture *p, const uint8_t rgb[3], int *first, int *count_in_first) {
  int rows = 0;
  *first = -1;
  *count_in_first = 0;
  for (int y = A3_PLOT_TOP + 80; y < A3_PLOT_BOTTOM; y++) {
    int n = 0;
    for (int x = A3_PLOT_LEFT + 1; x < A3_PLOT_RIGHT; x++) n += is(p, x, y, rgb);
    if (!n) continue;
    if (*first < 0) {
      *first = y;
      *count_in_first = n;
    }
    rows++;
  }
  return rows;
}

static void test_lines(void) {
  double x[N], flat[N], ramp[N];
  for (int i = 0; i < N; i++) {
    x[i] = i;
    flat[i] = 2.0;
    ramp[i] = 1.0 + 2.0 * i / (N - 1);
  }
  const a3_plot_series s[] = {
      {"flat", x, flat, N, {RED[0], RED[1], RED[2]}, 1.0, 0, false},
      {"ramp", x, ramp, N, {BLUE[0], BLUE[1], BLUE[2]}, 1.0, 0, false},
  };
  const char *path = io_path(dir, "lines.png");
  CHECK(a3_plot_png(path, "Lines: flat and ramp", s, 2, false) == A3_OK);
  picture p;
  CHECK(read_png(path, &p) == 0);
  if (!p.px) return;
  CHECK(p.width == A3_PLOT_WIDTH && p.height == A3_PLOT_HEIGHT);
  // y spans [1, 3] widened by 5%: 2.0 is the middle row.
  const double lo = 1.0 - 0.1, hi = 3.0 + 0.1;
  const int mid = row_of(2.0, lo, hi);
  int first = 0, n = 0;
  CHECK_MSG(rows_with(&p, RED, &first, &n) == 1 && first == mid,
            "the flat series is on row %d (expected %d only)", first, mid);
  // Across the whole width but where the ramp crosses it.
  CHECK_MSG(n >= A3_PLOT_RIGHT - A3_PLOT_LEFT - 1 - 3, "%d red pixels on row %d", n, mid);
  CHECK(is(&p, col_of(50, 0, 100), mid, BLUE)); // the ramp crosses in the middle
  for (int i = 1; i < N - 1; i += 7)            // its vertices
    CHECK_MSG(is(&p, col_of(i, 0, 100), row_of(ramp[i], lo, hi), BLUE), "ramp point %d", i);
  const uint8_t white[3] = {255, 255, 255}, black[3] = {0, 0, 0};
  CHECK(is(&p, 2, 2, white));                               // background
  CHECK(is(&p, A3_PLOT_LEFT, A3_PLOT_TOP + 100, black));    // the frame
  CHECK(is(&p, A3_PLOT_LEFT + 300, A3_PLOT_BOTTOM, black)); // the x axis
  free(p.px);

  // The same picture twice, byte for byte.
  char *a = NULL, *b = NULL;
  size_t la = 0, lb = 0;
  const char *again = io_path(dir, "lines2.png");
  CHECK(a3_plot_png(again, "Lines: flat and ramp", s, 2, false) == A3_OK);
  CHECK(a3_read_file(path, 1 << 24, &a, &la) == A3_OK);
  CHECK(a3_read_file(again, 1 << 24, &b, &lb) == A3_OK);
  CHECK(a && b && la == lb && !memcmp(a, b, la));
  free(a);
  free(b);
}

static void test_log_and_average(void) {
  double x[N], y[N], flat[N];
  for (int i = 0; i < N; i++) {
    x[i] = 10.0 * i;
    y[i] = i % 2 ? 0.001 : 0.1; // log10: -3, -1
    flat[i] = 0.01;             // log10: -2, the middle
  }
  // The alternating series' raw line is hidden; its 2-point average is not
  // flat in log space, so plot the flat one for the log check and the
  // average on a linear axis below.
  const a3_plot_series s[] = {
      {"zigzag", x, y, N, {BLUE[0], BLUE[1], BLUE[2]}, 0.3, 0, false},
      {"flat", x, flat, N, {RED[0], RED[1], RED[2]}, 1.0, 0, false},
  };
  const char *path = io_path(dir, "log.png");
  CHECK(a3_plot_png(path, "log axis", s, 2, true) == A3_OK);
  picture p;
  CHECK(read_png(path, &p) == 0);
  if (!p.px) return;
  const int mid = row_of(-2.0, -3.0 - 0.1, -1.0 + 0.1);
  int first = 0, n = 0;
  CHECK_MSG(rows_with(&p, RED, &first, &n) == 1 && first == mid, "log: row %d, expected %d", first,
            mid);
  free(p.px);

  // Moving average of 1, 3, 1, 3, ... over 2 points: 1 at the first point,
  // then 2 everywhere (a 2-pixel line from the middle row down).
  double z[N];
  for (int i = 0; i < N; i++) z[i] = i % 2 ? 3.0 : 1.0;
  const a3_plot_series avg = {"avg", x, z, N, {GREEN[0], GREEN[1], GREEN[2]}, 0.0, 2, false};
  const char *apath = io_path(dir, "avg.png");
  CHECK(a3_plot_png(apath, "moving average", &avg, 1, false) == A3_OK);
  CHECK(read_png(apath, &p) == 0);
  if (!p.px) return;
  const int m2 = row_of(2.0, 0.9, 3.1);
  int full = 0;
  for (int xx = col_of(20, 0, 1000); xx < A3_PLOT_RIGHT; xx++)
    full += is(&p, xx, m2, GREEN) && is(&p, xx, m2 + 1, GREEN);
  CHECK_MSG(full >= A3_PLOT_RIGHT - col_of(20, 0, 1000) - 1, "%d columns of the average", full);
  // No raw line (alpha 0): nothing green at y = 3 or y = 1 (left of the legend).
  int raw = 0;
  for (int xx = A3_PLOT_LEFT + 200; xx < A3_PLOT_RIGHT - 200; xx++)
    raw += is(&p, xx, row_of(3.0, 0.9, 3.1), GREEN) + is(&p, xx, row_of(1.0, 0.9, 3.1), GREEN);
  CHECK(raw == 0);
  free(p.px);
}

static void test_degenerate(void) {
  const double one_x = 5.0, one_y = 0.25;
  double nan_y[3] = {NAN, INFINITY, NAN}, xs[3] = {1, 2, 3}, neg[3] = {-1.0, 0.0, 2.0};
  const a3_plot_series cases[][2] = {
      {{"empty", xs, xs, 0, {0, 0, 0}, 1.0, 5, true}, {NULL, NULL, NULL, 0, {0, 0, 0}, 1, 0, 0}},
      {{"one", &one_x, &one_y, 1, {200, 0, 0}, 1.0, 5, true},
       {"none", NULL, NULL, 3, {0, 0, 0}, 1.0, 0, false}},
      {{"nan", xs, nan_y, 3, {0, 0, 200}, 0.5, 2, false},
       {"neg", xs, neg, 3, {0, 200, 0}, 1.0, 2, true}},
  };
  const int n_series[] = {2, 2, 2};
  for (int c = 0; c < 3; c++)
    for (int log = 0; log < 2; log++) {
      char name[64];
      snprintf(name, sizeof name, "degenerate%d%d.png", c, log);
      const char *path = io_path(dir, name);
      CHECK_MSG(a3_plot_png(path, "degenerate", cases[c], n_series[c], log) == A3_OK, "case %d", c);
      picture p;
      CHECK(read_png(path, &p) == 0 && p.width == A3_PLOT_WIDTH && p.height == A3_PLOT_HEIGHT);
      free(p.px);
    }
  // No series at all, and no title.
  CHECK(a3_plot_png(io_path(dir, "nothing.png"), NULL, NULL, 0, true) == A3_OK);
  // A single point shows up as a dot.
  const a3_plot_series dot = {"dot", &one_x, &one_y, 1, {RED[0], RED[1], RED[2]}, 1.0, 0, false};
  CHECK(a3_plot_png(io_path(dir, "dot.png"), "dot", &dot, 1, false) == A3_OK);
  picture p;
  CHECK(read_png(io_path(dir, "dot.png"), &p) == 0);
  if (p.px) {
    const int x = col_of(5.0, 4.5, 5.5), y = row_of(0.25, -0.25, 0.75);
    CHECK_MSG(is(&p, x, y, RED), "no dot at %d, %d", x, y);
    free(p.px);
  }
  // An unwritable path fails cleanly.
  CHECK(a3_plot_png("/nonexistent-dir/x.png", "x", &dot, 1, false) == A3_ERR_IO);
  a3_error_clear();
}

int main(void) {
  a3_log_set_level(A3_LOG_WARN);
  dir = io_make_temp_dir("plot");
  CHECK(dir != NULL);
  if (!dir) return 1;
  test_lines();
  test_log_and_average();
  test_degenerate();
  if (!test_failures)
    io_remove_tree(dir);
  else
    fprintf(stderr, "pictures kept in %s\n", dir);
  free(dir);
  return TEST_DONE("test_io_plot");
}
