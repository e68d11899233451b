// Opening and validating a dataset file on a communicator (MPI-IO driver).
#define _POSIX_C_SOURCE 200809L
#include "io/dataset_internal.h"
#include "io/h5util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { SPLIT_NAME_MAX = 255 };

static const char not_dataset_hint[] =
    "not an a3fta dataset (no 'format' attribute); create one with 'a3fta import'";

static a3_status dup_string(const char *s, char **out) {
  A3_TRY(a3_alloc((void **)out, strlen(s) + 1, 1));
  memcpy(*out, s, strlen(s));
  return A3_OK;
}

a3_status a3_ds_agree(const a3_dataset *ds, a3_status local, const char *what) {
  int mine[2] = {(int)local, ds->rank}, worst[2] = {0, 0};
  if (MPI_Allreduce(mine, worst, 1, MPI_2INT, MPI_MAXLOC, ds->comm) != MPI_SUCCESS)
    return A3_FAIL(A3_ERR_MPI, "%s: MPI_Allreduce failed while ranks compared their status of %s",
                   ds->path, what);
  if (local != A3_OK || worst[0] == A3_OK) return local;
  return A3_FAIL((a3_status)worst[0], "%s: %s failed on rank %d (its message says why)", ds->path,
                 what, worst[1]);
}

a3_status a3_ds_find_split(const a3_dataset *ds, const char *name, a3_ds_split **out) {
  char have[512] = "";
  for (int i = 0; i < ds->n_splits; i++) {
    if (!strcmp(ds->splits[i].name, name)) {
      *out = &ds->splits[i];
      return A3_OK;
    }
    if (strlen(have) + strlen(ds->splits[i].name) + 3 < sizeof have) {
      if (have[0]) strcat(have, ", ");
      strcat(have, ds->splits[i].name);
    }
  }
  return A3_FAIL(A3_ERR_INPUT, "%s: no split '%s'; the file has: %s", ds->path, name, have);
}

// ---------------------------------------------------------------- opening

// Why H5Fopen failed, in the user's terms.
static a3_status open_failure(const char *path) {
  if (access(path, R_OK) != 0)
    return A3_FAIL(A3_ERR_IO, "cannot read %s: %s", path, strerror(errno));
  if (H5Fis_hdf5(path) <= 0)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s is not an HDF5 file; a3fta datasets are HDF5 files made by "
                   "'a3fta import'",
                   path);
  return A3_FAIL(A3_ERR_HDF5,
                 "cannot open %s%s (on a network file system, try "
                 "HDF5_USE_FILE_LOCKING=FALSE)",
                 path, a3_h5_detail());
}

a3_status a3_file_format(const char *path, char *format, size_t cap) {
  a3_h5_quiet();
  format[0] = '\0';
  if (access(path, R_OK) == 0 && H5Fis_hdf5(path) <= 0)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s is not an HDF5 file (a3fta's datasets, results files and checkpoints are; "
                   "a safetensors file's name ends in .safetensors)",
                   path);
  hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (file < 0) A3_TRY(open_failure(path));
  int exists = 0;
  char *value = NULL;
  a3_status s = a3_h5_attr_exists(file, "format", path, &exists);
  if (s == A3_OK && exists) s = a3_h5_read_string_attr(file, "format", path, &value);
  if (s == A3_OK && value) snprintf(format, cap, "%s", value);
  free(value);
  H5Fclose(file);
  A3_TRY(s);
  return A3_OK;
}

static a3_status open_file(a3_dataset *ds) {
  hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
  H5Pset_fapl_mpio(fapl, ds->comm, MPI_INFO_NULL);
  ds->file = H5Fopen(ds->path, H5F_ACC_RDONLY, fapl);
  H5Pclose(fapl);
  if (ds->file < 0) A3_TRY(open_failure(ds->path));
  return A3_OK;
}

