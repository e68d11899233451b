// One training step of a U-Net config (default configs/fmnist-unet.yaml) at
// batch B under a fine-tuning strategy, timed: zero the gradients, forward,
// MSE against the noise, backward (no input gradient), AdamW over the
// trainable parameters. The PyTorch peer is tools/bench/peer_step.py;
// tools/bench/run_step.sh runs both interleaved and tabulates. Prints (one
// fact per line, for run_step.sh):
//   # a3fta <BLAS info>; OpenMP threads T; batch B; strategy S
//   PARAMS <total> <trainable>
//   EXTRAS none | adapter <rank> <activation> <placement> <gate 0|1> | lora <rank> <alpha>
//   FLOPS <forward GMAC> <step GFLOP> (the count: see count_flops below)
//   SGEMM <OpenBLAS GFLOP/s> <oneDNN GFLOP/s>   (best of --sgemm-reps 1024^3 sgemms)
//   STEP <ms> <CPU ms>        (one per timed step, after --warmup steps; CPU time of
//                              all the process's threads, spinning included)
//   MEM <arena> <params> <grads> <optimizer> <max RSS> <RSS before the model> (bytes)
//   LOSS <first> <last>
//
// usage: a3fta_bench_step [--config PATH] [--batch B] [--steps N] [--warmup W]
//                         [--strategy full|attention|a3fta|adapter|lora|bitfit]
//                         [-o KEY=VALUE]... [--threads T] [--sgemm-reps R]
//                         [--backend cpu|cuda] [--precision fp32|tf32|bf16] [--device D]
// The strategy (default full) goes through the library, as training does:
// the config loaded with the override strategy.name=S (after any -o, which
// set e.g. strategy.adapter.rank=16), the model built with the strategy's
// modules (a3_strategy_build_model: the adapter for a3fta and adapter, LoRA
// for lora; the config's or the schema's ranks, activation, placement, gate
// and alpha), its trainable set marked by a3_strategy_apply. Threads:
// --threads, else OMP_NUM_THREADS, else the cores (OpenMP's default).
//
// --backend cuda (see run_cuda below; tools/bench/run_step_gpu.sh runs it
// against peer_step.py --device cuda): the model is built with its strategy
// on the CPU exactly as above (same init, same trainable set), then copied to
// a device model on CUDA device --device (default 0) with --precision (fp32,
// the default: exact fp32; tf32 / bf16: TF32 / BF16 tensor cores in cuBLAS). The batch is
// made on the host as above and uploaded once. The timed step runs on the
// device as the trainer's (src/train/trainer_device.c): zero the gradients,
// forward, MSE forward and backward, backward, then over every trainable
// segment at once sum_squares_segments, clip_scale (max norm
// train.grad_clip, 1 by default: the trainer clips, so the device step does
// too) and adamw_update_segments; each STEP is
// the wall time of the step including the synchronize that ends it (its CPU
// ms: the host's launch work and the wait). The lines change meaning:
//   # a3fta cuda device D (<name>); precision P; batch B; strategy S
//   SGEMM <GFLOP/s of the backend's linear_forward, 4096^3> 0
//                              (best of --sgemm-reps, each 4 calls then a sync)
//   MEM <arena> <params> <grads> <optimizer> <max RSS> <RSS before the model>
//       the first four: the device memory of the model (planned arena, params,
//       grads, AdamW moments), bytes; the last two are still the HOST's RSS.
//   PIPE <ms>  then --steps more steps queued back to back with one
//       synchronize at the end (as the trainer runs them: it reads the loss
//       only when it logs): wall time over steps, launch overhead hidden
// The loss is read back after each step's timing, outside it. A build
// without CUDA (A3FTA_CUDA=OFF) says so and exits 2, as does a machine where
// the backend cannot start (no driver, no device).
#define _POSIX_C_SOURCE 200809L
#include "a3fta/backend.h"
#include "a3fta/config.h"
#include "a3fta/core.h"
#include "a3fta/diffusion.h"
#include "a3fta/model.h"
#include "a3fta/optim.h"
#include "a3fta/strategy.h"
#include "backend/op_profile.h"
#ifdef A3FTA_HAVE_CUDA
#include "a3fta/cuda_probe.h"
#endif

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
// Multiply-adds of the convolutions, linears (the strategy's adapters and
// LoRA factors included) and attention products (QK^T and PV), from the
// architecture, the strategy and its extras alone (independent of the model
// code), in execution order. The step counts 2 FLOPs per MAC: the forward,
// plus for the backward each op's weight gradient (when its weight trains)
// and input gradient (when its input needs a gradient), each as many MACs as
// its forward; the attention products' backward is 2x their forward (when
// q, k, v need gradients). An input needs a gradient, as autograd's
// requires_grad: the main path from the lowest trainable parameter up (a
// trainable bias or norm counts: bitfit needs every input gradient above
// conv_in), the time embedding when the time MLP trains (then the resnets'
// time projections need input gradients, and their outputs make the main
// path need one), the adapter's and LoRA's inner activations when their
// first factor trains. Full training: every weight gradient, every input
// gradient but conv_in's and time_embedding.linear_1's (about 3x the
// forward). GroupNorm, SiLU, adds, softmax, the LoRA scaling, the adapter's
// activation and gate and the optimizer are not counted.
typedef struct {
  int B, T4;
  a3_strategy_name s;
  a3_unet_extras x;
  bool main, temb; // the main path's activation / the time embedding needs a gradient
  double fwd, bwd; // MACs
} flop_count;

