// Loading a config: schema defaults, then a YAML file walked against the
// schema, then overrides, then the checks that involve several keys. Where
// each key was last set is remembered so those checks can point at it.
#include "io/config_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PATH_BUF = 2 * A3_CONFIG_KEY_MAX + 32, GOT_BUF = 320, LIST_BUF = 1024 };

// Where a key was last set; kind A3_SRC_DEFAULT = never set.
typedef struct {
  a3_src_kind kind;
  const char *text;
  int line, col, seq;
} a3_mark;

typedef struct {
  a3_cfg_src src;
  a3_mark *marks;     // one per schema key, or NULL when not tracked
  int seq;            // orders the marks: later settings win blame
  a3_config *scratch; // defaults on which sweep values are checked (made on first use)
} walker;

static a3_status apply_defaults(a3_config *cfg);
static a3_status set_node(walker *w, const a3_config_key *k, const a3_yaml_node *node,
                          a3_config *cfg);

// ---------------------------------------------------------------- schema helpers
static int key_index(const a3_config_key *k) { return (int)(k - a3_config_schema(NULL)); }

static const char *key_name(const char *path) {
  const char *dot = strrchr(path, '.');
  return dot ? dot + 1 : path;
}

// Names of the keys directly under `prefix` ("" = the sections).
static int child_names(const char *prefix, const char **names) {
  int n_keys = 0, n = 0;
  const a3_config_key *keys = a3_config_schema(&n_keys);
  size_t lp = strlen(prefix);
  for (int i = 0; i < n_keys; i++) {
    const char *rest = keys[i].path;
    if (lp) {
      if (strncmp(rest, prefix, lp) || rest[lp] != '.') continue;
      rest += lp + 1;
    }
    if (!strchr(rest, '.')) names[n++] = rest;
  }
  return n;
}

static void join(const char *const *names, int n, char *buf, size_t size) {
  size_t o = 0;
  buf[0] = '\0';
  for (int i = 0; i < n && o < size; i++)
    o += (size_t)snprintf(buf + o, size - o, "%s%s", i ? ", " : "", names[i]);
}

static void children_text(const char *prefix, char *buf, size_t size) {
  const char *names[A3_CONFIG_SCHEMA_MAX];
  join(names, child_names(prefix, names), buf, size);
}

// Keys a sweep or an override may set one value of: not sections, not sweep lists.
static int is_value_key(const a3_config_key *k) {
  return k->type != A3_KEY_SECTION && k->type != A3_KEY_SWEEP_AXES &&
         k->type != A3_KEY_SWEEP_POINTS;
}

static void note_mark(walker *w, const a3_config_key *k, const a3_yaml_node *at) {
  if (!w->marks) return;
  a3_mark *m = &w->marks[key_index(k)];
  *m = (a3_mark){w->src.kind, w->src.text, at ? at->line : 0, at ? at->col : 0, ++w->seq};
}

static a3_status fail_node(const walker *w, const a3_yaml_node *node, const char *path,
                           const char *fmt, ...) A3_PRINTF(4, 5);
static a3_status fail_node(const walker *w, const a3_yaml_node *node, const char *path,
                           const char *fmt, ...) {
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return a3_cfg_fail(&w->src, node ? node->line : 0, node ? node->col : 0, path, "%s", msg);
}

// ---------------------------------------------------------------- unknown keys
// Words a mistyped key is compared with: each key's name and its aliases,
// with the name each one suggests.
typedef struct {
  const char *words[4 * A3_CONFIG_SCHEMA_MAX];
  const char *targets[4 * A3_CONFIG_SCHEMA_MAX];
  int n;
  size_t used;
  char store[8192];
} suggestions;

static void add_word(suggestions *s, const char *prefix, const char *word, size_t len,
                     const char *target) {
  size_t lp = strlen(prefix), need = lp + len + 2;
  if (s->n >= 4 * A3_CONFIG_SCHEMA_MAX || s->used + need > sizeof s->store) return;
  char *w = s->store + s->used;
  snprintf(w, need, "%s%s%.*s", prefix, lp ? "." : "", (int)len, word);
  s->used += need;
  s->words[s->n] = w;
  s->targets[s->n++] = target;
}

// The key under its name (full path when full_paths) plus each alias.
static void add_key(suggestions *s, const a3_config_key *k, int full_paths) {
  const char *name = full_paths ? k->path : key_name(k->path);
  char parent[PATH_BUF] = "";
  if (full_paths && name != key_name(k->path))
    snprintf(parent, sizeof parent, "%.*s", (int)(key_name(k->path) - 1 - k->path), k->path);
  add_word(s, "", name, strlen(name), name);
  for (const char *a = a3_cfg_key_aliases(k); *a;) {
    size_t len = strcspn(a, " ");
    if (len) add_word(s, parent, a, len, name);
    a += len;
    while (*a == ' ') a++;
  }
}

