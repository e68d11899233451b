// Collective reads of arbitrary image rows: one hyperslab selection (runs of
// consecutive rows merged into blocks, the blocks' union) and one collective
// H5Dread per call.
#include "io/dataset_internal.h"
#include "io/h5util.h"

#include <stdlib.h>
#include <string.h>

static a3_status check_indices(const a3_dataset *ds, const a3_ds_split *split,
                               const int64_t *indices, int64_t count) {
  if (count < 0)
    return A3_FAIL(A3_ERR_INTERNAL, "%s: read of %lld rows", ds->path, (long long)count);
  for (int64_t i = 0; i < count; i++)
    if (indices[i] < 0 || indices[i] >= split->n)
      return A3_FAIL(A3_ERR_INTERNAL, "%s: /%s/images: row %lld requested, the split has %lld",
                     ds->path, split->name, (long long)indices[i], (long long)split->n);
  return A3_OK;
}

static int strictly_increasing(const int64_t *v, int64_t n) {
  for (int64_t i = 1; i < n; i++)
    if (v[i] <= v[i - 1]) return 0;
  return 1;
}

static int compare_i64(const void *a, const void *b) {
  const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

// Sorted, duplicate-free copy of `indices`: HDF5 returns the rows of a
// selection in file order, whatever order the blocks were added in.
static a3_status unique_rows(const int64_t *indices, int64_t count, int64_t **rows,
                             int64_t *n_rows) {
  A3_TRY(A3_ALLOC(*rows, (size_t)count));
  memcpy(*rows, indices, (size_t)count * sizeof **rows);
  qsort(*rows, (size_t)count, sizeof **rows, compare_i64);
  *n_rows = 0;
  for (int64_t i = 0; i < count; i++)
    if (*n_rows == 0 || (*rows)[*n_rows - 1] != (*rows)[i]) (*rows)[(*n_rows)++] = (*rows)[i];
  return A3_OK;
}

typedef struct {
  hsize_t start, count;
} row_run; // rows [start, start + count)

// Leaves of the union below: up to this many runs OR'ed one by one.
enum { LEAF_RUNS = 64 };

static hid_t select_leaf(const hsize_t *dims, const row_run *runs, int64_t n) {
  hid_t space = H5Screate_simple(4, dims, NULL);
  hsize_t start[4] = {0}, block[4] = {0, dims[1], dims[2], dims[3]};
  for (int64_t i = 0; i < n && space >= 0; i++) {
    start[0] = runs[i].start;
    block[0] = runs[i].count;
    if (H5Sselect_hyperslab(space, i ? H5S_SELECT_OR : H5S_SELECT_SET, start, NULL, block, NULL) <
        0) {
      H5Sclose(space);
      space = H5I_INVALID_HID;
    }
  }
  return space;
}

// The union of the runs' hyperslabs as one selection. HDF5 1.10 inserts an
// OR'ed block by walking the spans already selected, so adding k blocks one
// at a time costs O(k^2) (measured: 16,000 blocks 3.5 s, 32,000 15 s);
// merging halves with H5Scombine_select gives the same selection in
// O(k log k) (32,000 blocks: 0.02 s).
static hid_t select_union(const hsize_t *dims, const row_run *runs, int64_t n) {
  if (n <= LEAF_RUNS) return select_leaf(dims, runs, n);
  const hid_t left = select_union(dims, runs, n / 2);
  const hid_t right = select_union(dims, runs + n / 2, n - n / 2);
  const hid_t both =
      left >= 0 && right >= 0 ? H5Scombine_select(left, H5S_SELECT_OR, right) : H5I_INVALID_HID;
  if (left >= 0) H5Sclose(left);
  if (right >= 0) H5Sclose(right);
  return both;
}

// Merges consecutive rows (ascending, unique) into runs; returns how many.
static int64_t find_runs(const int64_t *rows, int64_t n_rows, row_run *runs) {
  int64_t n_runs = 0;
  for (int64_t i = 0; i < n_rows;) {
    int64_t j = i + 1;
    while (j < n_rows && rows[j] == rows[j - 1] + 1) j++;
    runs[n_runs].start = (hsize_t)rows[i];
    runs[n_runs++].count = (hsize_t)(j - i);
    i = j;
  }
  return n_runs;
}

// The file selection for `rows` of the (N, C, H, W) images; on failure an
// empty one (the caller must still join the collective read) and an error.
static a3_status file_selection(const a3_dataset *ds, const a3_ds_split *split, const int64_t *rows,
                                int64_t n_rows, hid_t *space) {
  const hsize_t dims[4] = {(hsize_t)split->n, (hsize_t)split->channels, (hsize_t)split->height,
                           (hsize_t)split->width};
  row_run *runs = NULL;
  a3_status s = n_rows > 0 ? A3_ALLOC(runs, (size_t)n_rows) : A3_OK;
  *space = s == A3_OK && n_rows > 0 ? select_union(dims, runs, find_runs(rows, n_rows, runs))
                                    : H5I_INVALID_HID;
  free(runs);
  if (s == A3_OK && n_rows > 0 && *space < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: /%s/images: cannot select %lld rows%s", ds->path, split->name,
                (long long)n_rows, a3_h5_detail());
  if (*space < 0) {
    *space = H5Dget_space(split->images);
    H5Sselect_none(*space);
  }
  return s;
}

// Collective: reads rows into buf (n_rows, C, H, W); n_rows may be 0.
static a3_status read_rows(const a3_dataset *ds, const a3_ds_split *split, const int64_t *rows,
                           int64_t n_rows, uint8_t *buf) {
  hid_t file_space = H5I_INVALID_HID;
  a3_status s = file_selection(ds, split, rows, n_rows, &file_space);
  const int empty = s != A3_OK || n_rows == 0;
  const hsize_t mem_dims[4] = {empty ? 1 : (hsize_t)n_rows, (hsize_t)split->channels,
                               (hsize_t)split->height, (hsize_t)split->width};
  hid_t mem_space = H5Screate_simple(4, mem_dims, NULL);
  if (empty) H5Sselect_none(mem_space);
  hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
  H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
  // A rank with nothing to read (or that failed above) still joins the
  // collective read with an empty selection, or the others wait forever.
  uint8_t dummy = 0;
  const herr_t rc = H5Dread(split->images, H5T_NATIVE_UINT8, mem_space, file_space, dxpl,
                            empty ? (void *)&dummy : (void *)buf);
  if (s == A3_OK && rc < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: /%s/images: collective read of %lld rows failed%s", ds->path,
                split->name, (long long)n_rows, a3_h5_detail());
  H5Pclose(dxpl);
  H5Sclose(mem_space);
  H5Sclose(file_space);
  return s;
}

static size_t row_bytes(const a3_ds_split *split) {
  return (size_t)split->channels * (size_t)split->height * (size_t)split->width;
}

// Reads the unique rows once, then copies each into its requested place.
static a3_status read_scattered(const a3_dataset *ds, const a3_ds_split *split,
                                const int64_t *indices, int64_t count, uint8_t *images) {
  int64_t *rows = NULL, n_rows = 0;
  uint8_t *tmp = NULL; // (n_rows, C, H, W)
  a3_status s = unique_rows(indices, count, &rows, &n_rows);
  if (s == A3_OK) s = a3_alloc((void **)&tmp, (size_t)n_rows, row_bytes(split));
  if (s == A3_OK)
    s = read_rows(ds, split, rows, n_rows, tmp);
  else
    read_rows(ds, split, NULL, 0, NULL); // still take part: the others are in the read
  for (int64_t i = 0; i < count && s == A3_OK; i++) {
    const int64_t *at = bsearch(&indices[i], rows, (size_t)n_rows, sizeof *rows, compare_i64);
    memcpy(images + (size_t)i * row_bytes(split), tmp + (size_t)(at - rows) * row_bytes(split),
           row_bytes(split));
  }
  free(rows);
  free(tmp);
  return s;
}

a3_status a3_dataset_read(a3_dataset *ds, const char *split_name, const int64_t *indices,
                          int64_t count, uint8_t *images, int32_t *labels) {
  a3_ds_split *split = NULL;
  a3_status s = a3_ds_find_split(ds, split_name, &split);
  if (s == A3_OK) s = check_indices(ds, split, indices, count);
  // Agree before the collective read: a rank that bails out alone hangs the rest.
  A3_TRY(a3_ds_agree(ds, s, "checking a read request"));
  if (!images)
    s = read_rows(ds, split, NULL, 0, NULL); // labels only, but the read is collective
  else if (strictly_increasing(indices, count))
    s = read_rows(ds, split, indices, count, images);
  else
    s = read_scattered(ds, split, indices, count, images);
  A3_TRY(a3_ds_agree(ds, s, "a collective read"));
  for (int64_t i = 0; labels && i < count; i++) labels[i] = split->labels[indices[i]];
  return A3_OK;
}
