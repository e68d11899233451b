// One config value from a YAML node: the scalar grammar (decimal integers,
// finite numbers, true/false, null), range and enum checks, and lists. Every
// rejection says what was found and what is accepted instead.
#include "io/config_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { PATH_BUF = 2 * A3_CONFIG_KEY_MAX + 32, GOT_BUF = 320, LIST_MAX = A3_CONFIG_MAX_CLASSES };

// ---------------------------------------------------------------- messages
void a3_cfg_prefix(const a3_cfg_src *src, int line, int col, char *buf, size_t size) {
  switch (src->kind) {
  case A3_SRC_FILE: snprintf(buf, size, "%s:%d:%d", src->text, line, col); return;
  case A3_SRC_OVERRIDE: snprintf(buf, size, "override '%.200s'", src->text); return;
  case A3_SRC_ORIGIN: snprintf(buf, size, "%s", src->text); return;
  case A3_SRC_DEFAULT:
    snprintf(buf, size, "schema default of %s", src->text ? src->text : "a key");
    return;
  }
  snprintf(buf, size, "?");
}

a3_status a3_cfg_fail(const a3_cfg_src *src, int line, int col, const char *path, const char *fmt,
                      ...) {
  char prefix[1024], msg[1536];
  a3_cfg_prefix(src, line, col, prefix, sizeof prefix);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (path) return A3_FAIL(A3_ERR_CONFIG, "%s: %s: %s", prefix, path, msg);
  return A3_FAIL(A3_ERR_CONFIG, "%s: %s", prefix, msg);
}

static a3_status fail_at(const a3_cfg_src *src, const a3_yaml_node *node, const char *path,
                         const char *fmt, ...) A3_PRINTF(4, 5);
static a3_status fail_at(const a3_cfg_src *src, const a3_yaml_node *node, const char *path,
                         const char *fmt, ...) {
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return a3_cfg_fail(src, node->line, node->col, path, "%s", msg);
}

void a3_cfg_echo(const char *text, size_t len, size_t max, char *buf, size_t size) {
  size_t o = 0;
  for (size_t i = 0; i < len && o + 4 < size; i++) {
    unsigned char c = (unsigned char)text[i];
    if (i >= max && (c & 0xC0) != 0x80) { // cut only between UTF-8 characters
      memcpy(buf + o, "...", 3);
      o += 3;
      break;
    }
    buf[o++] = (c < 0x20 || c == 0x7F) ? '?' : (char)c;
  }
  buf[o] = '\0';
}

int a3_cfg_is_null(const a3_yaml_node *node) {
  if (node->kind != A3_YAML_SCALAR || !node->plain) return 0;
  const char *t = node->text;
  return node->len == 0 || !strcmp(t, "~") || !strcmp(t, "null") || !strcmp(t, "Null") ||
         !strcmp(t, "NULL");
}

void a3_cfg_describe_node(const a3_yaml_node *node, char *buf, size_t size) {
  char echo[256];
  if (node->kind == A3_YAML_SEQ) {
    snprintf(buf, size, "a list");
  } else if (node->kind == A3_YAML_MAP) {
    snprintf(buf, size, "a map");
  } else if (a3_cfg_is_null(node)) {
    snprintf(buf, size, node->len ? "null" : "nothing (an empty value means null)");
  } else {
    a3_cfg_echo(node->text, node->len, 60, echo, sizeof echo);
    snprintf(buf, size, node->plain ? "'%s'" : "the quoted string '%s'", echo);
  }
}

// ---------------------------------------------------------------- suggestions
static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c; }

// Case-insensitive Levenshtein distance; 99 for words too long to be typos.
static int edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64) return 99;
  int prev[65], cur[65];
  for (size_t j = 0; j <= lb; j++) prev[j] = (int)j;
  for (size_t i = 1; i <= la; i++) {
    cur[0] = (int)i;
    for (size_t j = 1; j <= lb; j++) {
      int sub = prev[j - 1] + (lower(a[i - 1]) != lower(b[j - 1]));
      int del = prev[j] + 1, ins = cur[j - 1] + 1;
      cur[j] = sub < del ? (sub < ins ? sub : ins) : (del < ins ? del : ins);
    }
    memcpy(prev, cur, (lb + 1) * sizeof *cur);
  }
  return prev[lb];
}

