// Strategy rules: by name (including the added modules' names, which the
// model does not build yet), and on the tiny U-Net's real parameter table.
#include "a3fta/strategy.h"
#include "test_util.h"
#include "trainer_test_util.h"

#include <string.h>

static void test_names(void) {
  CHECK(a3_param_is_attention("mid_block.attentions.0.to_q.weight"));
  CHECK(a3_param_is_attention("down_blocks.1.attentions.1.group_norm.bias"));
  CHECK(a3_param_is_attention("up_blocks.0.attentions.2.to_out.0.bias"));
  CHECK(!a3_param_is_attention("up_blocks.0.attentions.2.to_out.0.lora_B.weight"));
  CHECK(!a3_param_is_attention("mid_block.attentions.0.adapter.down.weight"));
  CHECK(!a3_param_is_attention("down_blocks.0.resnets.0.norm1.weight"));
  CHECK(!a3_param_is_attention("myattentions.0.to_q.weight"));
  CHECK(!a3_param_is_attention("mid_block.attentions.x.to_q.weight"));

  CHECK(a3_param_origin_of("mid_block.attentions.0.adapter.down.weight") == A3_PARAM_ADAPTER);
  CHECK(a3_param_origin_of("down_blocks.1.attentions.0.adapter.gate") == A3_PARAM_ADAPTER);
  CHECK(a3_param_origin_of("mid_block.attentions.0.to_q.lora_A.weight") == A3_PARAM_LORA);
  CHECK(a3_param_origin_of("mid_block.attentions.0.to_k.bias") == A3_PARAM_BASE);
  CHECK(a3_param_origin_of("conv_in.weight") == A3_PARAM_BASE);

  const char *adapter = "mid_block.attentions.0.adapter.up.bias";
  const char *lora = "mid_block.attentions.0.to_v.lora_B.weight";
  const char *q = "mid_block.attentions.0.to_q.weight";
  const char *conv_b = "conv_in.bias";
  CHECK(a3_strategy_trains(A3_STRATEGY_A3FTA, adapter) && a3_strategy_trains(A3_STRATEGY_A3FTA, q));
  CHECK(!a3_strategy_trains(A3_STRATEGY_A3FTA, lora) &&
        !a3_strategy_trains(A3_STRATEGY_A3FTA, conv_b));
  CHECK(a3_strategy_trains(A3_STRATEGY_ADAPTER, adapter) &&
        !a3_strategy_trains(A3_STRATEGY_ADAPTER, q));
  CHECK(a3_strategy_trains(A3_STRATEGY_LORA, lora) && !a3_strategy_trains(A3_STRATEGY_LORA, q));
  CHECK(a3_strategy_trains(A3_STRATEGY_BITFIT, conv_b) &&
        !a3_strategy_trains(A3_STRATEGY_BITFIT, adapter) &&
        !a3_strategy_trains(A3_STRATEGY_BITFIT, q));
  CHECK(a3_strategy_trains(A3_STRATEGY_FULL, lora) && a3_strategy_trains(A3_STRATEGY_FULL, q));
  CHECK(!strcmp(a3_strategy_label(A3_STRATEGY_A3FTA), "a3fta"));
}

