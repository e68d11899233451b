// The bucket partition of the gradient pieces (a3fta/comm.h): order by
// stage, cut the stream of floats into equal buckets, list each bucket's
// runs of the gradient buffer.
#include "a3fta/comm.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_BUCKET_FLOATS = 1 << 30 }; // MPI counts are ints

size_t a3_grad_bucket_bytes(void) {
  const char *env = getenv("A3FTA_BUCKET_BYTES");
  if (!env || !*env) return A3_GRAD_BUCKET_BYTES_DEFAULT;
  char *end = NULL;
  errno = 0;
  const unsigned long long v = strtoull(env, &end, 10);
  if (errno || *end || v < sizeof(float)) {
    a3_warn("A3FTA_BUCKET_BYTES=%s is not a byte count >= %zu; using %d", env, sizeof(float),
            A3_GRAD_BUCKET_BYTES_DEFAULT);
    return A3_GRAD_BUCKET_BYTES_DEFAULT;
  }
  return (size_t)v;
}

void a3_grad_buckets_free(a3_grad_buckets *b) {
  free(b->begin);
  free(b->stage);
  free(b->chunk_begin);
  free(b->chunk);
  free(b->chunk_packed);
  memset(b, 0, sizeof *b);
}

// Stage ascending; within a stage the later piece in the buffer first (the
// backward walks each layer's parameters from the output side).
static int by_stage_then_later(const void *pa, const void *pb) {
  const a3_grad_piece *a = pa, *b = pb;
  if (a->stage != b->stage) return a->stage < b->stage ? -1 : 1;
  return a->offset > b->offset ? -1 : a->offset < b->offset;
}

static a3_status sorted_pieces(const a3_grad_piece *pieces, int n, a3_grad_piece **out, int *kept,
                               int64_t *total) {
  *kept = 0;
  *total = 0;
  A3_TRY(A3_ALLOC(*out, (size_t)n + 1));
  for (int i = 0; i < n; i++) {
    if (pieces[i].count < 0 || pieces[i].stage < 0)
      return A3_FAIL(A3_ERR_INTERNAL, "gradient piece %d: %lld floats, stage %d", i,
                     (long long)pieces[i].count, pieces[i].stage);
    if (pieces[i].count == 0) continue;
    (*out)[(*kept)++] = pieces[i];
    *total += pieces[i].count;
  }
  // qsort is not stable, but equal keys are equal pieces (same stage and offset).
  qsort(*out, (size_t)*kept, sizeof **out, by_stage_then_later);
  return A3_OK;
}

// Bucket k is the stream [k * per, ...): walk the sorted pieces once,
// cutting them at bucket boundaries.
static void cut(a3_grad_buckets *b, const a3_grad_piece *p, int n, int64_t per) {
  int k = 0, c = 0;
  int64_t pos = 0; // stream position
  b->begin[0] = 0;
  b->chunk_begin[0] = 0;
  for (int i = 0; i < n; i++) {
    for (int64_t done = 0; done < p[i].count;) {
      const int64_t room = (int64_t)(k + 1) * per - pos;
      const int64_t take = p[i].count - done < room ? p[i].count - done : room;
      b->chunk_packed[c] = pos;
      b->chunk[c++] = (a3_grad_chunk){p[i].offset + done, take};
      if (b->stage[k] < p[i].stage) b->stage[k] = p[i].stage;
      done += take;
      pos += take;
      if (pos == (int64_t)(k + 1) * per || pos == b->total) {
        k++;
        b->begin[k] = pos;
        b->chunk_begin[k] = c;
      }
    }
  }
  b->n_chunks = c;
  b->chunk_packed[c] = pos;
}

a3_status a3_grad_buckets_make(const a3_grad_piece *pieces, int n_pieces, size_t bucket_bytes,
                               a3_grad_buckets *out) {
  memset(out, 0, sizeof *out);
  a3_grad_piece *p = NULL;
  int n = 0;
  a3_status s = sorted_pieces(pieces, n_pieces, &p, &n, &out->total);
  int64_t per = (int64_t)(bucket_bytes / sizeof(float));
  if (per < 1) per = 1;
  if (per > MAX_BUCKET_FLOATS) per = MAX_BUCKET_FLOATS;
  const int64_t buckets = (out->total + per - 1) / per;
  if (s == A3_OK && buckets > INT32_MAX / 2)
    s = A3_FAIL(A3_ERR_CONFIG, "%lld gradient buckets of %zu bytes: too many; use larger buckets",
                (long long)buckets, bucket_bytes);
  // A piece adds at most one chunk beyond the bucket boundaries it crosses.
  const size_t chunks = (size_t)n + (size_t)buckets + 1;
  if (s == A3_OK) s = A3_ALLOC(out->begin, (size_t)buckets + 1);
  if (s == A3_OK) s = A3_ALLOC(out->stage, (size_t)buckets + 1);
  if (s == A3_OK) s = A3_ALLOC(out->chunk_begin, (size_t)buckets + 1);
  if (s == A3_OK) s = A3_ALLOC(out->chunk, chunks);
  if (s == A3_OK) s = A3_ALLOC(out->chunk_packed, chunks + 1);
  if (s == A3_OK) {
    out->n_buckets = (int)buckets;
    cut(out, p, n, per);
  } else {
    a3_grad_buckets_free(out);
  }
  free(p);
  return s;
}

void a3_grad_bucket_pack(const a3_grad_buckets *b, int k, const float *grads, float *packed) {
  for (int c = b->chunk_begin[k]; c < b->chunk_begin[k + 1]; c++) {
    memcpy(packed, grads + b->chunk[c].offset, (size_t)b->chunk[c].count * sizeof(float));
    packed += b->chunk[c].count;
  }
}

void a3_grad_bucket_unpack(const a3_grad_buckets *b, int k, const float *packed, float *grads) {
  for (int c = b->chunk_begin[k]; c < b->chunk_begin[k + 1]; c++) {
    memcpy(grads + b->chunk[c].offset, packed, (size_t)b->chunk[c].count * sizeof(float));
    packed += b->chunk[c].count;
  }
}
