// The CUDA emulator's kernel launches (tests/cuda_emu/README.md): each block
// runs on the calling thread, its GPU threads as fibers with their own
// stacks. A fiber runs until it finishes or reaches a barrier
// (__syncthreads, or a warp's shuffle); a barrier opens when every live
// thread of its block (or warp) waits there. Between block barriers, each
// warp runs as far as it can before the next starts. Barriers that can
// never open are a kernel bug, and so are threads of one block that wait at
// two different __syncthreads (the CUDA guide leaves that undefined: a GPU
// may well count them as one barrier; compute-sanitizer's synccheck reports
// it): the launch fails with cudaErrorLaunchFailure and a message naming
// the kernel, and for the latter both places.
#include "cuda_runtime.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <unordered_map>

#if defined(__SANITIZE_ADDRESS__)
#define EMU_ASAN 1
#include <sanitizer/common_interface_defs.h>
#else
#define EMU_ASAN 0
#endif

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

extern "C" void emu_set_launch_error(cudaError_t e);
extern "C" int emu_kernel_faults(const char *kernel); // emu_runtime.cpp

// Saves the callee-saved registers on the current stack, stores its pointer
// in *save and resumes the stack `to` (System V x86-64).
extern "C" void emu_switch(void **save, void *to);
__asm__(".text\n"
        ".globl emu_switch\n"
        ".type emu_switch,@function\n"
        "emu_switch:\n"
        "  pushq %rbp\n"
        "  pushq %rbx\n"
        "  pushq %r12\n"
        "  pushq %r13\n"
        "  pushq %r14\n"
        "  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n"
        "  popq %r14\n"
        "  popq %r13\n"
        "  popq %r12\n"
        "  popq %rbx\n"
        "  popq %rbp\n"
        "  ret\n"
        ".size emu_switch, .-emu_switch\n");

