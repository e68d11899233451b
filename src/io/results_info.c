// a3fta info on a results file: one row per grid point (index, status, the
// varied keys, final loss, wall time, step timings, every metric, parameter
// counts, failure reason) as an aligned table or as CSV. Serial read (default driver) of a
// closed file.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/results.h"
#include "io/h5util.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// A column of cells; a NULL cell is a missing number ("-" in the table,
// empty in CSV).
typedef struct {
  char header[A3_RESULT_KEY_MAX + 16];
  char **cells;
} column;

typedef struct {
  const char *path;
  hid_t file;
  int64_t n;
  bool csv;
  int8_t *status;
  char **keys; // varied key paths (root attribute varied_keys)
  int n_keys;
  column *cols;
  int n_cols, cap_cols;
  int64_t timing_ranks; // R of /timing/compute_s (N, R); 0: the file has no /timing
  bool has_params;      // /trainable_params and /total_params (absent in older files)
  unsigned status_mask; // rows printed: bit (1 << status) set; 0 = all
} table;

static bool shown(const table *t, int64_t row) {
  const int s = t->status[row];
  return !t->status_mask || (s >= 0 && s < 32 && (t->status_mask >> s & 1u));
}

static a3_status dup_cell(const char *text, char **out) {
  const size_t len = strlen(text) + 1;
  A3_TRY(a3_alloc((void **)out, len, 1));
  memcpy(*out, text, len);
  return A3_OK;
}

static a3_status add_column(table *t, const char *header, column **out) {
  if (t->n_cols == t->cap_cols)
    return A3_FAIL(A3_ERR_INTERNAL, "%s: more result columns than planned", t->path);
  column *c = &t->cols[t->n_cols];
  snprintf(c->header, sizeof c->header, "%s", header);
  A3_TRY(a3_alloc((void **)&c->cells, (size_t)t->n, sizeof *c->cells));
  t->n_cols++;
  *out = c;
  return A3_OK;
}

// Shortest of %.15g / %.17g that reads back exactly (CSV), %.6g for the table.
static void format_double(double v, bool csv, char *buf, size_t size) {
  snprintf(buf, size, "%.*g", csv ? 15 : 6, v);
  if (csv && strtod(buf, NULL) != v) snprintf(buf, size, "%.17g", v);
}

// Opens a 1-D dataset of n rows (n < 0: any length, returned in *n).
static a3_status open_rows(table *t, const char *name, int64_t *n, hid_t *out) {
  hid_t ds = H5Dopen2(t->file, name, H5P_DEFAULT);
  if (ds < 0)
    return A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s is missing; is this an a3fta results file?",
                   t->path, name);
  hid_t space = H5Dget_space(ds);
  hsize_t dims[1] = {0};
  const int nd = H5Sget_simple_extent_ndims(space);
  if (nd == 1) H5Sget_simple_extent_dims(space, dims, NULL);
  H5Sclose(space);
  if (nd != 1 || (*n >= 0 && (int64_t)dims[0] != *n)) {
    H5Dclose(ds);
    return A3_FAIL(A3_ERR_INPUT, "%s: /%s is not one value per point (%lld points)", t->path, name,
                   (long long)*n);
  }
  *n = (int64_t)dims[0];
  *out = ds;
  return A3_OK;
}

