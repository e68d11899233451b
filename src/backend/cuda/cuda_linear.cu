// linear y = x W^T + b on CUDA: one GEMM each way (cu_gemm: in bf16
// precision the weight is rounded into a bf16 copy, the activations are bf16
// already, and dweight stays an fp32 +=).
//
// cuBLAS is column-major: a row-major (R, S) matrix is, to cuBLAS, the
// column-major (S, R) matrix of its transpose with leading dimension S. So
// a row-major C (M, N) = A (M, K) B (K, N) is asked for as the column-major
// C^T (N, M) = B^T (N, K) A^T (K, M), with the operands swapped.
#include "cuda_internal.h"

// out[n, o] = bias[o] (the GEMM then adds onto it with beta = 1, as the CPU;
// in bf16 the bias is rounded first, as autocast's addmm casts it to bf16).
template <typename T>
__global__ static void bias_rows_kernel(T *out, const float *bias, size_t total, int OUT) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x)
    cu_st(out + i, bias[i % (size_t)OUT]);
}

void cuda_linear_forward(const a3_backend *be,
                         a3_act *out,         // (N, OUT)
                         const a3_act *inp,   // (N, IN)
                         const float *weight, // (OUT, IN)
                         const float *bias,   // (OUT) or NULL
                         int N, int IN, int OUT) {
  if (N <= 0 || OUT <= 0) return;
  const size_t total = (size_t)N * OUT;
  if (bias) {
    CU_ACT_DISPATCH(be, {
      bias_rows_kernel<T><<<cu_blocks(total, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(
          cu_t<T>(out), bias, total, OUT);
    });
    if (!CU_LAUNCHED(be)) return;
  }
  // out^T (OUT, N) = W (OUT, IN) inp^T (IN, N): W's buffer is W^T (IN, OUT) to cuBLAS.
  CU_BLAS(be, cu_gemm(be, CUBLAS_OP_T, CUBLAS_OP_N, OUT, N, IN, 1.0f, cu_in(weight, IN),
                      cu_in(inp, IN), bias ? 1.0f : 0.0f, cu_out(out, OUT)));
}

// dbias[o] += sum over rows of dout[:, o], in two deterministic stages so
// that a tall dout (the attention's projections: N = B * T rows, 32768 for
// a batch of 128 at 16x16) spreads over the whole GPU, not OUT / 32 blocks:
//   1. a grid of (32-column tiles) x (row chunks of COL_CHUNK rows); each
//      block's 16 row lanes sum their rows of the chunk in double, and lane 0
//      of each column adds the 16 lane sums in order into partials[chunk][o];
//   2. one thread per column adds its chunks' partials in order.
enum { COL_X = 32, COL_Y = 16, COL_CHUNK = 1024, COL_MAX_CHUNKS = 64 };

template <typename T>
__global__ static void column_partials_kernel(double *partials, const T *dout, int N, int OUT,
                                              int chunk_rows) {
  __shared__ double part[COL_Y][COL_X];
  const int o = blockIdx.x * COL_X + threadIdx.x;
  const int r0 = blockIdx.y * chunk_rows, r1 = min(N, r0 + chunk_rows);
  double s = 0.0;
  if (o < OUT)
    for (int r = r0 + threadIdx.y; r < r1; r += COL_Y) s += cu_ld(dout + (size_t)r * OUT + o);
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && o < OUT) {
    double t = 0.0;
    for (int y = 0; y < COL_Y; y++) t += part[y][threadIdx.x];
    partials[(size_t)blockIdx.y * OUT + o] = t;
  }
}

__global__ static void column_finish_kernel(float *dbias, const double *partials, int chunks,
                                            int OUT) {
  const int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= OUT) return;
  double t = 0.0;
  for (int c = 0; c < chunks; c++) t += partials[(size_t)c * OUT + o];
  dbias[o] += (float)t;
}

static void column_sums(const a3_backend *be, float *dbias, const a3_act *dout, int N, int OUT) {
  int chunk_rows = COL_CHUNK, chunks = (N + COL_CHUNK - 1) / COL_CHUNK;
  if (chunks > COL_MAX_CHUNKS) {
    chunk_rows = (N + COL_MAX_CHUNKS - 1) / COL_MAX_CHUNKS;
    chunks = (N + chunk_rows - 1) / chunk_rows;
  }
  if (chunks < 1) chunks = 1;
  // A few MB at most: COL_MAX_CHUNKS rows of OUT doubles, kept for the next call.
  double *partials = (double *)cu_scratch_get(be, &cu_state(be)->col_partials,
                                              (size_t)chunks * OUT * sizeof(double));
  if (!partials) return;
  const dim3 grid((unsigned)((OUT + COL_X - 1) / COL_X), (unsigned)chunks);
  CU_ACT_DISPATCH(be, {
    column_partials_kernel<T><<<grid, dim3(COL_X, COL_Y), 0, cu_stream(be)>>>(
        partials, cu_t<T>(dout), N, OUT, chunk_rows);
  });
  if (!CU_LAUNCHED(be)) return;
  column_finish_kernel<<<cu_blocks((size_t)OUT, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(
      dbias, partials, chunks, OUT);
  CU_LAUNCHED(be);
}

void cuda_linear_backward(const a3_backend *be,
                          a3_act *dinp,        // (N, IN) overwritten, or NULL
                          float *dweight,      // (OUT, IN) +=, or NULL
                          float *dbias,        // (OUT) +=, or NULL
                          const a3_act *dout,  // (N, OUT)
                          const a3_act *inp,   // (N, IN), read only when dweight
                          const float *weight, // (OUT, IN), read only when dinp
                          int N, int IN, int OUT) {
  if (dinp) // dinp^T (IN, N) = W^T (IN, OUT) dout^T (OUT, N)
    CU_BLAS(be, cu_gemm(be, CUBLAS_OP_N, CUBLAS_OP_N, IN, N, OUT, 1.0f, cu_in(weight, IN),
                        cu_in(dout, OUT), 0.0f, cu_out(dinp, IN)));
  if (dweight) // dW^T (IN, OUT) += inp^T (IN, N) dout (N, OUT)
    CU_BLAS(be, cu_gemm(be, CUBLAS_OP_N, CUBLAS_OP_T, IN, OUT, N, 1.0f, cu_in(inp, IN),
                        cu_in(dout, OUT), 1.0f, cu_out(dweight, IN)));
  if (dbias && OUT > 0) column_sums(be, dbias, dout, N, OUT);
}