enum {
  OP_STEM,    // conv_in
  OP_TIME1,   // time_embedding.linear_1
  OP_TIME2,   // time_embedding.linear_2
  OP_TEMB,    // a resnet's time_emb_proj
  OP_CONV,    // resnet convs, shortcuts, down/upsamplers, conv_out
  OP_NORM,    // GroupNorm of resnets and of conv_norm_out (no MACs)
  OP_ATTN,    // to_q, to_k, to_v, to_out.0 (their base weight and bias)
  OP_ATTN_GN, // an attention block's group_norm (no MACs)
  OP_ADAPTER, // adapter.down, adapter.up
  OP_LORA,    // lora_A, lora_B (no bias)
};

// Whether a weight matrix of `kind` trains (its gradient costs MACs).
static bool weight_trains(const flop_count *f, int kind) {
  switch (f->s) {
  case A3_STRATEGY_FULL: return true;
  case A3_STRATEGY_ATTENTION: return kind == OP_ATTN;
  case A3_STRATEGY_A3FTA: return kind == OP_ATTN || kind == OP_ADAPTER;
  case A3_STRATEGY_ADAPTER: return kind == OP_ADAPTER;
  case A3_STRATEGY_LORA: return kind == OP_LORA;
  case A3_STRATEGY_BITFIT: return false;
  }
  return false;
}

// Whether any parameter of `kind` trains (then its output needs a gradient).
static bool trains(const flop_count *f, int kind) {
  switch (f->s) {
  case A3_STRATEGY_ATTENTION: return kind == OP_ATTN || kind == OP_ATTN_GN;
  case A3_STRATEGY_A3FTA: return kind == OP_ATTN || kind == OP_ATTN_GN || kind == OP_ADAPTER;
  case A3_STRATEGY_BITFIT: return kind != OP_LORA; // every bias, GroupNorm's included
  default: return weight_trains(f, kind);
  }
}

// A conv or linear of `macs` whose input needs a gradient when `gin`.
static void op(flop_count *f, int kind, double macs, bool gin) {
  f->fwd += macs;
  f->bwd += (weight_trains(f, kind) ? macs : 0) + (gin ? macs : 0);
}

// A main-path conv or linear (or norm, macs 0).
static void main_op(flop_count *f, int kind, double macs) {
  op(f, kind, macs, f->main);
  f->main = f->main || trains(f, kind);
}

