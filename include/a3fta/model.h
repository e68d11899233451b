// a3fta model: the UNet2D of diffusers' UNet2DModel, over one flat parameter
// buffer described by a table {name, shape, offset, numel, trainable}.
//
// - Names are exactly diffusers' state-dict keys ("down_blocks.1.attentions.0.to_q.weight"),
//   in diffusers' registration order (conv_in, time_embedding, down_blocks, up_blocks,
//   mid_block, conv_norm_out, conv_out: diffusers registers up_blocks before mid_block).
// - Gradients live in a second buffer with the same layout. A frozen parameter
//   (trainable false) gets no gradient at all: the backward passes NULL for it
//   and never writes its slot.
// - Activation memory is planned once per batch size (a3_unet_plan): one arena
//   holds every saved activation, the skip gradients and the scratch of the
//   backward; forward and backward allocate nothing.
// - Tensors (params, grads, x, out, ...) are in the backend's memory: host
//   memory with the CPU backend, the only one so far.
//
// Modules added by a strategy (a3_unet_extras, built by a3_unet_build_ex), in
// EVERY attention block (down, mid, up), named under the block:
// - LoRA (PEFT semantics) on to_q, to_k, to_v and to_out.0:
//     <block>.to_q.lora_A.weight (r, C), <block>.to_q.lora_B.weight (C, r), ...
//     y = W x + b + (alpha / r) * B (A x)  (computed as B ((alpha / r) A x))
//   registered right after their linear's weight and bias (the order a
//   PEFT-wrapped module lists them). A: kaiming_uniform(a = sqrt 5), i.e.
//   U(-1/sqrt(C), 1/sqrt(C)); B: zeros.
// - A bottleneck adapter h' = h + g * up(act(down(h))) over the block's
//   (B*T, C) tokens, act in {gelu (exact, erf), silu, relu, identity}:
//     <block>.adapter.down.weight (r, C), .adapter.down.bias (r),
//     <block>.adapter.up.weight (C, r), .adapter.up.bias (C), [.adapter.gate (1)]
//   registered right after the block's own parameters (and their LoRA), in
//   that order. Placement pre_out (A3FTA): h = the merged heads, before
//   to_out.0; post_out (Houlsby): h = to_out.0's output, before the block's
//   residual add. down: PyTorch Linear's default init, U(-1/sqrt(C),
//   1/sqrt(C)) for weight and bias; up: zeros; the gate (when enabled): 1.
// Step 0 is the pretrained model EXACTLY (bitwise on the CPU): with up (or
// lora_B) all zeros the added term is 0 * finite = +-0 exactly, and
// h + (+-0) == h for every finite h (the one exception, h = -0.0 becoming
// +0.0, compares equal and changes no later value). The input gradients are
// unchanged at step 0 for the same reason. Were an activation inf or NaN, the
// zero product would not be zero: the base model's activations are finite.
#ifndef A3FTA_MODEL_H
#define A3FTA_MODEL_H

#include "a3fta/backend.h"
#include "a3fta/config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum {
  A3_PARAM_NAME_MAX = 96, // bytes of a parameter name, NUL included
  A3_PARAM_MAX_DIMS = 4,
};

// One tensor of the flat parameter buffer.
typedef struct {
  char name[A3_PARAM_NAME_MAX]; // diffusers state-dict key
  int ndim;                     // 1 (bias, norm), 2 (linear), 4 (conv)
  int shape[A3_PARAM_MAX_DIMS]; // PyTorch layout: (OC, C, KH, KW), (OUT, IN), (C)
  size_t offset;                // in floats, from the start of params (and of grads)
  size_t numel;
  bool trainable;    // the backward computes its gradient (else leaves it untouched)
  bool in_attention; // a base parameter of an attention block (group_norm, to_q/k/v, to_out.0)
  bool is_bias;      // the name ends in ".bias" (GroupNorm biases included, as in BitFit)
  bool added;        // added by a3_unet_extras (adapter or LoRA), not in diffusers' UNet2DModel
} a3_param;

typedef struct a3_unet a3_unet;

// Modules a strategy adds to every attention block (see above).
typedef struct {
  int adapter_rank; // 0 = no adapter
  a3_activation adapter_activation;
  a3_adapter_placement adapter_placement;
  bool adapter_gate; // a learnable scalar gate (initialised to 1)
  int lora_rank;     // 0 = no LoRA
  double lora_alpha; // the update is scaled by lora_alpha / lora_rank
} a3_unet_extras;

// The extras of a strategy: the adapter for a3fta and adapter, LoRA for
// lora, none for full, attention and bitfit.
a3_unet_extras a3_unet_extras_from_strategy(const a3_strategy_config *s);

