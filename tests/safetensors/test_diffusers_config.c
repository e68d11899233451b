// diffusers config.json -> model.arch (the google/ddpm-cifar10-32 config,
// diffusers' defaults, unsupported values, type and range errors), model
// folder discovery, and the old -> new attention name mapping.
#include "a3fta/diffusers.h"
#include "st_test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dir;

// google/ddpm-cifar10-32's unet config.json (values as in ../shared/DESIGN.md).
static const char cifar10_json[] =
    "{\n"
    "  \"_class_name\": \"UNet2DModel\",\n"
    "  \"_diffusers_version\": \"0.0.4\",\n"
    "  \"act_fn\": \"silu\",\n"
    "  \"attention_head_dim\": null,\n"
    "  \"block_out_channels\": [128, 256, 256, 256],\n"
    "  \"center_input_sample\": false,\n"
    "  \"down_block_types\": [\"DownBlock2D\", \"AttnDownBlock2D\", \"DownBlock2D\", "
    "\"DownBlock2D\"],\n"
    "  \"downsample_padding\": 0,\n"
    "  \"flip_sin_to_cos\": false,\n"
    "  \"freq_shift\": 1,\n"
    "  \"in_channels\": 3,\n"
    "  \"layers_per_block\": 2,\n"
    "  \"mid_block_scale_factor\": 1,\n"
    "  \"norm_eps\": 1e-06,\n"
    "  \"norm_num_groups\": 32,\n"
    "  \"out_channels\": 3,\n"
    "  \"sample_size\": 32,\n"
    "  \"time_embedding_type\": \"positional\",\n"
    "  \"up_block_types\": [\"UpBlock2D\", \"UpBlock2D\", \"AttnUpBlock2D\", \"UpBlock2D\"]\n"
    "}\n";

static const char *write_json(const char *name, const char *text) {
  const char *path = io_path(dir, name);
  if (io_write_file(path, text, strlen(text)) != 0) abort();
  return path;
}

static int same_arch(const a3_arch_config *a, const a3_arch_config *b) {
  int same =
      a->sample_size == b->sample_size && a->in_channels == b->in_channels &&
      a->out_channels == b->out_channels && a->n_block_out_channels == b->n_block_out_channels &&
      a->layers_per_block == b->layers_per_block &&
      a->n_down_block_types == b->n_down_block_types &&
      a->n_up_block_types == b->n_up_block_types && a->norm_num_groups == b->norm_num_groups &&
      a->norm_eps == b->norm_eps && a->attention_head_dim == b->attention_head_dim &&
      a->downsample_padding == b->downsample_padding && a->flip_sin_to_cos == b->flip_sin_to_cos &&
      a->freq_shift == b->freq_shift && a->time_embedding_type == b->time_embedding_type &&
      a->act_fn == b->act_fn && a->center_input_sample == b->center_input_sample &&
      a->mid_block_scale_factor == b->mid_block_scale_factor && a->dropout == b->dropout;
  for (int i = 0; same && i < a->n_block_out_channels; i++)
    same = a->block_out_channels[i] == b->block_out_channels[i] &&
           a->down_block_types[i] == b->down_block_types[i] &&
           a->up_block_types[i] == b->up_block_types[i];
  return same;
}

