// a3fta core: status codes with file:line context, rank-aware logging,
// counter-based RNG. The lowest layer: it includes nothing of a3fta.
#ifndef A3FTA_CORE_H
#define A3FTA_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

// ---------------------------------------------------------------- status
// Every fallible function returns an a3_status. On failure the callee has
// recorded a message (a3_error_set) and each caller on the way up appends its
// file:line (A3_TRY), so the top level prints one line saying what went
// wrong, where, and how to fix it, plus the call trail with --verbose.
typedef enum {
  A3_OK = 0,
  A3_ERR_USAGE,         // bad command line                        -> exit 2
  A3_ERR_CONFIG,        // bad YAML config or override             -> exit 2
  A3_ERR_INPUT,         // malformed input file (IDX, PNG, HDF5..)  -> exit 2
  A3_ERR_IO,            // cannot open/read/write a file           -> exit 1
  A3_ERR_NOMEM,         // allocation failed                       -> exit 1
  A3_ERR_MPI,           // MPI call failed or ranks disagree       -> exit 1
  A3_ERR_HDF5,          // HDF5 call failed                        -> exit 1
  A3_ERR_CUDA,          // CUDA / cuBLAS / NCCL failure            -> exit 1
  A3_ERR_INTERNAL,      // broken invariant (a bug in a3fta)       -> exit 1
  A3_ERR_UNIMPLEMENTED, // feature not built yet              -> exit 1
  A3_ERR_DIVERGED,      // the training loss became NaN or infinite -> exit 1
} a3_status;

#if defined(__GNUC__)
#define A3_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#define A3_WARN_UNUSED __attribute__((warn_unused_result))
#else
#define A3_PRINTF(fmt_index, first_arg)
#define A3_WARN_UNUSED
#endif

// Records the error (replacing any earlier one) and returns `code`.
a3_status a3_error_set(a3_status code, const char *file, int line, const char *fmt, ...)
    A3_PRINTF(4, 5);
a3_status a3_error_setv(a3_status code, const char *file, int line, const char *fmt, va_list ap);
// Appends "file:line" of a caller to the trail of the current error.
void a3_error_trace(const char *file, int line);
const char *a3_error_message(void); // "" when no error was recorded
const char *a3_error_trail(void);   // "src/io/config.c:120 <- src/cli/main.c:88"
void a3_error_clear(void);
const char *a3_status_name(a3_status s); // "config error", "I/O error", ...
int a3_status_exit_code(a3_status s);    // 0, 1 or 2 (see the enum)

// Fail with a message: `return A3_FAIL(A3_ERR_INPUT, "%s: bad magic", path);`
#define A3_FAIL(code, ...) a3_error_set((code), __FILE__, __LINE__, __VA_ARGS__)
// Propagate a failure up the stack, adding this file:line to the trail.
#define A3_TRY(expr)                                                                               \
  do {                                                                                             \
    a3_status a3_try_status_ = (expr);                                                             \
    if (a3_try_status_ != A3_OK) {                                                                 \
      a3_error_trace(__FILE__, __LINE__);                                                          \
      return a3_try_status_;                                                                       \
    }                                                                                              \
  } while (0)
// Same, but jump to a cleanup label with `status` set instead of returning.
#define A3_TRY_GOTO(status, expr, label)                                                           \
  do {                                                                                             \
    (status) = (expr);                                                                             \
    if ((status) != A3_OK) {                                                                       \
      a3_error_trace(__FILE__, __LINE__);                                                          \
      goto label;                                                                                  \
    }                                                                                              \
  } while (0)

// ---------------------------------------------------------------- memory
// malloc/calloc that record A3_ERR_NOMEM with the requested size on failure.
a3_status a3_alloc(void **out, size_t count, size_t size) A3_WARN_UNUSED;
#define A3_ALLOC(ptr, count) a3_alloc((void **)&(ptr), (count), sizeof(*(ptr)))
// Reads a whole file (at most max_bytes, else A3_ERR_INPUT) into a NUL-terminated buffer.
a3_status a3_read_file(const char *path, size_t max_bytes, char **out,
                       size_t *out_len) A3_WARN_UNUSED;

// Makes a finished temporary file the real one, durably: fsync(tmp), rename
// onto path, fsync the folder (best effort). A kill at any moment leaves
// either the old file or the complete new one, never a half-written file.
a3_status a3_publish_file(const char *tmp_path, const char *path) A3_WARN_UNUSED;

