// The CUDA backend's entry points in a build without CUDA (A3FTA_CUDA=OFF):
// they say so instead of failing to link.
#include "a3fta/backend.h"

#ifndef A3FTA_HAVE_CUDA
a3_status a3_backend_cuda_create(int device, a3_precision precision, const a3_backend **out) {
  (void)device;
  (void)precision;
  *out = NULL;
  return A3_FAIL(A3_ERR_UNIMPLEMENTED,
                 "this a3fta was built without CUDA (A3FTA_CUDA=OFF); rebuild with nvcc on the "
                 "PATH, or set parallel.backend: cpu");
}

void a3_backend_cuda_destroy(const a3_backend *be) { (void)be; }

int a3_backend_is_cuda(const a3_backend *be) {
  (void)be;
  return 0;
}

int a3_backend_cuda_device(const a3_backend *be) {
  (void)be;
  return -1;
}

void *a3_backend_cuda_stream(const a3_backend *be) {
  (void)be;
  return NULL;
}

const char *a3_backend_cuda_lost(void) { return NULL; }

const char *a3_backend_cuda_conv_engine(const a3_backend *be) {
  (void)be;
  return "none";
}
#else
typedef int a3_cuda_absent_unused; // ISO C forbids an empty translation unit
#endif
