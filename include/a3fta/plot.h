// a3fta plot: line charts as PNG files (the training run's loss.png), drawn
// by a3fta itself with libpng and a small built-in bitmap font, so every run
// folder has its loss curve without Python or gnuplot.
//
// The picture. A3_PLOT_WIDTH x A3_PLOT_HEIGHT RGB pixels on white: the
// title centred above the plot area, the plot area's frame (black) from
// column A3_PLOT_LEFT to A3_PLOT_RIGHT and row A3_PLOT_TOP to
// A3_PLOT_BOTTOM (inclusive), light grey grid lines at the ticks, tick
// labels left of and below the frame, "step" under the x axis, and a legend
// in the plot area's top right corner.
//
// Axes. x spans [min, max] of the finite x values of all series exactly
// (min - 0.5 .. max + 0.5 when they are equal; 0..1 without data). y spans
// [min, max] of the finite y values (log_y: of the positive ones, in log10)
// widened by A3_PLOT_Y_PAD of the span at both ends (a zero span becomes
// +-0.5, or a factor 10^+-0.5 on a log axis; 0..1 or 10^0..1 without data).
// Value v lands on column LEFT + round((x - x0) / (x1 - x0) * (RIGHT - LEFT))
// and row BOTTOM - round((y - y0) / (y1 - y0) * (BOTTOM - TOP)) (log10 of
// x.. for a log axis), so a constant series draws one horizontal row.
//
// Series. A polyline through the points in the order given, broken where y
// is not finite (or not positive on a log axis); a single isolated point is
// drawn as a dot. With alpha < 1 the line is blended over the background
// once (overlapping segments do not darken). smooth > 1 adds the moving
// average (trailing, over the last `smooth` finite points, fewer at the
// start) as an opaque 2-pixel line of the same colour. The output is a pure
// function of the arguments (no time stamps, integer blending).
//
// Text. A 5x7 font (with descenders) of digits, lowercase letters and
// " .,:;-+=_/()%<>[]#'*?"; uppercase letters are drawn lowercase and other
// characters as '?'.
#ifndef A3FTA_PLOT_H
#define A3FTA_PLOT_H

#include "a3fta/core.h"

#include <stdbool.h>
#include <stdint.h>

enum {
  A3_PLOT_WIDTH = 900,
  A3_PLOT_HEIGHT = 560,
  A3_PLOT_LEFT = 80,   // the frame's left column (the y axis)
  A3_PLOT_RIGHT = 879, // its right column
  A3_PLOT_TOP = 44,    // its top row
  A3_PLOT_BOTTOM = 509 // its bottom row (the x axis)
};
#define A3_PLOT_Y_PAD 0.05

typedef struct {
  const char *label;   // legend text; NULL or "": no legend entry
  const double *x, *y; // n points (x ascending for a sensible picture)
  int64_t n;           // 0 is fine
  uint8_t rgb[3];      // colour
  double alpha;        // opacity of the raw line in [0, 1]; 0: not drawn
  int64_t smooth;      // > 1: also the moving average over this many points
  bool markers;        // a 5x5 square at each point (sparse series)
} a3_plot_series;

// An 8-bit PNG of width x height interleaved pixels, channels 1 (grey) or 3
// (RGB), written atomically (path.tmp, synced, renamed). The plots and the
// sample grids (a3_write_png_grid) both go through it.
a3_status a3_write_png(const char *path, const uint8_t *px, int width, int height,
                       int channels) A3_WARN_UNUSED;

// Writes the chart to path (atomically: path.tmp, then renamed). Serial.
a3_status a3_plot_png(const char *path, const char *title, const a3_plot_series *series,
                      int n_series, bool log_y) A3_WARN_UNUSED;

#endif