static double conv_macs(const flop_count *f, int C, int OC, int OH, int K) {
  return (double)f->B * OC * OH * OH * C * K * K;
}

static void resnet(flop_count *f, int cin, int cout, int S) {
  const bool in = f->main;
  main_op(f, OP_NORM, 0);
  main_op(f, OP_CONV, conv_macs(f, cin, cout, S, 3));
  op(f, OP_TEMB, (double)f->B * f->T4 * cout, f->temb);
  f->main = f->main || f->temb || trains(f, OP_TEMB);
  main_op(f, OP_NORM, 0);
  main_op(f, OP_CONV, conv_macs(f, cout, cout, S, 3));
  if (cin != cout) {
    op(f, OP_CONV, conv_macs(f, cin, cout, S, 1), in); // conv_shortcut, on the block's input
    f->main = f->main || trains(f, OP_CONV);
  }
}

// A (C -> C) linear of the attention block over `tokens`, with LoRA when the
// model has it; its input needs a gradient when `gin`. Returns whether its
// output needs one.
static bool attn_linear(flop_count *f, double tokens, int C, bool gin) {
  op(f, OP_ATTN, tokens * C * C, gin);
  bool out = gin || trains(f, OP_ATTN);
  if (f->x.lora_rank > 0) {
    const double r = f->x.lora_rank;
    op(f, OP_LORA, tokens * C * r, gin);                       // lora_A
    op(f, OP_LORA, tokens * r * C, gin || trains(f, OP_LORA)); // lora_B
    out = out || trains(f, OP_LORA);
  }
  return out;
}

// The adapter over `tokens` (C -> r -> C); returns whether its output needs a gradient.
static bool adapter(flop_count *f, double tokens, int C, bool gin) {
  const double r = f->x.adapter_rank;
  op(f, OP_ADAPTER, tokens * C * r, gin);                          // down
  op(f, OP_ADAPTER, tokens * r * C, gin || trains(f, OP_ADAPTER)); // up
  return gin || trains(f, OP_ADAPTER);
}

static void attention(flop_count *f, int C, int S) {
  const double T = (double)S * S, tokens = f->B * T;
  const bool gn = f->main || trains(f, OP_ATTN_GN); // the normalised tokens
  bool qkv = false;
  for (int i = 0; i < 3; i++) qkv = attn_linear(f, tokens, C, gn) || qkv; // to_q, to_k, to_v
  f->fwd += 2.0 * f->B * T * T * C;                                       // QK^T, PV (all heads)
  if (qkv) f->bwd += 2 * 2.0 * f->B * T * T * C;
  bool h = qkv; // the merged heads
  const bool pre = f->x.adapter_rank > 0 && f->x.adapter_placement == A3_PLACEMENT_PRE_OUT;
  if (pre) h = adapter(f, tokens, C, h);
  h = attn_linear(f, tokens, C, h); // to_out.0
  if (f->x.adapter_rank > 0 && !pre) h = adapter(f, tokens, C, h);
  f->main = f->main || h; // the residual add
}

static void count_flops(const a3_arch_config *a, a3_strategy_name s, const a3_unet_extras *x, int B,
                        double *fwd_gmac, double *step_gflop) {
  const int n = a->n_block_out_channels, c0 = (int)a->block_out_channels[0];
  flop_count f = {.B = B, .T4 = 4 * c0, .s = s, .x = *x};
  int S = (int)a->sample_size;
  op(&f, OP_STEM, conv_macs(&f, (int)a->in_channels, c0, S, 3), false);
  f.main = trains(&f, OP_STEM);
  op(&f, OP_TIME1, (double)B * c0 * f.T4, false);
  f.temb = trains(&f, OP_TIME1);
  op(&f, OP_TIME2, (double)B * f.T4 * f.T4, f.temb);
  f.temb = f.temb || trains(&f, OP_TIME2);
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
      main_op(&f, OP_CONV, conv_macs(&f, cout, cout, S, 3)); // stride 2: output S/2
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
      main_op(&f, OP_CONV, conv_macs(&f, cout, cout, S, 3));
    }
  }
  main_op(&f, OP_NORM, 0);                                             // conv_norm_out
  main_op(&f, OP_CONV, conv_macs(&f, c0, (int)a->out_channels, S, 3)); // conv_out
  *fwd_gmac = f.fwd * 1e-9;
  *step_gflop = 2 * (f.fwd + f.bwd) * 1e-9;
}

