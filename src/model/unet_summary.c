// Statistics of the parameter table, the printed summary, and random init.
#include "unet_internal.h"

#include <math.h>
#include <stdlib.h>

// The added parameters draw their init from counters above every base one.
#define UNET_ADDED_INIT_BASE ((uint64_t)1 << 48)

a3_unet_stats a3_unet_get_stats(const a3_unet *m) {
  a3_unet_stats st = {.tensors = m->n_params, .attention_blocks = m->attention_blocks};
  for (int i = 0; i < m->n_params; i++) {
    const a3_param *p = &m->table[i];
    st.params += p->numel;
    if (p->in_attention) {
      st.attention_params += p->numel;
      st.attention_tensors++;
    }
    if (p->is_bias) {
      st.bias_params += p->numel;
      st.bias_tensors++;
    }
    if (p->trainable) {
      st.trainable_params += p->numel;
      st.trainable_tensors++;
    }
    if (p->added) {
      st.added_params += p->numel;
      st.added_tensors++;
    }
  }
  return st;
}

// 35746307 -> "35,746,307"
static const char *grouped(size_t v, char *buf, size_t size) {
  char digits[32];
  int n = snprintf(digits, sizeof digits, "%zu", v), o = 0;
  for (int i = 0; i < n && (size_t)o + 2 < size; i++) {
    if (i && (n - i) % 3 == 0) buf[o++] = ',';
    buf[o++] = digits[i];
  }
  buf[o] = '\0';
  return buf;
}

static double pct(size_t part, size_t whole) { return whole ? 100.0 * part / whole : 0.0; }

static void print_arch(const a3_unet *m, FILE *f) {
  const a3_arch_config *a = &m->arch;
  fprintf(f, "model: UNet2D %lldx%lld, %lld -> %lld channels, blocks [", (long long)a->sample_size,
          (long long)a->sample_size, (long long)a->in_channels, (long long)a->out_channels);
  for (int i = 0; i < a->n_block_out_channels; i++)
    fprintf(f, "%s%lld%s", i ? ", " : "", (long long)a->block_out_channels[i],
            a->down_block_types[i] == A3_DOWN_ATTN ? "+attn" : "");
  fprintf(f, "], %lld resnets per down block, %d attention blocks\n",
          (long long)a->layers_per_block, m->attention_blocks);
}

void a3_unet_summary(const a3_unet *m, FILE *f) {
  const a3_unet_stats st = a3_unet_get_stats(m);
  char b1[32], b2[32];
  print_arch(m, f);
  fprintf(f, "parameters: %s in %d tensors\n", grouped(st.params, b1, sizeof b1), st.tensors);
  fprintf(f, "  attention blocks: %s (%.2f%%) in %d tensors\n",
          grouped(st.attention_params, b1, sizeof b1), pct(st.attention_params, st.params),
          st.attention_tensors);
  fprintf(f, "  biases: %s (%.2f%%) in %d tensors\n", grouped(st.bias_params, b1, sizeof b1),
          pct(st.bias_params, st.params), st.bias_tensors);
  if (st.added_tensors) {
    static const char *const acts[] = {"silu", "gelu", "relu", "identity"};
    const a3_unet_extras *e = &m->extras;
    fprintf(f,
            "  added modules: %s (%.2f%%) in %d tensors:", grouped(st.added_params, b1, sizeof b1),
            pct(st.added_params, st.params), st.added_tensors);
    if (e->adapter_rank)
      fprintf(f, " adapter r=%d %s %s%s", e->adapter_rank, acts[e->adapter_activation],
              e->adapter_placement == A3_PLACEMENT_PRE_OUT ? "pre_out" : "post_out",
              e->adapter_gate ? " gated" : "");
    if (e->lora_rank)
      fprintf(f, "%s LoRA r=%d alpha=%g", e->adapter_rank ? "," : "", e->lora_rank, e->lora_alpha);
    fprintf(f, "\n");
  }
  fprintf(f, "  trainable: %s (%.2f%%) in %d tensors\n",
          grouped(st.trainable_params, b1, sizeof b1), pct(st.trainable_params, st.params),
          st.trainable_tensors);
  if (!m->B) {
    fprintf(f, "activations: not planned\n");
    return;
  }
  const double MiB = 1024.0 * 1024.0;
  fprintf(f,
          "activations (batch %d, %s): %.1f MiB = %.1f saved + %.1f skip gradients + %.1f scratch "
          "(%s bytes)\n",
          m->B, m->be->act_bytes == 2 ? "bf16" : "fp32", m->mem.total / MiB, m->mem.saved / MiB,
          m->mem.skips / MiB, m->mem.scratch / MiB, grouped(m->mem.total, b2, sizeof b2));
}

// Uniform in [-1, 1) from 24 random bits (exact in a float).
static float uniform_pm1(uint64_t seed, uint64_t index) {
  uint64_t r = a3_rng_u64(seed, A3_STREAM_INIT, index);
  return (float)((double)(r >> 40) * (1.0 / 8388608.0) - 1.0);
}

// Element j of a base parameter draws counter (its offset among the base
// parameters) + j, of an added one UNET_ADDED_INIT_BASE + (its offset among
// the added ones) + j: the base weights do not depend on the extras.
static void init_params(a3_unet *m, uint64_t seed, bool added_only) {
  uint64_t base_pos = 0, added_pos = UNET_ADDED_INIT_BASE;
  for (int i = 0; i < m->n_params; i++) {
    const a3_param *p = &m->table[i];
    uint64_t *pos = p->added ? &added_pos : &base_pos;
    const uint64_t first = *pos;
    *pos += p->numel;
    if (added_only && !p->added) continue;
    float *w = m->params + p->offset;
    const float fan_in = m->fan_in[i];
    if (fan_in <= 0.0f) { // GroupNorm weight, gate: 1; GroupNorm bias, adapter up, lora_B: 0
      for (size_t j = 0; j < p->numel; j++) w[j] = fan_in == 0.0f ? 1.0f : 0.0f;
      continue;
    }
    const float bound = 1.0f / sqrtf(fan_in);
    for (size_t j = 0; j < p->numel; j++) w[j] = bound * uniform_pm1(seed, first + j);
  }
}

void a3_unet_init_random(a3_unet *m, uint64_t seed) { init_params(m, seed, false); }
void a3_unet_init_extras(a3_unet *m, uint64_t seed) { init_params(m, seed, true); }
