// The gradient sum over NCCL (a3fta/comm.h, "NCCL", "Communicator" and
// "Failures"): each bucket packed by one kernel on a dedicated comm stream,
// gated by an event on the backend's compute stream, summed in place with
// ncclAllReduce into its slot of one device buffer; a non-blocking
// communicator, kept for the next sum on the same group, and a watchdog on
// every wait.
#define OMPI_SKIP_MPICXX 1 // the C API only, also when compiled as C++
#define MPICH_SKIP_MPICXX 1
extern "C" {
#include "a3fta/backend.h"
#include "a3fta/dist.h"
#include "dist/grad_comm_internal.h"
}

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace {

// A group's NCCL communicator, which outlives the sum that made it (comm.h,
// "Communicator").
struct nccl_link {
  MPI_Comm mpi;  // a duplicate of the group's: agreeing on reuse and failures
  ncclComm_t nc; // NULL once aborted (ncclCommAbort frees it)
  int device;
  uint64_t id; // the same on every rank of the link (a hash of its NCCL id), never 0
};

// The link the last sum freed in order, for the next one to take over.
nccl_link *idle_link = NULL;

struct nccl_impl {
  const a3_backend *be; // its stream is the compute stream
  int device, rank, size;
  char host[MPI_MAX_PROCESSOR_NAME + 1];
  double timeout_s;
  nccl_link *link;  // NULL until made or taken over
  nccl_link *fresh; // allocated in the local setup, for init_comm (so no rank fails alone later)
  ncclComm_t nc;    // link->nc while it lives; NULL once aborted
  bool aborted;     // after ncclCommAbort
  bool queued;      // NCCL work queued since the last settle (or none ever settled)
  bool unsettled;   // wait_all queued sums that settle has not waited for
  cudaStream_t stream;
  cudaEvent_t ready;     // recorded on the compute stream as each bucket starts
  cudaEvent_t done;      // the step's last unpack
  cudaEvent_t *sent;     // (n_buckets) bucket k's sum has finished (names a stuck bucket)
  float *packed;         // device (b.total): bucket k at packed + b.begin[k]
  int64_t *chunk_packed; // device copies of the buckets' chunk table:
  a3_grad_chunk *chunks; //   places in packed, and runs of the gradients
  ncclResult_t async;    // the last asynchronous NCCL state seen
  cudaError_t cuda;      // the CUDA error a poll met
};

// The backend's stream, where the backward queues its work.
cudaStream_t compute_stream(const nccl_impl *im) {
  return (cudaStream_t)a3_backend_cuda_stream(im->be);
}

// ---------------------------------------------------------------- errors

a3_status cuda_failure(const nccl_impl *im, cudaError_t e, const char *what, const char *file,
                       int line) {
  cudaGetLastError(); // clear a non-sticky error
  return a3_error_set(A3_ERR_CUDA, file, line, "rank %d of %d on %s: %s: %s (%s)", im->rank,
                      im->size, im->host, what, cudaGetErrorName(e), cudaGetErrorString(e));
}

a3_status nccl_failure(const nccl_impl *im, ncclResult_t r, const char *what, const char *file,
                       int line) {
  const char *last = im->nc ? ncclGetLastError(im->nc) : NULL; // NULL: aborted
  return a3_error_set(A3_ERR_CUDA, file, line, "rank %d of %d on %s: %s: NCCL %s%s%s", im->rank,
                      im->size, im->host, what, ncclGetErrorString(r), last && *last ? ": " : "",
                      last ? last : "");
}

#define CUDA_TRY(im, call, what)                                                                   \
  do {                                                                                             \
    const cudaError_t e_ = (call);                                                                 \
    if (e_ != cudaSuccess) return cuda_failure((im), e_, (what), __FILE__, __LINE__);              \
  } while (0)

// ---------------------------------------------------------------- the non-blocking communicator

// 1: no NCCL operation pending, 0: still in progress, -1: an error (im->async).
int settled(void *ctx) {
  nccl_impl *im = (nccl_impl *)ctx;
  if (!im->nc) { // aborted: nothing will ever complete
    im->async = ncclInvalidUsage;
    return -1;
  }
  ncclResult_t st = ncclSuccess;
  const ncclResult_t r = ncclCommGetAsyncError(im->nc, &st);
  im->async = r != ncclSuccess ? r : st;
  if (im->async == ncclInProgress) return 0;
  return im->async == ncclSuccess ? 1 : -1;
}

// A call on the non-blocking communicator that answered r (ncclInProgress:
// it goes on in the background): waits, with the limit, until it has taken
// effect. DONE, FAILED (the error in im->async) or TIMEOUT.
a3_watch_result settle(nccl_impl *im, ncclResult_t r) {
  im->cuda = cudaSuccess;
  im->async = r;
  if (r == ncclSuccess) return A3_WATCH_DONE;
  if (r != ncclInProgress) return A3_WATCH_FAILED;
  return a3_grad_comm_watch(settled, im, im->timeout_s);
}

// settle's outcome as a status (creation and teardown).
a3_status nccl_call(nccl_impl *im, ncclResult_t r, const char *what, const char *file, int line) {
  const a3_watch_result w = settle(im, r);
  if (w == A3_WATCH_TIMEOUT)
    return a3_error_set(A3_ERR_CUDA, file, line,
                        "rank %d of %d on %s: %s: still in progress after %.0f s "
                        "(parallel.nccl_timeout_s)",
                        im->rank, im->size, im->host, what, im->timeout_s);
  if (w == A3_WATCH_FAILED) return nccl_failure(im, im->async, what, file, line);
  return A3_OK;
}

void abort_comm(nccl_impl *im) {
  if (!im->nc || im->aborted) return;
  ncclCommAbort(im->nc); // returns once the device work is stopped and the communicator freed
  im->aborted = true;
  im->nc = NULL;
  if (im->link) im->link->nc = NULL;
}

// ---------------------------------------------------------------- setup

// The chunk table the pack kernels search: where each chunk starts in the
// packed buffer and in the gradients. Copied on the NCCL stream, which runs
// the kernels that read it: a plain cudaMemcpy runs on the legacy default
// stream, which the non-blocking NCCL stream does not wait for.
a3_status upload_chunks(nccl_impl *im, const a3_grad_buckets *b) {
  const size_t n = (size_t)b->n_chunks + 1;
  cudaError_t e = cudaMalloc((void **)&im->chunk_packed, n * sizeof(int64_t));
  if (e == cudaSuccess) e = cudaMalloc((void **)&im->chunks, n * sizeof(a3_grad_chunk));
  if (e == cudaSuccess)
    e = cudaMemcpyAsync(im->chunk_packed, b->chunk_packed, n * sizeof(int64_t),
                        cudaMemcpyHostToDevice, im->stream);
  if (e == cudaSuccess)
    e = cudaMemcpyAsync(im->chunks, b->chunk, (n - 1) * sizeof(a3_grad_chunk),
                        cudaMemcpyHostToDevice, im->stream);
  if (e == cudaSuccess) e = cudaStreamSynchronize(im->stream); // b's arrays are the host's again
  CUDA_TRY(im, e, "uploading the NCCL chunk table");
  return A3_OK;
}

// Everything local: the backend, the device, the stream, events and buffer.
a3_status setup_local(a3_grad_comm *c, MPI_Comm comm, const a3_backend *be, double timeout_s) {
  nccl_impl *im = NULL;
  A3_TRY(A3_ALLOC(im, 1));
  c->impl = im;
  im->timeout_s = timeout_s;
  MPI_Comm_rank(comm, &im->rank);
  MPI_Comm_size(comm, &im->size);
  int len = 0;
  if (MPI_Get_processor_name(im->host, &len) != MPI_SUCCESS) snprintf(im->host, 8, "unknown");
  if (!a3_backend_is_cuda(be))
    return A3_FAIL(A3_ERR_CUDA,
                   "rank %d on %s: the NCCL gradient sum needs a CUDA backend, not %s (set "
                   "parallel.backend: cuda, or A3FTA_GRAD_COMM=mpi)",
                   im->rank, im->host, be ? be->name : "none");
  im->be = be;
  im->device = a3_backend_cuda_device(be);
  CUDA_TRY(im, cudaSetDevice(im->device), "cudaSetDevice");
  int least = 0, greatest = 0; // the sums first when both streams have work ready
  CUDA_TRY(im, cudaDeviceGetStreamPriorityRange(&least, &greatest), "stream priorities");
  CUDA_TRY(im, cudaStreamCreateWithPriority(&im->stream, cudaStreamNonBlocking, greatest),
           "creating the NCCL stream");
  CUDA_TRY(im, cudaEventCreateWithFlags(&im->ready, cudaEventDisableTiming), "cudaEventCreate");
  CUDA_TRY(im, cudaEventCreateWithFlags(&im->done, cudaEventDisableTiming), "cudaEventCreate");
  A3_TRY(A3_ALLOC(im->fresh, 1));
  im->fresh->mpi = MPI_COMM_NULL;
  A3_TRY(A3_ALLOC(im->sent, (size_t)c->b.n_buckets + 1));
  for (int k = 0; k < c->b.n_buckets; k++)
    CUDA_TRY(im, cudaEventCreateWithFlags(&im->sent[k], cudaEventDisableTiming), "cudaEventCreate");
  CUDA_TRY(im, cudaMalloc((void **)&im->packed, ((size_t)c->b.total + 1) * sizeof(float)),
           "allocating the NCCL gradient buffer");
  return upload_chunks(im, &c->b);
}

// The same outcome on every rank of comm: this rank's failure, or that
// another rank failed at `what`.
a3_status agree(MPI_Comm comm, a3_status mine, const char *what) {
  int code = (int)mine, worst = (int)mine;
  if (MPI_Allreduce(&code, &worst, 1, MPI_INT, MPI_MAX, comm) != MPI_SUCCESS && mine == A3_OK)
    return A3_FAIL(A3_ERR_MPI, "agreeing on %s failed", what);
  if (mine != A3_OK) return mine;
  if (worst != A3_OK)
    return A3_FAIL((a3_status)worst, "%s failed on another rank of the group (see its message)",
                   what);
  return A3_OK;
}

// ---------------------------------------------------------------- the group's communicator

// Finalizes and destroys a link's communicator (or aborts it when the other
// ranks do not take part within the limit) and frees the link.
void release_link(nccl_link *link, double limit) {
  if (!link) return;
  if (link->nc) {
    nccl_impl im; // settle's context: the link's communicator, the limit
    memset(&im, 0, sizeof im);
    im.nc = link->nc;
    im.timeout_s = limit;
    const a3_watch_result w = settle(&im, ncclCommFinalize(link->nc));
    if (w == A3_WATCH_DONE) {
      ncclCommDestroy(link->nc); // unchecked: local, and nothing is left to do on failure
    } else {
      a3_warn("ncclCommFinalize %s; aborting the communicator",
              w == A3_WATCH_TIMEOUT ? "timed out" : ncclGetErrorString(im.async));
      ncclCommAbort(link->nc); // unchecked: the last resort
    }
  }
  if (link->mpi != MPI_COMM_NULL) MPI_Comm_free(&link->mpi);
  free(link);
}

// Drops a link at once, without the other ranks (they drop theirs too).
void drop_link(nccl_link *link) {
  if (!link) return;
  if (link->nc) ncclCommAbort(link->nc); // unchecked: freeing, nothing to report
  link->nc = NULL;
  release_link(link, 0.0);
}

// Inside MPI_Finalize (MPI still works there): the idle link goes.
int release_idle_at_finalize(MPI_Comm, int, void *, void *) {
  nccl_link *link = idle_link;
  idle_link = NULL;
  release_link(link, a3_world_abort_grace_s());
  return MPI_SUCCESS;
}

// Keeps the link for the next sum (or, when one is kept already, releases it).
void park_link(nccl_link *link, double limit) {
  static bool hooked = false; // release_idle_at_finalize is set on MPI_COMM_SELF
  if (!hooked) {
    int key = MPI_KEYVAL_INVALID;
    hooked = MPI_Comm_create_keyval(MPI_COMM_NULL_COPY_FN, release_idle_at_finalize, &key, NULL) ==
                 MPI_SUCCESS &&
             MPI_Comm_set_attr(MPI_COMM_SELF, key, NULL) == MPI_SUCCESS;
  }
  if (idle_link || !hooked) {
    release_link(link, limit);
    return;
  }
  idle_link = link;
}

// This rank's idle link's id when it serves `comm` on `device` (the same
// ranks in the same order, the same GPU, no asynchronous error), else 0.
uint64_t idle_link_fits(MPI_Comm comm, int device) {
  if (!idle_link || !idle_link->nc || idle_link->device != device) return 0;
  int same = MPI_UNEQUAL;
  if (MPI_Comm_compare(comm, idle_link->mpi, &same) != MPI_SUCCESS) return 0;
  if (same != MPI_IDENT && same != MPI_CONGRUENT) return 0;
  ncclResult_t st = ncclInternalError;
  if (ncclCommGetAsyncError(idle_link->nc, &st) != ncclSuccess || st != ncclSuccess) return 0;
  return idle_link->id;
}

// Takes over the idle link when every rank of comm holds the same one
// (*taken; one MPI_Allreduce of (id, ~id) with MAX gives the largest and the
// smallest id), else every rank drops its idle link.
a3_status take_idle_link(nccl_impl *im, MPI_Comm comm, bool *taken) {
  const uint64_t id = idle_link_fits(comm, im->device);
  uint64_t mine[2] = {id, ~id}, most[2] = {0, 0};
  A3_MPI_TRY(MPI_Allreduce(mine, most, 2, MPI_UINT64_T, MPI_MAX, comm),
             "agreeing on the NCCL communicator to use");
  *taken = id != 0 && most[0] == id && ~most[1] == id;
  if (!*taken) {
    drop_link(idle_link);
    idle_link = NULL;
    return A3_OK;
  }
  im->link = idle_link;
  im->nc = idle_link->nc;
  idle_link = NULL;
  return A3_OK;
}

// A nonzero id for a link, the same on every rank: a hash of its NCCL id.
uint64_t link_id(const ncclUniqueId *u) {
  const uint64_t h = a3_hash64(u->internal, sizeof u->internal, A3_HASH_SEED);
  return h ? h : 1;
}

// A new communicator: group rank 0's NCCL id, broadcast; every rank joins.
a3_status init_comm(nccl_impl *im, MPI_Comm comm) {
  im->link = im->fresh;
  im->fresh = NULL;
  im->link->device = im->device;
  A3_MPI_TRY(MPI_Comm_dup(comm, &im->link->mpi), "MPI_Comm_dup for the NCCL gradient sum");
  struct {
    int ok;
    ncclUniqueId id;
  } msg;
  memset(&msg, 0, sizeof msg);
  a3_status s = A3_OK;
  if (im->rank == 0) {
    const ncclResult_t r = ncclGetUniqueId(&msg.id);
    if (r != ncclSuccess) s = nccl_failure(im, r, "ncclGetUniqueId", __FILE__, __LINE__);
    msg.ok = r == ncclSuccess;
  }
  A3_MPI_TRY(MPI_Bcast(&msg, (int)sizeof msg, MPI_BYTE, 0, im->link->mpi),
             "broadcasting the NCCL id");
  if (!msg.ok)
    return s != A3_OK
               ? s
               : A3_FAIL(A3_ERR_CUDA, "rank 0 of the group found no NCCL id (see its message)");
  im->link->id = link_id(&msg.id);
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0; // every call returns; the watchdog decides how long to wait
  const ncclResult_t r = ncclCommInitRankConfig(&im->nc, im->size, msg.id, im->rank, &config);
  im->link->nc = im->nc;
  s = nccl_call(im, r, "ncclCommInitRankConfig", __FILE__, __LINE__);
  if (s != A3_OK) abort_comm(im);
  return s;
}

// The group's communicator: the idle one when every rank has it, else new.
a3_status join_comm(a3_grad_comm *c, MPI_Comm comm) {
  nccl_impl *im = (nccl_impl *)c->impl;
  bool taken = false;
  A3_TRY(take_idle_link(im, comm, &taken));
  c->reused = taken;
  return taken ? A3_OK : init_comm(im, comm);
}

// ---------------------------------------------------------------- the step

// Every rank of the group fails the step within wait_s seconds (they meet at
// the group's barrier), or this rank aborts the MPI job rather than wait for
// ranks that will never come.
void meet_failed_peers(const nccl_impl *im, double wait_s) {
  MPI_Request pending;
  if (a3_grad_comm_peers_arrive(im->link->mpi, wait_s, &pending)) return;
  a3_log(A3_LOG_ERROR,
         "rank %d on %s: the other ranks of its group did not fail within %.0f s "
         "(parallel.nccl_timeout_s + A3FTA_ABORT_GRACE_S); aborting the MPI job",
         im->rank, im->host, wait_s);
  MPI_Abort(MPI_COMM_WORLD, 1);
}

// The watchdog fired during a step (queueing bucket `k`'s sum, or with k < 0
// waiting for the sums): abort, say why, and either every rank of the group
// failed too (return the error) or abort the job.
a3_status step_failed(a3_grad_comm *c, int k, a3_watch_result w) {
  nccl_impl *im = (nccl_impl *)c->impl;
  const bool queueing = k >= 0;
  if (!queueing) { // the first bucket whose sum has not finished
    k = 0;
    while (k < c->b.n_buckets && cudaEventQuery(im->sent[k]) == cudaSuccess) k++;
  }
  char where[160];
  if (k < c->b.n_buckets)
    snprintf(where, sizeof where, "bucket %d of %d (%lld floats)%s", k, c->b.n_buckets,
             (long long)(c->b.begin[k + 1] - c->b.begin[k]),
             queueing ? ", queueing its ncclAllReduce" : "");
  else
    snprintf(where, sizeof where, "unpacking %d bucket(s)", c->b.n_buckets);
  char why[400];
  if (w == A3_WATCH_TIMEOUT)
    snprintf(why, sizeof why, "not finished after %.0f s (parallel.nccl_timeout_s)", im->timeout_s);
  else if (im->cuda != cudaSuccess)
    snprintf(why, sizeof why, "CUDA %s (%s)", cudaGetErrorName(im->cuda),
             cudaGetErrorString(im->cuda));
  else
    snprintf(why, sizeof why, "NCCL %s: %s", ncclGetErrorString(im->async),
             ncclGetLastError(im->nc));
  abort_comm(im);
  const a3_status s = A3_FAIL(A3_ERR_CUDA,
                              "rank %d of %d on %s (GPU %d): NCCL gradient sum, %s: %s; its "
                              "communicator is aborted",
                              im->rank, im->size, im->host, im->device, where, why);
  a3_log(A3_LOG_ERROR, "%s", a3_error_message());
  // A fault of this rank's own GPU can show here long before the others'
  // watchdogs fire (their sums wait for this rank's part): wait for them.
  meet_failed_peers(im, im->timeout_s + a3_world_abort_grace_s());
  return s;
}

// packed[p] = grads[its source] for the packed floats p in [first, end),
// whose chunks are lo..hi-1 (one bucket, or all of them); unpacking, the
// other way round (grads is only read when packing).
__global__ void chunk_copy_kernel(float *packed, float *grads, const int64_t *chunk_packed,
                                  const a3_grad_chunk *chunks, int lo, int hi, int64_t first,
                                  int64_t end, bool unpack) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t p = first + (int64_t)blockIdx.x * blockDim.x + threadIdx.x; p < end; p += stride) {
    const int j = a3_run_at(chunk_packed, lo, hi, p);
    float *g = grads + chunks[j].offset + (p - chunk_packed[j]);
    if (unpack)
      *g = packed[p];
    else
      packed[p] = *g;
  }
}

