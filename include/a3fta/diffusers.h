// diffusers interoperability: a UNet2DModel's config.json as a3fta's
// model.arch, where its files are, and its older parameter names.
#ifndef A3FTA_DIFFUSERS_H
#define A3FTA_DIFFUSERS_H

#include "a3fta/config.h"
#include "a3fta/core.h"
#include "a3fta/safetensors.h"

#include <stddef.h>

// Sets cfg->model.arch from a diffusers UNet2DModel config.json.
//
// - Each supported key goes through a3_config_set("model.arch.<key>"), so the
//   ranges and messages are the config schema's; a3_config_validate runs at
//   the end. Keys the file leaves out get diffusers' defaults (not a3fta's:
//   e.g. attention_head_dim 8, norm_num_groups 32, in_channels 3), except a
//   missing or null sample_size, which keeps cfg's value.
// - Keys a3fta does not implement must hold diffusers' default, else it is an
//   error naming the key: _class_name other than UNet2DModel, class_embed_type
//   or num_class_embeds not null, resnet_time_scale_shift not "default",
//   add_attention false, time_embedding_type other than positional,
//   downsample_type/upsample_type not "conv", attn_norm_num_groups not null,
//   time_embedding_dim other than null or 4 * block_out_channels[0],
//   sample_size [h, w] with h != w. act_fn "swish" is read as "silu".
// - Other keys (_diffusers_version, num_train_timesteps, ...) are ignored
//   with a debug log line.
//
// Errors name the file and the key. Unreadable or malformed JSON is
// A3_ERR_INPUT; wrong value types, out-of-range and unsupported values are
// A3_ERR_CONFIG. On failure cfg is unchanged.
a3_status a3_diffusers_load_config(const char *config_json_path, a3_config *cfg) A3_WARN_UNUSED;

// The files of a diffusers model folder: `dir` itself or its "unet/"
// subfolder (a pipeline), whichever holds config.json (dir first), and the
// weights next to it: diffusion_pytorch_model.safetensors, else
// model.safetensors, else diffusion_pytorch_model.fp16.safetensors.
typedef struct {
  char config_json[A3_CONFIG_STR_MAX];
  char weights[A3_CONFIG_STR_MAX];
} a3_diffusers_files;
// A3_ERR_INPUT naming what is missing (and a hint when only .bin weights exist).
a3_status a3_diffusers_find_files(const char *dir, a3_diffusers_files *out) A3_WARN_UNUSED;

// Maps an older attention parameter name to the current one: the component
// after "attentions.<i>." that is query, key, value or proj_attn becomes
// to_q, to_k, to_v or to_out.0
// ("mid_block.attentions.0.proj_attn.bias" -> "mid_block.attentions.0.to_out.0.bias").
// Writes the result, renamed or not, to out (NUL-terminated). Returns 1 when
// renamed, 0 when the name was already current, -1 when out_size is too
// small (out then holds "" if out_size > 0).
int a3_diffusers_current_name(const char *name, char *out, size_t out_size);
// The reverse (to_q -> query, ..., to_out.0 -> proj_attn), same returns.
int a3_diffusers_legacy_name(const char *name, char *out, size_t out_size);

// The tensor holding parameter `name` (a current diffusers name, as in a3fta's
// parameter table): under that name, else under its legacy name; NULL if neither.
const a3_st_tensor *a3_diffusers_find_tensor(const a3_safetensors *st, const char *name);

#endif