// ---------------------------------------------------------------- logging
// Arithmetic precision of the matrix products (train.precision; see backend.h).
typedef enum { A3_PRECISION_FP32, A3_PRECISION_TF32, A3_PRECISION_BF16 } a3_precision;

typedef enum { A3_LOG_ERROR = 0, A3_LOG_WARN, A3_LOG_INFO, A3_LOG_DEBUG } a3_log_level;
void a3_log_set_level(a3_log_level level); // --quiet: WARN, default: INFO, --verbose: DEBUG
a3_log_level a3_log_get_level(void);
// Once MPI is up: lines get a "[rank r/n] " prefix when n > 1.
void a3_log_set_rank(int rank, int size);
void a3_log(a3_log_level level, const char *fmt, ...) A3_PRINTF(2, 3);
#define a3_info(...) a3_log(A3_LOG_INFO, __VA_ARGS__)
#define a3_warn(...) a3_log(A3_LOG_WARN, __VA_ARGS__)
#define a3_debug(...) a3_log(A3_LOG_DEBUG, __VA_ARGS__)
// Prints the current error as "a3fta: <kind>: <message>" (+ trail with --verbose).
void a3_log_error_status(a3_status s);

// ---------------------------------------------------------------- RNG
// Philox4x32-10: counter-based, so the same (key, counter) gives the same
// numbers on any rank, machine or backend (cuRAND uses the same generator).
typedef struct {
  uint32_t v[4];
} a3_philox_block;

// A3_HD marks inline functions that CUDA files compile for the device as
// well, so that a kernel draws its numbers with the host's very code.
#ifdef __CUDACC__
#define A3_HD __host__ __device__
#else
#define A3_HD
#endif

// One Philox round on the counter c (4 words) under the key (k0, k1).
static inline A3_HD void a3_philox_round(uint32_t c[4], uint32_t k0, uint32_t k1) {
  const uint64_t p0 = (uint64_t)0xD2511F53u * c[0];
  const uint64_t p1 = (uint64_t)0xCD9E8D57u * c[2];
  const uint32_t c1 = c[1], c3 = c[3];
  c[0] = (uint32_t)(p1 >> 32) ^ c1 ^ k0;
  c[1] = (uint32_t)p1;
  c[2] = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
  c[3] = (uint32_t)p0;
}

// The block of (key, counter): a3_philox4x32 is this, kept inline for
// kernels (a3fta/backend_noise.h).
static inline A3_HD a3_philox_block a3_philox4x32_hd(uint64_t key, uint64_t counter_hi,
                                                     uint64_t counter_lo) {
  uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
  a3_philox_block b = {{(uint32_t)counter_lo, (uint32_t)(counter_lo >> 32), (uint32_t)counter_hi,
                        (uint32_t)(counter_hi >> 32)}};
  for (int round = 0; round < 10; round++) {
    a3_philox_round(b.v, k0, k1);
    k0 += 0x9E3779B9u; // the bump after the last round is never used
    k1 += 0xBB67AE85u;
  }
  return b;
}
a3_philox_block a3_philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo);
// A uniform 64-bit value for (seed, stream, index); stream separates uses.
uint64_t a3_rng_u64(uint64_t seed, uint64_t stream, uint64_t index);
// Uniform integer in [0, n) without modulo bias (n > 0).
uint64_t a3_rng_below(uint64_t seed, uint64_t stream, uint64_t index, uint64_t n);
// Streams in use (one per purpose, so adding a use never shifts another's numbers).
enum { A3_STREAM_SUBSET = 1, A3_STREAM_SHUFFLE = 2, A3_STREAM_INIT = 3 };

// ---------------------------------------------------------------- runs
// The run that position p falls in, for runs laid end to end: the last j in
// [lo, hi) with begin[j] <= p (begin non-decreasing, begin[lo] <= p <
// begin[hi]; an empty run is never the answer). Kernels that walk many runs in one launch (the NCCL
// bucket packing, the optimizer over every trainable segment) find each element's run with it, and
// the CPU tests check it with the very same code.
static inline A3_HD int a3_run_at(const int64_t *begin, int lo, int hi, int64_t p) {
  while (hi - lo > 1) {
    const int mid = lo + (hi - lo) / 2;
    if (begin[mid] <= p)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

// ---------------------------------------------------------------- hashing
// FNV-1a 64: stable across runs and machines (used for config hashes).
uint64_t a3_hash64(const void *data, size_t len, uint64_t seed);
#define A3_HASH_SEED 0xcbf29ce484222325ULL

#endif