const int PACK_THREADS = 256;
const int64_t PACK_MAX_BLOCKS = 4096;

unsigned pack_blocks(int64_t floats) {
  const int64_t b = (floats + PACK_THREADS - 1) / PACK_THREADS;
  return (unsigned)(b < 1 ? 1 : b < PACK_MAX_BLOCKS ? b : PACK_MAX_BLOCKS);
}

// After an abort every call fails: the communicator is gone.
a3_status refuse_aborted(const nccl_impl *im) {
  return A3_FAIL(A3_ERR_CUDA,
                 "rank %d of %d on %s: the NCCL gradient sum was aborted after an earlier error",
                 im->rank, im->size, im->host);
}

a3_status nccl_start(a3_grad_comm *c, int k, const float *grads) {
  nccl_impl *im = (nccl_impl *)c->impl;
  if (im->aborted) return refuse_aborted(im);
  im->queued = true;
  CUDA_TRY(im, cudaEventRecord(im->ready, compute_stream(im)), "recording a bucket's event");
  CUDA_TRY(im, cudaStreamWaitEvent(im->stream, im->ready, 0), "gating the NCCL stream");
  const int64_t first = c->b.begin[k], end = c->b.begin[k + 1];
  chunk_copy_kernel<<<pack_blocks(end - first), PACK_THREADS, 0, im->stream>>>(
      im->packed, const_cast<float *>(grads), im->chunk_packed, im->chunks, c->b.chunk_begin[k],
      c->b.chunk_begin[k + 1], first, end, false);
  CUDA_TRY(im, cudaGetLastError(), "packing a gradient bucket"); // CU_LAUNCHED's check
  float *slot = im->packed + first;
  const size_t count = (size_t)(end - first);
  const a3_watch_result w =
      settle(im, ncclAllReduce(slot, slot, count, ncclFloat, ncclSum, im->nc, im->stream));
  if (w != A3_WATCH_DONE) return step_failed(c, k, w);
  CUDA_TRY(im, cudaEventRecord(im->sent[k], im->stream), "recording a bucket's event");
  return A3_OK;
}

