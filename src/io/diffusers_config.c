// diffusers UNet2DModel config.json -> model.arch, the files of a diffusers
// model folder, and the older attention parameter names.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/diffusers.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { YAML_MAX = 4096 }; // YAML text of one value: lists of at most 8 short entries

// ---------------------------------------------------------------- key rules
typedef enum {
  RULE_ARCH,  // model.arch.<key>; `value` is diffusers' default as YAML (NULL: keep cfg's)
  RULE_FIXED, // not implemented: `value` (JSON) is the only value accepted
} rule_kind;

typedef struct {
  const char *key;
  rule_kind kind;
  const char *value;
  const char *why;  // FIXED (and ARCH with `only`): what a3fta lacks, for the message
  const char *only; // ARCH: the only value (JSON) a3fta implements, NULL = what the schema takes
} key_rule;

static const key_rule rules[] = {
    {"sample_size", RULE_ARCH, NULL, NULL, NULL},
    {"in_channels", RULE_ARCH, "3", NULL, NULL},
    {"out_channels", RULE_ARCH, "3", NULL, NULL},
    {"center_input_sample", RULE_ARCH, "false", NULL, NULL},
    {"time_embedding_type", RULE_ARCH, "positional",
     "a3fta implements only the sinusoidal (\"positional\") timestep embedding", "\"positional\""},
    {"freq_shift", RULE_ARCH, "0", NULL, NULL},
    {"flip_sin_to_cos", RULE_ARCH, "true", NULL, NULL},
    {"down_block_types", RULE_ARCH,
     "[DownBlock2D, AttnDownBlock2D, AttnDownBlock2D, AttnDownBlock2D]", NULL, NULL},
    {"up_block_types", RULE_ARCH, "[AttnUpBlock2D, AttnUpBlock2D, AttnUpBlock2D, UpBlock2D]", NULL,
     NULL},
    {"block_out_channels", RULE_ARCH, "[224, 448, 672, 896]", NULL, NULL},
    {"layers_per_block", RULE_ARCH, "2", NULL, NULL},
    {"mid_block_scale_factor", RULE_ARCH, "1.0", NULL, NULL},
    {"downsample_padding", RULE_ARCH, "1", NULL, NULL},
    {"dropout", RULE_ARCH, "0.0", NULL, NULL},
    {"act_fn", RULE_ARCH, "silu", NULL, NULL},
    {"attention_head_dim", RULE_ARCH, "8", NULL, NULL},
    {"norm_num_groups", RULE_ARCH, "32", NULL, NULL},
    {"norm_eps", RULE_ARCH, "1.0e-5", NULL, NULL},
    {"_class_name", RULE_FIXED, "\"UNet2DModel\"",
     "a3fta implements diffusers' UNet2DModel only (not conditional or other U-Nets)", NULL},
    {"resnet_time_scale_shift", RULE_FIXED, "\"default\"",
     "a3fta's ResNet blocks add the time embedding (\"default\"); \"scale_shift\" is not "
     "implemented",
     NULL},
    {"add_attention", RULE_FIXED, "true", "a3fta's middle block always has its attention layer",
     NULL},
    {"class_embed_type", RULE_FIXED, "null", "class conditioning is not implemented", NULL},
    {"num_class_embeds", RULE_FIXED, "null", "class conditioning is not implemented", NULL},
    {"downsample_type", RULE_FIXED, "\"conv\"", "a3fta downsamples with a strided convolution",
     NULL},
    {"upsample_type", RULE_FIXED, "\"conv\"", "a3fta upsamples with nearest x2 and a convolution",
     NULL},
    {"attn_norm_num_groups", RULE_FIXED, "null", "a3fta's attention GroupNorm uses norm_num_groups",
     NULL},
    {"attention_legacy_order", RULE_FIXED, "false",
     "a3fta splits q, k, v before the heads, as current diffusers does", NULL},
};
enum { N_RULES = sizeof rules / sizeof rules[0] };

