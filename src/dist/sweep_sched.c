// Sweep ranks: hash agreement, groups, the shared counters that hand out
// points (MPI one-sided, passive target, on world rank 0), and the stop flag.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/dist.h"
#include "dist/sweep_internal.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// ---------------------------------------------------------------- stop flag
static volatile sig_atomic_t stop_flag = 0;
static volatile sig_atomic_t stop_signal = 0;
static struct sigaction old_term, old_usr1;
static int installed = 0;

void a3_sweep_request_stop(void) { stop_flag = 1; }
bool a3_sweep_stop_requested(void) { return stop_flag != 0; }
void a3_sweep_clear_stop(void) {
  stop_flag = 0;
  stop_signal = 0;
}
int a3_sweep_stop_signal(void) { return stop_signal; }

static void on_signal(int sig) {
  stop_signal = sig;
  stop_flag = 1;
}

void a3_sweep_signals_install(void) {
  if (installed) return;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  sigaction(SIGTERM, &sa, &old_term);
  sigaction(SIGUSR1, &sa, &old_usr1);
  installed = 1;
}

void a3_sweep_signals_restore(void) {
  if (!installed) return;
  sigaction(SIGTERM, &old_term, NULL);
  sigaction(SIGUSR1, &old_usr1, NULL);
  installed = 0;
}

// ---------------------------------------------------------------- agreement
a3_status a3_sweep_agree(MPI_Comm world, a3_status local, uint64_t hash) {
  int failed = local != A3_OK, any_failed = 0, rank = 0;
  MPI_Comm_rank(world, &rank);
  A3_MPI_TRY(MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, world), "MPI_Allreduce");
  if (any_failed) {
    // The lowest failing rank is named, so that every rank's message leads there.
    int mine = failed ? rank : INT_MAX, first = INT_MAX;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, world);
    if (failed) return local;
    return A3_FAIL(A3_ERR_CONFIG, "rank %d could not build the sweep (see its error)", first);
  }
  uint64_t v[2] = {hash, ~hash}, r[2] = {0, 0}; // min of ~hash = ~max of hash
  A3_MPI_TRY(MPI_Allreduce(v, r, 2, MPI_UINT64_T, MPI_MIN, world), "MPI_Allreduce");
  const uint64_t lo = r[0], hi = ~r[1];
  if (lo != hi)
    return A3_FAIL(A3_ERR_CONFIG,
                   "ranks disagree on the sweep (hash %016llx on this rank; %016llx..%016llx "
                   "across ranks): same config and a3fta version on every rank?",
                   (unsigned long long)hash, (unsigned long long)lo, (unsigned long long)hi);
  return A3_OK;
}

// ---------------------------------------------------------------- groups
a3_status a3_sweep_split(MPI_Comm world, int ranks_per_run, MPI_Comm *group, int *group_index,
                         int *n_groups) {
  int rank = 0, size = 1;
  MPI_Comm_rank(world, &rank);
  MPI_Comm_size(world, &size);
  *group = MPI_COMM_NULL;
  if (ranks_per_run < 1 || size % ranks_per_run != 0) {
    const int below = size / (ranks_per_run > 0 ? ranks_per_run : 1) * ranks_per_run;
    char hint[96] = "";
    if (below > 0) snprintf(hint, sizeof hint, "%d or ", below);
    return A3_FAIL(A3_ERR_CONFIG,
                   "parallel.ranks_per_run = %d does not divide the %d ranks of the job; start "
                   "a multiple of %d ranks (e.g. %s%d), or change ranks_per_run",
                   ranks_per_run, size, ranks_per_run, hint, below + ranks_per_run);
  }
  *group_index = rank / ranks_per_run;
  *n_groups = size / ranks_per_run;
  A3_MPI_TRY(MPI_Comm_split(world, *group_index, rank, group), "MPI_Comm_split");
  MPI_Comm_set_errhandler(*group, MPI_ERRORS_RETURN);
  return A3_OK;
}