static void test_cifar10(void) {
  a3_config cfg;
  a3_config_init_defaults(&cfg);
  CHECK_STATUS(a3_diffusers_load_config(write_json("config.json", cifar10_json), &cfg), A3_OK,
               NULL);
  const a3_arch_config *a = &cfg.model.arch;
  CHECK(a->sample_size == 32 && a->in_channels == 3 && a->out_channels == 3);
  CHECK(a->n_block_out_channels == 4 && a->block_out_channels[0] == 128 &&
        a->block_out_channels[1] == 256 && a->block_out_channels[3] == 256);
  CHECK(a->layers_per_block == 2 && a->norm_num_groups == 32 && a->norm_eps == 1e-6);
  CHECK(a->n_down_block_types == 4 && a->down_block_types[0] == A3_DOWN_BLOCK &&
        a->down_block_types[1] == A3_DOWN_ATTN && a->down_block_types[2] == A3_DOWN_BLOCK);
  CHECK(a->n_up_block_types == 4 && a->up_block_types[1] == A3_UP_BLOCK &&
        a->up_block_types[2] == A3_UP_ATTN && a->up_block_types[3] == A3_UP_BLOCK);
  CHECK(a->attention_head_dim == 0 && a->downsample_padding == 0 && !a->flip_sin_to_cos &&
        a->freq_shift == 1);
  CHECK(a->time_embedding_type == A3_TIME_EMB_POSITIONAL && a->act_fn == A3_ACT_SILU);
  CHECK(!a->center_input_sample && a->mid_block_scale_factor == 1.0 && a->dropout == 0.0);

  // The repository's YAML of the same model must say the same, when present.
  const char *src = getenv("A3FTA_SOURCE_DIR");
  char yaml[4096];
  snprintf(yaml, sizeof yaml, "%s/configs/ddpm-cifar10-32.yaml", src ? src : ".");
  a3_config from_yaml;
  if (src && io_exists(yaml)) {
    CHECK_STATUS(a3_config_load(yaml, NULL, 0, &from_yaml), A3_OK, NULL);
    CHECK_MSG(same_arch(&from_yaml.model.arch, a), "%s differs from config.json", yaml);
    a3_config_free(&from_yaml);
  }
  a3_config_free(&cfg);
}

// Keys the file leaves out take diffusers' defaults, not a3fta's.
static void test_defaults(void) {
  a3_config cfg;
  a3_config_init_defaults(&cfg);
  cfg.model.arch.sample_size = 48;
  CHECK_STATUS(
      a3_diffusers_load_config(write_json("min.json", "{\"cross_attention_dim\": 7}"), &cfg), A3_OK,
      NULL);
  const a3_arch_config *a = &cfg.model.arch;
  CHECK(a->sample_size == 48); // absent: kept
  CHECK(a->in_channels == 3 && a->out_channels == 3 && a->attention_head_dim == 8);
  CHECK(a->n_block_out_channels == 4 && a->block_out_channels[0] == 224 &&
        a->block_out_channels[3] == 896);
  CHECK(a->down_block_types[0] == A3_DOWN_BLOCK && a->down_block_types[3] == A3_DOWN_ATTN);
  CHECK(a->up_block_types[0] == A3_UP_ATTN && a->up_block_types[3] == A3_UP_BLOCK);
  CHECK(a->norm_num_groups == 32 && a->norm_eps == 1e-5 && a->downsample_padding == 1);
  CHECK(a->flip_sin_to_cos && a->freq_shift == 0);

  // [N, N] sample sizes, "swish", explicit diffusers defaults of unsupported keys.
  const char *alt = write_json(
      "alt.json", "{\"sample_size\": [64, 64], \"act_fn\": \"swish\", "
                  "\"block_out_channels\": [32, 64, 64, 64], \"norm_num_groups\": 8,"
                  "\"class_embed_type\": null, \"add_attention\": true, "
                  "\"resnet_time_scale_shift\": \"default\", \"time_embedding_dim\": 128, "
                  "\"downsample_type\": \"conv\", \"num_train_timesteps\": 1000}");
  CHECK_STATUS(a3_diffusers_load_config(alt, &cfg), A3_OK, NULL);
  CHECK(a->sample_size == 64 && a->act_fn == A3_ACT_SILU && a->norm_num_groups == 8);
  a3_config_free(&cfg);
}

typedef struct {
  const char *json;
  a3_status status;
  const char *expect;
} bad_config;