static const char *suggest(const suggestions *s, const char *word) {
  int i = a3_cfg_suggest(word, s->words, s->n);
  return i >= 0 ? s->targets[i] : NULL;
}

// " ('lr' is a key of train)" when the word is a key of another section.
static void elsewhere_hint(const char *word, const char *prefix, char *buf, size_t size) {
  int n = 0;
  const a3_config_key *keys = a3_config_schema(&n);
  for (int i = 0; i < n; i++) {
    const char *path = keys[i].path, *name = key_name(path);
    if (name == path || strcmp(name, word)) continue;
    int parent_len = (int)(name - 1 - path);
    if ((int)strlen(prefix) == parent_len && !strncmp(path, prefix, (size_t)parent_len)) continue;
    snprintf(buf, size, " ('%s' is a key of %.*s)", word, parent_len, path);
    return;
  }
}

static a3_status unknown_key(const walker *w, const a3_yaml_node *at, const char *prefix,
                             const char *word, size_t word_len) {
  const char *names[A3_CONFIG_SCHEMA_MAX];
  int n = child_names(prefix, names);
  static _Thread_local suggestions s; // 10 KB: kept off the stack
  s.n = 0;
  s.used = 0;
  for (int i = 0; i < n; i++) {
    char path[PATH_BUF];
    snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", names[i]);
    add_key(&s, a3_config_find_key(path), 0);
  }
  char list[LIST_BUF], echo[256], hint[256] = "";
  join(names, n, list, sizeof list);
  a3_cfg_echo(word, word_len, 60, echo, sizeof echo);
  const char *close = suggest(&s, word);
  if (close)
    snprintf(hint, sizeof hint, " (did you mean '%s'?)", close);
  else
    elsewhere_hint(word, prefix, hint, sizeof hint);
  if (!*prefix)
    return fail_node(w, at, NULL, "unknown section '%s'%s; the sections are: %s", echo, hint, list);
  return fail_node(w, at, NULL, "unknown key '%s' in %s%s; the keys of %s are: %s", echo, prefix,
                   hint, prefix, list);
}

// The schema key for map key `key` under `prefix`.
static a3_status lookup_child(const walker *w, const char *prefix, const a3_yaml_node *key,
                              const a3_config_key **out) {
  char got[GOT_BUF], path[PATH_BUF];
  a3_cfg_describe_node(key, got, sizeof got);
  if (key->kind != A3_YAML_SCALAR)
    return fail_node(w, key, *prefix ? prefix : NULL, "a key must be a name, got %s", got);
  if (strlen(key->text) == key->len && memchr(key->text, '.', key->len))
    return fail_node(w, key, *prefix ? prefix : NULL,
                     "dotted key %s: in a file, write nested maps (train: {lr: 1.0e-4}); dotted "
                     "paths are for -o overrides and sweeps",
                     got);
  *out = NULL;
  if (strlen(key->text) == key->len && strlen(prefix) + key->len + 2 <= sizeof path) {
    snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", key->text);
    *out = a3_config_find_key(path);
  }
  if (!*out) return unknown_key(w, key, prefix, key->text, key->len);
  return A3_OK;
}

// ---------------------------------------------------------------- sections
static a3_status check_seen(const walker *w, const a3_yaml_node **seen, const a3_config_key *k,
                            const a3_yaml_node *key, const char *where) {
  const a3_yaml_node *first = seen[key_index(k)];
  if (first && where)
    return fail_node(w, key, where, "duplicate key '%s' (first at %d:%d); keep one of them",
                     k->path, first->line, first->col);
  if (first)
    return fail_node(w, key, k->path, "duplicate key '%s' (first at %d:%d); keep one of them",
                     key_name(k->path), first->line, first->col);
  seen[key_index(k)] = key;
  return A3_OK;
}

static a3_status walk_section(walker *w, const char *prefix, const a3_yaml_node *map,
                              a3_config *cfg) {
  const a3_yaml_node *seen[A3_CONFIG_SCHEMA_MAX] = {0};
  for (int i = 0; i + 1 < map->n_kids; i += 2) {
    const a3_yaml_node *key = map->kids[i];
    const a3_config_key *k = NULL;
    A3_TRY(lookup_child(w, prefix, key, &k));
    A3_TRY(check_seen(w, seen, k, key, NULL));
    A3_TRY(set_node(w, k, map->kids[i + 1], cfg));
    note_mark(w, k, key);
  }
  return A3_OK;
}