static const key_rule *find_rule(const char *key) {
  for (int i = 0; i < N_RULES; i++)
    if (!strcmp(rules[i].key, key)) return &rules[i];
  return NULL;
}

// ---------------------------------------------------------------- messages
static const char *json_kind(const cJSON *v) {
  if (cJSON_IsString(v)) return "a string";
  if (cJSON_IsNumber(v)) return "a number";
  if (cJSON_IsArray(v)) return "a list";
  if (cJSON_IsObject(v)) return "an object";
  if (cJSON_IsBool(v)) return "a bool";
  if (cJSON_IsNull(v)) return "null";
  return "an invalid value";
}

// The value as compact JSON for a message, cut to 80 bytes.
typedef struct {
  char s[96];
} shown;

static shown show_json(const cJSON *v) {
  shown out = {{0}};
  char *text = cJSON_PrintUnformatted(v);
  snprintf(out.s, sizeof out.s, "%.80s%s", text ? text : "?",
           text && strlen(text) > 80 ? "..." : "");
  free(text);
  return out;
}

static a3_status key_fail(a3_status code, const char *path, const char *key, const char *fmt, ...)
    A3_PRINTF(4, 5);
static a3_status key_fail(a3_status code, const char *path, const char *key, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return A3_FAIL(code, "%s: key '%.80s': %s", path, key, msg);
}

// ---------------------------------------------------------------- JSON -> YAML text
typedef struct {
  char s[YAML_MAX];
  size_t len;
  bool overflow;
} yaml_text;

static void emit(yaml_text *y, const char *fmt, ...) A3_PRINTF(2, 3);
static void emit(yaml_text *y, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  const int n = vsnprintf(y->s + y->len, sizeof y->s - y->len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= sizeof y->s - y->len)
    y->overflow = true;
  else
    y->len += (size_t)n;
}

// Integers in full, other numbers in the shortest form that reads back
// exactly, always with a '.' or an exponent so YAML sees a float.
static void emit_number(yaml_text *y, double v) {
  if (v == floor(v) && fabs(v) < 1e15) {
    emit(y, "%.0f", v);
    return;
  }
  char buf[40];
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, v);
    if (strtod(buf, NULL) == v) break;
  }
  char *e = strchr(buf, 'e');
  if (e && !strchr(buf, '.')) { // "1e-06" -> "1.0e-06": YAML 1.1 floats need the dot
    emit(y, "%.*s.0%s", (int)(e - buf), buf, e);
    return;
  }
  emit(y, "%s", buf);
}

// A double-quoted YAML scalar (so "null" or "true" stay strings).
static void emit_string(yaml_text *y, const char *s) {
  emit(y, "\"");
  for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
    if (*c == '"' || *c == '\\')
      emit(y, "\\%c", *c);
    else if (*c < 0x20 || *c == 0x7F)
      emit(y, "\\x%02x", *c);
    else
      emit(y, "%c", *c);
  }
  emit(y, "\"");
}

static const char *expected_type(const a3_config_key *k) {
  switch (k->type) {
  case A3_KEY_INT: return "an integer";
  case A3_KEY_OPT_INT: return "an integer or null";
  case A3_KEY_FLOAT: return "a number";
  case A3_KEY_BOOL: return "true or false";
  case A3_KEY_ENUM:
  case A3_KEY_STRING: return "a string";
  case A3_KEY_INT_LIST: return "a list of integers";
  case A3_KEY_ENUM_LIST: return "a list of strings";
  default: return "a supported value";
  }
}

// Appends one scalar if its JSON type fits the schema type; false if not.
static bool emit_scalar(yaml_text *y, a3_key_type type, const cJSON *v) {
  if ((type == A3_KEY_INT || type == A3_KEY_OPT_INT || type == A3_KEY_FLOAT) && cJSON_IsNumber(v)) {
    emit_number(y, v->valuedouble);
  } else if (type == A3_KEY_OPT_INT && cJSON_IsNull(v)) {
    emit(y, "null");
  } else if (type == A3_KEY_BOOL && cJSON_IsBool(v)) {
    emit(y, cJSON_IsTrue(v) ? "true" : "false");
  } else if ((type == A3_KEY_ENUM || type == A3_KEY_STRING) && cJSON_IsString(v)) {
    emit_string(y, v->valuestring);
  } else {
    return false;
  }
  return true;
}

