// linear y = x W^T + b on the CPU: one sgemm each way, W in PyTorch's (OUT, IN) layout.
//
// The GEMMs are oneDNN's sgemm (dnnl_sgemm, row-major), not OpenBLAS's: it
// threads with the same OpenMP pool as every other op (OpenBLAS keeps a
// pthread pool of its own, whose spinning threads fought OpenMP's for the
// cores), runs single-threaded when called inside a parallel region, and has
// little per-call overhead on the model's small shapes. Measured
// (tools/bench/run_ops.sh rows, B = 64, best of 3 interleaved runs, 2-core
// AMD EPYC Zen 5), ms per call, OpenBLAS (its own pool) -> oneDNN:
//                                        1 thread        2 threads
//   to_q/k/v/out at 8x8 (4096x64->64)  fwd 0.157 -> 0.151   0.170 -> 0.084
//                                      bwd 0.475 -> 0.311   0.553 -> 0.159
// and inside the training step, where OpenBLAS's spinning pool also slowed
// the OpenMP ops around it, the attention projections went from 0.97 / 3.6
// ms to ~0.1 / ~0.2 ms per call (2 threads, A3FTA_PROFILE=1).
#include "cpu_ops.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <string.h>

// Columns per parallel block of the bias gradient (one cache line of floats).
enum { LIN_COLS = 16 };

// GEMMs below this many multiply-adds run on the calling thread: the time
// embedding's projections (64x128x64, ~10 us of work) cost more to spread
// over a thread team than they take, and on a busy machine a team waits
// for a descheduled thread at every region.
#define LIN_SERIAL_MACS (1 << 18)

void cpu_sgemm(char ta, char tb, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc) {
  const int nt = omp_get_max_threads();
  const int serial = nt > 1 && (double)M * N * K < LIN_SERIAL_MACS && !omp_in_parallel();
  if (serial) omp_set_num_threads(1); // what oneDNN's sgemm reads for its thread count
  dnnl_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  if (serial) omp_set_num_threads(nt);
}

void cpu_linear_forward(const a3_backend *be,
                        a3_act *out_act,       // (N, OUT)
                        const a3_act *inp_act, // (N, IN)
                        const float *weight,   // (OUT, IN)
                        const float *bias,     // (OUT) or NULL
                        int N, int IN, int OUT) {
  float *out = a3_f32_act(out_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  // The bias is preloaded so the GEMM adds onto it (beta = 1).
  if (bias) {
#pragma omp parallel for schedule(static) if ((size_t)N * OUT >= CPU_PAR_MIN)
    for (int n = 0; n < N; n++) memcpy(out + (size_t)n * OUT, bias, (size_t)OUT * sizeof(float));
  }
  cpu_sgemm('N', 'T', N, OUT, IN, 1.0f, inp, IN, weight, IN, bias ? 1.0f : 0.0f, out, OUT);
}

// dbias (OUT) += column sums of dout (N, OUT), in double and in row order
// (the same sums whatever the thread count): blocks of LIN_COLS columns in
// parallel, each walking all rows.
CPU_CLONES static void bias_grad_block(float *dbias, const float *dout, int N, int OUT, int o0,
                                       int o1) {
  double acc[LIN_COLS] = {0};
  for (int n = 0; n < N; n++) {
    const float *row = dout + (size_t)n * OUT;
    for (int o = o0; o < o1; o++) acc[o - o0] += row[o];
  }
  for (int o = o0; o < o1; o++) dbias[o] += (float)acc[o - o0];
}

static void bias_grad(float *dbias, const float *dout, int N, int OUT) {
  const int blocks = (OUT + LIN_COLS - 1) / LIN_COLS;
#pragma omp parallel for schedule(static) if ((size_t)N * OUT >= CPU_PAR_MIN && blocks > 1)
  for (int k = 0; k < blocks; k++)
    bias_grad_block(dbias, dout, N, OUT, k * LIN_COLS,
                    (k + 1) * LIN_COLS < OUT ? (k + 1) * LIN_COLS : OUT);
}

void cpu_linear_backward(const a3_backend *be,
                         a3_act *dinp_act,       // (N, IN) overwritten, or NULL
                         float *dweight,         // (OUT, IN) +=, or NULL
                         float *dbias,           // (OUT) +=, or NULL
                         const a3_act *dout_act, // (N, OUT)
                         const a3_act *inp_act,  // (N, IN)
                         const float *weight,    // (OUT, IN)
                         int N, int IN, int OUT) {
  float *dinp = a3_f32_act(dinp_act);
  const float *dout = a3_f32_cact(dout_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  if (dinp) // dinp (N, IN) = dout (N, OUT) @ W (OUT, IN)
    cpu_sgemm('N', 'N', N, IN, OUT, 1.0f, dout, OUT, weight, IN, 0.0f, dinp, IN);
  if (dweight) // dW (OUT, IN) += dout^T (OUT, N) @ inp (N, IN)
    cpu_sgemm('T', 'N', OUT, IN, N, 1.0f, dout, OUT, inp, IN, 1.0f, dweight, IN);
  if (dbias) bias_grad(dbias, dout, N, OUT);
}