// One starts with the other (case-insensitive), sharing at least 2 characters.
static int prefix_match(const char *a, const char *b) {
  size_t n = 0;
  while (a[n] && b[n] && lower(a[n]) == lower(b[n])) n++;
  return n >= 2 && (!a[n] || !b[n]);
}

int a3_cfg_suggest(const char *word, const char *const *candidates, int n) {
  int best = -1;
  int best_score = 3;
  size_t lw = strlen(word);
  for (int i = 0; i < n; i++) {
    int d = edit_distance(word, candidates[i]);
    size_t lc = strlen(candidates[i]);
    if ((size_t)d >= (lw > lc ? lw : lc)) d = 99; // replacing everything is no typo
    if (d > 2 && prefix_match(word, candidates[i])) d = 2;
    if (d < best_score) {
      best = i;
      best_score = d;
    }
  }
  return best;
}

// ---------------------------------------------------------------- ranges
static void int_range(int64_t lo, int64_t hi, char *buf, size_t size) {
  if (hi == INT64_MAX)
    snprintf(buf, size, ">= %" PRId64, lo);
  else
    snprintf(buf, size, "[%" PRId64 ", %" PRId64 "]", lo, hi);
}

// Whole numbers in full ("1000000", not "1e+06"), others as %g.
static void range_number(double v, char *buf, size_t size) {
  if (v == floor(v) && fabs(v) < 1e15)
    snprintf(buf, size, "%.0f", v);
  else
    snprintf(buf, size, "%g", v);
}

static void float_range(const a3_config_key *k, char *buf, size_t size) {
  char lo[32], hi[32];
  range_number(k->fmin, lo, sizeof lo);
  range_number(k->fmax, hi, sizeof hi);
  snprintf(buf, size, "%c%s, %s%c", (k->flags & A3_KEY_MIN_OPEN) ? '(' : '[', lo, hi,
           (k->flags & A3_KEY_MAX_OPEN) ? ')' : ']');
}

static void join_names(const a3_config_key *k, char *buf, size_t size) {
  size_t o = 0;
  buf[0] = '\0';
  for (int i = 0; i < k->n_names && o < size; i++)
    o += (size_t)snprintf(buf + o, size - o, "%s%s", i ? ", " : "", k->names[i]);
}

static void list_range(const a3_config_key *k, char *buf, size_t size) {
  char elems[512];
  if (k->type == A3_KEY_INT_LIST) {
    char r[64];
    int_range(k->imin, k->imax, r, sizeof r);
    snprintf(elems, sizeof elems, "each in %s", r);
  } else {
    char names[448];
    join_names(k, names, sizeof names);
    snprintf(elems, sizeof elems, "each one of: %s", names);
  }
  snprintf(buf, size, "%d to %d%s entries, %s", (k->flags & A3_KEY_NONEMPTY) ? 1 : 0, k->capacity,
           (k->flags & A3_KEY_UNIQUE) ? " distinct" : "", elems);
}

void a3_config_describe_range(const a3_config_key *k, char *buf, size_t size) {
  char r[128];
  switch (k->type) {
  case A3_KEY_INT: int_range(k->imin, k->imax, buf, size); return;
  case A3_KEY_OPT_INT:
    int_range(k->imin, k->imax, r, sizeof r);
    snprintf(buf, size, "null or %s", r);
    return;
  case A3_KEY_FLOAT: float_range(k, buf, size); return;
  case A3_KEY_BOOL: snprintf(buf, size, "true, false"); return;
  case A3_KEY_STRING:
    snprintf(buf, size, "%sat most %d bytes", (k->flags & A3_KEY_NONEMPTY) ? "non-empty, " : "",
             k->capacity - 1);
    return;
  case A3_KEY_ENUM: join_names(k, buf, size); return;
  case A3_KEY_INT_LIST:
  case A3_KEY_ENUM_LIST: list_range(k, buf, size); return;
  case A3_KEY_SWEEP_AXES: snprintf(buf, size, "key path: [values...]"); return;
  case A3_KEY_SWEEP_POINTS: snprintf(buf, size, "[{key path: value, ...}, ...]"); return;
  case A3_KEY_SECTION: break;
  }
  snprintf(buf, size, "%s", "");
}

