// The CUDA emulator's runtime API (tests/cuda_emu/README.md): one device,
// host memory, errors (streams and events: emu_streams.cpp). A kernel that
// failed (cudaErrorLaunchFailure) poisons the context as on a GPU: every
// later call that waits reports it, and queued work no longer runs.
#include "cuda_runtime.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include <map>

#if defined(__SANITIZE_ADDRESS__)
// libasan's (GCC 12 ships no header for it): whether p is a live heap block.
extern "C" int __sanitizer_get_ownership(const volatile void *p);
#define EMU_HEAP_KNOWN 1
#else
#define EMU_HEAP_KNOWN 0
#endif

static cudaError_t launch_error = cudaSuccess; // cudaGetLastError's
static cudaError_t sticky_error = cudaSuccess; // a failed kernel's, for good

extern "C" void emu_set_launch_error(cudaError_t e) {
  if (launch_error == cudaSuccess) launch_error = e;
  if (e == cudaErrorLaunchFailure) sticky_error = e;
}

// A GPU faults on a host address, for good.
static void illegal_address(void) {
  if (launch_error == cudaSuccess) launch_error = cudaErrorIllegalAddress;
  sticky_error = cudaErrorIllegalAddress;
}

// Kernels run by the process, and A3FTA_EMU_FAULT_KERNEL=N: the Nth one
// faults instead of running (cudaErrorIllegalAddress, for good), as a GPU
// with a bad memory page or a kernel bug would: for tests of what happens
// after (tests/cuda_emu/sweep_device_emu.sh).
static long long kernels_run = 0;

extern "C" int emu_kernel_faults(const char *kernel) {
  static const long long fault_at = [] {
    const char *e = getenv("A3FTA_EMU_FAULT_KERNEL");
    return e ? atoll(e) : 0;
  }();
  if (++kernels_run != fault_at) return 0;
  fprintf(stderr,
          "cuda emulator: kernel %s, the %lld-th of the process, faults (A3FTA_EMU_FAULT_KERNEL)\n",
          kernel, fault_at);
  illegal_address();
  return 1;
}

extern "C" void emu_bad_pointer(const char *kernel, int arg, const void *p) {
  fprintf(stderr, "cuda emulator: kernel %s, argument %d: %p is not device memory (cudaMalloc)\n",
          kernel, arg, p);
  illegal_address();
}

// Whether w points into the calling thread's stack.
static bool on_host_stack(uintptr_t w) {
  pthread_attr_t a;
  void *low = NULL;
  size_t size = 0;
  if (pthread_getattr_np(pthread_self(), &a) != 0) return false;
  pthread_attr_getstack(&a, &low, &size);
  pthread_attr_destroy(&a);
  return w >= (uintptr_t)low && w < (uintptr_t)low + size;
}

static bool host_pointer(uintptr_t w) {
  if (!w || emu_is_device_pointer((const void *)w)) return false;
#if EMU_HEAP_KNOWN
  if (__sanitizer_get_ownership((const void *)w)) return true;
#endif
  return on_host_stack(w);
}

extern "C" int emu_struct_ok(const char *kernel, int arg, const void *v, size_t bytes) {
  for (size_t at = 0; at + sizeof(uintptr_t) <= bytes; at += sizeof(uintptr_t)) {
    uintptr_t w;
    memcpy(&w, (const char *)v + at, sizeof w);
    if (!host_pointer(w)) continue;
    fprintf(stderr,
            "cuda emulator: kernel %s, argument %d (a struct), bytes %zu..%zu: %p is host "
            "memory, not device memory (cudaMalloc)\n",
            kernel, arg, at, at + sizeof w - 1, (void *)w);
    illegal_address();
    return 0;
  }
  return 1;
}

extern "C" cudaError_t emu_context_error(void) { return sticky_error; }
extern "C" cudaError_t emu_done(cudaError_t e) {
  return sticky_error != cudaSuccess ? sticky_error : e;
}

const char *cudaGetErrorName(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "cudaSuccess";
  case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
  case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
  case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
  case cudaErrorInsufficientDriver: return "cudaErrorInsufficientDriver";
  case cudaErrorNoDevice: return "cudaErrorNoDevice";
  case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
  case cudaErrorInvalidResourceHandle: return "cudaErrorInvalidResourceHandle";
  case cudaErrorNotReady: return "cudaErrorNotReady";
  case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
  case cudaErrorIllegalAddress: return "cudaErrorIllegalAddress";
  case cudaErrorECCUncorrectable: return "cudaErrorECCUncorrectable";
  case cudaErrorNvlinkUncorrectable: return "cudaErrorNvlinkUncorrectable";
  case cudaErrorContained: return "cudaErrorContained";
  case cudaErrorLaunchTimeout: return "cudaErrorLaunchTimeout";
  case cudaErrorAssert: return "cudaErrorAssert";
  case cudaErrorHardwareStackError: return "cudaErrorHardwareStackError";
  case cudaErrorIllegalInstruction: return "cudaErrorIllegalInstruction";
  case cudaErrorMisalignedAddress: return "cudaErrorMisalignedAddress";
  case cudaErrorInvalidAddressSpace: return "cudaErrorInvalidAddressSpace";
  case cudaErrorInvalidPc: return "cudaErrorInvalidPc";
  }
  return "cudaErrorUnknown";
}

