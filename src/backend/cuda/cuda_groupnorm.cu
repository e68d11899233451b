// GroupNorm, and GroupNorm + SiLU fused, on CUDA. Group g of image b is one
// contiguous block of n = (C/G) * HW elements (at (b * G + g) * n). The
// activations (inp, out, dout, dinp) are in the storage type T
// (cuda_internal.h), loaded into fp32 registers and rounded once when
// stored; mean, rstd, the parameters and their gradients are fp32.
//
// Forward: one thread block per (b, g): the mean, then the biased variance
// two-pass around it (no E[x^2] - E[x]^2 cancellation), both summed in
// double, then the output pass (SiLU applied when fused).
// Backward, two kernels:
//   - dinp: one block per (b, g): sums of dxhat and dxhat * xhat over the
//     group, then dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat));
//   - dweight, dbias: blocks of (channel c, piece of its (b, HW) elements;
//     cu_plane_pieces), summing dz * xhat and dz in double; the pieces' sums
//     are added in order (cu_finish_plane_parts) and then once (+=).
// dz is dout for plain GroupNorm, or dout * silu'(z) at the recomputed
// z = xhat * weight[c] + bias[c] when fused; dxhat = dz * weight[c].
//
// How the forward and dinp blocks walk a group (they are bound by memory
// traffic, so each element should cross the bus once):
//   - Slots: the group is cut into slots of V elements (one 16-byte load:
//     V = 4 floats or 8 bf16, when HW % V == 0 and the pointers are 16-byte
//     aligned, so a slot never straddles two channels; else V = 1). Thread t
//     of an N-thread block owns slots t, t + N, t + 2N, ... (coalesced: a
//     warp reads 32 neighbouring slots).
//   - Registers: a thread holds GN_K fp32 values (GN_K / V slots) per chunk,
//     a chunk being N * GN_K elements. The block size is picked per launch
//     from n (128, 256 or 512 threads) so that a group of the U-Nets' sizes
//     (up to 4096 elements) is one chunk: it is read from global memory once, and
//     every pass runs on registers. A larger group takes several chunks and
//     each pass reloads its chunks (x three times in the forward, x and dout
//     twice in dinp), by the same code, so the two cases cannot drift apart.
//   - Channels: a slot's channel is slot / (HW / V); each thread divides once
//     per launch and then steps by T slots with one carry, so no element
//     pays for a 32-bit integer division.
// Sums are per-thread doubles in slot order, then cu_block_sum (fixed
// order): deterministic, and no atomics. Each element is read and written
// by the one thread that owns it, reads first, as before.
#include "cuda_internal.h"

#include <limits.h>
#include <stdint.h>

// GN_K: values a thread holds in registers per chunk (dinp: GN_K of x and
// GN_K of dout).
// GN_CHUNK_MAX: the largest chunk, elements.
enum { GN_K = 8, GN_MAX_THREADS = 512, GN_CHUNK_MAX = GN_K * GN_MAX_THREADS };

// Threads per forward / dinp block: the fewest of 128, 256, 512 whose chunk
// holds the whole group (no idle warps on small groups, a shorter block sum),
// else 512.
static int gn_threads(int n) {
  if (n <= 128 * GN_K) return 128;
  if (n <= 256 * GN_K) return 256;
  return GN_MAX_THREADS;
}

// ---------------------------------------------------------------- slots

// Where this thread's slot stands: channel c of the group and slot r within
// it, as the slot index steps by blockDim.x (dc channels and dr slots, with
// at most one carry since dr < hwv).
typedef struct {
  int c, r, dc, dr, hwv; // hwv = HW / V slots per channel
} gn_cursor;

// The cursor of slot threadIdx.x: the only divisions a thread does.
__device__ static inline gn_cursor gn_cursor_start(int hwv) {
  gn_cursor p;
  p.hwv = hwv;
  p.c = (int)threadIdx.x / hwv;
  p.r = (int)threadIdx.x - p.c * hwv;
  p.dc = (int)blockDim.x / hwv;
  p.dr = (int)blockDim.x - p.dc * hwv;
  return p;
}

__device__ static inline void gn_cursor_step(gn_cursor *p) {
  p->c += p->dc;
  p->r += p->dr;
  if (p->r >= p->hwv) p->r -= p->hwv, p->c++;
}