static bool emit_list(yaml_text *y, a3_key_type elem, const cJSON *v) {
  if (!cJSON_IsArray(v)) return false;
  emit(y, "[");
  for (const cJSON *e = v->child; e; e = e->next) {
    if (e != v->child) emit(y, ", ");
    if (!emit_scalar(y, elem, e)) return false;
  }
  emit(y, "]");
  return true;
}

static a3_status to_yaml(const char *path, const char *key, const a3_config_key *k, const cJSON *v,
                         yaml_text *y) {
  bool ok;
  if (k->type == A3_KEY_INT_LIST)
    ok = emit_list(y, A3_KEY_INT, v);
  else if (k->type == A3_KEY_ENUM_LIST)
    ok = emit_list(y, A3_KEY_ENUM, v);
  else
    ok = emit_scalar(y, k->type, v);
  if (!ok)
    return key_fail(A3_ERR_CONFIG, path, key, "expected %s, found %s (%s)", expected_type(k),
                    json_kind(v), show_json(v).s);
  if (y->overflow)
    return key_fail(A3_ERR_CONFIG, path, key, "the value is too long (%s)", show_json(v).s);
  return A3_OK;
}

// ---------------------------------------------------------------- keys
static a3_status set_arch(a3_config *cfg, const char *path, const char *key, const char *yaml) {
  char key_path[A3_CONFIG_KEY_MAX], origin[A3_CONFIG_STR_MAX + 128];
  snprintf(key_path, sizeof key_path, "model.arch.%s", key);
  snprintf(origin, sizeof origin, "%s: key '%s'", path, key);
  A3_TRY(a3_config_set(cfg, key_path, yaml, origin));
  return A3_OK;
}

// sample_size: an integer, or diffusers' [height, width] when both agree.
static const cJSON *square_size(const char *path, const cJSON *v, a3_status *s) {
  *s = A3_OK;
  if (!cJSON_IsArray(v)) return v;
  if (cJSON_GetArraySize(v) == 2 && cJSON_IsNumber(v->child) && cJSON_IsNumber(v->child->next) &&
      v->child->valuedouble == v->child->next->valuedouble)
    return v->child;
  *s = key_fail(A3_ERR_CONFIG, path, "sample_size",
                "%s is not one size; a3fta trains on square samples (sample_size N or [N, N])",
                show_json(v).s);
  return NULL;
}

// Whether v equals the JSON text `want` (cJSON_Compare: same types and values).
static bool json_equals(const cJSON *v, const char *want) {
  cJSON *w = cJSON_Parse(want);
  const bool same = w && cJSON_Compare(v, w, 1);
  cJSON_Delete(w);
  return same;
}

// The YAML text for a3_config_set, checked against the schema key's type.
static a3_status arch_yaml(const char *path, const key_rule *r, const cJSON *v, yaml_text *y) {
  a3_status s = A3_OK;
  if (!strcmp(r->key, "sample_size")) v = square_size(path, v, &s);
  A3_TRY(s);
  char key_path[A3_CONFIG_KEY_MAX];
  snprintf(key_path, sizeof key_path, "model.arch.%s", r->key);
  const a3_config_key *k = a3_config_find_key(key_path);
  if (!k) return A3_FAIL(A3_ERR_INTERNAL, "no schema key %s for config.json", key_path);
  if (!strcmp(r->key, "act_fn") && cJSON_IsString(v) && !strcmp(v->valuestring, "swish")) {
    emit(y, "silu"); // diffusers' get_activation: "swish" is SiLU
    return A3_OK;
  }
  A3_TRY(to_yaml(path, r->key, k, v, y));
  return A3_OK;
}

