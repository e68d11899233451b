// a3fta comm: the data-parallel gradient sum, behind one interface that an
// MPI implementation (here) and a NCCL one (the CUDA issue) share.
//
// Pieces. The trainable gradients are pieces of the flat gradient buffer
// (offset, count in floats), each with the backward stage after which no
// part of the same backward adds to it (a3_unet_param_grad_stage).
//
// Buckets. The pieces are ordered by stage (ties: the later piece in the
// buffer first, as the backward produces it), and that stream of floats is
// cut into consecutive buckets of bucket_bytes (the last one shorter; a piece
// may span two). The partition is a pure function of the pieces and the
// size, so every rank forms the same buckets. A bucket's stage is the largest
// of its floats'; along the bucket order it never decreases.
//
// Overlap. The backward reports each finished stage (a3_grad_comm_ready):
// every bucket whose stage is done is then packed and its sum started
// (MPI_Iallreduce, SUM), strictly in bucket order, the same order on every
// rank as MPI requires of collectives. a3_grad_comm_finish starts what is
// left (all of it when the backward reported nothing), waits for every sum
// and writes the sums back into the gradients. No 1/ranks scaling: the
// trainer weights each rank's loss by its share of the batch.
//
// Numbers. Each float's sum is MPI_SUM over the ranks of that float alone;
// which ranks' values MPI adds first depends only on the rank count, the
// bucket's length and the float's place in it (Open MPI's algorithms are
// deterministic), never on timing: runs with the same ranks and bucket size
// are bitwise identical. With 2 ranks the sum is a + b whatever the bucket
// (fp32 addition commutes), so any bucket size gives the same bits as one
// MPI_Allreduce of everything; with 3 or more ranks another bucket size may
// group the additions differently: equal to fp32 rounding.
#ifndef A3FTA_COMM_H
#define A3FTA_COMM_H

#include "a3fta/core.h"

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>

// Bucket size used by the trainer: env A3FTA_BUCKET_BYTES (bytes, >= 4) when
// set and valid, else this default.
enum { A3_GRAD_BUCKET_BYTES_DEFAULT = 4 << 20 };
size_t a3_grad_bucket_bytes(void);

typedef struct {
  int64_t offset, count; // floats of the gradient buffer
  int stage;             // final after this backward stage
} a3_grad_piece;

// ---------------------------------------------------------------- buckets
typedef struct {
  int64_t offset, count; // a run of the gradient buffer
} a3_grad_chunk;

typedef struct {
  int n_buckets;
  int64_t total;        // floats in all buckets
  int64_t *begin;       // (n_buckets + 1) bucket k packs floats [begin[k], begin[k+1])
  int *stage;           // (n_buckets) started once this stage is done
  int *chunk_begin;     // (n_buckets + 1) bucket k gathers chunks [chunk_begin[k], ...[k+1])
  a3_grad_chunk *chunk; // in packing order
  int n_chunks;
} a3_grad_buckets;

// The partition described above. bucket_bytes is rounded down to whole
// floats (at least one) and capped at 2^30 floats (MPI counts are ints).
// Pieces with count 0 are ignored. A3_ERR_INTERNAL for a negative count.
a3_status a3_grad_buckets_make(const a3_grad_piece *pieces, int n_pieces, size_t bucket_bytes,
                               a3_grad_buckets *out) A3_WARN_UNUSED;
void a3_grad_buckets_free(a3_grad_buckets *b); // safe on a zeroed struct
// packed (begin[k+1] - begin[k]) <- grads[bucket k's chunks], and back.
void a3_grad_bucket_pack(const a3_grad_buckets *b, int k, const float *grads, float *packed);
void a3_grad_bucket_unpack(const a3_grad_buckets *b, int k, const float *packed, float *grads);

// ---------------------------------------------------------------- the communicator
typedef struct a3_grad_comm a3_grad_comm;

// The sum over the ranks of `comm` (collective: every rank passes the same
// pieces and size). It works on a duplicate of comm, so its reductions never
// interleave with the caller's collectives. grads are host memory.
a3_status a3_grad_comm_create_mpi(MPI_Comm comm, const a3_grad_piece *pieces, int n_pieces,
                                  size_t bucket_bytes, a3_grad_comm **out) A3_WARN_UNUSED;

// Stages 0..stage of this step's backward are done: starts every bucket
// they complete, in order, and lets started sums progress.
a3_status a3_grad_comm_ready(a3_grad_comm *c, const float *grads, int stage) A3_WARN_UNUSED;
// Starts the rest, waits for all, grads[pieces] = their sums over the ranks.
// The next step begins again at bucket 0.
a3_status a3_grad_comm_finish(a3_grad_comm *c, float *grads) A3_WARN_UNUSED;
// NULL is fine. Destroying it with sums in flight (after an error) leaks
// their buffers rather than free memory MPI may still write.
void a3_grad_comm_free(a3_grad_comm *c);

const a3_grad_buckets *a3_grad_comm_buckets(const a3_grad_comm *c);
// Buckets started so far in this step (tests: were they started during the backward?).
int a3_grad_comm_started(const a3_grad_comm *c);

#endif
