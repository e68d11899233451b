// Sweep points: the grid x zip product and the explicit points, each point's
// resolved config, the typed columns of the varied keys, and the hashes (see
// a3fta/sweep.h for the rules).
#include "a3fta/sweep.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// One axis of the product: a grid key, or all the zip keys together.
struct a3_sweep_axis_ref {
  const a3_sweep_axis *keys[A3_CONFIG_SCHEMA_MAX];
  int n_keys;
  int n_values;
  int order; // schema index of its first key
};

static int key_index(const char *path) {
  const a3_config_key *k = a3_config_find_key(path);
  return k ? (int)(k - a3_config_schema(NULL)) : A3_CONFIG_SCHEMA_MAX;
}

static int cmp_axes(const void *a, const void *b) {
  return ((const a3_sweep_axis_ref *)a)->order - ((const a3_sweep_axis_ref *)b)->order;
}

// ---------------------------------------------------------------- points
static a3_status build_axes(a3_sweep_plan *p) {
  const a3_sweep_config *sw = &p->source.sweep;
  const int n = sw->grid.n + (sw->zip.n > 0);
  p->n_axes = 0;
  if (n == 0) return A3_OK;
  A3_TRY(A3_ALLOC(p->axes, n));
  for (int i = 0; i < sw->grid.n; i++) {
    a3_sweep_axis_ref *a = &p->axes[p->n_axes++];
    a->keys[0] = &sw->grid.items[i];
    a->n_keys = 1;
    a->n_values = sw->grid.items[i].n_values;
    a->order = key_index(sw->grid.items[i].key);
  }
  if (sw->zip.n > 0) {
    a3_sweep_axis_ref *a = &p->axes[p->n_axes++];
    for (int i = 0; i < sw->zip.n && i < A3_CONFIG_SCHEMA_MAX; i++)
      a->keys[a->n_keys++] = &sw->zip.items[i];
    a->n_values = sw->zip.items[0].n_values;
    a->order = key_index(sw->zip.items[0].key);
  }
  qsort(p->axes, (size_t)p->n_axes, sizeof *p->axes, cmp_axes);
  return A3_OK;
}

static a3_status count_points(a3_sweep_plan *p) {
  const int64_t explicit_points = p->source.sweep.points.n;
  int64_t combos = p->n_axes ? 1 : (explicit_points ? 0 : 1);
  for (int i = 0; i < p->n_axes; i++) {
    if (combos > A3_SWEEP_MAX_POINTS / p->axes[i].n_values)
      return A3_FAIL(A3_ERR_CONFIG,
                     "sweep: the grid has more than %d points; split the sweep into several "
                     "configs",
                     A3_SWEEP_MAX_POINTS);
    combos *= p->axes[i].n_values;
  }
  if (combos + explicit_points > A3_SWEEP_MAX_POINTS)
    return A3_FAIL(
        A3_ERR_CONFIG,
        "sweep: %lld points exceed the limit of %d; split the sweep into several configs",
        (long long)(combos + explicit_points), A3_SWEEP_MAX_POINTS);
  p->n_combos = combos;
  p->n_points = combos + explicit_points;
  return A3_OK;
}

// The settings of point i as (key, value) pairs, in schema order.
typedef struct {
  const char *key, *value;
} assignment;

static int cmp_assignments(const void *a, const void *b) {
  return key_index(((const assignment *)a)->key) - key_index(((const assignment *)b)->key);
}

static int point_assignments(const a3_sweep_plan *p, int64_t i, assignment *out) {
  int n = 0;
  if (i < p->n_combos) {
    int64_t rest = i;
    int index[A3_CONFIG_SCHEMA_MAX];
    for (int a = p->n_axes - 1; a >= 0; a--) { // last axis fastest
      index[a] = (int)(rest % p->axes[a].n_values);
      rest /= p->axes[a].n_values;
    }
    for (int a = 0; a < p->n_axes; a++)
      for (int k = 0; k < p->axes[a].n_keys; k++)
        out[n++] = (assignment){p->axes[a].keys[k]->key, p->axes[a].keys[k]->values[index[a]]};
  } else {
    const a3_sweep_point *pt = &p->source.sweep.points.items[i - p->n_combos];
    for (int k = 0; k < pt->n_settings; k++)
      out[n++] = (assignment){pt->settings[k].key, pt->settings[k].value};
  }
  if (n > 1) qsort(out, (size_t)n, sizeof *out, cmp_assignments);
  return n;
}

