// Shared by config.c (loading), config_value.c (one value from a YAML node)
// and config_write.c (canonical text). Not part of the public API.
#ifndef A3FTA_IO_CONFIG_INTERNAL_H
#define A3FTA_IO_CONFIG_INTERNAL_H

#include "a3fta/config.h"
#include "io/yaml_tree.h"

#include <stddef.h>

// Where a value came from; the prefix of every message about it.
typedef enum {
  A3_SRC_DEFAULT,  // the schema default: "(default)"
  A3_SRC_FILE,     // text = file name: "FILE:LINE:COL"
  A3_SRC_OVERRIDE, // text = "k=v": "override 'k=v'"
  A3_SRC_ORIGIN,   // text printed as is: "sweep run 3"
} a3_src_kind;

typedef struct {
  a3_src_kind kind;
  const char *text;
} a3_cfg_src;

// Writes the message prefix for a value of `src` at line:col into buf.
void a3_cfg_prefix(const a3_cfg_src *src, int line, int col, char *buf, size_t size);
// A3_ERR_CONFIG "PREFIX: PATH: message" (PATH omitted when NULL).
a3_status a3_cfg_fail(const a3_cfg_src *src, int line, int col, const char *path, const char *fmt,
                      ...) A3_PRINTF(5, 6);

// Stores `node` into cfg's field for `key` (any type but sections and sweep
// lists); `path` names it in messages ("sweep.grid.train.lr[1]").
a3_status a3_cfg_set_value(const a3_cfg_src *src, const a3_config_key *key, const char *path,
                           const a3_yaml_node *node, a3_config *cfg) A3_WARN_UNUSED;

int a3_cfg_is_null(const a3_yaml_node *node);
// How a node reads in "got ..." messages: "'abc'", "a list", "null".
void a3_cfg_describe_node(const a3_yaml_node *node, char *buf, size_t size);
// User text made safe to echo: control bytes shown as '?', cut at max chars.
void a3_cfg_echo(const char *text, size_t len, size_t max, char *buf, size_t size);
// Other common names of a key (space-separated, "" if none), used only for
// "did you mean": learning_rate suggests train.lr.
const char *a3_cfg_key_aliases(const a3_config_key *key);
// Index of the candidate closest to word (edit distance <= 2, or a prefix), or -1.
int a3_cfg_suggest(const char *word, const char *const *candidates, int n);

// ---------------------------------------------------------------- text building
typedef struct {
  char *buf;
  size_t len, cap;
  int oom; // sticky: set once an allocation failed
} a3_sb;

void a3_sb_putn(a3_sb *sb, const char *s, size_t n);
void a3_sb_puts(a3_sb *sb, const char *s);
void a3_sb_printf(a3_sb *sb, const char *fmt, ...) A3_PRINTF(2, 3);
// The canonical flow text of one value ("0.0001", "[32, 64]", "{}").
void a3_cfg_format_value(a3_sb *sb, const a3_config *cfg, const a3_config_key *key);

#endif
