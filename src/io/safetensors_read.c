// safetensors reader: validates the whole header of an untrusted file, then
// reads single tensors by file offset, converting them to float32.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

// Legitimate headers nest three deep: {name: {shape: [dims]}}.
enum { MAX_DEPTH = 3, STAGE_BYTES = 1 << 20 };
#define MAX_OFFSET ((double)((uint64_t)1 << 53)) // doubles hold every integer up to here

struct a3_safetensors {
  char *path;
  int fd;
  uint64_t data_start, data_len; // the data buffer: file bytes [data_start, data_start + data_len)
  a3_st_tensor *tensors;         // sorted by name
  int n;
  a3_st_metadata *meta; // sorted by key
  int n_meta;
};

// ---------------------------------------------------------------- dtypes
static const struct {
  const char *name;
  size_t size;
} dtypes[A3_ST_N_DTYPES] = {
    [A3_ST_BOOL] = {"BOOL", 1},       [A3_ST_U8] = {"U8", 1},           [A3_ST_I8] = {"I8", 1},
    [A3_ST_F8_E5M2] = {"F8_E5M2", 1}, [A3_ST_F8_E4M3] = {"F8_E4M3", 1}, [A3_ST_I16] = {"I16", 2},
    [A3_ST_U16] = {"U16", 2},         [A3_ST_F16] = {"F16", 2},         [A3_ST_BF16] = {"BF16", 2},
    [A3_ST_I32] = {"I32", 4},         [A3_ST_U32] = {"U32", 4},         [A3_ST_F32] = {"F32", 4},
    [A3_ST_F64] = {"F64", 8},         [A3_ST_I64] = {"I64", 8},         [A3_ST_U64] = {"U64", 8},
};

const char *a3_st_dtype_name(a3_st_dtype d) {
  return (unsigned)d < A3_ST_N_DTYPES ? dtypes[d].name : "?";
}

size_t a3_st_dtype_size(a3_st_dtype d) { return (unsigned)d < A3_ST_N_DTYPES ? dtypes[d].size : 0; }

static int dtype_from_name(const char *s) {
  for (int i = 0; i < A3_ST_N_DTYPES; i++)
    if (!strcmp(s, dtypes[i].name)) return i;
  return -1;
}

// ---------------------------------------------------------------- UTF-8
bool a3_utf8_valid(const char *s, size_t len, size_t *bad_at) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < len) {
    const unsigned c = p[i];
    size_t more;
    uint32_t cp, min;
    if (c < 0x80) {
      i++;
      continue;
    }
    if ((c & 0xE0) == 0xC0) {
      more = 1, cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      more = 2, cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      more = 3, cp = c & 0x07, min = 0x10000;
    } else {
      break;
    }
    if (len - i <= more) break;
    size_t k = 1;
    for (; k <= more && (p[i + k] & 0xC0) == 0x80; k++) cp = cp << 6 | (p[i + k] & 0x3F);
    if (k <= more || cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) break;
    i += more + 1;
  }
  if (i < len && bad_at) *bad_at = i;
  return i >= len;
}

// ---------------------------------------------------------------- messages
// A name from the file, fit for a one-line message: cut to 120 bytes, control
// characters as '?'. Returned by value so several fit in one printf.
typedef struct {
  char s[128];
} shown;

static shown show_n(const char *text, size_t len) {
  shown out;
  size_t o = 0;
  for (size_t i = 0; i < len && o < 120; i++) {
    const unsigned char c = (unsigned char)text[i];
    out.s[o++] = (c < 0x20 || c == 0x7F) ? '?' : (char)c;
  }
  if (o == 120 && len > 120) memcpy(out.s + 117, "...", 3);
  out.s[o] = '\0';
  return out;
}

static shown show(const char *text) { return show_n(text ? text : "", text ? strlen(text) : 0); }

static const char *json_kind(const cJSON *v) {
  if (cJSON_IsString(v)) return "a string";
  if (cJSON_IsNumber(v)) return "a number";
  if (cJSON_IsArray(v)) return "a list";
  if (cJSON_IsObject(v)) return "an object";
  if (cJSON_IsTrue(v)) return "true";
  if (cJSON_IsFalse(v)) return "false";
  if (cJSON_IsNull(v)) return "null";
  return "an invalid value";
}

