// Generic HDF5 checkpoint files: named float32 tensors in groups, plus
// attributes (a3fta/checkpoint.h). Serial HDF5 (default file driver): one
// rank writes, atomically via "<path>.tmp" + fsync + rename.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/checkpoint.h"

#include "io/h5util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { MAX_LISTED_MISSING = 5 }; // names quoted in a "missing tensors" error

int64_t a3_ckpt_spec_numel(const a3_ckpt_spec *spec) {
  int64_t n = 1;
  for (int d = 0; d < spec->ndim; d++) n *= spec->shape[d];
  return n;
}

void a3_ckpt_format_shape(int ndim, const int64_t *shape, char *buf, size_t size) {
  size_t used = (size_t)snprintf(buf, size, "(");
  for (int d = 0; d < ndim && used < size; d++)
    used += (size_t)snprintf(buf + used, size - used, "%s%lld", d ? ", " : "", (long long)shape[d]);
  if (used < size) snprintf(buf + used, size - used, ")");
}

static a3_status dup_string(const char *s, char **out) {
  const size_t len = strlen(s);
  A3_TRY(a3_alloc((void **)out, len + 1, 1));
  memcpy(*out, s, len + 1);
  return A3_OK;
}

static int is_root(const char *group) { return !group || !group[0] || !strcmp(group, "/"); }

// "params" -> "/params"; the root -> "/" (for messages).
static const char *slash_path(const char *group, char *buf, size_t size) {
  snprintf(buf, size, "/%s", is_root(group) ? "" : (group[0] == '/' ? group + 1 : group));
  return buf;
}

// ---------------------------------------------------------------- writing

struct a3_ckpt_writer {
  char *path, *tmp_path;
  hid_t file;
};