namespace {

enum { MAX_THREADS = 1024, STACK_BYTES = EMU_ASAN ? (1 << 20) : (256 << 10), GUARD = 4096 };
enum fiber_state { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, FINISHED };

struct fiber {
  void *sp;
  char *stack; // lowest usable byte (a guard page lies below)
  fiber_state state;
  uint3 tid;
  uint64_t shfl;            // the value this lane offers to its warp's shuffle
  const char *barrier_file; // the __syncthreads it waits at
  int barrier_line;
  void *fake_stack;
};

struct block_run {
  fiber f[MAX_THREADS];
  int n, cur;
  void *sched_sp;
  emu_thread_body body;
  void *ctx;
  const void *sched_bottom; // ASan: the scheduler's stack
  size_t sched_size;
  void *sched_fake;
};

block_run run;
const char *running_kernel; // for the crash report; NULL outside kernels

// A crash inside a kernel names it (on its own stack: a fiber's may be the
// one that overflowed), then dies of the same signal. ASan has its own.
void report_crash(int sig) {
  char line[256];
  const int n =
      running_kernel
          ? snprintf(line, sizeof line,
                     "cuda emulator: signal %d in kernel %s, block (%u,%u,%u), thread "
                     "(%u,%u,%u)\n",
                     sig, running_kernel, blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x,
                     threadIdx.y, threadIdx.z)
          : snprintf(line, sizeof line, "cuda emulator: signal %d outside kernels\n", sig);
  if (n > 0 && write(2, line, (size_t)n) < 0) _exit(128 + sig);
  signal(sig, SIG_DFL);
  raise(sig);
}

void install_crash_report() {
  static bool done;
  if (done || EMU_ASAN) return;
  done = true;
  static char alt[64 << 10];
  stack_t ss = {};
  ss.ss_sp = alt;
  ss.ss_size = sizeof alt;
  sigaltstack(&ss, NULL);
  struct sigaction sa = {};
  sa.sa_handler = report_crash;
  sa.sa_flags = SA_ONSTACK | SA_RESETHAND;
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
}

char *stack_for(int i) {
  static char *stacks[MAX_THREADS];
  if (!stacks[i]) {
    void *p = mmap(NULL, STACK_BYTES + GUARD, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      fprintf(stderr, "cuda emulator: cannot map a fiber stack\n");
      abort();
    }
    mprotect(p, GUARD, PROT_NONE); // an overflow faults instead of corrupting
    stacks[i] = (char *)p + GUARD;
  }
  return stacks[i];
}

void enter_fiber_stack() {
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(run.f[run.cur].fake_stack, &run.sched_bottom, &run.sched_size);
#endif
}

// From the running fiber back to the scheduler.
void to_scheduler(bool finished) {
  fiber *f = &run.f[run.cur];
#if EMU_ASAN
  __sanitizer_start_switch_fiber(finished ? NULL : &f->fake_stack, run.sched_bottom,
                                 run.sched_size);
#else
  (void)finished;
#endif
  emu_switch(&f->sp, run.sched_sp);
  enter_fiber_stack();
}

void fiber_main() {
  enter_fiber_stack();
  run.body(run.ctx);
  run.f[run.cur].state = FINISHED;
  to_scheduler(true);
  abort(); // a finished fiber is never resumed
}

void start_fiber(int i, uint3 tid) {
  fiber *f = &run.f[i];
  f->stack = stack_for(i);
  f->state = RUNNABLE;
  f->tid = tid;
  f->fake_stack = NULL;
  f->shfl = ~(uint64_t)0; // a lane that never offered a value gives NaN bits
  uintptr_t top = ((uintptr_t)f->stack + STACK_BYTES) & ~(uintptr_t)15;
  void **slot = (void **)(top - 16); // fiber_main starts as if called: rsp = 8 mod 16
  slot[0] = (void *)fiber_main;
  for (int r = 1; r <= 6; r++) slot[-r] = NULL; // the six registers emu_switch pops
  f->sp = (void *)(slot - 6);
}

void resume(int i) {
  run.cur = i;
  threadIdx = run.f[i].tid;
#if EMU_ASAN
  __sanitizer_start_switch_fiber(&run.sched_fake, run.f[i].stack, STACK_BYTES);
#endif
  emu_switch(&run.sched_sp, run.f[i].sp);
#if EMU_ASAN
  __sanitizer_finish_switch_fiber(run.sched_fake, NULL, NULL);
#endif
}

// The first two threads of the block waiting at different __syncthreads
// (-1: none do): a block barrier never opens for them.
int divergent[2] = {-1, -1};

bool same_barrier(const fiber &a, const fiber &b) {
  return a.barrier_line == b.barrier_line && !strcmp(a.barrier_file, b.barrier_file);
}

// Opens the barrier `at` of threads first..end-1 (a warp's shuffle, or the
// block's __syncthreads) if every live one of them waits there (and, for
// __syncthreads, at the same one).
bool open_barrier(int first, int end, fiber_state at) {
  int waiting = 0, live = 0, one = -1;
  for (int i = first; i < end; i++) {
    live += run.f[i].state != FINISHED;
    if (run.f[i].state != at) continue;
    waiting++;
    if (at != AT_BLOCK_BARRIER) continue;
    if (one < 0) one = i;
    if (!same_barrier(run.f[one], run.f[i]) && divergent[0] < 0)
      divergent[0] = one, divergent[1] = i;
  }
  if (!waiting || waiting != live || divergent[0] >= 0) return false;
  for (int i = first; i < end; i++)
    if (run.f[i].state == at) run.f[i].state = RUNNABLE;
  return true;
}

// A3FTA_EMU_THREADS=reverse runs the blocks of a grid, the warps of a block
// and the lanes of a warp last first (a GPU promises no order): a read of a
// value another thread writes with no barrier between them sees it in one
// of the two orders and not in the other.
bool in_reverse() {
  static const int on = [] {
    const char *v = getenv("A3FTA_EMU_THREADS");
    if (!v || !*v || !strcmp(v, "forward")) return 0;
    if (!strcmp(v, "reverse")) return 1;
    fprintf(stderr, "cuda emulator: A3FTA_EMU_THREADS=%s: use forward or reverse\n", v);
    abort();
  }();
  return on != 0;
}

// The k-th of n (blocks, warps or lanes) to run.
long long nth(long long k, long long n) { return in_reverse() ? n - 1 - k : k; }

// Runs warp w as far as it goes alone: to the block barrier, its end, or a
// stuck shuffle. Warps thus run ahead of each other, as on a GPU, and a
// warp that writes shared memory others still read before the next
// __syncthreads shows. True if any of its threads ran.
bool run_warp(int w) {
  const int first = w * 32, lanes = (w + 1) * 32 < run.n ? 32 : run.n - first;
  bool any = false;
  for (;;) {
    bool ran = false;
    for (int k = 0; k < lanes; k++) {
      const int i = first + (int)nth(k, lanes);
      if (run.f[i].state != RUNNABLE) continue;
      resume(i);
      ran = true;
    }
    any = any || ran;
    if (!ran && !open_barrier(first, first + lanes, AT_WARP_BARRIER)) return any;
  }
}

// Runs one block to its end, warp by warp between block barriers; false
// when its threads are stuck.
bool run_block(dim3 block) {
  run.n = (int)(block.x * block.y * block.z);
  for (int i = 0; i < run.n; i++) {
    const unsigned x = i % block.x, y = (i / block.x) % block.y, z = i / (block.x * block.y);
    start_fiber(i, uint3{x, y, z});
  }
  const int warps = (run.n + 31) / 32;
  for (;;) {
    bool ran = false;
    for (int k = 0; k < warps; k++) ran = run_warp((int)nth(k, warps)) || ran;
    if (ran || open_barrier(0, run.n, AT_BLOCK_BARRIER)) continue;
    for (int i = 0; i < run.n; i++)
      if (run.f[i].state != FINISHED) return false;
    return true;
  }
}

bool legal_launch(dim3 g, dim3 b, size_t shmem) {
  const unsigned long long threads = (unsigned long long)b.x * b.y * b.z;
  return threads >= 1 && threads <= MAX_THREADS && b.z <= 64 && g.x >= 1 && g.y >= 1 && g.z >= 1 &&
         g.x <= 2147483647u && g.y <= 65535u && g.z <= 65535u && shmem <= 48 * 1024;
}

} // namespace

