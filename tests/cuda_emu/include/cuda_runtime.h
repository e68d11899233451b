// The CUDA emulator's runtime header (tests/cuda_emu/README.md): the part of
// CUDA's language and runtime API that src/backend/cuda uses, for C++ on the
// CPU. Kernels run on the host, one block after another; each of a block's
// threads is a fiber, so __syncthreads and the warp shuffles block and
// resume them as a GPU's barriers do. Memory is host memory; device work is
// queued on streams and runs when the host waits for it (emu_streams.cpp).
//
// It lets CI run the CUDA backend's own kernels and launch code against the
// CPU backend where there is no GPU. It says nothing about what only a GPU
// shows: races between threads that a fixed schedule hides, the memory
// model, cuBLAS's and cuDNN's own behaviour, speed.
#ifndef A3FTA_CUDA_EMU_RUNTIME_H
#define A3FTA_CUDA_EMU_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <type_traits>
#include <utility>

// ---------------------------------------------------------------- qualifiers
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
// Blocks run one at a time, so one static per declaration is each block's;
// translate.py follows each declaration with emu_fresh_shared, which fills it
// with NaNs once per block.
#define __shared__ static
extern "C" void emu_fresh_shared(void *p, size_t bytes);
#define __launch_bounds__(...)

// ---------------------------------------------------------------- vector types
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
struct alignas(16) float4 {
  float x, y, z, w;
};
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }

// The running thread's coordinates: set by the scheduler at every switch.
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
enum { warpSize = 32 };

// ---------------------------------------------------------------- barriers
extern "C" void emu_syncthreads(const char *file, int line); // the __syncthreads' place
// The value of lane (this lane ^ lane_mask) of the warp.
extern "C" uint64_t emu_shfl_xor(uint64_t bits, int lane_mask);
// The memory clobber: values other threads stored before the barrier are
// read again, not kept in registers.
static inline void emu_block_barrier(const char *file, int line) {
  emu_syncthreads(file, line);
  __asm__ __volatile__("" ::: "memory");
}
#define __syncthreads() emu_block_barrier(__FILE__, __LINE__)

template <typename T> static inline T __shfl_xor_sync(unsigned, T v, int lane_mask, int = 32) {
  static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
  uint64_t bits = 0;
  memcpy(&bits, &v, sizeof v);
  bits = emu_shfl_xor(bits, lane_mask);
  T r;
  memcpy(&r, &bits, sizeof r);
  return r;
}

// ---------------------------------------------------------------- intrinsics
// The kernels are compiled with FMA contraction on, as nvcc compiles device
// code; these stay single roundings, never fused (the empty asm pins their
// operands and result in registers, where no FMA can reach them).
#define EMU_PIN(v) __asm__("" : "+x"(v))
#define EMU_RN(name, expr)                                                                         \
  static inline float name(float a, float b) {                                                     \
    EMU_PIN(a);                                                                                    \
    EMU_PIN(b);                                                                                    \
    float r = (expr);                                                                              \
    EMU_PIN(r);                                                                                    \
    return r;                                                                                      \
  }
EMU_RN(__fadd_rn, a + b)
EMU_RN(__fsub_rn, a - b)
EMU_RN(__fmul_rn, a *b)
EMU_RN(__fdiv_rn, a / b)
#undef EMU_RN
static inline float __fsqrt_rn(float a) {
  EMU_PIN(a);
  float r = sqrtf(a);
  EMU_PIN(r);
  return r;
}
// CUDA's min for ints (the one the kernels use).
static inline int min(int a, int b) { return a < b ? a : b; }

// ---------------------------------------------------------------- emulator helpers
// To 10 explicit mantissa bits, to nearest (ties away from zero), as the
// conversion to TF32 does: the emulated cuBLAS's and cuDNN's tf32 math.
static inline float emu_round_tf32(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  if ((u & 0x7f800000u) != 0x7f800000u) u = (u + 0x1000u) & 0xffffe000u;
  memcpy(&f, &u, sizeof f);
  return f;
}

// ---------------------------------------------------------------- runtime API
typedef enum cudaError {
  cudaSuccess = 0,
  cudaErrorIllegalAddress = 700,
  cudaErrorInvalidValue = 1,
  cudaErrorMemoryAllocation = 2,
  cudaErrorInvalidConfiguration = 9,
  cudaErrorInsufficientDriver = 35,
  cudaErrorNoDevice = 100,
  cudaErrorInvalidDevice = 101,
  cudaErrorInvalidResourceHandle = 400,
  cudaErrorNotReady = 600,
  cudaErrorLaunchFailure = 719,
  // The other errors that break a context for good (never returned here;
  // named so that code classifying them compiles): CUDA's values.
  cudaErrorECCUncorrectable = 214,
  cudaErrorNvlinkUncorrectable = 220,
  cudaErrorContained = 226,
  cudaErrorLaunchTimeout = 702,
  cudaErrorAssert = 710,
  cudaErrorHardwareStackError = 714,
  cudaErrorIllegalInstruction = 715,
  cudaErrorMisalignedAddress = 716,
  cudaErrorInvalidAddressSpace = 717,
  cudaErrorInvalidPc = 718,
} cudaError_t;

typedef enum cudaMemcpyKind {
  cudaMemcpyHostToHost = 0,
  cudaMemcpyHostToDevice = 1,
  cudaMemcpyDeviceToHost = 2,
  cudaMemcpyDeviceToDevice = 3,
  cudaMemcpyDefault = 4,
} cudaMemcpyKind;

typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
#define cudaStreamDefault 0x0u
#define cudaStreamNonBlocking 0x1u
#define cudaEventDefault 0x0u
#define cudaEventDisableTiming 0x2u

