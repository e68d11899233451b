// a3fta merge: the results files of one sweep's slices (a3fta sweep --slice,
// one per job-array task) combined into one file equal to a single sweep's.
// Serial (default sec2 driver) on closed files; see a3fta/results.h.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/results.h"
#include "io/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { MAX_RANK = 8, COPY_CHUNK_BYTES = 32 << 20 };

// One dataset of the first input, as every input must have it.
typedef struct {
  char *name; // path without the leading '/'
  hid_t type; // its file type
  int ndims;
  hsize_t dims[MAX_RANK];
  size_t row_bytes; // bytes of one point's row (type size x dims[1..])
} dataset_spec;

typedef struct {
  dataset_spec *ds;
  int n, cap;
  const char *path; // for messages
  a3_status status; // first failure of the visit
} dataset_list;

typedef struct {
  const char *path;
  hid_t file;
  char *hash;
  int64_t n_points;
  int8_t *status;
  int32_t *attempts;
} input;

// After a failed H5Fopen: the fix when HDF5's file lock was refused.
static const char *lock_hint(void) {
  return strstr(a3_h5_detail(), "lock")
             ? "; HDF5 could not lock the file (another process has it open for writing, or "
               "the file system has no working locks: then set HDF5_USE_FILE_LOCKING=FALSE)"
             : "";
}

static a3_status dup_text(const char *text, char **out) {
  const size_t len = strlen(text) + 1;
  A3_TRY(a3_alloc((void **)out, len, 1));
  memcpy(*out, text, len);
  return A3_OK;
}

// ---------------------------------------------------------------- inputs
static a3_status open_input(input *in) {
  struct stat st;
  if (stat(in->path, &st) != 0)
    return A3_FAIL(A3_ERR_INPUT, "%s: cannot read this input: %s", in->path, strerror(errno));
  if (!S_ISREG(st.st_mode)) return A3_FAIL(A3_ERR_INPUT, "%s: not a regular file", in->path);
  if (H5Fis_hdf5(in->path) <= 0)
    return A3_FAIL(A3_ERR_INPUT, "%s: not an HDF5 file%s", in->path, a3_h5_detail());
  in->file = H5Fopen(in->path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (in->file < 0)
    return A3_FAIL(A3_ERR_IO, "cannot open %s%s%s", in->path, a3_h5_detail(), lock_hint());
  char where[1100];
  snprintf(where, sizeof where, "%s: /", in->path);
  int has = 0;
  A3_TRY(a3_h5_attr_exists(in->file, "format", where, &has));
  if (!has)
    return A3_FAIL(A3_ERR_INPUT, "%s: not an a3fta results file (no root attribute 'format')",
                   in->path);
  char *format = NULL;
  A3_TRY(a3_h5_read_string_attr(in->file, "format", where, &format));
  const int ok = !strcmp(format, A3_RESULTS_FORMAT);
  free(format);
  if (!ok)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: not an a3fta results file (root attribute 'format' is not "
                   "'" A3_RESULTS_FORMAT "')",
                   in->path);
  int64_t version = 0;
  A3_TRY(a3_h5_read_int_attr(in->file, "format_version", where, &version));
  if (version != A3_RESULTS_FORMAT_VERSION)
    return A3_FAIL(A3_ERR_INPUT, "%s: results format version %lld; this a3fta merges version %d",
                   in->path, (long long)version, A3_RESULTS_FORMAT_VERSION);
  A3_TRY(a3_h5_read_string_attr(in->file, "sweep_hash", where, &in->hash));
  return A3_OK;
}

// Reads the 1-D per-point dataset `name` (n_points < 0: learns n_points).
static a3_status read_column(input *in, const char *name, hid_t memtype, size_t elem, void **out) {
  hid_t ds = H5Dopen2(in->file, name, H5P_DEFAULT);
  if (ds < 0) return A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s is missing", in->path, name);
  hid_t space = H5Dget_space(ds);
  hsize_t dims[1] = {0};
  const int nd = H5Sget_simple_extent_ndims(space);
  if (nd == 1) H5Sget_simple_extent_dims(space, dims, NULL);
  H5Sclose(space);
  a3_status s = A3_OK;
  if (nd != 1 || (in->n_points >= 0 && (int64_t)dims[0] != in->n_points))
    s = A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s is not one value per point", in->path, name);
  if (s == A3_OK) {
    in->n_points = (int64_t)dims[0];
    s = a3_alloc(out, (size_t)in->n_points + 1, elem);
  }
  if (s == A3_OK && in->n_points > 0 &&
      H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, *out) < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot read /%s%s", in->path, name, a3_h5_detail());
  H5Dclose(ds);
  return s;
}

static a3_status load_input(input *in) {
  A3_TRY(open_input(in));
  in->n_points = -1;
  A3_TRY(read_column(in, "status", H5T_NATIVE_INT8, 1, (void **)&in->status));
  A3_TRY(read_column(in, "attempts", H5T_NATIVE_INT32, sizeof(int32_t), (void **)&in->attempts));
  return A3_OK;
}

// A point belongs to the input that started it (in any state).
static bool started(const input *in, int64_t i) {
  return in->attempts[i] > 0 || in->status[i] != A3_POINT_PENDING;
}

// ---------------------------------------------------------------- datasets
static herr_t visit_link(hid_t group, const char *name, const H5L_info_t *info, void *vlist) {
  dataset_list *list = vlist;
  (void)info;
  hid_t obj = H5Oopen(group, name, H5P_DEFAULT);
  if (obj < 0) {
    list->status = A3_FAIL(A3_ERR_INPUT, "%s: cannot open /%s%s", list->path, name, a3_h5_detail());
    return -1;
  }
  const H5I_type_t kind = H5Iget_type(obj);
  a3_status s = A3_OK;
  if (kind == H5I_DATASET) {
    if (list->n == list->cap) {
      const int cap = list->cap ? 2 * list->cap : 64;
      dataset_spec *grown = realloc(list->ds, (size_t)cap * sizeof *grown);
      if (!grown)
        s = A3_FAIL(A3_ERR_NOMEM, "out of memory listing the datasets of %s", list->path);
      else {
        list->ds = grown;
        list->cap = cap;
      }
    }
    if (s == A3_OK) {
      dataset_spec *d = &list->ds[list->n];
      memset(d, 0, sizeof *d);
      d->type = H5Dget_type(obj);
      hid_t space = H5Dget_space(obj);
      d->ndims = H5Sget_simple_extent_ndims(space);
      if (d->ndims >= 1 && d->ndims <= MAX_RANK) H5Sget_simple_extent_dims(space, d->dims, NULL);
      H5Sclose(space);
      list->n++; // owns d->type from here (freed with the list)
      s = dup_text(name, &d->name);
      if (s == A3_OK && (d->ndims < 1 || d->ndims > MAX_RANK))
        s = A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s has %d dimensions (1 to %d expected)",
                    list->path, name, d->ndims, MAX_RANK);
      if (s == A3_OK && (H5Tis_variable_str(d->type) > 0 || H5Tdetect_class(d->type, H5T_VLEN) > 0))
        s = A3_FAIL(A3_ERR_INPUT,
                    "%s: dataset /%s holds variable-length data, which no results-file dataset "
                    "does (not an a3fta results file of this version?)",
                    list->path, name);
      if (s == A3_OK) {
        d->row_bytes = H5Tget_size(d->type);
        for (int k = 1; k < d->ndims; k++) d->row_bytes *= (size_t)d->dims[k];
      }
    }
  }
  H5Oclose(obj);
  if (s != A3_OK) {
    list->status = s;
    return -1;
  }
  return 0;
}

