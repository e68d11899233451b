// Data movement on CUDA: (B, C, HW) <-> (B, HW, C) tokens, nearest x2
// upsampling, channel concatenation. Pure copies, except the upsampling
// backward's 4-term sums (in the CPU's order).
#include "cuda_internal.h"

#define GRID_STRIDE(i, n)                                                                          \
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                          \
       i += (size_t)gridDim.x * blockDim.x)

// ---------------------------------------------------------------- tokens

enum { TILE = 32, TILE_ROWS = 8 };

// out (R, S) = inp (S, R)^T for each of B images, through a 32x33 shared
// tile so that both the reads and the writes are coalesced. Grid: x over
// R tiles, y over S tiles, z over images (each grid-strided).
__global__ static void transpose_kernel(float *out, const float *inp, int B, int S, int R) {
  __shared__ float tile[TILE][TILE + 1]; // +1: no bank conflicts on the transposed read
  const int r_tiles = (R + TILE - 1) / TILE, s_tiles = (S + TILE - 1) / TILE;
  for (int b = blockIdx.z; b < B; b += gridDim.z) {
    const float *src = inp + (size_t)b * S * R;
    float *dst = out + (size_t)b * S * R;
    for (int st = blockIdx.y; st < s_tiles; st += gridDim.y) {
      for (int rt = blockIdx.x; rt < r_tiles; rt += gridDim.x) {
        const int s0 = st * TILE, r0 = rt * TILE;
        for (int y = threadIdx.y; y < TILE; y += TILE_ROWS) {
          const int s = s0 + y, r = r0 + threadIdx.x;
          if (s < S && r < R) tile[y][threadIdx.x] = src[(size_t)s * R + r];
        }
        __syncthreads();
        for (int y = threadIdx.y; y < TILE; y += TILE_ROWS) {
          const int r = r0 + y, s = s0 + threadIdx.x;
          if (s < S && r < R) dst[(size_t)r * S + s] = tile[threadIdx.x][y];
        }
        __syncthreads(); // the tile is refilled by the next iteration
      }
    }
  }
}

static void transpose_batched(const a3_backend *be, float *out, const float *inp, int B, int S,
                              int R) {
  if (B <= 0 || S <= 0 || R <= 0) return;
  const int r_tiles = (R + TILE - 1) / TILE, s_tiles = (S + TILE - 1) / TILE;
  const dim3 grid((unsigned)(r_tiles < 65535 ? r_tiles : 65535),
                  (unsigned)(s_tiles < 65535 ? s_tiles : 65535), (unsigned)(B < 65535 ? B : 65535));
  const dim3 threads(TILE, TILE_ROWS);
  transpose_kernel<<<grid, threads, 0, cu_stream(be)>>>(out, inp, B, S, R);
  CU_LAUNCHED(be);
}

void cuda_to_tokens(const a3_backend *be, float *out, // (B, HW, C)
                    const float *inp,                 // (B, C, HW)
                    int B, int C, int HW) {
  transpose_batched(be, out, inp, B, C, HW);
}

void cuda_from_tokens(const a3_backend *be, float *out, // (B, C, HW)
                      const float *inp,                 // (B, HW, C)
                      int B, int C, int HW) {
  transpose_batched(be, out, inp, B, HW, C);
}

// ---------------------------------------------------------------- nearest x2 upsampling

// One thread per output pixel: out (P, 2H, 2W) from inp (P, H, W), P = B*C planes.
__global__ static void upsample_kernel(float *out, const float *inp, int H, int W, size_t total) {
  const int W2 = 2 * W, H2 = 2 * H;
  GRID_STRIDE(i, total) {
    const int x = (int)(i % W2), y = (int)((i / W2) % H2);
    const size_t p = i / ((size_t)W2 * H2);
    out[i] = inp[(p * H + (y >> 1)) * W + (x >> 1)];
  }
}

void cuda_upsample2x_forward(const a3_backend *be, float *out, // (B, C, 2H, 2W)
                             const float *inp,                 // (B, C, H, W)
                             int B, int C, int H, int W) {
  const size_t total = (size_t)B * C * 4 * H * W;
  if (!total) return;
  upsample_kernel<<<cu_blocks(total, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(out, inp, H, W,
                                                                                  total);
  CU_LAUNCHED(be);
}

// Each input pixel was copied to a 2x2 block: its gradient is the block's
// sum, added as (top pair) + (bottom pair) like the CPU.
__global__ static void upsample_bwd_kernel(float *dinp, const float *dout, int H, int W,
                                           size_t total) {
  const int W2 = 2 * W;
  GRID_STRIDE(i, total) {
    const int x = (int)(i % W), y = (int)((i / W) % H);
    const size_t p = i / ((size_t)W * H);
    const float *row0 = dout + (p * 2 * H + 2 * y) * W2, *row1 = row0 + W2;
    dinp[i] = (row0[2 * x] + row0[2 * x + 1]) + (row1[2 * x] + row1[2 * x + 1]);
  }
}

void cuda_upsample2x_backward(const a3_backend *be, float *dinp, // (B, C, H, W) overwritten
                              const float *dout,                 // (B, C, 2H, 2W)
                              int B, int C, int H, int W) {
  const size_t total = (size_t)B * C * H * W;
  if (!total) return;
  upsample_bwd_kernel<<<cu_blocks(total, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(dinp, dout, H,
                                                                                      W, total);
  CU_LAUNCHED(be);
}

// ---------------------------------------------------------------- channel concat

// One thread per element of out (B, na + nb) (per image: a's na floats, then b's nb).
__global__ static void concat_kernel(float *out, const float *a, const float *b, size_t na,
                                     size_t nb, size_t total) {
  const size_t row = na + nb;
  GRID_STRIDE(i, total) {
    const size_t img = i / row, j = i % row;
    out[i] = j < na ? a[img * na + j] : b[img * nb + (j - na)];
  }
}

void cuda_concat_forward(const a3_backend *be, float *out, // (B, C1 + C2, HW)
                         const float *a,                   // (B, C1, HW)
                         const float *b,                   // (B, C2, HW)
                         int B, int C1, int C2, int HW) {
  const size_t na = (size_t)C1 * HW, nb = (size_t)C2 * HW, total = (size_t)B * (na + nb);
  if (!total) return;
  concat_kernel<<<cu_blocks(total, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(out, a, b, na, nb,
                                                                                total);
  CU_LAUNCHED(be);
}

// One thread per element of dout; each part goes to da or db when asked for.
__global__ static void concat_bwd_kernel(float *da, float *db, const float *dout, size_t na,
                                         size_t nb, size_t total) {
  const size_t row = na + nb;
  GRID_STRIDE(i, total) {
    const size_t img = i / row, j = i % row;
    if (j < na) {
      if (da) da[img * na + j] = dout[i];
    } else if (db) {
      db[img * nb + (j - na)] = dout[i];
    }
  }
}

void cuda_concat_backward(const a3_backend *be,
                          float *da,         // (B, C1, HW) overwritten, or NULL
                          float *db,         // (B, C2, HW) overwritten, or NULL
                          const float *dout, // (B, C1 + C2, HW)
                          int B, int C1, int C2, int HW) {
  const size_t na = (size_t)C1 * HW, nb = (size_t)C2 * HW, total = (size_t)B * (na + nb);
  if (!total || (!da && !db)) return;
  concat_bwd_kernel<<<cu_blocks(total, CU_THREADS), CU_THREADS, 0, cu_stream(be)>>>(da, db, dout,
                                                                                    na, nb, total);
  CU_LAUNCHED(be);
}
