// Data movement on CUDA: (B, C, HW) <-> (B, HW, C) tokens, nearest x2
// upsampling, channel concatenation. Pure copies, except the upsampling
// backward's 4-term sums (in the CPU's order). Kernels are templated on the
// activation storage type T (cuda_internal.h); a copy widens to fp32 and
// rounds back, which is exact.
#include "cuda_internal.h"

#define GRID_STRIDE(i, n)                                                                          \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                          \
       i += (size_t)gridDim.x * blockDim.x)

// Launches kernel<T> over n elements, T the backend's storage type (the
// arguments may name it: cu_t<T>(x)), and checks it.
#define LAUNCH_ACT(be, n, kernel, ...)                                                             \
  do {                                                                                             \
    if ((n) == 0) break;                                                                           \
    const unsigned blocks_ = cu_blocks((n), CU_THREADS);                                           \
    const cudaStream_t stream_ = cu_stream(be);                                                    \
    CU_ACT_DISPATCH(be, {                                                                          \
      kernel<T><<<blocks_, CU_THREADS, 0, stream_>>>(__VA_ARGS__);                                 \
      CU_LAUNCHED(be);                                                                             \
    });                                                                                            \
  } while (0)

// ---------------------------------------------------------------- tokens

enum { TILE = 32, TILE_ROWS = 8 };

// out (R, S) = inp (S, R)^T for each of B images, through a 32x33 shared
// tile so that both the reads and the writes are coalesced. Grid: x over
// R tiles, y over S tiles, z over images (each grid-strided).
template <typename T>
__global__ static void transpose_kernel(T *out, const T *inp, int B, int S, int R) {
  __shared__ float tile[TILE][TILE + 1]; // +1: no bank conflicts on the transposed read
  const int r_tiles = (R + TILE - 1) / TILE, s_tiles = (S + TILE - 1) / TILE;
  for (int b = blockIdx.z; b < B; b += gridDim.z) {
    const T *src = inp + (size_t)b * S * R;
    T *dst = out + (size_t)b * S * R;
    for (int st = blockIdx.y; st < s_tiles; st += gridDim.y) {
      for (int rt = blockIdx.x; rt < r_tiles; rt += gridDim.x) {
        const int s0 = st * TILE, r0 = rt * TILE;
        for (int y = threadIdx.y; y < TILE; y += TILE_ROWS) {
          const int s = s0 + y, r = r0 + threadIdx.x;
          if (s < S && r < R) tile[y][threadIdx.x] = cu_ld(&src[(size_t)s * R + r]);
        }
        __syncthreads();
        for (int y = threadIdx.y; y < TILE; y += TILE_ROWS) {
          const int r = r0 + y, s = s0 + threadIdx.x;
          if (s < S && r < R) cu_st(&dst[(size_t)r * S + s], tile[threadIdx.x][y]);
        }
        __syncthreads(); // the tile is refilled by the next iteration
      }
    }
  }
}

static void transpose_batched(const a3_backend *be, a3_act *out, const a3_act *inp, int B, int S,
                              int R) {
  if (B <= 0 || S <= 0 || R <= 0) return;
  const int r_tiles = (R + TILE - 1) / TILE, s_tiles = (S + TILE - 1) / TILE;
  const dim3 grid((unsigned)(r_tiles < 65535 ? r_tiles : 65535),
                  (unsigned)(s_tiles < 65535 ? s_tiles : 65535), (unsigned)(B < 65535 ? B : 65535));
  const dim3 threads(TILE, TILE_ROWS);
  const cudaStream_t stream = cu_stream(be);
  CU_ACT_DISPATCH(be, {
    transpose_kernel<T><<<grid, threads, 0, stream>>>(cu_t<T>(out), cu_t<T>(inp), B, S, R);
    CU_LAUNCHED(be);
  });
}

void cuda_to_tokens(const a3_backend *be, a3_act *out, // (B, HW, C)
                    const a3_act *inp,                 // (B, C, HW)
                    int B, int C, int HW) {
  transpose_batched(be, out, inp, B, C, HW);
}

void cuda_from_tokens(const a3_backend *be, a3_act *out, // (B, C, HW)
                      const a3_act *inp,                 // (B, HW, C)
                      int B, int C, int HW) {
  transpose_batched(be, out, inp, B, HW, C);
}

// ---------------------------------------------------------------- nearest x2 upsampling