const char *a3_config_type_name(const a3_config_key *k) {
  switch (k->type) {
  case A3_KEY_SECTION: return "section";
  case A3_KEY_INT: return "integer";
  case A3_KEY_OPT_INT: return "integer or null";
  case A3_KEY_FLOAT: return "number";
  case A3_KEY_BOOL: return "bool";
  case A3_KEY_STRING: return "string";
  case A3_KEY_ENUM: return "enum";
  case A3_KEY_INT_LIST: return "list of integers";
  case A3_KEY_ENUM_LIST: return "list of enums";
  case A3_KEY_SWEEP_AXES: return "map of lists";
  case A3_KEY_SWEEP_POINTS: return "list of maps";
  }
  return "?";
}

// "in [1, 4096]" or ">= 0", for "expected an integer ..." messages.
static void range_phrase(const a3_config_key *k, char *buf, size_t size) {
  char r[128];
  if (k->type == A3_KEY_FLOAT)
    float_range(k, r, sizeof r);
  else
    int_range(k->imin, k->imax, r, sizeof r);
  snprintf(buf, size, "%s%s", (r[0] == '[' || r[0] == '(') ? "in " : "", r);
}

// ---------------------------------------------------------------- scalars
typedef enum { NUM_OK, NUM_SYNTAX, NUM_OVERFLOW, NUM_LEADING_ZERO, NUM_NONFINITE } num_result;

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static num_result parse_int(const char *s, size_t len, int64_t *out) {
  size_t i = 0;
  int neg = 0;
  if (i < len && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  if (i == len) return NUM_SYNTAX;
  for (size_t j = i; j < len; j++)
    if (!is_digit(s[j])) return NUM_SYNTAX;
  if (s[i] == '0' && len - i > 1) return NUM_LEADING_ZERO;
  uint64_t limit = (uint64_t)INT64_MAX + (neg ? 1u : 0u), v = 0;
  for (; i < len; i++) {
    uint64_t d = (uint64_t)(s[i] - '0');
    if (v > (limit - d) / 10) return NUM_OVERFLOW;
    v = v * 10 + d;
  }
  if (!neg)
    *out = (int64_t)v;
  else
    *out = v > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)v;
  return NUM_OK;
}

// nan, inf, infinity with an optional sign and YAML's leading dot (.nan).
static int is_nonfinite_word(const char *s, size_t len) {
  size_t i = 0;
  if (i < len && (s[i] == '+' || s[i] == '-')) i++;
  if (i < len && s[i] == '.') i++;
  char w[9];
  size_t n = len - i;
  if (n < 3 || n > 8) return 0;
  for (size_t j = 0; j < n; j++) w[j] = (char)lower(s[i + j]);
  w[n] = '\0';
  return !strcmp(w, "nan") || !strcmp(w, "inf") || !strcmp(w, "infinity");
}

static size_t skip_digits(const char *s, size_t len, size_t i) {
  while (i < len && is_digit(s[i])) i++;
  return i;
}

// [+-] (digits [. digits*] | . digits) [(e|E) [+-] digits]
static int float_syntax_ok(const char *s, size_t len) {
  size_t i = 0;
  if (i < len && (s[i] == '+' || s[i] == '-')) i++;
  size_t int_end = skip_digits(s, len, i), n_digits = int_end - i;
  i = int_end;
  if (i < len && s[i] == '.') {
    size_t frac_end = skip_digits(s, len, i + 1);
    n_digits += frac_end - (i + 1);
    i = frac_end;
  }
  if (n_digits == 0) return 0;
  if (i < len && (s[i] == 'e' || s[i] == 'E')) {
    i++;
    if (i < len && (s[i] == '+' || s[i] == '-')) i++;
    size_t exp_end = skip_digits(s, len, i);
    if (exp_end == i) return 0;
    i = exp_end;
  }
  return i == len;
}

