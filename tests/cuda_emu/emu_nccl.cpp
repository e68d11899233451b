// The CUDA emulator's NCCL (tests/cuda_emu/README.md).
//
// A communicator is found by its unique id: each rank writes its rank in
// MPI_COMM_WORLD to a file of a directory named after the id, in TMPDIR, and
// waits for the others' (so groups of any shape form without a collective
// over WORLD: the emulator is for the ranks of one host); the group then
// makes an MPI communicator of its own (MPI_Comm_create_group). An
// ncclAllReduce is queued on its stream like any device work; once what it
// waits for has run, it starts an MPI_Iallreduce of a copy of its input,
// and its stream stays held until that has finished, as a GPU's stream
// stays in the NCCL kernel until the peers come. MPI progresses it whenever
// the rank is inside any MPI call (a barrier, say, or a wait for another
// sum), not only while its host waits for this one. So a peer that never
// comes leaves the sum in flight: a host wait for it hangs, and a query
// answers cudaErrorNotReady, which is what a watchdog must catch. A
// communicator finalized or aborted drops what is still queued (unlike
// NCCL's finalize, which flushes it) and abandons a sum in flight. A
// non-blocking communicator's calls still answer ncclInProgress for a poll
// or two (answer()).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include "nccl.h"

#include <errno.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

struct emu_nccl_comm {
  int nranks, rank, tag;
  int blocking;
  int in_progress;        // non-blocking: polls that still answer ncclInProgress
  bool gone;              // destroyed or aborted: its queued collectives do nothing
  ncclResult_t async;     // a queued collective's failure (ncclCommGetAsyncError)
  int in_flight;          // sums started and not finished
  std::vector<int> world; // each group rank's rank in MPI_COMM_WORLD
  MPI_Comm mpi;           // the group's own (MPI_COMM_NULL until it met)
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

void progress_sums();

// Every group rank's world rank, waiting up to two minutes for the others
// (and meanwhile moving this rank's sums in flight on: a peer may still
// wait for its part of the last one).
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
    progress_sums();
    const struct timespec ms = {0, 1000000};
    nanosleep(&ms, NULL);
  }
  return false;
}

// The group's MPI communicator, its ranks in group-rank order.
bool make_group_comm(emu_nccl_comm *c) {
  MPI_Group world_group, group;
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  int rc = MPI_Group_incl(world_group, c->nranks, c->world.data(), &group);
  if (rc == MPI_SUCCESS) {
    rc = MPI_Comm_create_group(MPI_COMM_WORLD, group, c->tag, &c->mpi);
    MPI_Group_free(&group);
  }
  MPI_Group_free(&world_group);
  return rc == MPI_SUCCESS;
}

// A communicator gone stays allocated until exit: collectives still queued
// on a stream (behind a stall, after an abort) hold it. Its MPI communicator
// is freed only by a clean destroy with no sum of this rank in flight: after
// an abort a peer's sum may still be in flight on it (MPI cannot cancel one).
void leave(emu_nccl_comm *c, bool aborted) {
  static std::vector<std::unique_ptr<emu_nccl_comm>> gone;
  unlink(rank_file(c->dir, c->rank).c_str());
  rmdir(c->dir.c_str()); // the last one out removes it
  if (!aborted && c->mpi != MPI_COMM_NULL && c->in_flight == 0) MPI_Comm_free(&c->mpi);
  c->gone = true;
  gone.emplace_back(c);
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
  c->mpi = MPI_COMM_NULL;
  c->nranks = nranks;
  c->rank = rank;
  const uint64_t h = id_hash(id);
  c->tag = 20000 + (int)(h % 10000);
  const char *tmp = getenv("TMPDIR");
  char name[64];
  snprintf(name, sizeof name, "/a3fta-emu-nccl-%016llx", (unsigned long long)h);
  c->dir = std::string(tmp && *tmp ? tmp : "/tmp") + name;
  if (!meet(c) || !make_group_comm(c)) {
    leave(c, true);
    return ncclSystemError;
  }
  *comm = c;
  c->blocking = !config || config->blocking;
  return answer(c);
}

