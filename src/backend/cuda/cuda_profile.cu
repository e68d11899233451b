// The CUDA backend's clock for the per-op timers (backend/op_profile.h,
// A3FTA_PROFILE=1): a pair of events around each op on the backend's stream,
// so the ops run as they would, without a host wait between them. A pair's
// time is read once the stream has passed it: at the backend's synchronize
// (the trainer's and the benchmark's waits), or when every pair is in use.
// The times are the stream's: an op's kernels, and any gap before them while
// the host was still launching. A failure of the profile's own event calls
// drops that call from the profile and leaves no error behind for the ops.
#include "cuda_internal.h"

extern "C" {
#include "backend/op_profile.h"
}

#include <stdlib.h>

enum { PAIRS = 4096 };

struct timed_call {
  cudaEvent_t start, stop;
  int row; // -1: not counted
  double gflop;
};

// One backend's pairs (its device's events), used from its host thread.
struct cu_profile_pool {
  timed_call call[PAIRS];
  int created, used;
};

namespace {

// Forgets a failed profile call's error: the ops' checks must not see it.
void drop_error(void) { (void)cudaGetLastError(); }

cu_profile_pool *pool_of(const a3_backend *be) {
  cuda_state *st = cu_state(be);
  if (!st->profile) st->profile = (cu_profile_pool *)calloc(1, sizeof *st->profile);
  return st->profile;
}

// Adds every pair in use to its row, once its stop event has completed.
void settle_pairs(const a3_backend *be) {
  cu_profile_pool *pool = cu_state(be)->profile;
  if (!pool) return;
  for (int i = 0; i < pool->used; i++) {
    float ms = 0.0f;
    const timed_call *c = &pool->call[i];
    if (c->row < 0) continue;
    if (cudaEventSynchronize(c->stop) == cudaSuccess &&
        cudaEventElapsedTime(&ms, c->start, c->stop) == cudaSuccess)
      a3_op_profile_add(c->row, 1e-3 * (double)ms, c->gflop);
    else
      drop_error();
  }
  pool->used = 0;
}

// The next free pair (settling the pool first when it is full); NULL when
// its events cannot be made.
timed_call *next_pair(const a3_backend *be) {
  cu_profile_pool *pool = pool_of(be);
  if (!pool) return NULL;
  if (pool->used == PAIRS) settle_pairs(be);
  timed_call *c = &pool->call[pool->used];
  if (pool->used == pool->created) {
    if (cudaEventCreate(&c->start) != cudaSuccess) return drop_error(), (timed_call *)NULL;
    if (cudaEventCreate(&c->stop) != cudaSuccess) {
      drop_error();
      cudaEventDestroy(c->start); // unchecked: the pair is given up either way
      return NULL;
    }
    pool->created++;
  }
  pool->used++;
  c->row = -1; // until its stop is recorded
  return c;
}

uint64_t events_start(const a3_backend *be) {
  timed_call *c = next_pair(be);
  if (!c) return UINT64_MAX;
  if (cudaEventRecord(c->start, cu_stream(be)) != cudaSuccess) return drop_error(), UINT64_MAX;
  return (uint64_t)(c - cu_state(be)->profile->call);
}

void events_stop(const a3_backend *be, uint64_t mark, int row, double gflop) {
  if (mark == UINT64_MAX) return; // no events: this call is not counted
  timed_call *c = &cu_state(be)->profile->call[mark];
  if (cudaEventRecord(c->stop, cu_stream(be)) != cudaSuccess) return drop_error();
  c->row = row;
  c->gflop = gflop;
}

const a3_op_clock event_clock = {"CUDA backend ops, GPU time between events on its stream",
                                 events_start, events_stop, settle_pairs};

} // namespace

// One wrapped table serves every CUDA backend: a pool is per backend.
const a3_backend_ops *cu_profiled_ops(const a3_backend_ops *real) {
  static const a3_backend_ops *wrapped = NULL;
  if (!a3_op_profile_requested()) return real;
  if (!wrapped) wrapped = a3_op_profile_wrap(real, &event_clock);
  return wrapped ? wrapped : real;
}

void cu_profile_free(cuda_state *st) {
  cu_profile_pool *pool = st->profile;
  if (!pool) return;
  for (int i = 0; i < pool->created; i++) {
    cudaEventDestroy(pool->call[i].start);
    cudaEventDestroy(pool->call[i].stop);
  }
  free(pool);
  st->profile = NULL;
}