// ---------------------------------------------------------------- scheduler
// Counters in the window of world rank 0. Every access is MPI_Fetch_and_op
// with MPI_SUM (adding 0 reads), so all concurrent accumulates use one
// operation, as the window's default accumulate_ops assumption allows.
enum { SLOT_NEXT, SLOT_STARTED, SLOT_DONE, SLOT_FAILED, SLOT_STOP, N_SLOTS };

struct a3_sweep_sched {
  MPI_Comm world, group;
  int group_rank, group_index, n_groups;
  a3_schedule kind;
  int64_t *pending, n_pending;
  int64_t next_static; // static: how many of this group's points were taken
  MPI_Win win;
  int64_t *counters;  // the window memory (N_SLOTS on rank 0, none elsewhere)
  int published_stop; // this leader has raised the window's stop counter
  int stop_seen;      // this leader saw the stop counter raised
};

// One passive-target epoch: old[i] = slot[i], slot[i] += add[i].
static a3_status fetch_add(a3_sweep_sched *s, int n, const int *slots, const int64_t *add,
                           int64_t *old) {
  A3_MPI_TRY(MPI_Win_lock(MPI_LOCK_SHARED, 0, 0, s->win), "MPI_Win_lock");
  for (int i = 0; i < n; i++) {
    int rc = MPI_Fetch_and_op(&add[i], &old[i], MPI_INT64_T, 0, slots[i], MPI_SUM, s->win);
    if (rc != MPI_SUCCESS) {
      MPI_Win_unlock(0, s->win);
      return a3_mpi_failure(rc, "MPI_Fetch_and_op", __FILE__, __LINE__);
    }
  }
  A3_MPI_TRY(MPI_Win_unlock(0, s->win), "MPI_Win_unlock");
  return A3_OK;
}

a3_status a3_sweep_sched_create(MPI_Comm world, MPI_Comm group, int group_index, int n_groups,
                                a3_schedule kind, const int64_t *pending, int64_t n_pending,
                                a3_sweep_sched **out) {
  *out = NULL;
  a3_sweep_sched *s = NULL;
  A3_TRY(A3_ALLOC(s, 1));
  s->world = world;
  s->group = group;
  s->group_index = group_index;
  s->n_groups = n_groups;
  s->kind = kind;
  s->win = MPI_WIN_NULL;
  MPI_Comm_rank(group, &s->group_rank);
  a3_status st =
      n_pending ? a3_alloc((void **)&s->pending, (size_t)n_pending, sizeof(int64_t)) : A3_OK;
  if (st == A3_OK && n_pending) memcpy(s->pending, pending, (size_t)n_pending * sizeof(int64_t));
  s->n_pending = n_pending;
  int rank = 0;
  MPI_Comm_rank(world, &rank);
  // Collective: every rank joins even if its allocation above failed.
  const MPI_Aint bytes = rank == 0 ? (MPI_Aint)(N_SLOTS * sizeof(int64_t)) : 0;
  int rc = MPI_Win_allocate(bytes, sizeof(int64_t), MPI_INFO_NULL, world, &s->counters, &s->win);
  if (rc != MPI_SUCCESS && st == A3_OK)
    st = a3_mpi_failure(rc, "MPI_Win_allocate", __FILE__, __LINE__);
  if (rc == MPI_SUCCESS) {
    MPI_Win_set_errhandler(s->win, MPI_ERRORS_RETURN);
    if (rank == 0) {
      MPI_Win_lock(MPI_LOCK_EXCLUSIVE, 0, 0, s->win);
      memset(s->counters, 0, N_SLOTS * sizeof(int64_t));
      MPI_Win_unlock(0, s->win);
    }
  }
  MPI_Barrier(world); // the counters are zero before anyone takes a point
  int bad = st != A3_OK, any = 0;
  MPI_Allreduce(&bad, &any, 1, MPI_INT, MPI_MAX, world);
  if (any) {
    if (s->win != MPI_WIN_NULL) MPI_Win_free(&s->win);
    free(s->pending);
    free(s);
    if (st != A3_OK) A3_TRY(st);
    return A3_FAIL(A3_ERR_MPI, "setting up the sweep scheduler failed on another rank");
  }
  *out = s;
  return A3_OK;
}

