// Pretrained weights: a safetensors file into the U-Net's parameter table, and
// a diffusers folder (config.json + weights) into a built model.
//
// Two passes: the first resolves every parameter to its tensor and checks
// names, dtypes and shapes (nothing is written), the second reads the data.
#include "a3fta/diffusers.h"
#include "a3fta/model.h"
#include "a3fta/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { LISTED = A3_UNET_LOAD_LISTED, LIST_BYTES = 640, SHAPE_BYTES = 128 };

// "(8, 3, 3, 3)"; "()" for a scalar.
static void format_shape(int ndim, const int64_t *shape, char *buf, size_t size) {
  size_t o = (size_t)snprintf(buf, size, "(");
  for (int d = 0; d < ndim && o < size; d++)
    o += (size_t)snprintf(buf + o, size - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
  if (o < size) snprintf(buf + o, size - o, ")");
}

static bool same_shape(const a3_st_tensor *t, const a3_param *p) {
  if (t->ndim != p->ndim) return false;
  for (int d = 0; d < p->ndim; d++)
    if (t->shape[d] != p->shape[d]) return false;
  return true;
}

static bool convertible(a3_st_dtype dtype) {
  return dtype == A3_ST_F32 || dtype == A3_ST_F16 || dtype == A3_ST_BF16 || dtype == A3_ST_F64;
}

// Appends ", name" (or "name" first) to a list of at most LISTED names.
static void list_add(char *list, int *n, const char *name) {
  if (++*n > LISTED) return;
  const size_t o = strlen(list);
  if (o < LIST_BYTES) snprintf(list + o, LIST_BYTES - o, "%s%s", *n > 1 ? ", " : "", name);
}

static const char *list_more(int n) { return n > LISTED ? ", ..." : ""; }

static int cmp_ptr(const void *a, const void *b) {
  const uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
  return (x > y) - (x < y);
}

typedef struct {
  int missing, bad_shape, bad_dtype, both;
  char missing_list[LIST_BYTES];
  char first_shape[3 * A3_PARAM_NAME_MAX + 2 * SHAPE_BYTES]; // the first mismatch, described
  char first_dtype[2 * A3_PARAM_NAME_MAX + 32];
  char first_both[3 * A3_PARAM_NAME_MAX + 64];
} check_result;

// Resolves parameter p: *t its tensor (NULL when absent), *legacy whether
// under its old name; records what is wrong in r.
static void check_param(const a3_safetensors *st, const a3_param *p, const a3_st_tensor **t,
                        bool *legacy, check_result *r) {
  *t = a3_diffusers_find_tensor(st, p->name);
  *legacy = *t && strcmp((*t)->name, p->name) != 0;
  if (!*t) {
    if (!p->added) list_add(r->missing_list, &r->missing, p->name);
    return;
  }
  char old[A3_PARAM_NAME_MAX + 32]; // legacy names are at most 1 byte longer per component
  if (!*legacy && a3_diffusers_legacy_name(p->name, old, sizeof old) == 1 &&
      a3_safetensors_find(st, old) && r->both++ == 0)
    snprintf(r->first_both, sizeof r->first_both, "%s and %s", p->name, old);
  char in_file[A3_PARAM_NAME_MAX + 32] = "";
  if (*legacy) snprintf(in_file, sizeof in_file, " (for %s)", p->name);
  if (!convertible((*t)->dtype) && r->bad_dtype++ == 0)
    snprintf(r->first_dtype, sizeof r->first_dtype, "%s%s is %s", (*t)->name, in_file,
             a3_st_dtype_name((*t)->dtype));
  if (!same_shape(*t, p) && r->bad_shape++ == 0) {
    char got[SHAPE_BYTES], want[SHAPE_BYTES];
    int64_t shape[A3_PARAM_MAX_DIMS];
    for (int d = 0; d < p->ndim; d++) shape[d] = p->shape[d];
    format_shape((*t)->ndim, (*t)->shape, got, sizeof got);
    format_shape(p->ndim, shape, want, sizeof want);
    snprintf(r->first_shape, sizeof r->first_shape, "%s%s has shape %s, the model expects %s",
             (*t)->name, in_file, got, want);
  }
}

// The tensors of the file that no parameter uses: counted, the first ones
// listed in the report and in `list`.
static a3_status find_unused(const a3_safetensors *st, const a3_st_tensor **used, int n_used,
                             a3_unet_load_report *rep, char *list) {
  uintptr_t *sorted = NULL;
  A3_TRY(A3_ALLOC(sorted, (size_t)n_used + 1));
  int n = 0;
  for (int i = 0; i < n_used; i++)
    if (used[i]) sorted[n++] = (uintptr_t)used[i];
  qsort(sorted, (size_t)n, sizeof *sorted, cmp_ptr);
  for (int i = 0; i < a3_safetensors_count(st); i++) {
    const a3_st_tensor *t = a3_safetensors_tensor(st, i);
    const uintptr_t key = (uintptr_t)t;
    if (bsearch(&key, sorted, (size_t)n, sizeof *sorted, cmp_ptr)) continue;
    if (rep->unused < LISTED)
      snprintf(rep->unused_names[rep->unused], A3_PARAM_NAME_MAX, "%s", t->name);
    int count = rep->unused;
    list_add(list, &count, t->name);
    rep->unused = count;
  }
  free(sorted);
  return A3_OK;
}

static a3_status load_checked(a3_unet *m, const a3_safetensors *st, const a3_st_tensor **tensors,
                              a3_unet_load_report *rep) {
  const char *path = a3_safetensors_path(st);
  const int n = a3_unet_param_count(m);
  check_result r = {0};
  for (int i = 0; i < n; i++) {
    bool legacy = false;
    check_param(st, a3_unet_param_at(m, i), &tensors[i], &legacy, &r);
    if (tensors[i]) {
      rep->loaded++;
      rep->legacy_names += legacy;
    } else if (a3_unet_param_at(m, i)->added) {
      rep->missing_added++;
    }
  }
  char unused_list[LIST_BYTES] = "";
  A3_TRY(find_unused(st, tensors, n, rep, unused_list));
  if (r.missing)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: %d parameter%s of the model %s not in the file: %s%s (%d of its %d tensors "
                   "unused%s%s%s); model.arch must be the weights' own config.json",
                   path, r.missing, r.missing == 1 ? "" : "s", r.missing == 1 ? "is" : "are",
                   r.missing_list, list_more(r.missing), rep->unused, a3_safetensors_count(st),
                   rep->unused ? ": " : "", unused_list, list_more(rep->unused));
  if (r.bad_shape)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: %s (%d tensor%s of another shape); model.arch must be the weights' own "
                   "config.json",
                   path, r.first_shape, r.bad_shape, r.bad_shape == 1 ? "" : "s");
  if (r.bad_dtype)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: %s (%d such tensor%s); a3fta reads F32, F16, BF16 and F64 weights", path,
                   r.first_dtype, r.bad_dtype, r.bad_dtype == 1 ? "" : "s");
  if (r.both)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: holds both %s (%d parameter%s under both its current and its legacy "
                   "attention name): which one to use is ambiguous",
                   path, r.first_both, r.both, r.both == 1 ? "" : "s");
  float *params = a3_unet_params(m);
  for (int i = 0; i < n; i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    if (tensors[i])
      A3_TRY(a3_safetensors_read_f32(st, tensors[i], params + p->offset, (int64_t)p->numel));
  }
  if (rep->unused)
    a3_warn("%s: %d tensor%s the model does not have, ignored: %s%s", path, rep->unused,
            rep->unused == 1 ? "" : "s", unused_list, list_more(rep->unused));
  a3_debug("%s: %d parameters loaded (%d under legacy attention names), %d added ones kept", path,
           rep->loaded, rep->legacy_names, rep->missing_added);
  return A3_OK;
}