// Slot j (< GN_K / V) of chunk k for this thread; live when below nv = n / V.
// (gn_fits_int keeps it, even past the last live slot, within int.)
template <int V> __device__ static inline int gn_slot(int k, int j) {
  return (int)threadIdx.x + (k * (GN_K / V) + j) * (int)blockDim.x;
}

// Elements of T in one 16-byte slot: the wide V of T's kernels.
template <typename T> struct gn_wide {
  enum { V = 16 / (int)sizeof(T) };
};
static_assert(GN_K % gn_wide<float>::V == 0 && GN_K % gn_wide<__nv_bfloat16>::V == 0,
              "a thread's registers hold whole slots");

// A 16-byte slot of bf16, so that it moves in one load or store.
struct alignas(16) gn_bf16x8 {
  __nv_bfloat16 v[8];
};

// V elements at p (16-byte aligned when V > 1) into r as fp32, and back,
// rounded.
template <int V> __device__ static inline void gn_load(float *r, const float *p) {
  static_assert(V == 1 || V == 4, "float slots are 1 or 4 wide");
  if (V == 4) {
    const float4 q = *(const float4 *)p;
    r[0] = q.x, r[1] = q.y, r[2] = q.z, r[3] = q.w;
  } else {
    r[0] = cu_ld(p);
  }
}

template <int V> __device__ static inline void gn_load(float *r, const __nv_bfloat16 *p) {
  static_assert(V == 1 || V == 8, "bf16 slots are 1 or 8 wide");
  if (V == 8) {
    const gn_bf16x8 q = *(const gn_bf16x8 *)p;
#pragma unroll
    for (int e = 0; e < 8; e++) r[e] = cu_ld(&q.v[e]);
  } else {
    r[0] = cu_ld(p);
  }
}

template <int V> __device__ static inline void gn_store(float *p, const float *r) {
  static_assert(V == 1 || V == 4, "float slots are 1 or 4 wide");
  if (V == 4) {
    *(float4 *)p = make_float4(r[0], r[1], r[2], r[3]);
  } else {
    cu_st(p, r[0]);
  }
}

template <int V> __device__ static inline void gn_store(__nv_bfloat16 *p, const float *r) {
  static_assert(V == 1 || V == 8, "bf16 slots are 1 or 8 wide");
  if (V == 8) {
    gn_bf16x8 q;
#pragma unroll
    for (int e = 0; e < 8; e++) cu_st(&q.v[e], r[e]);
    *(gn_bf16x8 *)p = q;
  } else {
    cu_st(p, r[0]);
  }
}

// The live slots of chunk k of group x (n elements) into r (GN_K registers);
// dead slots are left as they are and never read.
template <int V, typename T>
__device__ static inline void gn_load_chunk(float *r, const T *x, int nv, int k) {
#pragma unroll
  for (int j = 0; j < GN_K / V; j++) {
    const int v = gn_slot<V>(k, j);
    if (v < nv) gn_load<V>(r + j * V, x + v * V);
  }
}

// Sum over the live floats i of chunk k of (a[i] - mu) * (b[i] - mu), or of
// a[i] - mu when b is NULL: each term exact in double, added in slot order.
template <int V>
__device__ static inline double gn_chunk_sum(const float *a, const float *b, int nv, int k,
                                             float mu) {
  double s = 0.0;
#pragma unroll
  for (int j = 0; j < GN_K / V; j++) {
    if (gn_slot<V>(k, j) >= nv) continue;
#pragma unroll
    for (int e = 0; e < V; e++) {
      const int i = j * V + e;
      const double d = a[i] - mu; // exact when mu = 0
      s += b ? d * (b[i] - mu) : d;
    }
  }
  return s;
}

// Chunks of a group for this block (one when the group fits in registers).
__device__ static inline int gn_chunks(int n) {
  const int chunk = (int)blockDim.x * GN_K;
  return (n + chunk - 1) / chunk;
}

// What turns a group's xhat into z: its channels' weight and bias (from the
// group's first channel; b may be NULL when not silu), mean and rstd.
typedef struct {
  const float *w, *b;
  float mu, rs;
  int silu;
} gn_affine;

// ---------------------------------------------------------------- forward