static a3_status tensor_fail(const char *path, const char *name, const char *fmt, ...)
    A3_PRINTF(3, 4);
static a3_status tensor_fail(const char *path, const char *name, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return A3_FAIL(A3_ERR_INPUT, "%s: tensor '%s': %s", path, show(name).s, msg);
}

// "[32, 1, 3, 3]"
typedef struct {
  char s[8 * 24 + 8];
} shape_text;

static shape_text format_shape(const int64_t *shape, int ndim) {
  shape_text out;
  size_t o = 0;
  out.s[o++] = '[';
  for (int i = 0; i < ndim; i++)
    o += (size_t)snprintf(out.s + o, sizeof out.s - o, "%s%" PRId64, i ? ", " : "", shape[i]);
  snprintf(out.s + o, sizeof out.s - o, "]");
  return out;
}

// ---------------------------------------------------------------- file access
// Reads n bytes at `offset`; a file that ends early is A3_ERR_INPUT.
static a3_status read_at(int fd, const char *path, uint64_t offset, void *buf, size_t n,
                         const char *what) {
  unsigned char *p = buf;
  size_t got = 0;
  while (got < n) {
    const ssize_t r = pread(fd, p + got, n - got, (off_t)(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r < 0)
      return A3_FAIL(A3_ERR_IO, "%s: cannot read %s at byte %" PRIu64 ": %s", path, what,
                     offset + got, strerror(errno));
    if (r == 0)
      return A3_FAIL(A3_ERR_INPUT,
                     "%s: the file ends at byte %" PRIu64 " while reading %s (%zu bytes from byte "
                     "%" PRIu64 "); was it truncated or changed after opening?",
                     path, offset + got, what, n, offset);
    got += (size_t)r;
  }
  return A3_OK;
}

static uint64_t load_le64(const unsigned char *b) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | b[i];
  return v;
}

static a3_status open_regular(const char *path, int *fd_out, uint64_t *size_out) {
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return A3_FAIL(A3_ERR_IO, "cannot open %s: %s", path, strerror(errno));
  struct stat sb;
  if (fstat(fd, &sb) != 0) {
    const int err = errno;
    close(fd);
    return A3_FAIL(A3_ERR_IO, "cannot stat %s: %s", path, strerror(err));
  }
  if (!S_ISREG(sb.st_mode)) {
    close(fd);
    return A3_FAIL(A3_ERR_INPUT, "%s is not a regular file; give the path of a .safetensors file",
                   path);
  }
  *fd_out = fd;
  *size_out = (uint64_t)sb.st_size;
  return A3_OK;
}

static a3_status read_header_len(int fd, const char *path, uint64_t size, uint64_t *n_out) {
  if (size < 8)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: the file holds %" PRIu64 " bytes, fewer than the 8-byte header length "
                   "that starts a safetensors file",
                   path, size);
  unsigned char b[8];
  A3_TRY(read_at(fd, path, 0, b, 8, "the header length"));
  const uint64_t n = load_le64(b);
  if (n > A3_ST_MAX_HEADER)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: header length %" PRIu64 " (the first 8 bytes, little-endian) exceeds the "
                   "limit of %d bytes; the file is not safetensors, or corrupt",
                   path, n, A3_ST_MAX_HEADER);
  if (n > size - 8)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: header length %" PRIu64 " exceeds the %" PRIu64 " bytes that follow it; "
                   "the file is truncated or not safetensors",
                   path, n, size - 8);
  *n_out = n;
  return A3_OK;
}

// ---------------------------------------------------------------- lexical checks
static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

typedef struct {
  const char *path, *t;
  size_t n;
  int depth;
  char open[MAX_DEPTH + 2]; // '{' or '[' per level
  const char *key[MAX_DEPTH + 2];
  size_t key_len[MAX_DEPTH + 2];
} lexer;

static bool key_is(const lexer *lx, int level, const char *word) {
  return lx->key[level] && lx->key_len[level] == strlen(word) &&
         !memcmp(lx->key[level], word, lx->key_len[level]);
}