static a3_status walk_root(walker *w, const a3_yaml_node *root, a3_config *cfg) {
  char sections[LIST_BUF], got[GOT_BUF];
  children_text("", sections, sizeof sections);
  if (!root || (a3_cfg_is_null(root) && root->len == 0)) {
    a3_yaml_node start = {.line = 1, .col = 1};
    return fail_node(w, root ? root : &start, NULL,
                     "the file is empty; expected a map with sections %s (see "
                     "configs/default.yaml)",
                     sections);
  }
  a3_cfg_describe_node(root, got, sizeof got);
  if (root->kind != A3_YAML_MAP)
    return fail_node(w, root, NULL, "expected a map of sections (%s) at the top level, got %s",
                     sections, got);
  return walk_section(w, "", root, cfg);
}

// ---------------------------------------------------------------- sweeps
static void free_axes(a3_sweep_axes *axes) {
  for (int i = 0; i < axes->n; i++) {
    for (int j = 0; j < axes->items[i].n_values; j++) free(axes->items[i].values[j]);
    free(axes->items[i].values);
  }
  free(axes->items);
  *axes = (a3_sweep_axes){0};
}

static void free_points(a3_sweep_points *points) {
  for (int i = 0; i < points->n; i++) {
    for (int j = 0; j < points->items[i].n_settings; j++) free(points->items[i].settings[j].value);
    free(points->items[i].settings);
  }
  free(points->items);
  *points = (a3_sweep_points){0};
}

void a3_config_free(a3_config *cfg) {
  if (!cfg) return;
  free_axes(&cfg->sweep.grid);
  free_axes(&cfg->sweep.zip);
  free_points(&cfg->sweep.points);
}

// A sweep value checked like a value of the key it sets, as canonical text.
static a3_status canonical_value(walker *w, const a3_config_key *target, const char *path,
                                 const a3_yaml_node *node, char **out) {
  if (!w->scratch) {
    A3_TRY(A3_ALLOC(w->scratch, 1));
    A3_TRY(apply_defaults(w->scratch));
  }
  A3_TRY(a3_cfg_set_value(&w->src, target, path, node, w->scratch));
  return a3_config_format_value(w->scratch, target, out);
}

static a3_status unknown_key_path(const walker *w, const a3_yaml_node *key, const char *where) {
  int n_keys = 0;
  const a3_config_key *keys = a3_config_schema(&n_keys);
  static _Thread_local suggestions s;
  s.n = 0;
  s.used = 0;
  for (int i = 0; i < n_keys; i++)
    if (is_value_key(&keys[i])) add_key(&s, &keys[i], 1);
  char echo[256], hint[256] = "";
  a3_cfg_echo(key->text, key->len, 60, echo, sizeof echo);
  const char *close = suggest(&s, key->text);
  if (close) snprintf(hint, sizeof hint, " (did you mean '%s'?)", close);
  return fail_node(w, key, where,
                   "unknown key path '%s'%s; a sweep names keys by their full path, such as "
                   "train.lr (see 'a3fta config schema')",
                   echo, hint);
}

// The key a sweep entry names by its full path ("train.lr").
static a3_status lookup_swept(const walker *w, const char *where, const a3_yaml_node *key,
                              const a3_config_key **out) {
  char got[GOT_BUF];
  a3_cfg_describe_node(key, got, sizeof got);
  if (key->kind != A3_YAML_SCALAR || a3_cfg_is_null(key))
    return fail_node(w, key, where, "expected a key path such as train.lr, got %s", got);
  const a3_config_key *k = strlen(key->text) == key->len ? a3_config_find_key(key->text) : NULL;
  if (k && k->type == A3_KEY_SECTION)
    return fail_node(w, key, where, "%s is a section; sweep the keys in it one by one", got);
  if (k && !is_value_key(k))
    return fail_node(w, key, where, "%s cannot be swept: sweeps do not nest", got);
  if (!k) return unknown_key_path(w, key, where);
  *out = k;
  return A3_OK;
}