// y (the group's output, n elements) for the live slots of chunk k, x's
// values in r (GN_K registers); cur: the cursor of the chunk's slot 0, left
// at the next chunk's.
template <int V, typename T>
__device__ static inline void gn_chunk_out(T *y, const float *r, int nv, int k, gn_cursor *cur,
                                           gn_affine g) {
#pragma unroll
  for (int j = 0; j < GN_K / V; j++) {
    const int v = gn_slot<V>(k, j);
    if (v < nv) {
      const float a = g.rs * g.w[cur->c], bb = g.b[cur->c];
      float o[V];
#pragma unroll
      for (int e = 0; e < V; e++) {
        // Centre first, then scale (as the CPU): folding the mean into a
        // shift cancels badly when |mean| >> std.
        const float z = (r[j * V + e] - g.mu) * a + bb;
        o[e] = g.silu ? z * cu_sigmoid(z) : z;
      }
      gn_store<V>(y + v * V, o);
    }
    gn_cursor_step(cur);
  }
}

// One block per (b, g); blockDim.x from gn_threads(n). A one-chunk group is
// loaded once, before the passes; otherwise every pass reloads its chunks.
template <typename T, int V>
__global__ static void __launch_bounds__(GN_MAX_THREADS)
    gn_forward_kernel(T *out,              // (BG, CG * HW)
                      float *mean,         // (BG)
                      float *rstd,         // (BG)
                      const T *inp,        // (BG, CG * HW)
                      const float *weight, // (G * CG)
                      const float *bias,   // (G * CG)
                      int BG, int G, int CG, int HW, float eps, int silu) {
  const int n = CG * HW, nv = n / V; // gn_fits_int: 32-bit index arithmetic
  const int chunks = gn_chunks(n), cached = chunks == 1;
  const gn_cursor start = gn_cursor_start(HW / V);
  for (int bg = blockIdx.x; bg < BG; bg += gridDim.x) {
    const T *x = inp + (size_t)bg * n;
    T *y = out + (size_t)bg * n;
    const int c0 = (bg % G) * CG; // first channel of the group
    float r[GN_K];
    if (cached) gn_load_chunk<V>(r, x, nv, 0);
    double s = 0.0;
    for (int k = 0; k < chunks; k++) {
      if (!cached) gn_load_chunk<V>(r, x, nv, k);
      s += gn_chunk_sum<V>(r, NULL, nv, k, 0.0f);
    }
    s = cu_block_sum(s);
    const float mu = (float)(s / (double)n);
    double q = 0.0;
    for (int k = 0; k < chunks; k++) {
      if (!cached) gn_load_chunk<V>(r, x, nv, k);
      q += gn_chunk_sum<V>(r, r, nv, k, mu);
    }
    q = cu_block_sum(q);
    const float rs = (float)(1.0 / sqrt(q / (double)n + eps));
    if (threadIdx.x == 0) mean[bg] = mu, rstd[bg] = rs; // every thread has mu and rs
    const gn_affine g = {weight + c0, bias + c0, mu, rs, silu};
    gn_cursor cur = start;
    for (int k = 0; k < chunks; k++) {
      if (!cached) gn_load_chunk<V>(r, x, nv, k);
      gn_chunk_out<V>(y, r, nv, k, &cur, g);
    }
  }
}

// The kernels index a group (C/G * HW, plus a chunk of slots past its end)
// and a channel's pixels over the batch (B * HW) with int: true for any
// model this side of 2^31 elements per channel.
static int gn_fits_int(const a3_backend *be, int B, int C, int HW, int G) {
  if ((long long)(C / G) * HW <= INT_MAX - GN_CHUNK_MAX && (long long)B * HW <= INT_MAX) return 1;
  return CU_CHECK(be, cudaErrorInvalidValue); // records the op and file:line
}

// Wide (16-byte) slots of V elements: a channel (HW elements) must be a
// whole number of slots, and every group (at a multiple of n = CG * HW
// elements) then starts 16-byte aligned when the tensors do. NULL counts as
// aligned.
static int gn_wide_slots(int HW, int V, const void *a, const void *b, const void *c) {
  return HW % V == 0 && ((uintptr_t)a | (uintptr_t)b | (uintptr_t)c) % 16 == 0;
}

// The forward's launch for storage type T, wide or scalar slots.
template <typename T>
static void gn_forward_launch(const a3_backend *be, T *out, float *mean, float *rstd, const T *inp,
                              const float *weight, const float *bias, int BG, int G, int CG, int HW,
                              float eps, int silu) {
  typedef void fn(T *, float *, float *, const T *, const float *, const float *, int, int, int,
                  int, float, int);
  const int V = gn_wide<T>::V;
  fn *kernel =
      gn_wide_slots(HW, V, out, inp, NULL) ? gn_forward_kernel<T, V> : gn_forward_kernel<T, 1>;
  kernel<<<cu_grid(BG), gn_threads(CG * HW), 0, cu_stream(be)>>>(out, mean, rstd, inp, weight, bias,
                                                                 BG, G, CG, HW, eps, silu);
  CU_LAUNCHED(be);
}

