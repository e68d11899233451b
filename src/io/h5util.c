// HDF5 helpers: quiet error handling and typed attribute access.
#include "io/h5util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void a3_h5_quiet(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static herr_t keep_innermost(unsigned n, const H5E_error2_t *err, void *data) {
  if (n == 0 && err->desc) snprintf(data, 512, " (HDF5: %s)", err->desc);
  return 0;
}

const char *a3_h5_detail(void) {
  static _Thread_local char detail[512];
  detail[0] = '\0';
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, detail);
  return detail;
}

void a3_h5_free_strings(char **strings, int count) {
  if (!strings) return;
  for (int i = 0; i < count; i++) free(strings[i]);
  free(strings);
}

static a3_status copy_string(const char *s, size_t len, char **out) {
  A3_TRY(a3_alloc((void **)out, len + 1, 1));
  if (len) memcpy(*out, s, len);
  return A3_OK;
}

a3_status a3_h5_attr_exists(hid_t obj, const char *name, const char *where, int *exists) {
  htri_t e = H5Aexists(obj, name);
  if (e < 0)
    return A3_FAIL(A3_ERR_HDF5, "%s: cannot check for attribute '%s'%s", where, name,
                   a3_h5_detail());
  *exists = e > 0;
  return A3_OK;
}

static a3_status open_attr(hid_t obj, const char *name, const char *where, hid_t *attr) {
  int exists = 0;
  A3_TRY(a3_h5_attr_exists(obj, name, where, &exists));
  if (!exists) return A3_FAIL(A3_ERR_INPUT, "%s: attribute '%s' is missing", where, name);
  *attr = H5Aopen(obj, name, H5P_DEFAULT);
  if (*attr < 0)
    return A3_FAIL(A3_ERR_HDF5, "%s: cannot open attribute '%s'%s", where, name, a3_h5_detail());
  return A3_OK;
}