// s must be NUL-terminated at len (YAML node texts are).
static num_result parse_float(const char *s, size_t len, double *out) {
  if (is_nonfinite_word(s, len)) return NUM_NONFINITE;
  if (!float_syntax_ok(s, len)) return NUM_SYNTAX;
  errno = 0;
  double v = strtod(s, NULL);
  if (isinf(v)) return NUM_OVERFLOW; // underflow to 0 or a subnormal is fine
  *out = v;
  return NUM_OK;
}

// Numbers and booleans must be plain scalars: a quoted "5" is a string.
static a3_status need_plain_scalar(const a3_cfg_src *src, const char *path,
                                   const a3_yaml_node *node, const char *what) {
  char got[GOT_BUF];
  a3_cfg_describe_node(node, got, sizeof got);
  if (node->kind != A3_YAML_SCALAR || a3_cfg_is_null(node))
    return fail_at(src, node, path, "expected %s, got %s", what, got);
  if (!node->plain)
    return fail_at(src, node, path, "expected %s, got %s; remove the quotes", what, got);
  return A3_OK;
}

static a3_status parse_int_node(const a3_cfg_src *src, const a3_config_key *k, const char *path,
                                const a3_yaml_node *node, int64_t *out) {
  char range[160], got[GOT_BUF], text[GOT_BUF];
  range_phrase(k, range, sizeof range);
  A3_TRY(need_plain_scalar(src, path, node, "an integer"));
  a3_cfg_describe_node(node, got, sizeof got);
  a3_cfg_echo(node->text, node->len, 60, text, sizeof text);
  int64_t v = 0;
  switch (parse_int(node->text, node->len, &v)) {
  case NUM_OK: break;
  case NUM_LEADING_ZERO:
    return fail_at(src, node, path,
                   "%s has a leading zero (YAML 1.1 reads that as octal); write the decimal "
                   "number without it",
                   text);
  case NUM_OVERFLOW:
    return fail_at(src, node, path, "%s does not fit in a 64-bit integer; expected an integer %s",
                   text, range);
  default:
    return fail_at(src, node, path, "expected an integer, got %s; write decimal digits %s", got,
                   range);
  }
  if (v < k->imin || v > k->imax)
    return fail_at(src, node, path, "%s is out of range; expected an integer %s", text, range);
  *out = v;
  return A3_OK;
}

static a3_status set_float(const a3_cfg_src *src, const a3_config_key *k, const char *path,
                           const a3_yaml_node *node, double *out) {
  char range[160], got[GOT_BUF], text[GOT_BUF];
  range_phrase(k, range, sizeof range);
  A3_TRY(need_plain_scalar(src, path, node, "a number"));
  a3_cfg_describe_node(node, got, sizeof got);
  a3_cfg_echo(node->text, node->len, 60, text, sizeof text);
  double v = 0;
  switch (parse_float(node->text, node->len, &v)) {
  case NUM_OK: break;
  case NUM_NONFINITE:
    return fail_at(src, node, path, "expected a finite number, got %s; allowed: %s", got, range);
  case NUM_OVERFLOW:
    return fail_at(src, node, path, "%s is too large for a double; expected a number %s", text,
                   range);
  default:
    return fail_at(src, node, path, "expected a number, got %s; write it like 0.001 or 1.0e-3",
                   got);
  }
  int below = (k->flags & A3_KEY_MIN_OPEN) ? v <= k->fmin : v < k->fmin;
  int above = (k->flags & A3_KEY_MAX_OPEN) ? v >= k->fmax : v > k->fmax;
  if (below || above)
    return fail_at(src, node, path, "%s is out of range; expected a number %s", text, range);
  *out = v;
  return A3_OK;
}

