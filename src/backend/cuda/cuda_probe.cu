// Asks the CUDA runtime and NCCL what is there (for --version, info, and
// `backend: auto`). A machine without a driver answers
// cudaErrorInsufficientDriver here instead of failing to start.
#include "a3fta/cuda_probe.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <string.h>

static void copy_name(char *dst, size_t cap, const char *src) {
  snprintf(dst, cap, "%s", src ? src : "");
}

extern "C" void a3_cuda_probe(a3_cuda_info *out) {
  memset(out, 0, sizeof *out);
  cudaRuntimeGetVersion(&out->runtime_version); // unchecked: 0 when unknown
  ncclGetVersion(&out->nccl_version);           // unchecked: 0 when unknown
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  out->error_code = (int)err;
  copy_name(out->error_name, sizeof out->error_name, cudaGetErrorName(err));
  if (err != cudaSuccess) {
    cudaGetLastError(); // clear the sticky-free error so later calls start clean
    return;
  }
  out->device_count = count;
  cudaDeviceProp prop;
  if (count > 0 && cudaGetDeviceProperties(&prop, 0) == cudaSuccess) {
    copy_name(out->device_name, sizeof out->device_name, prop.name);
    out->cc_major = prop.major;
    out->cc_minor = prop.minor;
  }
}

extern "C" void a3_cuda_device_label(int device, char *out, size_t cap) {
  cudaDeviceProp prop;
  const cudaError_t err = cudaGetDeviceProperties(&prop, device);
  if (err != cudaSuccess) {
    snprintf(out, cap, "device %d (%s)", device, cudaGetErrorName(err));
    (void)cudaGetLastError(); // unchecked: only the label needed it
    return;
  }
  snprintf(out, cap, "%.200s, PCI %04x:%02x:%02x.0", prop.name, (unsigned)prop.pciDomainID,
           (unsigned)prop.pciBusID, (unsigned)prop.pciDeviceID);
}