void a3_sweep_point_label(const a3_sweep_plan *p, int64_t i, char *buf, size_t size) {
  assignment as[A3_CONFIG_SCHEMA_MAX];
  const int n = point_assignments(p, i, as);
  size_t used = 0;
  buf[0] = '\0';
  for (int k = 0; k < n && used < size; k++) {
    int w = snprintf(buf + used, size - used, "%s%s=%s", k ? ", " : "", as[k].key, as[k].value);
    if (w < 0) break;
    used += (size_t)w;
  }
}

a3_status a3_sweep_point_config(const a3_sweep_plan *p, int64_t i, a3_config *out) {
  if (i < 0 || i >= p->n_points)
    return A3_FAIL(A3_ERR_INTERNAL, "sweep point %lld outside 0..%lld", (long long)i,
                   (long long)p->n_points - 1);
  A3_TRY(a3_config_copy(out, &p->base));
  assignment as[A3_CONFIG_SCHEMA_MAX];
  const int n = point_assignments(p, i, as);
  char origin[64], label[2048];
  snprintf(origin, sizeof origin, "sweep point %lld", (long long)i);
  a3_status s = A3_OK;
  for (int k = 0; k < n && s == A3_OK; k++) s = a3_config_set(out, as[k].key, as[k].value, origin);
  if (s == A3_OK) {
    const int w = snprintf(out->output.dir, sizeof out->output.dir, "%s/point-%06lld",
                           p->base.output.dir, (long long)i);
    if (w < 0 || (size_t)w >= sizeof out->output.dir)
      s = A3_FAIL(A3_ERR_CONFIG, "output.dir: '%s' is too long to hold the points' folders",
                  p->base.output.dir);
  }
  if (s == A3_OK && a3_config_validate(out) != A3_OK) {
    char msg[1600];
    snprintf(msg, sizeof msg, "%s", a3_error_message());
    a3_sweep_point_label(p, i, label, sizeof label);
    s = A3_FAIL(A3_ERR_CONFIG, "sweep point %lld (%s): %s", (long long)i,
                label[0] ? label : "no assignments", msg);
  }
  if (s != A3_OK) {
    a3_config_free(out);
    A3_TRY(s);
  }
  return A3_OK;
}