// A string starting at t[i] == '"'; returns the index of its closing quote.
static a3_status lex_string(lexer *lx, size_t i, size_t *close) {
  size_t j = i + 1;
  for (; j < lx->n && lx->t[j] != '"'; j++) {
    const unsigned char c = (unsigned char)lx->t[j];
    if (c < 0x20)
      return A3_FAIL(A3_ERR_INPUT,
                     "%s: header byte %zu: raw control character 0x%02x inside a string (JSON "
                     "needs it escaped)",
                     lx->path, j, c);
    if (c != '\\') continue;
    // cJSON would decode \u0000 and cut the string there: refuse it instead.
    if (j + 5 < lx->n && !memcmp(lx->t + j + 1, "u0000", 5))
      return A3_FAIL(A3_ERR_INPUT, "%s: header byte %zu: a string holds \\u0000 (a NUL character)",
                     lx->path, j);
    j++;
  }
  *close = j;
  return A3_OK;
}

// cJSON stores every number as a double, so 1.0 and 1e3 look like integers
// there; dims and offsets must be written as integers, so check the text.
static a3_status lex_number(const lexer *lx, size_t i, size_t *end) {
  size_t j = i;
  bool integral = true;
  for (; j < lx->n && lx->t[j] && strchr("0123456789+-.eE", lx->t[j]); j++)
    if (strchr("+.eE", lx->t[j])) integral = false;
  *end = j;
  const int d = lx->depth;
  if (integral || d != MAX_DEPTH || lx->open[d] != '[' || key_is(lx, 1, "__metadata__"))
    return A3_OK;
  if (!key_is(lx, 2, "shape") && !key_is(lx, 2, "data_offsets")) return A3_OK;
  return A3_FAIL(A3_ERR_INPUT, "%s: tensor '%s': %s holds %s, which is not an integer", lx->path,
                 show_n(lx->key[1], lx->key_len[1]).s, show_n(lx->key[2], lx->key_len[2]).s,
                 show_n(lx->t + i, j - i).s);
}

static a3_status lex_open(lexer *lx, char c) {
  if (lx->depth == MAX_DEPTH)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: entry '%s' nests lists or objects deeper than a safetensors header does "
                   "({name: {field: [numbers]}})",
                   lx->path, show_n(lx->key[1], lx->key_len[1]).s);
  lx->depth++;
  lx->open[lx->depth] = c;
  lx->key[lx->depth] = NULL;
  lx->key_len[lx->depth] = 0;
  return A3_OK;
}

// Records a string as the current key of its object when a ':' follows it.
static void lex_note_key(lexer *lx, size_t open_quote, size_t close_quote) {
  size_t k = close_quote + 1;
  while (k < lx->n && is_ws(lx->t[k])) k++;
  if (k >= lx->n || lx->t[k] != ':' || lx->depth < 1) return;
  lx->key[lx->depth] = lx->t + open_quote + 1;
  lx->key_len[lx->depth] = close_quote - open_quote - 1;
}

// Runs after cJSON accepted the text, so the JSON is well formed here.
static a3_status lex_header(const char *path, const char *t, size_t n) {
  lexer lx = {.path = path, .t = t, .n = n};
  for (size_t i = 0; i < n; i++) {
    const char c = t[i];
    if (c == '"') {
      size_t close = 0;
      A3_TRY(lex_string(&lx, i, &close));
      lex_note_key(&lx, i, close);
      i = close;
    } else if (c == '{' || c == '[') {
      A3_TRY(lex_open(&lx, c));
    } else if ((c == '}' || c == ']') && lx.depth > 0) {
      lx.depth--;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      size_t end = i;
      A3_TRY(lex_number(&lx, i, &end));
      i = end - 1;
    }
  }
  return A3_OK;
}

// ---------------------------------------------------------------- JSON
static a3_status parse_json(const char *path, const char *text, size_t n, cJSON **out) {
  size_t bad = 0;
  if (!a3_utf8_valid(text, n, &bad))
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: the header is not valid UTF-8 (byte %zu of the header, file offset %zu)",
                   path, bad, bad + 8);
  size_t first = 0;
  while (first < n && is_ws(text[first])) first++;
  if (first == n || text[first] != '{')
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: the header does not start with a JSON object ('{'%s); the file is not "
                   "safetensors, or corrupt",
                   path, first == n ? ", it is empty" : "");
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, n, &end, 0);
  const size_t at = end && end >= text && end <= text + n ? (size_t)(end - text) : 0;
  if (!root)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: the header is not valid JSON: error near header byte %zu (file offset "
                   "%zu): '%s'",
                   path, at, at + 8, show_n(text + at, n - at < 40 ? n - at : 40).s);
  size_t k = at;
  while (k < n && is_ws(text[k])) k++;
  if (k < n) {
    cJSON_Delete(root);
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: header byte %zu (file offset %zu): '%s' after the JSON object; only "
                   "space padding may follow it",
                   path, k, k + 8, show_n(text + k, n - k < 40 ? n - k : 40).s);
  }
  *out = root;
  return A3_OK;
}

