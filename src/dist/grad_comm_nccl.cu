// The gradient sum over NCCL (a3fta/comm.h, "NCCL" and "Failures"): each
// bucket packed on a dedicated comm stream, gated by an event on the
// backend's compute stream, summed in place with ncclAllReduce into its slot
// of one device buffer; a non-blocking communicator and a watchdog on every
// wait.
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

struct nccl_impl {
  const a3_backend *be; // its stream is the compute stream
  int device, rank, size;
  char host[MPI_MAX_PROCESSOR_NAME + 1];
  double timeout_s;
  MPI_Comm mpi;  // a duplicate of the group's: agreeing on failures
  ncclComm_t nc; // NULL until created; freed by ncclCommAbort when aborted
  bool aborted;  // after ncclCommAbort
  cudaStream_t stream;
  cudaEvent_t ready;  // recorded on the compute stream as each bucket starts
  cudaEvent_t done;   // the step's last unpack
  cudaEvent_t *sent;  // (n_buckets) bucket k's sum has finished (names a stuck bucket)
  float *packed;      // device (b.total): bucket k at packed + b.begin[k]
  ncclResult_t async; // the last asynchronous NCCL state seen
  cudaError_t cuda;   // the CUDA error a poll met
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
  const char *last = im->nc ? ncclGetLastError(im->nc) : NULL;
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
}

// ---------------------------------------------------------------- setup

