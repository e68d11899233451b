// The CUDA emulator's NCCL (tests/cuda_emu/README.md): the calls
// src/dist/grad_comm_nccl.cu makes, over MPI point-to-point messages between
// the ranks of one host. A collective is queued on its stream and run as
// soon as what it waits for has run (emu_nccl.cpp); behind a stall
// (emu_stall_stream) it stays in flight, so the watchdog can time it out.
// A peer that never joins still blocks the host call instead of timing out.
#ifndef A3FTA_CUDA_EMU_NCCL_H
#define A3FTA_CUDA_EMU_NCCL_H

#include "cuda_runtime.h"

#include <stddef.h>

#define NCCL_UNIQUE_ID_BYTES 128
#define NCCL_VERSION_CODE 22800 // the API emulated (2.28)

typedef enum {
  ncclSuccess = 0,
  ncclUnhandledCudaError = 1,
  ncclSystemError = 2,
  ncclInternalError = 3,
  ncclInvalidArgument = 4,
  ncclInvalidUsage = 5,
  ncclRemoteError = 6,
  ncclInProgress = 7,
} ncclResult_t;

typedef enum { ncclFloat32 = 7, ncclFloat = 7 } ncclDataType_t;
typedef enum { ncclSum = 0, ncclAvg = 4 } ncclRedOp_t;

typedef struct {
  char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

typedef struct emu_nccl_comm *ncclComm_t;

typedef struct {
  size_t size;
  int blocking;
} ncclConfig_t;
#define NCCL_CONFIG_INITIALIZER                                                                    \
  { sizeof(ncclConfig_t), 1 }

ncclResult_t ncclGetVersion(int *version);
ncclResult_t ncclGetUniqueId(ncclUniqueId *id);
ncclResult_t ncclCommInitRankConfig(ncclComm_t *comm, int nranks, ncclUniqueId id, int rank,
                                    ncclConfig_t *config);
ncclResult_t ncclAllReduce(const void *send, void *recv, size_t count, ncclDataType_t type,
                           ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream);
ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t *state);
ncclResult_t ncclCommFinalize(ncclComm_t comm);
ncclResult_t ncclCommDestroy(ncclComm_t comm);
ncclResult_t ncclCommAbort(ncclComm_t comm);
const char *ncclGetErrorString(ncclResult_t r);
const char *ncclGetLastError(ncclComm_t comm);

#endif
