// What the CUDA runtime says about this machine, without ever failing to
// load: only cudart is linked, never libcuda. Built with A3FTA_CUDA only.
#ifndef A3FTA_CUDA_PROBE_H
#define A3FTA_CUDA_PROBE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  int device_count;       // usable devices (0 when the probe failed)
  int error_code;         // cudaError_t of cudaGetDeviceCount, 0 when fine
  char error_name[64];    // "cudaErrorInsufficientDriver" ...
  char device_name[256];  // first device, "" if none
  int cc_major, cc_minor; // compute capability of the first device
  int runtime_version;    // e.g. 13000
  int nccl_version;       // e.g. 22805
} a3_cuda_info;

void a3_cuda_probe(a3_cuda_info *out);
// "NAME, PCI 0000:19:00.0" of visible device `device`, for the log line
// that says which GPU a rank drives (two ranks printing the same bus id
// share one GPU); "device N (cudaError...)" when CUDA cannot say.
void a3_cuda_device_label(int device, char *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif
