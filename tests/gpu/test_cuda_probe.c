// The CUDA runtime is reachable and reports a device; skipped (77) where the
// machine has no usable GPU, naming the CUDA error that says so.
#include "a3fta/cuda_probe.h"
#include "test_util.h"

#include <string.h>

int main(void) {
  a3_cuda_info info;
  a3_cuda_probe(&info);
  CHECK(info.runtime_version >= 12000);
  CHECK(info.nccl_version >= 21800); // ncclCommSplit needs 2.18
  if (info.device_count == 0) {
    CHECK(info.error_code != 0 && strlen(info.error_name) > 0);
    fprintf(stderr, "SKIPPED: no usable GPU (%s)\n", info.error_name);
    return test_failures ? 1 : 77;
  }
  CHECK(info.cc_major >= 7);
  CHECK(strlen(info.device_name) > 0);
  fprintf(stderr, "GPU: %s (sm_%d%d), %d device(s)\n", info.device_name, info.cc_major,
          info.cc_minor, info.device_count);
  return TEST_DONE("test_cuda_probe");
}