// ---------------------------------------------------------------- entries
// Checks a number from shape or data_offsets: an integer in [0, max].
static a3_status get_uint(const char *path, const char *name, const char *field, int index,
                          const cJSON *v, double max, uint64_t *out) {
  if (!cJSON_IsNumber(v))
    return tensor_fail(path, name, "%s[%d] is %s, not an integer", field, index, json_kind(v));
  const double d = v->valuedouble;
  if (!(d == floor(d)))
    return tensor_fail(path, name, "%s[%d] = %g is not an integer", field, index, d);
  if (signbit(d)) // -0 too: a size or an offset has no sign
    return tensor_fail(path, name, "%s[%d] = %.0f is negative", field, index, d);
  if (d > max)
    return tensor_fail(path, name, "%s[%d] = %.0f exceeds the limit of %.0f", field, index, d, max);
  *out = (uint64_t)d;
  return A3_OK;
}

static a3_status parse_dtype(const char *path, const char *name, const cJSON *v, a3_st_tensor *t) {
  if (!cJSON_IsString(v))
    return tensor_fail(path, name, "dtype is %s, not a string such as \"F32\"", json_kind(v));
  const int d = dtype_from_name(v->valuestring);
  if (d < 0)
    return tensor_fail(path, name,
                       "unknown dtype \"%s\" (safetensors has BOOL, U8, I8, F8_E5M2, F8_E4M3, "
                       "I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64)",
                       show(v->valuestring).s);
  t->dtype = (a3_st_dtype)d;
  return A3_OK;
}

static a3_status parse_shape(const char *path, const char *name, const cJSON *v, a3_st_tensor *t) {
  if (!cJSON_IsArray(v))
    return tensor_fail(path, name, "shape is %s, not a list of integers", json_kind(v));
  const int ndim = cJSON_GetArraySize(v);
  if (ndim > A3_ST_MAX_DIMS)
    return tensor_fail(path, name, "shape has %d dimensions; a3fta reads at most %d", ndim,
                       A3_ST_MAX_DIMS);
  int i = 0;
  for (const cJSON *e = v->child; e; e = e->next, i++) {
    uint64_t d = 0;
    A3_TRY(get_uint(path, name, "shape", i, e, (double)A3_ST_MAX_DIM, &d));
    t->shape[i] = (int64_t)d;
  }
  t->ndim = ndim;
  return A3_OK;
}

static a3_status parse_offsets(const char *path, const char *name, const cJSON *v,
                               a3_st_tensor *t) {
  if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
    return tensor_fail(path, name, "data_offsets is %s%s, not a list of 2 integers [begin, end]",
                       json_kind(v), cJSON_IsArray(v) ? " of another length" : "");
  A3_TRY(get_uint(path, name, "data_offsets", 0, v->child, MAX_OFFSET, &t->begin));
  A3_TRY(get_uint(path, name, "data_offsets", 1, v->child->next, MAX_OFFSET, &t->end));
  return A3_OK;
}

// numel and bytes of the shape, refusing products that overflow 64 bits.
static a3_status shape_bytes(const char *path, const char *name, a3_st_tensor *t, uint64_t *bytes) {
  uint64_t numel = 1;
  bool overflow = false;
  for (int i = 0; i < t->ndim; i++) {
    const uint64_t d = (uint64_t)t->shape[i];
    if (d == 0) { // an empty tensor: whatever came before, nothing overflows
      numel = 0, overflow = false;
      break;
    }
    if (numel > UINT64_MAX / d)
      overflow = true;
    else
      numel *= d;
  }
  const uint64_t size = a3_st_dtype_size(t->dtype);
  if (overflow || numel > UINT64_MAX / size)
    return tensor_fail(path, name, "shape %s of %s needs more than 2^64 bytes",
                       format_shape(t->shape, t->ndim).s, a3_st_dtype_name(t->dtype));
  *bytes = numel * size;
  t->numel = (int64_t)(numel > INT64_MAX ? INT64_MAX : numel);
  return A3_OK;
}