static void gn_forward(const a3_backend *be, a3_act *out, float *mean, float *rstd,
                       const a3_act *inp, const float *weight, const float *bias, int B, int C,
                       int HW, int G, float eps, int silu) {
  const int BG = B * G, CG = C / G;
  if (BG <= 0 || !gn_fits_int(be, B, C, HW, G)) return;
  CU_ACT_DISPATCH(be, {
    gn_forward_launch<T>(be, cu_t<T>(out), mean, rstd, cu_t<T>(inp), weight, bias, BG, G, CG, HW,
                         eps, silu);
  });
}

void cuda_groupnorm_forward(const a3_backend *be,
                            a3_act *out,         // (B, C, HW)
                            float *mean,         // (B, G)
                            float *rstd,         // (B, G)
                            const a3_act *inp,   // (B, C, HW)
                            const float *weight, // (C)
                            const float *bias,   // (C)
                            int B, int C, int HW, int G, float eps) {
  gn_forward(be, out, mean, rstd, inp, weight, bias, B, C, HW, G, eps, 0);
}

void cuda_groupnorm_silu_forward(const a3_backend *be,
                                 a3_act *out,         // (B, C, HW)
                                 float *mean,         // (B, G)
                                 float *rstd,         // (B, G)
                                 const a3_act *inp,   // (B, C, HW)
                                 const float *weight, // (C)
                                 const float *bias,   // (C)
                                 int B, int C, int HW, int G, float eps) {
  gn_forward(be, out, mean, rstd, inp, weight, bias, B, C, HW, G, eps, 1);
}

// ---------------------------------------------------------------- backward

// The gradient reaching z = xhat * w + bb: dy itself, or dy * silu'(z).
__device__ static inline float gn_dz(float dy, float xhat, float w, float bb, int silu) {
  if (!silu) return dy;
  const float z = xhat * w + bb;
  const float s = cu_sigmoid(z);
  return dy * (s * (1.0f + z * (1.0f - s)));
}

// Chunk k of the group's x and dy (n elements each), loaded into xh and dzw
// (GN_K registers each) and turned, for the live slots, into xhat and
// dxhat = dz * weight[c] (rounded to float, as the output uses it); cur as in
// gn_chunk_out.
template <int V, typename T>
__device__ static inline void gn_dinp_chunk(float *xh, float *dzw, const T *x, const T *dy, int nv,
                                            int k, gn_cursor *cur, gn_affine g) {
  gn_load_chunk<V>(xh, x, nv, k); // all loads first, in flight together
  gn_load_chunk<V>(dzw, dy, nv, k);
#pragma unroll
  for (int j = 0; j < GN_K / V; j++) {
    if (gn_slot<V>(k, j) < nv) {
      const float w = g.w[cur->c], bb = g.silu ? g.b[cur->c] : 0.0f;
#pragma unroll
      for (int e = 0; e < V; e++) {
        const int i = j * V + e;
        xh[i] = (xh[i] - g.mu) * g.rs;
        dzw[i] = gn_dz(dzw[i], xh[i], w, bb, g.silu) * w;
      }
    }
    gn_cursor_step(cur);
  }
}

// dx (the group's dinp, n elements) = rstd * (dxhat - m1 - xhat * m2) for
// the live slots of chunk k (xh, dzw: GN_K registers each).
template <int V, typename T>
__device__ static inline void gn_dinp_out(T *dx, const float *xh, const float *dzw, int nv, int k,
                                          float rs, float m1, float m2) {
#pragma unroll
  for (int j = 0; j < GN_K / V; j++) {
    const int v = gn_slot<V>(k, j);
    if (v >= nv) continue;
    float o[V];
#pragma unroll
    for (int e = 0; e < V; e++) o[e] = rs * (dzw[j * V + e] - m1 - xh[j * V + e] * m2);
    gn_store<V>(dx + v * V, o);
  }
}