static a3_status leader_next(a3_sweep_sched *s, int group_stop, int64_t *point) {
  *point = -1;
  // Raise the shared stop counter once, and read it in the same epoch.
  const int publish = group_stop && !s->published_stop;
  int slots[3] = {SLOT_STOP, SLOT_NEXT, SLOT_STARTED};
  int64_t add[3] = {publish ? 1 : 0, 0, 0}, old[3] = {0, 0, 0};
  A3_TRY(fetch_add(s, 1, slots, add, old));
  if (publish) s->published_stop = 1;
  if (old[0] + add[0] > 0) {
    s->stop_seen = 1;
    return A3_OK;
  }
  if (s->kind == A3_SCHEDULE_DYNAMIC) {
    add[1] = 1;
    A3_TRY(fetch_add(s, 1, &slots[1], &add[1], &old[1]));
    if (old[1] < s->n_pending) *point = s->pending[old[1]];
  } else {
    const int64_t k = s->group_index + s->next_static * s->n_groups;
    if (k < s->n_pending) {
      *point = s->pending[k];
      s->next_static++;
    }
  }
  if (*point >= 0) {
    add[2] = 1;
    A3_TRY(fetch_add(s, 1, &slots[2], &add[2], &old[2]));
  }
  return A3_OK;
}

a3_status a3_sweep_sched_next(a3_sweep_sched *s, int64_t *point) {
  int local = a3_sweep_stop_requested(), group_stop = 0;
  A3_MPI_TRY(MPI_Allreduce(&local, &group_stop, 1, MPI_INT, MPI_MAX, s->group), "MPI_Allreduce");
  int64_t msg[2] = {-1, A3_OK};
  if (s->group_rank == 0) {
    a3_status st = leader_next(s, group_stop, &msg[0]);
    msg[1] = st;
    if (st != A3_OK) msg[0] = -1;
  }
  A3_MPI_TRY(MPI_Bcast(msg, 2, MPI_INT64_T, 0, s->group), "MPI_Bcast");
  *point = msg[0];
  if (msg[1] != A3_OK && s->group_rank != 0)
    return A3_FAIL((a3_status)msg[1], "the group leader could not reach the sweep scheduler");
  if (msg[1] != A3_OK) {
    a3_error_trace(__FILE__, __LINE__);
    return (a3_status)msg[1];
  }
  return A3_OK;
}

a3_status a3_sweep_sched_report(a3_sweep_sched *s, bool failed, a3_sweep_counts *now) {
  const int slots[3] = {SLOT_STARTED, SLOT_DONE, SLOT_FAILED};
  const int64_t add[3] = {0, failed ? 0 : 1, failed ? 1 : 0};
  int64_t old[3] = {0, 0, 0};
  A3_TRY(fetch_add(s, 3, slots, add, old));
  now->started = old[0];
  now->done = old[1] + add[1];
  now->failed = old[2] + add[2];
  return A3_OK;
}

void a3_sweep_sched_stop(a3_sweep_sched *s) {
  if (s->published_stop) return;
  const int slot = SLOT_STOP;
  const int64_t one = 1;
  int64_t old = 0;
  if (fetch_add(s, 1, &slot, &one, &old) == A3_OK) s->published_stop = 1;
}

a3_status a3_sweep_sched_finish(a3_sweep_sched *s, bool *stop_requested) {
  // Everyone is done with the window before it is read for the last time and freed.
  MPI_Barrier(s->world);
  int64_t stop = 0;
  int rank = 0;
  MPI_Comm_rank(s->world, &rank);
  a3_status st = A3_OK;
  if (rank == 0) {
    const int slot = SLOT_STOP;
    const int64_t zero = 0;
    st = fetch_add(s, 1, &slot, &zero, &stop);
  }
  MPI_Bcast(&stop, 1, MPI_INT64_T, 0, s->world);
  *stop_requested = stop > 0;
  MPI_Win_free(&s->win);
  free(s->pending);
  free(s);
  return st;
}