a3_status nccl_progress(a3_grad_comm *c) { // the GPU moves the data on its own
  (void)c;
  return A3_OK;
}

// 1: the step's sums are unpacked, 0: not yet, -1: a CUDA (im->cuda) or
// asynchronous NCCL (im->async) error.
int step_done(void *ctx) {
  nccl_impl *im = (nccl_impl *)ctx;
  const cudaError_t e = cudaEventQuery(im->done);
  if (e == cudaSuccess) return 1;
  if (e != cudaErrorNotReady) {
    im->cuda = e;
    return -1;
  }
  if (!im->nc) return -1; // aborted
  ncclResult_t st = ncclSuccess;
  const ncclResult_t r = ncclCommGetAsyncError(im->nc, &st);
  im->async = r != ncclSuccess ? r : st;
  return im->async == ncclSuccess || im->async == ncclInProgress ? 0 : -1;
}

// Queues the unpacking of every bucket and orders the compute stream's next
// work (clipping, the optimizer) after it; settle waits for it.
a3_status nccl_wait_all(a3_grad_comm *c, float *grads) {
  nccl_impl *im = (nccl_impl *)c->impl;
  if (im->aborted) return refuse_aborted(im);
  im->queued = true;
  if (c->b.total > 0) {
    chunk_copy_kernel<<<pack_blocks(c->b.total), PACK_THREADS, 0, im->stream>>>(
        im->packed, grads, im->chunk_packed, im->chunks, 0, c->b.n_chunks, 0, c->b.total, true);
    CUDA_TRY(im, cudaGetLastError(), "unpacking the gradient buckets"); // CU_LAUNCHED's check
  }
  CUDA_TRY(im, cudaEventRecord(im->done, im->stream), "recording the sums' event");
  CUDA_TRY(im, cudaStreamWaitEvent(compute_stream(im), im->done, 0), "ordering after the sums");
  im->unsettled = true;
  return A3_OK;
}

