// What the CUDA backend does when the device refuses work, on a real GPU
// (and on the emulator, which faults the same way: tests/cuda_emu/README.md).
// The sweep's handling of both rests on CUDA's error semantics, which only a
// real device can show:
// 1. out of memory is a plain error: an allocation far beyond the device
//    fails with a message naming device memory and the batch-size remedy,
//    the context is not lost, and the next op runs and gives the right result
//    (the failed cudaMalloc must not stay the thread's last error and fail
//    the next launch check);
// 2. a kernel that writes to an unmapped address breaks the context for good
//    (a sticky error): synchronize reports it, a3_backend_cuda_lost() names
//    it, later calls fail with an error instead of a crash or a hang, and a
//    new backend on the same device is refused with a clear error.
// Exit: 0 pass, 1 fail, 77 no usable GPU (SKIPPED, with the CUDA error).
#include "a3fta/backend.h"
#include "test_util.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum { EXIT_SKIP = 77, N = 1 << 16 };

// After a failed allocation the backend still computes: silu(2) on N
// activations. The backend is fp32 (act_bytes 4, checked in main), so its
// activations are floats and go up and down as they are.
static void check_out_of_memory(const a3_backend *be, a3_act *x, a3_act *y) {
  void *huge = NULL;
  const size_t bytes = (size_t)1 << 50; // 1 PiB: more than any device has
  const a3_status s = be->ops->alloc(be, &huge, bytes);
  CHECK(s != A3_OK && huge == NULL);
  const char *msg = a3_error_message();
  printf("1 PiB allocation: %s\n", msg);
  CHECK_MSG(strstr(msg, "out of GPU memory") && strstr(msg, "train.batch_size"), "%s", msg);
  CHECK_MSG(a3_backend_cuda_lost() == NULL, "out of memory counted as a lost device: %s",
            a3_backend_cuda_lost());

  static float host[N];
  for (int i = 0; i < N; i++) host[i] = 2.0f;
  CHECK(be->ops->upload(be, x, host, sizeof host) == A3_OK);
  be->ops->silu_forward(be, y, x, N);
  const a3_status after = be->ops->synchronize(be);
  CHECK_MSG(after == A3_OK, "the op after the failed allocation: %s", a3_error_message());
  memset(host, 0, sizeof host);
  CHECK(be->ops->download(be, host, y, sizeof host) == A3_OK);
  const float want = 2.0f / (1.0f + expf(-2.0f));
  int wrong = 0;
  for (int i = 0; i < N; i++) wrong += fabsf(host[i] - want) > 1e-6f * want;
  CHECK_MSG(wrong == 0, "%d of %d values of silu(2) wrong after the failed allocation", wrong, N);
}

// A write to an unmapped device address; everything after must fail cleanly.
static void check_kernel_fault(const a3_backend *be, const a3_act *x) {
  a3_act *unmapped = (a3_act *)(uintptr_t)4096; // below every device allocation
  be->ops->silu_forward(be, unmapped, x, N);
  const a3_status s = be->ops->synchronize(be);
  const char *msg = a3_error_message();
  printf("after the faulting kernel, synchronize: %s\n", s == A3_OK ? "OK" : msg);
  CHECK_MSG(s != A3_OK, "a kernel that wrote to address 4096 was not reported");
  const char *lost = a3_backend_cuda_lost();
  printf("a3_backend_cuda_lost: %s\n", lost ? lost : "(NULL)");
  CHECK_MSG(lost && strstr(lost, "cudaError"), "the sticky error was not noted as a lost device");

  float host[4];
  CHECK_MSG(be->ops->download(be, host, x, sizeof host) != A3_OK,
            "a download after the fault succeeded: the error was not sticky?");
  const a3_backend *again = NULL;
  const a3_status c = a3_backend_cuda_create(a3_backend_cuda_device(be), A3_PRECISION_FP32, &again);
  printf("a new backend after the fault: %s\n", c == A3_OK ? "created" : a3_error_message());
  CHECK_MSG(c != A3_OK, "a new backend was created on a broken context");
  if (c == A3_OK) a3_backend_cuda_destroy(again);
}

int main(void) {
  const a3_backend *be = NULL;
  const a3_status s = a3_backend_cuda_create(0, A3_PRECISION_FP32, &be);
  if (s == A3_ERR_CUDA || s == A3_ERR_UNIMPLEMENTED) {
    printf("SKIPPED: no usable CUDA backend: %s\n", a3_error_message());
    return EXIT_SKIP;
  }
  if (s != A3_OK) {
    printf("FAIL: a3_backend_cuda_create: %s\n", a3_error_message());
    return 1;
  }
  CHECK(a3_backend_cuda_lost() == NULL);
  CHECK(be->act_bytes == sizeof(float));
  a3_act *x = NULL, *y = NULL;
  CHECK(be->ops->alloc(be, (void **)&x, N * be->act_bytes) == A3_OK);
  CHECK(be->ops->alloc(be, (void **)&y, N * be->act_bytes) == A3_OK);
  if (x && y && be->act_bytes == sizeof(float)) {
    check_out_of_memory(be, x, y);
    check_kernel_fault(be, x);
  }
  // Freeing on a broken context fails inside; it must neither crash nor hang.
  be->ops->release(be, x);
  be->ops->release(be, y);
  a3_backend_cuda_destroy(be);
  return TEST_DONE("test_cuda_fault");
}
