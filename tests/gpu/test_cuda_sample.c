// Sampling on the GPU against the CPU: N images (default 32) from the
// committed pretrained Fashion-MNIST U-Net (configs/fmnist-unet.yaml with
// configs/weights/fmnist-base-ema.safetensors), 50 DDIM steps (eta 0), fp32.
// The CPU reference is a3_sample_images on the host model (16 images per
// forward pass, its default); the candidate is the model a3fta sample and
// a3fta eval sample with on a GPU: a3_sampling_model_open with
// parallel.backend cuda (a device copy, 256 images per forward pass, so one
// batch of N here), which runs the forward and the sampler_step op there.
//
// Bound: max |gpu - cpu| <= 1 over the uint8 pixels. The noise is the same
// bits on both sides (drawn on the host), and the step op is bitwise the
// CPU's (test_cuda_ops checks it at 0), so the trajectories differ only
// through the model's fp32 rounding (another summation order in cuBLAS and
// the reductions: ~1e-6 relative per forward, test_cuda_unet). DDIM with
// eta 0 on a trained denoiser contracts such differences rather than
// amplifying them, so after 50 steps the final x stays ~1e-5 apart; a
// pixel = round((x + 1) * 127.5) then moves only when x sits within that of
// a rounding boundary, and by 1 level. A difference of 2 levels needs
// |dx| > 1 / 127.5 ~ 8e-3, three orders of magnitude beyond fp32 rounding:
// a wrong op, timestep or noise, or a batch mix-up gives tens of levels.
// With --against cpu the candidate is a separate CPU backend instance
// (the device path without a device): bitwise, bound 0.
//
// Usage: test_cuda_sample [--against cpu] [--configs DIR] [--num N] [--steps S]
// Exit: 0 pass, 1 fail, 77 no usable GPU (SKIPPED, with the CUDA error).
#define _POSIX_C_SOURCE 200809L
#include "a3fta/backend.h"
#include "a3fta/config.h"
#include "a3fta/diffusion.h"
#include "a3fta/model.h"
#include "a3fta/trainer.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef A3FTA_TEST_CONFIG_DIR
#define A3FTA_TEST_CONFIG_DIR "configs"
#endif

enum { EXIT_SKIP = 77 };

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct {
  const char *dir;
  int against_cpu;
  long num, steps;
} args;

// The pretrained model on the host, and its config (parallel.backend cuda,
// fp32; the noise schedule of the pretraining, configs/pretrain-fmnist.yaml:
// the default linear one).
static a3_status load_model(const args *a, a3_config *cfg, a3_unet **m) {
  char yaml[A3_CONFIG_STR_MAX], weights[A3_CONFIG_STR_MAX];
  snprintf(yaml, sizeof yaml, "%s/fmnist-unet.yaml", a->dir);
  snprintf(weights, sizeof weights, "%s/weights/fmnist-base-ema.safetensors", a->dir);
  const char *overrides[] = {"parallel.backend=cuda", "train.precision=fp32"};
  A3_TRY(a3_config_load(yaml, overrides, 2, cfg));
  A3_TRY(a3_unet_build(&cfg->model.arch, m));
  A3_TRY(a3_unet_load_safetensors(*m, weights, NULL));
  return A3_OK;
}

// The candidate: the GPU model a3fta sample would use, or (--against cpu) a
// copy on a separate CPU backend instance. 77 when there is no GPU.
static int open_candidate(const args *a, const a3_config *cfg, a3_unet *host,
                          const a3_backend *cpu_copy, a3_sampling_model *sm) {
  if (a->against_cpu) {
    memset(sm, 0, sizeof *sm);
    sm->batch = A3_SAMPLE_BATCH_GPU;
    snprintf(sm->name, sizeof sm->name, "%s", cpu_copy->name);
    if (a3_unet_build_on(a3_unet_arch(host), NULL, cpu_copy, &sm->device_copy) != A3_OK ||
        a3_unet_copy_params(sm->device_copy, host) != A3_OK) {
      printf("FAIL: the CPU copy: %s\n", a3_error_message());
      a3_unet_free(sm->device_copy);
      return 1;
    }
    sm->model = sm->device_copy;
    return 0;
  }
  const a3_status s = a3_sampling_model_open(cfg, MPI_COMM_WORLD, host, 0, "test_cuda_sample", sm);
  if (s == A3_ERR_CUDA || s == A3_ERR_UNIMPLEMENTED) {
    printf("SKIPPED: no usable CUDA backend: %s\n", a3_error_message());
    return EXIT_SKIP;
  }
  if (s != A3_OK) {
    printf("FAIL: a3_sampling_model_open: %s\n", a3_error_message());
    return 1;
  }
  return 0;
}

static void close_candidate(const args *a, a3_sampling_model *sm) {
  if (a->against_cpu) {
    a3_unet_free(sm->device_copy);
    memset(sm, 0, sizeof *sm);
  } else {
    a3_sampling_model_close(sm);
  }
}

