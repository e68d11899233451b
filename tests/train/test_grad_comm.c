// The bucketed gradient sum (a3fta/comm.h) on NP real ranks against one
// MPI_Allreduce of all the gradients (a3_grad_allreduce), for bucket sizes
// from one float (a bucket per float) to one bucket for everything.
//
// The backward is simulated: before stage s is reported, the floats of
// stage s hold NaN; a bucket started too early would carry a NaN into the
// sum. Floats between the pieces (frozen parameters) must stay untouched.
// With 1 or 2 ranks the sums must equal the reference bitwise; with more,
// to fp32 rounding: |sum - ref| <= ranks * FLT_EPSILON * sum of |terms| (two
// orders of ranks - 1 additions; the terms cancel, so relative to the sum
// itself the difference can be large). The largest difference is printed,
// in units of FLT_EPSILON * sum of |terms|. Two steps with the same buckets
// must be bitwise alike, and every rank must form the same buckets.
#include "a3fta/comm.h"
#include "a3fta/trainer.h"
#include "mpi_test_util.h"

#include <float.h>
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

enum { N_PIECES = 40, STAGES = 9 };
static const float FROZEN = 12345.0f;

typedef struct {
  a3_grad_piece p[N_PIECES];
  int n;
  int64_t floats; // of the whole buffer, gaps included
} layout;

// Pieces of 1..2999 floats with gaps, stages in 0..STAGES-1, the same on every rank.
static void make_layout(layout *l) {
  int64_t off = 0;
  l->n = N_PIECES;
  for (int i = 0; i < N_PIECES; i++) {
    const uint64_t r = a3_rng_u64(5, 0, (uint64_t)i);
    off += (int64_t)(r % 3 == 0 ? r % 50 : 0); // a frozen gap
    const int64_t count = i == 7 ? 1 : 1 + (int64_t)((r >> 8) % 2999);
    l->p[i] = (a3_grad_piece){off, count, (int)((r >> 24) % STAGES)};
    off += count;
  }
  l->floats = off + 3;
}

// This rank's "gradients": magnitudes 1e-3..1e3 with both signs, so the
// order of the additions shows in the low bits.
static float value(int rank, int64_t i) {
  const uint64_t r = a3_rng_u64(11, (uint64_t)rank, (uint64_t)i);
  const double u = (double)(r >> 11) / 9007199254740992.0;
  const double mag = pow(10.0, 6.0 * (double)(r & 1023) / 1023.0 - 3.0);
  return (float)((u - 0.5) * mag);
}

static void fill(const layout *l, int rank, float *g, int only_stage) {
  for (int i = 0; i < l->n; i++)
    for (int64_t k = 0; k < l->p[i].count; k++) {
      const int64_t j = l->p[i].offset + k;
      g[j] = only_stage < 0 || l->p[i].stage == only_stage ? value(rank, j) : NAN; // NaN: not yet
    }
}

// The floats of stage s get their values (the backward finished stage s).
static void reveal(const layout *l, int rank, float *g, int s) {
  for (int i = 0; i < l->n; i++)
    if (l->p[i].stage == s)
      for (int64_t k = 0; k < l->p[i].count; k++)
        g[l->p[i].offset + k] = value(rank, l->p[i].offset + k);
}

static uint64_t fnv(uint64_t h, const void *data, size_t n) {
  const unsigned char *b = data;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
  return h;
}

static uint64_t buckets_hash(const a3_grad_buckets *b) {
  uint64_t h = fnv(14695981039346656037ull, &b->n_buckets, sizeof b->n_buckets);
  h = fnv(h, b->begin, sizeof *b->begin * (size_t)(b->n_buckets + 1));
  h = fnv(h, b->stage, sizeof *b->stage * (size_t)b->n_buckets);
  return fnv(h, b->chunk, sizeof *b->chunk * (size_t)b->n_chunks);
}

// a3_run_at (the NCCL pack kernel's lookup) for every packed float
// of bucket k, searching the bucket's chunks and all chunks: the chunk that
// holds it.
static int chunk_lookup_errors(const a3_grad_buckets *b, int k) {
  int bad = 0;
  const int lo = b->chunk_begin[k], hi = b->chunk_begin[k + 1];
  for (int64_t p = b->begin[k]; p < b->begin[k + 1]; p++) {
    const int j = a3_run_at(b->chunk_packed, lo, hi, p);
    const int all = a3_run_at(b->chunk_packed, 0, b->n_chunks, p);
    bad += j < lo || j >= hi || j != all || p < b->chunk_packed[j] ||
           p >= b->chunk_packed[j] + b->chunk[j].count;
  }
  return bad;
}

// Local properties of the partition: stages never decrease, bucket sizes,
// every piece float in exactly one chunk, each chunk's place in the packed
// stream and the lookup of packed floats.
static void check_partition(const layout *l, const a3_grad_buckets *b, int64_t per) {
  int64_t total = 0;
  for (int i = 0; i < l->n; i++) total += l->p[i].count;
  CHECK(b->total == total && b->n_buckets == (int)((total + per - 1) / per));
  unsigned char *seen = calloc((size_t)l->floats, 1);
  int bad = 0;
  for (int k = 0; k < b->n_buckets; k++) {
    if (k && b->stage[k] < b->stage[k - 1]) bad++;
    const int64_t len = b->begin[k + 1] - b->begin[k];
    if (len != (k + 1 < b->n_buckets ? per : total - per * k)) bad++;
    int64_t in = 0;
    for (int c = b->chunk_begin[k]; c < b->chunk_begin[k + 1]; c++) {
      if (b->chunk_packed[c] != b->begin[k] + in) bad++;
      in += b->chunk[c].count;
      for (int64_t j = 0; j < b->chunk[c].count; j++) seen[b->chunk[c].offset + j]++;
    }
    if (in != len) bad++;
    bad += chunk_lookup_errors(b, k);
  }
  if (b->chunk_packed[b->n_chunks] != total) bad++;
  for (int i = 0; i < l->n; i++)
    for (int64_t k = 0; k < l->p[i].count; k++) bad += seen[l->p[i].offset + k] != 1;
  CHECK_MSG(bad == 0, "%lld floats per bucket: %d partition errors", (long long)per, bad);
  free(seen);
}