// The watchdog over the last step's sums (comm.h, a3_grad_comm_settle).
a3_status nccl_settle(a3_grad_comm *c) {
  nccl_impl *im = (nccl_impl *)c->impl;
  if (im->aborted) return refuse_aborted(im);
  if (!im->unsettled) return A3_OK;
  im->cuda = cudaSuccess;
  im->async = ncclSuccess;
  const a3_watch_result w = a3_grad_comm_watch(step_done, im, im->timeout_s);
  if (w != A3_WATCH_DONE) return step_failed(c, -1, w);
  im->unsettled = im->queued = false;
  return A3_OK;
}

// This rank's step failed outside the sums (its GPU, say) before they were
// all queued: the others' sums wait for its part until their watchdogs
// fire (step_failed, which meets every rank at the group's barrier); this
// rank aborts its communicator and meets them there, waiting timeout_s plus
// the grace. When they were all queued (summed), the others' sums are
// likely done: only the abort (the group learns at a3_trainer_agree).
a3_status nccl_fail(a3_grad_comm *c, float *grads, bool summed) {
  (void)grads;
  nccl_impl *im = (nccl_impl *)c->impl;
  if (im->aborted || im->size == 1 || !im->link) return A3_OK; // step_failed ran, or no peers
  abort_comm(im);
  if (summed) return A3_OK;
  const double wait = im->timeout_s + a3_world_abort_grace_s();
  a3_log(A3_LOG_ERROR,
         "rank %d of %d on %s (GPU %d): its training step failed, so its NCCL communicator is "
         "aborted; waiting up to %.0f s for the other ranks' sums of the step to time out "
         "(parallel.nccl_timeout_s + A3FTA_ABORT_GRACE_S)",
         im->rank, im->size, im->host, im->device, wait);
  meet_failed_peers(im, wait);
  return A3_OK;
}

