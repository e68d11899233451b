// A strict YAML reader: libyaml events into a small tree of scalars, lists
// and maps, each with its 1-based line:column. It rejects what a config never
// needs and what makes a file mean something other than it looks: anchors,
// aliases, tags, several documents, deep nesting and huge documents.
#ifndef A3FTA_IO_YAML_TREE_H
#define A3FTA_IO_YAML_TREE_H

#include "a3fta/core.h"

#include <stddef.h>

typedef enum { A3_YAML_SCALAR, A3_YAML_SEQ, A3_YAML_MAP } a3_yaml_kind;

typedef struct a3_yaml_node {
  a3_yaml_kind kind;
  int line, col; // 1-based, columns in characters
  // Scalars: the bytes (NUL-terminated, len without it) and whether they
  // were written plain, where null/true/123 keep their YAML meaning.
  char *text;
  size_t len;
  int plain;
  // Lists: the items. Maps: key, value, key, value, ... (n_kids is even).
  struct a3_yaml_node **kids;
  int n_kids, cap_kids;
} a3_yaml_node;

// Where the text came from, for messages: "NAME:LINE:COL: ..." when
// with_marks, else "NAME: ..." (one-line override values).
typedef struct {
  const char *name;
  int with_marks;
} a3_yaml_source;

// Parses text[0..len) (need not be NUL-terminated). *root is NULL when the
// stream holds no document (an empty or comment-only file). Errors are
// A3_ERR_CONFIG (A3_ERR_NOMEM when memory runs out).
a3_status a3_yaml_parse(const a3_yaml_source *src, const char *text, size_t len,
                        a3_yaml_node **root) A3_WARN_UNUSED;
void a3_yaml_free(a3_yaml_node *node);

// Records A3_ERR_CONFIG "NAME:LINE:COL: <message>" (or "NAME: <message>").
a3_status a3_yaml_fail(const a3_yaml_source *src, int line, int col, const char *fmt, ...)
    A3_PRINTF(4, 5);

#endif