static a3_status parse_axis_values(walker *w, const a3_config_key *k, const a3_config_key *target,
                                   const a3_yaml_node *list, a3_sweep_axis *axis) {
  char path[PATH_BUF], elem[PATH_BUF + 16], got[GOT_BUF];
  snprintf(path, sizeof path, "%s.%s", k->path, target->path);
  a3_cfg_describe_node(list, got, sizeof got);
  if (list->kind != A3_YAML_SEQ)
    return fail_node(w, list, path, "expected a list of values, got %s; write [v] for one value",
                     got);
  if (list->n_kids == 0)
    return fail_node(w, list, path, "the list is empty; give at least one value");
  A3_TRY(A3_ALLOC(axis->values, list->n_kids));
  for (int j = 0; j < list->n_kids; j++) {
    snprintf(elem, sizeof elem, "%s[%d]", path, j);
    A3_TRY(canonical_value(w, target, elem, list->kids[j], &axis->values[j]));
    axis->n_values++;
  }
  return A3_OK;
}

static int is_zip(const a3_config_key *k) { return k->offset == offsetof(a3_config, sweep.zip); }

// Fills axes (which the caller frees, also on failure) from a map node.
static a3_status parse_axes(walker *w, const a3_config_key *k, const a3_yaml_node *map,
                            a3_sweep_axes *axes) {
  int n = map->n_kids / 2;
  if (n == 0) return A3_OK;
  A3_TRY(A3_ALLOC(axes->items, n));
  const a3_yaml_node *seen[A3_CONFIG_SCHEMA_MAX] = {0};
  for (int i = 0; i < n; i++) {
    const a3_yaml_node *key = map->kids[2 * i], *values = map->kids[2 * i + 1];
    const a3_config_key *target = NULL;
    A3_TRY(lookup_swept(w, k->path, key, &target));
    A3_TRY(check_seen(w, seen, target, key, k->path));
    a3_sweep_axis *axis = &axes->items[axes->n++];
    snprintf(axis->key, sizeof axis->key, "%s", target->path);
    A3_TRY(parse_axis_values(w, k, target, values, axis));
    if (is_zip(k) && axis->n_values != axes->items[0].n_values)
      return fail_node(w, values, k->path,
                       "%s has %d values but %s has %d; zip lists advance together, so they "
                       "need the same length",
                       axis->key, axis->n_values, axes->items[0].key, axes->items[0].n_values);
  }
  return A3_OK;
}

static int schema_order(const char *a, const char *b) {
  return key_index(a3_config_find_key(a)) - key_index(a3_config_find_key(b));
}
static int cmp_axis(const void *a, const void *b) {
  return schema_order(((const a3_sweep_axis *)a)->key, ((const a3_sweep_axis *)b)->key);
}
static int cmp_setting(const void *a, const void *b) {
  return schema_order(((const a3_sweep_setting *)a)->key, ((const a3_sweep_setting *)b)->key);
}

static a3_status set_axes(walker *w, const a3_config_key *k, const a3_yaml_node *node,
                          a3_config *cfg) {
  char got[GOT_BUF];
  a3_cfg_describe_node(node, got, sizeof got);
  if (node->kind != A3_YAML_MAP)
    return fail_node(w, node, k->path,
                     "expected a map from key path to a list of values, such as {train.lr: "
                     "[1.0e-4, 3.0e-4]}, or {} for none; got %s",
                     got);
  a3_sweep_axes axes = {0};
  a3_status s = parse_axes(w, k, node, &axes);
  if (s != A3_OK) {
    free_axes(&axes);
    return s;
  }
  // Canonical order, so the order in the file changes neither the text nor the hash.
  if (axes.n > 1) qsort(axes.items, (size_t)axes.n, sizeof *axes.items, cmp_axis);
  a3_sweep_axes *field = (a3_sweep_axes *)((char *)cfg + k->offset);
  free_axes(field);
  *field = axes;
  return A3_OK;
}

static a3_status parse_point(walker *w, const char *where, const a3_yaml_node *map,
                             a3_sweep_point *p) {
  char got[GOT_BUF], path[PATH_BUF * 2];
  a3_cfg_describe_node(map, got, sizeof got);
  if (map->kind != A3_YAML_MAP)
    return fail_node(w, map, where,
                     "expected a map from key path to value, such as {train.lr: 1.0e-4}; got %s",
                     got);
  int n = map->n_kids / 2;
  if (n == 0) return A3_OK;
  A3_TRY(A3_ALLOC(p->settings, n));
  const a3_yaml_node *seen[A3_CONFIG_SCHEMA_MAX] = {0};
  for (int i = 0; i < n; i++) {
    const a3_config_key *target = NULL;
    A3_TRY(lookup_swept(w, where, map->kids[2 * i], &target));
    A3_TRY(check_seen(w, seen, target, map->kids[2 * i], where));
    a3_sweep_setting *setting = &p->settings[p->n_settings++];
    snprintf(setting->key, sizeof setting->key, "%s", target->path);
    snprintf(path, sizeof path, "%s.%s", where, target->path);
    A3_TRY(canonical_value(w, target, path, map->kids[2 * i + 1], &setting->value));
  }
  if (n > 1) qsort(p->settings, (size_t)n, sizeof *p->settings, cmp_setting);
  return A3_OK;
}