// ---------------------------------------------------------------- teardown

void free_device_side(nccl_impl *im, int n_buckets) {
  if (im->sent)
    for (int k = 0; k < n_buckets; k++)
      if (im->sent[k]) cudaEventDestroy(im->sent[k]);
  if (im->ready) cudaEventDestroy(im->ready);
  if (im->done) cudaEventDestroy(im->done);
  if (im->stream) cudaStreamDestroy(im->stream);
  if (im->packed) cudaFree(im->packed);
  if (im->chunk_packed) cudaFree(im->chunk_packed);
  if (im->chunks) cudaFree(im->chunks);
}

// The device side of sums freed with work queued (after an abort): the work
// may still use it, and cudaFree would wait for it, perhaps for ever. Each
// is freed by a later create or free of a sum once its own stream has
// drained (its `done` event, recorded again behind that work), so that a
// sweep that goes on after aborted sums does not lose their memory. (That
// cudaFree still waits for the rest of the device, as every cudaFree does.)
struct abandoned_sum {
  nccl_impl *im;
  int n_buckets;
  abandoned_sum *next;
};
abandoned_sum *abandoned = NULL;

void free_host_side(nccl_impl *im) {
  free(im->sent);
  free(im);
}

void free_impl(nccl_impl *im, int n_buckets) {
  free_device_side(im, n_buckets);
  free_host_side(im);
}

