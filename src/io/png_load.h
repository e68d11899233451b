// PNG decoding (libpng) into planar images, any PNG colour type and depth.
#ifndef A3FTA_IO_PNG_LOAD_H
#define A3FTA_IO_PNG_LOAD_H

#include "a3fta/core.h"

typedef struct {
  uint32_t width, height;
  int grey; // colour type grey or grey+alpha: converting it to 1 channel loses nothing
} a3_png_header;

typedef struct {
  int channels, height, width;
  uint8_t *pixels; // (C, H, W) uint8, malloc'd
} a3_image;

// Reads only the header. A file that is not a PNG, or is corrupt or
// truncated, is A3_ERR_INPUT naming it; an unreadable one A3_ERR_IO.
a3_status a3_png_read_header(const char *path, a3_png_header *out);

// Decodes to `channels` (1 or 3) 8-bit channels: palette and low-depth grey
// are expanded, 16-bit scaled to 8, transparency composited onto black (the
// dataset's background), colour turned grey with Rec. 601 luma weights
// (0.299 R + 0.587 G + 0.114 B), grey copied into R, G and B.
a3_status a3_png_read(const char *path, int channels, a3_image *out);
void a3_image_free(a3_image *img);

#endif
