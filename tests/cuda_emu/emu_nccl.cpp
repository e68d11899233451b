// The CUDA emulator's NCCL (tests/cuda_emu/README.md).
//
// A communicator is found by its unique id: each rank writes its rank in
// MPI_COMM_WORLD to a file of a directory named after the id, in TMPDIR, and
// waits for the others' (so groups of any shape form without a collective
// over WORLD: the emulator is for the ranks of one host). ncclAllReduce then
// sends every rank's buffer to group rank 0, which adds them in rank order
// (1 and 2 ranks: bitwise a + b, as NCCL's) and sends the sum back, on
// MPI_COMM_WORLD with a tag of the communicator's own, once the work its
// stream waits for has run (behind a stall it stays queued; a communicator
// finalized or aborted drops what is still queued, unlike NCCL's finalize,
// which flushes it). A non-blocking communicator's calls still answer
// ncclInProgress for a poll or two (answer()).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include "nccl.h"

#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

struct emu_nccl_comm {
  int nranks, rank, tag;
  int blocking;
  int in_progress;        // non-blocking: polls that still answer ncclInProgress
  bool gone;              // destroyed or aborted: its queued collectives do nothing
  ncclResult_t async;     // a queued collective's failure (ncclCommGetAsyncError)
  std::vector<int> world; // each group rank's rank in MPI_COMM_WORLD
  std::string dir;
};

