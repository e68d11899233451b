// Parts of the sweep engine shared by src/dist/sweep_*.c: the scheduler (an
// MPI window of counters on world rank 0) and the stop flag's signal handlers.
// Not part of the public API.
#ifndef A3FTA_DIST_SWEEP_INTERNAL_H
#define A3FTA_DIST_SWEEP_INTERNAL_H

#include "a3fta/sweep.h"

typedef struct a3_sweep_sched a3_sweep_sched;

// Counts of this invocation over all groups, as the window has them.
typedef struct {
  int64_t started, done, failed;
} a3_sweep_counts;

// Collective over world. pending (n_pending point indices, identical on every
// rank) is copied.
a3_status a3_sweep_sched_create(MPI_Comm world, MPI_Comm group, int group_index, int n_groups,
                                a3_schedule kind, const int64_t *pending, int64_t n_pending,
                                a3_sweep_sched **out) A3_WARN_UNUSED;
// Collective over the group: the next point for it, or -1 when none is left
// or a stop was requested (on any rank of any group, or by a3_sweep_sched_stop).
a3_status a3_sweep_sched_next(a3_sweep_sched *s, int64_t *point) A3_WARN_UNUSED;
// Leader only: counts a finished point and returns the counts after it.
a3_status a3_sweep_sched_report(a3_sweep_sched *s, bool failed,
                                a3_sweep_counts *now) A3_WARN_UNUSED;
// Leader only: makes every group stop taking points (after an error of its own).
void a3_sweep_sched_stop(a3_sweep_sched *s);
// Collective over world: whether a stop was requested anywhere; frees s.
a3_status a3_sweep_sched_finish(a3_sweep_sched *s, bool *stop_requested) A3_WARN_UNUSED;

// SIGTERM and SIGUSR1 raise the stop flag until restored.
void a3_sweep_signals_install(void);
void a3_sweep_signals_restore(void);
// The signal that raised the flag (0: none, or a3_sweep_request_stop()).
int a3_sweep_stop_signal(void);

#endif
