// What a gradient communicator implementation provides (src/dist only): the
// generic part (grad_comm.c) owns the buckets and their order; an
// implementation (MPI: grad_comm_mpi.c; NCCL later) moves the floats.
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
  // Completes every started sum and unpacks it into grads.
  a3_status (*wait_all)(a3_grad_comm *c, float *grads);
  // Frees the implementation's state; in_flight: sums were started and not
  // completed (their buffers must then outlive the communicator).
  void (*destroy)(a3_grad_comm *c, bool in_flight);
} a3_grad_comm_ops;

struct a3_grad_comm {
  const a3_grad_comm_ops *ops;
  void *impl;
  a3_grad_buckets b;
  int next; // buckets started in this step (they start in order)
};

// The generic part of creation: the buckets, ops and impl set, next = 0.
a3_status a3_grad_comm_init(a3_grad_comm **out, const a3_grad_comm_ops *ops,
                            const a3_grad_piece *pieces, int n_pieces,
                            size_t bucket_bytes) A3_WARN_UNUSED;

#endif
