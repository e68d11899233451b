// Per-op timers for any backend (A3FTA_PROFILE=1; benchmarks only).
//
// a3_op_profile_wrap gives a copy of a backend's op table whose compute ops
// are wrapped: each call is timed by a clock of the backend's own and added
// to a row keyed by the op and, for convolutions, GroupNorm, linears and
// attention, the shape. At exit the rows go to stderr, largest total first,
// with calls, total ms, ms per call, share of the profiled time and, for
// convolutions, linears and attention, GFLOP/s (2 FLOPs per multiply-add; a
// backward counts as many MACs as it computes: dinp and dweight each one
// forward's worth, attention 2x). Ops not wrapped (memory, copies, the
// optimizer, and any added to the table later) run unchanged.
#ifndef A3FTA_BACKEND_OP_PROFILE_H
#define A3FTA_BACKEND_OP_PROFILE_H

#include "a3fta/backend.h"

#include <stdint.h>

// How a backend times its ops. The CPU's clocks time each call on the host;
// a device clock may learn a call's time only later (GPU events), and then
// hands it in through a3_op_profile_add when `settle` is called: after every
// synchronize, and before the report.
typedef struct {
  const char *what; // the report's title: "CPU backend ops, wall time", ...
  // A mark before the call; `stop` gets it back after the call, with the
  // call's row and GFLOP count.
  uint64_t (*start)(const a3_backend *be);
  void (*stop)(const a3_backend *be, uint64_t mark, int row, double gflop);
  void (*settle)(const a3_backend *be); // NULL: every time is in at stop
} a3_op_clock;

// The wrapped copy of `real`, timed by `clock` (both must outlive it); NULL
// when out of memory. The report is printed at exit.
const a3_backend_ops *a3_op_profile_wrap(const a3_backend_ops *real, const a3_op_clock *clock);
// The table `ops` wraps, or `ops` itself when it is not a wrapped table.
const a3_backend_ops *a3_op_profile_real(const a3_backend_ops *ops);
// Adds one call of `seconds` (and `gflop`) to row `row` (a clock's stop or settle).
void a3_op_profile_add(int row, double seconds, double gflop);
// Forgets every call counted so far (the rows stay, with no calls), so that
// the report shows only what follows, such as a benchmark's timed steps
// without its warm-up (first-call plan searches and module loads). A device
// clock's calls must be settled first: synchronize the backend before.
void a3_op_profile_reset(void);
// A3FTA_PROFILE's value when profiling is asked for (set, not empty, not "0"), else NULL.
const char *a3_op_profile_requested(void);

#endif