static a3_status read_rows(table *t, const char *name, hid_t memtype, void *buf) {
  int64_t n = t->n;
  hid_t ds = H5I_INVALID_HID;
  A3_TRY(open_rows(t, name, &n, &ds));
  a3_status s = A3_OK;
  if (n > 0 && H5Dread(ds, memtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot read /%s%s", t->path, name, a3_h5_detail());
  H5Dclose(ds);
  return s;
}

static a3_status fill_doubles(table *t, column *c, const double *v) {
  char buf[64];
  for (int64_t i = 0; i < t->n; i++) {
    if (isnan(v[i])) continue;
    format_double(v[i], t->csv, buf, sizeof buf);
    A3_TRY(dup_cell(buf, &c->cells[i]));
  }
  return A3_OK;
}

static a3_status add_double_column(table *t, const char *name, const char *header) {
  double *v = NULL;
  A3_TRY(a3_alloc((void **)&v, (size_t)t->n, sizeof *v));
  column *c = NULL;
  a3_status s = read_rows(t, name, H5T_NATIVE_DOUBLE, v);
  if (s == A3_OK) s = add_column(t, header, &c);
  if (s == A3_OK) s = fill_doubles(t, c, v);
  free(v);
  return s;
}

static a3_status fill_ints(table *t, column *c, const int64_t *v) {
  char buf[32];
  for (int64_t i = 0; i < t->n; i++) {
    snprintf(buf, sizeof buf, "%lld", (long long)v[i]);
    A3_TRY(dup_cell(buf, &c->cells[i]));
  }
  return A3_OK;
}

static a3_status add_int_key(table *t, const char *name, column *c) {
  int64_t *v = NULL;
  A3_TRY(a3_alloc((void **)&v, (size_t)t->n, sizeof *v));
  a3_status s = read_rows(t, name, H5T_NATIVE_INT64, v);
  if (s == A3_OK) s = fill_ints(t, c, v);
  free(v);
  return s;
}

static a3_status add_float_key(table *t, const char *name, column *c) {
  double *v = NULL;
  A3_TRY(a3_alloc((void **)&v, (size_t)t->n, sizeof *v));
  a3_status s = read_rows(t, name, H5T_NATIVE_DOUBLE, v);
  if (s == A3_OK) s = fill_doubles(t, c, v);
  free(v);
  return s;
}

// Fixed-length strings read in their stored type (every string-valued
// dataset the writer makes); cells get blank where skip[i] (may be NULL).
static a3_status fill_strings(table *t, column *c, const char *name, hid_t type, const bool *skip) {
  const size_t len = H5Tget_size(type);
  char *buf = NULL;
  A3_TRY(a3_alloc((void **)&buf, (size_t)t->n * len + 1, 1));
  a3_status s = read_rows(t, name, type, buf);
  char *one = NULL;
  if (s == A3_OK) s = a3_alloc((void **)&one, len + 1, 1);
  for (int64_t i = 0; i < t->n && s == A3_OK; i++) {
    memcpy(one, buf + (size_t)i * len, len);
    one[len] = '\0';
    s = dup_cell(skip && skip[i] ? "" : one, &c->cells[i]);
  }
  free(one);
  free(buf);
  return s;
}

// The (file) type of a fixed-length string dataset, read as it is stored;
// H5I_INVALID_HID when the dataset is missing or not fixed-length strings.
static hid_t string_type(table *t, const char *name) {
  hid_t ds = H5Dopen2(t->file, name, H5P_DEFAULT);
  if (ds < 0) return H5I_INVALID_HID;
  hid_t type = H5Dget_type(ds);
  H5Dclose(ds);
  if (H5Tget_class(type) == H5T_STRING && H5Tis_variable_str(type) == 0) return type;
  H5Tclose(type);
  return H5I_INVALID_HID;
}

static a3_status add_key_column(table *t, const char *key) {
  char name[A3_RESULT_KEY_MAX + 16];
  snprintf(name, sizeof name, "points/%s", key);
  hid_t ds = H5Dopen2(t->file, name, H5P_DEFAULT);
  if (ds < 0)
    return A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s (a varied key) is missing", t->path, name);
  hid_t type = H5Dget_type(ds);
  const H5T_class_t cls = H5Tget_class(type);
  H5Tclose(type);
  H5Dclose(ds);
  column *c = NULL;
  A3_TRY(add_column(t, key, &c));
  if (cls == H5T_INTEGER) return add_int_key(t, name, c);
  if (cls == H5T_FLOAT) return add_float_key(t, name, c);
  hid_t stype = cls == H5T_STRING ? string_type(t, name) : H5I_INVALID_HID;
  if (stype >= 0) {
    const a3_status s = fill_strings(t, c, name, stype, NULL);
    H5Tclose(stype);
    return s;
  }
  return A3_FAIL(A3_ERR_INPUT, "%s: /%s is neither integers, floats nor fixed-length strings",
                 t->path, name);
}

// The varied keys in the root attribute's order (none when it is absent).
static a3_status read_keys(table *t) {
  char where[1100];
  snprintf(where, sizeof where, "%s: /", t->path);
  int exists = 0;
  A3_TRY(a3_h5_attr_exists(t->file, "varied_keys", where, &exists));
  if (!exists) return A3_OK;
  return a3_h5_read_strings_attr(t->file, "varied_keys", where, &t->keys, &t->n_keys);
}

static a3_status add_point_status(table *t) {
  column *point = NULL, *status = NULL;
  A3_TRY(add_column(t, "point", &point));
  A3_TRY(add_column(t, "status", &status));
  char buf[32];
  for (int64_t i = 0; i < t->n; i++) {
    snprintf(buf, sizeof buf, "%lld", (long long)i);
    A3_TRY(dup_cell(buf, &point->cells[i]));
    A3_TRY(dup_cell(a3_point_status_name(t->status[i]), &status->cells[i]));
  }
  return A3_OK;
}

static a3_status add_reason(table *t) {
  hid_t type = string_type(t, "reason");
  if (type < 0) return A3_FAIL(A3_ERR_INPUT, "%s: /reason is not fixed-length strings", t->path);
  bool *skip = NULL;
  a3_status s = a3_alloc((void **)&skip, (size_t)t->n, sizeof *skip);
  for (int64_t i = 0; i < t->n && s == A3_OK; i++) skip[i] = !a3_point_failed(t->status[i]);
  column *c = NULL;
  if (s == A3_OK) s = add_column(t, "reason", &c);
  if (s == A3_OK) s = fill_strings(t, c, "reason", type, skip);
  free(skip);
  H5Tclose(type);
  return s;
}

// ---------------------------------------------------------------- step timings
// /timing/<name> (N, R) as doubles (t->n * R).
static a3_status read_per_rank(table *t, const char *name, double *v) {
  hid_t ds = H5Dopen2(t->file, name, H5P_DEFAULT);
  if (ds < 0) return A3_FAIL(A3_ERR_INPUT, "%s: dataset /%s is missing", t->path, name);
  hid_t space = H5Dget_space(ds);
  hsize_t dims[2] = {0, 0};
  const int nd = H5Sget_simple_extent_ndims(space);
  if (nd == 2) H5Sget_simple_extent_dims(space, dims, NULL);
  H5Sclose(space);
  a3_status s = A3_OK;
  if (nd != 2 || (int64_t)dims[0] != t->n || (int64_t)dims[1] != t->timing_ranks)
    s = A3_FAIL(A3_ERR_INPUT, "%s: /%s is not (%lld points, %lld ranks)", t->path, name,
                (long long)t->n, (long long)t->timing_ranks);
  else if (t->n > 0 && H5Dread(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot read /%s%s", t->path, name, a3_h5_detail());
  H5Dclose(ds);
  return s;
}

// The mean over a point's ranks (header), and with csv one column per rank
// (header_rK): NaN cells stay empty.
static a3_status add_per_rank(table *t, const char *name, const char *header) {
  const int64_t R = t->timing_ranks;
  double *v = NULL, *col = NULL;
  A3_TRY(a3_alloc((void **)&v, (size_t)(t->n * R + 1), sizeof *v));
  a3_status s = a3_alloc((void **)&col, (size_t)t->n + 1, sizeof *col);
  if (s == A3_OK) s = read_per_rank(t, name, v);
  for (int64_t i = 0; i < t->n && s == A3_OK; i++) {
    double sum = 0.0;
    for (int64_t k = 0; k < R; k++) sum += v[i * R + k];
    col[i] = sum / (double)R;
  }
  column *c = NULL;
  if (s == A3_OK) s = add_column(t, header, &c);
  if (s == A3_OK) s = fill_doubles(t, c, col);
  for (int64_t k = 0; k < R && t->csv && s == A3_OK; k++) {
    char head[64];
    snprintf(head, sizeof head, "%s_r%lld", header, (long long)k);
    for (int64_t i = 0; i < t->n; i++) col[i] = v[i * R + k];
    s = add_column(t, head, &c);
    if (s == A3_OK) s = fill_doubles(t, c, col);
  }
  free(col);
  free(v);
  return s;
}

// How many ranks /timing has columns for (0 without /timing: an older file).
static a3_status timing_ranks(table *t) {
  t->timing_ranks = 0;
  const htri_t has = H5Lexists(t->file, "timing", H5P_DEFAULT);
  if (has < 0)
    return A3_FAIL(A3_ERR_HDF5, "%s: cannot look for /timing%s", t->path, a3_h5_detail());
  if (has == 0) return A3_OK;
  hid_t ds = H5Dopen2(t->file, "timing/compute_s", H5P_DEFAULT);
  if (ds < 0) return A3_FAIL(A3_ERR_INPUT, "%s: dataset /timing/compute_s is missing", t->path);
  hid_t space = H5Dget_space(ds);
  hsize_t dims[2] = {0, 0};
  const int nd = H5Sget_simple_extent_ndims(space);
  if (nd == 2) H5Sget_simple_extent_dims(space, dims, NULL);
  H5Sclose(space);
  H5Dclose(ds);
  if (nd != 2 || dims[1] < 1 || dims[1] > 65536)
    return A3_FAIL(A3_ERR_INPUT, "%s: /timing/compute_s is not (points, ranks)", t->path);
  t->timing_ranks = (int64_t)dims[1];
  return A3_OK;
}

// Columns the step timings take: steps and grad_bytes (csv), compute and comm
// (mean, and per rank in csv), idle.
static int timing_columns(const table *t) {
  if (!t->timing_ranks) return 0;
  return t->csv ? 5 + 2 * (int)t->timing_ranks : 3;
}

static a3_status add_timing(table *t) {
  if (!t->timing_ranks) return A3_OK;
  if (t->csv) {
    column *c = NULL;
    A3_TRY(add_column(t, "steps", &c));
    A3_TRY(add_int_key(t, "timing/steps", c));
    A3_TRY(add_column(t, "grad_bytes", &c));
    A3_TRY(add_int_key(t, "timing/grad_bytes", c));
  }
  A3_TRY(add_per_rank(t, "timing/compute_s", "step_compute_s"));
  A3_TRY(add_per_rank(t, "timing/comm_s", "step_comm_s"));
  return add_double_column(t, "timing/idle_s", "idle_s");
}

// ---------------------------------------------------------------- parameter counts
// trainable_params, and total_params (CSV) or the trainable percentage
// (table); 0 (unknown) is a missing cell.
static a3_status add_params(table *t) {
  if (!t->has_params) return A3_OK;
  int64_t *v = NULL;
  A3_TRY(a3_alloc((void **)&v, (size_t)(2 * t->n + 1), sizeof *v));
  a3_status s = read_rows(t, "trainable_params", H5T_NATIVE_INT64, v);
  if (s == A3_OK) s = read_rows(t, "total_params", H5T_NATIVE_INT64, v + t->n);
  column *trainable = NULL, *other = NULL;
  if (s == A3_OK) s = add_column(t, "trainable_params", &trainable);
  if (s == A3_OK) s = add_column(t, t->csv ? "total_params" : "trainable_%", &other);
  char buf[64];
  for (int64_t i = 0; i < t->n && s == A3_OK; i++) {
    const int64_t n = v[i], all = v[t->n + i];
    if (n > 0) {
      snprintf(buf, sizeof buf, "%lld", (long long)n);
      s = dup_cell(buf, &trainable->cells[i]);
    }
    if (s == A3_OK && all > 0) {
      if (t->csv)
        snprintf(buf, sizeof buf, "%lld", (long long)all);
      else
        snprintf(buf, sizeof buf, "%.2f", 100.0 * (double)n / (double)all);
      if (t->csv || n > 0) s = dup_cell(buf, &other->cells[i]);
    }
  }
  free(v);
  return s;
}

static a3_status has_params(table *t) {
  const htri_t a = H5Lexists(t->file, "trainable_params", H5P_DEFAULT);
  const htri_t b = H5Lexists(t->file, "total_params", H5P_DEFAULT);
  if (a < 0 || b < 0)
    return A3_FAIL(A3_ERR_HDF5, "%s: cannot look for /trainable_params%s", t->path, a3_h5_detail());
  t->has_params = a > 0 && b > 0;
  return A3_OK;
}

static a3_status build_columns(table *t) {
  A3_TRY(add_point_status(t));
  for (int k = 0; k < t->n_keys; k++) A3_TRY(add_key_column(t, t->keys[k]));
  A3_TRY(add_double_column(t, "final_loss", "final_loss"));
  A3_TRY(add_double_column(t, "wall_s", "wall_s"));
  A3_TRY(add_timing(t));
  for (int m = 0; m < A3_RESULT_N_METRICS; m++) {
    char name[128];
    snprintf(name, sizeof name, "metrics/%s", a3_result_metric_name(m));
    A3_TRY(add_double_column(t, name, a3_result_metric_name(m)));
  }
  A3_TRY(add_params(t));
  return add_reason(t);
}

// ---------------------------------------------------------------- printing
static void csv_field(FILE *f, const char *s) {
  if (!s) return;
  if (!strpbrk(s, ",\"\r\n")) {
    fputs(s, f);
    return;
  }
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

static void print_csv(const table *t, FILE *f) {
  for (int c = 0; c < t->n_cols; c++) {
    if (c) fputc(',', f);
    csv_field(f, t->cols[c].header);
  }
  fputc('\n', f);
  for (int64_t i = 0; i < t->n; i++) {
    if (!shown(t, i)) continue;
    for (int c = 0; c < t->n_cols; c++) {
      if (c) fputc(',', f);
      csv_field(f, t->cols[c].cells[i]);
    }
    fputc('\n', f);
  }
}

static const char *table_cell(const column *c, int64_t i) {
  return c->cells[i] ? c->cells[i] : "-";
}

static int column_width(const table *t, const column *c) {
  size_t w = strlen(c->header);
  for (int64_t i = 0; i < t->n; i++)
    if (shown(t, i) && strlen(table_cell(c, i)) > w) w = strlen(table_cell(c, i));
  return (int)w;
}

static void print_summary(const table *t, FILE *f) {
  int64_t count[5] = {0};
  for (int64_t i = 0; i < t->n; i++)
    if (t->status[i] >= 0 && t->status[i] <= A3_POINT_DIVERGED) count[t->status[i]]++;
  fprintf(f,
          "results: %s\n%lld points: %lld done, %lld failed, %lld diverged, %lld pending, %lld "
          "running\n\n",
          t->path, (long long)t->n, (long long)count[A3_POINT_DONE],
          (long long)count[A3_POINT_FAILED], (long long)count[A3_POINT_DIVERGED],
          (long long)count[A3_POINT_PENDING], (long long)count[A3_POINT_RUNNING]);
}

// Every column left-aligned to its widest cell, two spaces apart.
static void print_row(const table *t, FILE *f, const int *width, int64_t row) {
  for (int c = 0; c < t->n_cols; c++) {
    const char *text = row < 0 ? t->cols[c].header : table_cell(&t->cols[c], row);
    if (c + 1 < t->n_cols)
      fprintf(f, "%-*s  ", width[c], text);
    else
      fprintf(f, "%s\n", text);
  }
}

static void print_table(const table *t, FILE *f, const int *width) {
  print_summary(t, f);
  print_row(t, f, width, -1);
  for (int64_t i = 0; i < t->n; i++)
    if (shown(t, i)) print_row(t, f, width, i);
}

static a3_status print_aligned(const table *t, FILE *f) {
  int *width = NULL;
  A3_TRY(a3_alloc((void **)&width, (size_t)t->n_cols, sizeof *width));
  for (int c = 0; c < t->n_cols; c++) width[c] = column_width(t, &t->cols[c]);
  print_table(t, f, width);
  free(width);
  return A3_OK;
}

// ---------------------------------------------------------------- entry
static a3_status check_format(table *t) {
  char where[1100], *format = NULL;
  snprintf(where, sizeof where, "%s: /", t->path);
  A3_TRY(a3_h5_read_string_attr(t->file, "format", where, &format));
  const int ok = !strcmp(format, A3_RESULTS_FORMAT);
  free(format);
  if (!ok)
    return A3_FAIL(A3_ERR_INPUT, "%s: root attribute format is not '%s'", t->path,
                   A3_RESULTS_FORMAT);
  return A3_OK;
}

static a3_status load(table *t) {
  A3_TRY(check_format(t));
  hid_t ds = H5I_INVALID_HID;
  t->n = -1;
  A3_TRY(open_rows(t, "status", &t->n, &ds));
  H5Dclose(ds);
  A3_TRY(a3_alloc((void **)&t->status, (size_t)t->n, sizeof *t->status));
  A3_TRY(read_rows(t, "status", H5T_NATIVE_INT8, t->status));
  A3_TRY(read_keys(t));
  A3_TRY(timing_ranks(t));
  A3_TRY(has_params(t));
  // point, status, keys, 2 numbers, step timings, metrics, parameter counts, reason
  t->cap_cols = 5 + t->n_keys + timing_columns(t) + (t->has_params ? 2 : 0) + A3_RESULT_N_METRICS;
  A3_TRY(a3_alloc((void **)&t->cols, (size_t)t->cap_cols, sizeof *t->cols));
  return build_columns(t);
}

static void free_table(table *t) {
  for (int c = 0; c < t->n_cols; c++) {
    for (int64_t i = 0; i < t->n; i++) free(t->cols[c].cells[i]);
    free(t->cols[c].cells);
  }
  free(t->cols);
  free(t->status);
  if (t->keys) a3_h5_free_strings(t->keys, t->n_keys);
}

a3_status a3_results_print(const char *path, FILE *f, bool csv, unsigned status_mask) {
  a3_h5_quiet();
  table t = {.path = path, .csv = csv, .status_mask = status_mask};
  t.file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (t.file < 0) return A3_FAIL(A3_ERR_IO, "cannot open results file %s%s", path, a3_h5_detail());
  a3_status s = load(&t);
  if (H5Fclose(t.file) < 0 && s == A3_OK)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot close%s", path, a3_h5_detail());
  if (s == A3_OK && csv) print_csv(&t, f);
  if (s == A3_OK && !csv) s = print_aligned(&t, f);
  free_table(&t);
  A3_TRY(s);
  return A3_OK;
}