const char *cudaGetErrorString(cudaError_t e) {
  switch (e) {
  case cudaSuccess: return "no error";
  case cudaErrorInvalidValue: return "invalid argument";
  case cudaErrorMemoryAllocation: return "out of memory";
  case cudaErrorInvalidConfiguration: return "invalid configuration argument";
  case cudaErrorLaunchFailure: return "unspecified launch failure (emulator: see stderr)";
  case cudaErrorIllegalAddress:
    return "an illegal memory access was encountered (emulator: see stderr)";
  default: return cudaGetErrorName(e);
  }
}

cudaError_t cudaGetLastError(void) {
  const cudaError_t e = launch_error;
  launch_error = cudaSuccess;
  return emu_done(e);
}

cudaError_t cudaRuntimeGetVersion(int *v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}

// The devices the process sees: 1, or A3FTA_EMU_DEVICES=N (0: none, as a
// node without GPUs; several: one node's GPUs, each with its own PCI bus id,
// all backed by the same host memory), for tests of which rank takes which.
static int device_count(void) {
  static const int n = [] {
    const char *e = getenv("A3FTA_EMU_DEVICES");
    return e && *e ? atoi(e) : 1;
  }();
  return n;
}

cudaError_t cudaGetDeviceCount(int *n) {
  *n = device_count();
  return *n > 0 ? cudaSuccess : emu_done(cudaErrorNoDevice);
}

// The emulated device's memory: 4 GiB, or A3FTA_EMU_DEVICE_MB; cudaMalloc
// fails with cudaErrorMemoryAllocation past it, as a full GPU does.
static size_t device_memory(void) {
  static const size_t bytes = [] {
    const char *e = getenv("A3FTA_EMU_DEVICE_MB");
    const long mb = e ? atol(e) : 0;
    return mb > 0 ? (size_t)mb << 20 : (size_t)4 << 30;
  }();
  return bytes;
}

cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device) {
  if (device < 0 || device >= device_count()) return emu_done(cudaErrorInvalidDevice);
  memset(p, 0, sizeof *p);
  snprintf(p->name, sizeof p->name, "a3fta CUDA emulator (CPU)");
  p->pciBusID = 0x10 + device;
  p->totalGlobalMem = device_memory();
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = 1;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->sharedMemPerBlock = 48 * 1024;
  return cudaSuccess;
}

cudaError_t cudaSetDevice(int device) {
  return device >= 0 && device < device_count() ? cudaSuccess : emu_done(cudaErrorInvalidDevice);
}

// Every live cudaMalloc block: start -> bytes. Device pointers must point
// into one (emu_is_device_pointer): a host pointer given to a kernel, a GEMM
// or a collective faults on a GPU, and fails the call here.
static std::map<uintptr_t, size_t> &device_blocks() {
  static std::map<uintptr_t, size_t> blocks;
  return blocks;
}

extern "C" int emu_is_device_pointer(const void *p) {
  if (!p) return 1;
  const std::map<uintptr_t, size_t> &b = device_blocks();
  auto it = b.upper_bound((uintptr_t)p);
  if (it == b.begin()) return 0;
  --it;
  return (uintptr_t)p <= it->first + it->second; // one past the end too
}

// Device memory in use now and at most, in bytes. With A3FTA_EMU_MEMORY
// set, the process says at exit what it left allocated and its peak (one
// line on stderr), so that a test can tell a leak that grows with the work
// (tests/cuda_emu/sweep_device_emu.sh).
static size_t live_bytes = 0, peak_bytes = 0;

static void report_memory(void) {
  fprintf(stderr,
          "cuda emulator memory: %zu blocks, %zu bytes live at exit; peak %zu bytes; %lld "
          "kernels run\n",
          device_blocks().size(), live_bytes, peak_bytes, kernels_run);
}

// 256-byte aligned, as cudaMalloc's, and full of NaNs (all bits set), so
// that reading memory no op wrote shows in the results.
cudaError_t cudaMalloc(void **p, size_t bytes) {
  *p = NULL;
  if (sticky_error != cudaSuccess) return sticky_error;
  // Out of memory is not sticky, but it is the thread's last error until
  // cudaGetLastError reads it, as with the CUDA runtime.
  const size_t need = bytes ? bytes : 1;
  if (need > device_memory() - live_bytes || posix_memalign(p, 256, need) != 0) {
    *p = NULL;
    emu_set_launch_error(cudaErrorMemoryAllocation);
    return cudaErrorMemoryAllocation;
  }
  memset(*p, 0xff, need);
  device_blocks()[(uintptr_t)*p] = need;
  // Registered once the map exists, so that it runs before the map's destructor.
  static bool report = getenv("A3FTA_EMU_MEMORY") && atexit(report_memory) == 0;
  (void)report;
  live_bytes += need;
  if (live_bytes > peak_bytes) peak_bytes = live_bytes;
  return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes) {
  *free_bytes = device_memory() - live_bytes;
  *total_bytes = device_memory();
  return emu_done(cudaSuccess);
}

// Frees after the queued work has run, as cudaFree synchronizes the device.
cudaError_t cudaFree(void *p) {
  emu_run_all_streams();
  if (p) {
    auto it = device_blocks().find((uintptr_t)p);
    if (it == device_blocks().end()) return cudaErrorInvalidValue;
    live_bytes -= it->second;
    device_blocks().erase(it);
  }
  free(p);
  return emu_done(cudaSuccess);
}

cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest) {
  *least = 0;
  *greatest = -5;
  return cudaSuccess;
}
