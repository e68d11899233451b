// Canonical YAML of a config: every key in schema order, one spelling per
// value, so equal configs print (and hash) identically however their files
// were written. Doubles use the shortest text that reads back exactly.
#include "io/config_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- text building
static int sb_reserve(a3_sb *sb, size_t extra) {
  if (sb->oom) return 0;
  if (sb->len + extra + 1 <= sb->cap) return 1;
  size_t cap = sb->cap ? sb->cap : 256;
  while (cap < sb->len + extra + 1) cap *= 2;
  char *grown = realloc(sb->buf, cap);
  if (!grown) {
    sb->oom = 1;
    return 0;
  }
  sb->buf = grown;
  sb->cap = cap;
  return 1;
}

void a3_sb_putn(a3_sb *sb, const char *s, size_t n) {
  if (!sb_reserve(sb, n)) return;
  memcpy(sb->buf + sb->len, s, n);
  sb->len += n;
  sb->buf[sb->len] = '\0';
}

void a3_sb_puts(a3_sb *sb, const char *s) { a3_sb_putn(sb, s, strlen(s)); }

void a3_sb_printf(a3_sb *sb, const char *fmt, ...) {
  char small[256];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(small, sizeof small, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n < sizeof small) {
    a3_sb_putn(sb, small, (size_t)n);
    return;
  }
  if (!sb_reserve(sb, (size_t)n)) return;
  va_start(ap, fmt);
  vsnprintf(sb->buf + sb->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  sb->len += (size_t)n;
}

// ---------------------------------------------------------------- values
static void format_double(a3_sb *sb, double v) {
  char buf[40];
  for (int digits = 1; digits <= 17; digits++) {
    snprintf(buf, sizeof buf, "%.*g", digits, v);
    if (strtod(buf, NULL) == v) break;
  }
  // Always a '.', and no exponent zero padding ("1.0e-5", not "1e-05"): YAML
  // 1.1 readers such as PyYAML take a float without a '.' for a string.
  char *e = strchr(buf, 'e');
  size_t mantissa = e ? (size_t)(e - buf) : strlen(buf);
  a3_sb_putn(sb, buf, mantissa);
  if (!memchr(buf, '.', mantissa)) a3_sb_puts(sb, ".0");
  if (!e) return;
  a3_sb_putn(sb, e, 2); // "e-" or "e+"
  const char *digits = e + 2;
  while (digits[0] == '0' && digits[1]) digits++;
  a3_sb_puts(sb, digits);
}

// Plain when the text cannot be mistaken for anything but a string by any
// YAML reader (and is safe inside flow lists); double-quoted otherwise.
static int plain_safe(const char *s) {
  static const char *const words[] = {"null", "true", "false", "yes", "no", "on", "off", "y", "n"};
  if (!((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '_' || s[0] == '/'))
    return 0;
  for (const char *p = s; *p; p++) {
    char c = *p;
    int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '.' || c == '/' || c == '-';
    if (!ok) return 0;
  }
  for (size_t i = 0; i < sizeof words / sizeof words[0]; i++) {
    size_t n = strlen(words[i]), j = 0;
    while (j < n && s[j] && (s[j] | 0x20) == words[i][j]) j++;
    if (j == n && !s[j]) return 0;
  }
  return 1;
}

static void format_string(a3_sb *sb, const char *s) {
  if (plain_safe(s)) {
    a3_sb_puts(sb, s);
    return;
  }
  a3_sb_puts(sb, "\"");
  for (const char *p = s; *p; p++) { // control characters never get in (see set_string)
    if (*p == '"' || *p == '\\') a3_sb_puts(sb, "\\");
    a3_sb_putn(sb, p, 1);
  }
  a3_sb_puts(sb, "\"");
}

static void format_list(a3_sb *sb, const a3_config *cfg, const a3_config_key *k) {
  const char *base = (const char *)cfg;
  int n = *(const int *)(base + k->count_offset);
  a3_sb_puts(sb, "[");
  for (int i = 0; i < n; i++) {
    if (i) a3_sb_puts(sb, ", ");
    if (k->type == A3_KEY_INT_LIST)
      a3_sb_printf(sb, "%" PRId64, ((const int64_t *)(base + k->offset))[i]);
    else
      a3_sb_puts(sb, k->names[((const int *)(base + k->offset))[i]]);
  }
  a3_sb_puts(sb, "]");
}

static void format_axes(a3_sb *sb, const a3_sweep_axes *axes) {
  a3_sb_puts(sb, "{");
  for (int i = 0; i < axes->n; i++) {
    a3_sb_printf(sb, "%s%s: [", i ? ", " : "", axes->items[i].key);
    for (int j = 0; j < axes->items[i].n_values; j++)
      a3_sb_printf(sb, "%s%s", j ? ", " : "", axes->items[i].values[j]);
    a3_sb_puts(sb, "]");
  }
  a3_sb_puts(sb, "}");
}

static void format_point(a3_sb *sb, const a3_sweep_point *p) {
  a3_sb_puts(sb, "{");
  for (int i = 0; i < p->n_settings; i++)
    a3_sb_printf(sb, "%s%s: %s", i ? ", " : "", p->settings[i].key, p->settings[i].value);
  a3_sb_puts(sb, "}");
}

static void format_points(a3_sb *sb, const a3_sweep_points *points) {
  a3_sb_puts(sb, "[");
  for (int i = 0; i < points->n; i++) {
    if (i) a3_sb_puts(sb, ", ");
    format_point(sb, &points->items[i]);
  }
  a3_sb_puts(sb, "]");
}

void a3_cfg_format_value(a3_sb *sb, const a3_config *cfg, const a3_config_key *k) {
  const void *field = (const char *)cfg + k->offset;
  switch (k->type) {
  case A3_KEY_INT: a3_sb_printf(sb, "%" PRId64, *(const int64_t *)field); return;
  case A3_KEY_OPT_INT: {
    int64_t v = *(const int64_t *)field;
    if (v)
      a3_sb_printf(sb, "%" PRId64, v);
    else
      a3_sb_puts(sb, "null");
    return;
  }
  case A3_KEY_FLOAT: format_double(sb, *(const double *)field); return;
  case A3_KEY_BOOL: a3_sb_puts(sb, *(const bool *)field ? "true" : "false"); return;
  case A3_KEY_STRING: format_string(sb, field); return;
  case A3_KEY_ENUM: a3_sb_puts(sb, k->names[*(const int *)field]); return;
  case A3_KEY_INT_LIST:
  case A3_KEY_ENUM_LIST: format_list(sb, cfg, k); return;
  case A3_KEY_SWEEP_AXES: format_axes(sb, field); return;
  case A3_KEY_SWEEP_POINTS: format_points(sb, field); return;
  case A3_KEY_SECTION: return;
  }
}

a3_status a3_config_format_value(const a3_config *cfg, const a3_config_key *key, char **out) {
  a3_sb sb = {0};
  a3_cfg_format_value(&sb, cfg, key);
  a3_sb_puts(&sb, "");
  if (sb.oom) {
    free(sb.buf);
    *out = NULL;
    return A3_FAIL(A3_ERR_NOMEM, "cannot format %s", key->path);
  }
  *out = sb.buf;
  return A3_OK;
}

// ---------------------------------------------------------------- documents
static int key_depth(const char *path) {
  int d = 0;
  for (; *path; path++) d += *path == '.';
  return d;
}

static const char *key_name(const char *path) {
  const char *dot = strrchr(path, '.');
  return dot ? dot + 1 : path;
}

// Help text as "# ..." lines of at most ~100 columns at the given indent.
static void write_comment(a3_sb *sb, const char *text, int indent) {
  int width = 98 - indent;
  while (*text) {
    int n = (int)strlen(text);
    if (n > width) {
      n = width;
      while (n > 0 && text[n] != ' ') n--;
      if (n == 0) n = width;
    }
    a3_sb_printf(sb, "%*s# %.*s\n", indent, "", n, text);
    text += n;
    while (*text == ' ') text++;
  }
}

// Non-empty sweep lists go in block form, one axis or point per line.
static int write_sweep_block(a3_sb *sb, const a3_config_key *k, const void *field, int indent) {
  if (k->type == A3_KEY_SWEEP_AXES && ((const a3_sweep_axes *)field)->n) {
    const a3_sweep_axes *axes = field;
    a3_sb_puts(sb, "\n");
    for (int i = 0; i < axes->n; i++) {
      a3_sb_printf(sb, "%*s%s: [", indent + 2, "", axes->items[i].key);
      for (int j = 0; j < axes->items[i].n_values; j++)
        a3_sb_printf(sb, "%s%s", j ? ", " : "", axes->items[i].values[j]);
      a3_sb_puts(sb, "]\n");
    }
    return 1;
  }
  if (k->type == A3_KEY_SWEEP_POINTS && ((const a3_sweep_points *)field)->n) {
    const a3_sweep_points *points = field;
    a3_sb_puts(sb, "\n");
    for (int i = 0; i < points->n; i++) {
      a3_sb_printf(sb, "%*s- ", indent + 2, "");
      format_point(sb, &points->items[i]);
      a3_sb_puts(sb, "\n");
    }
    return 1;
  }
  return 0;
}

static void write_key(a3_sb *sb, const a3_config *cfg, const a3_config_key *k, int commented,
                      int first) {
  int indent = 2 * key_depth(k->path);
  if (commented) {
    if (indent == 0 && !first) a3_sb_puts(sb, "\n");
    write_comment(sb, k->help, indent);
  }
  a3_sb_printf(sb, "%*s%s:", indent, "", key_name(k->path));
  if (k->type == A3_KEY_SECTION) {
    a3_sb_puts(sb, "\n");
  } else if (!write_sweep_block(sb, k, (const char *)cfg + k->offset, indent)) {
    a3_sb_puts(sb, " ");
    a3_cfg_format_value(sb, cfg, k);
    a3_sb_puts(sb, "\n");
  }
}

static const char *const commented_header =
    "# a3fta config: the built-in defaults, every key with its help.\n"
    "# Generated by 'a3fta config show --commented' from the schema (src/io/config_schema.c),\n"
    "# the one place defaults are defined; 'a3fta config schema' writes configs/README.md.\n"
    "# A config file needs only the keys it changes; unknown keys are errors.\n\n";

static a3_status build_yaml(const a3_config *cfg, int commented, a3_sb *sb) {
  int n = 0;
  const a3_config_key *keys = a3_config_schema(&n);
  if (commented) a3_sb_puts(sb, commented_header);
  for (int i = 0; i < n; i++) write_key(sb, cfg, &keys[i], commented, i == 0);
  a3_sb_puts(sb, "");
  if (sb->oom) {
    free(sb->buf);
    sb->buf = NULL;
    return A3_FAIL(A3_ERR_NOMEM, "cannot allocate the text of a config");
  }
  return A3_OK;
}

a3_status a3_config_to_yaml(const a3_config *cfg, char **out, size_t *out_len) {
  a3_sb sb = {0};
  *out = NULL;
  A3_TRY(build_yaml(cfg, 0, &sb));
  *out = sb.buf;
  if (out_len) *out_len = sb.len;
  return A3_OK;
}

static a3_status write_to(const a3_config *cfg, int commented, FILE *f) {
  a3_sb sb = {0};
  A3_TRY(build_yaml(cfg, commented, &sb));
  size_t wrote = fwrite(sb.buf, 1, sb.len, f);
  free(sb.buf);
  if (wrote != sb.len || fflush(f) != 0)
    return A3_FAIL(A3_ERR_IO, "cannot write the config (%zu of %zu bytes written)", wrote, sb.len);
  return A3_OK;
}

a3_status a3_config_write_yaml(const a3_config *cfg, FILE *f) { return write_to(cfg, 0, f); }

a3_status a3_config_write_yaml_commented(const a3_config *cfg, FILE *f) {
  return write_to(cfg, 1, f);
}

uint64_t a3_config_hash(const a3_config *cfg) {
  char *text = NULL;
  size_t len = 0;
  if (a3_config_to_yaml(cfg, &text, &len) != A3_OK) return 0;
  uint64_t h = a3_hash64(text, len, A3_HASH_SEED);
  free(text);
  return h;
}

int a3_config_equal(const a3_config *a, const a3_config *b) {
  char *ta = NULL, *tb = NULL;
  int equal = a3_config_to_yaml(a, &ta, NULL) == A3_OK &&
              a3_config_to_yaml(b, &tb, NULL) == A3_OK && !strcmp(ta, tb);
  free(ta);
  free(tb);
  return equal;
}