static void free_list(dataset_list *list) {
  for (int i = 0; i < list->n; i++) {
    free(list->ds[i].name);
    if (list->ds[i].type >= 0) H5Tclose(list->ds[i].type);
  }
  free(list->ds);
  memset(list, 0, sizeof *list);
}

static a3_status list_datasets(hid_t file, const char *path, dataset_list *out) {
  memset(out, 0, sizeof *out);
  out->path = path;
  if (H5Lvisit(file, H5_INDEX_NAME, H5_ITER_INC, visit_link, out) < 0) {
    if (out->status != A3_OK) return out->status;
    return A3_FAIL(A3_ERR_HDF5, "%s: cannot list its datasets%s", path, a3_h5_detail());
  }
  return A3_OK;
}

static void format_dims(const dataset_spec *d, char *buf, size_t size) {
  size_t used = 0;
  buf[0] = '\0';
  for (int k = 0; k < d->ndims && used < size; k++) {
    const int w =
        snprintf(buf + used, size - used, "%s%llu", k ? "x" : "", (unsigned long long)d->dims[k]);
    if (w > 0) used += (size_t)w;
  }
}

// Every input has the first input's datasets, with the same shapes and types.
static a3_status check_same_datasets(const dataset_list *ref, const input *first, const input *in) {
  dataset_list other;
  A3_TRY(list_datasets(in->file, in->path, &other));
  a3_status s = A3_OK;
  for (int i = 0; i < ref->n && s == A3_OK; i++) {
    const dataset_spec *a = &ref->ds[i];
    const dataset_spec *b = NULL;
    for (int j = 0; j < other.n && !b; j++)
      if (!strcmp(other.ds[j].name, a->name)) b = &other.ds[j];
    char da[128], db[128];
    if (!b) {
      s = A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s is missing (%s has it)", in->path, a->name,
                  first->path);
      break;
    }
    format_dims(a, da, sizeof da);
    format_dims(b, db, sizeof db);
    if (strcmp(da, db))
      s = A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s has shape %s, but %s's has shape %s", in->path,
                  a->name, db, first->path, da);
    else if (H5Tequal(a->type, b->type) <= 0)
      s = A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s has another element type than %s's", in->path,
                  a->name, first->path);
  }
  for (int j = 0; j < other.n && s == A3_OK; j++) {
    bool found = false;
    for (int i = 0; i < ref->n && !found; i++) found = !strcmp(ref->ds[i].name, other.ds[j].name);
    if (!found)
      s = A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s is not in %s", in->path, other.ds[j].name,
                  first->path);
  }
  free_list(&other);
  return s;
}

