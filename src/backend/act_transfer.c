// Activations between host fp32 and a backend's storage type (a3fta/backend.h).
#include "a3fta/backend.h"

a3_status a3_act_upload(const a3_backend *be, a3_act *dst, // (n) in be's memory
                        const float *host,                 // (n) host memory
                        size_t n) {
  float *staged = NULL; // (n) in be's memory
  a3_status s = be->ops->alloc(be, (void **)&staged, n * sizeof(float));
  if (s == A3_OK) s = be->ops->upload(be, staged, host, n * sizeof(float));
  if (s == A3_OK) {
    be->ops->act_from_f32(be, dst, staged, n);
    s = be->ops->synchronize(be); // before the staging buffer goes
  }
  be->ops->release(be, staged);
  return s;
}

a3_status a3_act_download(const a3_backend *be, float *host, // (n) host memory
                          const a3_act *src,                 // (n) in be's memory
                          size_t n) {
  float *staged = NULL; // (n) in be's memory
  a3_status s = be->ops->alloc(be, (void **)&staged, n * sizeof(float));
  if (s == A3_OK) {
    be->ops->act_to_f32(be, staged, src, n);
    s = be->ops->download(be, host, staged, n * sizeof(float));
  }
  if (s == A3_OK) s = be->ops->synchronize(be);
  be->ops->release(be, staged);
  return s;
}
