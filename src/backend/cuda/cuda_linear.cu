// linear y = x W^T + b on CUDA: one cublasSgemm each way.
//
// cuBLAS is column-major: a row-major (R, S) matrix is, to cuBLAS, the
// column-major (S, R) matrix of its transpose with leading dimension S. So
// a row-major C (M, N) = A (M, K) B (K, N) is asked for as the column-major
// C^T (N, M) = B^T (N, K) A^T (K, M), with the operands swapped.
#include "cuda_internal.h"

// out[n, o] = bias[o] (the GEMM then adds onto it with beta = 1, as the CPU).
__global__ static void bias_rows_kernel(float *out, const float *bias, size_t total, int OUT) {
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
       i += (size_t)gridDim.x * blockDim.x)
    out[i] = bias[i % (size_t)OUT];
}

void cuda_linear_forward(const a3_backend *be,
                         float *out,          // (N, OUT)
                         const float *inp,    // (N, IN)
                         const float *weight, // (OUT, IN)
                         const float *bias,   // (OUT) or NULL
                         int N, int IN, int OUT) {
  if (N <= 0 || OUT <= 0) return;
  const size_t total = (size_t)N * OUT;
  if (bias) {
    bias_rows_kernel<<<cu_blocks(total, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(out, bias,
                                                                                     total, OUT);
    if (!CU_LAUNCHED(be)) return;
  }
  const float one = 1.0f, beta = bias ? 1.0f : 0.0f;
  // out^T (OUT, N) = W (OUT, IN) inp^T (IN, N): W's buffer is W^T (IN, OUT) to cuBLAS.
  CU_BLAS(be, cu_sgemm(be, CUBLAS_OP_T, CUBLAS_OP_N, OUT, N, IN, &one, weight, IN, inp, IN, &beta,
                       out, OUT));
}

// dbias[o] += sum over rows of dout[:, o]: blocks of 32 columns x 16 row
// lanes (coalesced along a row); each lane sums its rows in double, then
// lane 0 of each column adds the 16 lane sums in order.
enum { COL_X = 32, COL_Y = 16 };

__global__ static void column_sums_kernel(float *dbias, const float *dout, int N, int OUT) {
  __shared__ double part[COL_Y][COL_X];
  const int o = blockIdx.x * COL_X + threadIdx.x;
  double s = 0.0;
  if (o < OUT)
    for (int r = threadIdx.y; r < N; r += COL_Y) s += dout[(size_t)r * OUT + o];
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && o < OUT) {
    double t = 0.0;
    for (int y = 0; y < COL_Y; y++) t += part[y][threadIdx.x];
    dbias[o] += (float)t;
  }
}

void cuda_linear_backward(const a3_backend *be,
                          float *dinp,         // (N, IN) overwritten, or NULL
                          float *dweight,      // (OUT, IN) +=, or NULL
                          float *dbias,        // (OUT) +=, or NULL
                          const float *dout,   // (N, OUT)
                          const float *inp,    // (N, IN), read only when dweight
                          const float *weight, // (OUT, IN), read only when dinp
                          int N, int IN, int OUT) {
  const float one = 1.0f, zero = 0.0f;
  if (dinp) // dinp^T (IN, N) = W^T (IN, OUT) dout^T (OUT, N)
    CU_BLAS(be, cu_sgemm(be, CUBLAS_OP_N, CUBLAS_OP_N, IN, N, OUT, &one, weight, IN, dout, OUT,
                         &zero, dinp, IN));
  if (dweight) // dW^T (IN, OUT) += inp^T (IN, N) dout (N, OUT)
    CU_BLAS(be, cu_sgemm(be, CUBLAS_OP_N, CUBLAS_OP_T, IN, OUT, N, &one, inp, IN, dout, OUT, &one,
                         dweight, IN));
  if (dbias && OUT > 0) {
    const dim3 threads(COL_X, COL_Y);
    const unsigned blocks = (unsigned)((OUT + COL_X - 1) / COL_X);
    column_sums_kernel<<<blocks, threads, 0, cu_stream(be)>>>(dbias, dout, N, OUT);
    CU_LAUNCHED(be);
  }
}
