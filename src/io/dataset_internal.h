// The reader's state, shared by dataset_open.c, dataset_select.c,
// dataset_read.c and dataset_info.c.
#ifndef A3FTA_IO_DATASET_INTERNAL_H
#define A3FTA_IO_DATASET_INTERNAL_H

#include "a3fta/dataset.h"

#include <hdf5.h>

typedef struct {
  char *name;
  hid_t images; // the open /<name>/images dataset
  int64_t n;
  int channels, height, width;
  int32_t *labels; // (n) int32, validated to lie in [0, num_classes)
} a3_ds_split;

struct a3_dataset {
  MPI_Comm comm; // our duplicate of the caller's: our collectives never mix with theirs
  int rank, size;
  char *path;
  hid_t file;
  char *source;
  int num_classes;
  char **class_names;  // (num_classes)
  a3_ds_split *splits; // (n_splits) in creation order
  int n_splits;
};

// The split called `name`, or A3_ERR_INPUT listing the splits there are.
a3_status a3_ds_find_split(const a3_dataset *ds, const char *name, a3_ds_split **out);

// Collective: every rank passes its local status; all get the worst one.
// A rank that was fine but sees another fail gets an A3_ERR_MPI-free
// message naming `what` and pointing at the failed rank's message.
a3_status a3_ds_agree(const a3_dataset *ds, a3_status local, const char *what);

#endif
