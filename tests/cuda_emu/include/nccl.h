// The CUDA emulator has no NCCL (tests/cuda_emu/README.md): only the version
// query of the probe, which answers 0 (unknown), as a missing library would.
#ifndef A3FTA_CUDA_EMU_NCCL_H
#define A3FTA_CUDA_EMU_NCCL_H

typedef enum { ncclSuccess = 0, ncclSystemError = 2 } ncclResult_t;

static inline ncclResult_t ncclGetVersion(int *version) {
  *version = 0;
  return ncclSystemError;
}

#endif
