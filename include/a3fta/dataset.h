// a3fta datasets: importing images into one HDF5 file, and reading subsets
// of it in parallel (every rank its own shard, one collective read).
//
// File format (format_version 1), one HDF5 file:
//   /                      attributes: format = "a3fta-dataset" (string),
//                          format_version = 1 (int32), source (string),
//                          num_classes (int32), class_names (string array,
//                          variable- or fixed-length, num_classes entries)
//   /<split>/images        (N, C, H, W) uint8, 0 = black, 255 = full intensity;
//                          chunked and deflate-compressed
//   /<split>/labels        (N) int32, class index in [0, num_classes)
// A split is any root group holding images + labels; importers write
// "train" and/or "test". Both datasets carry a `layout` string attribute
// saying the above, for people reading the file with h5dump or h5py.
//
// Writing is serial (import runs on one rank); reading is parallel (MPI-IO).
#ifndef A3FTA_DATASET_H
#define A3FTA_DATASET_H

#include "a3fta/core.h"

#include <mpi.h>
#include <stdio.h>

#define A3_DATASET_FORMAT "a3fta-dataset"
enum { A3_DATASET_FORMAT_VERSION = 1, A3_DATASET_MAX_CHANNELS = 4 };

// ---------------------------------------------------------------- import
// What an import wrote, one entry per split, for the command's summary.
typedef struct {
  char name[16];
  int64_t n;
  int channels, height, width;
} a3_import_split;
typedef struct {
  a3_import_split splits[2];
  int n_splits;
  int num_classes;
} a3_import_report;

// Fashion-MNIST's four gzipped IDX files in `source_dir` (NULL = the Debian
// package's /usr/share/datasets/fashion-mnist) -> `out_path`. Serial: call it
// on one rank. The file is written as out_path.tmp and renamed at the end,
// so an interrupted import never leaves a file that looks valid.
#define A3_FASHION_MNIST_DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
a3_status a3_import_fashion_mnist(const char *source_dir, const char *out_path,
                                  a3_import_report *report);

typedef enum {
  A3_FIT_NONE = 0, // keep the size: every image must have the same one
  A3_FIT_PAD,      // centre on a black canvas of the target size (never crops)
  A3_FIT_RESIZE,   // per axis: area average when shrinking, bilinear when enlarging
} a3_fit;

typedef struct {
  const char *dir;      // DIR/<class>/<image>.png; classes = sorted subfolder names
  const char *out_path; // written atomically like above
  int height, width;    // target size; 0 = keep (requires fit = A3_FIT_NONE)
  a3_fit fit;
  int channels;      // 1 or 3; 0 = 1 if every PNG is grey, else 3
  const char *split; // "train" (NULL) or "test"
  // Optional second folder written as the test split of the same file (split
  // must then be train): the same class subfolders, brought to the same size.
  const char *test_dir;
} a3_image_import_options;

// A folder of PNGs, one subfolder per class -> `opt->out_path`. Images are
// stored class by class, each class's files in byte-wise sorted name order.
// Serial, like the Fashion-MNIST import.
a3_status a3_import_images(const a3_image_import_options *opt, a3_import_report *report);

// ---------------------------------------------------------------- reading
typedef struct a3_dataset a3_dataset;

// Opens a dataset file with the MPI-IO driver on `comm` (collective) and
// validates it: format attributes, class names, every split's shapes and
// types, and every label's range (the labels of all splits are read into
// memory on every rank; the subset selection below works from them). All
// ranks agree on the outcome: if any rank fails, all return an error.
a3_status a3_dataset_open(MPI_Comm comm, const char *path, a3_dataset **out);
void a3_dataset_close(a3_dataset *ds); // collective; NULL is fine

const char *a3_dataset_path(const a3_dataset *ds);
const char *a3_dataset_source(const a3_dataset *ds); // "" if the file has none
int a3_dataset_num_classes(const a3_dataset *ds);
const char *a3_dataset_class_name(const a3_dataset *ds, int cls); // NULL if out of range
int a3_dataset_num_splits(const a3_dataset *ds);
const char *a3_dataset_split_name(const a3_dataset *ds, int i); // file (creation) order

