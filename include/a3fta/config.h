// a3fta configuration: one typed struct, filled from a strict YAML file and
// `-o key.path=value` overrides. Every key is declared once in the schema
// (src/io/config_schema.c) with its type, default, range and help; loading,
// printing, hashing and the docs (configs/README.md) are all driven by it.
//
// Errors are A3_ERR_CONFIG with "FILE:LINE:COL: key.path: what; how to fix"
// (or "override 'k=v': key.path: ..." for overrides).
#ifndef A3FTA_CONFIG_H
#define A3FTA_CONFIG_H

#include "a3fta/core.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum {
  A3_CONFIG_STR_MAX = 1024,      // bytes of a path or name, NUL included
  A3_CONFIG_KEY_MAX = 64,        // bytes of a key path ("strategy.adapter.rank"), NUL included
  A3_CONFIG_MAX_BLOCKS = 8,      // U-Net resolution levels
  A3_CONFIG_MAX_CLASSES = 256,   // entries of data.classes
  A3_CONFIG_MAX_METRICS = 6,     // entries of eval.metrics (each metric once)
  A3_CONFIG_MAX_BYTES = 1 << 20, // larger files are rejected before parsing
  A3_CONFIG_MAX_NODES = 100000,  // YAML nodes (scalars, lists, maps) in one document
  A3_CONFIG_MAX_DEPTH = 32,      // nesting levels of lists and maps
  A3_CONFIG_SCHEMA_MAX = 128,    // capacity for schema entries (checked by the tests)
};

// ---------------------------------------------------------------- enums
// The C value of each enum is the index of its name in the schema.
typedef enum { A3_DOWN_BLOCK, A3_DOWN_ATTN } a3_down_block; // DownBlock2D, AttnDownBlock2D
typedef enum { A3_UP_BLOCK, A3_UP_ATTN } a3_up_block;       // UpBlock2D, AttnUpBlock2D
typedef enum { A3_TIME_EMB_POSITIONAL, A3_TIME_EMB_FOURIER } a3_time_embedding;
typedef enum { A3_ACT_SILU, A3_ACT_GELU, A3_ACT_RELU, A3_ACT_IDENTITY } a3_activation;
typedef enum { A3_SPLIT_TRAIN, A3_SPLIT_TEST } a3_split;
typedef enum {
  A3_STRATEGY_FULL,
  A3_STRATEGY_ATTENTION,
  A3_STRATEGY_A3FTA,
  A3_STRATEGY_ADAPTER,
  A3_STRATEGY_LORA,
  A3_STRATEGY_BITFIT,
} a3_strategy_name;
typedef enum { A3_PLACEMENT_PRE_OUT, A3_PLACEMENT_POST_OUT } a3_adapter_placement;
typedef enum { A3_LR_CONSTANT, A3_LR_COSINE } a3_lr_schedule;
typedef enum { A3_NOISE_LINEAR, A3_NOISE_SCALED_LINEAR, A3_NOISE_COSINE } a3_noise_schedule;
typedef enum { A3_SAMPLER_DDPM, A3_SAMPLER_DDIM } a3_sampler;
typedef enum {
  A3_METRIC_FID,
  A3_METRIC_KID,
  A3_METRIC_DIVERSITY,
  A3_METRIC_MEMORIZATION,
  A3_METRIC_HELDOUT_LOSS,
  A3_METRIC_PRECISION_RECALL,
} a3_metric;
typedef enum { A3_BACKEND_AUTO, A3_BACKEND_CPU, A3_BACKEND_CUDA } a3_backend_kind;
typedef enum { A3_SCHEDULE_DYNAMIC, A3_SCHEDULE_STATIC } a3_schedule;

// ---------------------------------------------------------------- sections
// diffusers UNet2DModel arguments, same names and defaults.
typedef struct {
  int64_t sample_size, in_channels, out_channels;
  int64_t block_out_channels[A3_CONFIG_MAX_BLOCKS];
  int n_block_out_channels;
  int64_t layers_per_block;
  a3_down_block down_block_types[A3_CONFIG_MAX_BLOCKS];
  int n_down_block_types;
  a3_up_block up_block_types[A3_CONFIG_MAX_BLOCKS];
  int n_up_block_types;
  int64_t norm_num_groups;
  double norm_eps;
  int64_t attention_head_dim; // 0 = null: one head with the block's full channel count
  int64_t downsample_padding;
  bool flip_sin_to_cos;
  int64_t freq_shift;
  a3_time_embedding time_embedding_type;
  a3_activation act_fn;
  bool center_input_sample;
  double mid_block_scale_factor;
  double dropout;
} a3_arch_config;