namespace {

uint64_t id_hash(const ncclUniqueId &id) {
  uint64_t h = 1469598103934665603ull; // FNV-1a
  for (int i = 0; i < NCCL_UNIQUE_ID_BYTES; i++)
    h = (h ^ (unsigned char)id.internal[i]) * 1099511628211ull;
  return h;
}

std::string rank_file(const std::string &dir, int rank) { return dir + "/" + std::to_string(rank); }

bool write_rank(const std::string &dir, int rank, int world_rank) {
  const std::string tmp = rank_file(dir, rank) + ".tmp";
  FILE *f = fopen(tmp.c_str(), "w");
  if (!f) return false;
  const bool ok = fprintf(f, "%d\n", world_rank) > 0;
  return fclose(f) == 0 && ok && rename(tmp.c_str(), rank_file(dir, rank).c_str()) == 0;
}

bool read_rank(const std::string &dir, int rank, int *world_rank) {
  FILE *f = fopen(rank_file(dir, rank).c_str(), "r");
  if (!f) return false;
  const bool ok = fscanf(f, "%d", world_rank) == 1;
  fclose(f);
  return ok;
}

// Every group rank's world rank, waiting up to two minutes for the others.
bool meet(emu_nccl_comm *c) {
  int me = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  if (mkdir(c->dir.c_str(), 0700) != 0 && errno != EEXIST) return false;
  if (!write_rank(c->dir, c->rank, me)) return false;
  c->world.assign((size_t)c->nranks, -1);
  for (int waited_ms = 0; waited_ms < 120000; waited_ms++) {
    int missing = 0;
    for (int r = 0; r < c->nranks; r++)
      if (c->world[(size_t)r] < 0 && !read_rank(c->dir, r, &c->world[(size_t)r])) missing++;
    if (!missing) return true;
    const struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  return false;
}

// A communicator gone stays allocated until exit: collectives still queued
// on a stream (behind a stall, after an abort) hold it.
void leave(emu_nccl_comm *c) {
  static std::vector<std::unique_ptr<emu_nccl_comm>> gone;
  unlink(rank_file(c->dir, c->rank).c_str());
  rmdir(c->dir.c_str()); // the last one out removes it
  c->gone = true;
  gone.emplace_back(c);
}

// n floats from / to a group rank, in messages MPI's int counts can hold.
enum { CHUNK = 1 << 28 };
int transfer(float *buf, size_t n, const emu_nccl_comm *c, int peer, bool send) {
  for (size_t at = 0; at < n; at += CHUNK) {
    const int k = (int)(n - at < (size_t)CHUNK ? n - at : (size_t)CHUNK);
    const int rc =
        send ? MPI_Send(buf + at, k, MPI_FLOAT, c->world[(size_t)peer], c->tag, MPI_COMM_WORLD)
             : MPI_Recv(buf + at, k, MPI_FLOAT, c->world[(size_t)peer], c->tag, MPI_COMM_WORLD,
                        MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return rc;
  }
  return MPI_SUCCESS;
}

// A non-blocking communicator's call answers ncclInProgress, and the next
// two polls of ncclCommGetAsyncError too, as a GPU's often do, so that the
// caller's polling path runs. (The work itself is already done.)
ncclResult_t answer(emu_nccl_comm *c) {
  if (c->blocking) return ncclSuccess;
  c->in_progress = 2;
  return ncclInProgress;
}

} // namespace

ncclResult_t ncclGetVersion(int *version) {
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

ncclResult_t ncclGetUniqueId(ncclUniqueId *id) {
  size_t got = 0;
  while (got < sizeof id->internal) {
    const ssize_t n = getrandom(id->internal + got, sizeof id->internal - got, 0);
    if (n <= 0) return ncclSystemError;
    got += (size_t)n;
  }
  return ncclSuccess;
}

ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t *config) {
  *comm = NULL;
  if (nranks < 1 || rank < 0 || rank >= nranks) return ncclInvalidArgument;
  emu_nccl_comm *c = new emu_nccl_comm{};
  c->nranks = nranks;
  c->rank = rank;
  const uint64_t h = id_hash(id);
  c->tag = 20000 + (int)(h % 10000);
  const char *tmp = getenv("TMPDIR");
  char name[64];
  snprintf(name, sizeof name, "/a3fta-emu-nccl-%016llx", (unsigned long long)h);
  c->dir = std::string(tmp && *tmp ? tmp : "/tmp") + name;
  if (!meet(c)) {
    leave(c);
    return ncclSystemError;
  }
  *comm = c;
  c->blocking = !config || config->blocking;
  return answer(c);
}

namespace {

// The sum, at group rank 0, in rank order; every rank gets it back.
ncclResult_t all_reduce(const float *send, float *out, size_t count, ncclRedOp_t op,
                        emu_nccl_comm *c) {
  if (c->rank != 0) {
    if (transfer(const_cast<float *>(send), count, c, 0, true) != MPI_SUCCESS ||
        transfer(out, count, c, 0, false) != MPI_SUCCESS)
      return ncclSystemError;
    return ncclSuccess;
  }
  if (send != out) memmove(out, send, count * sizeof(float));
  std::vector<float> part(count);
  for (int r = 1; r < c->nranks; r++) {
    if (transfer(part.data(), count, c, r, false) != MPI_SUCCESS) return ncclSystemError;
    for (size_t i = 0; i < count; i++) out[i] += part[i];
  }
  if (op == ncclAvg)
    for (size_t i = 0; i < count; i++) out[i] /= (float)c->nranks;
  for (int r = 1; r < c->nranks; r++)
    if (transfer(out, count, c, r, true) != MPI_SUCCESS) return ncclSystemError;
  return ncclSuccess;
}

} // namespace

// Queued on the stream like any device work, then run at once with what it
// waits for: every rank runs its collectives in program order, so the ranks
// meet without a thread of their own. Behind a stall (emu_stall_stream) it
// stays queued, in flight, until a wait runs it or the communicator goes.
ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t c, cudaStream_t stream) {
  if (!c) return ncclInvalidArgument;
  if (type != ncclFloat || (op != ncclSum && op != ncclAvg)) return ncclInvalidArgument;
  if (!emu_is_device_pointer(send) || !emu_is_device_pointer(recv)) {
    fprintf(stderr, "cuda emulator: ncclAllReduce's buffers (%p, %p) are not device memory\n", send,
            recv);
    return ncclInvalidArgument;
  }
  emu_enqueue(stream, [=] {
    if (c->gone) return;
    const ncclResult_t r = all_reduce((const float *)send, (float *)recv, count, op, c);
    if (r != ncclSuccess && c->async == ncclSuccess) c->async = r;
  });
  emu_try_run_stream(stream);
  if (emu_context_error() != cudaSuccess) return ncclUnhandledCudaError;
  return c->async != ncclSuccess ? c->async : answer(c);
}

ncclResult_t ncclCommGetAsyncError(ncclComm_t c, ncclResult_t *state) {
  if (!c) return ncclInvalidArgument;
  *state = c->async != ncclSuccess ? c->async : c->in_progress > 0 ? ncclInProgress : ncclSuccess;
  if (c->in_progress > 0) c->in_progress--;
  return ncclSuccess;
}

ncclResult_t ncclCommFinalize(ncclComm_t c) { return c ? answer(c) : ncclInvalidArgument; }

ncclResult_t ncclCommDestroy(ncclComm_t c) {
  if (!c) return ncclInvalidArgument;
  leave(c);
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t c) { return ncclCommDestroy(c); }

const char *ncclGetErrorString(ncclResult_t r) {
  switch (r) {
  case ncclSuccess: return "no error";
  case ncclUnhandledCudaError: return "unhandled cuda error";
  case ncclSystemError: return "unhandled system error (emulator: rendezvous or MPI failed)";
  case ncclInternalError: return "internal error";
  case ncclInvalidArgument: return "invalid argument";
  case ncclInvalidUsage: return "invalid usage";
  case ncclRemoteError: return "remote process exited or there was a network error";
  case ncclInProgress: return "NCCL operation in progress";
  }
  return "unknown result code";
}

const char *ncclGetLastError(ncclComm_t) { return ""; }
