// The gradient sum over MPI: each bucket packed into its slot of one host
// buffer and summed in place with MPI_Iallreduce on a private communicator.
#include "a3fta/dist.h"
#include "dist/grad_comm_internal.h"

#include <stdlib.h>

typedef struct {
  MPI_Comm comm;    // a duplicate: our collectives never meet the caller's
  float *packed;    // (b.total) bucket k at packed + b.begin[k]
  MPI_Request *req; // (n_buckets) MPI_REQUEST_NULL when not in flight
} mpi_impl;

static a3_status mpi_start(a3_grad_comm *c, int k, const float *grads) {
  mpi_impl *im = c->impl;
  float *slot = im->packed + c->b.begin[k];
  const int64_t count = c->b.begin[k + 1] - c->b.begin[k]; // <= 2^30 (a3_grad_buckets_make)
  a3_grad_bucket_pack(&c->b, k, grads, slot);
  A3_MPI_TRY(
      MPI_Iallreduce(MPI_IN_PLACE, slot, (int)count, MPI_FLOAT, MPI_SUM, im->comm, &im->req[k]),
      "MPI_Iallreduce of a gradient bucket");
  return A3_OK;
}

static a3_status mpi_progress(a3_grad_comm *c) {
  mpi_impl *im = c->impl;
  int all_done = 0; // completed requests become MPI_REQUEST_NULL only when all are
  A3_MPI_TRY(MPI_Testall(c->next, im->req, &all_done, MPI_STATUSES_IGNORE),
             "MPI_Testall on the gradient buckets");
  return A3_OK;
}

static a3_status mpi_wait_all(a3_grad_comm *c, float *grads) {
  mpi_impl *im = c->impl;
  A3_MPI_TRY(MPI_Waitall(c->b.n_buckets, im->req, MPI_STATUSES_IGNORE),
             "MPI_Waitall on the gradient buckets");
  for (int k = 0; k < c->b.n_buckets; k++)
    a3_grad_bucket_unpack(&c->b, k, im->packed + c->b.begin[k], grads);
  return A3_OK;
}

// The rest of this step's buckets on what grads holds, then all of them
// completed: the others' MPI_Waitall needs this rank's part of each.
static a3_status mpi_fail(a3_grad_comm *c, float *grads, bool summed) {
  if (summed) return A3_OK;
  for (; c->next < c->b.n_buckets; c->next++) A3_TRY(mpi_start(c, c->next, grads));
  mpi_impl *im = c->impl;
  A3_MPI_TRY(MPI_Waitall(c->b.n_buckets, im->req, MPI_STATUSES_IGNORE),
             "MPI_Waitall on the gradient buckets of a failed step");
  c->next = 0;
  return A3_OK;
}

static void mpi_destroy(a3_grad_comm *c, bool in_flight) {
  mpi_impl *im = c->impl;
  if (!im) return;
  if (in_flight) { // MPI may still write them: MPI_Request_free is erroneous on collectives
    a3_debug("gradient communicator freed with sums in flight; keeping their buffers");
    free(im);
    return;
  }
  if (im->comm != MPI_COMM_NULL) MPI_Comm_free(&im->comm);
  free(im->packed);
  free(im->req);
  free(im);
}

static const a3_grad_comm_ops mpi_ops = {"mpi", mpi_start, mpi_progress, mpi_wait_all,
                                         NULL,  mpi_fail,  mpi_destroy};

static a3_status mpi_setup(a3_grad_comm *c, MPI_Comm comm) {
  mpi_impl *im = NULL;
  A3_TRY(A3_ALLOC(im, 1));
  im->comm = MPI_COMM_NULL;
  c->impl = im;
  A3_TRY(A3_ALLOC(im->packed, (size_t)c->b.total + 1));
  A3_TRY(A3_ALLOC(im->req, (size_t)c->b.n_buckets + 1));
  for (int k = 0; k < c->b.n_buckets; k++) im->req[k] = MPI_REQUEST_NULL;
  A3_MPI_TRY(MPI_Comm_dup(comm, &im->comm), "MPI_Comm_dup for the gradient sum");
  return A3_OK;
}

a3_status a3_grad_comm_create_mpi(MPI_Comm comm, const a3_grad_piece *pieces, int n_pieces,
                                  size_t bucket_bytes, a3_grad_comm **out) {
  A3_TRY(a3_grad_comm_init(out, &mpi_ops, pieces, n_pieces, bucket_bytes));
  const a3_status s = mpi_setup(*out, comm);
  if (s != A3_OK) {
    a3_grad_comm_free(*out);
    *out = NULL;
  }
  return s;
}
