// a3fta checkpoints: a generic HDF5 file of named float32 tensors in groups,
// plus attributes. This layer knows nothing of models: src/train/ maps a
// U-Net and its optimizer state onto it (see a3fta/trainer.h for the groups
// a training checkpoint uses).
//
// File format (format_version 1), one HDF5 file:
//   /            attributes: format = "a3fta-checkpoint" (string),
//                format_version = 1 (int32), and whatever the writer adds
//                (training: config, config_hash, step)
//   /<group>/... one float32 little-endian dataset per tensor, named by the
//                caller (diffusers' state-dict keys: dots are fine in HDF5
//                link names; '/' is not allowed in a name); groups may nest
//                ("optimizer/m") and carry attributes of their own.
// Links are created in order and tracked, so readers list a group's tensors
// in the order they were written (the model's parameter order).
//
// Writing is serial (one rank) and atomic: the file is written as
// "<path>.tmp", synced and renamed over <path>, so a kill at any moment
// leaves either the old checkpoint or the complete new one.
// Reading is serial too (each rank may open the file read-only itself).
#ifndef A3FTA_CHECKPOINT_H
#define A3FTA_CHECKPOINT_H

#include "a3fta/core.h"

#include <stdbool.h>
#include <stdint.h>

#define A3_CHECKPOINT_FORMAT "a3fta-checkpoint"
enum { A3_CHECKPOINT_FORMAT_VERSION = 1, A3_CKPT_MAX_DIMS = 8 };

// The name and shape of one tensor (ndim 0 = a scalar, numel 1).
typedef struct {
  const char *name; // link name inside its group
  int ndim;
  int64_t shape[A3_CKPT_MAX_DIMS];
} a3_ckpt_spec;

int64_t a3_ckpt_spec_numel(const a3_ckpt_spec *spec);
// "(3, 4, 3, 3)" into buf (for messages).
void a3_ckpt_format_shape(int ndim, const int64_t *shape, char *buf, size_t size);

// ---------------------------------------------------------------- writing
typedef struct a3_ckpt_writer a3_ckpt_writer;

// Creates "<path>.tmp" (replacing a stale one) with the format attributes.
a3_status a3_ckpt_create(const char *path, a3_ckpt_writer **out) A3_WARN_UNUSED;
// Attributes of `group` ("/" or "" for the root; created if needed).
a3_status a3_ckpt_write_attr_string(a3_ckpt_writer *w, const char *group, const char *name,
                                    const char *value) A3_WARN_UNUSED;
a3_status a3_ckpt_write_attr_int(a3_ckpt_writer *w, const char *group, const char *name,
                                 int64_t value) A3_WARN_UNUSED; // stored as int64
// One tensor: data holds numel(spec) floats. Groups are created on first use.
// A name that is empty, contains '/', or already exists is A3_ERR_INTERNAL.
a3_status a3_ckpt_write_tensor(a3_ckpt_writer *w, const char *group, const a3_ckpt_spec *spec,
                               const float *data) A3_WARN_UNUSED;
// Closes, syncs and renames the file into place, and frees w (also on failure,
// when the temporary file is removed and <path> is left as it was).
a3_status a3_ckpt_commit(a3_ckpt_writer *w) A3_WARN_UNUSED;
// Abandons the file: closes it, removes "<path>.tmp", frees w. NULL is fine.
void a3_ckpt_discard(a3_ckpt_writer *w);

// ---------------------------------------------------------------- reading
typedef struct a3_ckpt_reader a3_ckpt_reader;

// Opens and checks format and format_version (A3_ERR_INPUT naming the file
// when it is not an a3fta checkpoint or a newer version; A3_ERR_IO when it
// cannot be read).
a3_status a3_ckpt_open(const char *path, a3_ckpt_reader **out) A3_WARN_UNUSED;
void a3_ckpt_close(a3_ckpt_reader *r); // NULL is fine
const char *a3_ckpt_path(const a3_ckpt_reader *r);

bool a3_ckpt_has_group(const a3_ckpt_reader *r, const char *group);
// Missing attributes or wrong types are A3_ERR_INPUT naming file, group and attribute.
a3_status a3_ckpt_read_attr_string(const a3_ckpt_reader *r, const char *group, const char *name,
                                   char **out) A3_WARN_UNUSED; // malloc'd
a3_status a3_ckpt_read_attr_int(const a3_ckpt_reader *r, const char *group, const char *name,
                                int64_t *out) A3_WARN_UNUSED;

// The tensors (datasets) directly in `group`, in creation order: *names is a
// malloc'd array of malloc'd strings (a3_ckpt_free_names). Missing group:
// A3_ERR_INPUT.
a3_status a3_ckpt_list(const a3_ckpt_reader *r, const char *group, char ***names,
                       int *count) A3_WARN_UNUSED;
void a3_ckpt_free_names(char **names, int count);

// The shape of tensor group/name as the file holds it (out->name = name).
// Missing: A3_ERR_INPUT naming the dataset path.
a3_status a3_ckpt_tensor_spec(const a3_ckpt_reader *r, const char *group, const char *name,
                              a3_ckpt_spec *out) A3_WARN_UNUSED;

// Reads one tensor into dst (numel(spec) floats). It must exist with exactly
// spec's shape and a float type: otherwise A3_ERR_INPUT naming the dataset
// path ("ckpt.h5: /params/conv_in.weight: shape (8, 1, 3, 3) in the file,
// (16, 1, 3, 3) expected").
a3_status a3_ckpt_read_tensor(const a3_ckpt_reader *r, const char *group, const a3_ckpt_spec *spec,
                              float *dst) A3_WARN_UNUSED;

// Reading a whole named set, as a model loads its parameters.
typedef struct {
  a3_ckpt_spec spec;
  float *dst;    // numel(spec) floats; untouched when the tensor is absent
  bool optional; // absent is fine (e.g. a module the strategy added)
  bool found;    // out: it was in the file and has been read
} a3_ckpt_item;

// Reads every item of `group`. Absent non-optional items are one
// A3_ERR_INPUT error listing them (by dataset path, the first few and a
// count); a shape mismatch is an error naming the path. Tensors in the file
// that no item asks for are "extra": their count goes to *n_extra and, if
// extra is not NULL, their names to *extra (a3_ckpt_free_names). Nothing is
// read unless every name and shape checks out.
a3_status a3_ckpt_read_set(const a3_ckpt_reader *r, const char *group, a3_ckpt_item *items,
                           int n_items, char ***extra, int *n_extra) A3_WARN_UNUSED;

// ---------------------------------------------------------------- scanning
// What a set of named float tensors holds (a3fta info: a checkpoint group,
// a safetensors file): a diverged run leaves NaN or infinite values, which
// this finds without knowing the model.
typedef struct {
  int tensors;
  int64_t values;
  int64_t nonfinite;         // NaN or infinite values
  int nonfinite_tensors;     // tensors holding at least one
  char first_nonfinite[256]; // the first such tensor's name ("" when none)
  double max_abs;            // the largest finite |value| (0 when none)
} a3_ckpt_group_scan;

// Adds tensor `name`'s n values to *acc (start from a zeroed struct).
void a3_ckpt_scan_values(const float *x, int64_t n, const char *name, a3_ckpt_group_scan *acc);
// Reads every tensor of `group` once (one tensor in memory at a time).
a3_status a3_ckpt_scan_group(const a3_ckpt_reader *r, const char *group,
                             a3_ckpt_group_scan *out) A3_WARN_UNUSED;

#endif
