// One training step of a U-Net config (default configs/fmnist-unet.yaml) at
// batch B, timed: zero the gradients, forward, MSE against the noise,
// backward (no input gradient), AdamW over the trainable parameters. The
// PyTorch peer is tools/bench/peer_step.py; tools/bench/run_step.sh runs both
// interleaved and tabulates. Prints (one fact per line, for run_step.sh):
//   # a3fta <BLAS info>; OpenMP threads T; batch B; strategy S
//   PARAMS <total> <trainable>
//   FLOPS <forward GMAC> <step GFLOP> (the count: see count_flops below)
//   SGEMM <OpenBLAS GFLOP/s> <oneDNN GFLOP/s>   (best of --sgemm-reps 1024^3 sgemms)
//   STEP <ms> <CPU ms>        (one per timed step, after --warmup steps; CPU time of
//                              all the process's threads, spinning included)
//   MEM <arena> <params> <grads> <optimizer> <max RSS> <RSS before the model> (bytes)
//   LOSS <first> <last>
//
// usage: a3fta_bench_step [--config PATH] [--batch B] [--steps N] [--warmup W]
//                         [--strategy full|attention] [--threads T] [--sgemm-reps R]
// --strategy attention trains only the attention blocks (parameters whose
// name contains ".attentions.": group_norm, to_q/k/v, to_out.0), as the
// "attention" strategy does. Threads: --threads, else OMP_NUM_THREADS, else
// the cores (OpenMP's default).
#define _POSIX_C_SOURCE 200809L
#include "a3fta/backend.h"
#include "a3fta/config.h"
#include "a3fta/core.h"
#include "a3fta/diffusion.h"
#include "a3fta/model.h"
#include "a3fta/optim.h"

#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void die(const char *what) {
  fprintf(stderr, "a3fta_bench_step: %s: %s\n", what, a3_error_message());
  exit(1);
}

static float *buf(size_t n) {
  float *p = NULL;
  if (a3_alloc((void **)&p, n ? n : 1, sizeof(float)) != A3_OK) die("out of memory");
  return p;
}

// Resident set size now, bytes (/proc/self/statm).
static size_t rss_now(void) {
  long pages = 0, resident = 0;
  FILE *f = fopen("/proc/self/statm", "r");
  if (!f) return 0;
  if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
  fclose(f);
  return (size_t)resident * (size_t)sysconf(_SC_PAGESIZE);
}

// CPU time of the whole process (all threads), seconds.
static double cpu_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static size_t rss_max(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return (size_t)u.ru_maxrss * 1024; // kB on Linux
}

// ---------------------------------------------------------------- FLOP count
// Multiply-adds of the convolutions, linears and attention products (QK^T and
// PV), from the architecture alone (independent of the model code), in
// execution order. The step counts 2 FLOPs per MAC: the forward, plus for
// the backward each op's weight gradient (when it trains) and input gradient
// (when something below needs it), each as many MACs as its forward; the
// attention products' backward is 2x their forward. GroupNorm, SiLU, adds,
// softmax and the optimizer are not counted. Full training: every op's
// weight gradient, every input gradient but conv_in's and the time MLP's
// (so about 3x the forward). Attention strategy: weight gradients of the
// attention blocks' linears, input gradients from the lowest attention
// block up (time projections excluded: the time embedding is frozen).
typedef struct {
  int B, T4;
  int attention_only;
  int in_attn, seen_attn; // inside an attention block; at or above the lowest one
  double fwd, bwd;        // MACs
} flop_count;

enum { OP_CONV, OP_LINEAR, OP_TEMB, OP_TIME, OP_STEM, OP_CORE };

static void op(flop_count *f, int kind, double macs) {
  f->fwd += macs;
  if (kind == OP_CORE) {
    f->bwd += 2 * macs;
    return;
  }
  if (!f->attention_only) {
    f->bwd += macs;                                         // weight gradient
    if (kind != OP_STEM && kind != OP_TIME) f->bwd += macs; // input gradient
    return;
  }
  if (f->in_attn)
    f->bwd += 2 * macs; // weight + input gradient
  else if (f->seen_attn && kind != OP_TEMB)
    f->bwd += macs; // input gradient only
}