static a3_status apply_arch(a3_config *cfg, const char *path, const key_rule *r, const cJSON *v) {
  if (!v || (cJSON_IsNull(v) && !r->value)) { // absent: diffusers' default
    if (!r->value) a3_debug("%s: no %s; keeping model.arch.%s", path, r->key, r->key);
    if (r->value) A3_TRY(set_arch(cfg, path, r->key, r->value));
    return A3_OK;
  }
  if (r->only && !json_equals(v, r->only))
    return key_fail(A3_ERR_CONFIG, path, r->key, "%s is not supported: %s", show_json(v).s, r->why);
  yaml_text y = {.len = 0};
  A3_TRY(arch_yaml(path, r, v, &y));
  A3_TRY(set_arch(cfg, path, r->key, y.s));
  return A3_OK;
}

static a3_status check_fixed(const char *path, const key_rule *r, const cJSON *v) {
  if (!v || json_equals(v, r->value)) return A3_OK;
  return key_fail(A3_ERR_CONFIG, path, r->key, "%s is not supported (only %s): %s", show_json(v).s,
                  r->value, r->why);
}

// time_embedding_dim (newer diffusers): null means 4 * block_out_channels[0].
static a3_status check_time_dim(const char *path, const cJSON *v, const a3_arch_config *a) {
  if (!v || cJSON_IsNull(v)) return A3_OK;
  const double want = 4.0 * (double)a->block_out_channels[0];
  if (cJSON_IsNumber(v) && v->valuedouble == want) return A3_OK;
  return key_fail(A3_ERR_CONFIG, path, "time_embedding_dim",
                  "%s is not supported: a3fta's time embedding has 4 * block_out_channels[0] = "
                  "%.0f channels (null)",
                  show_json(v).s, want);
}

// ---------------------------------------------------------------- file
// cJSON keeps every duplicate key; a config with one key twice is ambiguous.
static int by_string(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static a3_status check_duplicates(const char *path, const cJSON *root) {
  const int n = cJSON_GetArraySize(root);
  const char **keys = NULL;
  A3_TRY(a3_alloc((void **)&keys, n > 0 ? (size_t)n : 1, sizeof *keys));
  int i = 0;
  for (const cJSON *c = root->child; c; c = c->next) keys[i++] = c->string ? c->string : "";
  qsort(keys, (size_t)n, sizeof *keys, by_string);
  a3_status s = A3_OK;
  for (i = 1; i < n && s == A3_OK; i++)
    if (!strcmp(keys[i - 1], keys[i]))
      s = key_fail(A3_ERR_INPUT, path, keys[i], "appears twice; keep one");
  free(keys);
  return s;
}

static void line_col(const char *text, size_t at, int *line, int *col) {
  *line = 1, *col = 1;
  for (size_t i = 0; i < at; i++) {
    if (text[i] == '\n')
      ++*line, *col = 1;
    else
      ++*col;
  }
}

static a3_status parse_file(const char *path, cJSON **out) {
  char *text = NULL;
  size_t len = 0;
  A3_TRY(a3_read_file(path, A3_CONFIG_MAX_BYTES, &text, &len));
  const char *end = NULL;
  cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
  size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
  while (root && at < len && strchr(" \t\r\n", text[at]) && text[at]) at++;
  int line = 0, col = 0;
  line_col(text, at, &line, &col);
  free(text);
  if (!root || at < len) {
    cJSON_Delete(root);
    return A3_FAIL(A3_ERR_INPUT, "%s:%d:%d: not valid JSON%s; is it a diffusers config.json?", path,
                   line, col, root ? " (text after the object)" : "");
  }
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return A3_FAIL(A3_ERR_INPUT, "%s: the JSON is %s, not an object of UNet2DModel arguments", path,
                   json_kind(root));
  }
  *out = root;
  return A3_OK;
}

