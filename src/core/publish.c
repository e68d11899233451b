// Atomic, durable replacement of a file by a finished temporary one.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

// Flushes the file's data to the disk before the rename makes it visible.
static a3_status sync_file(const char *path) {
  const int fd = open(path, O_RDONLY);
  if (fd < 0 || fsync(fd) != 0) {
    const int err = errno;
    if (fd >= 0) close(fd);
    return A3_FAIL(A3_ERR_IO, "cannot sync %s to disk: %s", path, strerror(err));
  }
  close(fd);
  return A3_OK;
}

// The rename itself is durable only once the folder's entry is synced.
static void sync_parent(const char *path) {
  char dir[1024];
  const char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(dir, sizeof dir, ".");
  else
    snprintf(dir, sizeof dir, "%.*s", (int)(slash - path) + (slash == path), path);
  const int fd = open(dir, O_RDONLY);
  if (fd >= 0) {
    fsync(fd); // best effort: some file systems refuse to sync a folder
    close(fd);
  }
}

a3_status a3_publish_file(const char *tmp_path, const char *path) {
  A3_TRY(sync_file(tmp_path));
  if (rename(tmp_path, path) != 0)
    return A3_FAIL(A3_ERR_IO, "cannot rename %s to %s: %s", tmp_path, path, strerror(errno));
  sync_parent(path);
  return A3_OK;
}
