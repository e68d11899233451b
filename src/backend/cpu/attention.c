// Scaled-dot-product attention on the CPU, one (b, head) at a time.
//
// Head h of q, k, v, out is the column block [h*d, (h+1)*d) of a (T, C)
// matrix: sgemm reads it in place with leading dimension C, so heads are
// never copied out or merged back.
//   forward:  S = Q K^T / sqrt(d) (T, T); P = softmax(S) by rows; O = P V
//   backward: dP = dO V^T; dV = P^T dO; dS = P * (dP - rowsum(dP * P));
//             dQ = dS K / sqrt(d); dK = dS^T Q / sqrt(d)
// The softmax subtracts the row maximum (exp never overflows) and sums in double.
//
// Threads: the (b, head) pairs are split over OpenMP threads, each running
// oneDNN's sgemm single-threaded (it does so inside a parallel region) on
// its pair; a pair's arithmetic does not depend on the split, so results are
// the same for any thread count. The (T, T) scratch block (dP, or S when
// probs is NULL) is one per thread: the workspace holds ATTN_SLOTS of them
// (see cpu_attention_workspace_size), and at most that many threads run.
// The U-Net's 8x8 attention (B = 64, T = 64, C = 64), ms forward / backward
// (tools/bench/run_ops.sh row, best of 3 interleaved runs, 2-core Zen 5):
//   one pair after the other, sgemm threaded by OpenBLAS's own pool,
//   scalar softmax:                       1 thread 1.15 / 0.72   2 threads 1.21 / 0.73
//   pairs over OpenMP, oneDNN sgemm,
//   vectorised softmax:                   1 thread 0.50 / 0.72   2 threads 0.30 / 0.49
#include "cpu_ops.h"

#include <math.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>

CPU_FP_CONTRACT

// Scratch blocks in the workspace: one per thread, at most this many threads
// (a constant, so that the size asked for at planning time still holds if
// the thread count changes later).
static int attn_slots(void) {
  const int procs = omp_get_num_procs();
  return procs < 1 ? 1 : procs > 32 ? 32 : procs;
}

size_t cpu_attention_workspace_size(const a3_backend *be, int B, int T, int C, int NH) {
  (void)be, (void)B, (void)C, (void)NH;
  return (size_t)attn_slots() * T * T * sizeof(float); // a (T, T) block per thread: dP, or S
}

static int attn_threads(int pairs) {
  int n = omp_get_max_threads();
  if (n > attn_slots()) n = attn_slots();
  return n < pairs ? n : pairs;
}

// e^x for x <= 0 (softmax arguments), branch-free so that the row loop
// vectorises: Cody-Waite reduction and Cephes' degree-6 polynomial (as
// cpu_sigmoidf), about 1 ulp; arguments below -87 give ~1e-38 instead of 0,
// negligible next to the row's largest term, which is 1.
static inline float exp_neg(float t) {
  t = t > -87.0f ? t : -87.0f; // max(t, -87): one instruction, not a branch
  const float k = (t * 1.44269504088896341f + 12582912.0f) - 12582912.0f; // round(t / ln 2)
  const float r = (t - k * 0.693359375f) + k * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = ((int32_t)k + 127) * (1 << 23);
  float two_k;
  memcpy(&two_k, &bits, sizeof two_k);
  return p * two_k;
}

// Each row of s (T, T) becomes its softmax.
CPU_CLONES static void softmax_rows(float *s, int T) {
  for (int i = 0; i < T; i++) {
    float *row = s + (size_t)i * T;
    float max = row[0];
#pragma omp simd reduction(max : max)
    for (int j = 0; j < T; j++) max = row[j] > max ? row[j] : max;
#pragma omp simd
    for (int j = 0; j < T; j++) row[j] = exp_neg(row[j] - max);
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int j = 0; j < T; j++) sum += row[j];
    const float inv = (float)(1.0 / sum);
#pragma omp simd
    for (int j = 0; j < T; j++) row[j] *= inv;
  }
}