static int is_yaml11_bool(const char *t) {
  static const char *const words[] = {"yes", "no", "on", "off", "y", "n", "true", "false"};
  char w[8];
  size_t n = strlen(t);
  if (n >= sizeof w) return 0;
  for (size_t i = 0; i < n && i < sizeof w - 1; i++) w[i] = (char)lower(t[i]);
  w[n] = '\0';
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
    if (!strcmp(w, words[i])) return 1;
  return 0;
}

static a3_status set_bool(const a3_cfg_src *src, const char *path, const a3_yaml_node *node,
                          bool *out) {
  A3_TRY(need_plain_scalar(src, path, node, "true or false"));
  if (!strcmp(node->text, "true") || !strcmp(node->text, "false")) {
    *out = node->text[0] == 't';
    return A3_OK;
  }
  char got[GOT_BUF];
  a3_cfg_describe_node(node, got, sizeof got);
  if (is_yaml11_bool(node->text))
    return fail_at(src, node, path,
                   "expected true or false, got %s; other spellings (yes/no, on/off, True) mean "
                   "different things to different YAML readers, so write true or false",
                   got);
  return fail_at(src, node, path, "expected true or false, got %s", got);
}

// Index of the first byte that is a control character or a Unicode line
// break (U+0085, U+2028, U+2029), or len: such bytes would not survive printing.
static size_t find_control(const unsigned char *s, size_t len) {
  for (size_t i = 0; i < len; i++) {
    if (s[i] < 0x20 || s[i] == 0x7F) return i;
    if (s[i] == 0xC2 && i + 1 < len && s[i + 1] >= 0x80 && s[i + 1] <= 0x9F) return i;
    if (s[i] == 0xE2 && i + 2 < len && s[i + 1] == 0x80 && (s[i + 2] == 0xA8 || s[i + 2] == 0xA9))
      return i;
  }
  return len;
}

static a3_status set_string(const a3_cfg_src *src, const a3_config_key *k, const char *path,
                            const a3_yaml_node *node, char *out) {
  char got[GOT_BUF];
  a3_cfg_describe_node(node, got, sizeof got);
  if (node->kind != A3_YAML_SCALAR || a3_cfg_is_null(node))
    return fail_at(src, node, path, "expected a string, got %s%s", got,
                   node->kind == A3_YAML_SCALAR && node->len
                       ? "; quote it if you mean the word: \"null\""
                       : "");
  if (node->len >= (size_t)k->capacity)
    return fail_at(src, node, path, "the value is %zu bytes long; at most %d are allowed",
                   node->len, k->capacity - 1);
  if (node->len == 0 && (k->flags & A3_KEY_NONEMPTY))
    return fail_at(src, node, path, "must not be empty");
  size_t bad = find_control((const unsigned char *)node->text, node->len);
  if (bad < node->len)
    return fail_at(src, node, path,
                   "contains a control character or line break (byte 0x%02x at offset %zu); "
                   "write it as one line of printable characters",
                   (unsigned char)node->text[bad], bad);
  memcpy(out, node->text, node->len + 1);
  return A3_OK;
}

static a3_status parse_enum_node(const a3_cfg_src *src, const a3_config_key *k, const char *path,
                                 const a3_yaml_node *node, int *out) {
  char names[512], got[GOT_BUF], hint[128] = "";
  join_names(k, names, sizeof names);
  a3_cfg_describe_node(node, got, sizeof got);
  if (node->kind != A3_YAML_SCALAR || a3_cfg_is_null(node))
    return fail_at(src, node, path, "expected one of: %s; got %s", names, got);
  for (int i = 0; i < k->n_names; i++) {
    if (strlen(k->names[i]) == node->len && !memcmp(k->names[i], node->text, node->len)) {
      *out = i;
      return A3_OK;
    }
  }
  int close = a3_cfg_suggest(node->text, k->names, k->n_names);
  if (close >= 0) snprintf(hint, sizeof hint, " (did you mean '%s'?)", k->names[close]);
  return fail_at(src, node, path, "%s is not allowed%s; expected one of: %s", got, hint, names);
}

