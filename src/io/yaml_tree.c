// libyaml event stream -> a3_yaml_node tree, with limits and strictness
// checks applied event by event so a hostile file costs little.
#include "io/yaml_tree.h"

#include "a3fta/config.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

a3_status a3_yaml_fail(const a3_yaml_source *src, int line, int col, const char *fmt, ...) {
  char msg[1536];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (src->with_marks) return A3_FAIL(A3_ERR_CONFIG, "%s:%d:%d: %s", src->name, line, col, msg);
  return A3_FAIL(A3_ERR_CONFIG, "%s: %s", src->name, msg);
}

void a3_yaml_free(a3_yaml_node *node) {
  if (!node) return;
  for (int i = 0; i < node->n_kids; i++) a3_yaml_free(node->kids[i]);
  free(node->kids);
  free(node->text);
  free(node);
}

// ---------------------------------------------------------------- building
typedef struct {
  const a3_yaml_source *src;
  const char *text; // the input, to locate reader errors and look at bytes
  size_t len;
  a3_yaml_node *root;
  // Open lists and maps, outermost first; its size is the nesting depth.
  a3_yaml_node *open[A3_CONFIG_MAX_DEPTH + 1];
  int depth;
  int n_nodes;
  int n_documents;
} builder;

static a3_status add_kid(a3_yaml_node *parent, a3_yaml_node *kid) {
  if (parent->n_kids == parent->cap_kids) {
    int cap = parent->cap_kids ? parent->cap_kids * 2 : 4;
    a3_yaml_node **grown = realloc(parent->kids, (size_t)cap * sizeof *grown);
    if (!grown) return A3_FAIL(A3_ERR_NOMEM, "cannot grow a YAML node to %d children", cap);
    parent->kids = grown;
    parent->cap_kids = cap;
  }
  parent->kids[parent->n_kids++] = kid;
  return A3_OK;
}

static int mark_line(const yaml_mark_t *m) { return (int)m->line + 1; }
static int mark_col(const yaml_mark_t *m) { return (int)m->column + 1; }

// Anchors and tags would let a file mean something other than it shows
// (aliases repeat values, tags retype them), so both are refused.
static a3_status check_properties(builder *b, const yaml_event_t *ev, const yaml_char_t *anchor,
                                  const yaml_char_t *tag) {
  int line = mark_line(&ev->start_mark), col = mark_col(&ev->start_mark);
  if (anchor)
    return a3_yaml_fail(b->src, line, col,
                        "anchors and aliases are not supported (found '&%.40s'); write the "
                        "value out in full",
                        (const char *)anchor);
  if (tag)
    return a3_yaml_fail(b->src, line, col,
                        "tags are not supported (found '%.60s'); remove it, a3fta knows each "
                        "key's type",
                        (const char *)tag);
  return A3_OK;
}

// Creates a node at the event's mark and hangs it under the open container.
static a3_status new_node(builder *b, const yaml_event_t *ev, a3_yaml_kind kind,
                          a3_yaml_node **out) {
  int line = mark_line(&ev->start_mark), col = mark_col(&ev->start_mark);
  if (b->depth >= A3_CONFIG_MAX_DEPTH)
    return a3_yaml_fail(b->src, line, col,
                        "nesting is deeper than %d levels; a config needs at most 4",
                        A3_CONFIG_MAX_DEPTH);
  if (++b->n_nodes > A3_CONFIG_MAX_NODES)
    return a3_yaml_fail(b->src, line, col,
                        "the document has more than %d values; a config needs a few hundred",
                        A3_CONFIG_MAX_NODES);
  a3_yaml_node *node = NULL;
  A3_TRY(A3_ALLOC(node, 1));
  node->kind = kind;
  node->line = line;
  node->col = col;
  a3_status s = b->depth ? add_kid(b->open[b->depth - 1], node) : A3_OK;
  if (s != A3_OK) {
    free(node);
    return s;
  }
  if (!b->depth) b->root = node;
  *out = node;
  return A3_OK;
}

static a3_status on_scalar(builder *b, const yaml_event_t *ev) {
  A3_TRY(check_properties(b, ev, ev->data.scalar.anchor, ev->data.scalar.tag));
  a3_yaml_node *node = NULL;
  A3_TRY(new_node(b, ev, A3_YAML_SCALAR, &node));
  size_t len = ev->data.scalar.length;
  A3_TRY(a3_alloc((void **)&node->text, len + 1, 1));
  memcpy(node->text, ev->data.scalar.value, len);
  node->len = len;
  node->plain = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
  return A3_OK;
}

static a3_status on_container(builder *b, const yaml_event_t *ev, a3_yaml_kind kind) {
  const yaml_char_t *anchor =
      kind == A3_YAML_SEQ ? ev->data.sequence_start.anchor : ev->data.mapping_start.anchor;
  const yaml_char_t *tag =
      kind == A3_YAML_SEQ ? ev->data.sequence_start.tag : ev->data.mapping_start.tag;
  A3_TRY(check_properties(b, ev, anchor, tag));
  a3_yaml_node *node = NULL;
  A3_TRY(new_node(b, ev, kind, &node));
  b->open[b->depth++] = node;
  return A3_OK;
}

