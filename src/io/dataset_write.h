// Serial writer of a3fta dataset files (format in include/a3fta/dataset.h),
// used by the importers. It writes to "<path>.tmp" and renames that to
// <path> only on commit, so a crash or error never leaves a half-written file
// under the final name.
#ifndef A3FTA_IO_DATASET_WRITE_H
#define A3FTA_IO_DATASET_WRITE_H

#include "a3fta/core.h"

typedef struct a3_ds_writer a3_ds_writer;

// Creates <path>.tmp (replacing a stale one) with the root attributes.
a3_status a3_ds_writer_create(const char *path, const char *source, const char *const *class_names,
                              int num_classes, a3_ds_writer **out);
// Starts split `name` of n images of (C, H, W); finishes the previous one.
a3_status a3_ds_writer_add_split(a3_ds_writer *w, const char *name, int64_t n, int channels,
                                 int height, int width);
// Rows [begin, begin + count) of the current split: images (count, C, H, W)
// uint8, labels (count) int32. Labels must be in [0, num_classes).
a3_status a3_ds_writer_write(a3_ds_writer *w, int64_t begin, int64_t count, const uint8_t *images,
                             const int32_t *labels);
// Checks every row was written, closes, syncs and renames; frees `w`.
a3_status a3_ds_writer_commit(a3_ds_writer *w);
// Closes and removes the temporary file; frees `w`. NULL is fine.
void a3_ds_writer_abort(a3_ds_writer *w);

#endif
