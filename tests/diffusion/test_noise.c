// Training randomness: timesteps and Gaussian noise are uniform / normal,
// reproducible, and independent of how the batch is split across ranks.
#include "a3fta/diffusion.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { N = 200000 };

static void check_timesteps(void) {
  int32_t *t = malloc(N * sizeof(int32_t)), *u = malloc(N * sizeof(int32_t));
  a3_diffusion_sample_timesteps(7, 3, 0, N, 1000, t);
  // The same numbers in two halves (rank 1 starts at sample0 = N / 2), and again.
  a3_diffusion_sample_timesteps(7, 3, 0, N / 2, 1000, u);
  a3_diffusion_sample_timesteps(7, 3, N / 2, N / 2, 1000, u + N / 2);
  CHECK(memcmp(t, u, N * sizeof(int32_t)) == 0);
  // Chi-square over 1000 bins (999 degrees of freedom: mean 999, sd 45).
  int64_t counts[1000] = {0};
  int in_range = 1;
  for (int i = 0; i < N; i++) {
    if (t[i] < 0 || t[i] >= 1000)
      in_range = 0;
    else
      counts[t[i]]++;
  }
  CHECK(in_range);
  double chi2 = 0, expect = N / 1000.0;
  for (int b = 0; b < 1000; b++) chi2 += (counts[b] - expect) * (counts[b] - expect) / expect;
  fprintf(stderr, "timesteps: chi2 %.1f over 999 dof\n", chi2);
  CHECK(chi2 > 800 && chi2 < 1200);
  // Another step or seed gives other numbers.
  a3_diffusion_sample_timesteps(7, 4, 0, 64, 1000, u);
  CHECK(memcmp(t, u, 64 * sizeof(int32_t)) != 0);
  a3_diffusion_sample_timesteps(8, 3, 0, 64, 1000, u);
  CHECK(memcmp(t, u, 64 * sizeof(int32_t)) != 0);
  free(t);
  free(u);
}

static void check_randn(void) {
  // 2000 samples of 101 elements (odd: the last Box-Muller pair is cut).
  const int64_t b = 2000, d = 101;
  float *z = malloc((size_t)(b * d) * sizeof(float)), *w = malloc((size_t)(b * d) * sizeof(float));
  a3_diffusion_randn(1, A3_STREAM_TRAIN_NOISE, 5, 0, b, d, z);
  a3_diffusion_randn(1, A3_STREAM_TRAIN_NOISE, 5, 0, b / 2, d, w);
  a3_diffusion_randn(1, A3_STREAM_TRAIN_NOISE, 5, (uint64_t)b / 2, b / 2, d, w + b / 2 * d);
  CHECK(memcmp(z, w, (size_t)(b * d) * sizeof(float)) == 0);
  double sum = 0, sum2 = 0, sum4 = 0;
  int64_t tail = 0, finite = 1;
  for (int64_t i = 0; i < b * d; i++) {
    const double v = z[i];
    if (!isfinite(v)) finite = 0;
    sum += v;
    sum2 += v * v;
    sum4 += v * v * v * v;
    if (fabs(v) > 3) tail++;
  }
  const double n = (double)(b * d), mean = sum / n, var = sum2 / n - mean * mean;
  fprintf(stderr, "randn: mean %.4f var %.4f kurtosis %.3f P(|z|>3) %.5f\n", mean, var,
          sum4 / n / (var * var), (double)tail / n);
  CHECK(finite);
  CHECK(fabs(mean) < 0.01 && fabs(var - 1) < 0.02);
  CHECK(fabs(sum4 / n / (var * var) - 3) < 0.1);   // normal, not uniform (1.8)
  CHECK(fabs((double)tail / n - 0.0027) < 0.0008); // tails as a normal's
  // Streams are independent sequences.
  a3_diffusion_randn(1, A3_STREAM_SAMPLE_NOISE, 5, 0, 1, d, w);
  CHECK(memcmp(z, w, (size_t)d * sizeof(float)) != 0);
  free(z);
  free(w);
}

static void check_training_batch(void) {
  enum { B = 4, D = 48 };
  a3_noise_schedule_table s;
  CHECK(a3_schedule_init(&s, A3_NOISE_LINEAR, 1000, A3_BETA_START, A3_BETA_END) == A3_OK);
  float x0[B * D], noise[B * D], x_t[B * D], noise2[B * D], x_t2[B * D];
  int32_t t[B], t2[B];
  for (int i = 0; i < B * D; i++) x0[i] = (float)((i % 7) - 3) / 3.0f;
  CHECK(a3_diffusion_training_batch(&s, 11, 2, 8, B, D, x0, t, noise, x_t) == A3_OK);
  // It is exactly: timesteps, then noise from its stream, then add_noise.
  a3_diffusion_sample_timesteps(11, 2, 8, B, 1000, t2);
  a3_diffusion_randn(11, A3_STREAM_TRAIN_NOISE, 2, 8, B, D, noise2);
  CHECK(a3_diffusion_add_noise(&s, t2, B, D, x0, noise2, x_t2) == A3_OK);
  CHECK(memcmp(t, t2, sizeof t) == 0 && memcmp(noise, noise2, sizeof noise) == 0);
  CHECK(memcmp(x_t, x_t2, sizeof x_t) == 0);
  // And x_t = sqrt(acp) x0 + sqrt(1 - acp) eps in double, to fp32 rounding.
  double worst = 0;
  for (int i = 0; i < B; i++) {
    const double acp = s.alphas_cumprod[t[i]];
    for (int j = 0; j < D; j++) {
      const double want = sqrt(acp) * x0[i * D + j] + sqrt(1 - acp) * noise[i * D + j];
      worst = fmax(worst, fabs(want - x_t[i * D + j]));
    }
  }
  CHECK_MSG(worst < 1e-6, "x_t off by %.3e", worst);
  a3_schedule_free(&s);
}

int main(void) {
  check_timesteps();
  check_randn();
  check_training_batch();
  return TEST_DONE("test_diffusion_noise");
}
