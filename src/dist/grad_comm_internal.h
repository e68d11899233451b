// What a gradient communicator implementation provides (src/dist only): the
// generic part (grad_comm.c) owns the buckets and their order; an
// implementation (MPI: grad_comm_mpi.c; NCCL: grad_comm_nccl.cu) moves the
// floats. The waiting helpers below are the NCCL watchdog's, here so that
// the CPU tests reach them.
#ifndef A3FTA_GRAD_COMM_INTERNAL_H
#define A3FTA_GRAD_COMM_INTERNAL_H

#include "a3fta/comm.h"

#include <stdbool.h>

typedef struct {
  const char *name;
  // Packs bucket k from grads and starts its sum (non-blocking).
  a3_status (*start_bucket)(a3_grad_comm *c, int k, const float *grads);
  // Lets started sums advance (a library without a progress thread only
  // moves data inside its calls).
  a3_status (*progress)(a3_grad_comm *c);
  // Completes every started sum and unpacks it into grads (NCCL: queues
  // that on the device).
  a3_status (*wait_all)(a3_grad_comm *c, float *grads);
  // Waits until what wait_all queued has completed (NULL: wait_all waited).
  a3_status (*settle)(a3_grad_comm *c);
  // This rank's step failed (a3_grad_comm_fail): whatever the others need
  // so that they do not wait for it for good.
  a3_status (*fail)(a3_grad_comm *c, float *grads, bool summed);
  // Frees the implementation's state; in_flight: sums were started and not
  // completed (their buffers must then outlive the communicator).
  void (*destroy)(a3_grad_comm *c, bool in_flight);
} a3_grad_comm_ops;

struct a3_grad_comm {
  const a3_grad_comm_ops *ops;
  void *impl;
  a3_grad_buckets b;
  int next;    // buckets started in this step (they start in order)
  bool reused; // the implementation took over a communicator an earlier sum made
};

// The generic part of creation: the buckets, ops and impl set, next = 0.
a3_status a3_grad_comm_init(a3_grad_comm **out, const a3_grad_comm_ops *ops,
                            const a3_grad_piece *pieces, int n_pieces,
                            size_t bucket_bytes) A3_WARN_UNUSED;

// ---------------------------------------------------------------- waiting with a limit
typedef enum { A3_WATCH_DONE, A3_WATCH_FAILED, A3_WATCH_TIMEOUT } a3_watch_result;
// Calls poll(ctx) (1: done, 0: not yet, -1: failed) until it is done or has
// failed, or timeout_s seconds have passed since the call (then TIMEOUT; at
// least one poll, also for timeout_s <= 0). Between polls it sleeps, 50 us
// at first, doubling up to 1 ms, so a long wait does not spin a core.
a3_watch_result a3_grad_comm_watch(int (*poll)(void *ctx), void *ctx, double timeout_s);

// After a failure on this rank: true when every rank of comm calls this too
// within grace_s seconds (an MPI_Ibarrier, waited for with a limit). When
// false, *pending holds the unfinished barrier (the caller aborts the job
// or, in tests, completes it).
bool a3_grad_comm_peers_arrive(MPI_Comm comm, double grace_s, MPI_Request *pending);

#endif
