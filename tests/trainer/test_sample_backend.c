// Sampling through the op table (a3_sample_images on a model of any backend)
// against the host loop it replaced (a3_unet_forward + a3_sampler_step on
// host arrays), bit for bit, with the model on the CPU backend and on a
// SEPARATE CPU backend instance (a copy of the CPU op table under another
// name, built with a3_unet_build_on + a3_unet_copy_params: the path a GPU
// model takes, with nothing that could tell it from the CPU). Then the
// choice of the sampling model (a3_sampling_model_open, a3_backend_pick).
#include "a3fta/backend.h"
#include "a3fta/diffusion.h"
#include "a3fta/model.h"
#include "a3fta/trainer.h"
#include "test_util.h"
#include "trainer_test_util.h"

#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>

static uint8_t ref_u8(float v) {
  const float p = roundf((v + 1.0f) * 127.5f);
  return (uint8_t)(p < 0.0f ? 0.0f : p > 255.0f ? 255.0f : p);
}

// The sampling loop as it was before it went through the op table.
static int host_reference(a3_unet *m, const a3_noise_schedule_table *sched,
                          const a3_sample_options *o, uint8_t *out) {
  const a3_arch_config *arch = a3_unet_arch(m);
  const int64_t per = arch->in_channels * arch->sample_size * arch->sample_size;
  const int batch = (int)(o->max_batch < o->count ? o->max_batch : o->count);
  float *x = calloc((size_t)(batch * per), sizeof(float));
  float *eps = calloc((size_t)(batch * per), sizeof(float));
  float *noise = calloc((size_t)(batch * per), sizeof(float));
  float *tf = calloc((size_t)batch, sizeof(float));
  int32_t *ts = calloc((size_t)o->steps, sizeof(int32_t));
  int ok = x && eps && noise && tf && ts && a3_sampler_timesteps(sched->T, o->steps, ts) == A3_OK;
  for (int64_t start = 0; ok && start < o->count; start += batch) {
    const int b = (int)(o->count - start < batch ? o->count - start : batch);
    const int64_t first = o->first + start, n = (int64_t)b * per;
    if (a3_unet_batch(m) != b) ok = a3_unet_plan(m, b) == A3_OK;
    a3_diffusion_randn(o->seed, A3_STREAM_SAMPLE_INIT, 0, (uint64_t)first, b, per, x);
    for (int64_t i = 0; ok && i < o->steps; i++) {
      const int32_t t = ts[i], t_prev = a3_sampler_prev_timestep(sched->T, o->steps, t);
      for (int j = 0; j < b; j++) tf[j] = (float)t;
      ok = a3_unet_forward(m, x, tf, eps) == A3_OK;
      const int noisy = o->sampler == A3_SAMPLER_DDPM ? t > 0 : o->eta > 0.0;
      if (noisy)
        a3_diffusion_randn(o->seed, A3_STREAM_SAMPLE_NOISE, (uint64_t)i, (uint64_t)first, b, per,
                           noise);
      ok = ok && a3_sampler_step(o->sampler, sched, t, t_prev, o->eta, eps, x, noisy ? noise : NULL,
                                 x, n) == A3_OK;
    }
    for (int64_t k = 0; ok && k < n; k++) out[start * per + k] = ref_u8(x[k]);
  }
  free(x);
  free(eps);
  free(noise);
  free(tf);
  free(ts);
  return ok;
}

static const a3_sample_options CASES[] = {
    // sampler, steps, eta, seed, first, count, max_batch
    {A3_SAMPLER_DDIM, 5, 0.0, 11, 2, 7, 3}, // chunks 3 + 3 + 1 (re-planned)
    {A3_SAMPLER_DDPM, 4, 0.0, 12, 0, 5, 4},
    {A3_SAMPLER_DDIM, 6, 0.5, 13, 5, 4, 4},
};
enum { N_CASES = sizeof CASES / sizeof CASES[0], PER = 16 * 16 };

