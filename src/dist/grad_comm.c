// The gradient communicator's generic part (a3fta/comm.h): buckets start in
// bucket order as the backward's stages finish; an implementation moves them.
// Also which sum a trainer uses, and the watchdog's waiting helpers.
#define _POSIX_C_SOURCE 200809L // clock_gettime, nanosleep
#include "dist/grad_comm_internal.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

a3_status a3_grad_comm_init(a3_grad_comm **out, const a3_grad_comm_ops *ops,
                            const a3_grad_piece *pieces, int n_pieces, size_t bucket_bytes) {
  *out = NULL;
  a3_grad_comm *c = NULL;
  A3_TRY(A3_ALLOC(c, 1));
  c->ops = ops;
  const a3_status s = a3_grad_buckets_make(pieces, n_pieces, bucket_bytes, &c->b);
  if (s != A3_OK) {
    free(c);
    return s;
  }
  *out = c;
  return A3_OK;
}

a3_status a3_grad_comm_ready(a3_grad_comm *c, const float *grads, int stage) {
  // In order only: a later bucket never overtakes an earlier one, so every
  // rank issues the same collectives in the same order whatever its timing.
  while (c->next < c->b.n_buckets && c->b.stage[c->next] <= stage) {
    A3_TRY(c->ops->start_bucket(c, c->next, grads));
    c->next++;
  }
  if (c->next > 0) A3_TRY(c->ops->progress(c));
  return A3_OK;
}

a3_status a3_grad_comm_finish(a3_grad_comm *c, float *grads) {
  for (; c->next < c->b.n_buckets; c->next++) A3_TRY(c->ops->start_bucket(c, c->next, grads));
  A3_TRY(c->ops->wait_all(c, grads));
  c->next = 0;
  return A3_OK;
}

a3_status a3_grad_comm_fail(a3_grad_comm *c, float *grads, bool summed) {
  return c->ops->fail(c, grads, summed);
}

a3_status a3_grad_comm_settle(a3_grad_comm *c) {
  return c->ops->settle ? c->ops->settle(c) : A3_OK;
}

void a3_grad_comm_free(a3_grad_comm *c) {
  if (!c) return;
  c->ops->destroy(c, c->next > 0);
  a3_grad_buckets_free(&c->b);
  free(c);
}

const a3_grad_buckets *a3_grad_comm_buckets(const a3_grad_comm *c) { return &c->b; }
int a3_grad_comm_started(const a3_grad_comm *c) { return c->next; }
const char *a3_grad_comm_name(const a3_grad_comm *c) { return c->ops->name; }
bool a3_grad_comm_reused(const a3_grad_comm *c) { return c->reused; }

// ---------------------------------------------------------------- which sum

a3_status a3_grad_comm_kind_parse(const char *text, a3_grad_comm_kind *out) {
  *out = A3_GRAD_COMM_AUTO;
  if (!text || !*text) return A3_OK;
  if (strcmp(text, "mpi") == 0) {
    *out = A3_GRAD_COMM_MPI;
  } else if (strcmp(text, "nccl") == 0) {
    *out = A3_GRAD_COMM_NCCL;
  } else {
    return A3_FAIL(A3_ERR_CONFIG,
                   "A3FTA_GRAD_COMM=%.64s: expected mpi or nccl (or unset: NCCL where every "
                   "rank of a group trains on a GPU, else MPI)",
                   text);
  }
  return A3_OK;
}

a3_status a3_grad_comm_choose(a3_grad_comm_kind asked, int ranks, bool all_on_gpu,
                              a3_grad_comm_kind *use) {
  *use = ranks > 1 ? A3_GRAD_COMM_MPI : A3_GRAD_COMM_NONE;
  if (asked == A3_GRAD_COMM_NCCL && !all_on_gpu)
    return A3_FAIL(A3_ERR_CONFIG,
                   "A3FTA_GRAD_COMM=nccl needs every rank of the group on a GPU, but some rank "
                   "trains on the CPU (parallel.backend cpu, or auto without a usable GPU); "
                   "unset A3FTA_GRAD_COMM or set parallel.backend: cuda");
  if (asked == A3_GRAD_COMM_NCCL || (asked == A3_GRAD_COMM_AUTO && ranks > 1 && all_on_gpu))
    *use = A3_GRAD_COMM_NCCL;
  return A3_OK;
}

const char *a3_grad_comm_kind_name(a3_grad_comm_kind k) {
  switch (k) {
  case A3_GRAD_COMM_AUTO: return "auto";
  case A3_GRAD_COMM_NONE: return "none";
  case A3_GRAD_COMM_MPI: return "mpi";
  case A3_GRAD_COMM_NCCL: return "nccl";
  }
  return "?";
}

// ---------------------------------------------------------------- waiting with a limit

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

a3_watch_result a3_grad_comm_watch(int (*poll)(void *ctx), void *ctx, double timeout_s) {
  const double start = now_s();
  long nap_ns = 50000;
  for (;;) {
    const int r = poll(ctx);
    if (r > 0) return A3_WATCH_DONE;
    if (r < 0) return A3_WATCH_FAILED;
    if (now_s() - start >= timeout_s) return A3_WATCH_TIMEOUT;
    nanosleep(&(struct timespec){.tv_nsec = nap_ns}, NULL);
    if (nap_ns < 1000000) nap_ns = nap_ns * 2 < 1000000 ? nap_ns * 2 : 1000000;
  }
}

static int barrier_done(void *ctx) {
  int done = 0;
  if (MPI_Test(ctx, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return -1;
  return done;
}

bool a3_grad_comm_peers_arrive(MPI_Comm comm, double grace_s, MPI_Request *pending) {
  *pending = MPI_REQUEST_NULL;
  if (MPI_Ibarrier(comm, pending) != MPI_SUCCESS) return false;
  return a3_grad_comm_watch(barrier_done, pending, grace_s) == A3_WATCH_DONE;
}