static a3_status set_points(walker *w, const a3_config_key *k, const a3_yaml_node *node,
                            a3_config *cfg) {
  char got[GOT_BUF], where[PATH_BUF];
  a3_cfg_describe_node(node, got, sizeof got);
  if (node->kind != A3_YAML_SEQ)
    return fail_node(w, node, k->path,
                     "expected a list of maps, such as [{train.lr: 1.0e-4, train.seed: 1}], or "
                     "[] for none; got %s",
                     got);
  a3_sweep_points points = {0};
  a3_status s = node->n_kids ? A3_ALLOC(points.items, node->n_kids) : A3_OK;
  for (int i = 0; s == A3_OK && i < node->n_kids; i++) {
    snprintf(where, sizeof where, "%s[%d]", k->path, i);
    s = parse_point(w, where, node->kids[i], &points.items[points.n++]);
  }
  if (s != A3_OK) {
    free_points(&points);
    return s;
  }
  a3_sweep_points *field = (a3_sweep_points *)((char *)cfg + k->offset);
  free_points(field);
  *field = points;
  return A3_OK;
}

// ---------------------------------------------------------------- setting
static a3_status set_node(walker *w, const a3_config_key *k, const a3_yaml_node *node,
                          a3_config *cfg) {
  char got[GOT_BUF], keys[LIST_BUF];
  switch (k->type) {
  case A3_KEY_SECTION:
    if (node->kind == A3_YAML_MAP) return walk_section(w, k->path, node, cfg);
    a3_cfg_describe_node(node, got, sizeof got);
    children_text(k->path, keys, sizeof keys);
    return fail_node(w, node, k->path, "expected a map with the keys %s; got %s", keys, got);
  case A3_KEY_SWEEP_AXES: return set_axes(w, k, node, cfg);
  case A3_KEY_SWEEP_POINTS: return set_points(w, k, node, cfg);
  default: return a3_cfg_set_value(&w->src, k, k->path, node, cfg);
  }
}

// The key of a dotted path, or an error naming the first unknown part.
static a3_status lookup_path(const walker *w, const char *path, const a3_config_key **out) {
  if ((*out = a3_config_find_key(path))) return A3_OK;
  char prefix[PATH_BUF] = "", word[PATH_BUF];
  const char *rest = path;
  for (const char *dot; (dot = strchr(rest, '.')); rest = dot + 1) {
    size_t n = (size_t)(dot - path);
    if (n >= sizeof prefix) break;
    char candidate[PATH_BUF];
    memcpy(candidate, path, n);
    candidate[n] = '\0';
    const a3_config_key *k = a3_config_find_key(candidate);
    if (!k) break;
    if (k->type != A3_KEY_SECTION)
      return fail_node(w, NULL, k->path, "a %s has no keys below it; set it as %s=VALUE",
                       a3_config_type_name(k), k->path);
    memcpy(prefix, candidate, n + 1);
  }
  size_t len = strcspn(rest, ".");
  snprintf(word, sizeof word, "%.*s", (int)(len < sizeof word ? len : sizeof word - 1), rest);
  return unknown_key(w, NULL, prefix, word, strlen(word));
}

// Sets a key path from YAML text, as overrides, defaults and sweep runs do.
static a3_status set_from_text(walker *w, const char *path, const char *text, a3_config *cfg) {
  const a3_config_key *k = NULL;
  A3_TRY(lookup_path(w, path, &k));
  char name[1100];
  a3_cfg_prefix(&w->src, 0, 0, name, sizeof name);
  const a3_yaml_source ysrc = {name, 0};
  a3_yaml_node *root = NULL;
  A3_TRY(a3_yaml_parse(&ysrc, text, strlen(text), &root));
  char nothing[1] = "";
  a3_yaml_node empty = {.kind = A3_YAML_SCALAR, .line = 1, .col = 1, .text = nothing, .plain = 1};
  a3_status s = set_node(w, k, root ? root : &empty, cfg);
  if (s == A3_OK) note_mark(w, k, NULL);
  a3_yaml_free(root);
  return s;
}

static a3_status apply_override(walker *w, const char *assignment, a3_config *cfg) {
  w->src = (a3_cfg_src){A3_SRC_OVERRIDE, assignment};
  const char *eq = strchr(assignment, '=');
  if (!eq || eq == assignment)
    return fail_node(w, NULL, NULL, "expected KEY=VALUE, such as train.lr=3e-4");
  char path[PATH_BUF];
  size_t n = (size_t)(eq - assignment);
  snprintf(path, sizeof path, "%.*s", (int)(n < sizeof path ? n : sizeof path - 1), assignment);
  return set_from_text(w, path, eq + 1, cfg);
}

