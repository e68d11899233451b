// Whole-split pixel statistics (a parallel read reduced over the ranks) and
// the summary that 'a3fta info' prints.
#include "io/dataset_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

// Rows read per collective call: bounded memory whatever the split's size.
enum { STATS_BATCH_BYTES = 8 << 20 };

// sums[2 c] += pixel values of channel c, sums[2 c + 1] += their squares.
static void accumulate(const uint8_t *images, int64_t count, int channels, size_t plane,
                       uint64_t *sums) {
  for (int64_t i = 0; i < count; i++)
    for (int c = 0; c < channels; c++) {
      const uint8_t *p = images + ((size_t)i * channels + c) * plane;
      uint64_t sum = 0, sq = 0;
      for (size_t k = 0; k < plane; k++) {
        sum += p[k];
        sq += (uint64_t)p[k] * p[k];
      }
      sums[2 * c] += sum;
      sums[2 * c + 1] += sq;
    }
}

// Reads this rank's shard in batches. Every rank makes the same number of
// collective reads (enough for the largest shard), some of them empty.
static a3_status sum_shard(a3_dataset *ds, const a3_ds_split *split, int64_t batch,
                           int64_t *indices, uint8_t *images, uint64_t *sums) {
  int64_t begin = 0, end = 0;
  a3_shard_range(split->n, ds->rank, ds->size, &begin, &end);
  const int64_t largest = (split->n + ds->size - 1) / ds->size;
  const size_t plane = (size_t)split->height * (size_t)split->width;
  for (int64_t round = 0; round * batch < largest; round++) {
    const int64_t from = begin + round * batch;
    const int64_t count = from >= end ? 0 : (end - from < batch ? end - from : batch);
    for (int64_t i = 0; i < count; i++) indices[i] = from + i;
    A3_TRY(a3_dataset_read(ds, split->name, indices, count, images, NULL));
    accumulate(images, count, split->channels, plane, sums);
  }
  return A3_OK;
}

static void finish_stats(const a3_ds_split *split, const uint64_t *sums, a3_pixel_stats *out) {
  memset(out, 0, sizeof *out);
  out->channels = split->channels;
  const double per_channel = (double)split->n * split->height * split->width;
  double all_sum = 0, all_sq = 0;
  for (int c = 0; c < split->channels; c++) {
    const double mean = sums[2 * c] / per_channel;
    out->channel_mean[c] = mean;
    out->channel_std[c] = sqrt(fmax(sums[2 * c + 1] / per_channel - mean * mean, 0.0));
    all_sum += (double)sums[2 * c];
    all_sq += (double)sums[2 * c + 1];
  }
  const double total = per_channel * split->channels;
  out->mean = all_sum / total;
  out->std = sqrt(fmax(all_sq / total - out->mean * out->mean, 0.0));
}

a3_status a3_dataset_pixel_stats(a3_dataset *ds, const char *split_name, a3_pixel_stats *out) {
  a3_ds_split *split = NULL;
  int64_t *indices = NULL, batch = 1;
  uint8_t *images = NULL; // (batch, C, H, W)
  uint64_t local[2 * A3_DATASET_MAX_CHANNELS] = {0}, sums[2 * A3_DATASET_MAX_CHANNELS] = {0};
  a3_status s = a3_ds_find_split(ds, split_name, &split);
  if (s == A3_OK) {
    const int64_t row = (int64_t)split->channels * split->height * split->width;
    batch = STATS_BATCH_BYTES / row > 1 ? STATS_BATCH_BYTES / row : 1;
    s = A3_ALLOC(indices, (size_t)batch);
  }
  if (s == A3_OK)
    s = a3_alloc((void **)&images, (size_t)batch,
                 (size_t)split->channels * split->height * split->width);
  s = a3_ds_agree(ds, s, "preparing pixel statistics");
  if (s == A3_OK) s = sum_shard(ds, split, batch, indices, images, local);
  free(indices);
  free(images);
  A3_TRY(s);
  if (MPI_Allreduce(local, sums, 2 * A3_DATASET_MAX_CHANNELS, MPI_UINT64_T, MPI_SUM, ds->comm) !=
      MPI_SUCCESS)
    return A3_FAIL(A3_ERR_MPI, "%s: MPI_Allreduce of pixel sums failed", ds->path);
  finish_stats(split, sums, out);
  return A3_OK;
}