// ---------------------------------------------------------------- checks
static a3_status check_inputs(input *in, int n_inputs) {
  for (int k = 1; k < n_inputs; k++) {
    if (strcmp(in[k].hash, in[0].hash))
      return A3_FAIL(A3_ERR_INPUT,
                     "%s: root attribute sweep_hash is %s, but %s's is %s: the inputs are not "
                     "slices of one sweep (same config, same a3fta version)",
                     in[k].path, in[k].hash, in[0].path, in[0].hash);
    if (in[k].n_points != in[0].n_points)
      return A3_FAIL(A3_ERR_INPUT, "%s: /status has %lld points, but %s's has %lld", in[k].path,
                     (long long)in[k].n_points, in[0].path, (long long)in[0].n_points);
  }
  return A3_OK;
}

// owner[i]: the input that started point i, or -1. Two inputs that started
// the same point are an error naming both files and the first points.
static a3_status assign_points(const input *in, int n_inputs, int *owner) {
  const int64_t n = in[0].n_points;
  for (int64_t i = 0; i < n; i++) owner[i] = -1;
  for (int k = 0; k < n_inputs; k++) {
    char list[256] = "";
    size_t used = 0;
    int64_t clashes = 0;
    int with = -1;
    for (int64_t i = 0; i < n; i++) {
      if (!started(&in[k], i)) continue;
      if (owner[i] < 0) {
        owner[i] = k;
        continue;
      }
      if (with < 0) with = owner[i];
      if (owner[i] != with) continue; // reported against the first clashing file only
      if (clashes++ < 8 && used < sizeof list) {
        const int w = snprintf(list + used, sizeof list - used, "%s%lld (%s there, %s here)",
                               clashes > 1 ? ", " : "", (long long)i,
                               a3_point_status_name(in[with].status[i]),
                               a3_point_status_name(in[k].status[i]));
        if (w > 0) used += (size_t)w;
      }
    }
    if (clashes)
      return A3_FAIL(A3_ERR_INPUT,
                     "%s: /status: %lld point%s also run in %s: point%s %s%s; the inputs must "
                     "cover disjoint points (one file per slice I/N of one array job)",
                     in[k].path, (long long)clashes, clashes == 1 ? " was" : "s were",
                     in[with].path, clashes == 1 ? "" : "s", list, clashes > 8 ? ", ..." : "");
  }
  return A3_OK;
}

// ---------------------------------------------------------------- output
static a3_status copy_bytes(const char *from, const char *to) {
  int in = open(from, O_RDONLY);
  if (in < 0) return A3_FAIL(A3_ERR_INPUT, "%s: cannot read: %s", from, strerror(errno));
  int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0666);
  if (out < 0) {
    const int e = errno;
    close(in);
    return A3_FAIL(A3_ERR_IO, "cannot create %s: %s", to, strerror(e));
  }
  char *buf = malloc(1 << 20);
  a3_status s = buf ? A3_OK : A3_FAIL(A3_ERR_NOMEM, "out of memory copying %s", from);
  while (s == A3_OK) {
    const ssize_t got = read(in, buf, 1 << 20);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) s = A3_FAIL(A3_ERR_IO, "cannot read %s: %s", from, strerror(errno));
    if (got <= 0) break;
    for (ssize_t off = 0; off < got && s == A3_OK;) {
      const ssize_t put = write(out, buf + off, (size_t)(got - off));
      if (put < 0 && errno == EINTR) continue;
      if (put < 0)
        s = A3_FAIL(A3_ERR_IO, "cannot write %s: %s", to, strerror(errno));
      else
        off += put;
    }
  }
  free(buf);
  close(in);
  if (close(out) != 0 && s == A3_OK)
    s = A3_FAIL(A3_ERR_IO, "cannot write %s: %s", to, strerror(errno));
  return s;
}

