// Reading the fixtures of tools/scheduler_reference.py (and, from
// tests/train, tools/optim_reference.py) and comparing arrays with a
// tolerance while recording the worst error (for the test's summary).
#ifndef A3FTA_TESTS_DIFFUSION_GOLDEN_H
#define A3FTA_TESTS_DIFFUSION_GOLDEN_H

#include <hdf5.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// Reads dataset `name` of `file` converted to `type` (elements of `size`
// bytes) into a new buffer; *numel gets its element count. NULL when absent
// (silently: optional datasets exist) or unreadable (with a message).
static inline void *golden_read(hid_t file, const char *name, hid_t type, size_t size,
                                int64_t *numel) {
  if (H5Lexists(file, name, H5P_DEFAULT) <= 0) return NULL;
  hid_t d = H5Dopen2(file, name, H5P_DEFAULT);
  hid_t sp = H5Dget_space(d);
  const hssize_t n = H5Sget_simple_extent_npoints(sp);
  void *buf = malloc((size_t)(n > 0 ? n : 1) * size);
  if (buf && H5Dread(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
    free(buf);
    buf = NULL;
  }
  H5Sclose(sp);
  H5Dclose(d);
  if (!buf) fprintf(stderr, "cannot read %s\n", name);
  *numel = n;
  return buf;
}

static inline float *golden_f32(hid_t file, const char *name, int64_t *numel) {
  return golden_read(file, name, H5T_NATIVE_FLOAT, sizeof(float), numel);
}

static inline double *golden_f64(hid_t file, const char *name, int64_t *numel) {
  return golden_read(file, name, H5T_NATIVE_DOUBLE, sizeof(double), numel);
}

static inline int32_t *golden_i32(hid_t file, const char *name, int64_t *numel) {
  return golden_read(file, name, H5T_NATIVE_INT32, sizeof(int32_t), numel);
}

static inline int64_t *golden_i64(hid_t file, const char *name, int64_t *numel) {
  return golden_read(file, name, H5T_NATIVE_INT64, sizeof(int64_t), numel);
}

// Numeric attribute `attr` of object `obj` as a double (NaN when absent).
static inline double golden_attr(hid_t file, const char *obj, const char *attr) {
  double v = NAN;
  if (H5Aexists_by_name(file, obj, attr, H5P_DEFAULT) <= 0) return v;
  hid_t a = H5Aopen_by_name(file, obj, attr, H5P_DEFAULT, H5P_DEFAULT);
  if (H5Aread(a, H5T_NATIVE_DOUBLE, &v) < 0) v = NAN;
  H5Aclose(a);
  return v;
}

// Distance in units in the last place between two finite floats.
static inline int64_t ulp_diff(float a, float b) {
  int32_t ia, ib;
  memcpy(&ia, &a, 4);
  memcpy(&ib, &b, 4);
  const int64_t la = ia < 0 ? (int64_t)INT32_MIN - ia : ia;
  const int64_t lb = ib < 0 ? (int64_t)INT32_MIN - ib : ib;
  return la > lb ? la - lb : lb - la;
}

typedef struct {
  double max_abs, max_rel; // worst |got - want| and |got - want| / |want|
  int64_t max_ulp, bad;    // worst ulp distance; elements beyond atol + rtol |want|
} golden_err;

static inline void golden_compare(golden_err *e, const float *got, const float *want, int64_t n,
                                  double rtol, double atol) {
  for (int64_t i = 0; i < n; i++) {
    const double d = fabs((double)got[i] - (double)want[i]);
    if (!(d <= atol + rtol * fabs((double)want[i]))) e->bad++;
    if (d > e->max_abs) e->max_abs = d;
    if (want[i] != 0 && d / fabs((double)want[i]) > e->max_rel) e->max_rel = d / fabs(want[i]);
    const int64_t u = ulp_diff(got[i], want[i]);
    if (u > e->max_ulp) e->max_ulp = u;
  }
}

#endif
