// Subset selection (classes, shots per class, seeded random draws) and the
// shard rule. Everything here is computed from the labels that every rank
// holds, so every rank gets the same subset without communicating.
#include "io/dataset_internal.h"

#include <stdlib.h>
#include <string.h>

// floor(r * m / p) without overflowing r * m: with m = q p + s it is
// r q + floor(r s / p), and r s < p^2.
static int64_t floor_part(int64_t m, int64_t r, int64_t p) { return r * (m / p) + r * (m % p) / p; }

void a3_shard_range(int64_t count, int rank, int nranks, int64_t *begin, int64_t *end) {
  if (count <= 0 || nranks <= 0 || rank < 0 || rank >= nranks) {
    *begin = *end = 0;
    return;
  }
  *begin = floor_part(count, rank, nranks);
  *end = floor_part(count, (int64_t)rank + 1, nranks);
}

// The split's indices grouped by class, each class in file order:
// order[first[c] .. first[c + 1]) are class c's images.
typedef struct {
  int64_t *first; // (num_classes + 1)
  int64_t *order; // (n)
} class_groups;

static a3_status group_by_class(const a3_ds_split *split, int num_classes, class_groups *g) {
  A3_TRY(A3_ALLOC(g->first, (size_t)num_classes + 1));
  A3_TRY(A3_ALLOC(g->order, (size_t)split->n));
  for (int64_t i = 0; i < split->n; i++) g->first[split->labels[i] + 1]++;
  for (int c = 0; c < num_classes; c++) g->first[c + 1] += g->first[c];
  int64_t *next = NULL;
  A3_TRY(A3_ALLOC(next, (size_t)num_classes));
  memcpy(next, g->first, (size_t)num_classes * sizeof *next);
  for (int64_t i = 0; i < split->n; i++) g->order[next[split->labels[i]]++] = i;
  free(next);
  return A3_OK;
}

// keep[c] = 1 for the requested classes (all when none are listed).
static a3_status classes_to_keep(const a3_dataset *ds, const a3_subset_spec *spec, uint8_t *keep) {
  if (!spec->classes || spec->n_classes == 0) {
    memset(keep, 1, (size_t)ds->num_classes);
    return A3_OK;
  }
  for (int i = 0; i < spec->n_classes; i++) {
    const int c = spec->classes[i];
    if (c < 0 || c >= ds->num_classes)
      return A3_FAIL(A3_ERR_CONFIG, "%s: class %d does not exist; the dataset's classes are 0..%d",
                     ds->path, c, ds->num_classes - 1);
    if (keep[c])
      return A3_FAIL(A3_ERR_CONFIG, "%s: class %d ('%s') is listed twice", ds->path, c,
                     ds->class_names[c]);
    keep[c] = 1;
  }
  return A3_OK;
}

// Marks k of class c's members: the first k, or k drawn by a partial
// Fisher-Yates shuffle whose draw j depends on (seed, c, j) only.
static a3_status mark_class(const a3_subset_spec *spec, int c, const int64_t *members, int64_t n_c,
                            int64_t k, uint8_t *chosen) {
  if (!spec->random) {
    for (int64_t j = 0; j < k; j++) chosen[members[j]] = 1;
    return A3_OK;
  }
  int64_t *pool = NULL;
  A3_TRY(A3_ALLOC(pool, (size_t)n_c));
  memcpy(pool, members, (size_t)n_c * sizeof *pool);
  for (int64_t j = 0; j < k; j++) {
    const uint64_t counter = (uint64_t)c << 32 | (uint64_t)j;
    const int64_t r =
        j + (int64_t)a3_rng_below(spec->seed, A3_STREAM_SUBSET, counter, (uint64_t)(n_c - j));
    const int64_t t = pool[j];
    pool[j] = pool[r];
    pool[r] = t;
    chosen[pool[j]] = 1;
  }
  free(pool);
  return A3_OK;
}