static hid_t tracked_gcpl(void) {
  hid_t gcpl = H5Pcreate(H5P_GROUP_CREATE);
  H5Pset_link_creation_order(gcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
  return gcpl;
}

// Opens `group`, creating it and its parents (each tracking link order) if needed.
static a3_status writer_group(a3_ckpt_writer *w, const char *group, hid_t *out) {
  if (is_root(group)) {
    *out = H5Gopen2(w->file, "/", H5P_DEFAULT);
    return *out < 0 ? A3_FAIL(A3_ERR_HDF5, "%s: cannot open /%s", w->tmp_path, a3_h5_detail())
                    : A3_OK;
  }
  char prefix[1024];
  const size_t len = strlen(group);
  if (len >= sizeof prefix || group[0] == '/' || group[len - 1] == '/')
    return A3_FAIL(A3_ERR_INTERNAL, "%s: bad group name '%s'", w->tmp_path, group);
  for (size_t i = 0; i <= len; i++) {
    if (group[i] != '/' && group[i] != '\0') continue;
    memcpy(prefix, group, i);
    prefix[i] = '\0';
    const htri_t exists = H5Lexists(w->file, prefix, H5P_DEFAULT);
    if (exists > 0) continue;
    hid_t gcpl = tracked_gcpl();
    hid_t g = exists < 0 ? -1 : H5Gcreate2(w->file, prefix, H5P_DEFAULT, gcpl, H5P_DEFAULT);
    H5Pclose(gcpl);
    if (g < 0)
      return A3_FAIL(A3_ERR_HDF5, "%s: cannot create group /%s%s", w->tmp_path, prefix,
                     a3_h5_detail());
    H5Gclose(g);
  }
  *out = H5Gopen2(w->file, group, H5P_DEFAULT);
  if (*out < 0)
    return A3_FAIL(A3_ERR_HDF5, "%s: cannot open group /%s%s", w->tmp_path, group, a3_h5_detail());
  return A3_OK;
}

static a3_status write_format_attrs(a3_ckpt_writer *w) {
  hid_t root = H5I_INVALID_HID;
  A3_TRY(writer_group(w, "/", &root));
  char where[1100];
  snprintf(where, sizeof where, "%s: /", w->tmp_path);
  a3_status s = a3_h5_write_string_attr(root, "format", A3_CHECKPOINT_FORMAT, where);
  if (s == A3_OK)
    s = a3_h5_write_int_attr(root, "format_version", A3_CHECKPOINT_FORMAT_VERSION, where);
  H5Gclose(root);
  return s;
}

a3_status a3_ckpt_create(const char *path, a3_ckpt_writer **out) {
  *out = NULL;
  a3_ckpt_writer *w = NULL;
  A3_TRY(A3_ALLOC(w, 1));
  w->file = H5I_INVALID_HID;
  a3_h5_quiet();
  a3_status s = dup_string(path, &w->path);
  if (s == A3_OK) s = a3_alloc((void **)&w->tmp_path, strlen(path) + 5, 1);
  if (s == A3_OK) {
    snprintf(w->tmp_path, strlen(path) + 5, "%s.tmp", path);
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    H5Pset_link_creation_order(fcpl, H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    w->file = H5Fcreate(w->tmp_path, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    if (w->file < 0)
      s = A3_FAIL(A3_ERR_IO, "cannot create %s%s; does the folder exist and is it writable?",
                  w->tmp_path, a3_h5_detail());
  }
  if (s == A3_OK) s = write_format_attrs(w);
  if (s != A3_OK) {
    a3_error_trace(__FILE__, __LINE__);
    a3_ckpt_discard(w);
    return s;
  }
  *out = w;
  return A3_OK;
}

// Opens the group, removes an older attribute of that name, then runs write().
static a3_status write_attr(a3_ckpt_writer *w, const char *group, const char *name,
                            const char *svalue, const int64_t *ivalue) {
  hid_t g = H5I_INVALID_HID;
  A3_TRY(writer_group(w, group, &g));
  char gpath[1024], where[2200];
  snprintf(where, sizeof where, "%s: %s", w->tmp_path, slash_path(group, gpath, sizeof gpath));
  a3_status s = A3_OK;
  if (H5Aexists(g, name) > 0 && H5Adelete(g, name) < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot replace attribute '%s'%s", where, name, a3_h5_detail());
  if (s == A3_OK && svalue) s = a3_h5_write_string_attr(g, name, svalue, where);
  if (s == A3_OK && ivalue) {
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t attr = H5Acreate2(g, name, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT);
    if (attr < 0 || H5Awrite(attr, H5T_NATIVE_INT64, ivalue) < 0)
      s = A3_FAIL(A3_ERR_HDF5, "%s: cannot write attribute '%s'%s", where, name, a3_h5_detail());
    if (attr >= 0) H5Aclose(attr);
    H5Sclose(space);
  }
  H5Gclose(g);
  return s;
}

a3_status a3_ckpt_write_attr_string(a3_ckpt_writer *w, const char *group, const char *name,
                                    const char *value) {
  A3_TRY(write_attr(w, group, name, value, NULL));
  return A3_OK;
}

a3_status a3_ckpt_write_attr_int(a3_ckpt_writer *w, const char *group, const char *name,
                                 int64_t value) {
  A3_TRY(write_attr(w, group, name, NULL, &value));
  return A3_OK;
}

static a3_status check_spec(const char *file, const char *gpath, const a3_ckpt_spec *spec) {
  if (!spec->name || !spec->name[0] || strchr(spec->name, '/') || !strcmp(spec->name, ".") ||
      spec->ndim < 0 || spec->ndim > A3_CKPT_MAX_DIMS)
    return A3_FAIL(A3_ERR_INTERNAL, "%s: %s: bad tensor name '%s' or rank %d", file, gpath,
                   spec->name ? spec->name : "(null)", spec->ndim);
  for (int d = 0; d < spec->ndim; d++)
    if (spec->shape[d] < 0)
      return A3_FAIL(A3_ERR_INTERNAL, "%s: %s/%s: negative dimension", file, gpath, spec->name);
  return A3_OK;
}

static hid_t make_space(int ndim, const int64_t *shape) {
  if (ndim == 0) return H5Screate(H5S_SCALAR);
  hsize_t dims[A3_CKPT_MAX_DIMS];
  for (int d = 0; d < ndim; d++) dims[d] = (hsize_t)shape[d];
  return H5Screate_simple(ndim, dims, NULL);
}

a3_status a3_ckpt_write_tensor(a3_ckpt_writer *w, const char *group, const a3_ckpt_spec *spec,
                               const float *data) {
  char gpath[1024];
  slash_path(group, gpath, sizeof gpath);
  A3_TRY(check_spec(w->tmp_path, gpath, spec));
  hid_t g = H5I_INVALID_HID;
  A3_TRY(writer_group(w, group, &g));
  a3_status s = A3_OK;
  if (H5Lexists(g, spec->name, H5P_DEFAULT) != 0)
    s = A3_FAIL(A3_ERR_INTERNAL, "%s: %s/%s written twice", w->tmp_path, gpath, spec->name);
  hid_t space = make_space(spec->ndim, spec->shape);
  hid_t ds = s != A3_OK ? -1
                        : H5Dcreate2(g, spec->name, H5T_IEEE_F32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                                     H5P_DEFAULT);
  if (s == A3_OK && ds < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot create %s/%s%s", w->tmp_path, gpath, spec->name,
                a3_h5_detail());
  // An empty tensor has nothing to write (and data may be NULL).
  if (s == A3_OK && a3_ckpt_spec_numel(spec) > 0 &&
      H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot write %s/%s%s; is the disk full?", w->tmp_path, gpath,
                spec->name, a3_h5_detail());
  if (ds >= 0) H5Dclose(ds);
  H5Sclose(space);
  H5Gclose(g);
  return s;
}

a3_status a3_ckpt_commit(a3_ckpt_writer *w) {
  const a3_status s = a3_h5_close_and_publish(&w->file, w->tmp_path, w->path);
  if (s != A3_OK) {
    a3_error_trace(__FILE__, __LINE__);
    a3_ckpt_discard(w);
    return s;
  }
  free(w->path);
  free(w->tmp_path);
  free(w);
  return A3_OK;
}

void a3_ckpt_discard(a3_ckpt_writer *w) {
  if (!w) return;
  if (w->file >= 0) H5Fclose(w->file);
  if (w->tmp_path) remove(w->tmp_path);
  free(w->path);
  free(w->tmp_path);
  free(w);
}

// ---------------------------------------------------------------- reading

struct a3_ckpt_reader {
  char *path;
  hid_t file;
};

const char *a3_ckpt_path(const a3_ckpt_reader *r) { return r->path; }

static a3_status check_format(a3_ckpt_reader *r) {
  char where[1100];
  snprintf(where, sizeof where, "%s: /", r->path);
  int exists = 0;
  A3_TRY(a3_h5_attr_exists(r->file, "format", where, &exists));
  if (!exists)
    return A3_FAIL(A3_ERR_INPUT, "%s is not an a3fta checkpoint (no 'format' attribute)", r->path);
  char *format = NULL;
  A3_TRY(a3_h5_read_string_attr(r->file, "format", where, &format));
  const int ok = !strcmp(format, A3_CHECKPOINT_FORMAT);
  a3_status s = ok ? A3_OK
                   : A3_FAIL(A3_ERR_INPUT, "%s is not an a3fta checkpoint: its format is '%s'",
                             r->path, format);
  free(format);
  A3_TRY(s);
  int64_t version = 0;
  A3_TRY(a3_h5_read_int_attr(r->file, "format_version", where, &version));
  if (version < 1 || version > A3_CHECKPOINT_FORMAT_VERSION)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: checkpoint format_version %lld; this a3fta reads version %d (a newer "
                   "a3fta wrote it?)",
                   r->path, (long long)version, A3_CHECKPOINT_FORMAT_VERSION);
  return A3_OK;
}

a3_status a3_ckpt_open(const char *path, a3_ckpt_reader **out) {
  *out = NULL;
  a3_h5_quiet();
  if (access(path, R_OK) != 0)
    return A3_FAIL(A3_ERR_IO, "cannot read checkpoint %s: %s", path, strerror(errno));
  if (H5Fis_hdf5(path) <= 0)
    return A3_FAIL(A3_ERR_INPUT, "%s is not an HDF5 file (so not an a3fta checkpoint)", path);
  a3_ckpt_reader *r = NULL;
  A3_TRY(A3_ALLOC(r, 1));
  r->file = H5I_INVALID_HID;
  a3_status s = dup_string(path, &r->path);
  if (s == A3_OK) {
    r->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->file < 0) s = A3_FAIL(A3_ERR_IO, "cannot open %s%s", path, a3_h5_detail());
  }
  if (s == A3_OK) s = check_format(r);
  if (s != A3_OK) {
    a3_error_trace(__FILE__, __LINE__);
    a3_ckpt_close(r);
    return s;
  }
  *out = r;
  return A3_OK;
}

void a3_ckpt_close(a3_ckpt_reader *r) {
  if (!r) return;
  if (r->file >= 0) H5Fclose(r->file);
  free(r->path);
  free(r);
}

// Whether `group` exists as a group, walking its components (H5Lexists
// fails rather than answering "no" when a parent is missing).
bool a3_ckpt_has_group(const a3_ckpt_reader *r, const char *group) {
  if (is_root(group)) return true;
  char prefix[1024];
  const size_t len = strlen(group);
  if (len >= sizeof prefix) return false;
  for (size_t i = 0; i <= len; i++) {
    if (group[i] != '/' && group[i] != '\0') continue;
    memcpy(prefix, group, i);
    prefix[i] = '\0';
    if (i == 0 || H5Lexists(r->file, prefix, H5P_DEFAULT) <= 0) return false;
  }
  H5O_info_t info;
  if (H5Oget_info_by_name2(r->file, group, &info, H5O_INFO_BASIC, H5P_DEFAULT) < 0) return false;
  return info.type == H5O_TYPE_GROUP;
}

static a3_status reader_group(const a3_ckpt_reader *r, const char *group, hid_t *out) {
  char gpath[1024];
  if (!a3_ckpt_has_group(r, group))
    return A3_FAIL(A3_ERR_INPUT, "%s: group %s is missing", r->path,
                   slash_path(group, gpath, sizeof gpath));
  *out = H5Gopen2(r->file, is_root(group) ? "/" : group, H5P_DEFAULT);
  if (*out < 0)
    return A3_FAIL(A3_ERR_HDF5, "%s: cannot open %s%s", r->path,
                   slash_path(group, gpath, sizeof gpath), a3_h5_detail());
  return A3_OK;
}

a3_status a3_ckpt_read_attr_string(const a3_ckpt_reader *r, const char *group, const char *name,
                                   char **out) {
  hid_t g = H5I_INVALID_HID;
  A3_TRY(reader_group(r, group, &g));
  char gpath[1024], where[2200];
  snprintf(where, sizeof where, "%s: %s", r->path, slash_path(group, gpath, sizeof gpath));
  a3_status s = a3_h5_read_string_attr(g, name, where, out);
  H5Gclose(g);
  A3_TRY(s);
  return A3_OK;
}

a3_status a3_ckpt_read_attr_int(const a3_ckpt_reader *r, const char *group, const char *name,
                                int64_t *out) {
  hid_t g = H5I_INVALID_HID;
  A3_TRY(reader_group(r, group, &g));
  char gpath[1024], where[2200];
  snprintf(where, sizeof where, "%s: %s", r->path, slash_path(group, gpath, sizeof gpath));
  a3_status s = a3_h5_read_int_attr(g, name, where, out);
  H5Gclose(g);
  A3_TRY(s);
  return A3_OK;
}

void a3_ckpt_free_names(char **names, int count) { a3_h5_free_strings(names, count); }

typedef struct {
  char **names;
  int count, cap;
  a3_status status;
} name_walk;

static herr_t add_dataset_name(hid_t group, const char *name, const H5L_info_t *info, void *data) {
  name_walk *walk = data;
  H5O_info_t obj;
  if (info->type != H5L_TYPE_HARD ||
      H5Oget_info_by_name2(group, name, &obj, H5O_INFO_BASIC, H5P_DEFAULT) < 0 ||
      obj.type != H5O_TYPE_DATASET)
    return 0;
  if (walk->count == walk->cap) {
    const int cap = walk->cap ? 2 * walk->cap : 64;
    char **grown = realloc(walk->names, (size_t)cap * sizeof *grown);
    if (!grown) {
      walk->status = A3_FAIL(A3_ERR_NOMEM, "cannot list %d tensor names", cap);
      return -1;
    }
    walk->names = grown;
    walk->cap = cap;
  }
  walk->status = dup_string(name, &walk->names[walk->count]);
  if (walk->status != A3_OK) return -1;
  walk->count++;
  return 0;
}

a3_status a3_ckpt_list(const a3_ckpt_reader *r, const char *group, char ***names, int *count) {
  *names = NULL;
  *count = 0;
  hid_t g = H5I_INVALID_HID;
  A3_TRY(reader_group(r, group, &g));
  name_walk walk = {NULL, 0, 0, A3_OK};
  hsize_t idx = 0;
  // Creation order where the writer tracked it (ours does), else by name.
  herr_t rc = H5Literate(g, H5_INDEX_CRT_ORDER, H5_ITER_INC, &idx, add_dataset_name, &walk);
  if (rc < 0 && walk.status == A3_OK && walk.count == 0) {
    idx = 0;
    rc = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, &idx, add_dataset_name, &walk);
  }
  H5Gclose(g);
  a3_status s = walk.status;
  char gpath[1024];
  if (s == A3_OK && rc < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot list %s%s", r->path,
                slash_path(group, gpath, sizeof gpath), a3_h5_detail());
  if (s != A3_OK) {
    a3_ckpt_free_names(walk.names, walk.count);
    A3_TRY(s);
  }
  *names = walk.names;
  *count = walk.count;
  return A3_OK;
}

// "file.h5: /params/conv_in.bias" (for messages).
static void tensor_where(const a3_ckpt_reader *r, const char *gpath, const char *name, char *buf,
                         size_t size) {
  snprintf(buf, size, "%s: %s/%s", r->path, strcmp(gpath, "/") ? gpath : "", name);
}

// Opens dataset `name` of g (at `where`, for messages).
static a3_status open_dataset(hid_t g, const char *name, const char *where, hid_t *ds) {
  if (!name[0] || strchr(name, '/') || H5Lexists(g, name, H5P_DEFAULT) <= 0)
    return A3_FAIL(A3_ERR_INPUT, "%s is missing", where);
  *ds = H5Dopen2(g, name, H5P_DEFAULT);
  if (*ds < 0) return A3_FAIL(A3_ERR_INPUT, "%s: not a dataset%s", where, a3_h5_detail());
  return A3_OK;
}

// Checks that dataset `ds` (at `where`) is float with exactly spec's shape.
static a3_status check_dataset(hid_t ds, const a3_ckpt_spec *spec, const char *where) {
  hid_t type = H5Dget_type(ds), space = H5Dget_space(ds);
  const H5T_class_t cls = H5Tget_class(type);
  const int ndim = H5Sget_simple_extent_ndims(space);
  hsize_t dims[H5S_MAX_RANK] = {0};
  if (ndim > 0 && ndim <= H5S_MAX_RANK) H5Sget_simple_extent_dims(space, dims, NULL);
  H5Tclose(type);
  H5Sclose(space);
  if (cls != H5T_FLOAT) return A3_FAIL(A3_ERR_INPUT, "%s: not a floating-point tensor", where);
  int same = ndim == spec->ndim;
  for (int d = 0; same && d < ndim; d++) same = (int64_t)dims[d] == spec->shape[d];
  if (same) return A3_OK;
  char got[256] = "?", want[256];
  int64_t file_shape[H5S_MAX_RANK];
  for (int d = 0; d < ndim && d < H5S_MAX_RANK; d++) file_shape[d] = (int64_t)dims[d];
  if (ndim >= 0) a3_ckpt_format_shape(ndim, file_shape, got, sizeof got);
  a3_ckpt_format_shape(spec->ndim, spec->shape, want, sizeof want);
  return A3_FAIL(A3_ERR_INPUT, "%s: shape %s in the file, %s expected", where, got, want);
}

// Opens and checks group/spec->name; reads it into dst when dst is not NULL.
static a3_status read_checked(const a3_ckpt_reader *r, hid_t g, const char *gpath,
                              const a3_ckpt_spec *spec, float *dst) {
  char where[2200];
  tensor_where(r, gpath, spec->name, where, sizeof where);
  hid_t ds = H5I_INVALID_HID;
  A3_TRY(open_dataset(g, spec->name, where, &ds));
  a3_status s = check_dataset(ds, spec, where);
  if (s == A3_OK && dst && a3_ckpt_spec_numel(spec) > 0 &&
      H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot read%s", where, a3_h5_detail());
  H5Dclose(ds);
  return s;
}

a3_status a3_ckpt_read_tensor(const a3_ckpt_reader *r, const char *group, const a3_ckpt_spec *spec,
                              float *dst) {
  hid_t g = H5I_INVALID_HID;
  A3_TRY(reader_group(r, group, &g));
  char gpath[1024];
  a3_status s = read_checked(r, g, slash_path(group, gpath, sizeof gpath), spec, dst);
  H5Gclose(g);
  A3_TRY(s);
  return A3_OK;
}

// The shape of dataset `name` in g (spec->name is left to the caller).
static a3_status dataset_shape(hid_t g, const char *name, const char *where, a3_ckpt_spec *spec) {
  hid_t ds = H5I_INVALID_HID;
  A3_TRY(open_dataset(g, name, where, &ds));
  hid_t space = H5Dget_space(ds);
  const int ndim = H5Sget_simple_extent_ndims(space);
  hsize_t dims[H5S_MAX_RANK] = {0};
  if (ndim > 0 && ndim <= A3_CKPT_MAX_DIMS) H5Sget_simple_extent_dims(space, dims, NULL);
  H5Sclose(space);
  H5Dclose(ds);
  if (ndim < 0 || ndim > A3_CKPT_MAX_DIMS)
    return A3_FAIL(A3_ERR_INPUT, "%s: %d dimensions (at most %d)", where, ndim, A3_CKPT_MAX_DIMS);
  spec->ndim = ndim;
  for (int d = 0; d < ndim; d++) spec->shape[d] = (int64_t)dims[d];
  return A3_OK;
}

a3_status a3_ckpt_tensor_spec(const a3_ckpt_reader *r, const char *group, const char *name,
                              a3_ckpt_spec *out) {
  hid_t g = H5I_INVALID_HID;
  A3_TRY(reader_group(r, group, &g));
  char gpath[1024], where[2200];
  tensor_where(r, slash_path(group, gpath, sizeof gpath), name, where, sizeof where);
  *out = (a3_ckpt_spec){name, 0, {0}};
  const a3_status s = dataset_shape(g, name, where, out);
  H5Gclose(g);
  A3_TRY(s);
  return A3_OK;
}

typedef struct {
  const char *name;
  int index; // in the listed order
} named_index;

static int cmp_named(const void *a, const void *b) {
  return strcmp(((const named_index *)a)->name, ((const named_index *)b)->name);
}

// Marks which listed names some item asks for (sorted copy + binary search).
static a3_status match_items(char **names, int n_names, a3_ckpt_item *items, int n_items,
                             unsigned char *wanted) {
  named_index *sorted = NULL;
  A3_TRY(A3_ALLOC(sorted, (size_t)n_names + 1));
  for (int j = 0; j < n_names; j++) sorted[j] = (named_index){names[j], j};
  qsort(sorted, (size_t)n_names, sizeof *sorted, cmp_named);
  for (int i = 0; i < n_items; i++) {
    const named_index key = {items[i].spec.name, -1};
    const named_index *hit = bsearch(&key, sorted, (size_t)n_names, sizeof *sorted, cmp_named);
    items[i].found = hit != NULL;
    if (hit) wanted[hit->index] = 1;
  }
  free(sorted);
  return A3_OK;
}

static a3_status missing_error(const a3_ckpt_reader *r, const char *gpath,
                               const a3_ckpt_item *items, int n_items) {
  char list[1024] = "";
  size_t used = 0;
  int missing = 0;
  for (int i = 0; i < n_items; i++) {
    if (items[i].found || items[i].optional) continue;
    if (++missing <= MAX_LISTED_MISSING && used < sizeof list)
      used += (size_t)snprintf(list + used, sizeof list - used, "%s%s/%s", missing > 1 ? ", " : "",
                               strcmp(gpath, "/") ? gpath : "", items[i].spec.name);
  }
  if (!missing) return A3_OK;
  return A3_FAIL(A3_ERR_INPUT, "%s: %d expected tensor%s missing: %s%s", r->path, missing,
                 missing == 1 ? " is" : "s are", list, missing > MAX_LISTED_MISSING ? ", ..." : "");
}

static a3_status collect_extra(char **names, int n_names, const unsigned char *wanted,
                               char ***extra, int *n_extra) {
  *n_extra = 0;
  for (int j = 0; j < n_names; j++) *n_extra += !wanted[j];
  if (!extra) return A3_OK;
  *extra = NULL;
  if (*n_extra == 0) return A3_OK;
  A3_TRY(A3_ALLOC(*extra, (size_t)*n_extra));
  int k = 0;
  for (int j = 0; j < n_names; j++)
    if (!wanted[j]) {
      (*extra)[k++] = names[j];
      names[j] = NULL; // moved
    }
  return A3_OK;
}

// Checks every name and shape, then reads: a bad file changes nothing.
static a3_status read_set_from(const a3_ckpt_reader *r, hid_t g, const char *gpath,
                               a3_ckpt_item *items, int n_items) {
  for (int pass = 0; pass < 2; pass++)
    for (int i = 0; i < n_items; i++)
      if (items[i].found)
        A3_TRY(read_checked(r, g, gpath, &items[i].spec, pass ? items[i].dst : NULL));
  return A3_OK;
}

a3_status a3_ckpt_read_set(const a3_ckpt_reader *r, const char *group, a3_ckpt_item *items,
                           int n_items, char ***extra, int *n_extra) {
  if (extra) *extra = NULL;
  *n_extra = 0;
  char **names = NULL;
  int n_names = 0;
  A3_TRY(a3_ckpt_list(r, group, &names, &n_names));
  unsigned char *wanted = NULL;
  a3_status s = a3_alloc((void **)&wanted, (size_t)n_names + 1, 1);
  if (s == A3_OK) s = match_items(names, n_names, items, n_items, wanted);
  char gpath[1024];
  slash_path(group, gpath, sizeof gpath);
  if (s == A3_OK) s = missing_error(r, gpath, items, n_items);
  hid_t g = H5I_INVALID_HID;
  if (s == A3_OK) s = reader_group(r, group, &g);
  if (s == A3_OK) s = read_set_from(r, g, gpath, items, n_items);
  if (g >= 0) H5Gclose(g);
  if (s == A3_OK) s = collect_extra(names, n_names, wanted, extra, n_extra);
  free(wanted);
  a3_ckpt_free_names(names, n_names);
  A3_TRY(s);
  return A3_OK;
}
