// The backend parallel.backend picks for a rank (a3fta/trainer.h,
// a3_backend_pick): training (trainer_device.c) and sampling (trainer_sample.c,
// a3fta sample, a3fta eval, a sweep point's evaluation) choose alike.
#include "a3fta/trainer.h"

#include "a3fta/dist.h"

#ifdef A3FTA_HAVE_CUDA
#include "a3fta/cuda_probe.h"
#endif

#include <stdio.h>
#include <string.h>

// The GPU of this rank: its rank among the ranks of its node, modulo the
// devices CUDA shows it (CUDA_VISIBLE_DEVICES and Slurm's binding applied).
static a3_status pick_device(MPI_Comm comm, int *device, char *name, size_t cap) {
#ifdef A3FTA_HAVE_CUDA
  a3_cuda_info info;
  a3_cuda_probe(&info);
  if (info.device_count == 0) return A3_FAIL(A3_ERR_CUDA, "no usable GPU (%s)", info.error_name);
  MPI_Comm local;
  int local_rank = 0;
  A3_MPI_TRY(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local),
             "node-local communicator");
  MPI_Comm_rank(local, &local_rank);
  MPI_Comm_free(&local);
  *device = local_rank % info.device_count;
  snprintf(name, cap, "cuda device %d of %d visible (%.200s), local rank %d", *device,
           info.device_count, info.device_name, local_rank);
  return A3_OK;
#else
  (void)comm;
  (void)device;
  (void)name;
  (void)cap;
  return A3_FAIL(A3_ERR_UNIMPLEMENTED, "this a3fta was built without CUDA (A3FTA_CUDA=OFF)");
#endif
}

a3_status a3_backend_pick(const a3_config *cfg, MPI_Comm comm, const a3_backend **be, char *name,
                          size_t cap) {
  *be = NULL;
  if (cap) snprintf(name, cap, "cpu");
  if (cfg->parallel.backend == A3_BACKEND_CPU) return A3_OK;
  int device = 0;
  a3_status s = pick_device(comm, &device, name, cap);
  if (s == A3_OK) s = a3_backend_cuda_create(device, cfg->train.precision, be);
  if (s == A3_OK && cap) { // the name goes into the logs: say what runs the convolutions
    const size_t used = strlen(name);
    snprintf(name + used, cap - used, ", convolutions: %s", a3_backend_cuda_conv_engine(*be));
  }
  if (s == A3_OK || cfg->parallel.backend == A3_BACKEND_CUDA) {
    if (s != A3_OK) a3_error_trace(__FILE__, __LINE__);
    return s;
  }
  if (cap) snprintf(name, cap, "cpu");
  a3_info("backend: auto -> cpu (%s)", a3_error_message());
  a3_error_clear();
  return A3_OK;
}
