// a3fta info FILE.safetensors: what a safetensors file holds (an a3fta
// export's deltas, or a diffusers model's weights): its metadata, tensors
// by dtype, and the floating-point values scanned for NaN or infinities.
#include "a3fta/checkpoint.h"
#include "a3fta/safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int is_float(a3_st_dtype t) {
  return t == A3_ST_F16 || t == A3_ST_BF16 || t == A3_ST_F32 || t == A3_ST_F64;
}

// A float tensor's values into *acc (integer tensors are not scanned).
static a3_status scan_tensor(const a3_safetensors *st, const a3_st_tensor *t,
                             a3_ckpt_group_scan *acc) {
  float *x = NULL;
  A3_TRY(a3_alloc((void **)&x, (size_t)(t->numel ? t->numel : 1), sizeof *x));
  const a3_status s = a3_safetensors_read_f32(st, t, x, t->numel);
  if (s == A3_OK) a3_ckpt_scan_values(x, t->numel, t->name, acc);
  free(x);
  A3_TRY(s);
  return A3_OK;
}

static void print_dtypes(const a3_safetensors *st, FILE *f) {
  const int n = a3_safetensors_count(st);
  int64_t values = 0;
  for (int i = 0; i < n; i++) values += a3_safetensors_tensor(st, i)->numel;
  fprintf(f, "tensors      %d, %lld values:", n, (long long)values);
  for (int d = 0; d < A3_ST_N_DTYPES; d++) {
    int count = 0;
    for (int i = 0; i < n; i++) count += (int)a3_safetensors_tensor(st, i)->dtype == d;
    if (count) fprintf(f, " %d %s", count, a3_st_dtype_name((a3_st_dtype)d));
  }
  fputc('\n', f);
}

static void print_tensor_list(const a3_safetensors *st, FILE *f) {
  for (int i = 0; i < a3_safetensors_count(st); i++) {
    const a3_st_tensor *t = a3_safetensors_tensor(st, i);
    char shape[160];
    a3_ckpt_format_shape(t->ndim, t->shape, shape, sizeof shape);
    fprintf(f, "  %-64s %-5s %s\n", t->name, a3_st_dtype_name(t->dtype), shape);
  }
}

static a3_status print_values(const a3_safetensors *st, FILE *f) {
  a3_ckpt_group_scan v = {0};
  int unscanned = 0;
  for (int i = 0; i < a3_safetensors_count(st); i++) {
    const a3_st_tensor *t = a3_safetensors_tensor(st, i);
    if (is_float(t->dtype))
      A3_TRY(scan_tensor(st, t, &v));
    else
      unscanned++;
  }
  fprintf(f, "values       largest |value| %.4g; ", v.max_abs);
  if (v.nonfinite)
    fprintf(f, "NOT all finite: %lld NaN or infinite values in %d tensors (first: %s)",
            (long long)v.nonfinite, v.nonfinite_tensors, v.first_nonfinite);
  else
    fprintf(f, "all finite");
  if (unscanned) fprintf(f, " (%d integer tensors not scanned)", unscanned);
  fputc('\n', f);
  return A3_OK;
}

enum { MAX_SHOWN_VALUE = 96 }; // metadata value characters shown on one line

// A metadata entry on one line: a text of several lines (an a3fta export's
// config) by its size, a long one cut short.
static void print_metadata(const char *path, int i, const a3_st_metadata *m, FILE *f) {
  const char *label = i ? "" : "metadata";
  const size_t len = strlen(m->value);
  int lines = 0;
  for (const char *c = m->value; *c; c++) lines += *c == '\n';
  if (lines > 1)
    fprintf(f, "%-12s %s: %d lines (a3fta info %s --config prints it)\n", label, m->key, lines,
            path);
  else if (len > MAX_SHOWN_VALUE)
    fprintf(f, "%-12s %s: %.*s... (%zu characters)\n", label, m->key, MAX_SHOWN_VALUE, m->value,
            len);
  else
    fprintf(f, "%-12s %s: %s\n", label, m->key, m->value);
}

a3_status a3_safetensors_print_config(const char *path, FILE *f) {
  a3_safetensors *st = NULL;
  A3_TRY(a3_safetensors_open(path, &st));
  const char *config = a3_safetensors_metadata_get(st, "config");
  if (config) {
    fputs(config, f);
    if (config[0] && config[strlen(config) - 1] != '\n') fputc('\n', f);
  }
  a3_safetensors_close(st);
  if (!config)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: no 'config' in its metadata (a3fta export writes one; other files "
                   "have none)",
                   path);
  return A3_OK;
}

a3_status a3_safetensors_print_summary(const char *path, bool list_tensors, FILE *f) {
  a3_safetensors *st = NULL;
  A3_TRY(a3_safetensors_open(path, &st));
  struct stat sb;
  const double mib = stat(path, &sb) == 0 ? (double)sb.st_size / (1024.0 * 1024.0) : 0.0;
  fprintf(f, "safetensors  %s (%.1f MiB)\n", path, mib);
  for (int i = 0; i < a3_safetensors_metadata_count(st); i++)
    print_metadata(path, i, a3_safetensors_metadata(st, i), f);
  print_dtypes(st, f);
  if (list_tensors) print_tensor_list(st, f);
  const a3_status s = print_values(st, f);
  a3_safetensors_close(st);
  A3_TRY(s);
  return A3_OK;
}