static a3_status mark_subset(const a3_dataset *ds, const a3_ds_split *split,
                             const a3_subset_spec *spec, const class_groups *g, const uint8_t *keep,
                             uint8_t *chosen) {
  for (int c = 0; c < ds->num_classes; c++) {
    if (!keep[c]) continue;
    const int64_t n_c = g->first[c + 1] - g->first[c];
    if (spec->shots_per_class > n_c)
      return A3_FAIL(A3_ERR_CONFIG,
                     "%s: %lld shots per class requested, but class %d ('%s') has only %lld "
                     "images in split '%s'; ask for fewer shots or other classes",
                     ds->path, (long long)spec->shots_per_class, c, ds->class_names[c],
                     (long long)n_c, split->name);
    const int64_t k = spec->shots_per_class > 0 ? spec->shots_per_class : n_c;
    A3_TRY(mark_class(spec, c, g->order + g->first[c], n_c, k, chosen));
  }
  return A3_OK;
}

static a3_status collect(const a3_ds_split *split, const uint8_t *chosen, int64_t **indices,
                         int64_t *count) {
  int64_t n = 0;
  for (int64_t i = 0; i < split->n; i++) n += chosen[i];
  A3_TRY(A3_ALLOC(*indices, (size_t)n));
  *count = 0;
  for (int64_t i = 0; i < split->n; i++)
    if (chosen[i]) (*indices)[(*count)++] = i;
  return A3_OK;
}

static a3_status select_local(const a3_dataset *ds, const a3_subset_spec *spec, int64_t **indices,
                              int64_t *count) {
  a3_ds_split *split = NULL;
  A3_TRY(a3_ds_find_split(ds, spec->split, &split));
  if (spec->shots_per_class < 0)
    return A3_FAIL(A3_ERR_CONFIG, "%s: shots per class must be >= 0 (0 = all), got %lld", ds->path,
                   (long long)spec->shots_per_class);
  class_groups g = {0};
  uint8_t *keep = NULL, *chosen = NULL;
  a3_status s = A3_ALLOC(keep, (size_t)ds->num_classes);
  if (s == A3_OK) s = A3_ALLOC(chosen, (size_t)split->n);
  if (s == A3_OK) s = classes_to_keep(ds, spec, keep);
  if (s == A3_OK) s = group_by_class(split, ds->num_classes, &g);
  if (s == A3_OK) s = mark_subset(ds, split, spec, &g, keep, chosen);
  if (s == A3_OK) s = collect(split, chosen, indices, count);
  if (s == A3_OK && *count == 0)
    s = A3_FAIL(A3_ERR_CONFIG,
                "%s: the subset of split '%s' is empty: the classes asked for "
                "have no images there",
                ds->path, split->name);
  free(keep);
  free(chosen);
  free(g.first);
  free(g.order);
  return s;
}

// Ranks that passed different specs would read different subsets and train
// on inconsistent data without noticing: compare a hash of the result.
static a3_status check_same_everywhere(const a3_dataset *ds, const int64_t *indices,
                                       int64_t count) {
  uint64_t h = a3_hash64(indices, (size_t)count * sizeof *indices, A3_HASH_SEED);
  h = a3_hash64(&count, sizeof count, h);
  uint64_t lo = 0, hi = 0;
  if (MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, ds->comm) != MPI_SUCCESS ||
      MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, ds->comm) != MPI_SUCCESS)
    return A3_FAIL(A3_ERR_MPI, "%s: MPI_Allreduce failed while comparing subsets", ds->path);
  if (lo != hi)
    return A3_FAIL(A3_ERR_MPI,
                   "%s: the ranks selected different subsets; every rank must pass the same "
                   "split, classes, shots and seed",
                   ds->path);
  return A3_OK;
}

a3_status a3_dataset_select(a3_dataset *ds, const a3_subset_spec *spec, int64_t **indices,
                            int64_t *count) {
  *indices = NULL;
  *count = 0;
  a3_status s = select_local(ds, spec, indices, count);
  s = a3_ds_agree(ds, s, "selecting a subset");
  if (s == A3_OK) s = check_same_everywhere(ds, *indices, *count);
  if (s != A3_OK) {
    free(*indices);
    *indices = NULL;
    *count = 0;
  }
  A3_TRY(s);
  return A3_OK;
}