// EXTRAS line: the modules the strategy added (peer_step.py prints the same).
static void print_extras(const a3_unet_extras *x) {
  static const char *const act[] = {"silu", "gelu", "relu", "identity"}; // a3_activation order
  printf("EXTRAS");
  if (x->adapter_rank > 0)
    printf(" adapter %d %s %s %d", x->adapter_rank,
           (unsigned)x->adapter_activation < 4 ? act[x->adapter_activation] : "?",
           x->adapter_placement == A3_PLACEMENT_PRE_OUT ? "pre_out" : "post_out",
           (int)x->adapter_gate);
  if (x->lora_rank > 0) printf(" lora %d %g", x->lora_rank, x->lora_alpha);
  if (x->adapter_rank <= 0 && x->lora_rank <= 0) printf(" none");
  printf("\n");
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

// The batch, on the host: images x0 in [-1, 1) from Philox, timesteps,
// noise and x_t from a3_diffusion_training_batch (linear schedule, seed 1).
// x0 (n_in) and ti (B) are the caller's scratch.
static void make_batch(int B, size_t n_in, float *x0, int32_t *ti, float *x_t, float *noise,
                       float *t) {
  for (size_t i = 0; i < n_in; i++)
    x0[i] = (float)((double)(a3_rng_u64(3, 1, i) >> 40) * 0x1p-23 - 1.0); // images in [-1, 1)
  a3_noise_schedule_table sched;
  if (a3_schedule_init(&sched, A3_NOISE_LINEAR, 1000, A3_BETA_START, A3_BETA_END) != A3_OK)
    die("schedule");
  if (a3_diffusion_training_batch(&sched, 1, 0, 0, B, (int64_t)(n_in / (size_t)B), x0, ti, noise,
                                  x_t) != A3_OK)
    die("training batch");
  for (int b = 0; b < B; b++) t[b] = (float)ti[b];
  a3_schedule_free(&sched);
}

// ---------------------------------------------------------------- the step on a device
// The device side of --backend cuda: the trainer's step (trainer_device.c)
// on the device copy of the model, every tensor in device memory.
typedef struct {
  const a3_backend *be;
  a3_unet *m;                      // the device model
  float *x_t, *noise, *out, *dout; // (B, C, S, S)
  float *t;                        // (B)
  float *loss, *scale;             // (1)
  double *partials, *norm;         // (n_segs), (1)
  float *adam_m, *adam_v;          // (n_train) compact
  size_t n_out;
  a3_segment_table table; // the trainable segments in device memory
  a3_adamw_hparams h;
  double max_norm;
  int64_t step;
} dev_trainer;

// One step's work queued on the device (no wait).
static a3_status dev_step_queue(dev_trainer *d) {
  const a3_backend *be = d->be;
  a3_unet_zero_grads(d->m);
  A3_TRY(a3_unet_forward(d->m, d->x_t, d->t, d->out));
  be->ops->mse_forward(be, d->loss, d->out, d->noise, d->n_out);
  be->ops->mse_backward(be, d->dout, d->out, d->noise, d->n_out, 1.0f);
  A3_TRY(a3_unet_backward(d->m, d->dout, NULL));
  float *params = a3_unet_params(d->m), *grads = a3_unet_grads(d->m);
  a3_clip_factor_on(be, &d->table, grads, d->max_norm, d->partials, d->scale, d->norm);
  return a3_adamw_step_on(be, &d->h, ++d->step, &d->table, params, grads, d->adam_m, d->adam_v,
                          d->scale);
}

static a3_status dev_step(dev_trainer *d) {
  A3_TRY(dev_step_queue(d));
  return d->be->ops->synchronize(d->be);
}

static void dev_check(a3_status s, const char *what) {
  if (s != A3_OK) die(what);
}

// PIPE: `steps` steps queued back to back, one synchronize at the end.
static void dev_pipelined(dev_trainer *d, int steps) {
  const double t0 = now();
  for (int i = 0; i < steps; i++) dev_check(dev_step_queue(d), "step");
  dev_check(d->be->ops->synchronize(d->be), "pipelined steps");
  printf("PIPE %.3f\n", (now() - t0) * 1e3 / (steps > 0 ? steps : 1));
  fflush(stdout);
}

static float *dev_buf(const a3_backend *be, size_t n) {
  float *p = NULL;
  dev_check(be->ops->alloc(be, (void **)&p, (n ? n : 1) * sizeof(float)), "device alloc");
  return p;
}

// Best GFLOP/s of `reps` rounds of 4 calls of the backend's linear_forward
// with N = IN = OUT = 4096 (cuBLAS in the backend's precision) and a sync.
static double device_gemm_peak(const a3_backend *be, int reps) {
  const int n = 4096;
  const size_t nn = (size_t)n * n;
  float *h = buf(nn);
  for (size_t i = 0; i < nn; i++) h[i] = (float)((double)((i * 2654435761u) % 1000) * 1e-3 - 0.5);
  float *w = dev_buf(be, nn);  // (n, n) the weight; also the input's fp32 source
  a3_act *a = NULL, *c = NULL; // (n, n) input and output, in the storage type
  dev_check(be->ops->alloc(be, (void **)&a, nn * be->act_bytes), "device alloc");
  dev_check(be->ops->alloc(be, (void **)&c, nn * be->act_bytes), "device alloc");
  dev_check(be->ops->upload(be, w, h, nn * sizeof(float)), "upload");
  be->ops->act_from_f32(be, a, w, nn);
  double best = 0;
  for (int r = -1; r < reps; r++) {
    const double t0 = now();
    for (int k = 0; k < 4; k++) be->ops->linear_forward(be, c, a, w, NULL, n, n, n);
    dev_check(be->ops->synchronize(be), "device gemm");
    const double g = 4 * 2.0 * n * n * (double)n / (now() - t0) * 1e-9;
    if (r >= 0 && g > best) best = g;
  }
  be->ops->release(be, a), be->ops->release(be, w), be->ops->release(be, c);
  free(h);
  return best;
}

// --backend cuda (see the top of the file). Returns the exit status.
static int run_cuda(const a3_config *cfg, int B, int steps, int warmup, int sgemm_reps, int device,
                    a3_precision precision) {
  const a3_backend *be = NULL;
  if (a3_backend_cuda_create(device, precision, &be) != A3_OK) {
    fprintf(stderr, "a3fta_bench_step: --backend cuda: %s\n", a3_error_message());
    return 2;
  }
  const a3_strategy_name sname = cfg->strategy.name;
  char dev_name[300] = "";
#ifdef A3FTA_HAVE_CUDA
  a3_cuda_info info;
  a3_cuda_probe(&info);
  if (device == 0) snprintf(dev_name, sizeof dev_name, " (%.256s)", info.device_name);
#endif
  printf("# a3fta cuda device %d%s; precision %s; batch %d; strategy %s\n", device, dev_name,
         precision == A3_PRECISION_TF32   ? "tf32"
         : precision == A3_PRECISION_BF16 ? "bf16"
                                          : "fp32",
         B, a3_strategy_label(sname));
  const double sg = sgemm_reps > 0 ? device_gemm_peak(be, sgemm_reps) : 0;
  const size_t rss0 = rss_now();

  // The model as on the CPU (init, strategy, trainable set), then its device copy.
  const a3_arch_config *arch = &cfg->model.arch;
  a3_unet *host = NULL;
  if (a3_strategy_build_model(cfg, &host) != A3_OK) die("a3_strategy_build_model");
  a3_unet_init_random(host, 1);
  if (a3_strategy_apply(host, sname, NULL) != A3_OK) die("a3_strategy_apply");
  dev_trainer d = {.be = be, .h = a3_adamw_defaults(), .max_norm = cfg->train.grad_clip};
  dev_check(a3_unet_build_on(arch, a3_unet_get_extras(host), be, &d.m), "a3_unet_build_on");
  for (int i = 0; i < a3_unet_param_count(host); i++)
    a3_unet_set_trainable(d.m, i, a3_unet_param_at(host, i)->trainable);
  dev_check(a3_unet_copy_params(d.m, host), "a3_unet_copy_params");
  a3_unet_free(host); // the device model has the same table (names, offsets, flags)
  dev_check(a3_unet_plan(d.m, B), "a3_unet_plan");

  // The batch on the host, uploaded once.
  const int S = (int)arch->sample_size;
  const size_t n_in = (size_t)B * arch->in_channels * S * S;
  d.n_out = (size_t)B * arch->out_channels * S * S;
  if (arch->in_channels != arch->out_channels) die("the bench needs in_channels == out_channels");
  float *x0 = buf(n_in), *x_t = buf(n_in), *noise = buf(n_in), *t = buf((size_t)B);
  int32_t *ti = NULL;
  if (A3_ALLOC(ti, (size_t)B) != A3_OK) die("out of memory");
  make_batch(B, n_in, x0, ti, x_t, noise, t);
  d.x_t = dev_buf(be, n_in), d.noise = dev_buf(be, n_in), d.t = dev_buf(be, (size_t)B);
  d.out = dev_buf(be, d.n_out), d.dout = dev_buf(be, d.n_out);
  d.loss = dev_buf(be, 1), d.scale = dev_buf(be, 1);
  dev_check(be->ops->upload(be, d.x_t, x_t, n_in * sizeof(float)), "upload");
  dev_check(be->ops->upload(be, d.noise, noise, n_in * sizeof(float)), "upload");
  dev_check(be->ops->upload(be, d.t, t, (size_t)B * sizeof(float)), "upload");
  free(x0), free(x_t), free(noise), free(t), free(ti);

  a3_param_segment *segs = calloc((size_t)a3_unet_param_count(d.m) + 1, sizeof *segs);
  if (!segs) die("out of memory");
  const int n_segs = make_segments(d.m, segs);
  dev_check(a3_segment_table_make(be, segs, n_segs, &d.table), "device segment table");
  const int64_t n_train = a3_segments_numel(segs, n_segs);
  d.adam_m = dev_buf(be, (size_t)n_train), d.adam_v = dev_buf(be, (size_t)n_train);
  dev_check(be->ops->alloc(be, (void **)&d.partials, sizeof(double) * (size_t)(n_segs + 1)),
            "device alloc");
  dev_check(be->ops->alloc(be, (void **)&d.norm, sizeof(double)), "device alloc");
  dev_check(be->ops->synchronize(be), "device setup");

  double fwd_gmac, step_gflop;
  const a3_unet_extras *x = a3_unet_get_extras(d.m);
  count_flops(arch, sname, x, B, &fwd_gmac, &step_gflop);
  printf("PARAMS %zu %lld\n", a3_unet_num_floats(d.m), (long long)n_train);
  print_extras(x);
  printf("FLOPS %.4f %.4f\n", fwd_gmac, step_gflop);
  printf("SGEMM %.1f 0.0\n", sg);
  fflush(stdout);

  float first = 0, last = 0;
  for (int i = 0; i < warmup + steps; i++) {
    const double t0 = now(), c0 = cpu_now();
    dev_check(dev_step(&d), "step");
    const double ms = (now() - t0) * 1e3, cpu_ms = (cpu_now() - c0) * 1e3;
    dev_check(be->ops->download(be, &last, d.loss, sizeof last), "download the loss");
    if (!i) first = last;
    if (i == warmup - 1 && a3_op_profile_requested()) { // A3FTA_PROFILE: the timed steps only
      dev_check(be->ops->synchronize(be), "synchronize after the warm-up");
      a3_op_profile_reset();
    }
    if (i < warmup) continue;
    printf("STEP %.3f %.3f\n", ms, cpu_ms);
    fflush(stdout);
  }
  dev_pipelined(&d, steps);
  // Device bytes of the model (the batch, loss and norm scratch, a few MB at
  // most, not counted); the RSS fields stay the host's.
  const a3_unet_memory mem = a3_unet_planned_bytes(d.m);
  const size_t pbytes = a3_unet_num_floats(d.m) * sizeof(float);
  printf("MEM %zu %zu %zu %zu %zu %zu\n", mem.total, pbytes, pbytes,
         2 * (size_t)n_train * sizeof(float), rss_max(), rss0);
  printf("LOSS %.6f %.6f\n", first, last);

  float *floats[] = {d.x_t, d.noise, d.t, d.out, d.dout, d.loss, d.scale, d.adam_m, d.adam_v};
  for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++) be->ops->release(be, floats[i]);
  be->ops->release(be, d.partials), be->ops->release(be, d.norm);
  a3_segment_table_free(be, &d.table);
  free(segs);
  a3_unet_free(d.m);
  a3_backend_cuda_destroy(be);
  return 0;
}