// ---------------------------------------------------------------- build
// Validates the architecture (A3_ERR_CONFIG: block counts, channels divisible by
// norm_num_groups and attention_head_dim, sample_size by 2^(blocks-1);
// A3_ERR_UNIMPLEMENTED: Fourier time embedding, act_fn other than silu, dropout > 0),
// registers every parameter (zero-filled, all trainable) on the CPU backend.
// = a3_unet_build_ex(arch, NULL, out).
a3_status a3_unet_build(const a3_arch_config *arch, a3_unet **out) A3_WARN_UNUSED;
// The U-Net with the modules of `extras` (NULL = none) in every attention
// block. A3_ERR_CONFIG for a negative rank, an unknown activation or
// placement, or a non-finite lora_alpha.
a3_status a3_unet_build_ex(const a3_arch_config *arch,
                           const a3_unet_extras *extras, // NULL = none
                           a3_unet **out) A3_WARN_UNUSED;
// The same on backend `be` (params, grads and activations in its memory;
// forward and backward take and give tensors in its memory). On a device
// backend the host-side functions that touch values directly (init, load,
// the parameter accessors' contents) do not apply: build the model on the
// CPU too and copy with a3_unet_copy_params.
a3_status a3_unet_build_on(const a3_arch_config *arch, const a3_unet_extras *extras,
                           const a3_backend *be, a3_unet **out) A3_WARN_UNUSED;
// dst's parameters = src's (same architecture and extras; any two backends),
// through host memory. A3_ERR_INTERNAL when the tables differ.
a3_status a3_unet_copy_params(a3_unet *dst, const a3_unet *src) A3_WARN_UNUSED;
const a3_backend *a3_unet_backend(const a3_unet *m);
void a3_unet_free(a3_unet *m); // NULL is fine

const a3_arch_config *a3_unet_arch(const a3_unet *m);
const a3_unet_extras *a3_unet_get_extras(const a3_unet *m); // all zero when none

// ---------------------------------------------------------------- parameter table
int a3_unet_param_count(const a3_unet *m);
const a3_param *a3_unet_param_at(const a3_unet *m, int i);              // 0 <= i < count
int a3_unet_param_index(const a3_unet *m, const char *name);            // -1 when absent
const a3_param *a3_unet_param_find(const a3_unet *m, const char *name); // NULL when absent
size_t a3_unet_num_floats(const a3_unet *m);         // length of params and of grads
float *a3_unet_params(a3_unet *m);                   // (num_floats)
const float *a3_unet_params_const(const a3_unet *m); // the same, read-only
float *a3_unet_grads(a3_unet *m);                    // (num_floats), same layout
void a3_unet_set_trainable(a3_unet *m, int i, bool trainable);
void a3_unet_set_all_trainable(a3_unet *m, bool trainable);
void a3_unet_zero_grads(a3_unet *m);
// PyTorch's default initialisation, drawn from Philox (stream A3_STREAM_INIT)
// with `seed`: conv and linear weights and biases U(-1/sqrt(fan_in),
// 1/sqrt(fan_in)), GroupNorm weight 1 and bias 0; the added modules as
// described above. The same seed gives the same weights everywhere, and the
// base parameters the same values with or without extras (their draws are
// indexed by their position among the base parameters; the added ones draw
// from a separate range).
void a3_unet_init_random(a3_unet *m, uint64_t seed);
// Initialises the added parameters only (as a3_unet_init_random would), for
// fine-tuning: load the base weights, then call this.
void a3_unet_init_extras(a3_unet *m, uint64_t seed);

// ---------------------------------------------------------------- memory plan
// Plans (and allocates) all activation memory for `batch` images of
// sample_size x sample_size. Call again to change the batch size.
a3_status a3_unet_plan(a3_unet *m, int batch) A3_WARN_UNUSED;
int a3_unet_batch(const a3_unet *m); // 0 before a3_unet_plan
typedef struct {
  size_t saved;   // activations kept from the forward for the backward
  size_t skips;   // gradients of the skip connections
  size_t scratch; // temporaries of forward and backward, op workspace
  size_t total;   // one allocation: the sum
} a3_unet_memory;
a3_unet_memory a3_unet_planned_bytes(const a3_unet *m);

// ---------------------------------------------------------------- forward / backward
// out = unet(x, timesteps) for the planned batch B; x is copied, so the caller
// may reuse it before the backward.
a3_status a3_unet_forward(a3_unet *m,
                          const float *x,             // (B, in_channels, H, W)
                          const float *timesteps,     // (B)
                          float *out) A3_WARN_UNUSED; // (B, out_channels, H, W)