static const bad_config bad_configs[] = {
    {"{\"_class_name\": \"UNet2DConditionModel\"}", A3_ERR_CONFIG,
     "key '_class_name': \"UNet2DConditionModel\" is not supported (only \"UNet2DModel\")"},
    {"{\"class_embed_type\": \"timestep\"}", A3_ERR_CONFIG,
     "class conditioning is not implemented"},
    {"{\"num_class_embeds\": 10}", A3_ERR_CONFIG, "key 'num_class_embeds': 10 is not supported"},
    {"{\"resnet_time_scale_shift\": \"scale_shift\"}", A3_ERR_CONFIG,
     "key 'resnet_time_scale_shift'"},
    {"{\"add_attention\": false}", A3_ERR_CONFIG, "key 'add_attention': false is not supported"},
    {"{\"time_embedding_type\": \"fourier\"}", A3_ERR_CONFIG,
     "key 'time_embedding_type': \"fourier\" is not supported"},
    {"{\"downsample_type\": \"resnet\"}", A3_ERR_CONFIG, "key 'downsample_type'"},
    {"{\"upsample_type\": \"resnet\"}", A3_ERR_CONFIG, "key 'upsample_type'"},
    {"{\"attn_norm_num_groups\": 8}", A3_ERR_CONFIG, "key 'attn_norm_num_groups'"},
    {"{\"time_embedding_dim\": 100}", A3_ERR_CONFIG,
     "key 'time_embedding_dim': 100 is not supported"},
    {"{\"sample_size\": [32, 64]}", A3_ERR_CONFIG, "key 'sample_size': [32,64] is not one size"},
    {"{\"in_channels\": \"3\"}", A3_ERR_CONFIG,
     "key 'in_channels': expected an integer, found a string (\"3\")"},
    {"{\"in_channels\": null}", A3_ERR_CONFIG,
     "key 'in_channels': expected an integer, found null"},
    {"{\"flip_sin_to_cos\": \"false\"}", A3_ERR_CONFIG, "expected true or false"},
    {"{\"block_out_channels\": 128}", A3_ERR_CONFIG, "expected a list of integers, found a number"},
    {"{\"down_block_types\": [\"DownBlock2D\", 3]}", A3_ERR_CONFIG, "expected a list of strings"},
    {"{\"layers_per_block\": 2.5}", A3_ERR_CONFIG,
     "key 'layers_per_block': model.arch.layers_per_block"},
    {"{\"norm_eps\": -1}", A3_ERR_CONFIG, "key 'norm_eps': model.arch.norm_eps"},
    {"{\"down_block_types\": [\"CrossAttnDownBlock2D\", \"DownBlock2D\", \"DownBlock2D\", "
     "\"DownBlock2D\"]}",
     A3_ERR_CONFIG, "key 'down_block_types': model.arch.down_block_types"},
    {"{\"act_fn\": \"mish\"}", A3_ERR_CONFIG, "key 'act_fn'"},
    {"{\"norm_num_groups\": 30}", A3_ERR_CONFIG, "bad.json: "}, // 224 % 30: a cross-key check
    {"{\"in_channels\": 3, \"in_channels\": 4}", A3_ERR_INPUT, "key 'in_channels': appears twice"},
    {"{\"in_channels\": 3,}", A3_ERR_INPUT, "bad.json:1:19: not valid JSON"},
    {"{} {}", A3_ERR_INPUT, "text after the object"},
    {"[1]", A3_ERR_INPUT, "the JSON is a list, not an object"},
    {"", A3_ERR_INPUT, "not valid JSON"},
};

static void test_errors(void) {
  a3_config cfg;
  a3_config_init_defaults(&cfg);
  const uint64_t before = a3_config_hash(&cfg);
  const int n = (int)(sizeof bad_configs / sizeof bad_configs[0]);
  for (int i = 0; i < n; i++) {
    const char *path = write_json("bad.json", bad_configs[i].json);
    const a3_status s = a3_diffusers_load_config(path, &cfg);
    const char *msg = a3_error_message();
    CHECK_MSG(s == bad_configs[i].status && strstr(msg, bad_configs[i].expect) && strstr(msg, path),
              "%s: %s: %s\n  want: %s", bad_configs[i].json, a3_status_name(s), msg,
              bad_configs[i].expect);
    a3_error_clear();
  }
  CHECK(a3_config_hash(&cfg) == before); // failures leave cfg as it was
  CHECK_STATUS(a3_diffusers_load_config(io_path(dir, "absent.json"), &cfg), A3_ERR_IO,
               "absent.json");
  fprintf(stderr, "%d bad config.json files\n", n + 1);
  a3_config_free(&cfg);
}

