// HDF5 helpers shared by src/io: silence HDF5's own error printing, fetch
// its innermost message for ours, and read/write the attributes the dataset
// format uses (strings of either kind, integers).
#ifndef A3FTA_IO_H5UTIL_H
#define A3FTA_IO_H5UTIL_H

#include "a3fta/core.h"

#include <hdf5.h>

// Turns off HDF5's automatic error-stack printing (idempotent): failures
// become a3_status messages instead of pages of HDF5 trace on stderr.
void a3_h5_quiet(void);

// The innermost message on HDF5's error stack, formatted as
// " (HDF5: <message>)", or "" when the stack is empty. Thread-local buffer.
const char *a3_h5_detail(void);

// Attribute `name` of `obj`; `where` names the object in messages
// ("data/x.h5: /"). Missing or mistyped attributes are A3_ERR_INPUT.
// Strings may be variable- or fixed-length; results are malloc'd.
a3_status a3_h5_attr_exists(hid_t obj, const char *name, const char *where, int *exists);
a3_status a3_h5_read_string_attr(hid_t obj, const char *name, const char *where, char **out);
a3_status a3_h5_read_strings_attr(hid_t obj, const char *name, const char *where, char ***out,
                                  int *count);
a3_status a3_h5_read_int_attr(hid_t obj, const char *name, const char *where, int64_t *out);
void a3_h5_free_strings(char **strings, int count);

// Writers: variable-length UTF-8 strings, int32 scalars.
a3_status a3_h5_write_string_attr(hid_t obj, const char *name, const char *value,
                                  const char *where);
a3_status a3_h5_write_strings_attr(hid_t obj, const char *name, const char *const *values,
                                   int count, const char *where);
a3_status a3_h5_write_int_attr(hid_t obj, const char *name, int32_t value, const char *where);

// The end of an atomic write: closes *file (left invalid) and renames
// tmp_path over path (a3_publish_file). A failed close is most often a full
// disk, and says so.
a3_status a3_h5_close_and_publish(hid_t *file, const char *tmp_path, const char *path);

#endif