// ---------------------------------------------------------------- varied keys
static a3_status find_varied(a3_sweep_plan *p) {
  // key_index gives A3_CONFIG_SCHEMA_MAX for a key the schema lacks (the
  // config check has rejected those by now): the extra slot absorbs it.
  unsigned char seen[A3_CONFIG_SCHEMA_MAX + 1] = {0};
  const a3_sweep_config *sw = &p->source.sweep;
  for (int i = 0; i < sw->grid.n; i++) seen[key_index(sw->grid.items[i].key)] = 1;
  for (int i = 0; i < sw->zip.n; i++) seen[key_index(sw->zip.items[i].key)] = 1;
  for (int i = 0; i < sw->points.n; i++)
    for (int k = 0; k < sw->points.items[i].n_settings; k++)
      seen[key_index(sw->points.items[i].settings[k].key)] = 1;
  int n_keys = 0;
  const a3_config_key *keys = a3_config_schema(&n_keys);
  static const char *const fixed[] = {"output.dir", "parallel.ranks_per_run", "parallel.schedule"};
  for (int i = 0; i < n_keys && i < A3_CONFIG_SCHEMA_MAX; i++) {
    if (!seen[i]) continue;
    for (size_t f = 0; f < sizeof fixed / sizeof *fixed; f++)
      if (!strcmp(keys[i].path, fixed[f]))
        return A3_FAIL(A3_ERR_CONFIG,
                       "sweep: %s cannot be swept: it applies to the whole sweep (each point "
                       "already gets its own folder output.dir/point-NNNNNN)",
                       keys[i].path);
    snprintf(p->varied[p->n_varied++], A3_CONFIG_KEY_MAX, "%s", keys[i].path);
  }
  if (p->n_varied == 0) return A3_OK;
  A3_TRY(A3_ALLOC(p->columns, p->n_varied));
  for (int v = 0; v < p->n_varied; v++) {
    a3_result_column *c = &p->columns[v];
    const a3_config_key *k = a3_config_find_key(p->varied[v]);
    snprintf(c->key, sizeof c->key, "%s", k->path);
    c->description = a3_config_type_name(k);
    switch (k->type) {
    case A3_KEY_INT:
    case A3_KEY_OPT_INT:
    case A3_KEY_BOOL:
      c->type = A3_RESULT_INT64;
      A3_TRY(A3_ALLOC(c->ints, p->n_points));
      break;
    case A3_KEY_FLOAT:
      c->type = A3_RESULT_FLOAT64;
      A3_TRY(A3_ALLOC(c->floats, p->n_points));
      break;
    default:
      c->type = A3_RESULT_STRING;
      A3_TRY(A3_ALLOC(c->strings, p->n_points));
      break;
    }
  }
  return A3_OK;
}

// Stores point i's value of every varied key into the columns.
static a3_status fill_columns(a3_sweep_plan *p, int64_t i, const a3_config *pc) {
  for (int v = 0; v < p->n_varied; v++) {
    a3_result_column *c = &p->columns[v];
    const a3_config_key *k = a3_config_find_key(c->key);
    char *text = NULL;
    A3_TRY(a3_config_format_value(pc, k, &text));
    if (c->type == A3_RESULT_INT64)
      c->ints[i] = !strcmp(text, "true") ? 1 : strtoll(text, NULL, 10); // null, false: 0
    else if (c->type == A3_RESULT_FLOAT64)
      c->floats[i] = strtod(text, NULL); // canonical text reads back exactly
    if (c->type == A3_RESULT_STRING)
      c->strings[i] = text;
    else
      free(text);
  }
  return A3_OK;
}

// ---------------------------------------------------------------- hashes
static uint64_t hash_text(const char *text, uint64_t h) { return a3_hash64(text, strlen(text), h); }

static uint64_t hash_int(int64_t v, uint64_t h) {
  unsigned char le[8];
  for (int b = 0; b < 8; b++) le[b] = (unsigned char)((uint64_t)v >> (8 * b));
  return a3_hash64(le, sizeof le, h);
}

// The point's YAML with the keys that do not change results at fixed values.
static a3_status results_yaml(const a3_config *pc, char **out) {
  a3_config *n = NULL;
  A3_TRY(A3_ALLOC(n, 1));
  a3_status s = a3_config_copy(n, pc);
  if (s == A3_OK) {
    n->output.dir[0] = '\0';
    n->parallel.schedule = A3_SCHEDULE_DYNAMIC;
    n->parallel.nccl_timeout_s = 0;
    s = a3_config_to_yaml(n, out, NULL);
  }
  a3_config_free(n);
  free(n);
  return s;
}

// Samples of every point share one shape (the results file's is fixed).
static a3_status check_shape(a3_sweep_plan *p, int64_t i, const a3_config *pc) {
  const int shape[4] = {(int)pc->output.samples_per_run, (int)pc->model.arch.in_channels,
                        (int)pc->model.arch.sample_size, (int)pc->model.arch.sample_size};
  static const char *const keys[4] = {"output.samples_per_run", "model.arch.in_channels",
                                      "model.arch.sample_size", "model.arch.sample_size"};
  if (i == 0) {
    p->samples = shape[0];
    p->channels = shape[1];
    p->height = shape[2];
    p->width = shape[3];
    return A3_OK;
  }
  const int first[4] = {p->samples, p->channels, p->height, p->width};
  for (int d = 0; d < 4; d++)
    if (shape[d] != first[d])
      return A3_FAIL(A3_ERR_CONFIG,
                     "sweep point %lld: %s = %d differs from point 0's %d; the results file "
                     "stores samples of one shape, so this key cannot vary within a sweep",
                     (long long)i, keys[d], shape[d], first[d]);
  return A3_OK;
}