typedef struct {
  double max_eps; // largest |g - ref| / (FLT_EPSILON * sum over ranks of |term|)
  int64_t differ; // floats not bitwise equal to the reference
} diff;

// One simulated step: stages reported in order (or none: the device path),
// then finish. Returns the buffer; checks NaN-freedom and the frozen gaps.
static void step(a3_grad_comm *c, const layout *l, int rank, bool report, float *g) {
  for (int64_t j = 0; j < l->floats; j++) g[j] = FROZEN;
  fill(l, rank, g, report ? 0 : -1);
  const a3_grad_buckets *b = a3_grad_comm_buckets(c);
  for (int s = 0; report && s < STAGES; s++) {
    if (s) reveal(l, rank, g, s);
    CHECK(a3_grad_comm_ready(c, g, s) == A3_OK);
    int expect = 0; // every bucket of stage <= s has started, no other
    while (expect < b->n_buckets && b->stage[expect] <= s) expect++;
    CHECK(a3_grad_comm_started(c) == expect);
  }
  CHECK(a3_grad_comm_finish(c, g) == A3_OK);
  CHECK(a3_grad_comm_started(c) == 0);
}

static diff compare(const layout *l, int size, const float *g, const float *ref) {
  diff d = {0, 0};
  for (int64_t j = 0; j < l->floats; j++) {
    if (memcmp(&g[j], &ref[j], sizeof(float)) == 0) continue;
    d.differ++;
    double terms = 0.0;
    for (int r = 0; r < size; r++) terms += fabs((double)value(r, j));
    const double e = fabs((double)g[j] - ref[j]) / (FLT_EPSILON * fmax(terms, 1e-30));
    d.max_eps = fmax(d.max_eps, isnan(e) ? INFINITY : e); // NaN: a bucket started too early
  }
  return d;
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  a3_log_set_level(A3_LOG_WARN);
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  layout l;
  make_layout(&l);
  float *ref = malloc((size_t)l.floats * sizeof *ref), *g = malloc((size_t)l.floats * sizeof *g);
  float *g2 = malloc((size_t)l.floats * sizeof *g2), *scratch = malloc((size_t)l.floats * 4);
  // The reference: one MPI_Allreduce of the pieces packed in table order.
  a3_param_segment segs[N_PIECES];
  for (int i = 0; i < l.n; i++) segs[i] = (a3_param_segment){l.p[i].offset, l.p[i].count, false};
  for (int64_t j = 0; j < l.floats; j++) ref[j] = FROZEN;
  fill(&l, rank, ref, -1);
  CHECK(a3_grad_allreduce(MPI_COMM_WORLD, segs, l.n, ref, scratch) == A3_OK);
  // One float per bucket (52388 collectives) on 1 rank only: slow on more (under ASan).
  const size_t sizes[] = {4, 4 * 7, 1000, 4096, 65536, (size_t)1 << 40};
  for (size_t z = size > 1; z < sizeof sizes / sizeof *sizes; z++) {
    a3_grad_comm *c = NULL;
    CHECK(a3_grad_comm_create_mpi(MPI_COMM_WORLD, l.p, l.n, sizes[z], &c) == A3_OK);
    if (!c) break;
    const a3_grad_buckets *b = a3_grad_comm_buckets(c);
    const int64_t per = sizes[z] / 4 < ((int64_t)1 << 30) ? (int64_t)(sizes[z] / 4) : 1 << 30;
    check_partition(&l, b, per);
    uint64_t h[2] = {buckets_hash(b), 0}, lo = 0, hi = 0;
    MPI_Allreduce(&h[0], &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(&h[0], &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    CHECK_MSG(lo == hi, "%zu bytes: ranks formed different buckets", sizes[z]);
    step(c, &l, rank, true, g);
    step(c, &l, rank, false, g2); // no reports: finish starts everything
    const diff d = compare(&l, size, g, ref), again = compare(&l, size, g2, g);
    CHECK_MSG(again.differ == 0, "%zu bytes: %lld floats differ between two steps", sizes[z],
              (long long)again.differ);
    if (size <= 2)
      CHECK_MSG(d.differ == 0, "%zu bytes on %d ranks: %lld floats differ from MPI_Allreduce",
                sizes[z], size, (long long)d.differ);
    else
      CHECK_MSG(d.max_eps <= size, "%zu bytes on %d ranks: difference %.3g eps * sum |terms|",
                sizes[z], size, d.max_eps);
    if (rank == 0)
      fprintf(stderr,
              "%d ranks, %zu-byte buckets: %d buckets, %lld of %lld floats differ from "
              "one MPI_Allreduce, by at most %.3g FLT_EPSILON * sum |terms|\n",
              size, sizes[z], b->n_buckets, (long long)d.differ, (long long)b->total, d.max_eps);
    a3_grad_comm_free(c);
  }
  free(ref), free(g), free(g2), free(scratch);
  const int rc = test_done_all_ranks("test_train_grad_comm", MPI_COMM_WORLD);
  MPI_Finalize();
  return rc;
}