static void log_ignored(const char *path, const cJSON *root) {
  for (const cJSON *c = root->child; c; c = c->next)
    if (c->string && !find_rule(c->string) && strcmp(c->string, "time_embedding_dim") != 0)
      a3_debug("%s: ignoring key '%s' (not used by a3fta)", path, c->string);
}

static a3_status apply_all(const char *path, const cJSON *root, a3_config *cfg) {
  A3_TRY(check_duplicates(path, root));
  for (int i = 0; i < N_RULES; i++)
    if (rules[i].kind == RULE_FIXED)
      A3_TRY(check_fixed(path, &rules[i], cJSON_GetObjectItemCaseSensitive(root, rules[i].key)));
  for (int i = 0; i < N_RULES; i++)
    if (rules[i].kind == RULE_ARCH)
      A3_TRY(
          apply_arch(cfg, path, &rules[i], cJSON_GetObjectItemCaseSensitive(root, rules[i].key)));
  A3_TRY(check_time_dim(path, cJSON_GetObjectItemCaseSensitive(root, "time_embedding_dim"),
                        &cfg->model.arch));
  if (a3_config_validate(cfg) != A3_OK) {
    char msg[2048];
    snprintf(msg, sizeof msg, "%s", a3_error_message());
    return A3_FAIL(A3_ERR_CONFIG, "%s: %s", path, msg);
  }
  log_ignored(path, root);
  return A3_OK;
}

a3_status a3_diffusers_load_config(const char *path, a3_config *cfg) {
  cJSON *root = NULL;
  A3_TRY(parse_file(path, &root));
  a3_config work;
  a3_status s = a3_config_copy(&work, cfg);
  if (s == A3_OK) {
    s = apply_all(path, root, &work);
    if (s == A3_OK) cfg->model.arch = work.model.arch; // only model.arch changes
    a3_config_free(&work);
  }
  cJSON_Delete(root);
  A3_TRY(s);
  return A3_OK;
}

// ---------------------------------------------------------------- folders
static bool is_kind(const char *path, bool dir) {
  struct stat sb;
  return stat(path, &sb) == 0 && (dir ? S_ISDIR(sb.st_mode) : S_ISREG(sb.st_mode));
}

static a3_status join(char *out, size_t size, const char *dir, const char *name) {
  const int n = snprintf(out, size, "%s/%s", dir, name);
  if (n < 0 || (size_t)n >= size)
    return A3_FAIL(A3_ERR_INPUT, "path %s/%s is longer than %zu bytes", dir, name, size - 1);
  return A3_OK;
}

static a3_status find_weights(const char *folder, a3_diffusers_files *out) {
  static const char *const names[] = {"diffusion_pytorch_model.safetensors", "model.safetensors",
                                      "diffusion_pytorch_model.fp16.safetensors"};
  for (int i = 0; i < 3; i++) {
    A3_TRY(join(out->weights, sizeof out->weights, folder, names[i]));
    if (is_kind(out->weights, false)) return A3_OK;
  }
  char bin[A3_CONFIG_STR_MAX];
  A3_TRY(join(bin, sizeof bin, folder, "diffusion_pytorch_model.bin"));
  out->weights[0] = '\0';
  if (is_kind(bin, false))
    return A3_FAIL(A3_ERR_INPUT,
                   "%s holds PyTorch pickle weights (diffusion_pytorch_model.bin), which a3fta "
                   "does not read; convert them with: /usr/bin/python3 -c \"from diffusers "
                   "import UNet2DModel; UNet2DModel.from_pretrained('%s').save_pretrained('%s', "
                   "safe_serialization=True)\"",
                   folder, folder, folder);
  return A3_FAIL(A3_ERR_INPUT,
                 "%s has config.json but no weights: expected diffusion_pytorch_model.safetensors "
                 "or model.safetensors next to it",
                 folder);
}

