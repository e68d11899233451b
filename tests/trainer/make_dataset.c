// trainer_make_dataset FILE: writes the trainer tests' tiny dataset (for the
// command-line test, which has no other way to make one without PNG tools).
#include "trainer_test_util.h"

#include <mpi.h>
#include <stdio.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: trainer_make_dataset FILE\n");
    return 2;
  }
  MPI_Init(&argc, &argv);
  const int rc = tt_make_dataset(argv[1]);
  MPI_Finalize();
  return rc;
}
