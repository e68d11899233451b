// The CPU backend's training_noise op against the host's training batch
// (a3_diffusion_training_batch): bitwise the same timesteps, noise and x_t,
// in place too, for odd and even sample sizes, several schedules and sizes
// large enough for the op's threads. Golden values pin the numbers the
// formulas gave before they moved to a3fta/backend_noise.h.
#include "a3fta/backend.h"
#include "a3fta/diffusion.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  uint64_t seed, step, sample0;
  int batch, per_sample, T;
  a3_noise_schedule kind;
} noise_case;

static const noise_case CASES[] = {
    {11, 2, 8, 4, 48, 1000, A3_NOISE_LINEAR},
    {0, 0, 0, 8, 1024, 1000, A3_NOISE_LINEAR},
    {7, 123, 16, 5, 3 * 32 * 32, 1000, A3_NOISE_COSINE},
    {42, 0xffffffffu, 1000, 3, 101, 1000, A3_NOISE_SCALED_LINEAR},
    {1, 5, 0, 37, 49, 37, A3_NOISE_LINEAR},
    {3, 9, 2, 6, 1, 1000, A3_NOISE_LINEAR},
    {5, 1, 0, 40, 1025, 1000, A3_NOISE_LINEAR}, // 41000 floats: the op's threads run
};

static float *floats(size_t n, float fill) {
  float *p = malloc(n * sizeof(float));
  for (size_t i = 0; p && i < n; i++) p[i] = fill;
  return p;
}

// One case: the host batch, the op, and the op in place (x_t == x0).
static void check_case(const noise_case *c) {
  a3_noise_schedule_table s;
  CHECK(a3_schedule_init(&s, c->kind, c->T, A3_BETA_START, A3_BETA_END) == A3_OK);
  const size_t n = (size_t)c->batch * (size_t)c->per_sample;
  float *x0 = floats(n, 0), *noise = floats(n, 0), *x_t = floats(n, 0);
  float *noise2 = floats(n, NAN), *x_t2 = floats(n, NAN), *tf = floats((size_t)c->batch, NAN);
  int32_t *t = malloc((size_t)c->batch * sizeof(int32_t));
  for (size_t i = 0; i < n; i++) x0[i] = (float)((int)(i % 13) - 6) / 6.0f;
  CHECK(a3_diffusion_training_batch(&s, c->seed, c->step, c->sample0, c->batch, c->per_sample, x0,
                                    t, noise, x_t) == A3_OK);
  const a3_backend *cpu = a3_backend_cpu();
  cpu->ops->training_noise(cpu, x_t2, noise2, tf, x0, s.alphas_cumprod, c->seed, c->step,
                           c->sample0, c->batch, c->per_sample, c->T);
  int same_t = 1;
  for (int i = 0; i < c->batch; i++) same_t = same_t && tf[i] == (float)t[i];
  CHECK_MSG(same_t, "seed %llu step %llu: timesteps differ", (unsigned long long)c->seed,
            (unsigned long long)c->step);
  CHECK(memcmp(noise, noise2, n * sizeof(float)) == 0);
  CHECK(memcmp(x_t, x_t2, n * sizeof(float)) == 0);
  memcpy(x_t2, x0, n * sizeof(float)); // in place: x_t == x0
  cpu->ops->training_noise(cpu, x_t2, noise2, tf, x_t2, s.alphas_cumprod, c->seed, c->step,
                           c->sample0, c->batch, c->per_sample, c->T);
  CHECK(memcmp(x_t, x_t2, n * sizeof(float)) == 0);
  free(x0), free(noise), free(x_t), free(noise2), free(x_t2), free(tf), free(t);
  a3_schedule_free(&s);
}

// Values of the formulas before the refactor (seed 11, step 2, sample0 8,
// 4 samples of 48): timesteps, and each sample's first two noise values.
static void check_golden(void) {
  static const int32_t want_t[4] = {197, 699, 671, 656};
  static const float want_z[4][2] = {{-0x1.1ef1fp+0f, -0x1.2cad26p+0f},
                                     {-0x1.3422a4p-1f, -0x1.771802p-2f},
                                     {0x1.ca40f6p-2f, -0x1.bdec04p+0f},
                                     {-0x1.b4da82p-2f, -0x1.65ac1cp-1f}};
  int32_t t[4];
  float z[4 * 48];
  a3_diffusion_sample_timesteps(11, 2, 8, 4, 1000, t);
  a3_diffusion_randn(11, A3_STREAM_TRAIN_NOISE, 2, 8, 4, 48, z);
  CHECK(memcmp(t, want_t, sizeof t) == 0);
  for (int i = 0; i < 4; i++)
    CHECK_MSG(z[i * 48] == want_z[i][0] && z[i * 48 + 1] == want_z[i][1],
              "sample %d: noise %a %a, want %a %a", i, (double)z[i * 48], (double)z[i * 48 + 1],
              (double)want_z[i][0], (double)want_z[i][1]);
}

int main(void) {
  for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++) check_case(&CASES[k]);
  check_golden();
  return TEST_DONE("test_diffusion_noise_op");
}