void reap_abandoned() {
  for (abandoned_sum **p = &abandoned; *p;) {
    abandoned_sum *a = *p;
    if (cudaEventQuery(a->im->done) != cudaSuccess) { // queued still, or the device failed
      p = &a->next;
      continue;
    }
    free_impl(a->im, a->n_buckets);
    *p = a->next;
    free(a);
  }
}

// Keeps im until its stream's queued work has run (else it is lost).
void abandon(nccl_impl *im, int n_buckets) {
  abandoned_sum *a = (abandoned_sum *)calloc(1, sizeof *a);
  if (!a || cudaEventRecord(im->done, im->stream) != cudaSuccess) {
    free(a);
    a3_debug("NCCL gradient sum freed with work queued; its device buffers are lost");
    free_host_side(im);
    return;
  }
  a3_debug("NCCL gradient sum freed with work queued; its device buffers wait for that work");
  *a = abandoned_sum{im, n_buckets, abandoned};
  abandoned = a;
}

// In order (every sum settled): the communicator stays for the next sum.
// With NCCL work queued and not settled (after an error): it is aborted,
// and the device side waits for the queued work (abandon).
void nccl_destroy(a3_grad_comm *c, bool in_flight) {
  nccl_impl *im = (nccl_impl *)c->impl;
  if (!im) return;
  in_flight = in_flight || im->queued || im->unsettled;
  if (in_flight) abort_comm(im);
  if (im->link && im->link->nc && !im->aborted) {
    const double grace = a3_world_abort_grace_s();
    park_link(im->link, grace < im->timeout_s ? grace : im->timeout_s);
  } else {
    release_link(im->link, 0.0); // its communicator is aborted or was never made
  }
  im->link = NULL;
  release_link(im->fresh, 0.0); // unused: the idle link was taken over, or setup failed
  if (in_flight)
    abandon(im, c->b.n_buckets);
  else
    free_impl(im, c->b.n_buckets);
  c->impl = NULL;
  reap_abandoned();
}

