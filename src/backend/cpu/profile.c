// The CPU backend's clocks for the per-op timers (backend/op_profile.h):
// A3FTA_PROFILE=1 times each call's wall time; A3FTA_PROFILE=cpu the calling
// thread's CPU time instead: with OMP_NUM_THREADS=1 that is each op's work,
// unaffected by other processes on a busy machine.
#define _POSIX_C_SOURCE 200809L
#include "backend/op_profile.h"
#include "cpu_ops.h"

#include <string.h>
#include <time.h>

static clockid_t host_clock = CLOCK_MONOTONIC; // A3FTA_PROFILE=cpu: CLOCK_THREAD_CPUTIME_ID

static uint64_t host_ns(void) {
  struct timespec t;
  clock_gettime(host_clock, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static uint64_t host_start(const a3_backend *be) {
  (void)be;
  return host_ns();
}
static void host_stop(const a3_backend *be, uint64_t mark, int row, double gflop) {
  (void)be;
  a3_op_profile_add(row, 1e-9 * (double)(host_ns() - mark), gflop);
}

static const a3_op_clock wall_clock = {"CPU backend ops, wall time", host_start, host_stop, NULL};
static const a3_op_clock cpu_time_clock = {"CPU backend ops, CPU time of the calling thread",
                                           host_start, host_stop, NULL};

// Called once, from a3_backend_cpu's setup.
const a3_backend *cpu_profiled(const a3_backend *real) {
  static a3_backend profiled;
  const char *e = a3_op_profile_requested();
  if (!e) return real;
  const int cpu_time = strcmp(e, "cpu") == 0;
  if (cpu_time) host_clock = CLOCK_THREAD_CPUTIME_ID;
  const a3_backend_ops *ops =
      a3_op_profile_wrap(real->ops, cpu_time ? &cpu_time_clock : &wall_clock);
  if (!ops) return real;
  profiled = *real;
  profiled.ops = ops;
  return &profiled;
}