// Everything local: the backend, the device, the stream, events and buffer.
a3_status setup_local(a3_grad_comm *c, MPI_Comm comm, const a3_backend *be, double timeout_s) {
  nccl_impl *im = NULL;
  A3_TRY(A3_ALLOC(im, 1));
  c->impl = im;
  im->mpi = MPI_COMM_NULL;
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
  A3_TRY(A3_ALLOC(im->sent, (size_t)c->b.n_buckets + 1));
  for (int k = 0; k < c->b.n_buckets; k++)
    CUDA_TRY(im, cudaEventCreateWithFlags(&im->sent[k], cudaEventDisableTiming), "cudaEventCreate");
  CUDA_TRY(im, cudaMalloc((void **)&im->packed, ((size_t)c->b.total + 1) * sizeof(float)),
           "allocating the NCCL gradient buffer");
  return A3_OK;
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

// The communicator: group rank 0's NCCL id, broadcast; every rank joins.
a3_status init_comm(nccl_impl *im, MPI_Comm comm) {
  A3_MPI_TRY(MPI_Comm_dup(comm, &im->mpi), "MPI_Comm_dup for the NCCL gradient sum");
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
  A3_MPI_TRY(MPI_Bcast(&msg, (int)sizeof msg, MPI_BYTE, 0, im->mpi), "broadcasting the NCCL id");
  if (!msg.ok)
    return s != A3_OK
               ? s
               : A3_FAIL(A3_ERR_CUDA, "rank 0 of the group found no NCCL id (see its message)");
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0; // every call returns; the watchdog decides how long to wait
  const ncclResult_t r = ncclCommInitRankConfig(&im->nc, im->size, msg.id, im->rank, &config);
  s = nccl_call(im, r, "ncclCommInitRankConfig", __FILE__, __LINE__);
  if (s != A3_OK) abort_comm(im);
  return s;
}

// ---------------------------------------------------------------- the step

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
  const double grace = a3_world_abort_grace_s();
  MPI_Request pending;
  if (!a3_grad_comm_peers_arrive(im->mpi, grace, &pending)) {
    a3_log(A3_LOG_ERROR,
           "rank %d on %s: the other ranks of its group did not fail within %.0f s "
           "(A3FTA_ABORT_GRACE_S); aborting the MPI job",
           im->rank, im->host, grace);
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  return s;
}

a3_status nccl_start(a3_grad_comm *c, int k, const float *grads) {
  nccl_impl *im = (nccl_impl *)c->impl;
  CUDA_TRY(im, cudaEventRecord(im->ready, compute_stream(im)), "recording a bucket's event");
  CUDA_TRY(im, cudaStreamWaitEvent(im->stream, im->ready, 0), "gating the NCCL stream");
  float *slot = im->packed + c->b.begin[k], *to = slot;
  for (int j = c->b.chunk_begin[k]; j < c->b.chunk_begin[k + 1]; j++) {
    const a3_grad_chunk *ch = &c->b.chunk[j];
    CUDA_TRY(im,
             cudaMemcpyAsync(to, grads + ch->offset, (size_t)ch->count * sizeof(float),
                             cudaMemcpyDeviceToDevice, im->stream),
             "packing a gradient bucket");
    to += ch->count;
  }
  const size_t count = (size_t)(c->b.begin[k + 1] - c->b.begin[k]);
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
  ncclResult_t st = ncclSuccess;
  const ncclResult_t r = ncclCommGetAsyncError(im->nc, &st);
  im->async = r != ncclSuccess ? r : st;
  return im->async == ncclSuccess || im->async == ncclInProgress ? 0 : -1;
}

a3_status nccl_wait_all(a3_grad_comm *c, float *grads) {
  nccl_impl *im = (nccl_impl *)c->impl;
  for (int k = 0; k < c->b.n_buckets; k++) {
    const float *from = im->packed + c->b.begin[k];
    for (int j = c->b.chunk_begin[k]; j < c->b.chunk_begin[k + 1]; j++) {
      const a3_grad_chunk *ch = &c->b.chunk[j];
      CUDA_TRY(im,
               cudaMemcpyAsync(grads + ch->offset, from, (size_t)ch->count * sizeof(float),
                               cudaMemcpyDeviceToDevice, im->stream),
               "unpacking a gradient bucket");
      from += ch->count;
    }
  }
  CUDA_TRY(im, cudaEventRecord(im->done, im->stream), "recording the sums' event");
  im->cuda = cudaSuccess;
  im->async = ncclSuccess;
  const a3_watch_result w = a3_grad_comm_watch(step_done, im, im->timeout_s);
  if (w != A3_WATCH_DONE) return step_failed(c, -1, w);
  // The compute stream's next work (clipping, the optimizer) comes after the sums.
  CUDA_TRY(im, cudaStreamWaitEvent(compute_stream(im), im->done, 0), "ordering after the sums");
  return A3_OK;
}

// ---------------------------------------------------------------- teardown

void nccl_destroy(a3_grad_comm *c, bool in_flight) {
  nccl_impl *im = (nccl_impl *)c->impl;
  if (!im) return;
  if (im->nc && !im->aborted) {
    if (in_flight) {
      abort_comm(im);
    } else { // flush and free; abort if the other ranks do not take part in time
      const double limit = im->timeout_s;
      im->timeout_s = a3_world_abort_grace_s() < limit ? a3_world_abort_grace_s() : limit;
      // (Not through nccl_call: the caller may be returning an error of its own.)
      const a3_watch_result w = settle(im, ncclCommFinalize(im->nc));
      if (w == A3_WATCH_DONE) {
        ncclCommDestroy(im->nc);
      } else {
        a3_warn("rank %d on %s: ncclCommFinalize %s; aborting the communicator", im->rank, im->host,
                w == A3_WATCH_TIMEOUT ? "timed out" : ncclGetErrorString(im->async));
        abort_comm(im);
      }
    }
  }
  if (in_flight || im->aborted) { // queued work may still use them: keep the device buffers
    a3_debug("NCCL gradient sum freed %s; keeping its device buffers",
             in_flight ? "with sums in flight" : "after an abort");
  } else {
    if (im->sent)
      for (int k = 0; k < c->b.n_buckets; k++)
        if (im->sent[k]) cudaEventDestroy(im->sent[k]);
    if (im->ready) cudaEventDestroy(im->ready);
    if (im->done) cudaEventDestroy(im->done);
    if (im->stream) cudaStreamDestroy(im->stream);
    if (im->packed) cudaFree(im->packed);
  }
  free(im->sent);
  if (im->mpi != MPI_COMM_NULL) MPI_Comm_free(&im->mpi);
  free(im);
  c->impl = NULL;
}

const a3_grad_comm_ops nccl_ops = {"nccl", nccl_start, nccl_progress, nccl_wait_all, nccl_destroy};

} // namespace

extern "C" a3_status a3_grad_comm_create_nccl(MPI_Comm comm, const a3_backend *be,
                                              const a3_grad_piece *pieces, int n_pieces,
                                              size_t bucket_bytes, double timeout_s,
                                              a3_grad_comm **out) {
  *out = NULL;
  a3_grad_comm *c = NULL;
  // Local setup first, agreed on, so that no rank waits in NCCL's collective
  // creation for one that will never come; then the creation, agreed on.
  a3_status s = a3_grad_comm_init(&c, &nccl_ops, pieces, n_pieces, bucket_bytes);
  if (s == A3_OK) s = setup_local(c, comm, be, timeout_s);
  s = agree(comm, s, "setting up the NCCL gradient sum");
  if (s == A3_OK) s = init_comm((nccl_impl *)c->impl, comm);
  s = agree(comm, s, "creating the NCCL communicator");
  if (s != A3_OK) {
    if (c && c->impl) abort_comm((nccl_impl *)c->impl); // a peer failed: no orderly teardown
    a3_grad_comm_free(c);
    return s;
  }
  *out = c;
  return A3_OK;
}