a3_status a3_config_apply_override(a3_config *cfg, const char *assignment) {
  walker w = {0};
  a3_status s = apply_override(&w, assignment, cfg);
  a3_config_free(w.scratch);
  free(w.scratch);
  return s;
}

a3_status a3_config_set(a3_config *cfg, const char *key_path, const char *yaml_value,
                        const char *origin) {
  walker w = {.src = {A3_SRC_ORIGIN, origin}};
  a3_status s = set_from_text(&w, key_path, yaml_value, cfg);
  a3_config_free(w.scratch);
  free(w.scratch);
  return s;
}

// ---------------------------------------------------------------- defaults
static a3_status apply_defaults(a3_config *cfg) {
  memset(cfg, 0, sizeof *cfg);
  int n = 0;
  const a3_config_key *keys = a3_config_schema(&n);
  walker w = {0};
  a3_status s = A3_OK;
  for (int i = 0; s == A3_OK && i < n; i++) {
    if (keys[i].type == A3_KEY_SECTION) continue;
    w.src = (a3_cfg_src){A3_SRC_DEFAULT, keys[i].path};
    s = set_from_text(&w, keys[i].path, keys[i].def, cfg);
  }
  if (s != A3_OK) a3_config_free(cfg);
  return s;
}

void a3_config_init_defaults(a3_config *cfg) {
  a3_status s = apply_defaults(cfg);
  if (s != A3_OK) // only a broken schema table gets here; the tests load every default
    a3_log(A3_LOG_ERROR, "a3fta: internal error: %s", a3_error_message());
}

// ---------------------------------------------------------------- copies
static a3_status dup_text(const char *s, char **out) {
  size_t n = strlen(s) + 1;
  A3_TRY(a3_alloc((void **)out, n, 1));
  memcpy(*out, s, n);
  return A3_OK;
}

static a3_status copy_axes(a3_sweep_axes *dst, const a3_sweep_axes *src) {
  if (!src->n) return A3_OK;
  A3_TRY(A3_ALLOC(dst->items, src->n));
  for (int i = 0; i < src->n; i++) {
    a3_sweep_axis *d = &dst->items[dst->n++];
    const a3_sweep_axis *s = &src->items[i];
    memcpy(d->key, s->key, sizeof d->key);
    A3_TRY(A3_ALLOC(d->values, s->n_values));
    for (; d->n_values < s->n_values; d->n_values++)
      A3_TRY(dup_text(s->values[d->n_values], &d->values[d->n_values]));
  }
  return A3_OK;
}

static a3_status copy_points(a3_sweep_points *dst, const a3_sweep_points *src) {
  if (!src->n) return A3_OK;
  A3_TRY(A3_ALLOC(dst->items, src->n));
  for (int i = 0; i < src->n; i++) {
    a3_sweep_point *d = &dst->items[dst->n++];
    const a3_sweep_point *s = &src->items[i];
    if (!s->n_settings) continue;
    A3_TRY(A3_ALLOC(d->settings, s->n_settings));
    for (; d->n_settings < s->n_settings; d->n_settings++) {
      a3_sweep_setting *ds = &d->settings[d->n_settings];
      memcpy(ds->key, s->settings[d->n_settings].key, sizeof ds->key);
      A3_TRY(dup_text(s->settings[d->n_settings].value, &ds->value));
    }
  }
  return A3_OK;
}

a3_status a3_config_copy(a3_config *dst, const a3_config *src) {
  *dst = *src;
  dst->sweep = (a3_sweep_config){0};
  a3_status s = copy_axes(&dst->sweep.grid, &src->sweep.grid);
  if (s == A3_OK) s = copy_axes(&dst->sweep.zip, &src->sweep.zip);
  if (s == A3_OK) s = copy_points(&dst->sweep.points, &src->sweep.points);
  if (s != A3_OK) {
    a3_config_free(dst);
    a3_error_trace(__FILE__, __LINE__);
  }
  return s;
}

// ---------------------------------------------------------------- cross-key checks
static const a3_mark *mark_of(const a3_mark *marks, const char *path) {
  const a3_config_key *k = a3_config_find_key(path);
  return marks && k ? &marks[key_index(k)] : NULL;
}