static a3_status read_root_attrs(a3_dataset *ds) {
  char *format = NULL;
  int64_t version = 0, num_classes = 0;
  int exists = 0, n_names = 0;
  A3_TRY(a3_h5_attr_exists(ds->file, "format", ds->path, &exists));
  if (!exists) return A3_FAIL(A3_ERR_INPUT, "%s: %s", ds->path, not_dataset_hint);
  A3_TRY(a3_h5_read_string_attr(ds->file, "format", ds->path, &format));
  const int is_dataset = !strcmp(format, A3_DATASET_FORMAT);
  if (!is_dataset)
    a3_error_set(A3_ERR_INPUT, __FILE__, __LINE__, "%s: a '%s' file, not an a3fta dataset ('%s')",
                 ds->path, format, A3_DATASET_FORMAT);
  free(format);
  if (!is_dataset) return A3_ERR_INPUT;
  A3_TRY(a3_h5_read_int_attr(ds->file, "format_version", ds->path, &version));
  if (version != A3_DATASET_FORMAT_VERSION)
    return A3_FAIL(A3_ERR_INPUT, "%s: format_version %lld, this a3fta reads version %d; %s",
                   ds->path, (long long)version, A3_DATASET_FORMAT_VERSION,
                   version > A3_DATASET_FORMAT_VERSION ? "upgrade a3fta" : "re-import the data");
  A3_TRY(a3_h5_read_int_attr(ds->file, "num_classes", ds->path, &num_classes));
  A3_TRY(a3_h5_read_strings_attr(ds->file, "class_names", ds->path, &ds->class_names, &n_names));
  ds->num_classes = n_names; // owns the strings from here on, whatever the checks say
  if (num_classes < 1 || num_classes != n_names)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: attribute num_classes = %lld but class_names has %d "
                   "entries; expected num_classes >= 1 names",
                   ds->path, (long long)num_classes, n_names);
  A3_TRY(a3_h5_attr_exists(ds->file, "source", ds->path, &exists));
  if (exists) A3_TRY(a3_h5_read_string_attr(ds->file, "source", ds->path, &ds->source));
  if (!exists) A3_TRY(dup_string("", &ds->source));
  return A3_OK;
}

// ---------------------------------------------------------------- splits

typedef struct {
  a3_dataset *ds;
  a3_status status;
} split_walk;

static herr_t add_split_name(hid_t group, const char *name, const H5L_info_t *info, void *data) {
  split_walk *walk = data;
  H5O_info_t obj;
  if (info->type != H5L_TYPE_HARD ||
      H5Oget_info_by_name2(group, name, &obj, H5O_INFO_BASIC, H5P_DEFAULT) < 0)
    return 0;
  if (obj.type != H5O_TYPE_GROUP) return 0; // other root objects are not splits
  a3_dataset *ds = walk->ds;
  a3_ds_split *grown = realloc(ds->splits, (size_t)(ds->n_splits + 1) * sizeof *grown);
  if (!grown) {
    walk->status = A3_FAIL(A3_ERR_NOMEM, "cannot list the splits of %s", ds->path);
    return -1;
  }
  ds->splits = grown;
  a3_ds_split *split = &ds->splits[ds->n_splits++];
  memset(split, 0, sizeof *split);
  split->images = H5I_INVALID_HID;
  walk->status = dup_string(name, &split->name);
  return walk->status == A3_OK ? 0 : -1;
}

// Root groups in creation order where the file tracks it, else by name.
static a3_status list_splits(a3_dataset *ds) {
  split_walk walk = {ds, A3_OK};
  hsize_t idx = 0;
  herr_t rc = H5Literate(ds->file, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, add_split_name, &walk);
  if (rc < 0 && walk.status == A3_OK && ds->n_splits == 0) {
    idx = 0;
    rc = H5Literate(ds->file, H5_INDEX_NAME, H5_ITER_INC, &idx, add_split_name, &walk);
  }
  A3_TRY(walk.status);
  if (rc < 0) return A3_FAIL(A3_ERR_HDF5, "%s: cannot list groups%s", ds->path, a3_h5_detail());
  if (ds->n_splits == 0)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: no splits: expected groups such as /train holding images "
                   "and labels",
                   ds->path);
  return A3_OK;
}

static void shape_text(int rank, const hsize_t *dims, char *buf, size_t cap) {
  int used = snprintf(buf, cap, "(");
  for (int d = 0; d < rank && used > 0 && (size_t)used < cap; d++)
    used += snprintf(buf + used, cap - (size_t)used, d ? ", %llu" : "%llu",
                     (unsigned long long)dims[d]);
  if (used > 0 && (size_t)used < cap) snprintf(buf + used, cap - (size_t)used, ")");
}

