// a3fta comm: the data-parallel gradient sum, behind one interface that an
// MPI implementation (host memory) and a NCCL one (device memory) share.
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
// rank as MPI and NCCL require of collectives. a3_grad_comm_finish starts what is
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
//
// NCCL (a3_grad_comm_create_nccl). The same buckets, in device memory: a
// bucket starts when the backward has *enqueued* its stage: an event
// recorded on the backend's compute stream gates a dedicated comm stream,
// which packs the bucket (one gather kernel; each float finds its chunk in
// chunk_packed with a3_run_at), sums it in place (ncclAllReduce, ncclSum, no scaling)
// and, at finish, unpacks every bucket (one scatter kernel); the compute
// stream then waits for that (the optimizer runs after it), so the sums
// overlap the rest of the backward on the GPU, and the host waits for them
// only at settle. Each float's sum comes from NCCL's algorithm (ring, tree,
// NVLS) over the ranks: deterministic for a fixed rank count, topology, NCCL
// version and bucket size (NCCL picks algorithm and chunking from the
// message size), so reruns on the same machines are bitwise alike; with 1
// rank the sums are the inputs, with 2 they are a + b, one fp32 addition
// (MPI's bits); with 3 or more they equal MPI's sums to fp32 rounding, not
// bitwise.
//
// Communicator. A rank keeps the NCCL communicator of its last sum when
// that sum is freed in order; the next a3_grad_comm_create_nccl on a
// congruent MPI communicator (the same ranks in the same order) and the
// same GPU takes it over when every rank of the group still holds a healthy
// one (they agree with one MPI_Allreduce), so the points of a sweep on one
// group share one communicator; otherwise every rank drops its own (abort)
// and they make a new one. The one left is finalized and destroyed inside
// MPI_Finalize (an attribute of MPI_COMM_SELF), under the abort grace.
//
// Failures never hang the job: the communicator is non-blocking, and every
// wait on it (its creation, enqueues, settle, its destruction) polls
// ncclCommGetAsyncError and the completion event with a limit,
// timeout_s (parallel.nccl_timeout_s). On an asynchronous error or at the
// limit the rank aborts its communicator (ncclCommAbort) and says so,
// naming its rank, host, the bucket and the NCCL error; if every rank of
// the group fails a step within timeout_s plus the abort grace
// (A3FTA_ABORT_GRACE_S, a3fta/dist.h; a rank whose own GPU faulted sees it
// at once, the others only when their watchdogs fire) each returns
// A3_ERR_CUDA (the run fails, a sweep goes on), else it aborts the MPI job
// (MPI_Abort) rather than wait for ranks that will never come. A rank whose
// step failed outside the sums joins them there (a3_grad_comm_fail).
#ifndef A3FTA_COMM_H
#define A3FTA_COMM_H

#include "a3fta/backend.h"
#include "a3fta/core.h"

#include <mpi.h>
#include <stdbool.h>
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
  int64_t total;         // floats in all buckets
  int64_t *begin;        // (n_buckets + 1) bucket k packs floats [begin[k], begin[k+1])
  int *stage;            // (n_buckets) started once this stage is done
  int *chunk_begin;      // (n_buckets + 1) bucket k gathers chunks [chunk_begin[k], ...[k+1])
  a3_grad_chunk *chunk;  // in packing order
  int64_t *chunk_packed; // (n_chunks + 1) chunk j fills packed floats [chunk_packed[j], ...[j+1])
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

// The same sum with NCCL on the GPUs of the ranks of `comm` (collective:
// every rank passes the same pieces and size, and its own CUDA backend `be`,
// one GPU per rank). grads are device memory of be; ranks finish in
// timeout_s seconds or fail (see "Failures" above). Group rank 0 creates the
// NCCL id and broadcasts it over comm. Every rank returns the same outcome
// (a rank that fails says why; the others name the step that failed there).
// A3_ERR_CUDA when be is not a CUDA backend, A3_ERR_UNIMPLEMENTED in a build
// without CUDA.
a3_status a3_grad_comm_create_nccl(MPI_Comm comm, const a3_backend *be, const a3_grad_piece *pieces,
                                   int n_pieces, size_t bucket_bytes, double timeout_s,
                                   a3_grad_comm **out) A3_WARN_UNUSED;