namespace {

// One sum in flight: MPI reads and writes buffers of its own, so that an
// abandoned sum never touches device memory freed since.
struct sum_in_flight {
  std::vector<float> sum; // the input, summed in place
  std::vector<MPI_Request> requests;
};

// Every sum started and not finished, abandoned ones too (their communicator
// aborted, or their stream's work dropped after a kernel failed): MPI may
// still write into them, so they live here, not in their stream's item.
std::vector<std::shared_ptr<sum_in_flight>> &live_sums() {
  static std::vector<std::shared_ptr<sum_in_flight>> sums;
  return sums;
}

// Lets MPI move every live sum on (a finished request becomes
// MPI_REQUEST_NULL, which its own later test sees as done).
void progress_sums() {
  for (const std::shared_ptr<sum_in_flight> &f : live_sums()) {
    int done = 0;
    MPI_Testall((int)f->requests.size(), f->requests.data(), &done, MPI_STATUSES_IGNORE);
  }
}

// Starts the sum of send's count floats over the group, in pieces MPI's
// int counts can hold.
void start_sum(const std::shared_ptr<sum_in_flight> &f, const float *send, size_t count,
               emu_nccl_comm *c) {
  enum { PIECE = 1 << 28 };
  f->sum.assign(send, send + count);
  for (size_t at = 0; at < count; at += PIECE) {
    const int k = (int)(count - at < (size_t)PIECE ? count - at : (size_t)PIECE);
    MPI_Request r;
    if (MPI_Iallreduce(MPI_IN_PLACE, f->sum.data() + at, k, MPI_FLOAT, MPI_SUM, c->mpi, &r) !=
        MPI_SUCCESS) {
      if (c->async == ncclSuccess) c->async = ncclSystemError;
      break;
    }
    f->requests.push_back(r);
  }
  if (f->requests.empty()) return;
  c->in_flight++;
  live_sums().push_back(f);
}

// True once the sum is in recv (or abandoned, its communicator gone).
bool sum_finished(const std::shared_ptr<sum_in_flight> &f, float *recv, ncclRedOp_t op,
                  emu_nccl_comm *c) {
  if (f->requests.empty()) return true; // never started: gone first, or failed
  if (c->gone) return true;             // abandoned: it stays in live_sums()
  int done = 0;
  if (MPI_Testall((int)f->requests.size(), f->requests.data(), &done, MPI_STATUSES_IGNORE) !=
      MPI_SUCCESS) {
    if (c->async == ncclSuccess) c->async = ncclSystemError;
    done = 1;
  }
  if (!done) return false;
  c->in_flight--;
  std::vector<std::shared_ptr<sum_in_flight>> &live = live_sums();
  live.erase(std::find(live.begin(), live.end(), f));
  if (op == ncclAvg)
    for (float &x : f->sum) x /= (float)c->nranks;
  memcpy(recv, f->sum.data(), f->sum.size() * sizeof(float));
  return true;
}

} // namespace

// Queued on the stream like any device work and started at once if nothing
// holds it; the stream then stays held until every peer has summed.
ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t c, cudaStream_t stream) {
  if (!c) return ncclInvalidArgument;
  if (type != ncclFloat || (op != ncclSum && op != ncclAvg)) return ncclInvalidArgument;
  if (!emu_is_device_pointer(send) || !emu_is_device_pointer(recv)) {
    fprintf(stderr, "cuda emulator: ncclAllReduce's buffers (%p, %p) are not device memory\n", send,
            recv);
    return ncclInvalidArgument;
  }
  std::shared_ptr<sum_in_flight> f = std::make_shared<sum_in_flight>();
  emu_enqueue_polled(
      stream,
      [=] {
        if (!c->gone) start_sum(f, (const float *)send, count, c);
      },
      [=] { return sum_finished(f, (float *)recv, op, c); });
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
  leave(c, false);
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t c) {
  if (!c) return ncclInvalidArgument;
  leave(c, true);
  return ncclSuccess;
}

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