// dinp for one (b, g) per block (bias is read only when silu); blockDim.x
// and chunks as in gn_forward_kernel.
template <typename T, int V>
__global__ static void __launch_bounds__(GN_MAX_THREADS)
    gn_dinp_kernel(T *dinp,             // (BG, CG * HW) overwritten
                   const T *dout,       // (BG, CG * HW)
                   const T *inp,        // (BG, CG * HW)
                   const float *weight, // (G * CG)
                   const float *bias,   // (G * CG), or NULL when not silu
                   const float *mean,   // (BG)
                   const float *rstd,   // (BG)
                   int BG, int G, int CG, int HW, int silu) {
  const int n = CG * HW, nv = n / V; // gn_fits_int
  const int chunks = gn_chunks(n), cached = chunks == 1;
  const gn_cursor start = gn_cursor_start(HW / V);
  for (int bg = blockIdx.x; bg < BG; bg += gridDim.x) {
    const size_t base = (size_t)bg * n;
    const int c0 = (bg % G) * CG;
    const gn_affine g = {weight + c0, silu ? bias + c0 : NULL, mean[bg], rstd[bg], silu};
    float xh[GN_K], dzw[GN_K];
    gn_cursor cur = start;
    if (cached) gn_dinp_chunk<V>(xh, dzw, inp + base, dout + base, nv, 0, &cur, g);
    double s1 = 0.0, s2 = 0.0; // sums of dxhat and dxhat * xhat
    for (int k = 0; k < chunks; k++) {
      if (!cached) gn_dinp_chunk<V>(xh, dzw, inp + base, dout + base, nv, k, &cur, g);
      s1 += gn_chunk_sum<V>(dzw, NULL, nv, k, 0.0f);
      s2 += gn_chunk_sum<V>(dzw, xh, nv, k, 0.0f);
    }
    s1 = cu_block_sum(s1);
    s2 = cu_block_sum(s2);
    const float m1 = (float)(s1 / (double)n), m2 = (float)(s2 / (double)n);
    cur = start;
    for (int k = 0; k < chunks; k++) {
      if (!cached) gn_dinp_chunk<V>(xh, dzw, inp + base, dout + base, nv, k, &cur, g);
      gn_dinp_out<V>(dinp + base, xh, dzw, nv, k, g.rs, m1, m2);
    }
  }
}

// Block (c, s): piece s of channel c's (B, HW) elements (cu_plane_walk),
// its sums of dz and dz * xhat into part[c * S + s] and part[(C + c) * S + s];
// when S is 1, added to dbias[c] and dweight[c] (either NULL) instead.
template <typename T>
__global__ static void gn_dparam_kernel(double *part, float *dweight, float *dbias, const T *dout,
                                        const T *inp, const float *weight, const float *bias,
                                        const float *mean, const float *rstd, int B, int C, int HW,
                                        int G, int S, int silu) {
  const int CG = C / G, s = blockIdx.y;
  for (int c = blockIdx.x; c < C; c += gridDim.x) {
    const int g = c / CG;
    const float w = weight[c], bb = silu ? bias[c] : 0.0f;
    double s_dz = 0.0, s_dzx = 0.0;
    for (cu_plane_walk it = cu_plane_walk_start((size_t)B * HW, S, s, HW); it.i < it.end;
         cu_plane_walk_next(&it, HW)) {
      const size_t b = it.o, at = (b * C + c) * HW + it.r;
      const float xhat = (cu_ld(&inp[at]) - mean[b * G + g]) * rstd[b * G + g];
      const float dz = gn_dz(cu_ld(&dout[at]), xhat, w, bb, silu);
      s_dz += dz;
      s_dzx += (double)dz * xhat;
    }
    s_dz = cu_block_sum(s_dz);
    s_dzx = cu_block_sum(s_dzx);
    if (threadIdx.x) continue;
    if (S > 1) {
      part[(size_t)c * S + s] = s_dz, part[(size_t)(C + c) * S + s] = s_dzx;
    } else {
      if (dweight) dweight[c] += (float)s_dzx;
      if (dbias) dbias[c] += (float)s_dz;
    }
  }
}

