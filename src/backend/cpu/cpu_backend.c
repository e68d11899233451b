// The CPU backend's op table and its memory functions (host memory).
#define _POSIX_C_SOURCE 200809L
#include "cpu_ops.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static a3_status cpu_alloc(const a3_backend *be, void **out, size_t bytes) {
  (void)be;
  return a3_alloc(out, bytes ? bytes : 1, 1); // zeroed
}

static void cpu_release(const a3_backend *be, void *ptr) {
  (void)be;
  free(ptr);
}

static a3_status cpu_copy(const a3_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes) memmove(dst, src, bytes);
  return A3_OK;
}

static a3_status cpu_synchronize(const a3_backend *be) {
  (void)be;
  return A3_OK; // every CPU op has finished when it returns
}

static const a3_backend_ops cpu_ops = {
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .synchronize = cpu_synchronize,
    .zero = cpu_zero,
    .act_zero = cpu_act_zero,
    .accumulate = cpu_accumulate,
    .act_from_f32 = cpu_act_from_f32,
    .act_to_f32 = cpu_act_to_f32,
    .conv2d_workspace_size = cpu_conv2d_workspace_size,
    .conv2d_forward = cpu_conv2d_forward,
    .conv2d_backward = cpu_conv2d_backward,
    .groupnorm_forward = cpu_groupnorm_forward,
    .groupnorm_backward = cpu_groupnorm_backward,
    .groupnorm_silu_forward = cpu_groupnorm_silu_forward,
    .groupnorm_silu_backward = cpu_groupnorm_silu_backward,
    .silu_forward = cpu_silu_forward,
    .silu_backward = cpu_silu_backward,
    .linear_forward = cpu_linear_forward,
    .linear_backward = cpu_linear_backward,
    .attention_workspace_size = cpu_attention_workspace_size,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .to_tokens = cpu_to_tokens,
    .from_tokens = cpu_from_tokens,
    .upsample2x_forward = cpu_upsample2x_forward,
    .upsample2x_backward = cpu_upsample2x_backward,
    .concat_forward = cpu_concat_forward,
    .concat_backward = cpu_concat_backward,
    .add_forward = cpu_add_forward,
    .add_backward = cpu_add_backward,
    .add_channel_forward = cpu_add_channel_forward,
    .add_channel_backward = cpu_add_channel_backward,
    .timestep_embedding = cpu_timestep_embedding,
    .mse_forward = cpu_mse_forward,
    .mse_backward = cpu_mse_backward,
    .gelu_forward = cpu_gelu_forward,
    .gelu_backward = cpu_gelu_backward,
    .relu_forward = cpu_relu_forward,
    .relu_backward = cpu_relu_backward,
    .gated_add_forward = cpu_gated_add_forward,
    .gated_add_backward = cpu_gated_add_backward,
    .softmax_xent_forward = cpu_softmax_xent_forward,
    .softmax_xent_backward = cpu_softmax_xent_backward,
    .sum_squares = cpu_sum_squares,
    .clip_scale = cpu_clip_scale,
    .adamw_update = cpu_adamw_update,
    .ema_update = cpu_ema_update,
    .sum_squares_segments = cpu_sum_squares_segments,
    .adamw_update_segments = cpu_adamw_update_segments,
    .ema_update_segments = cpu_ema_update_segments,
    .sampler_step = cpu_sampler_step,
    .training_noise = cpu_training_noise,
    .batch_images = cpu_batch_images,
};

static const a3_backend cpu_backend = {
    .name = "cpu", .ops = &cpu_ops, .impl = NULL, .act_bytes = sizeof(float)};

static pthread_once_t cpu_once = PTHREAD_ONCE_INIT;
static const a3_backend *cpu_active = &cpu_backend; // the table, or its profiled copy

static void cpu_setup(void) {
  cpu_blas_setup();
  cpu_active = cpu_profiled(&cpu_backend); // A3FTA_PROFILE=1: per-op timers (profile.c)
}

const a3_backend *a3_backend_cpu(void) {
  pthread_once(&cpu_once, cpu_setup);
  return cpu_active;
}