// Of two keys in conflict, blame the one set last: that is usually the edit
// that broke the pair (a default never takes the blame from a set key).
static const char *later(const a3_mark *marks, const char *a, const char *b) {
  const a3_mark *ma = mark_of(marks, a), *mb = mark_of(marks, b);
  return ma && mb && mb->seq > ma->seq ? b : a;
}

static a3_status fail_key(const a3_mark *marks, const char *path, const char *fmt, ...)
    A3_PRINTF(3, 4);
static a3_status fail_key(const a3_mark *marks, const char *path, const char *fmt, ...) {
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  const a3_mark *m = mark_of(marks, path);
  if (!m || m->kind == A3_SRC_DEFAULT) return A3_FAIL(A3_ERR_CONFIG, "%s: %s", path, msg);
  const a3_cfg_src src = {m->kind, m->text};
  return a3_cfg_fail(&src, m->line, m->col, path, "%s", msg);
}

#define BOC "model.arch.block_out_channels"

static a3_status check_block_counts(const a3_config *cfg, const a3_mark *marks) {
  const a3_arch_config *a = &cfg->model.arch;
  const char *lists[2] = {"model.arch.down_block_types", "model.arch.up_block_types"};
  const int counts[2] = {a->n_down_block_types, a->n_up_block_types};
  for (int i = 0; i < 2; i++)
    if (counts[i] != a->n_block_out_channels)
      return fail_key(marks, later(marks, lists[i], BOC),
                      "%s has %d entries but block_out_channels has %d; give one block type "
                      "per entry of block_out_channels",
                      lists[i] + 11, counts[i], a->n_block_out_channels);
  return A3_OK;
}

static a3_status check_channels(const a3_config *cfg, const a3_mark *marks) {
  const a3_arch_config *a = &cfg->model.arch;
  for (int i = 0; i < a->n_block_out_channels; i++)
    if (a->block_out_channels[i] % a->norm_num_groups)
      return fail_key(marks, later(marks, BOC, "model.arch.norm_num_groups"),
                      "block_out_channels[%d] = %lld is not divisible by norm_num_groups = "
                      "%lld; GroupNorm splits the channels into equal groups",
                      i, (long long)a->block_out_channels[i], (long long)a->norm_num_groups);
  return A3_OK;
}

// Attention runs in Attn blocks and in the middle block (the last channel count).
static a3_status check_heads(const a3_config *cfg, const a3_mark *marks) {
  const a3_arch_config *a = &cfg->model.arch;
  int n = a->n_block_out_channels;
  if (!a->attention_head_dim) return A3_OK;
  for (int i = 0; i < n; i++) {
    // up_block_types run lowest resolution first: up[j] has block_out_channels[n-1-j].
    int attn = a->down_block_types[i] == A3_DOWN_ATTN ||
               a->up_block_types[n - 1 - i] == A3_UP_ATTN || i == n - 1;
    if (attn && a->block_out_channels[i] % a->attention_head_dim)
      return fail_key(marks, later(marks, "model.arch.attention_head_dim", BOC),
                      "attention_head_dim = %lld does not divide block_out_channels[%d] = %lld, "
                      "the channels of an attention block; use a divisor, or null for one head",
                      (long long)a->attention_head_dim, i, (long long)a->block_out_channels[i]);
  }
  return A3_OK;
}

static a3_status check_sample_size(const a3_config *cfg, const a3_mark *marks) {
  const a3_arch_config *a = &cfg->model.arch;
  int halvings = a->n_block_out_channels - 1;
  int64_t factor = (int64_t)1 << halvings;
  if (a->sample_size % factor)
    return fail_key(marks, later(marks, "model.arch.sample_size", BOC),
                    "sample_size = %lld is not divisible by %lld: %d blocks halve the "
                    "resolution %d times",
                    (long long)a->sample_size, (long long)factor, halvings + 1, halvings);
  return A3_OK;
}

static a3_status check_steps(const a3_config *cfg, const a3_mark *marks) {
  if (cfg->train.warmup > cfg->train.steps)
    return fail_key(marks, later(marks, "train.warmup", "train.steps"),
                    "train.warmup = %lld exceeds train.steps = %lld; the warmup must fit in "
                    "the run",
                    (long long)cfg->train.warmup, (long long)cfg->train.steps);
  if (cfg->train.batch_size % cfg->train.grad_accum)
    return fail_key(marks, later(marks, "train.grad_accum", "train.batch_size"),
                    "train.batch_size = %lld is not a multiple of train.grad_accum = %lld; each "
                    "accumulated micro-batch must hold the same number of images",
                    (long long)cfg->train.batch_size, (long long)cfg->train.grad_accum);
  if (cfg->eval.sampler_steps > cfg->train.num_train_timesteps)
    return fail_key(marks, later(marks, "eval.sampler_steps", "train.num_train_timesteps"),
                    "sampler_steps = %lld exceeds train.num_train_timesteps = %lld; a sampler "
                    "cannot take more steps than the schedule has",
                    (long long)cfg->eval.sampler_steps, (long long)cfg->train.num_train_timesteps);
  return A3_OK;
}