// dweight[c] += sum dz * xhat, dbias[c] += sum dz over (b, HW) (either NULL),
// in pieces: one block per channel left most of an H200 idle (0.32 ms for a
// (128, 128, 32, 32) backward, a sixth of memory bandwidth).
template <typename T>
static void gn_dparams(const a3_backend *be, float *dweight, float *dbias, const T *dout,
                       const T *inp, const float *weight, const float *bias, const float *mean,
                       const float *rstd, int B, int C, int HW, int G, int silu) {
  const int S = cu_plane_pieces(C, (size_t)B * HW);
  double *part = NULL;
  if (S > 1) {
    part = (double *)cu_scratch_get(be, &cu_state(be)->plane_parts,
                                    (size_t)2 * C * S * sizeof(double));
    if (!part) return;
  }
  gn_dparam_kernel<T><<<dim3(cu_grid(C), (unsigned)S), CU_THREADS, 0, cu_stream(be)>>>(
      part, dweight, dbias, dout, inp, weight, bias, mean, rstd, B, C, HW, G, S, silu);
  if (!CU_LAUNCHED(be) || S == 1) return;
  if (dbias) cu_finish_plane_parts(be, dbias, part, C, S, 1);
  if (dweight) cu_finish_plane_parts(be, dweight, part + (size_t)C * S, C, S, 1);
}

// dinp's launch for storage type T, wide or scalar slots.
template <typename T>
static void gn_dinp_launch(const a3_backend *be, T *dinp, const T *dout, const T *inp,
                           const float *weight, const float *bias, const float *mean,
                           const float *rstd, int BG, int G, int CG, int HW, int silu) {
  typedef void fn(T *, const T *, const T *, const float *, const float *, const float *,
                  const float *, int, int, int, int, int);
  const int V = gn_wide<T>::V;
  fn *kernel = gn_wide_slots(HW, V, dinp, dout, inp) ? gn_dinp_kernel<T, V> : gn_dinp_kernel<T, 1>;
  kernel<<<cu_grid(BG), gn_threads(CG * HW), 0, cu_stream(be)>>>(dinp, dout, inp, weight, bias,
                                                                 mean, rstd, BG, G, CG, HW, silu);
  CU_LAUNCHED(be);
}

// The backward for storage type T (dinp, dweight, dbias each skipped when NULL).
template <typename T>
static void gn_backward_t(const a3_backend *be, T *dinp, float *dweight, float *dbias,
                          const T *dout, const T *inp, const float *weight, const float *bias,
                          const float *mean, const float *rstd, int B, int C, int HW, int G,
                          int silu) {
  if (dweight || dbias)
    gn_dparams<T>(be, dweight, dbias, dout, inp, weight, bias, mean, rstd, B, C, HW, G, silu);
  if (dinp)
    gn_dinp_launch<T>(be, dinp, dout, inp, weight, bias, mean, rstd, B * G, G, C / G, HW, silu);
}

static void gn_backward(const a3_backend *be, a3_act *dinp, float *dweight, float *dbias,
                        const a3_act *dout, const a3_act *inp, const float *weight,
                        const float *bias, const float *mean, const float *rstd, int B, int C,
                        int HW, int G, int silu) {
  if (B * G <= 0 || !gn_fits_int(be, B, C, HW, G)) return;
  CU_ACT_DISPATCH(be, {
    gn_backward_t<T>(be, cu_t<T>(dinp), dweight, dbias, cu_t<T>(dout), cu_t<T>(inp), weight, bias,
                     mean, rstd, B, C, HW, G, silu);
  });
}

void cuda_groupnorm_backward(const a3_backend *be,
                             a3_act *dinp,        // (B, C, HW) overwritten, or NULL
                             float *dweight,      // (C) +=, or NULL
                             float *dbias,        // (C) +=, or NULL
                             const a3_act *dout,  // (B, C, HW)
                             const a3_act *inp,   // (B, C, HW)
                             const float *weight, // (C)
                             const float *mean,   // (B, G)
                             const float *rstd,   // (B, G)
                             int B, int C, int HW, int G) {
  gn_backward(be, dinp, dweight, dbias, dout, inp, weight, NULL, mean, rstd, B, C, HW, G, 0);
}

void cuda_groupnorm_silu_backward(const a3_backend *be,
                                  a3_act *dinp,        // (B, C, HW) overwritten, or NULL
                                  float *dweight,      // (C) +=, or NULL
                                  float *dbias,        // (C) +=, or NULL
                                  const a3_act *dout,  // (B, C, HW)
                                  const a3_act *inp,   // (B, C, HW)
                                  const float *weight, // (C)
                                  const float *bias,   // (C)
                                  const float *mean,   // (B, G)
                                  const float *rstd,   // (B, G)
                                  int B, int C, int HW, int G) {
  gn_backward(be, dinp, dweight, dbias, dout, inp, weight, bias, mean, rstd, B, C, HW, G, 1);
}