// Opens /<split>/<name> and checks it is an integer of `bytes` bytes and
// `sign` with `rank` dimensions, returning its shape.
static a3_status open_checked(const a3_dataset *ds, const a3_ds_split *split, const char *name,
                              const char *expect, size_t bytes, H5T_sign_t sign, int rank,
                              hsize_t *dims, hid_t *out) {
  char where[1024];
  snprintf(where, sizeof where, "%s: /%s/%s", ds->path, split->name, name);
  hid_t group = H5Gopen2(ds->file, split->name, H5P_DEFAULT);
  const htri_t exists = group < 0 ? -1 : H5Lexists(group, name, H5P_DEFAULT);
  *out = exists > 0 ? H5Dopen2(group, name, H5P_DEFAULT) : H5I_INVALID_HID;
  if (group >= 0) H5Gclose(group);
  if (exists == 0) return A3_FAIL(A3_ERR_INPUT, "%s: missing; expected %s", where, expect);
  if (*out < 0)
    return A3_FAIL(A3_ERR_INPUT, "%s: not a dataset%s; expected %s", where, a3_h5_detail(), expect);
  hid_t type = H5Dget_type(*out), space = H5Dget_space(*out);
  const int found_rank = H5Sget_simple_extent_ndims(space);
  hsize_t found[H5S_MAX_RANK] = {0};
  H5Sget_simple_extent_dims(space, found, NULL);
  const int type_ok =
      H5Tget_class(type) == H5T_INTEGER && H5Tget_size(type) == bytes && H5Tget_sign(type) == sign;
  H5Tclose(type);
  H5Sclose(space);
  char shape[128];
  shape_text(found_rank, found, shape, sizeof shape);
  if (!type_ok || found_rank != rank)
    return A3_FAIL(A3_ERR_INPUT, "%s: expected %s, found %s of shape %s", where, expect,
                   type_ok ? "the right type" : "another type", shape);
  memcpy(dims, found, (size_t)rank * sizeof *dims);
  return A3_OK;
}

static a3_status check_images(const a3_dataset *ds, a3_ds_split *split) {
  hsize_t dims[4];
  A3_TRY(open_checked(ds, split, "images", "uint8 of shape (N, C, H, W)", 1, H5T_SGN_NONE, 4, dims,
                      &split->images));
  if (dims[1] < 1 || dims[1] > A3_DATASET_MAX_CHANNELS || dims[2] < 1 || dims[3] < 1 ||
      dims[2] > 65535 || dims[3] > 65535)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: /%s/images: expected (N, C, H, W) with 1 <= C <= %d and 1 <= H, W <= "
                   "65535, found (%llu, %llu, %llu, %llu)",
                   ds->path, split->name, A3_DATASET_MAX_CHANNELS, (unsigned long long)dims[0],
                   (unsigned long long)dims[1], (unsigned long long)dims[2],
                   (unsigned long long)dims[3]);
  split->n = (int64_t)dims[0];
  split->channels = (int)dims[1];
  split->height = (int)dims[2];
  split->width = (int)dims[3];
  return A3_OK;
}

static a3_status read_labels(const a3_dataset *ds, a3_ds_split *split, hid_t labels) {
  A3_TRY(A3_ALLOC(split->labels, (size_t)split->n));
  if (split->n > 0 &&
      H5Dread(labels, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, split->labels) < 0)
    return A3_FAIL(A3_ERR_HDF5, "%s: /%s/labels: cannot read%s", ds->path, split->name,
                   a3_h5_detail());
  for (int64_t i = 0; i < split->n; i++)
    if (split->labels[i] < 0 || split->labels[i] >= ds->num_classes)
      return A3_FAIL(A3_ERR_INPUT,
                     "%s: /%s/labels[%lld] = %d is outside [0, num_classes = %d); the root "
                     "attribute class_names names %d classes",
                     ds->path, split->name, (long long)i, split->labels[i], ds->num_classes,
                     ds->num_classes);
  return A3_OK;
}

