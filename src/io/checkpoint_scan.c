// Scanning a checkpoint group's tensors for what they hold (a3fta info):
// counts, the largest value, and NaN or infinite values, through the
// public reader alone.
#include "a3fta/checkpoint.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

void a3_ckpt_scan_values(const float *x, int64_t n, const char *name, a3_ckpt_group_scan *out) {
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i++) {
    const double v = fabs((double)x[i]);
    if (!isfinite(v))
      bad++;
    else if (v > out->max_abs)
      out->max_abs = v;
  }
  out->tensors++;
  out->values += n;
  out->nonfinite += bad;
  if (!bad) return;
  if (!out->nonfinite_tensors++)
    snprintf(out->first_nonfinite, sizeof out->first_nonfinite, "%s", name);
}

static a3_status scan_tensor(const a3_ckpt_reader *r, const char *group, const char *name,
                             a3_ckpt_group_scan *out) {
  a3_ckpt_spec spec;
  A3_TRY(a3_ckpt_tensor_spec(r, group, name, &spec));
  const int64_t n = a3_ckpt_spec_numel(&spec);
  float *x = NULL;
  A3_TRY(a3_alloc((void **)&x, (size_t)(n ? n : 1), sizeof *x));
  const a3_status s = a3_ckpt_read_tensor(r, group, &spec, x);
  if (s == A3_OK) a3_ckpt_scan_values(x, n, name, out);
  free(x);
  A3_TRY(s);
  return A3_OK;
}

a3_status a3_ckpt_scan_group(const a3_ckpt_reader *r, const char *group, a3_ckpt_group_scan *out) {
  *out = (a3_ckpt_group_scan){0};
  char **names = NULL;
  int n = 0;
  A3_TRY(a3_ckpt_list(r, group, &names, &n));
  a3_status s = A3_OK;
  for (int i = 0; s == A3_OK && i < n; i++) s = scan_tensor(r, group, names[i], out);
  a3_ckpt_free_names(names, n);
  A3_TRY(s);
  return A3_OK;
}