static a3_status visit_point(a3_sweep_plan *p, int64_t i, uint64_t *sweep_h, uint64_t *agree_h,
                             size_t *longest) {
  a3_config *pc = NULL;
  A3_TRY(A3_ALLOC(pc, 1));
  char *full = NULL, *normal = NULL;
  a3_status s = a3_sweep_point_config(p, i, pc);
  if (s != A3_OK) {
    free(pc);
    A3_TRY(s);
  }
  s = check_shape(p, i, pc);
  if (s == A3_OK) s = fill_columns(p, i, pc);
  if (s == A3_OK) s = a3_config_to_yaml(pc, &full, NULL);
  if (s == A3_OK) s = results_yaml(pc, &normal);
  if (s == A3_OK) {
    *sweep_h = hash_text(normal, *sweep_h);
    *agree_h = hash_text(full, *agree_h);
    if (strlen(full) > *longest) *longest = strlen(full);
    p->total_steps += pc->train.steps;
  }
  free(full);
  free(normal);
  a3_config_free(pc);
  free(pc);
  A3_TRY(s);
  return A3_OK;
}

// ---------------------------------------------------------------- the plan
void a3_sweep_plan_free(a3_sweep_plan *p) {
  if (!p) return;
  for (int v = 0; p->columns && v < p->n_varied; v++) {
    free(p->columns[v].ints);
    free(p->columns[v].floats);
    if (p->columns[v].strings)
      for (int64_t i = 0; i < p->n_points; i++) free(p->columns[v].strings[i]);
    free(p->columns[v].strings);
  }
  free(p->columns);
  free(p->axes);
  free(p->base_yaml);
  a3_config_free(&p->source);
  a3_config_free(&p->base);
  free(p);
}

static a3_status make_plan(a3_sweep_plan *p, const a3_config *cfg) {
  A3_TRY(a3_config_copy(&p->source, cfg));
  A3_TRY(a3_config_copy(&p->base, cfg));
  a3_config_free(&p->base); // the points' configs have no sweep of their own
  A3_TRY(a3_config_to_yaml(&p->source, &p->base_yaml, NULL));
  p->ranks_per_run = (int)cfg->parallel.ranks_per_run;
  p->schedule = cfg->parallel.schedule;
  A3_TRY(build_axes(p));
  A3_TRY(count_points(p));
  A3_TRY(find_varied(p));
  uint64_t sweep_h = A3_HASH_SEED, agree_h = hash_text(p->base_yaml, A3_HASH_SEED);
  size_t longest = 0;
  for (int64_t i = 0; i < p->n_points; i++) A3_TRY(visit_point(p, i, &sweep_h, &agree_h, &longest));
  p->sweep_hash = hash_int(p->ranks_per_run, sweep_h);
  p->agree_hash = hash_int(p->ranks_per_run, agree_h);
  // At least 4096 bytes, else the longest rounded up to whole KiB.
  p->config_len = longest + 1 < 4096 ? 4096 : (longest + 1 + 1023) / 1024 * 1024;
  return A3_OK;
}

a3_status a3_sweep_plan_make(const a3_config *cfg, a3_sweep_plan **out) {
  *out = NULL;
  a3_sweep_plan *p = NULL;
  A3_TRY(A3_ALLOC(p, 1));
  a3_status s = make_plan(p, cfg);
  if (s != A3_OK) {
    a3_sweep_plan_free(p);
    A3_TRY(s);
  }
  *out = p;
  return A3_OK;
}
