// Bringing an image to the dataset's size: padding or resampling.
#ifndef A3FTA_IO_IMAGE_FIT_H
#define A3FTA_IO_IMAGE_FIT_H

#include "a3fta/dataset.h"
#include "io/png_load.h"

// Writes `in` (C, h, w) as out (C, height, width) uint8:
//  A3_FIT_NONE:   sizes must match (a copy);
//  A3_FIT_PAD:    centred on black (odd margins put the extra pixel right/below);
//                 an image larger than the target in either axis is an error,
//                 since padding never crops;
//  A3_FIT_RESIZE: separable resampling, per axis area averaging (each output
//                 pixel the mean of the input it covers, fractional pixels
//                 weighted) when shrinking, bilinear with pixel centres
//                 aligned (like OpenCV INTER_LINEAR) when enlarging.
// `path` names the image in errors.
a3_status a3_image_fit(const a3_image *in, int height, int width, a3_fit fit, const char *path,
                       uint8_t *out);

#endif