static double conv_macs(const flop_count *f, int C, int OC, int OH, int K) {
  return (double)f->B * OC * OH * OH * C * K * K;
}

static void resnet(flop_count *f, int cin, int cout, int S) {
  op(f, OP_CONV, conv_macs(f, cin, cout, S, 3));
  op(f, OP_TEMB, (double)f->B * f->T4 * cout);
  op(f, OP_CONV, conv_macs(f, cout, cout, S, 3));
  if (cin != cout) op(f, OP_CONV, conv_macs(f, cin, cout, S, 1));
}

static void attention(flop_count *f, int C, int S) {
  const double T = (double)S * S;
  f->in_attn = f->seen_attn = 1;
  for (int i = 0; i < 3; i++) op(f, OP_LINEAR, f->B * T * C * C); // to_q, to_k, to_v
  op(f, OP_CORE, 2.0 * f->B * T * T * C);                         // QK^T, PV (all heads)
  op(f, OP_LINEAR, f->B * T * C * C);                             // to_out.0
  f->in_attn = 0;
}

static void count_flops(const a3_arch_config *a, int B, int attention_only, double *fwd_gmac,
                        double *step_gflop) {
  const int n = a->n_block_out_channels, c0 = (int)a->block_out_channels[0];
  flop_count f = {.B = B, .T4 = 4 * c0, .attention_only = attention_only};
  int S = (int)a->sample_size;
  op(&f, OP_STEM, conv_macs(&f, (int)a->in_channels, c0, S, 3));
  op(&f, OP_TIME, (double)B * c0 * f.T4);
  op(&f, OP_TIME, (double)B * f.T4 * f.T4);
  int cout = c0;
  for (int i = 0; i < n; i++) {
    const int cin = cout;
    cout = (int)a->block_out_channels[i];
    for (int j = 0; j < a->layers_per_block; j++) {
      resnet(&f, j == 0 ? cin : cout, cout, S);
      if (a->down_block_types[i] == A3_DOWN_ATTN) attention(&f, cout, S);
    }
    if (i < n - 1) {
      S /= 2;
      op(&f, OP_CONV, conv_macs(&f, cout, cout, S, 3)); // stride 2: output S/2
    }
  }
  const int cm = (int)a->block_out_channels[n - 1];
  resnet(&f, cm, cm, S);
  attention(&f, cm, S);
  resnet(&f, cm, cm, S);
  cout = cm;
  for (int i = 0; i < n; i++) {
    const int prev = cout;
    cout = (int)a->block_out_channels[n - 1 - i];
    const int cin = (int)a->block_out_channels[n - 1 - (i + 1 < n ? i + 1 : n - 1)];
    const int L = (int)a->layers_per_block + 1;
    for (int j = 0; j < L; j++) {
      const int skip = j == L - 1 ? cin : cout;
      resnet(&f, (j == 0 ? prev : cout) + skip, cout, S);
      if (a->up_block_types[i] == A3_UP_ATTN) attention(&f, cout, S);
    }
    if (i < n - 1) {
      S *= 2;
      op(&f, OP_CONV, conv_macs(&f, cout, cout, S, 3));
    }
  }
  op(&f, OP_CONV, conv_macs(&f, c0, (int)a->out_channels, S, 3)); // conv_out
  *fwd_gmac = f.fwd * 1e-9;
  *step_gflop = 2 * (f.fwd + f.bwd) * 1e-9;
}

// ---------------------------------------------------------------- sgemm peak
// Best GFLOP/s of `reps` 1024^3 sgemms (after one warm-up) with OpenBLAS and
// with oneDNN's sgemm.
static void sgemm_peak(int reps, double *openblas, double *onednn) {
  const int n = 1024;
  const size_t nn = (size_t)n * n;
  float *a = buf(nn), *b = buf(nn), *c = buf(nn);
  for (size_t i = 0; i < nn; i++) {
    a[i] = (float)((double)(a3_rng_u64(7, 1, i) >> 40) * 0x1p-24 - 0.5);
    b[i] = (float)((double)(a3_rng_u64(7, 2, i) >> 40) * 0x1p-24 - 0.5);
  }
  const double flop = 2.0 * n * n * n;
  *openblas = *onednn = 0;
  for (int r = -1; r < reps; r++) {
    double t0 = now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
    double g = flop / (now() - t0) * 1e-9;
    if (r >= 0 && g > *openblas) *openblas = g;
    t0 = now();
    if (dnnl_sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n) != dnnl_success) break;
    g = flop / (now() - t0) * 1e-9;
    if (r >= 0 && g > *onednn) *onednn = g;
  }
  free(a), free(b), free(c);
}