// The block running now, counted over all launches (emu_fresh_shared).
static uint64_t block_serial = 0;

// The first thread of a block to reach a __shared__ declaration fills the
// array with NaNs: every thread reaches its declaration before it writes
// there, so nothing of this block is lost, and a read of a slot this block
// never wrote shows, where the static would still hold the last block's.
extern "C" void emu_fresh_shared(void *p, size_t bytes) {
  static std::unordered_map<void *, uint64_t> filled_in; // array -> block
  uint64_t &serial = filled_in[p];
  if (serial == block_serial) return;
  serial = block_serial;
  memset(p, 0xff, bytes);
}

extern "C" void emu_syncthreads(const char *file, int line) {
  run.f[run.cur].barrier_file = file;
  run.f[run.cur].barrier_line = line;
  run.f[run.cur].state = AT_BLOCK_BARRIER;
  to_scheduler(false);
}

static void warp_barrier(void) {
  run.f[run.cur].state = AT_WARP_BARRIER;
  to_scheduler(false);
}

extern "C" uint64_t emu_shfl_xor(uint64_t bits, int lane_mask) {
  const int me = run.cur, lane = me & 31, base = me - lane, src = lane ^ lane_mask;
  run.f[me].shfl = bits;
  warp_barrier(); // every lane has offered its value
  const uint64_t got = (unsigned)src < 32 && base + src < run.n ? run.f[base + src].shfl : bits;
  warp_barrier(); // every lane has read before any offers the next value
  return got;
}

extern "C" int emu_launch_config_ok(dim3 grid, dim3 block, size_t shmem) {
  if (legal_launch(grid, block, shmem)) return 1;
  emu_set_launch_error(cudaErrorInvalidConfiguration);
  return 0;
}

static void report_divergent(const char *kernel) {
  const fiber &a = run.f[divergent[0]], &b = run.f[divergent[1]];
  fprintf(stderr,
          "cuda emulator: kernel %s, block (%u,%u,%u): threads wait at different __syncthreads: "
          "thread (%u,%u,%u) at %s:%d, thread (%u,%u,%u) at %s:%d (every thread of a block must "
          "reach the same one)\n",
          kernel, blockIdx.x, blockIdx.y, blockIdx.z, a.tid.x, a.tid.y, a.tid.z, a.barrier_file,
          a.barrier_line, b.tid.x, b.tid.y, b.tid.z, b.barrier_file, b.barrier_line);
}

extern "C" void emu_run_grid(const char *name, dim3 grid, dim3 block, emu_thread_body body,
                             void *ctx) {
  if (emu_kernel_faults(name)) return;
  install_crash_report();
  running_kernel = name;
  run.body = body;
  run.ctx = ctx;
  gridDim = grid;
  blockDim = block;
  const long long blocks = (long long)grid.x * grid.y * grid.z; // < 2^63 (legal_launch)
  for (long long k = 0; k < blocks; k++) {
    const long long b = nth(k, blocks);
    const unsigned x = (unsigned)(b % grid.x), y = (unsigned)(b / grid.x % grid.y),
                   z = (unsigned)(b / grid.x / grid.y);
    blockIdx = uint3{x, y, z};
    block_serial++;
    divergent[0] = divergent[1] = -1;
    if (!run_block(block)) {
      if (divergent[0] >= 0)
        report_divergent(name);
      else
        fprintf(stderr,
                "cuda emulator: kernel %s, block (%u,%u,%u): threads wait at barriers that "
                "can never open (a __syncthreads or shuffle not reached by all)\n",
                name, x, y, z);
      emu_set_launch_error(cudaErrorLaunchFailure);
      running_kernel = NULL;
      return;
    }
  }
  running_kernel = NULL;
}
