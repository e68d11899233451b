// Data movement on the CPU: (B, C, HW) <-> (B, HW, C) tokens, nearest x2
// upsampling, channel concatenation.
//
// Pure copies (no arithmetic but the upsampling backward's 4-term sums, in
// a fixed order), split over OpenMP threads by image or plane when the
// tensor is at least CPU_PAR_MIN floats: results never depend on the thread
// count. In the U-Net's step (B = 64, 2 threads) the serial versions took
// 0.7-1.1 ms per call at 32x32 (concat, upsampling); tools/bench/README.md
// has the numbers now.
#include "cpu_ops.h"

#include <string.h>

// out (R, S) = inp (S, R)^T for each of B images, in 32x32 tiles so that both
// sides stay in cache for large planes.
static void transpose_batched(float *out, const float *inp, int B, int S, int R) {
  enum { TILE = 32 };
#pragma omp parallel for schedule(static) if ((size_t)B * S * R >= CPU_PAR_MIN)
  for (int b = 0; b < B; b++) {
    const float *src = inp + (size_t)b * S * R;
    float *dst = out + (size_t)b * S * R;
    for (int s0 = 0; s0 < S; s0 += TILE) {
      for (int r0 = 0; r0 < R; r0 += TILE) {
        const int s1 = s0 + TILE < S ? s0 + TILE : S, r1 = r0 + TILE < R ? r0 + TILE : R;
        for (int s = s0; s < s1; s++)
          for (int r = r0; r < r1; r++) dst[(size_t)r * S + s] = src[(size_t)s * R + r];
      }
    }
  }
}

void cpu_to_tokens(const a3_backend *be, a3_act *out_act, // (B, HW, C)
                   const a3_act *inp_act,                 // (B, C, HW)
                   int B, int C, int HW) {
  float *out = a3_f32_act(out_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  transpose_batched(out, inp, B, C, HW);
}

void cpu_from_tokens(const a3_backend *be, a3_act *out_act, // (B, C, HW)
                     const a3_act *inp_act,                 // (B, HW, C)
                     int B, int C, int HW) {
  float *out = a3_f32_act(out_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  transpose_batched(out, inp, B, HW, C);
}

CPU_CLONES static void upsample_plane(float *y, const float *x, int H, int W) {
  for (int i = 0; i < H; i++) {
    float *row0 = y + (size_t)(2 * i) * 2 * W, *row1 = row0 + 2 * W;
    const float *xr = x + (size_t)i * W;
    for (int j = 0; j < W; j++) row0[2 * j] = row0[2 * j + 1] = xr[j];
    memcpy(row1, row0, (size_t)2 * W * sizeof(float));
  }
}

void cpu_upsample2x_forward(const a3_backend *be, a3_act *out_act, // (B, C, 2H, 2W)
                            const a3_act *inp_act,                 // (B, C, H, W)
                            int B, int C, int H, int W) {
  float *out = a3_f32_act(out_act);
  const float *inp = a3_f32_cact(inp_act);
  (void)be;
  const long planes = (long)B * C;
#pragma omp parallel for schedule(static) if ((size_t)planes * H * W >= CPU_PAR_MIN)
  for (long p = 0; p < planes; p++)
    upsample_plane(out + (size_t)p * 4 * H * W, inp + (size_t)p * H * W, H, W);
}

// Each input pixel was copied to a 2x2 block: its gradient is the block's sum.
CPU_CLONES static void upsample_bwd_plane(float *dx, const float *dy, int H, int W) {
  for (int i = 0; i < H; i++) {
    const float *row0 = dy + (size_t)(2 * i) * 2 * W, *row1 = row0 + 2 * W;
    for (int j = 0; j < W; j++)
      dx[(size_t)i * W + j] = (row0[2 * j] + row0[2 * j + 1]) + (row1[2 * j] + row1[2 * j + 1]);
  }
}

void cpu_upsample2x_backward(const a3_backend *be, a3_act *dinp_act, // (B, C, H, W)
                             const a3_act *dout_act,                 // (B, C, 2H, 2W)
                             int B, int C, int H, int W) {
  float *dinp = a3_f32_act(dinp_act);
  const float *dout = a3_f32_cact(dout_act);
  (void)be;
  const long planes = (long)B * C;
#pragma omp parallel for schedule(static) if ((size_t)planes * H * W >= CPU_PAR_MIN)
  for (long p = 0; p < planes; p++)
    upsample_bwd_plane(dinp + (size_t)p * H * W, dout + (size_t)p * 4 * H * W, H, W);
}

void cpu_concat_forward(const a3_backend *be, a3_act *out_act, // (B, C1 + C2, HW)
                        const a3_act *a_act,                   // (B, C1, HW)
                        const a3_act *b_act,                   // (B, C2, HW)
                        int B, int C1, int C2, int HW) {
  float *out = a3_f32_act(out_act);
  const float *a = a3_f32_cact(a_act);
  const float *b = a3_f32_cact(b_act);
  (void)be;
  const size_t na = (size_t)C1 * HW, nb = (size_t)C2 * HW;
#pragma omp parallel for schedule(static) if ((size_t)B * (na + nb) >= CPU_PAR_MIN)
  for (int i = 0; i < B; i++) {
    memcpy(out + i * (na + nb), a + i * na, na * sizeof(float));
    memcpy(out + i * (na + nb) + na, b + i * nb, nb * sizeof(float));
  }
}

void cpu_concat_backward(const a3_backend *be,
                         a3_act *da_act,         // (B, C1, HW) or NULL
                         a3_act *db_act,         // (B, C2, HW) or NULL
                         const a3_act *dout_act, // (B, C1 + C2, HW)
                         int B, int C1, int C2, int HW) {
  float *da = a3_f32_act(da_act);
  float *db = a3_f32_act(db_act);
  const float *dout = a3_f32_cact(dout_act);
  (void)be;
  const size_t na = (size_t)C1 * HW, nb = (size_t)C2 * HW;
#pragma omp parallel for schedule(static) if ((size_t)B * (na + nb) >= CPU_PAR_MIN)
  for (int i = 0; i < B; i++) {
    if (da) memcpy(da + i * na, dout + i * (na + nb), na * sizeof(float));
    if (db) memcpy(db + i * nb, dout + i * (na + nb) + na, nb * sizeof(float));
  }
}