a3_status a3_unet_load_safetensors(a3_unet *m, const char *path, a3_unet_load_report *report) {
  a3_unet_load_report local;
  a3_unet_load_report *rep = report ? report : &local;
  memset(rep, 0, sizeof *rep);
  a3_safetensors *st = NULL;
  A3_TRY(a3_safetensors_open(path, &st));
  const a3_st_tensor **tensors = NULL;
  a3_status s = A3_ALLOC(tensors, (size_t)a3_unet_param_count(m) + 1);
  if (s == A3_OK) s = load_checked(m, st, tensors, rep);
  free(tensors);
  a3_safetensors_close(st);
  A3_TRY(s);
  return A3_OK;
}

static a3_status load_dir(const char *dir, const a3_unet_extras *extras, a3_unet **out,
                          a3_config *cfg) {
  a3_diffusers_files files;
  A3_TRY(a3_diffusers_find_files(dir, &files));
  A3_TRY(a3_diffusers_load_config(files.config_json, cfg));
  A3_TRY(a3_unet_build_ex(&cfg->model.arch, extras, out));
  a3_unet_init_extras(*out, 0);
  a3_unet_load_report rep;
  A3_TRY(a3_unet_load_safetensors(*out, files.weights, &rep));
  a3_info("%s: %d tensors loaded%s%s", files.weights, rep.loaded,
          rep.legacy_names ? " (old attention names)" : "",
          rep.missing_added ? ", the added modules initialised" : "");
  return A3_OK;
}

a3_status a3_unet_load_diffusers(const char *dir, const a3_unet_extras *extras, a3_unet **out,
                                 a3_config *cfg_out) {
  *out = NULL;
  a3_config local;
  a3_config *cfg = cfg_out ? cfg_out : &local;
  a3_config_init_defaults(cfg);
  a3_status s = load_dir(dir, extras, out, cfg);
  if (s != A3_OK) {
    a3_unet_free(*out);
    *out = NULL;
  }
  if (s != A3_OK || !cfg_out) a3_config_free(cfg);
  A3_TRY(s);
  return A3_OK;
}