a3_status a3_diffusers_find_files(const char *dir, a3_diffusers_files *out) {
  memset(out, 0, sizeof *out);
  if (!is_kind(dir, true))
    return A3_FAIL(A3_ERR_INPUT,
                   "%s is not a folder; give the folder of a diffusers model "
                   "(with config.json and diffusion_pytorch_model.safetensors)",
                   dir);
  char unet[A3_CONFIG_STR_MAX];
  A3_TRY(join(unet, sizeof unet, dir, "unet"));
  const char *folders[2] = {dir, unet};
  for (int i = 0; i < 2; i++) {
    A3_TRY(join(out->config_json, sizeof out->config_json, folders[i], "config.json"));
    if (!is_kind(out->config_json, false)) continue;
    A3_TRY(find_weights(folders[i], out));
    return A3_OK;
  }
  out->config_json[0] = '\0';
  return A3_FAIL(A3_ERR_INPUT,
                 "no config.json in %s or %s; a3fta reads a diffusers UNet2DModel folder "
                 "(config.json + diffusion_pytorch_model.safetensors) or a pipeline with one "
                 "in unet/",
                 dir, unet);
}

// ---------------------------------------------------------------- names
static const char *const old_names[4] = {"query", "key", "value", "proj_attn"};
static const char *const new_names[4] = {"to_q", "to_k", "to_v", "to_out.0"};

// Length of the digits at s (0 if none).
static size_t digits(const char *s) {
  size_t n = 0;
  while (s[n] >= '0' && s[n] <= '9') n++;
  return n;
}

// If name[i..] is "attentions.<n>.<from[k]>" starting a component, with
// from[k] followed by '.' or the end, returns k and sets *comp to where
// from[k] starts; else -1.
static int component_at(const char *name, size_t i, const char *const from[4], size_t *comp) {
  static const char prefix[] = "attentions.";
  if ((i > 0 && name[i - 1] != '.') || strncmp(name + i, prefix, sizeof prefix - 1) != 0) return -1;
  size_t j = i + sizeof prefix - 1;
  const size_t nd = digits(name + j);
  if (nd == 0 || name[j + nd] != '.') return -1;
  j += nd + 1;
  for (int k = 0; k < 4; k++) {
    const size_t len = strlen(from[k]);
    if (!strncmp(name + j, from[k], len) && (name[j + len] == '.' || !name[j + len])) {
      *comp = j;
      return k;
    }
  }
  return -1;
}

static bool append(char *out, size_t size, size_t *o, const char *s, size_t n) {
  if (*o + n >= size) return false;
  memcpy(out + *o, s, n);
  *o += n;
  out[*o] = '\0';
  return true;
}

// Copies name to out with every attention component from[k] replaced by to[k].
static int rename_components(const char *name, const char *const from[4], const char *const to[4],
                             char *out, size_t out_size) {
  if (out_size == 0) return -1;
  out[0] = '\0';
  size_t o = 0, copied = 0;
  int renamed = 0;
  for (size_t i = 0; name[i]; i++) {
    size_t comp = 0;
    const int k = component_at(name, i, from, &comp);
    if (k < 0) continue;
    if (!append(out, out_size, &o, name + copied, comp - copied) ||
        !append(out, out_size, &o, to[k], strlen(to[k]))) {
      out[0] = '\0';
      return -1;
    }
    copied = comp + strlen(from[k]);
    i = copied - 1;
    renamed = 1;
  }
  if (!append(out, out_size, &o, name + copied, strlen(name + copied))) {
    out[0] = '\0';
    return -1;
  }
  return renamed;
}

int a3_diffusers_current_name(const char *name, char *out, size_t out_size) {
  return rename_components(name, old_names, new_names, out, out_size);
}

int a3_diffusers_legacy_name(const char *name, char *out, size_t out_size) {
  return rename_components(name, new_names, old_names, out, out_size);
}

const a3_st_tensor *a3_diffusers_find_tensor(const a3_safetensors *st, const char *name) {
  const a3_st_tensor *t = a3_safetensors_find(st, name);
  char legacy[512];
  if (!t && a3_diffusers_legacy_name(name, legacy, sizeof legacy) == 1)
    t = a3_safetensors_find(st, legacy);
  return t;
}
