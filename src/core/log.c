// Logging to stderr, prefixed with the MPI rank when there are several.
#include "a3fta/core.h"

#include <stdio.h>

static a3_log_level log_level = A3_LOG_INFO;
static int log_rank = 0;
static int log_size = 1;

void a3_log_set_level(a3_log_level level) { log_level = level; }
a3_log_level a3_log_get_level(void) { return log_level; }

void a3_log_set_rank(int rank, int size) {
  log_rank = rank;
  log_size = size;
}

static void log_prefix(a3_log_level level) {
  if (log_size > 1) fprintf(stderr, "[rank %d/%d] ", log_rank, log_size);
  if (level == A3_LOG_WARN) fputs("warning: ", stderr);
  if (level == A3_LOG_DEBUG) fputs("debug: ", stderr);
}

void a3_log(a3_log_level level, const char *fmt, ...) {
  if (level > log_level) return;
  log_prefix(level);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

void a3_log_error_status(a3_status s) {
  if (s == A3_OK) return;
  if (log_size > 1) fprintf(stderr, "[rank %d/%d] ", log_rank, log_size);
  fprintf(stderr, "a3fta: %s: %s\n", a3_status_name(s), a3_error_message());
  if (log_level >= A3_LOG_DEBUG) fprintf(stderr, "  at %s\n", a3_error_trail());
}