static void check_paths(a3_unet *host, a3_unet *copy, const a3_noise_schedule_table *sched) {
  for (int k = 0; k < N_CASES; k++) {
    const a3_sample_options *o = &CASES[k];
    const size_t bytes = (size_t)o->count * PER;
    uint8_t *ref = calloc(bytes, 1), *on_host = calloc(bytes, 1), *on_copy = calloc(bytes, 1);
    CHECK(ref && on_host && on_copy && host_reference(host, sched, o, ref));
    CHECK(a3_sample_images(host, sched, o, on_host) == A3_OK);
    CHECK(a3_sample_images(copy, sched, o, on_copy) == A3_OK);
    CHECK_MSG(!memcmp(on_host, ref, bytes), "case %d: the CPU model's images differ", k);
    CHECK_MSG(!memcmp(on_copy, ref, bytes), "case %d: the other CPU backend's images differ", k);
    int64_t lo = 255, hi = 0; // not a constant image
    for (size_t i = 0; i < bytes; i++) {
      lo = ref[i] < lo ? ref[i] : lo;
      hi = ref[i] > hi ? ref[i] : hi;
    }
    CHECK_MSG(hi - lo > 50, "case %d: images span only [%lld, %lld]", k, (long long)lo,
              (long long)hi);
    free(ref);
    free(on_host);
    free(on_copy);
  }
}

// parallel.backend cpu: the host model itself, the CPU's default batch;
// cuda: a GPU copy, or the error of a machine without one; auto: either.
static void check_sampling_model(const char *data, a3_unet *host) {
  const char *backends[] = {"parallel.backend=cpu", "parallel.backend=cuda",
                            "parallel.backend=auto"};
  for (int k = 0; k < 3; k++) {
    a3_config cfg;
    const char *extra[] = {backends[k]};
    if (tt_config(&cfg, data, "/nonexistent/out", extra, 1) != 0) {
      CHECK(0);
      continue;
    }
    a3_sampling_model sm;
    const a3_status s = a3_sampling_model_open(&cfg, MPI_COMM_WORLD, host, 0, "test", &sm);
    if (k == 0) {
      CHECK(s == A3_OK && sm.model == host && !sm.device && !sm.device_copy);
      CHECK(sm.batch == A3_SAMPLE_BATCH_CPU && !strcmp(sm.name, "cpu"));
    } else if (s == A3_OK) {
      CHECK(sm.device ? sm.model == sm.device_copy && sm.batch == A3_SAMPLE_BATCH_GPU
                      : k == 2 && sm.model == host && sm.batch == A3_SAMPLE_BATCH_CPU);
      fprintf(stderr, "%s: sampling on %s\n", backends[k], sm.name);
    } else {
      CHECK_MSG(k == 1 && (s == A3_ERR_CUDA || s == A3_ERR_CONFIG), "%s: %s", backends[k],
                a3_error_message());
      CHECK(!sm.model && !sm.device && !sm.device_copy);
      a3_error_clear();
    }
    a3_sampling_model_close(&sm);
    if (k == 0) { // an explicit batch wins
      CHECK(a3_sampling_model_open(&cfg, MPI_COMM_WORLD, host, 5, "test", &sm) == A3_OK);
      CHECK(sm.batch == 5);
      a3_sampling_model_close(&sm);
    }
    a3_config_free(&cfg);
  }
}

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  a3_log_set_level(A3_LOG_WARN);
  const char *data = "/nonexistent/data.h5"; // the config only names it
  a3_config cfg;
  const char *extra[] = {"strategy.name=a3fta"}; // the adapters' extras must be copied too
  CHECK(tt_config(&cfg, data, "/nonexistent/out", extra, 1) == 0);
  a3_backend other = *a3_backend_cpu();
  other.name = "cpu-copy";
  const a3_unet_extras ex = a3_unet_extras_from_strategy(&cfg.strategy);
  a3_unet *host = NULL, *copy = NULL;
  a3_noise_schedule_table sched = {0};
  CHECK(ex.adapter_rank > 0);
  CHECK(a3_unet_build_ex(&cfg.model.arch, &ex, &host) == A3_OK);
  if (host) {
    a3_unet_init_random(host, 5);
    CHECK(a3_unet_build_on(&cfg.model.arch, &ex, &other, &copy) == A3_OK);
    CHECK(copy && a3_unet_backend(copy) == &other && a3_unet_copy_params(copy, host) == A3_OK);
    CHECK(a3_schedule_init(&sched, A3_NOISE_LINEAR, 1000, A3_BETA_START, A3_BETA_END) == A3_OK);
    if (copy) check_paths(host, copy, &sched);
    check_sampling_model(data, host);
  }
  a3_unet_free(copy);
  a3_unet_free(host);
  a3_schedule_free(&sched);
  a3_config_free(&cfg);
  MPI_Finalize();
  return TEST_DONE("test_trainer_sample_backend");
}