static void test_model(void) {
  a3_config cfg;
  if (tt_config(&cfg, "unused.h5", "unused", NULL, 0)) {
    CHECK(0);
    return;
  }
  a3_unet *m = NULL;
  CHECK(a3_strategy_build_model(&cfg, &m) == A3_OK);
  if (!m) return;
  const a3_unet_stats us = a3_unet_get_stats(m);
  const int n = a3_unet_param_count(m);
  CHECK(us.attention_blocks == 4 && us.attention_tensors == 4 * 10); // down 1, mid 1, up 2
  a3_strategy_stats st;

  CHECK(a3_strategy_apply(m, A3_STRATEGY_ATTENTION, &st) == A3_OK);
  CHECK(st.trainable_tensors == us.attention_tensors && st.trainable_params == us.attention_params);
  int mismatches = 0;
  for (int i = 0; i < n; i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    mismatches += p->trainable != p->in_attention;
  }
  CHECK(mismatches == 0);

  CHECK(a3_strategy_apply(m, A3_STRATEGY_BITFIT, &st) == A3_OK);
  CHECK(st.trainable_tensors == us.bias_tensors && st.trainable_params == us.bias_params);
  mismatches = 0;
  for (int i = 0; i < n; i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    mismatches += p->trainable != p->is_bias;
  }
  CHECK(mismatches == 0);

  CHECK(a3_strategy_apply(m, A3_STRATEGY_FULL, &st) == A3_OK);
  CHECK(st.trainable_tensors == n && st.trainable_params == us.params);

  // The added-module strategies say plainly that their modules are missing.
  CHECK(a3_strategy_apply(m, A3_STRATEGY_A3FTA, &st) == A3_ERR_UNIMPLEMENTED);
  CHECK_MSG(strstr(a3_error_message(), "strategy a3fta needs adapter modules, not built yet"), "%s",
            a3_error_message());
  CHECK(a3_strategy_apply(m, A3_STRATEGY_ADAPTER, &st) == A3_ERR_UNIMPLEMENTED);
  CHECK(a3_strategy_apply(m, A3_STRATEGY_LORA, &st) == A3_ERR_UNIMPLEMENTED);
  CHECK_MSG(strstr(a3_error_message(), "lora needs LoRA modules"), "%s", a3_error_message());
  a3_unet_free(m);

  // No attention blocks: attention trains nothing, which is a config error.
  a3_config plain;
  const char *no_attn[] = {"model.arch.down_block_types=[DownBlock2D, DownBlock2D]",
                           "model.arch.up_block_types=[UpBlock2D, UpBlock2D]"};
  if (tt_config(&plain, "unused.h5", "unused", no_attn, 2) == 0) {
    a3_unet *p = NULL;
    CHECK(a3_strategy_build_model(&plain, &p) == A3_OK);
    // (diffusers' mid block always has attention: only the mid block's remain)
    CHECK(p && a3_strategy_apply(p, A3_STRATEGY_ATTENTION, &st) == A3_OK &&
          st.trainable_tensors == 10);
    a3_unet_free(p);
    a3_config_free(&plain);
  }
  a3_config_free(&cfg);
}

// With the modules built (a3_strategy_build_model adds what the strategy
// needs), each added-module strategy trains exactly its set.
static void test_extras(void) {
  const struct {
    const char *name;
    a3_strategy_name s;
  } cases[] = {{"strategy.name=a3fta", A3_STRATEGY_A3FTA},
               {"strategy.name=adapter", A3_STRATEGY_ADAPTER},
               {"strategy.name=lora", A3_STRATEGY_LORA}};
  for (int c = 0; c < 3; c++) {
    a3_config cfg;
    if (tt_config(&cfg, "unused.h5", "unused", &cases[c].name, 1)) {
      CHECK(0);
      continue;
    }
    a3_unet *m = NULL;
    CHECK(a3_strategy_build_model(&cfg, &m) == A3_OK);
    a3_strategy_stats st;
    CHECK(m && a3_strategy_apply(m, cases[c].s, &st) == A3_OK);
    if (!m) continue;
    const int blocks = a3_unet_get_stats(m).attention_blocks;
    int wrong = 0, adapters = 0, loras = 0, attention = 0;
    for (int i = 0; i < a3_unet_param_count(m); i++) {
      const a3_param *p = a3_unet_param_at(m, i);
      const a3_param_origin o = a3_param_origin_of(p->name);
      adapters += o == A3_PARAM_ADAPTER;
      loras += o == A3_PARAM_LORA;
      attention += p->in_attention;
      const bool want = cases[c].s == A3_STRATEGY_A3FTA ? (o == A3_PARAM_ADAPTER || p->in_attention)
                        : cases[c].s == A3_STRATEGY_ADAPTER ? o == A3_PARAM_ADAPTER
                                                            : o == A3_PARAM_LORA;
      wrong += p->trainable != want;
    }
    CHECK_MSG(wrong == 0, "%s: %d tensors with the wrong trainable flag", cases[c].name, wrong);
    // adapter: down/up weight and bias per block (no gate); LoRA: A and B on 4 linears
    CHECK(cases[c].s == A3_STRATEGY_LORA ? loras == 8 * blocks && adapters == 0
                                         : adapters == 4 * blocks && loras == 0);
    CHECK(st.trainable_tensors == (cases[c].s == A3_STRATEGY_A3FTA     ? attention + adapters
                                   : cases[c].s == A3_STRATEGY_ADAPTER ? adapters
                                                                       : loras));
    a3_unet_free(m);
    a3_config_free(&cfg);
  }
}

int main(void) {
  test_names();
  test_model();
  test_extras();
  return TEST_DONE("test_trainer_strategy");
}