static a3_status check_extent(const char *path, const char *name, a3_st_tensor *t,
                              uint64_t data_len) {
  uint64_t bytes = 0;
  A3_TRY(shape_bytes(path, name, t, &bytes));
  if (t->begin > t->end)
    return tensor_fail(path, name,
                       "data_offsets [%" PRIu64 ", %" PRIu64 ") are reversed (begin > end)",
                       t->begin, t->end);
  if (t->end > data_len)
    return tensor_fail(path, name,
                       "data_offsets [%" PRIu64 ", %" PRIu64 ") reach past the end of the data "
                       "buffer (%" PRIu64 " bytes); the file is truncated or corrupt",
                       t->begin, t->end, data_len);
  if (t->end - t->begin != bytes)
    return tensor_fail(path, name,
                       "data_offsets [%" PRIu64 ", %" PRIu64 ") hold %" PRIu64 " bytes but shape "
                       "%s of %s needs %" PRIu64,
                       t->begin, t->end, t->end - t->begin, format_shape(t->shape, t->ndim).s,
                       a3_st_dtype_name(t->dtype), bytes);
  return A3_OK;
}

static int field_index(const char *key) {
  static const char *const fields[3] = {"dtype", "shape", "data_offsets"};
  for (int i = 0; i < 3; i++)
    if (key && !strcmp(key, fields[i])) return i;
  return -1;
}

// Finds the three fields, each exactly once and nothing else (cJSON keeps
// duplicate keys, so they are counted here).
static a3_status entry_fields(const char *path, const char *name, const cJSON *e,
                              const cJSON *f[3]) {
  if (!cJSON_IsObject(e))
    return tensor_fail(path, name,
                       "the entry is %s, not an object {\"dtype\", \"shape\", \"data_offsets\"}",
                       json_kind(e));
  for (const cJSON *c = e->child; c; c = c->next) {
    const int k = field_index(c->string);
    if (k < 0)
      return tensor_fail(path, name,
                         "unknown field '%s' (an entry holds exactly dtype, shape, data_offsets)",
                         show(c->string).s);
    if (f[k]) return tensor_fail(path, name, "field '%s' appears twice", c->string);
    f[k] = c;
  }
  static const char *const names[3] = {"dtype", "shape", "data_offsets"};
  for (int k = 0; k < 3; k++)
    if (!f[k]) return tensor_fail(path, name, "missing field '%s'", names[k]);
  return A3_OK;
}

static a3_status parse_entry(const char *path, const cJSON *e, uint64_t data_len, a3_st_tensor *t) {
  const char *name = e->string ? e->string : "";
  const cJSON *f[3] = {NULL, NULL, NULL};
  A3_TRY(entry_fields(path, name, e, f));
  A3_TRY(parse_dtype(path, name, f[0], t));
  A3_TRY(parse_shape(path, name, f[1], t));
  A3_TRY(parse_offsets(path, name, f[2], t));
  A3_TRY(check_extent(path, name, t, data_len));
  return A3_OK;
}

// ---------------------------------------------------------------- table
static a3_status copy_string(const char *s, char **out) {
  const size_t n = strlen(s) + 1;
  char *p = NULL;
  A3_TRY(a3_alloc((void **)&p, n, 1));
  memcpy(p, s, n);
  *out = p;
  return A3_OK;
}

static int by_name(const void *a, const void *b) {
  return strcmp(((const a3_st_tensor *)a)->name, ((const a3_st_tensor *)b)->name);
}

static int by_key(const void *a, const void *b) {
  return strcmp(((const a3_st_metadata *)a)->key, ((const a3_st_metadata *)b)->key);
}