// ---------------------------------------------------------------- folders
static void touch(const char *path) { CHECK(io_write_file(path, "x", 1) == 0); }

static void test_find_files(void) {
  a3_diffusers_files f;
  char model[4096], pipe[4096], bin[4096], none[4096];
  snprintf(model, sizeof model, "%s", io_path(dir, "model"));
  snprintf(pipe, sizeof pipe, "%s", io_path(dir, "pipe"));
  snprintf(bin, sizeof bin, "%s", io_path(dir, "bin"));
  snprintf(none, sizeof none, "%s", io_path(dir, "none"));
  CHECK(io_mkdir(model) == 0 && io_mkdir(pipe) == 0 && io_mkdir(io_path(pipe, "unet")) == 0);
  CHECK(io_mkdir(bin) == 0 && io_mkdir(none) == 0);

  touch(io_path(model, "config.json"));
  touch(io_path(model, "model.safetensors"));
  CHECK_STATUS(a3_diffusers_find_files(model, &f), A3_OK, NULL);
  CHECK(!strcmp(f.config_json, io_path(model, "config.json")) &&
        !strcmp(f.weights, io_path(model, "model.safetensors")));
  touch(io_path(model, "diffusion_pytorch_model.safetensors")); // preferred over model.safetensors
  CHECK_STATUS(a3_diffusers_find_files(model, &f), A3_OK, NULL);
  CHECK(!strcmp(f.weights, io_path(model, "diffusion_pytorch_model.safetensors")));

  touch(io_path(pipe, "model_index.json"));
  touch(io_path(pipe, "unet/config.json"));
  touch(io_path(pipe, "unet/diffusion_pytorch_model.safetensors"));
  CHECK_STATUS(a3_diffusers_find_files(pipe, &f), A3_OK, NULL);
  CHECK(!strcmp(f.config_json, io_path(pipe, "unet/config.json")) &&
        !strcmp(f.weights, io_path(pipe, "unet/diffusion_pytorch_model.safetensors")));

  touch(io_path(bin, "config.json"));
  touch(io_path(bin, "diffusion_pytorch_model.bin"));
  CHECK_STATUS(a3_diffusers_find_files(bin, &f), A3_ERR_INPUT, "PyTorch pickle weights");
  touch(io_path(none, "config.json"));
  CHECK_STATUS(a3_diffusers_find_files(none, &f), A3_ERR_INPUT, "has config.json but no weights");
  CHECK_STATUS(a3_diffusers_find_files(io_path(pipe, "unet/config.json"), &f), A3_ERR_INPUT,
               "is not a folder");
  CHECK_STATUS(a3_diffusers_find_files(io_path(pipe, "unet/.."), &f), A3_OK, NULL);
  CHECK_STATUS(a3_diffusers_find_files(io_path(none, "unet"), &f), A3_ERR_INPUT, "is not a folder");
  CHECK(io_mkdir(io_path(none, "unet")) == 0);
  CHECK_STATUS(a3_diffusers_find_files(io_path(none, "unet"), &f), A3_ERR_INPUT,
               "no config.json in");
}