// ---------------------------------------------------------------- lists
static a3_status parse_element(const a3_cfg_src *src, const a3_config_key *k, const char *path,
                               const a3_yaml_node *node, int64_t *out) {
  if (k->type == A3_KEY_INT_LIST) return parse_int_node(src, k, path, node, out);
  int e = 0;
  A3_TRY(parse_enum_node(src, k, path, node, &e));
  *out = e;
  return A3_OK;
}

static a3_status check_list_shape(const a3_cfg_src *src, const a3_config_key *k, const char *path,
                                  const a3_yaml_node *node) {
  char got[GOT_BUF];
  a3_cfg_describe_node(node, got, sizeof got);
  if (node->kind != A3_YAML_SEQ)
    return fail_at(src, node, path,
                   "expected a list, got %s; write [a, b] for entries, [] for none", got);
  if (node->n_kids > k->capacity)
    return fail_at(src, node, path, "the list has %d entries; at most %d are allowed", node->n_kids,
                   k->capacity);
  if (node->n_kids == 0 && (k->flags & A3_KEY_NONEMPTY))
    return fail_at(src, node, path, "the list is empty; give at least one entry");
  return A3_OK;
}

static a3_status set_list(const a3_cfg_src *src, const a3_config_key *k, const char *path,
                          const a3_yaml_node *node, a3_config *cfg) {
  _Static_assert((int)A3_CONFIG_MAX_BLOCKS <= (int)LIST_MAX &&
                     (int)A3_CONFIG_MAX_METRICS <= (int)LIST_MAX,
                 "list capacities exceed LIST_MAX");
  A3_TRY(check_list_shape(src, k, path, node));
  if (k->capacity > LIST_MAX) return A3_FAIL(A3_ERR_INTERNAL, "%s: list too long", k->path);
  int64_t vals[LIST_MAX];
  char elem[PATH_BUF];
  for (int i = 0; i < node->n_kids; i++) {
    snprintf(elem, sizeof elem, "%s[%d]", path, i);
    A3_TRY(parse_element(src, k, elem, node->kids[i], &vals[i]));
    for (int j = 0; (k->flags & A3_KEY_UNIQUE) && j < i; j++)
      if (vals[j] == vals[i])
        return fail_at(src, node->kids[i], elem, "the same value as %s[%d]; list each value once",
                       path, j);
  }
  char *base = (char *)cfg;
  for (int i = 0; i < node->n_kids; i++) {
    if (k->type == A3_KEY_INT_LIST)
      ((int64_t *)(base + k->offset))[i] = vals[i];
    else
      ((int *)(base + k->offset))[i] = (int)vals[i];
  }
  *(int *)(base + k->count_offset) = node->n_kids;
  return A3_OK;
}

// ---------------------------------------------------------------- dispatch
a3_status a3_cfg_set_value(const a3_cfg_src *src, const a3_config_key *k, const char *path,
                           const a3_yaml_node *node, a3_config *cfg) {
  void *field = (char *)cfg + k->offset;
  switch (k->type) {
  case A3_KEY_INT: return parse_int_node(src, k, path, node, field);
  case A3_KEY_OPT_INT:
    if (a3_cfg_is_null(node)) {
      *(int64_t *)field = 0;
      return A3_OK;
    }
    return parse_int_node(src, k, path, node, field);
  case A3_KEY_FLOAT: return set_float(src, k, path, node, field);
  case A3_KEY_BOOL: return set_bool(src, path, node, field);
  case A3_KEY_STRING: return set_string(src, k, path, node, field);
  case A3_KEY_ENUM: return parse_enum_node(src, k, path, node, field);
  case A3_KEY_INT_LIST:
  case A3_KEY_ENUM_LIST: return set_list(src, k, path, node, cfg);
  default: break;
  }
  return A3_FAIL(A3_ERR_INTERNAL, "%s: not a value key", k->path);
}