static int by_offset(const void *a, const void *b) {
  const a3_st_tensor *x = *(const a3_st_tensor *const *)a, *y = *(const a3_st_tensor *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return strcmp(x->name, y->name);
}

static a3_status parse_metadata(a3_safetensors *st, const cJSON *m) {
  if (!cJSON_IsObject(m))
    return A3_FAIL(A3_ERR_INPUT, "%s: __metadata__ is %s, not an object of strings", st->path,
                   json_kind(m));
  const int n = cJSON_GetArraySize(m);
  A3_TRY(a3_alloc((void **)&st->meta, n > 0 ? (size_t)n : 1, sizeof *st->meta));
  for (const cJSON *c = m->child; c; c = c->next) {
    if (!cJSON_IsString(c))
      return A3_FAIL(A3_ERR_INPUT, "%s: __metadata__ value of '%s' is %s, not a string", st->path,
                     show(c->string).s, json_kind(c));
    char *key = NULL, *value = NULL;
    A3_TRY(copy_string(c->string ? c->string : "", &key));
    st->meta[st->n_meta++] = (a3_st_metadata){.key = key};
    A3_TRY(copy_string(c->valuestring, &value));
    st->meta[st->n_meta - 1].value = value;
  }
  qsort(st->meta, (size_t)st->n_meta, sizeof *st->meta, by_key);
  for (int i = 1; i < st->n_meta; i++)
    if (!strcmp(st->meta[i - 1].key, st->meta[i].key))
      return A3_FAIL(A3_ERR_INPUT, "%s: __metadata__ key '%s' appears twice", st->path,
                     show(st->meta[i].key).s);
  return A3_OK;
}

static a3_status parse_entries(a3_safetensors *st, const cJSON *root) {
  const int n = cJSON_GetArraySize(root);
  A3_TRY(a3_alloc((void **)&st->tensors, n > 0 ? (size_t)n : 1, sizeof *st->tensors));
  bool have_meta = false;
  for (const cJSON *e = root->child; e; e = e->next) {
    if (e->string && !strcmp(e->string, "__metadata__")) {
      if (have_meta) return A3_FAIL(A3_ERR_INPUT, "%s: __metadata__ appears twice", st->path);
      have_meta = true;
      A3_TRY(parse_metadata(st, e));
      continue;
    }
    a3_st_tensor *t = &st->tensors[st->n];
    A3_TRY(parse_entry(st->path, e, st->data_len, t));
    char *name = NULL;
    A3_TRY(copy_string(e->string ? e->string : "", &name));
    t->name = name;
    st->n++;
  }
  return A3_OK;
}

static a3_status check_unique(const a3_safetensors *st) {
  for (int i = 1; i < st->n; i++)
    if (!strcmp(st->tensors[i - 1].name, st->tensors[i].name))
      return A3_FAIL(A3_ERR_INPUT, "%s: tensor '%s' appears twice in the header", st->path,
                     show(st->tensors[i].name).s);
  return A3_OK;
}

// The tensors must tile the data buffer: in offset order each begins where
// the previous one ended, and the last ends where the file does.
static a3_status check_tiling(const a3_safetensors *st, const a3_st_tensor **order) {
  uint64_t at = 0;
  const a3_st_tensor *prev = NULL;
  for (int i = 0; i < st->n; i++) {
    const a3_st_tensor *t = order[i];
    if (t->begin < at)
      return A3_FAIL(A3_ERR_INPUT,
                     "%s: tensors '%s' [%" PRIu64 ", %" PRIu64 ") and '%s' [%" PRIu64 ", %" PRIu64
                     ") overlap in the data buffer",
                     st->path, show(prev->name).s, prev->begin, prev->end, show(t->name).s,
                     t->begin, t->end);
    if (t->begin > at)
      return A3_FAIL(A3_ERR_INPUT,
                     "%s: bytes [%" PRIu64 ", %" PRIu64 ") of the data buffer belong to no tensor "
                     "(before '%s'); safetensors data is contiguous",
                     st->path, at, t->begin, show(t->name).s);
    at = t->end;
    prev = t;
  }
  if (at != st->data_len)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: the tensors end at byte %" PRIu64 " of the data buffer but the file holds "
                   "%" PRIu64 " more bytes after them; the file is corrupt or has data appended",
                   st->path, at, st->data_len - at);
  return A3_OK;
}

static a3_status check_layout(a3_safetensors *st) {
  qsort(st->tensors, (size_t)st->n, sizeof *st->tensors, by_name);
  A3_TRY(check_unique(st));
  const a3_st_tensor **order = NULL;
  A3_TRY(a3_alloc((void **)&order, st->n > 0 ? (size_t)st->n : 1, sizeof *order));
  for (int i = 0; i < st->n; i++) order[i] = &st->tensors[i];
  qsort(order, (size_t)st->n, sizeof *order, by_offset);
  const a3_status s = check_tiling(st, order);
  free(order);
  return s;
}