const a3_grad_comm_ops nccl_ops = {"nccl",      nccl_start, nccl_progress, nccl_wait_all,
                                   nccl_settle, nccl_fail,  nccl_destroy};

} // namespace

extern "C" a3_status a3_grad_comm_create_nccl(MPI_Comm comm, const a3_backend *be,
                                              const a3_grad_piece *pieces, int n_pieces,
                                              size_t bucket_bytes, double timeout_s,
                                              a3_grad_comm **out) {
  *out = NULL;
  reap_abandoned();
  a3_grad_comm *c = NULL;
  // Local setup first, agreed on, so that no rank waits in NCCL's collective
  // creation for one that will never come; then the creation, agreed on.
  a3_status s = a3_grad_comm_init(&c, &nccl_ops, pieces, n_pieces, bucket_bytes);
  if (s == A3_OK) s = setup_local(c, comm, be, timeout_s);
  s = agree(comm, s, "setting up the NCCL gradient sum");
  if (s == A3_OK) s = join_comm(c, comm);
  s = agree(comm, s, "creating the NCCL communicator");
  if (s != A3_OK) {
    if (c && c->impl) abort_comm((nccl_impl *)c->impl); // a peer failed: no orderly teardown
    a3_grad_comm_free(c);
    return s;
  }
  *out = c;
  return A3_OK;
}