// ---------------------------------------------------------------- summary

static void print_split_rows(const a3_dataset *ds, const a3_pixel_stats *stats, FILE *f) {
  fprintf(f, "\n  %-10s %8s %3s %5s %5s %11s %10s\n", "split", "N", "C", "H", "W", "pixel mean",
          "pixel std");
  for (int i = 0; i < ds->n_splits; i++) {
    const a3_ds_split *sp = &ds->splits[i];
    fprintf(f, "  %-10s %8lld %3d %5d %5d %11.2f %10.2f\n", sp->name, (long long)sp->n,
            sp->channels, sp->height, sp->width, stats[i].mean, stats[i].std);
  }
  for (int i = 0; i < ds->n_splits; i++) {
    if (stats[i].channels < 2) continue;
    fprintf(f, "  %s per channel: mean", ds->splits[i].name);
    for (int c = 0; c < stats[i].channels; c++) fprintf(f, " %.2f", stats[i].channel_mean[c]);
    fputs(", std", f);
    for (int c = 0; c < stats[i].channels; c++) fprintf(f, " %.2f", stats[i].channel_std[c]);
    fputc('\n', f);
  }
  fputs("  (pixel values 0..255)\n", f);
}

static a3_status print_class_rows(const a3_dataset *ds, FILE *f) {
  int64_t *counts = NULL; // (n_splits, num_classes)
  A3_TRY(A3_ALLOC(counts, (size_t)ds->n_splits * (size_t)ds->num_classes));
  int width = 5;
  for (int c = 0; c < ds->num_classes; c++) {
    const int len = (int)strlen(ds->class_names[c]);
    width = len > width ? (len < 40 ? len : 40) : width;
  }
  for (int i = 0; i < ds->n_splits; i++)
    for (int64_t k = 0; k < ds->splits[i].n; k++)
      counts[(size_t)i * ds->num_classes + ds->splits[i].labels[k]]++;
  fprintf(f, "\n  %5s %-*s", "class", width, "");
  for (int i = 0; i < ds->n_splits; i++) fprintf(f, " %8s", ds->splits[i].name);
  fputc('\n', f);
  for (int c = 0; c < ds->num_classes; c++) {
    fprintf(f, "  %5d %-*s", c, width, ds->class_names[c]);
    for (int i = 0; i < ds->n_splits; i++)
      fprintf(f, " %8lld", (long long)counts[(size_t)i * ds->num_classes + c]);
    fputc('\n', f);
  }
  free(counts);
  return A3_OK;
}

a3_status a3_dataset_print_summary(a3_dataset *ds, FILE *f) {
  a3_pixel_stats *stats = NULL;
  a3_status s = A3_ALLOC(stats, (size_t)ds->n_splits);
  A3_TRY(a3_ds_agree(ds, s, "preparing the summary"));
  for (int i = 0; i < ds->n_splits && s == A3_OK; i++)
    s = a3_dataset_pixel_stats(ds, ds->splits[i].name, &stats[i]);
  if (s == A3_OK && ds->rank == 0) {
    fprintf(f, "a3fta dataset %s\n", ds->path);
    fprintf(f, "  format:  %s, version %d\n", A3_DATASET_FORMAT, A3_DATASET_FORMAT_VERSION);
    fprintf(f, "  source:  %s\n", ds->source[0] ? ds->source : "(not recorded)");
    fprintf(f, "  classes: %d\n", ds->num_classes);
    print_split_rows(ds, stats, f);
    s = print_class_rows(ds, f);
    fflush(f);
  }
  free(stats);
  A3_TRY(s);
  return A3_OK;
}