// ---------------------------------------------------------------- open / close
static a3_status load_header(a3_safetensors *st, uint64_t file_size) {
  uint64_t n = 0;
  A3_TRY(read_header_len(st->fd, st->path, file_size, &n));
  st->data_start = 8 + n;
  st->data_len = file_size - 8 - n;
  char *text = NULL;
  A3_TRY(a3_alloc((void **)&text, (size_t)n + 1, 1));
  cJSON *root = NULL;
  a3_status s;
  A3_TRY_GOTO(s, read_at(st->fd, st->path, 8, text, (size_t)n, "the header"), done);
  A3_TRY_GOTO(s, parse_json(st->path, text, (size_t)n, &root), done);
  A3_TRY_GOTO(s, lex_header(st->path, text, (size_t)n), done);
  A3_TRY_GOTO(s, parse_entries(st, root), done);
  A3_TRY_GOTO(s, check_layout(st), done);
done:
  cJSON_Delete(root);
  free(text);
  return s;
}

a3_status a3_safetensors_open(const char *path, a3_safetensors **out) {
  *out = NULL;
  a3_safetensors *st = NULL;
  A3_TRY(a3_alloc((void **)&st, 1, sizeof *st));
  st->fd = -1;
  uint64_t file_size = 0;
  a3_status s = copy_string(path, &st->path);
  if (s == A3_OK) s = open_regular(path, &st->fd, &file_size);
  if (s == A3_OK) s = load_header(st, file_size);
  if (s != A3_OK) {
    a3_error_trace(__FILE__, __LINE__);
    a3_safetensors_close(st);
    return s;
  }
  *out = st;
  return A3_OK;
}

void a3_safetensors_close(a3_safetensors *st) {
  if (!st) return;
  if (st->fd >= 0) close(st->fd);
  for (int i = 0; i < st->n; i++) free((void *)st->tensors[i].name);
  for (int i = 0; i < st->n_meta; i++) {
    free((void *)st->meta[i].key);
    free((void *)st->meta[i].value);
  }
  free(st->tensors);
  free(st->meta);
  free(st->path);
  free(st);
}

// ---------------------------------------------------------------- queries
const char *a3_safetensors_path(const a3_safetensors *st) { return st->path; }
int a3_safetensors_count(const a3_safetensors *st) { return st->n; }

const a3_st_tensor *a3_safetensors_tensor(const a3_safetensors *st, int i) {
  return i >= 0 && i < st->n ? &st->tensors[i] : NULL;
}

const a3_st_tensor *a3_safetensors_find(const a3_safetensors *st, const char *name) {
  const a3_st_tensor key = {.name = name};
  return bsearch(&key, st->tensors, (size_t)st->n, sizeof *st->tensors, by_name);
}

int a3_safetensors_metadata_count(const a3_safetensors *st) { return st->n_meta; }

const a3_st_metadata *a3_safetensors_metadata(const a3_safetensors *st, int i) {
  return i >= 0 && i < st->n_meta ? &st->meta[i] : NULL;
}

const char *a3_safetensors_metadata_get(const a3_safetensors *st, const char *key) {
  if (st->n_meta == 0) return NULL; // meta is NULL then, which bsearch must not see
  const a3_st_metadata k = {.key = key};
  const a3_st_metadata *m = bsearch(&k, st->meta, (size_t)st->n_meta, sizeof *st->meta, by_key);
  return m ? m->value : NULL;
}