// ---------------------------------------------------------------- the step
typedef struct {
  a3_unet *m;
  const a3_backend *be;
  int B;
  size_t n_in, n_out;
  float *x_t, *t, *noise, *out, *dout, *loss;
  a3_param_segment *segs;
  int n_segs;
  float *adam_m, *adam_v;
  a3_adamw_hparams h;
  int64_t step;
} trainer;

static float train_step(trainer *tr) {
  const a3_backend *be = tr->be;
  a3_unet_zero_grads(tr->m);
  if (a3_unet_forward(tr->m, tr->x_t, tr->t, tr->out) != A3_OK) die("forward");
  be->ops->mse_forward(be, tr->loss, tr->out, tr->noise, tr->n_out);
  be->ops->mse_backward(be, tr->dout, tr->out, tr->noise, tr->n_out, 1.0f);
  if (a3_unet_backward(tr->m, tr->dout, NULL) != A3_OK) die("backward");
  if (a3_adamw_step(&tr->h, ++tr->step, tr->segs, tr->n_segs, a3_unet_params(tr->m),
                    a3_unet_grads(tr->m), tr->adam_m, tr->adam_v) != A3_OK)
    die("adamw");
  return *tr->loss;
}

// Trainable parameters as segments of consecutive tensors with the same
// decay flag (decay: weights of convs and linears; not norms, not biases).
static int make_segments(const a3_unet *m, a3_param_segment *segs) {
  int n = 0;
  for (int i = 0; i < a3_unet_param_count(m); i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    if (!p->trainable) continue;
    const bool decay = p->ndim > 1;
    if (n && segs[n - 1].decay == decay &&
        segs[n - 1].offset + segs[n - 1].count == (int64_t)p->offset) {
      segs[n - 1].count += (int64_t)p->numel;
    } else {
      segs[n++] = (a3_param_segment){(int64_t)p->offset, (int64_t)p->numel, decay};
    }
  }
  return n;
}