// Rows [first, first + count) of dataset d from src to dst (same shapes).
static a3_status copy_rows(const dataset_spec *d, hid_t src, hid_t dst, int64_t first,
                           int64_t count, void *buf, const char *src_path, const char *dst_path) {
  hsize_t start[MAX_RANK] = {0}, cnt[MAX_RANK];
  memcpy(cnt, d->dims, sizeof cnt);
  start[0] = (hsize_t)first;
  cnt[0] = (hsize_t)count;
  const hsize_t elems = (hsize_t)count * (hsize_t)(d->row_bytes / H5Tget_size(d->type));
  hid_t mspace = H5Screate_simple(1, &elems, NULL);
  hid_t sspace = H5Dget_space(src), dspace = H5Dget_space(dst);
  H5Sselect_hyperslab(sspace, H5S_SELECT_SET, start, NULL, cnt, NULL);
  H5Sselect_hyperslab(dspace, H5S_SELECT_SET, start, NULL, cnt, NULL);
  a3_status s = A3_OK;
  if (H5Dread(src, d->type, mspace, sspace, H5P_DEFAULT, buf) < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot read /%s%s", src_path, d->name, a3_h5_detail());
  else if (H5Dwrite(dst, d->type, mspace, dspace, H5P_DEFAULT, buf) < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot write /%s%s", dst_path, d->name, a3_h5_detail());
  H5Sclose(mspace);
  H5Sclose(sspace);
  H5Sclose(dspace);
  return s;
}

// Every per-point row of the points other inputs started, from those inputs.
static a3_status copy_dataset(const dataset_spec *d, const input *in, const int *owner,
                              hid_t out_file, const char *out_path) {
  const int64_t n = in[0].n_points;
  if (d->ndims < 1 || (int64_t)d->dims[0] != n || d->row_bytes == 0) return A3_OK; // not per point
  int64_t max_rows = COPY_CHUNK_BYTES / (int64_t)d->row_bytes;
  if (max_rows < 1) max_rows = 1;
  void *buf = NULL;
  A3_TRY(a3_alloc(&buf, (size_t)(max_rows < n ? max_rows : n) * d->row_bytes, 1));
  hid_t dst = H5Dopen2(out_file, d->name, H5P_DEFAULT);
  a3_status s =
      dst >= 0 ? A3_OK
               : A3_FAIL(A3_ERR_HDF5, "%s: cannot open /%s%s", out_path, d->name, a3_h5_detail());
  for (int64_t i = 0; i < n && s == A3_OK;) {
    const int k = owner[i];
    int64_t end = i + 1;
    while (end < n && owner[end] == k && end - i < max_rows) end++;
    if (k > 0) { // input 0's rows are already in the copy
      hid_t src = H5Dopen2(in[k].file, d->name, H5P_DEFAULT);
      if (src < 0)
        s = A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s is missing", in[k].path, d->name);
      else {
        s = copy_rows(d, src, dst, i, end - i, buf, in[k].path, out_path);
        H5Dclose(src);
      }
    }
    i = end;
  }
  if (dst >= 0) H5Dclose(dst);
  free(buf);
  return s;
}

// Points left running by a killed job are pending in the merged file (as a
// resume would make them); returns the final counts.
static a3_status finish_status(hid_t f, const char *path, int64_t n, a3_merge_summary *sum) {
  int8_t *status = NULL;
  A3_TRY(a3_alloc((void **)&status, (size_t)n + 1, 1));
  hid_t ds = H5Dopen2(f, "status", H5P_DEFAULT);
  a3_status s = A3_OK;
  if (ds < 0 || (n > 0 && H5Dread(ds, H5T_NATIVE_INT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, status) < 0))
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot read /status%s", path, a3_h5_detail());
  bool any_running = false;
  for (int64_t i = 0; s == A3_OK && i < n; i++) {
    if (status[i] == A3_POINT_RUNNING) {
      status[i] = A3_POINT_PENDING;
      any_running = true;
    }
    if (status[i] == A3_POINT_DONE)
      sum->done++;
    else if (a3_point_failed(status[i]))
      sum->failed++;
    else
      sum->pending++;
    sum->diverged += status[i] == A3_POINT_DIVERGED;
  }
  if (s == A3_OK && any_running &&
      H5Dwrite(ds, H5T_NATIVE_INT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, status) < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot write /status%s", path, a3_h5_detail());
  if (ds >= 0) H5Dclose(ds);
  free(status);
  return s;
}

static a3_status write_output(const char *tmp, const char *out_path, const input *in, int n_inputs,
                              const dataset_list *list, const int *owner, a3_merge_summary *sum) {
  A3_TRY(copy_bytes(in[0].path, tmp));
  hid_t f = H5Fopen(tmp, H5F_ACC_RDWR, H5P_DEFAULT);
  if (f < 0) return A3_FAIL(A3_ERR_IO, "cannot open %s%s%s", tmp, a3_h5_detail(), lock_hint());
  a3_status s = A3_OK;
  for (int d = 0; d < list->n && s == A3_OK; d++)
    s = copy_dataset(&list->ds[d], in, owner, f, out_path);
  if (s == A3_OK) s = finish_status(f, tmp, in[0].n_points, sum);
  if (s == A3_OK) {
    const char **paths = NULL;
    s = a3_alloc((void **)&paths, (size_t)n_inputs, sizeof *paths);
    for (int k = 0; s == A3_OK && k < n_inputs; k++) paths[k] = in[k].path;
    char where[1100];
    snprintf(where, sizeof where, "%s: /", out_path);
    if (s == A3_OK) {
      if (H5Aexists(f, "merged_from") > 0) H5Adelete(f, "merged_from");
      s = a3_h5_write_strings_attr(f, "merged_from", paths, n_inputs, where);
    }
    free(paths);
  }
  if (H5Fclose(f) < 0 && s == A3_OK)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot close%s", tmp, a3_h5_detail());
  return s;
}

static bool same_file(const char *a, const char *b) {
  struct stat sa, sb;
  return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

a3_status a3_results_merge(const char *out_path, const char *const *inputs, int n_inputs,
                           bool force, a3_merge_summary *sum) {
  a3_h5_quiet();
  memset(sum, 0, sizeof *sum);
  if (n_inputs < 1)
    return A3_FAIL(A3_ERR_USAGE, "a3fta merge: give the output file and at least one input");
  for (int k = 0; k < n_inputs; k++) {
    if (!strcmp(inputs[k], out_path) || same_file(inputs[k], out_path))
      return A3_FAIL(A3_ERR_USAGE, "a3fta merge: %s is both the output and an input", out_path);
    for (int j = 0; j < k; j++)
      if (!strcmp(inputs[j], inputs[k]) || same_file(inputs[j], inputs[k]))
        return A3_FAIL(A3_ERR_USAGE, "a3fta merge: %s is given twice as an input", inputs[k]);
  }
  if (!force && access(out_path, F_OK) == 0)
    return A3_FAIL(A3_ERR_USAGE, "a3fta merge: %s exists; remove it or pass --force", out_path);
  input *in = NULL;
  int *owner = NULL;
  dataset_list list = {0};
  A3_TRY(a3_alloc((void **)&in, (size_t)n_inputs, sizeof *in));
  for (int k = 0; k < n_inputs; k++) {
    in[k].path = inputs[k];
    in[k].file = H5I_INVALID_HID;
  }
  a3_status s = A3_OK;
  for (int k = 0; k < n_inputs && s == A3_OK; k++) s = load_input(&in[k]);
  if (s == A3_OK) s = check_inputs(in, n_inputs);
  if (s == A3_OK) s = list_datasets(in[0].file, in[0].path, &list);
  for (int k = 1; k < n_inputs && s == A3_OK; k++) s = check_same_datasets(&list, &in[0], &in[k]);
  if (s == A3_OK) s = a3_alloc((void **)&owner, (size_t)in[0].n_points + 1, sizeof *owner);
  if (s == A3_OK) s = assign_points(in, n_inputs, owner);
  char *tmp = NULL;
  if (s == A3_OK) s = a3_alloc((void **)&tmp, strlen(out_path) + 16, 1);
  if (s == A3_OK) {
    sprintf(tmp, "%s.partial", out_path);
    sum->n_points = in[0].n_points;
    for (int64_t i = 0; i < in[0].n_points; i++)
      if (owner[i] < 0) sum->not_started++;
    s = write_output(tmp, out_path, in, n_inputs, &list, owner, sum);
    if (s == A3_OK) s = a3_publish_file(tmp, out_path);
    if (s != A3_OK) unlink(tmp);
  }
  free(tmp);
  free_list(&list);
  for (int k = 0; k < n_inputs; k++) {
    if (in[k].file >= 0) H5Fclose(in[k].file);
    free(in[k].hash);
    free(in[k].status);
    free(in[k].attempts);
  }
  free(in);
  free(owner);
  A3_TRY(s);
  return A3_OK;
}
