// The CUDA backend's clock for the per-op timers (backend/op_profile.h,
// A3FTA_PROFILE=1): a pair of events around each op on the backend's stream,
// so the ops run as they would, without a host wait between them. A pair's
// time is read once the stream has passed it: at the backend's synchronize
// (the trainer's and the benchmark's waits), or when every pair is in use.
// The times are the stream's: an op's kernels, and any gap before them while
// the host was still launching.
#include "cuda_internal.h"

extern "C" {
#include "backend/op_profile.h"
}

namespace {

enum { PAIRS = 4096 };

struct timed_call {
  cudaEvent_t start, stop;
  int row;
  double gflop;
};

// One pool for the process, used from one host thread (the benchmark's and
// the trainer's ops all run on the main thread).
struct event_pool {
  timed_call call[PAIRS];
  int created, used;
};
event_pool pool;

// Adds every pair in use to its row, once its stop event has completed (a
// pair whose events failed is not counted).
void settle_pairs(const a3_backend *be) {
  (void)be;
  for (int i = 0; i < pool.used; i++) {
    float ms = 0.0f;
    const timed_call *c = &pool.call[i];
    if (cudaEventSynchronize(c->stop) == cudaSuccess &&
        cudaEventElapsedTime(&ms, c->start, c->stop) == cudaSuccess)
      a3_op_profile_add(c->row, 1e-3 * (double)ms, c->gflop);
  }
  pool.used = 0;
}

// The next free pair (settling the pool first when it is full); NULL when
// its events cannot be made.
timed_call *next_pair(const a3_backend *be) {
  if (pool.used == PAIRS) settle_pairs(be);
  timed_call *c = &pool.call[pool.used];
  if (pool.used == pool.created) {
    if (cudaEventCreate(&c->start) != cudaSuccess) return NULL;
    if (cudaEventCreate(&c->stop) != cudaSuccess) {
      cudaEventDestroy(c->start); // unchecked: the pair is given up either way
      return NULL;
    }
    pool.created++;
  }
  pool.used++;
  return c;
}

uint64_t events_start(const a3_backend *be) {
  timed_call *c = next_pair(be);
  if (!c || cudaEventRecord(c->start, cu_stream(be)) != cudaSuccess) return UINT64_MAX;
  return (uint64_t)(c - pool.call);
}

void events_stop(const a3_backend *be, uint64_t mark, int row, double gflop) {
  if (mark == UINT64_MAX) return; // no events: this call is not counted
  timed_call *c = &pool.call[mark];
  c->row = row;
  c->gflop = gflop;
  if (cudaEventRecord(c->stop, cu_stream(be)) != cudaSuccess) c->row = -1;
}

const a3_op_clock event_clock = {"CUDA backend ops, GPU time between events on its stream",
                                 events_start, events_stop, settle_pairs};

} // namespace

const a3_backend_ops *cu_profiled_ops(const a3_backend_ops *real) {
  if (!a3_op_profile_requested()) return real;
  const a3_backend_ops *ops = a3_op_profile_wrap(real, &event_clock);
  return ops ? ops : real;
}