// Samples on both, compares; 0 pass, 1 fail.
static int compare(const args *a, const a3_config *cfg, a3_unet *host, a3_sampling_model *sm) {
  const a3_arch_config *arch = a3_unet_arch(host);
  const size_t per = (size_t)(arch->in_channels * arch->sample_size * arch->sample_size);
  const size_t bytes = (size_t)a->num * per;
  uint8_t *ref = calloc(bytes, 1), *cand = calloc(bytes, 1);
  a3_noise_schedule_table sched = {0};
  if (!ref || !cand ||
      a3_schedule_init(&sched, cfg->train.noise_schedule, cfg->train.num_train_timesteps,
                       A3_BETA_START, A3_BETA_END) != A3_OK) {
    printf("FAIL: out of memory\n");
    return 1;
  }
  a3_sample_options o = {.sampler = A3_SAMPLER_DDIM,
                         .steps = a->steps,
                         .eta = 0.0,
                         .seed = 7,
                         .first = 0,
                         .count = a->num,
                         .max_batch = A3_SAMPLE_BATCH_CPU};
  const double t0 = now();
  a3_status s = a3_sample_images(host, &sched, &o, ref);
  const double t1 = now();
  o.max_batch = sm->batch;
  if (s == A3_OK) s = a3_sample_images(sm->model, &sched, &o, cand);
  const double t2 = now();
  a3_schedule_free(&sched);
  if (s != A3_OK) {
    printf("FAIL: sampling: %s (%s)\n", a3_error_message(), a3_error_trail());
    free(ref);
    free(cand);
    return 1;
  }
  int max_diff = 0, lo = 255, hi = 0;
  size_t n_diff = 0;
  double sum_diff = 0.0;
  for (size_t i = 0; i < bytes; i++) {
    const int d = abs((int)cand[i] - (int)ref[i]);
    max_diff = d > max_diff ? d : max_diff;
    n_diff += d != 0;
    sum_diff += d;
    lo = ref[i] < lo ? ref[i] : lo;
    hi = ref[i] > hi ? ref[i] : hi;
  }
  const int bound = a->against_cpu ? 0 : 1;
  printf("%ld images x %zu pixels, %ld DDIM steps: cpu %.2f s (batch %d), %s %.2f s (batch %d)\n",
         a->num, per, a->steps, t1 - t0, A3_SAMPLE_BATCH_CPU, sm->name, t2 - t1,
         (int)(sm->batch < a->num ? sm->batch : a->num));
  printf("pixels differing: %zu of %zu (%.3g%%), mean |diff| %.3g, max |diff| %d (bound %d); "
         "cpu images span [%d, %d]\n",
         n_diff, bytes, 100.0 * (double)n_diff / (double)bytes, sum_diff / (double)bytes, max_diff,
         bound, lo, hi);
  const int ok = max_diff <= bound && hi - lo > 100; // a real image, not a constant
  printf("test_cuda_sample: %s\n", ok ? "PASS" : "FAIL");
  free(ref);
  free(cand);
  return ok ? 0 : 1;
}

static int usage(const char *argv0) {
  fprintf(stderr, "usage: %s [--against cpu] [--configs DIR] [--num N] [--steps S]\n", argv0);
  return 2;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0); // lines reach ctest's log even if the test crashes
  args a = {A3FTA_TEST_CONFIG_DIR, 0, 32, 50};
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--against") && i + 1 < argc) {
      if (strcmp(argv[++i], "cpu") != 0) return usage(argv[0]);
      a.against_cpu = 1;
    } else if (!strcmp(argv[i], "--configs") && i + 1 < argc) {
      a.dir = argv[++i];
    } else if (!strcmp(argv[i], "--num") && i + 1 < argc) {
      a.num = strtol(argv[++i], NULL, 10);
    } else if (!strcmp(argv[i], "--steps") && i + 1 < argc) {
      a.steps = strtol(argv[++i], NULL, 10);
    } else {
      return usage(argv[0]);
    }
  }
  if (a.num < 1 || a.steps < 1 || a.steps > 1000) return usage(argv[0]);
  MPI_Init(&argc, &argv);
  a3_log_set_level(A3_LOG_WARN);
  a3_config cfg;
  memset(&cfg, 0, sizeof cfg); // a3_config_free is safe on it
  a3_unet *host = NULL;
  int rc = 0;
  if (load_model(&a, &cfg, &host) != A3_OK) {
    printf("FAIL: loading the model: %s\n", a3_error_message());
    rc = 1;
  }
  a3_backend cpu_copy = *a3_backend_cpu();
  cpu_copy.name = "cpu-copy";
  a3_sampling_model sm = {0};
  if (rc == 0) rc = open_candidate(&a, &cfg, host, &cpu_copy, &sm);
  if (rc == 0) {
    rc = compare(&a, &cfg, host, &sm);
    close_candidate(&a, &sm);
  }
  a3_unet_free(host);
  a3_config_free(&cfg);
  MPI_Finalize();
  return rc;
}