// Backpropagates dout through the last forward: parameter gradients are
// ACCUMULATED (+=) into grads for trainable parameters only (zero them with
// a3_unet_zero_grads once per step). Nothing below the lowest trainable
// parameter is computed. dx: the input gradient (overwritten), or NULL when
// not wanted (then no input gradient is computed at all).
a3_status a3_unet_backward(a3_unet *m,
                           const float *dout,         // (B, out_channels, H, W)
                           float *dx) A3_WARN_UNUSED; // (B, in_channels, H, W) or NULL

// Backward progress, for starting gradient communication early. The
// backward runs in stages: 0 the head (conv_norm_out, conv_out), 1 + j the
// j-th layer from the end (the last up-block layer is 1, the first
// down-block resnet n_layers), then conv_in, then the time embedding (its
// gradient collects every resnet's share, so it is final last). A
// parameter's stage is the one after which this backward adds nothing more
// to its gradient: a layer's parameters (LoRA and adapter included) get
// gradients only from that layer. The table order is not this order
// (attentions register before resnets, up blocks before the mid block).
int a3_unet_backward_stages(const a3_unet *m);
int a3_unet_param_grad_stage(const a3_unet *m, int i); // 0 <= i < a3_unet_param_count

// Called with s = 0, 1, ..., stages - 1 in order, each once stage s is done
// (stages the backward skips, below the lowest trainable parameter, are
// reported at its end). On a device backend the stage's ops are enqueued,
// not necessarily finished. A failure stops the backward and is returned.
typedef struct {
  a3_status (*fn)(void *ctx, int stage);
  void *ctx;
} a3_backward_hook;
// a3_unet_backward, reporting its stages to hook (NULL: none).
a3_status a3_unet_backward_hooked(a3_unet *m, const float *dout, float *dx,
                                  const a3_backward_hook *hook) A3_WARN_UNUSED;

// ---------------------------------------------------------------- summary
typedef struct {
  size_t params, attention_params, bias_params, trainable_params, added_params;
  int tensors, attention_tensors, bias_tensors, trainable_tensors, added_tensors;
  int attention_blocks;
} a3_unet_stats;
a3_unet_stats a3_unet_get_stats(const a3_unet *m); // computed from the table
// Totals, attention share, biases, trainable, and the planned activation
// memory per batch (when planned), as a few human-readable lines.
void a3_unet_summary(const a3_unet *m, FILE *f);

// ---------------------------------------------------------------- loading
// Pretrained weights from a safetensors file (src/model/unet_load.c).
enum { A3_UNET_LOAD_LISTED = 5 }; // names a report keeps of the unused tensors
typedef struct {
  int loaded;        // parameters read from the file (base and added)
  int legacy_names;  // of which found under their old attention name (query, ..., proj_attn)
  int unused;        // tensors in the file the model has no parameter for (a warning)
  int missing_added; // added parameters (adapter, LoRA) absent from the file: kept as they were
  char unused_names[A3_UNET_LOAD_LISTED][A3_PARAM_NAME_MAX]; // the first min(unused, 5), in
                                                             // name order (truncated if longer)
} a3_unet_load_report;

// Reads every parameter of m's table from the safetensors file at `path`,
// under its diffusers name or, for the attention linears, its legacy name
// (a3_diffusers_find_tensor). F32, F16, BF16 and F64 tensors convert (F32
// exactly); the shape must equal the parameter's exactly. Errors
// (A3_ERR_INPUT, naming the file): a base parameter absent (up to 5 names and
// the count), a shape that differs (the tensor, expected and found shapes), a
// dtype that does not convert, a parameter held under both its current and
// its legacy name. An added parameter absent from the file keeps its value
// (initialise the extras first: a3_unet_init_extras); tensors the model does
// not use (EMA copies, class embeddings, ...) are a warning (count and the
// first names) and in the report. Every tensor is checked before any is
// read, so these errors leave the parameters untouched; a read failure after
// that (I/O, an F64 value beyond float32) leaves them partly overwritten.
// report may be NULL.
a3_status a3_unet_load_safetensors(a3_unet *m, const char *path,
                                   a3_unet_load_report *report) A3_WARN_UNUSED;

// A diffusers UNet2DModel folder (or a pipeline's, with it in unet/;
// a3_diffusers_find_files): cfg_out = a3fta's defaults with config.json's
// model.arch (a3_diffusers_load_config), the model built with `extras`
// (NULL = none; the added parameters initialised by a3_unet_init_extras with
// seed 0, then overwritten by any the file holds), the weights loaded. On
// failure *out is NULL and *cfg_out owns nothing. cfg_out may be NULL.
a3_status a3_unet_load_diffusers(const char *dir, const a3_unet_extras *extras, a3_unet **out,
                                 a3_config *cfg_out) A3_WARN_UNUSED;

#endif