// ---------------------------------------------------------------- names
static void test_names(void) {
  static const struct {
    const char *in, *out;
    int rc;
  } cases[] = {
      {"down_blocks.1.attentions.0.query.weight", "down_blocks.1.attentions.0.to_q.weight", 1},
      {"down_blocks.1.attentions.1.key.bias", "down_blocks.1.attentions.1.to_k.bias", 1},
      {"up_blocks.2.attentions.12.value.weight", "up_blocks.2.attentions.12.to_v.weight", 1},
      {"mid_block.attentions.0.proj_attn.bias", "mid_block.attentions.0.to_out.0.bias", 1},
      {"mid_block.attentions.0.proj_attn.lora.down.weight",
       "mid_block.attentions.0.to_out.0.lora.down.weight", 1},
      {"attentions.0.query", "attentions.0.to_q", 1},
      {"down_blocks.1.attentions.0.to_q.weight", "down_blocks.1.attentions.0.to_q.weight", 0},
      {"mid_block.attentions.0.to_out.0.bias", "mid_block.attentions.0.to_out.0.bias", 0},
      {"down_blocks.1.attentions.0.group_norm.weight",
       "down_blocks.1.attentions.0.group_norm.weight", 0},
      {"down_blocks.0.resnets.0.query.weight", "down_blocks.0.resnets.0.query.weight", 0},
      {"down_blocks.1.attentions.0.query_proj.weight",
       "down_blocks.1.attentions.0.query_proj.weight", 0},
      {"down_blocks.1.attentions.0.keys.weight", "down_blocks.1.attentions.0.keys.weight", 0},
      {"down_blocks.1.myattentions.0.query.weight", "down_blocks.1.myattentions.0.query.weight", 0},
      {"down_blocks.1.attentions.x.query.weight", "down_blocks.1.attentions.x.query.weight", 0},
      {"down_blocks.1.attentions..query.weight", "down_blocks.1.attentions..query.weight", 0},
      {"conv_in.weight", "conv_in.weight", 0},
      {"", "", 0},
  };
  char out[128];
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const int rc = a3_diffusers_current_name(cases[i].in, out, sizeof out);
    CHECK_MSG(rc == cases[i].rc && !strcmp(out, cases[i].out), "'%s' -> '%s' (%d)", cases[i].in,
              out, rc);
    char back[128]; // and back again, for the names that were renamed
    if (rc == 1)
      CHECK_MSG(a3_diffusers_legacy_name(out, back, sizeof back) == 1 && !strcmp(back, cases[i].in),
                "'%s' -> '%s'", out, back);
  }
  CHECK(a3_diffusers_legacy_name("mid_block.attentions.0.to_out.1.bias", out, sizeof out) == 0);
  CHECK(a3_diffusers_legacy_name("mid_block.attentions.0.to_out.0", out, sizeof out) == 1 &&
        !strcmp(out, "mid_block.attentions.0.proj_attn"));
  // Buffer sizes: exactly enough, one byte short, none.
  const char *in = "mid_block.attentions.0.proj_attn.bias";
  const size_t need = strlen("mid_block.attentions.0.to_out.0.bias") + 1;
  CHECK(a3_diffusers_current_name(in, out, need) == 1);
  CHECK(a3_diffusers_current_name(in, out, need - 1) == -1 && out[0] == '\0');
  CHECK(a3_diffusers_current_name("conv_in.weight", out, 15) == 0);
  CHECK(a3_diffusers_current_name("conv_in.weight", out, 14) == -1);
  CHECK(a3_diffusers_current_name("x", out, 0) == -1);
}

// A file with old and new names: each parameter is found under either.
static void test_find_tensor(void) {
  const char *path = io_path(dir, "mixed.safetensors");
  const float x[1] = {1};
  const int64_t shape[1] = {1};
  const a3_st_f32_tensor t[3] = {{"mid_block.attentions.0.query.weight", 1, shape, x},
                                 {"down_blocks.1.attentions.0.to_k.weight", 1, shape, x},
                                 {"conv_in.weight", 1, shape, x}};
  CHECK_STATUS(a3_safetensors_write_f32(path, t, 3, NULL, 0), A3_OK, NULL);
  a3_safetensors *st = NULL;
  CHECK_STATUS(a3_safetensors_open(path, &st), A3_OK, NULL);
  if (!st) return;
  const a3_st_tensor *q = a3_diffusers_find_tensor(st, "mid_block.attentions.0.to_q.weight");
  CHECK(q && !strcmp(q->name, "mid_block.attentions.0.query.weight"));
  CHECK(a3_diffusers_find_tensor(st, "down_blocks.1.attentions.0.to_k.weight"));
  CHECK(a3_diffusers_find_tensor(st, "conv_in.weight"));
  CHECK(!a3_diffusers_find_tensor(st, "mid_block.attentions.0.to_k.weight"));
  a3_safetensors_close(st);
}

int main(void) {
  dir = io_make_temp_dir("diffusers");
  if (!dir) return 1;
  test_cifar10();
  test_defaults();
  test_errors();
  test_find_files();
  test_names();
  test_find_tensor();
  io_remove_tree(dir);
  free(dir);
  return TEST_DONE("test_diffusers_config");
}