// One thread per output pixel: out (P, 2H, 2W) from inp (P, H, W), P = B*C planes.
template <typename T>
__global__ static void upsample_kernel(T *out, const T *inp, int H, int W, size_t total) {
  const int W2 = 2 * W, H2 = 2 * H;
  GRID_STRIDE(i, total) {
    const int x = (int)(i % W2), y = (int)((i / W2) % H2);
    const size_t p = i / ((size_t)W2 * H2);
    cu_st(&out[i], cu_ld(&inp[(p * H + (y >> 1)) * W + (x >> 1)]));
  }
}

void cuda_upsample2x_forward(const a3_backend *be, a3_act *out, // (B, C, 2H, 2W)
                             const a3_act *inp,                 // (B, C, H, W)
                             int B, int C, int H, int W) {
  const size_t total = (size_t)B * C * 4 * H * W;
  LAUNCH_ACT(be, total, upsample_kernel, cu_t<T>(out), cu_t<T>(inp), H, W, total);
}

// Each input pixel was copied to a 2x2 block: its gradient is the block's
// sum, added as (top pair) + (bottom pair) like the CPU.
template <typename T>
__global__ static void upsample_bwd_kernel(T *dinp, const T *dout, int H, int W, size_t total) {
  const int W2 = 2 * W;
  GRID_STRIDE(i, total) {
    const int x = (int)(i % W), y = (int)((i / W) % H);
    const size_t p = i / ((size_t)W * H);
    const T *row0 = dout + (p * 2 * H + 2 * y) * W2, *row1 = row0 + W2;
    cu_st(&dinp[i], (cu_ld(&row0[2 * x]) + cu_ld(&row0[2 * x + 1])) +
                        (cu_ld(&row1[2 * x]) + cu_ld(&row1[2 * x + 1])));
  }
}

void cuda_upsample2x_backward(const a3_backend *be, a3_act *dinp, // (B, C, H, W) overwritten
                              const a3_act *dout,                 // (B, C, 2H, 2W)
                              int B, int C, int H, int W) {
  const size_t total = (size_t)B * C * H * W;
  LAUNCH_ACT(be, total, upsample_bwd_kernel, cu_t<T>(dinp), cu_t<T>(dout), H, W, total);
}

// ---------------------------------------------------------------- channel concat

// One thread per element of out (B, na + nb) (per image: a's na elements, then b's nb).
template <typename T>
__global__ static void concat_kernel(T *out, const T *a, const T *b, size_t na, size_t nb,
                                     size_t total) {
  const size_t row = na + nb;
  GRID_STRIDE(i, total) {
    const size_t img = i / row, j = i % row;
    cu_st(&out[i], cu_ld(j < na ? &a[img * na + j] : &b[img * nb + (j - na)]));
  }
}

void cuda_concat_forward(const a3_backend *be, a3_act *out, // (B, C1 + C2, HW)
                         const a3_act *a,                   // (B, C1, HW)
                         const a3_act *b,                   // (B, C2, HW)
                         int B, int C1, int C2, int HW) {
  const size_t na = (size_t)C1 * HW, nb = (size_t)C2 * HW, total = (size_t)B * (na + nb);
  LAUNCH_ACT(be, total, concat_kernel, cu_t<T>(out), cu_t<T>(a), cu_t<T>(b), na, nb, total);
}

// One thread per element of dout; each part goes to da or db when asked for.
template <typename T>
__global__ static void concat_bwd_kernel(T *da, T *db, const T *dout, size_t na, size_t nb,
                                         size_t total) {
  const size_t row = na + nb;
  GRID_STRIDE(i, total) {
    const size_t img = i / row, j = i % row;
    if (j < na) {
      if (da) cu_st(&da[img * na + j], cu_ld(&dout[i]));
    } else if (db) {
      cu_st(&db[img * nb + (j - na)], cu_ld(&dout[i]));
    }
  }
}

void cuda_concat_backward(const a3_backend *be,
                          a3_act *da,         // (B, C1, HW) overwritten, or NULL
                          a3_act *db,         // (B, C2, HW) overwritten, or NULL
                          const a3_act *dout, // (B, C1 + C2, HW)
                          int B, int C1, int C2, int HW) {
  const size_t na = (size_t)C1 * HW, nb = (size_t)C2 * HW, total = (size_t)B * (na + nb);
  if (!da && !db) return;
  LAUNCH_ACT(be, total, concat_bwd_kernel, cu_t<T>(da), cu_t<T>(db), cu_t<T>(dout), na, nb, total);
}
