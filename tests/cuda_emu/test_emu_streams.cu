// The CUDA emulator's streams (emu_streams.cpp) are adversarial as promised:
// work on two streams with no wait between them runs out of program order
// under A3FTA_EMU_STREAMS=lazy (a reader sees a write not yet done) and
// others-first (a reader sees a later write), and in program order under
// sync; with an event wait, every order gives the right value; a stall
// (emu_stall_stream) holds its stream. Without this,
// a change that made the emulator run work at once would silently stop the
// NCCL tests from seeing a missing cudaStreamWaitEvent.
//
// usage: test_emu_streams    (the order from A3FTA_EMU_STREAMS, default lazy)
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_util.h"

__global__ void set_kernel(float *p, float v) { *p = v; }
__global__ void copy_kernel(float *dst, const float *src) { *dst = *src; }

enum order { LAZY, OTHERS_FIRST, SYNC };

static order order_from_env() {
  const char *v = getenv("A3FTA_EMU_STREAMS");
  if (v && !strcmp(v, "others-first")) return OTHERS_FIRST;
  if (v && !strcmp(v, "sync")) return SYNC;
  return LAZY;
}

static float read_back(const float *d) {
  float h = -1.0f;
  CHECK(cudaMemcpy(&h, d, sizeof h, cudaMemcpyDeviceToHost) == cudaSuccess);
  return h;
}

static void set_now(float *d, float v, cudaStream_t s) {
  set_kernel<<<1, 1, 0, s>>>(d, v);
  CHECK(cudaStreamSynchronize(s) == cudaSuccess);
}

int main() {
  const order o = order_from_env();
  cudaStream_t a, b, blocking;
  CHECK(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking) == cudaSuccess);
  CHECK(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking) == cudaSuccess);
  CHECK(cudaStreamCreateWithFlags(&blocking, cudaStreamDefault) == cudaSuccess);
  cudaEvent_t written;
  CHECK(cudaEventCreateWithFlags(&written, cudaEventDisableTiming) == cudaSuccess);
  float *x, *y;
  CHECK(cudaMalloc(&x, sizeof(float)) == cudaSuccess);
  CHECK(cudaMalloc(&y, sizeof(float)) == cudaSuccess);

  // Read after write, no wait: b copies x while a's write is queued.
  set_now(x, 0.0f, a);
  set_kernel<<<1, 1, 0, a>>>(x, 1.0f);
  copy_kernel<<<1, 1, 0, b>>>(y, x);
  CHECK(cudaStreamSynchronize(b) == cudaSuccess);
  CHECK_MSG(read_back(y) == (o == LAZY ? 0.0f : 1.0f), "read after write, no wait: %g",
            read_back(y));
  CHECK(cudaStreamSynchronize(a) == cudaSuccess);

  // Write after read, no wait: a overwrites x while b's copy is queued.
  set_now(x, 0.0f, a);
  copy_kernel<<<1, 1, 0, b>>>(y, x);
  set_kernel<<<1, 1, 0, a>>>(x, 2.0f);
  CHECK(cudaStreamSynchronize(b) == cudaSuccess);
  CHECK_MSG(read_back(y) == (o == OTHERS_FIRST ? 2.0f : 0.0f), "write after read, no wait: %g",
            read_back(y));
  CHECK(cudaStreamSynchronize(a) == cudaSuccess);

  // With the event wait, every order reads the write.
  set_now(x, 0.0f, a);
  set_kernel<<<1, 1, 0, a>>>(x, 3.0f);
  CHECK(cudaEventRecord(written, a) == cudaSuccess);
  CHECK(cudaStreamWaitEvent(b, written, 0) == cudaSuccess);
  copy_kernel<<<1, 1, 0, b>>>(y, x);
  CHECK(cudaStreamSynchronize(b) == cudaSuccess);
  CHECK_MSG(read_back(y) == 3.0f, "read after an event wait: %g", read_back(y));

  // A query of work not yet run answers cudaErrorNotReady, then runs it.
  set_kernel<<<1, 1, 0, a>>>(x, 4.0f);
  CHECK(cudaEventRecord(written, a) == cudaSuccess);
  if (o != SYNC) CHECK(cudaEventQuery(written) == cudaErrorNotReady);
  CHECK(cudaEventQuery(written) == cudaSuccess);
  CHECK_MSG(read_back(x) == 4.0f, "after the query: %g", read_back(x));

  // cudaMemcpy runs on the legacy default stream: a blocking stream waits
  // for it, a non-blocking one does not (under lazy it reads the old value).
  const float five = 5.0f;
  set_now(x, 0.0f, a);
  CHECK(cudaMemcpy(x, &five, sizeof five, cudaMemcpyHostToDevice) == cudaSuccess);
  copy_kernel<<<1, 1, 0, a>>>(y, x);
  CHECK(cudaStreamSynchronize(a) == cudaSuccess);
  float got = 0.0f;
  CHECK(cudaMemcpyAsync(&got, y, sizeof got, cudaMemcpyDeviceToHost, a) == cudaSuccess);
  CHECK_MSG(got == (o == LAZY ? 0.0f : 5.0f), "non-blocking stream after cudaMemcpy: %g", got);
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
  set_now(x, 0.0f, blocking);
  CHECK(cudaMemcpy(x, &five, sizeof five, cudaMemcpyHostToDevice) == cudaSuccess);
  copy_kernel<<<1, 1, 0, blocking>>>(y, x);
  CHECK(cudaStreamSynchronize(blocking) == cudaSuccess);
  CHECK_MSG(read_back(y) == 5.0f, "blocking stream after cudaMemcpy: %g", read_back(y));

  // A stall holds the stream: queries answer cudaErrorNotReady, work behind
  // it waits, and a synchronize sleeps through it (sync: the launch does).
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  emu_stall_stream(a, 0.3);
  set_kernel<<<1, 1, 0, a>>>(x, 6.0f);
  CHECK(cudaEventRecord(written, a) == cudaSuccess);
  for (int poll = 0; poll < 3 && o != SYNC; poll++)
    CHECK(cudaEventQuery(written) == cudaErrorNotReady);
  CHECK(cudaStreamSynchronize(a) == cudaSuccess);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  const double slept = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
  CHECK_MSG(slept >= 0.3, "the stall lasted %.3f s", slept);
  CHECK(cudaEventQuery(written) == cudaSuccess);
  CHECK_MSG(read_back(x) == 6.0f, "after the stall: %g", read_back(x));

  CHECK(cudaFree(x) == cudaSuccess && cudaFree(y) == cudaSuccess);
  CHECK(cudaEventDestroy(written) == cudaSuccess);
  CHECK(cudaStreamDestroy(a) == cudaSuccess && cudaStreamDestroy(b) == cudaSuccess &&
        cudaStreamDestroy(blocking) == cudaSuccess);
  return TEST_DONE("test_emu_streams");
}
