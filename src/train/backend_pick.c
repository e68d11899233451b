#define _POSIX_C_SOURCE 200809L // gethostname
// The backend parallel.backend picks for a rank (a3fta/trainer.h,
// a3_backend_pick): training (trainer_device.c) and sampling (trainer_sample.c,
// a3fta sample, a3fta eval, a sweep point's evaluation) choose alike.
#include "a3fta/trainer.h"

#include "a3fta/dist.h"

#ifdef A3FTA_HAVE_CUDA
#include "a3fta/cuda_probe.h"
#endif

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifdef A3FTA_HAVE_CUDA
// More ranks on the node than the GPUs each sees: GPUs are shared (memory
// and time; NCCL refuses two ranks of one group on one GPU). Not when each
// sees one: that is how Slurm's --gpus-per-task binds (a GPU per rank), and
// no rank can tell it from sharing without asking the others. Said once per
// process, by every rank, as any may be the one a user reads.
static void warn_shared(int local_rank, int local_size, int count, int device) {
  static int warned = 0;
  if (count < 2 || local_size <= count || warned) return;
  warned = 1;
  a3_warn("%d ranks on this node but %d GPU(s) visible to each: GPUs are shared (node-local "
          "rank %d on device %d). Give each rank its own GPU: as many tasks per node as GPUs "
          "(e.g. srun --ntasks-per-node=%d), or --gpus-per-task=1",
          local_size, count, local_rank, device, count);
}

// The GPU of this rank: its rank among the job's ranks on its node (never
// its sweep group's), modulo the devices CUDA shows it (CUDA_VISIBLE_DEVICES
// and Slurm's binding applied). The node place is known before the probe,
// so no rank skips a collective that the others make.
static a3_status pick_device(MPI_Comm comm, int *device, char *name, size_t cap) {
  int local_rank = 0, local_size = 1;
  A3_TRY(a3_node_place(comm, &local_rank, &local_size));
  a3_cuda_info info;
  a3_cuda_probe(&info);
  if (info.device_count == 0)
    return A3_FAIL(A3_ERR_CUDA, "no usable GPU (%s)",
                   info.error_code ? info.error_name : "CUDA reports 0 devices");
  *device = local_rank % info.device_count;
  char host[64] = "?", label[320];
  gethostname(host, sizeof host - 1);
  a3_cuda_device_label(*device, label, sizeof label);
  snprintf(name, cap, "cuda device %d of %d visible (%s) on %s, node-local rank %d of %d", *device,
           info.device_count, label, host, local_rank, local_size);
  warn_shared(local_rank, local_size, info.device_count, *device);
  return A3_OK;
}
#else
// A build without CUDA: `cuda` asks for what this binary cannot do, a config
// error (exit 2) as an unknown key would be; `auto` is the CPU.
static a3_status pick_without_cuda(const a3_config *cfg) {
  if (cfg->parallel.backend == A3_BACKEND_CUDA)
    return A3_FAIL(A3_ERR_CONFIG,
                   "parallel.backend: cuda, but this a3fta was built without CUDA (A3FTA_CUDA=OFF, "
                   "see a3fta --version); set parallel.backend: auto or cpu, or rebuild it with "
                   "nvcc on the PATH");
  a3_info("backend: auto -> cpu (this a3fta was built without CUDA)");
  return A3_OK;
}
#endif

a3_status a3_backend_pick(const a3_config *cfg, MPI_Comm comm, const a3_backend **be, char *name,
                          size_t cap) {
  *be = NULL;
  if (cap) snprintf(name, cap, "cpu");
  if (cfg->parallel.backend == A3_BACKEND_CPU) return A3_OK;
#ifndef A3FTA_HAVE_CUDA
  (void)comm;
  return pick_without_cuda(cfg);
#else
  int device = 0;
  a3_status s = pick_device(comm, &device, name, cap);
  const bool visible = s == A3_OK;
  if (visible) s = a3_backend_cuda_create(device, cfg->train.precision, be);
  if (s == A3_OK && cap) { // the name goes into the logs: say what runs the convolutions
    const size_t used = strlen(name);
    snprintf(name + used, cap - used, ", convolutions: %s", a3_backend_cuda_conv_engine(*be));
  }
  if (s == A3_OK || cfg->parallel.backend == A3_BACKEND_CUDA) {
    if (s != A3_OK) a3_error_trace(__FILE__, __LINE__);
    return s;
  }
  if (cap) snprintf(name, cap, "cpu");
  if (visible) // a GPU is there but refused: this rank alone may now run ~100x slower
    a3_warn("backend: auto -> cpu: GPU %d is visible but cannot be used (%s); "
            "parallel.backend: cuda makes this an error",
            device, a3_error_message());
  else
    a3_info("backend: auto -> cpu (%s)", a3_error_message());
  a3_error_clear();
  return A3_OK;
#endif
}