static a3_status check_sweep(const a3_config *cfg, const a3_mark *marks) {
  const a3_sweep_axes *grid = &cfg->sweep.grid, *zip = &cfg->sweep.zip;
  for (int i = 0; i < zip->n; i++)
    for (int j = 0; j < grid->n; j++)
      if (!strcmp(zip->items[i].key, grid->items[j].key))
        return fail_key(marks, later(marks, "sweep.zip", "sweep.grid"),
                        "%s is swept by both sweep.grid and sweep.zip; keep it in one of them",
                        zip->items[i].key);
  return A3_OK;
}

static a3_status validate(const a3_config *cfg, const a3_mark *marks) {
  A3_TRY(check_block_counts(cfg, marks));
  A3_TRY(check_channels(cfg, marks));
  A3_TRY(check_heads(cfg, marks));
  A3_TRY(check_sample_size(cfg, marks));
  A3_TRY(check_steps(cfg, marks));
  A3_TRY(check_sweep(cfg, marks));
  return A3_OK;
}

a3_status a3_config_validate(const a3_config *cfg) { return validate(cfg, NULL); }

// ---------------------------------------------------------------- loading
static a3_status load_text(walker *w, const char *name, const char *text, size_t len,
                           a3_config *cfg) {
  w->src = (a3_cfg_src){A3_SRC_FILE, name};
  if (len > A3_CONFIG_MAX_BYTES)
    return a3_cfg_fail(&w->src, 1, 1, NULL,
                       "the file is %zu bytes, more than the %d bytes (1 MiB) a config may have; "
                       "is it the right file?",
                       len, A3_CONFIG_MAX_BYTES);
  const a3_yaml_source ysrc = {name, 1};
  a3_yaml_node *root = NULL;
  A3_TRY(a3_yaml_parse(&ysrc, text, len, &root));
  a3_status s = walk_root(w, root, cfg);
  a3_yaml_free(root);
  return s;
}

static a3_status load_all(walker *w, const char *name, const char *text, size_t len,
                          const char *const *overrides, int n_overrides, a3_config *out) {
  A3_TRY(apply_defaults(out));
  if (text) A3_TRY(load_text(w, name ? name : "<string>", text, len, out));
  for (int i = 0; i < n_overrides; i++) A3_TRY(apply_override(w, overrides[i], out));
  A3_TRY(validate(out, w->marks));
  return A3_OK;
}

a3_status a3_config_load_string(const char *name_for_errors, const char *yaml_text, size_t len,
                                const char *const *overrides, int n_overrides, a3_config *out) {
  a3_mark marks[A3_CONFIG_SCHEMA_MAX] = {0};
  walker w = {.marks = marks};
  memset(out, 0, sizeof *out);
  a3_status s = load_all(&w, name_for_errors, yaml_text, len, overrides, n_overrides, out);
  a3_config_free(w.scratch);
  free(w.scratch);
  if (s != A3_OK) {
    a3_config_free(out);
    a3_error_trace(__FILE__, __LINE__);
  }
  return s;
}

a3_status a3_config_load(const char *path, const char *const *overrides, int n_overrides,
                         a3_config *out) {
  memset(out, 0, sizeof *out);
  if (!path) return a3_config_load_string(NULL, NULL, 0, overrides, n_overrides, out);
  char *text = NULL;
  size_t len = 0;
  a3_status s = a3_read_file(path, A3_CONFIG_MAX_BYTES, &text, &len);
  if (s == A3_ERR_INPUT) // a3_read_file's only input error: over the size limit
    return A3_FAIL(A3_ERR_CONFIG,
                   "%s:1:1: the file is larger than %d bytes (1 MiB), the limit for a config; is "
                   "it the right file?",
                   path, A3_CONFIG_MAX_BYTES);
  if (s == A3_ERR_IO) { // a wrong path on the command line is a usage error: exit 2
    char reason[512];
    snprintf(reason, sizeof reason, "%s", a3_error_message());
    return A3_FAIL(A3_ERR_CONFIG, "%s; check the config path", reason);
  }
  A3_TRY(s);
  s = a3_config_load_string(path, text, len, overrides, n_overrides, out);
  free(text);
  return s;
}