typedef struct {
  char init[A3_CONFIG_STR_MAX]; // "random" or a checkpoint path
  a3_arch_config arch;
} a3_model_config;

typedef struct {
  char path[A3_CONFIG_STR_MAX];
  a3_split split;
  int64_t classes[A3_CONFIG_MAX_CLASSES]; // distinct labels; none = all classes
  int n_classes;
  int64_t shots; // examples per class, 0 = all
  int64_t subset_seed;
  bool hflip;
} a3_data_config;

typedef struct {
  int64_t rank;
  a3_activation activation;
  a3_adapter_placement placement;
  bool gate;
} a3_adapter_config;

typedef struct {
  int64_t rank;
  double alpha;
} a3_lora_config;

typedef struct {
  a3_strategy_name name;
  a3_adapter_config adapter;
  a3_lora_config lora;
} a3_strategy_config;

typedef struct {
  int64_t steps, batch_size, grad_accum;
  double lr;
  a3_lr_schedule lr_schedule;
  int64_t warmup;
  double adam_beta1, adam_beta2, weight_decay, adam_eps, grad_clip; // grad_clip 0 = off
  bool ema;
  double ema_max_decay;
  a3_precision precision;
  int64_t seed, log_every, checkpoint_every; // checkpoint_every 0 = only at the end
  a3_noise_schedule noise_schedule;
  int64_t num_train_timesteps;
} a3_train_config;

typedef struct {
  int64_t samples;
  a3_sampler sampler;
  int64_t sampler_steps;
  double eta;
  a3_metric metrics[A3_CONFIG_MAX_METRICS];
  int n_metrics;
  int64_t heldout_every;     // held-out denoising loss every N steps (0 = off)
  int64_t heldout_images;    // the first N test images of data.classes
  int64_t heldout_timesteps; // evenly spaced over the schedule
} a3_eval_config;

// One swept key: its values as canonical YAML texts ("0.0001", "[0, 1]"),
// which a3_config_set() applies to a copy of the base config.
typedef struct {
  char key[A3_CONFIG_KEY_MAX]; // "train.lr"
  char **values;               // n_values owned strings
  int n_values;
} a3_sweep_axis;

typedef struct {
  a3_sweep_axis *items; // in schema order of their keys (so file order does not matter)
  int n;
} a3_sweep_axes;

typedef struct {
  char key[A3_CONFIG_KEY_MAX];
  char *value; // owned canonical YAML text
} a3_sweep_setting;

typedef struct {
  a3_sweep_setting *settings; // in schema order of their keys
  int n_settings;
} a3_sweep_point;

typedef struct {
  a3_sweep_point *items;
  int n;
} a3_sweep_points;

// Runs of a sweep: every combination of the grid axes and the zip tuples
// (zip lists advance together), then each point on its own.
typedef struct {
  a3_sweep_axes grid, zip;
  a3_sweep_points points;
} a3_sweep_config;

typedef struct {
  int64_t ranks_per_run;
  a3_backend_kind backend;
  a3_schedule schedule;
  int64_t nccl_timeout_s;
} a3_parallel_config;

typedef struct {
  char dir[A3_CONFIG_STR_MAX];
  bool save_weights;
  int64_t samples_per_run;
} a3_output_config;

typedef struct {
  a3_model_config model;
  a3_data_config data;
  a3_strategy_config strategy;
  a3_train_config train;
  a3_eval_config eval;
  a3_sweep_config sweep; // owns heap memory: see a3_config_free / a3_config_copy
  a3_parallel_config parallel;
  a3_output_config output;
} a3_config;

// ---------------------------------------------------------------- loading
// Sets every key to its schema default. cfg must own nothing yet (it is
// overwritten, not freed). Defaults cannot fail to parse (the tests check it).
void a3_config_init_defaults(a3_config *cfg);

// Defaults, then the file (path NULL: none), then each override "key=value"
// in order, then the cross-key checks. On failure *out owns nothing.
a3_status a3_config_load(const char *path, const char *const *overrides, int n_overrides,
                         a3_config *out) A3_WARN_UNUSED;
// The same from text in memory; name_for_errors stands for the file name.
a3_status a3_config_load_string(const char *name_for_errors, const char *yaml_text, size_t len,
                                const char *const *overrides, int n_overrides,
                                a3_config *out) A3_WARN_UNUSED;

