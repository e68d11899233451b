// The NCCL gradient sum in a build without CUDA (A3FTA_CUDA=OFF): it says so
// instead of failing to link (src/dist/grad_comm_nccl.cu is the real one).
#include "a3fta/comm.h"

#ifndef A3FTA_HAVE_CUDA
a3_status a3_grad_comm_create_nccl(MPI_Comm comm, const a3_backend *be, const a3_grad_piece *pieces,
                                   int n_pieces, size_t bucket_bytes, double timeout_s,
                                   a3_grad_comm **out) {
  (void)comm, (void)be, (void)pieces, (void)n_pieces, (void)bucket_bytes, (void)timeout_s;
  *out = NULL;
  return A3_FAIL(A3_ERR_UNIMPLEMENTED,
                 "the NCCL gradient sum needs CUDA, and this a3fta was built without it "
                 "(A3FTA_CUDA=OFF); rebuild with nvcc on the PATH, or set A3FTA_GRAD_COMM=mpi");
}
#else
typedef int a3_grad_comm_nccl_absent_unused; // ISO C forbids an empty translation unit
#endif