// ---------------------------------------------------------------- conversion
static float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu;
  if (exp == 0) { // zero or subnormal: man * 2^-24, exact in float
    const float f = (float)man * 0x1p-24f;
    return sign ? -f : f;
  }
  uint32_t bits = sign | (man << 13);
  bits |= exp == 31 ? 0x7F800000u : (exp + 112u) << 23; // inf/NaN keep their payload
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static float bf16_to_f32(uint16_t h) {
  const uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static uint16_t load_le16(const unsigned char *b) { return (uint16_t)(b[0] | b[1] << 8); }

// Converts `count` elements of src (little-endian) into dst. F64 values
// beyond float32's range are refused rather than turned into infinities.
static a3_status convert(const a3_safetensors *st, const a3_st_tensor *t, const unsigned char *src,
                         size_t count, int64_t first, float *dst) {
  if (t->dtype == A3_ST_F16) {
    for (size_t i = 0; i < count; i++) dst[i] = f16_to_f32(load_le16(src + 2 * i));
  } else if (t->dtype == A3_ST_BF16) {
    for (size_t i = 0; i < count; i++) dst[i] = bf16_to_f32(load_le16(src + 2 * i));
  } else {
    for (size_t i = 0; i < count; i++) {
      const uint64_t bits = load_le64(src + 8 * i);
      double d;
      memcpy(&d, &bits, sizeof d);
      if (isfinite(d) && fabs(d) > FLT_MAX)
        return tensor_fail(st->path, t->name,
                           "element %" PRId64 " = %g (F64) is outside float32's range",
                           first + (int64_t)i, d);
      dst[i] = (float)d;
    }
  }
  return A3_OK;
}

static a3_status read_converted(const a3_safetensors *st, const a3_st_tensor *t, float *dst) {
  const size_t esize = a3_st_dtype_size(t->dtype);
  const size_t per_chunk = STAGE_BYTES / esize;
  char what[160];
  snprintf(what, sizeof what, "tensor '%s'", show(t->name).s);
  unsigned char *stage = NULL;
  A3_TRY(a3_alloc((void **)&stage, STAGE_BYTES, 1));
  a3_status s = A3_OK;
  for (int64_t i = 0; s == A3_OK && i < t->numel; i += (int64_t)per_chunk) {
    const size_t count = (size_t)(t->numel - i) < per_chunk ? (size_t)(t->numel - i) : per_chunk;
    s = read_at(st->fd, st->path, st->data_start + t->begin + (uint64_t)i * esize, stage,
                count * esize, what);
    if (s == A3_OK) s = convert(st, t, stage, count, i, dst + i);
  }
  free(stage);
  A3_TRY(s);
  return A3_OK;
}

static void f32_from_le(float *dst, int64_t n) {
#if defined(__BYTE_ORDER__)
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
  for (int64_t i = 0; i < n; i++) {
    uint32_t b;
    memcpy(&b, dst + i, 4);
    b = __builtin_bswap32(b);
    memcpy(dst + i, &b, 4);
  }
#else
  (void)dst, (void)n; // the file's byte order is the machine's
#endif
#else
#error "cannot tell the byte order of this compiler's target"
#endif
}

a3_status a3_safetensors_read_f32(const a3_safetensors *st, const a3_st_tensor *t, float *dst,
                                  int64_t expected_numel) {
  if (!st || !t || t < st->tensors || t >= st->tensors + st->n)
    return A3_FAIL(A3_ERR_INTERNAL, "a3_safetensors_read_f32: tensor not from this file");
  if (t->numel != expected_numel)
    return tensor_fail(st->path, t->name,
                       "shape %s holds %" PRId64 " elements but a3fta expects %" PRId64
                       "; was the file written for another model configuration?",
                       format_shape(t->shape, t->ndim).s, t->numel, expected_numel);
  if (t->numel > 0 && !dst)
    return A3_FAIL(A3_ERR_INTERNAL, "a3_safetensors_read_f32: NULL destination");
  if (t->dtype == A3_ST_F32) {
    char what[160];
    snprintf(what, sizeof what, "tensor '%s'", show(t->name).s);
    A3_TRY(read_at(st->fd, st->path, st->data_start + t->begin, dst, (size_t)(t->end - t->begin),
                   what));
    f32_from_le(dst, t->numel);
    return A3_OK;
  }
  if (t->dtype != A3_ST_F16 && t->dtype != A3_ST_BF16 && t->dtype != A3_ST_F64)
    return tensor_fail(st->path, t->name,
                       "dtype %s cannot be read as float32 (a3fta reads F32, F16, BF16, F64)",
                       a3_st_dtype_name(t->dtype));
  A3_TRY(read_converted(st, t, dst));
  return A3_OK;
}

a3_status a3_safetensors_read_f32_by_name(const a3_safetensors *st, const char *name, float *dst,
                                          int64_t expected_numel) {
  const a3_st_tensor *t = a3_safetensors_find(st, name);
  if (!t)
    return A3_FAIL(A3_ERR_INPUT,
                   "%s: no tensor '%s' among its %d tensors; is it a checkpoint of this "
                   "model?",
                   st->path, show(name).s, st->n);
  A3_TRY(a3_safetensors_read_f32(st, t, dst, expected_numel));
  return A3_OK;
}