enum { MAX_OVERRIDES = 32 };

int main(int argc, char **argv) {
  const char *config = "configs/fmnist-unet.yaml", *strategy = "full";
  const char *overrides[MAX_OVERRIDES + 1];
  int n_overrides = 0;
  const char *backend = "cpu", *precision = "fp32";
  int B = 64, steps = 10, warmup = 3, threads = 0, sgemm_reps = 10, device = 0;
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
    else if (!strcmp(a, "-o") && more && n_overrides < MAX_OVERRIDES)
      overrides[n_overrides++] = argv[++i];
    else if (!strcmp(a, "--threads") && more)
      threads = atoi(argv[++i]);
    else if (!strcmp(a, "--sgemm-reps") && more)
      sgemm_reps = atoi(argv[++i]);
    else if (!strcmp(a, "--backend") && more)
      backend = argv[++i];
    else if (!strcmp(a, "--precision") && more)
      precision = argv[++i];
    else if (!strcmp(a, "--device") && more)
      device = atoi(argv[++i]);
    else {
      fprintf(stderr,
              "usage: %s [--config PATH] [--batch B] [--steps N] [--warmup W] "
              "[--strategy full|attention|a3fta|adapter|lora|bitfit] [-o KEY=VALUE]... "
              "[--threads T] [--sgemm-reps R] [--backend cpu|cuda] [--precision fp32|tf32|bf16] "
              "[--device D]\n",
              argv[0]);
      return 2;
    }
  }
  if (B < 1 || steps < 1 || warmup < 0) return 2;
  const bool cuda = !strcmp(backend, "cuda");
  if (!cuda && strcmp(backend, "cpu")) {
    fprintf(stderr, "a3fta_bench_step: --backend %s: cpu or cuda\n", backend);
    return 2;
  }
  const int reduced = !strcmp(precision, "tf32") || !strcmp(precision, "bf16");
  if (strcmp(precision, "fp32") && (!reduced || !cuda)) {
    fprintf(stderr, "a3fta_bench_step: --precision %s: fp32, or tf32/bf16 with --backend cuda\n",
            precision);
    return 2;
  }
  char strategy_override[A3_CONFIG_KEY_MAX + 64];
  snprintf(strategy_override, sizeof strategy_override, "strategy.name=%s", strategy);
  overrides[n_overrides++] = strategy_override; // last: --strategy wins over -o strategy.name
  a3_config cfg;
  if (a3_config_load(config, overrides, n_overrides, &cfg) != A3_OK) die(config);
  const a3_strategy_name sname = cfg.strategy.name;
  if (cuda) {
    if (threads > 0) a3_backend_cpu_set_threads(threads); // the host model's init
    const int rc = run_cuda(&cfg, B, steps, warmup, sgemm_reps, device,
                            !strcmp(precision, "tf32")   ? A3_PRECISION_TF32
                            : !strcmp(precision, "bf16") ? A3_PRECISION_BF16
                                                         : A3_PRECISION_FP32);
    a3_config_free(&cfg);
    return rc;
  }

  const a3_backend *be = a3_backend_cpu();
  if (threads > 0) a3_backend_cpu_set_threads(threads);
  threads = omp_get_max_threads();
  printf("# a3fta %s; OpenMP threads %d; batch %d; strategy %s\n", a3_backend_cpu_blas_info(),
         threads, B, a3_strategy_label(sname));
  double sg_blas = 0, sg_dnnl = 0;
  if (sgemm_reps > 0) sgemm_peak(sgemm_reps, &sg_blas, &sg_dnnl);
  const size_t rss0 = rss_now();

  const a3_arch_config *arch = &cfg.model.arch;
  a3_unet *m = NULL;
  if (a3_strategy_build_model(&cfg, &m) != A3_OK) die("a3_strategy_build_model");
  a3_unet_init_random(m, 1); // the added modules too: adapter up and lora_B zero
  if (a3_strategy_apply(m, sname, NULL) != A3_OK) die("a3_strategy_apply");
  if (a3_unet_plan(m, B) != A3_OK) die("a3_unet_plan");

  trainer tr = {.m = m, .be = be, .B = B, .h = a3_adamw_defaults()};
  const int S = (int)arch->sample_size;
  tr.n_in = (size_t)B * arch->in_channels * S * S;
  tr.n_out = (size_t)B * arch->out_channels * S * S;
  if (arch->in_channels != arch->out_channels) die("the bench needs in_channels == out_channels");
  float *x0 = buf(tr.n_in);
  tr.x_t = buf(tr.n_in), tr.noise = buf(tr.n_in), tr.t = buf((size_t)B);
  tr.out = buf(tr.n_out), tr.dout = buf(tr.n_out), tr.loss = buf(1);
  int32_t *ti = NULL;
  if (A3_ALLOC(ti, (size_t)B) != A3_OK) die("out of memory");
  make_batch(B, tr.n_in, x0, ti, tr.x_t, tr.noise, tr.t);

  a3_param_segment *segs = calloc((size_t)a3_unet_param_count(m) + 1, sizeof *segs);
  if (!segs) die("out of memory");
  tr.segs = segs;
  tr.n_segs = make_segments(m, segs);
  const int64_t n_train = a3_segments_numel(segs, tr.n_segs);
  tr.adam_m = buf((size_t)n_train), tr.adam_v = buf((size_t)n_train);

  double fwd_gmac, step_gflop;
  const a3_unet_extras *x = a3_unet_get_extras(m);
  count_flops(arch, sname, x, B, &fwd_gmac, &step_gflop);
  printf("PARAMS %zu %lld\n", a3_unet_num_floats(m), (long long)n_train);
  print_extras(x);
  printf("FLOPS %.4f %.4f\n", fwd_gmac, step_gflop);
  printf("SGEMM %.1f %.1f\n", sg_blas, sg_dnnl);
  fflush(stdout);

  float first = 0, last = 0;
  for (int i = 0; i < warmup; i++) last = train_step(&tr), first = i ? first : last;
  if (warmup && a3_op_profile_requested()) a3_op_profile_reset(); // the timed steps only
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

  free(ti), free(segs), free(x0), free(tr.x_t), free(tr.noise), free(tr.t), free(tr.out);
  free(tr.dout), free(tr.loss), free(tr.adam_m), free(tr.adam_v);
  a3_unet_free(m);
  a3_config_free(&cfg);
  return 0;
}