// Which sum a trainer uses (env A3FTA_GRAD_COMM, for tests and debugging).
typedef enum {
  A3_GRAD_COMM_AUTO, // unset: NCCL when every rank of a group of 2+ trains on a GPU, else MPI
  A3_GRAD_COMM_NONE, // one rank, nothing to sum
  A3_GRAD_COMM_MPI,  // "mpi": over host memory (gradients copied down and up on a GPU)
  A3_GRAD_COMM_NCCL, // "nccl": NCCL, also on a 1-rank group (every rank must be on a GPU)
} a3_grad_comm_kind;
// text NULL or "" -> AUTO; "mpi", "nccl"; anything else A3_ERR_CONFIG.
a3_status a3_grad_comm_kind_parse(const char *text, a3_grad_comm_kind *out) A3_WARN_UNUSED;
// The sum a group of `ranks` uses when `asked`: NONE, MPI or NCCL (above);
// A3_ERR_CONFIG for NCCL asked while some rank trains on the CPU.
a3_status a3_grad_comm_choose(a3_grad_comm_kind asked, int ranks, bool all_on_gpu,
                              a3_grad_comm_kind *use) A3_WARN_UNUSED;
const char *a3_grad_comm_kind_name(a3_grad_comm_kind k); // "mpi", "nccl", ...

// Stages 0..stage of this step's backward are done: starts every bucket
// they complete, in order, and lets started sums progress.
a3_status a3_grad_comm_ready(a3_grad_comm *c, const float *grads, int stage) A3_WARN_UNUSED;
// Starts the rest, waits for all, grads[pieces] = their sums over the ranks
// (for NCCL: queued on the device, ordered before the compute stream's next
// work, and not waited for: see a3_grad_comm_settle). The next step begins
// again at bucket 0.
a3_status a3_grad_comm_finish(a3_grad_comm *c, float *grads) A3_WARN_UNUSED;
// NCCL: waits, under the watchdog (timeout_s), until the sums the last
// finish queued have landed in the gradients; MPI: returns at once (finish
// waited). Between finish and settle the host may queue more work that the
// sums gate (the trainer queues its optimizer step and EMA), so that it is
// ready when the sums arrive; it must not read device memory the sums gate
// before settle (a copy would wait with no limit) nor queue much (CUDA
// blocks a launch when about a thousand are pending, again with no limit).
a3_status a3_grad_comm_settle(a3_grad_comm *c) A3_WARN_UNUSED;
// This rank's step failed (its GPU faulted, say) while the other ranks of
// the group go on with their sums of it: what they need so as not to wait
// for it for good. summed: a3_grad_comm_finish had returned in this step.
// MPI: unless summed, the buckets not yet started are started on whatever
// grads (host memory) holds and all of the step's sums completed (the step
// is void), so the others finish the step. NCCL (nothing to do when
// step_failed already ran here): the communicator is aborted; unless summed,
// the rank then waits timeout_s plus the abort grace for the others to fail
// the step the same way, as their watchdogs will, and aborts the job if
// they do not. Either way the group must then agree on the outcome
// (a3_agree; the trainer does after every step, a3_trainer_agree). A3_OK
// when the others were let go.
a3_status a3_grad_comm_fail(a3_grad_comm *c, float *grads, bool summed) A3_WARN_UNUSED;
// NULL is fine. Destroying it with sums in flight (after an error): MPI
// leaks their buffers rather than free memory MPI may still write; NCCL
// keeps its device buffers until the queued work has drained, and a later
// create or free of a sum frees them then.
void a3_grad_comm_free(a3_grad_comm *c);

const a3_grad_buckets *a3_grad_comm_buckets(const a3_grad_comm *c);
const char *a3_grad_comm_name(const a3_grad_comm *c); // "mpi" or "nccl"
// NCCL: this sum took over the communicator an earlier one on the same
// group and GPUs left (see "Communicator" above); MPI: false.
bool a3_grad_comm_reused(const a3_grad_comm *c);
// Buckets started so far in this step (tests: were they started during the backward?).
int a3_grad_comm_started(const a3_grad_comm *c);

#endif