typedef struct {
  const char *name;            // owned by the dataset
  int64_t n;                   // number of images
  int channels, height, width; // C, H, W
  int num_classes;
  const int32_t *labels; // (n) int32, owned by the dataset, valid until close
} a3_split_info;
// Unknown split: A3_ERR_INPUT naming the splits the file has.
a3_status a3_dataset_split_info(const a3_dataset *ds, const char *split, a3_split_info *out);

// Which images of a split to use.
typedef struct {
  const char *split;
  const int *classes;      // class ids to keep (no duplicates); NULL or n_classes = 0: all
  int n_classes;           //
  int64_t shots_per_class; // 0 = every image of each kept class
  int random;              // 0: the first shots_per_class of each class in file order;
                           // 1: shots_per_class drawn at random without replacement
  uint64_t seed;           // for random = 1
} a3_subset_spec;

// Computes the subset: `*indices` (malloc'd, free() it) holds `*count` image
// indices of the split in ascending file order (the subset is a set; file
// order keeps reads contiguous and makes each rank's shard mix the classes as
// the file does — shuffle for training with A3_STREAM_SHUFFLE).
// Random draws: for class c, a partial Fisher-Yates shuffle of the class's
// indices (in file order) where draw j uses
//   a3_rng_below(seed, A3_STREAM_SUBSET, ((uint64_t)c << 32) | j, n_c - j),
// so a class's draw depends on (seed, c) only: not on the other classes
// listed, the rank, or the number of ranks.
// Collective over the dataset's communicator: the ranks compare a hash of the
// result and fail with A3_ERR_MPI if they disagree (e.g. different seeds).
// Errors: unknown split or class, duplicate class, a class with fewer images
// than shots_per_class (A3_ERR_CONFIG).
a3_status a3_dataset_select(a3_dataset *ds, const a3_subset_spec *spec, int64_t **indices,
                            int64_t *count);

// This rank's part of a list of `count` items over `nranks` ranks: the
// contiguous items [floor(rank*count/nranks), floor((rank+1)*count/nranks)).
// Some ranks get nothing when count < nranks.
void a3_shard_range(int64_t count, int rank, int nranks, int64_t *begin, int64_t *end);

// Reads images[indices[i]] and labels[indices[i]] for i < count: images
// (count, C, H, W) uint8, labels (count) int32 (either may be NULL to skip).
// Collective over the dataset's communicator: every rank calls it, a rank
// with count = 0 too. The rows are read as one hyperslab selection (runs of
// consecutive indices merged into blocks) in one collective H5Dread. Indices
// may be in any order and repeat; ascending unique indices are fastest.
a3_status a3_dataset_read(a3_dataset *ds, const char *split, const int64_t *indices, int64_t count,
                          uint8_t *images, int32_t *labels);

// Pixel statistics of a whole split, computed in parallel: each rank reads
// its shard in batches and the integer sums are reduced over the
// communicator (collective; every rank gets the result).
typedef struct {
  int channels;
  double mean, std;                             // over all channels, 0..255 scale
  double channel_mean[A3_DATASET_MAX_CHANNELS]; // per channel
  double channel_std[A3_DATASET_MAX_CHANNELS];
} a3_pixel_stats;
a3_status a3_dataset_pixel_stats(a3_dataset *ds, const char *split, a3_pixel_stats *out);

// Writes a human-readable summary (path, format, source, splits with shapes
// and pixel statistics, per-class counts) to `f` on rank 0. Collective.
a3_status a3_dataset_print_summary(a3_dataset *ds, FILE *f);

// The root attribute `format` of an HDF5 file ("a3fta-dataset", later
// checkpoints and results), read by the calling rank alone without MPI-IO:
// "" when the file has none. A3_ERR_IO if the file cannot be read,
// A3_ERR_INPUT if it is not HDF5.
a3_status a3_file_format(const char *path, char *format, size_t cap);

#endif