static a3_status on_event(builder *b, const yaml_event_t *ev) {
  int line = mark_line(&ev->start_mark), col = mark_col(&ev->start_mark);
  switch (ev->type) {
  case YAML_DOCUMENT_START_EVENT:
    if (b->n_documents++)
      return a3_yaml_fail(b->src, line, col,
                          "a second YAML document starts here; a config file holds exactly one "
                          "(remove the '---' line and what follows, or merge the two)");
    return A3_OK;
  case YAML_ALIAS_EVENT:
    return a3_yaml_fail(b->src, line, col,
                        "anchors and aliases are not supported (found '*%.40s'); write the "
                        "value out in full",
                        (const char *)ev->data.alias.anchor);
  case YAML_SCALAR_EVENT: return on_scalar(b, ev);
  case YAML_SEQUENCE_START_EVENT: return on_container(b, ev, A3_YAML_SEQ);
  case YAML_MAPPING_START_EVENT: return on_container(b, ev, A3_YAML_MAP);
  case YAML_SEQUENCE_END_EVENT:
  case YAML_MAPPING_END_EVENT:
    if (b->depth > 0) b->depth--;
    return A3_OK;
  default: return A3_OK; // stream start/end, document end, no event
  }
}

// ---------------------------------------------------------------- errors
// Line and column (1-based, columns in characters) of a byte offset.
static void locate_offset(const char *text, size_t len, size_t offset, int *line, int *col) {
  *line = 1;
  *col = 1;
  for (size_t i = 0; i < offset && i < len; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c == '\n') {
      ++*line;
      *col = 1;
    } else if ((c & 0xC0) != 0x80) { // not a UTF-8 continuation byte
      ++*col;
    }
  }
}

// The byte at a 0-based line and character column, or -1 past the end.
static int byte_at(const char *text, size_t len, size_t line, size_t column) {
  size_t i = 0;
  for (size_t l = 0; l < line && i < len; i++)
    if (text[i] == '\n') l++;
  for (size_t c = 0; i < len && text[i] != '\n'; i++) {
    if (((unsigned char)text[i] & 0xC0) == 0x80) continue;
    if (c++ == column) return (unsigned char)text[i];
  }
  return -1;
}

static a3_status reader_error(const builder *b, const yaml_parser_t *p) {
  int line, col;
  locate_offset(b->text, b->len, p->problem_offset, &line, &col);
  const char *problem = p->problem ? p->problem : "unreadable input";
  // problem_value is -1 for a truncated sequence: show the byte itself.
  unsigned byte = p->problem_offset < b->len ? (unsigned char)b->text[p->problem_offset] : 0u;
  if (strstr(problem, "UTF-8") || strstr(problem, "Unicode"))
    return a3_yaml_fail(b->src, line, col,
                        "the file is not valid UTF-8 (%s at byte 0x%02x, offset %zu); save it as "
                        "UTF-8 text",
                        problem, byte, p->problem_offset);
  return a3_yaml_fail(b->src, line, col,
                      "%s (character 0x%02x at offset %zu); a config is plain UTF-8 text", problem,
                      (unsigned)p->problem_value, p->problem_offset);
}

static const char *syntax_hint(const builder *b, const yaml_parser_t *p) {
  int c = byte_at(b->text, b->len, p->problem_mark.line, p->problem_mark.column);
  if (c == '\t') return "YAML does not allow tabs for indentation: use spaces";
  if (p->context && strstr(p->context, "quoted")) return "close the quoted string";
  if (p->context && strstr(p->context, "flow")) return "check the brackets and commas";
  return "check the indentation, colons and brackets around here";
}

static a3_status parser_error(const builder *b, const yaml_parser_t *p) {
  if (p->error == YAML_MEMORY_ERROR)
    return A3_FAIL(A3_ERR_NOMEM, "%s: out of memory while parsing YAML", b->src->name);
  if (p->error == YAML_READER_ERROR) return reader_error(b, p);
  const char *problem = p->problem ? p->problem : "malformed YAML";
  int line = mark_line(&p->problem_mark), col = mark_col(&p->problem_mark);
  if (p->context)
    return a3_yaml_fail(b->src, line, col, "invalid YAML: %s %s (started at %d:%d); %s", problem,
                        p->context, mark_line(&p->context_mark), mark_col(&p->context_mark),
                        syntax_hint(b, p));
  return a3_yaml_fail(b->src, line, col, "invalid YAML: %s; %s", problem, syntax_hint(b, p));
}

// ---------------------------------------------------------------- parse
static a3_status run_parser(builder *b, yaml_parser_t *p) {
  for (;;) {
    yaml_event_t ev;
    if (!yaml_parser_parse(p, &ev)) return parser_error(b, p);
    a3_status s = on_event(b, &ev);
    int done = ev.type == YAML_STREAM_END_EVENT;
    yaml_event_delete(&ev);
    A3_TRY(s);
    if (done) return A3_OK;
  }
}

a3_status a3_yaml_parse(const a3_yaml_source *src, const char *text, size_t len,
                        a3_yaml_node **root) {
  *root = NULL;
  builder b = {.src = src, .text = text, .len = len};
  yaml_parser_t parser;
  if (!yaml_parser_initialize(&parser))
    return A3_FAIL(A3_ERR_NOMEM, "%s: cannot start the YAML parser", src->name);
  yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
  // Only UTF-8: libyaml would otherwise switch to UTF-16 on a byte-order mark.
  yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
  a3_status s = run_parser(&b, &parser);
  yaml_parser_delete(&parser);
  if (s != A3_OK) {
    a3_yaml_free(b.root);
    a3_error_trace(__FILE__, __LINE__);
    return s;
  }
  *root = b.root;
  return A3_OK;
}
