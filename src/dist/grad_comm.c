// The gradient communicator's generic part (a3fta/comm.h): buckets start in
// bucket order as the backward's stages finish; an implementation moves them.
#include "dist/grad_comm_internal.h"

#include <stdlib.h>

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

void a3_grad_comm_free(a3_grad_comm *c) {
  if (!c) return;
  c->ops->destroy(c, c->next > 0);
  a3_grad_buckets_free(&c->b);
  free(c);
}

const a3_grad_buckets *a3_grad_comm_buckets(const a3_grad_comm *c) { return &c->b; }
int a3_grad_comm_started(const a3_grad_comm *c) { return c->next; }