typedef struct cudaDeviceProp {
  char name[256];
  size_t totalGlobalMem;
  int major, minor;
  int multiProcessorCount;
  int warpSize;
  int maxThreadsPerBlock;
  size_t sharedMemPerBlock;
  int pciBusID, pciDeviceID, pciDomainID;
} cudaDeviceProp;

#define CUDART_VERSION 13000

const char *cudaGetErrorName(cudaError_t e);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaGetLastError(void);
cudaError_t cudaRuntimeGetVersion(int *v);
cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaMalloc(void **p, size_t bytes);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
template <typename T> static inline cudaError_t cudaMalloc(T **p, size_t bytes) {
  return cudaMalloc((void **)p, bytes);
}
cudaError_t cudaFree(void *p);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t s = 0);
cudaError_t cudaMemsetAsync(void *p, int value, size_t bytes, cudaStream_t s = 0);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned flags, int priority);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags = 0);
cudaError_t cudaDeviceGetStreamPriorityRange(int *least, int *greatest);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventCreate(cudaEvent_t *e);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
// The time between the two records, as the host's clock saw them run
// (cudaErrorNotReady until both have; cudaErrorInvalidResourceHandle for a
// never-recorded one or one made with cudaEventDisableTiming).
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t start, cudaEvent_t stop);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s = 0);
cudaError_t cudaEventQuery(cudaEvent_t e);
cudaError_t cudaDeviceSynchronize(void);

// ---------------------------------------------------------------- streams
// Queues device work on stream s (NULL: the legacy default stream); it runs
// when the host waits for it (emu_streams.cpp).
void emu_enqueue(cudaStream_t s, std::function<void()> work);
// Queues work that goes on after it starts (a collective waiting for its
// peers): `start` runs once, then the stream stays held until `finished`
// answers true; a host wait for it polls, a query answers cudaErrorNotReady.
void emu_enqueue_polled(cudaStream_t s, std::function<void()> start,
                        std::function<bool()> finished);
// Runs everything queued on s so far, after what it waits for (sleeping
// through stalls); or, trying, as far as it goes without sleeping: true if
// all of it ran.
void emu_run_stream(cudaStream_t s);
bool emu_try_run_stream(cudaStream_t s);
// Holds s back for `seconds` from now, as long work queued there would.
extern "C" void emu_stall_stream(cudaStream_t s, double seconds);
extern "C" void emu_run_all_streams(void);
// The context's error once a kernel failed (cudaSuccess before); e unless so.
extern "C" cudaError_t emu_context_error(void);
extern "C" cudaError_t emu_done(cudaError_t e);

// ---------------------------------------------------------------- launches
// The translator (translate.py) turns `k<<<grid, block, shmem, stream>>>(args)`
// into `emu_launch("k", grid, block, shmem, stream, k, args)`.
typedef void (*emu_thread_body)(void *ctx);
// Whether a GPU takes this launch; if not, records
// cudaErrorInvalidConfiguration for cudaGetLastError.
extern "C" int emu_launch_config_ok(dim3 grid, dim3 block, size_t shmem);
// Runs body(ctx) as every thread of every block of a legal launch.
extern "C" void emu_run_grid(const char *name, dim3 grid, dim3 block, emu_thread_body body,
                             void *ctx);
// Whether p is NULL or points into (or just past) a cudaMalloc block.
extern "C" int emu_is_device_pointer(const void *p);
// A kernel given a host pointer: says which, and fails the launch as a GPU's
// illegal address would (cudaErrorIllegalAddress, for good).
extern "C" void emu_bad_pointer(const char *kernel, int arg, const void *p);

// Whether a struct argument's pointer-aligned words hold no host pointer: a
// block of the host heap (only in ASan builds, whose allocator knows its
// blocks) or the host thread's stack; if one does, as emu_bad_pointer.
extern "C" int emu_struct_ok(const char *kernel, int arg, const void *v, size_t bytes);

template <typename T> static inline int emu_arg_ok(const char *kernel, int arg, const T &v) {
  if constexpr (std::is_pointer<T>::value) {
    if (!emu_is_device_pointer((const void *)v)) {
      emu_bad_pointer(kernel, arg, (const void *)v);
      return 0;
    }
  } else if constexpr (std::is_class<T>::value && alignof(T) >= alignof(void *)) {
    return emu_struct_ok(kernel, arg, &v, sizeof v);
  }
  return 1;
}

template <typename... P> struct emu_kernel_call {
  void (*kernel)(P...);
  std::tuple<typename std::decay<P>::type...> args;
  static void run(void *ctx) {
    emu_kernel_call *c = (emu_kernel_call *)ctx;
    std::tuple<typename std::decay<P>::type...> mine = c->args; // parameters are per thread
    std::apply(c->kernel, mine);
  }
  // Every pointer argument is device memory.
  bool pointers_ok(const char *name) const {
    int arg = 0, ok = 1;
    std::apply([&](const auto &...v) { ((ok &= emu_arg_ok(name, arg++, v)), ...); }, args);
    return ok;
  }
};

template <typename... P, typename... A>
static inline void emu_launch(const char *name, dim3 grid, dim3 block, size_t shmem, cudaStream_t s,
                              void (*kernel)(P...), A &&...args) {
  static_assert(sizeof...(P) == sizeof...(A), "kernel launched with the wrong argument count");
  emu_kernel_call<P...> call{kernel, std::tuple<typename std::decay<P>::type...>(
                                         static_cast<typename std::decay<P>::type>(args)...)};
  if (!call.pointers_ok(name) || !emu_launch_config_ok(grid, block, shmem)) return;
  emu_enqueue(s, [name, grid, block, call]() mutable {
    emu_run_grid(name, grid, block, emu_kernel_call<P...>::run, &call);
  });
}

#endif