int main(int argc, char **argv) {
  const char *config = "configs/fmnist-unet.yaml", *strategy = "full";
  int B = 64, steps = 10, warmup = 3, threads = 0, sgemm_reps = 10;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    const int more = i + 1 < argc;
    if (!strcmp(a, "--config") && more)
      config = argv[++i];
    else if (!strcmp(a, "--batch") && more)
      B = atoi(argv[++i]);
    else if (!strcmp(a, "--steps") && more)
      steps = atoi(argv[++i]);
    else if (!strcmp(a, "--warmup") && more)
      warmup = atoi(argv[++i]);
    else if (!strcmp(a, "--strategy") && more)
      strategy = argv[++i];
    else if (!strcmp(a, "--threads") && more)
      threads = atoi(argv[++i]);
    else if (!strcmp(a, "--sgemm-reps") && more)
      sgemm_reps = atoi(argv[++i]);
    else {
      fprintf(stderr,
              "usage: %s [--config PATH] [--batch B] [--steps N] [--warmup W] "
              "[--strategy full|attention] [--threads T] [--sgemm-reps R]\n",
              argv[0]);
      return 2;
    }
  }
  const int attention_only = !strcmp(strategy, "attention");
  if (B < 1 || steps < 1 || warmup < 0 || (!attention_only && strcmp(strategy, "full"))) return 2;

  const a3_backend *be = a3_backend_cpu();
  if (threads > 0) a3_backend_cpu_set_threads(threads);
  threads = omp_get_max_threads();
  printf("# a3fta %s; OpenMP threads %d; batch %d; strategy %s\n", a3_backend_cpu_blas_info(),
         threads, B, strategy);
  double sg_blas = 0, sg_dnnl = 0;
  if (sgemm_reps > 0) sgemm_peak(sgemm_reps, &sg_blas, &sg_dnnl);
  const size_t rss0 = rss_now();

  a3_config cfg;
  if (a3_config_load(config, NULL, 0, &cfg) != A3_OK) die(config);
  const a3_arch_config *arch = &cfg.model.arch;
  a3_unet *m = NULL;
  if (a3_unet_build(arch, &m) != A3_OK) die("a3_unet_build");
  a3_unet_init_random(m, 1);
  if (attention_only) {
    a3_unet_set_all_trainable(m, false);
    for (int i = 0; i < a3_unet_param_count(m); i++)
      if (strstr(a3_unet_param_at(m, i)->name, ".attentions.")) a3_unet_set_trainable(m, i, true);
  }
  if (a3_unet_plan(m, B) != A3_OK) die("a3_unet_plan");

  trainer tr = {.m = m, .be = be, .B = B, .h = a3_adamw_defaults()};
  const int S = (int)arch->sample_size;
  tr.n_in = (size_t)B * arch->in_channels * S * S;
  tr.n_out = (size_t)B * arch->out_channels * S * S;
  if (arch->in_channels != arch->out_channels) die("the bench needs in_channels == out_channels");
  float *x0 = buf(tr.n_in);
  tr.x_t = buf(tr.n_in), tr.noise = buf(tr.n_in), tr.t = buf((size_t)B);
  tr.out = buf(tr.n_out), tr.dout = buf(tr.n_out), tr.loss = buf(1);
  for (size_t i = 0; i < tr.n_in; i++)
    x0[i] = (float)((double)(a3_rng_u64(3, 1, i) >> 40) * 0x1p-23 - 1.0); // images in [-1, 1)
  a3_noise_schedule_table sched;
  if (a3_schedule_init(&sched, A3_NOISE_LINEAR, 1000, A3_BETA_START, A3_BETA_END) != A3_OK)
    die("schedule");
  int32_t *ti = NULL;
  if (A3_ALLOC(ti, (size_t)B) != A3_OK) die("out of memory");
  if (a3_diffusion_training_batch(&sched, 1, 0, 0, B, (int64_t)(tr.n_in / B), x0, ti, tr.noise,
                                  tr.x_t) != A3_OK)
    die("training batch");
  for (int b = 0; b < B; b++) tr.t[b] = (float)ti[b];

  a3_param_segment *segs = calloc((size_t)a3_unet_param_count(m) + 1, sizeof *segs);
  if (!segs) die("out of memory");
  tr.segs = segs;
  tr.n_segs = make_segments(m, segs);
  const int64_t n_train = a3_segments_numel(segs, tr.n_segs);
  tr.adam_m = buf((size_t)n_train), tr.adam_v = buf((size_t)n_train);

  double fwd_gmac, step_gflop;
  count_flops(arch, B, attention_only, &fwd_gmac, &step_gflop);
  printf("PARAMS %zu %lld\n", a3_unet_num_floats(m), (long long)n_train);
  printf("FLOPS %.4f %.4f\n", fwd_gmac, step_gflop);
  printf("SGEMM %.1f %.1f\n", sg_blas, sg_dnnl);
  fflush(stdout);

  float first = 0, last = 0;
  for (int i = 0; i < warmup; i++) last = train_step(&tr), first = i ? first : last;
  for (int i = 0; i < steps; i++) {
    const double t0 = now(), c0 = cpu_now();
    last = train_step(&tr);
    printf("STEP %.3f %.3f\n", (now() - t0) * 1e3, (cpu_now() - c0) * 1e3);
    fflush(stdout);
    if (!warmup && !i) first = last;
  }
  const a3_unet_memory mem = a3_unet_planned_bytes(m);
  const size_t pbytes = a3_unet_num_floats(m) * sizeof(float);
  printf("MEM %zu %zu %zu %zu %zu %zu\n", mem.total, pbytes, pbytes,
         2 * (size_t)n_train * sizeof(float), rss_max(), rss0);
  printf("LOSS %.6f %.6f\n", first, last);

  a3_schedule_free(&sched);
  free(ti), free(segs), free(x0), free(tr.x_t), free(tr.noise), free(tr.t), free(tr.out);
  free(tr.dout), free(tr.loss), free(tr.adam_m), free(tr.adam_v);
  a3_unet_free(m);
  a3_config_free(&cfg);
  return 0;
}
