// Error recording: one message plus a trail of file:line per thread.
#include "a3fta/core.h"

#include <stdio.h>
#include <string.h>

enum { A3_ERROR_MESSAGE_MAX = 2048, A3_ERROR_TRAIL_MAX = 1024 };

static _Thread_local char error_message[A3_ERROR_MESSAGE_MAX];
static _Thread_local char error_trail[A3_ERROR_TRAIL_MAX];

static const char *short_path(const char *file) {
  // __FILE__ is absolute in CMake builds; keep the part from src/ or tests/.
  const char *s = strstr(file, "/src/");
  if (!s) s = strstr(file, "/tests/");
  return s ? s + 1 : file;
}

a3_status a3_error_setv(a3_status code, const char *file, int line, const char *fmt, va_list ap) {
  vsnprintf(error_message, sizeof error_message, fmt, ap);
  snprintf(error_trail, sizeof error_trail, "%s:%d", short_path(file), line);
  return code;
}

a3_status a3_error_set(a3_status code, const char *file, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  a3_status s = a3_error_setv(code, file, line, fmt, ap);
  va_end(ap);
  return s;
}

void a3_error_trace(const char *file, int line) {
  size_t used = strlen(error_trail);
  if (used + 8 >= sizeof error_trail) return; // the first frames matter most
  snprintf(error_trail + used, sizeof error_trail - used, " <- %s:%d", short_path(file), line);
}

const char *a3_error_message(void) { return error_message; }
const char *a3_error_trail(void) { return error_trail; }

void a3_error_clear(void) {
  error_message[0] = '\0';
  error_trail[0] = '\0';
}

const char *a3_status_name(a3_status s) {
  switch (s) {
  case A3_OK: return "ok";
  case A3_ERR_USAGE: return "usage error";
  case A3_ERR_CONFIG: return "config error";
  case A3_ERR_INPUT: return "input error";
  case A3_ERR_IO: return "I/O error";
  case A3_ERR_NOMEM: return "out of memory";
  case A3_ERR_MPI: return "MPI error";
  case A3_ERR_HDF5: return "HDF5 error";
  case A3_ERR_CUDA: return "CUDA error";
  case A3_ERR_INTERNAL: return "internal error";
  case A3_ERR_UNIMPLEMENTED: return "not implemented yet";
  case A3_ERR_DIVERGED: return "training diverged";
  }
  return "unknown error";
}

int a3_status_exit_code(a3_status s) {
  switch (s) {
  case A3_OK: return 0;
  case A3_ERR_USAGE:
  case A3_ERR_CONFIG:
  case A3_ERR_INPUT: return 2;
  default: return 1;
  }
}