static a3_status check_labels(const a3_dataset *ds, a3_ds_split *split) {
  char expect[128];
  snprintf(expect, sizeof expect, "int32 of shape (N) with N = %lld to match /%s/images",
           (long long)split->n, split->name);
  hsize_t dims[1];
  hid_t labels = H5I_INVALID_HID;
  a3_status s = open_checked(ds, split, "labels", expect, 4, H5T_SGN_2, 1, dims, &labels);
  if (s == A3_OK && (int64_t)dims[0] != split->n)
    s = A3_FAIL(A3_ERR_INPUT, "%s: /%s/labels: expected %s, found (%llu)", ds->path, split->name,
                expect, (unsigned long long)dims[0]);
  if (s == A3_OK) s = read_labels(ds, split, labels);
  if (labels >= 0) H5Dclose(labels);
  A3_TRY(s);
  return A3_OK;
}

static a3_status validate(a3_dataset *ds) {
  A3_TRY(read_root_attrs(ds));
  A3_TRY(list_splits(ds));
  for (int i = 0; i < ds->n_splits; i++) {
    A3_TRY(check_images(ds, &ds->splits[i]));
    A3_TRY(check_labels(ds, &ds->splits[i]));
  }
  return A3_OK;
}

static a3_status start(MPI_Comm comm, const char *path, a3_dataset *ds) {
  if (MPI_Comm_dup(comm, &ds->comm) != MPI_SUCCESS)
    return A3_FAIL(A3_ERR_MPI, "%s: MPI_Comm_dup failed", path);
  MPI_Comm_rank(ds->comm, &ds->rank);
  MPI_Comm_size(ds->comm, &ds->size);
  A3_TRY(dup_string(path, &ds->path));
  return A3_OK;
}

a3_status a3_dataset_open(MPI_Comm comm, const char *path, a3_dataset **out) {
  a3_h5_quiet();
  *out = NULL;
  a3_dataset *ds = NULL;
  A3_TRY(A3_ALLOC(ds, 1));
  ds->comm = MPI_COMM_NULL;
  ds->file = H5I_INVALID_HID;
  a3_status s = start(comm, path, ds);
  if (s == A3_OK) s = open_file(ds); // collective: fails on all ranks or none
  if (s == A3_OK) s = validate(ds);
  if (ds->comm != MPI_COMM_NULL && ds->path) s = a3_ds_agree(ds, s, "opening the dataset");
  if (s != A3_OK) {
    a3_error_trace(__FILE__, __LINE__);
    a3_dataset_close(ds);
    return s;
  }
  *out = ds;
  return A3_OK;
}

void a3_dataset_close(a3_dataset *ds) {
  if (!ds) return;
  for (int i = 0; i < ds->n_splits; i++) {
    if (ds->splits[i].images >= 0) H5Dclose(ds->splits[i].images);
    free(ds->splits[i].name);
    free(ds->splits[i].labels);
  }
  free(ds->splits);
  if (ds->file >= 0) H5Fclose(ds->file); // collective with the MPI-IO driver
  a3_h5_free_strings(ds->class_names, ds->num_classes);
  free(ds->source);
  free(ds->path);
  if (ds->comm != MPI_COMM_NULL) MPI_Comm_free(&ds->comm);
  free(ds);
}

// ---------------------------------------------------------------- accessors

const char *a3_dataset_path(const a3_dataset *ds) { return ds->path; }
const char *a3_dataset_source(const a3_dataset *ds) { return ds->source ? ds->source : ""; }
int a3_dataset_num_classes(const a3_dataset *ds) { return ds->num_classes; }
int a3_dataset_num_splits(const a3_dataset *ds) { return ds->n_splits; }

const char *a3_dataset_class_name(const a3_dataset *ds, int cls) {
  return cls >= 0 && cls < ds->num_classes ? ds->class_names[cls] : NULL;
}

const char *a3_dataset_split_name(const a3_dataset *ds, int i) {
  return i >= 0 && i < ds->n_splits ? ds->splits[i].name : NULL;
}

a3_status a3_dataset_split_info(const a3_dataset *ds, const char *split, a3_split_info *out) {
  a3_ds_split *s = NULL;
  A3_TRY(a3_ds_find_split(ds, split, &s));
  out->name = s->name;
  out->n = s->n;
  out->channels = s->channels;
  out->height = s->height;
  out->width = s->width;
  out->num_classes = ds->num_classes;
  out->labels = s->labels;
  return A3_OK;
}
