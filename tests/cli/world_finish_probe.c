// Driven by rank_failure.sh. Mode "agree": rank 1 fails with a config error,
// the others succeed, all reach a3_world_finish -> everyone exits 2.
// Mode "stuck": rank 1 fails while the others wait in a barrier it never
// joins -> the failed rank must abort the job after the grace period.
#include "a3fta/dist.h"

#include <string.h>

int main(int argc, char **argv) {
  a3_world world = {0};
  a3_status s = a3_world_init(&argc, &argv, &world);
  if (s != A3_OK) return a3_world_finish(&world, s);
  const int stuck = argc > 1 && !strcmp(argv[1], "stuck");
  if (world.rank == 1) {
    s = A3_FAIL(A3_ERR_CONFIG, "probe.yaml:3:5: train.lr: injected failure on rank 1");
  } else if (stuck) {
    MPI_Barrier(world.comm); // rank 1 never arrives
  }
  return a3_world_finish(&world, s);
}
