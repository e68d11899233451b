// Picks OpenBLAS's kernels for this CPU before the first GEMM.
//
// Debian's OpenBLAS 0.3.21 is a DYNAMIC_ARCH build that chooses its kernel
// set once, when the library loads: from OPENBLAS_CORETYPE if set, else from
// its own CPU detection, which predates the CPUs a3fta runs on (it falls back
// to SSE3 "Prescott" kernels on the project's Intel build machines). So the
// speed of every GEMM depends on something users do not know about. Calling
// setenv() from a3fta is too late by itself, as OpenBLAS has already read the
// variable in its load-time constructor; but OpenBLAS exports the pair that
// constructor uses: gotoblas_dynamic_quit() forgets the kernel table and
// gotoblas_dynamic_init() re-runs the choice, reading OPENBLAS_CORETYPE
// again. No BLAS call is in flight when the backend is first used, so
// re-running the choice then is safe.
//
// Measured on a 2-core AMD EPYC (Zen 5, family 26, AVX-512 + BF16) KVM guest,
// sgemm 512^3, all kernel sets switched this way in ONE process, interleaved
// over 15 rounds, best time (these shared machines drift 2x between runs):
//   kernels      2 threads   1 thread   (GFLOP/s)
//   Prescott          90         47      SSE3 fallback
//   Haswell          253        131      AVX2
//   SkylakeX         467        250      AVX-512
//   Cooperlake       468        252      AVX-512 (+ BF16, unused by sgemm)
// OpenBLAS itself detects this CPU as Cooperlake, but the sessions' machines
// export OPENBLAS_CORETYPE=Haswell, which halves GEMM speed. DESIGN.md
// records 65 (SSE3) vs 290 (Cooperlake) on the Intel build machines.
//
// Policy: a3fta picks the best kernel set the CPU's features allow, also over
// an OPENBLAS_CORETYPE from the environment (kernel choice changes speed, not
// results beyond rounding). A3FTA_BLAS_CORETYPE=<name> forces a kernel set;
// A3FTA_BLAS_CORETYPE=keep leaves OpenBLAS's own choice alone (e.g. to keep
// one kernel set, hence identical rounding, across a mixed cluster).
// The choice follows the features, not a timing race, so that one machine
// always runs the same kernels. Without the symbols (an OpenBLAS that is not
// DYNAMIC_ARCH) nothing changes.
//
// When OpenBLAS already runs the kernel set a3fta would pick (an
// OPENBLAS_CORETYPE exported before the process started, as tools/test.sh
// does), nothing is switched: the switch is the one moment the kernel table
// is NULL, and on the build machines a process crashed there a few times in
// many thousands (inside gotoblas_dynamic_init, at its gotoblas->init() call,
// which found gotoblas NULL again; the other writer is not known).
#define _POSIX_C_SOURCE 200809L
#include "cpu_ops.h"

#include <cblas.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#if defined(__GNUC__)
// Weak: an OpenBLAS that is not DYNAMIC_ARCH does not have them.
extern void gotoblas_dynamic_init(void) __attribute__((weak));
extern void gotoblas_dynamic_quit(void) __attribute__((weak));
static int can_switch(void) { return gotoblas_dynamic_init && gotoblas_dynamic_quit; }

// Re-runs OpenBLAS's kernel choice with OPENBLAS_CORETYPE = core, then
// restores the variable as it was (child processes make their own choice).
static void switch_kernels(const char *core) {
  const char *old = getenv("OPENBLAS_CORETYPE");
  char saved[64] = "";
  if (old) snprintf(saved, sizeof saved, "%s", old);
  setenv("OPENBLAS_CORETYPE", core, 1);
  gotoblas_dynamic_quit();
  gotoblas_dynamic_init();
  if (old)
    setenv("OPENBLAS_CORETYPE", saved, 1);
  else
    unsetenv("OPENBLAS_CORETYPE");
}
#else
static int can_switch(void) { return 0; }
static void switch_kernels(const char *core) { (void)core; }
#endif

static char blas_info[256] = "OpenBLAS (not set up yet)";

// Whether OpenBLAS runs the kernel set `core` now.
static int running(const char *core) {
  const char *now = openblas_get_corename();
  return now && strcasecmp(now, core) == 0;
}

// The newest OpenBLAS 0.3.21 kernel set this CPU can run, or NULL.
static const char *best_coretype(void) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __builtin_cpu_init();
  const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                     __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  if (avx512 && __builtin_cpu_supports("avx512bf16")) return "Cooperlake";
  if (avx512) return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return NULL;
}

static void blas_setup_once(void) {
  // Copied: setenv() below may free the string getenv() returned.
  char env[64] = "";
  if (getenv("OPENBLAS_CORETYPE")) snprintf(env, sizeof env, "%s", getenv("OPENBLAS_CORETYPE"));
  const char *force = getenv("A3FTA_BLAS_CORETYPE");
  const char *pick = (force && *force) ? force : best_coretype();
  char how[128] = "OpenBLAS's own choice";
  if (*env) snprintf(how, sizeof how, "OPENBLAS_CORETYPE=%s", env);
  if (pick && strcmp(pick, "keep") != 0 && !running(pick) && can_switch()) {
    switch_kernels(pick);
    if (force && *force)
      snprintf(how, sizeof how, "A3FTA_BLAS_CORETYPE=%s", force);
    else if (*env && strcmp(env, pick) != 0)
      snprintf(how, sizeof how, "picked by a3fta from the CPU's features over OPENBLAS_CORETYPE=%s",
               env);
    else
      snprintf(how, sizeof how, "picked by a3fta from the CPU's features");
  }
  snprintf(blas_info, sizeof blas_info, "%s; kernels %s (%s); %d threads", openblas_get_config(),
           openblas_get_corename(), how, openblas_get_num_threads());
}

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

void cpu_blas_setup(void) { pthread_once(&blas_once, blas_setup_once); }

const char *a3_backend_cpu_blas_info(void) {
  cpu_blas_setup(); // on first use
  return blas_info;
}

void a3_backend_cpu_set_threads(int n) {
  cpu_blas_setup();
  if (n > 0) {
    openblas_set_num_threads(n);
    omp_set_num_threads(n); // the OpenMP loops and oneDNN (its OpenMP runtime)
  }
}

int a3_backend_cpu_threads(void) { return openblas_get_num_threads(); }