// Applies "train.lr=3e-4" (the value is YAML: "[1, 2]" is a list, "" null).
// Does not run the cross-key checks: call a3_config_validate afterwards.
a3_status a3_config_apply_override(a3_config *cfg, const char *assignment) A3_WARN_UNUSED;
// Sets one key path from YAML text, as overrides and sweep points do; errors
// start with `origin` ("sweep run 3"). A section path takes a map.
a3_status a3_config_set(a3_config *cfg, const char *key_path, const char *yaml_value,
                        const char *origin) A3_WARN_UNUSED;
// The checks that involve several keys (block counts, divisibility, ...).
a3_status a3_config_validate(const a3_config *cfg) A3_WARN_UNUSED;

// ---------------------------------------------------------------- output
// Canonical YAML: every key in schema order, one spelling per value, doubles
// in the shortest form that reads back exactly. Parsing it gives an equal config.
a3_status a3_config_write_yaml(const a3_config *cfg, FILE *f) A3_WARN_UNUSED;
// The same text with each key's help as comments (configs/default.yaml).
a3_status a3_config_write_yaml_commented(const a3_config *cfg, FILE *f) A3_WARN_UNUSED;
// The canonical YAML as an owned NUL-terminated string (free() it).
a3_status a3_config_to_yaml(const a3_config *cfg, char **out, size_t *out_len) A3_WARN_UNUSED;
// FNV-1a (a3_hash64) of the canonical YAML: equal configs, equal hashes,
// however the files were written. 0 only if memory ran out.
uint64_t a3_config_hash(const a3_config *cfg);
// 1 when both give the same canonical YAML, else 0.
int a3_config_equal(const a3_config *a, const a3_config *b);

// dst (owning nothing) becomes a deep copy of src.
a3_status a3_config_copy(a3_config *dst, const a3_config *src) A3_WARN_UNUSED;
// Frees the sweep lists; cfg stays usable (an empty sweep). Safe twice.
void a3_config_free(a3_config *cfg);

// ---------------------------------------------------------------- schema
typedef enum {
  A3_KEY_SECTION,      // a map of further keys
  A3_KEY_INT,          // int64_t in [imin, imax]
  A3_KEY_OPT_INT,      // int64_t in [imin, imax] (imin >= 1), or null stored as 0
  A3_KEY_FLOAT,        // finite double in fmin..fmax (A3_KEY_MIN_OPEN / MAX_OPEN)
  A3_KEY_BOOL,         // bool
  A3_KEY_STRING,       // char[capacity]
  A3_KEY_ENUM,         // an int-sized enum: index into names
  A3_KEY_INT_LIST,     // int64_t[capacity] + int count, each in [imin, imax]
  A3_KEY_ENUM_LIST,    // enum[capacity] + int count
  A3_KEY_SWEEP_AXES,   // a3_sweep_axes: map key path -> non-empty list of values
  A3_KEY_SWEEP_POINTS, // a3_sweep_points: list of maps key path -> value
} a3_key_type;

enum {
  A3_KEY_MIN_OPEN = 1u << 0, // FLOAT: value must be > fmin (else >=)
  A3_KEY_MAX_OPEN = 1u << 1, // FLOAT: value must be < fmax (else <=)
  A3_KEY_NONEMPTY = 1u << 2, // STRING, lists: at least one character / entry
  A3_KEY_UNIQUE = 1u << 3,   // lists: no entry twice
};

typedef struct {
  const char *path; // "train.lr"
  a3_key_type type;
  size_t offset;       // offsetof(a3_config, ...) of the value
  size_t count_offset; // lists: offsetof the int count
  int capacity;        // lists: entries; strings: bytes with the NUL
  const char *def;     // default as YAML text, parsed like a file value (NULL for sections)
  int64_t imin, imax;
  double fmin, fmax;
  const char *const *names; // ENUM, ENUM_LIST
  int n_names;
  unsigned flags;
  const char *help; // one or two sentences: what it is, units, what the values mean
} a3_config_key;

// The table, in canonical order (each section before its keys).
const a3_config_key *a3_config_schema(int *n_keys);
const a3_config_key *a3_config_find_key(const char *path); // NULL when unknown
// "integer", "number", "list of integers", ... (for docs and messages).
const char *a3_config_type_name(const a3_config_key *key);
// The allowed values in words: "[1, 4096]", "> 0", "fp32, tf32, bf16", "" if any.
void a3_config_describe_range(const a3_config_key *key, char *buf, size_t size);
// One key's value as canonical YAML text ("0.0001", "[32, 64]"); free() it.
a3_status a3_config_format_value(const a3_config *cfg, const a3_config_key *key,
                                 char **out) A3_WARN_UNUSED;

#endif