// Variable-length strings: HDF5 allocates each, we copy and reclaim them.
static a3_status read_vlen(hid_t attr, hid_t file_type, int n, char **out, const char *what) {
  hid_t mem = H5Tcopy(H5T_C_S1);
  H5Tset_size(mem, H5T_VARIABLE);
  H5Tset_cset(mem, H5Tget_cset(file_type));
  hid_t space = H5Aget_space(attr);
  char **raw = NULL;
  a3_status s = a3_alloc((void **)&raw, (size_t)n, sizeof *raw);
  if (s == A3_OK && H5Aread(attr, mem, raw) < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot read%s", what, a3_h5_detail());
  else if (s == A3_OK) {
    for (int i = 0; i < n && s == A3_OK; i++)
      s = copy_string(raw[i] ? raw[i] : "", raw[i] ? strlen(raw[i]) : 0, &out[i]);
    H5Dvlen_reclaim(mem, space, H5P_DEFAULT, raw);
  }
  free(raw);
  H5Sclose(space);
  H5Tclose(mem);
  return s;
}

// Fixed-length strings: n slots of `len` bytes, NUL-terminated or padded.
static a3_status read_fixed(hid_t attr, hid_t file_type, int n, char **out, const char *what) {
  const size_t len = H5Tget_size(file_type);
  const int space_padded = H5Tget_strpad(file_type) == H5T_STR_SPACEPAD;
  char *raw = NULL;
  A3_TRY(a3_alloc((void **)&raw, (size_t)n * len + 1, 1));
  hid_t mem = H5Tcopy(file_type);
  a3_status s = A3_OK;
  if (H5Aread(attr, mem, raw) < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot read%s", what, a3_h5_detail());
  for (int i = 0; i < n && s == A3_OK; i++) {
    const char *slot = raw + (size_t)i * len;
    size_t used = 0;
    while (used < len && slot[used]) used++;
    while (space_padded && used > 0 && slot[used - 1] == ' ') used--;
    s = copy_string(slot, used, &out[i]);
  }
  H5Tclose(mem);
  free(raw);
  return s;
}

// Reads a scalar or 1-D string attribute of either kind into `n` strings.
static a3_status read_strings(hid_t attr, const char *what, int want_scalar, char ***out, int *n) {
  hid_t type = H5Aget_type(attr), space = H5Aget_space(attr);
  const int rank = H5Sget_simple_extent_ndims(space);
  const hssize_t points = H5Sget_simple_extent_npoints(space);
  a3_status s = A3_OK;
  if (H5Tget_class(type) != H5T_STRING || rank < 0 || rank > 1 || (want_scalar && points != 1))
    s = A3_FAIL(A3_ERR_INPUT, "%s: expected %s, found another type or shape (rank %d)", what,
                want_scalar ? "a string" : "a 1-D array of strings", rank);
  *n = (int)points;
  if (s == A3_OK) s = a3_alloc((void **)out, (size_t)*n, sizeof **out);
  if (s == A3_OK && H5Tis_variable_str(type) > 0)
    s = read_vlen(attr, type, *n, *out, what);
  else if (s == A3_OK)
    s = read_fixed(attr, type, *n, *out, what);
  if (s != A3_OK) {
    a3_h5_free_strings(*out, *n);
    *out = NULL;
  }
  H5Sclose(space);
  H5Tclose(type);
  return s;
}

a3_status a3_h5_read_strings_attr(hid_t obj, const char *name, const char *where, char ***out,
                                  int *count) {
  char what[1024];
  snprintf(what, sizeof what, "%s: attribute '%s'", where, name);
  hid_t attr = H5I_INVALID_HID;
  A3_TRY(open_attr(obj, name, where, &attr));
  a3_status s = read_strings(attr, what, 0, out, count);
  H5Aclose(attr);
  A3_TRY(s);
  return A3_OK;
}

a3_status a3_h5_read_string_attr(hid_t obj, const char *name, const char *where, char **out) {
  char what[1024];
  snprintf(what, sizeof what, "%s: attribute '%s'", where, name);
  hid_t attr = H5I_INVALID_HID;
  A3_TRY(open_attr(obj, name, where, &attr));
  char **strings = NULL;
  int n = 0;
  a3_status s = read_strings(attr, what, 1, &strings, &n);
  H5Aclose(attr);
  A3_TRY(s);
  *out = strings[0];
  free(strings);
  return A3_OK;
}

a3_status a3_h5_read_int_attr(hid_t obj, const char *name, const char *where, int64_t *out) {
  hid_t attr = H5I_INVALID_HID;
  A3_TRY(open_attr(obj, name, where, &attr));
  hid_t type = H5Aget_type(attr), space = H5Aget_space(attr);
  a3_status s = A3_OK;
  if (H5Tget_class(type) != H5T_INTEGER || H5Sget_simple_extent_npoints(space) != 1)
    s = A3_FAIL(A3_ERR_INPUT,
                "%s: attribute '%s': expected one integer, found another type "
                "or shape",
                where, name);
  else if (H5Aread(attr, H5T_NATIVE_INT64, out) < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot read attribute '%s'%s", where, name, a3_h5_detail());
  H5Sclose(space);
  H5Tclose(type);
  H5Aclose(attr);
  return s;
}

static a3_status write_attr(hid_t obj, const char *name, hid_t file_type, hid_t mem_type,
                            hid_t space, const void *buf, const char *where) {
  hid_t attr = H5Acreate2(obj, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT);
  herr_t rc = attr < 0 ? -1 : H5Awrite(attr, mem_type, buf);
  if (attr >= 0) H5Aclose(attr);
  if (rc < 0)
    return A3_FAIL(A3_ERR_HDF5, "%s: cannot write attribute '%s'%s", where, name, a3_h5_detail());
  return A3_OK;
}

static hid_t vlen_utf8_type(void) {
  hid_t t = H5Tcopy(H5T_C_S1);
  H5Tset_size(t, H5T_VARIABLE);
  H5Tset_cset(t, H5T_CSET_UTF8);
  return t;
}

a3_status a3_h5_write_string_attr(hid_t obj, const char *name, const char *value,
                                  const char *where) {
  hid_t type = vlen_utf8_type(), space = H5Screate(H5S_SCALAR);
  a3_status s = write_attr(obj, name, type, type, space, &value, where);
  H5Sclose(space);
  H5Tclose(type);
  return s;
}

a3_status a3_h5_write_strings_attr(hid_t obj, const char *name, const char *const *values,
                                   int count, const char *where) {
  const hsize_t dims[1] = {(hsize_t)count};
  hid_t type = vlen_utf8_type(), space = H5Screate_simple(1, dims, NULL);
  a3_status s = write_attr(obj, name, type, type, space, values, where);
  H5Sclose(space);
  H5Tclose(type);
  return s;
}

a3_status a3_h5_write_int_attr(hid_t obj, const char *name, int32_t value, const char *where) {
  hid_t space = H5Screate(H5S_SCALAR);
  a3_status s = write_attr(obj, name, H5T_STD_I32LE, H5T_NATIVE_INT32, space, &value, where);
  H5Sclose(space);
  return s;
}

a3_status a3_h5_close_and_publish(hid_t *file, const char *tmp_path, const char *path) {
  const herr_t rc = H5Fclose(*file);
  *file = H5I_INVALID_HID;
  if (rc < 0)
    return A3_FAIL(A3_ERR_HDF5, "%s: cannot close the file%s; is the disk full?", tmp_path,
                   a3_h5_detail());
  A3_TRY(a3_publish_file(tmp_path, path));
  return A3_OK;
}