void cpu_attention_forward(const a3_backend *be,
                           a3_act *out_act,     // (B, T, C)
                           float *probs,        // (B, NH, T, T) or NULL
                           const a3_act *q_act, // (B, T, C)
                           const a3_act *k_act, // (B, T, C)
                           const a3_act *v_act, // (B, T, C)
                           int B, int T, int C, int NH, void *workspace) {
  float *out = a3_f32_act(out_act);
  const float *q = a3_f32_cact(q_act);
  const float *k = a3_f32_cact(k_act);
  const float *v = a3_f32_cact(v_act);
  (void)be;
  const int d = C / NH, pairs = B * NH;
  const float scale = 1.0f / sqrtf((float)d);
#pragma omp parallel num_threads(attn_threads(pairs))
  {
    float *scratch = (float *)workspace + (size_t)omp_get_thread_num() * T * T;
#pragma omp for schedule(static)
    for (int bh = 0; bh < pairs; bh++) {
      const int b = bh / NH, h = bh % NH;
      const size_t off = (size_t)b * T * C + (size_t)h * d;
      float *p = probs ? probs + (size_t)bh * T * T : scratch;
      dnnl_sgemm('N', 'T', T, T, d, scale, q + off, C, k + off, C, 0.0f, p, T);
      softmax_rows(p, T);
      dnnl_sgemm('N', 'N', T, d, T, 1.0f, p, T, v + off, C, 0.0f, out + off, C);
    }
  }
}

// dP (T, T) becomes dS = P * (dP - rowsum(dP * P)): the softmax backward.
CPU_CLONES static void softmax_backward_rows(float *dp, const float *p, int T) {
  for (int i = 0; i < T; i++) {
    float *dr = dp + (size_t)i * T;
    const float *pr = p + (size_t)i * T;
    double dot = 0.0;
#pragma omp simd reduction(+ : dot)
    for (int j = 0; j < T; j++) dot += (double)dr[j] * pr[j];
    const float fdot = (float)dot;
#pragma omp simd
    for (int j = 0; j < T; j++) dr[j] = pr[j] * (dr[j] - fdot);
  }
}

void cpu_attention_backward(const a3_backend *be,
                            a3_act *dq_act,         // (B, T, C) or NULL
                            a3_act *dk_act,         // (B, T, C) or NULL
                            a3_act *dv_act,         // (B, T, C) or NULL
                            const a3_act *dout_act, // (B, T, C)
                            const a3_act *q_act,    // (B, T, C)
                            const a3_act *k_act,    // (B, T, C)
                            const a3_act *v_act,    // (B, T, C)
                            const float *probs,     // (B, NH, T, T)
                            int B, int T, int C, int NH, void *workspace) {
  float *dq = a3_f32_act(dq_act);
  float *dk = a3_f32_act(dk_act);
  float *dv = a3_f32_act(dv_act);
  const float *dout = a3_f32_cact(dout_act);
  const float *q = a3_f32_cact(q_act);
  const float *k = a3_f32_cact(k_act);
  const float *v = a3_f32_cact(v_act);
  (void)be;
  const int d = C / NH, pairs = B * NH;
  const float scale = 1.0f / sqrtf((float)d);
#pragma omp parallel num_threads(attn_threads(pairs))
  {
    float *ds = (float *)workspace + (size_t)omp_get_thread_num() * T * T;
#pragma omp for schedule(static)
    for (int bh = 0; bh < pairs; bh++) {
      const int b = bh / NH, h = bh % NH;
      const size_t off = (size_t)b * T * C + (size_t)h * d;
      const float *p = probs + (size_t)bh * T * T;
      if (dv) dnnl_sgemm('T', 'N', T, d, T, 1.0f, p, T, dout + off, C, 0.0f, dv + off, C);
      if (!dq && !dk) continue;
      dnnl_sgemm('N', 'T', T, T, d, 1.0f, dout + off, C, v + off, C, 0.0f, ds, T);
      softmax_backward_rows(ds, p, T);
      if (dq) dnnl_sgemm('N', 'N', T, d, T, scale, ds, T, k + off, C, 0.0f, dq + off, C);
      if (dk) dnnl_sgemm('T', 'N', T, d, T, scale, ds, T, q + off, C, 0.0f, dk + off, C);
    }
  }
}
