// The end of a multi-rank C test (with test_util.h): every rank's failures
// and checks summed over comm, so a failure on any rank fails the run on
// every rank; rank 0 prints the summary.
#ifndef A3FTA_MPI_TEST_UTIL_H
#define A3FTA_MPI_TEST_UTIL_H
#include "test_util.h"

#include <mpi.h>
#include <stdio.h>

// Collective; call before MPI_Finalize. Returns the process's exit code.
static inline int test_done_all_ranks(const char *name, MPI_Comm comm) {
  int rank = 0, size = 0, mine[2] = {test_failures, test_checks}, sum[2] = {0, 0};
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  MPI_Allreduce(mine, sum, 2, MPI_INT, MPI_SUM, comm);
  if (rank == 0)
    fprintf(stderr, "%s: %d ranks, %d checks, %d failed\n", name, size, sum[1], sum[0]);
  return sum[0] ? 1 : 0;
}
#endif
