// THE config schema: every key a3fta accepts, in canonical order, with its
// type, place in a3_config, default (YAML text, parsed like a file value),
// allowed range and help. Nothing else in a3fta holds a default.
#include "io/config_internal.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

// Enums are stored through an int pointer: they must be int-sized.
_Static_assert(sizeof(a3_strategy_name) == sizeof(int), "enums must be int-sized");
_Static_assert(sizeof(a3_down_block) == sizeof(int), "enums must be int-sized");
_Static_assert(sizeof(a3_metric) == sizeof(int), "enums must be int-sized");

#define N_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define F(field) offsetof(a3_config, field)
#define CAP(field) N_OF(((a3_config *)0)->field)

#define SECTION(p, h)                                                                              \
  { .path = p, .type = A3_KEY_SECTION, .help = h }
#define INT(p, field, d, lo, hi, h)                                                                \
  { .path = p, .type = A3_KEY_INT, .offset = F(field), .def = d, .imin = lo, .imax = hi, .help = h }
#define OPT_INT(p, field, d, lo, hi, h)                                                            \
  {                                                                                                \
    .path = p, .type = A3_KEY_OPT_INT, .offset = F(field), .def = d, .imin = lo, .imax = hi,       \
    .help = h                                                                                      \
  }
#define FLOAT(p, field, d, lo, hi, fl, h)                                                          \
  {                                                                                                \
    .path = p, .type = A3_KEY_FLOAT, .offset = F(field), .def = d, .fmin = lo, .fmax = hi,         \
    .flags = fl, .help = h                                                                         \
  }
#define BOOL(p, field, d, h)                                                                       \
  { .path = p, .type = A3_KEY_BOOL, .offset = F(field), .def = d, .help = h }
#define STRING(p, field, d, h)                                                                     \
  {                                                                                                \
    .path = p, .type = A3_KEY_STRING, .offset = F(field), .capacity = CAP(field), .def = d,        \
    .flags = A3_KEY_NONEMPTY, .help = h                                                            \
  }
#define ENUM(p, field, d, names_, h)                                                               \
  {                                                                                                \
    .path = p, .type = A3_KEY_ENUM, .offset = F(field), .def = d, .names = names_,                 \
    .n_names = N_OF(names_), .help = h                                                             \
  }
#define INT_LIST(p, field, count, d, lo, hi, fl, h)                                                \
  {                                                                                                \
    .path = p, .type = A3_KEY_INT_LIST, .offset = F(field), .count_offset = F(count),              \
    .capacity = CAP(field), .def = d, .imin = lo, .imax = hi, .flags = fl, .help = h               \
  }
#define ENUM_LIST(p, field, count, d, names_, fl, h)                                               \
  {                                                                                                \
    .path = p, .type = A3_KEY_ENUM_LIST, .offset = F(field), .count_offset = F(count),             \
    .capacity = CAP(field), .def = d, .names = names_, .n_names = N_OF(names_), .flags = fl,       \
    .help = h                                                                                      \
  }
#define SWEEP(p, kind, field, d, h)                                                                \
  { .path = p, .type = kind, .offset = F(field), .def = d, .help = h }

static const char *const down_names[] = {"DownBlock2D", "AttnDownBlock2D"};
static const char *const up_names[] = {"UpBlock2D", "AttnUpBlock2D"};
static const char *const time_emb_names[] = {"positional", "fourier"};
static const char *const act_fn_names[] = {"silu", "gelu", "relu"};
static const char *const adapter_act_names[] = {"silu", "gelu", "relu", "identity"};
static const char *const split_names[] = {"train", "test"};
static const char *const strategy_names[] = {"full",    "attention", "a3fta",
                                             "adapter", "lora",      "bitfit"};
static const char *const placement_names[] = {"pre_out", "post_out"};
static const char *const lr_schedule_names[] = {"constant", "cosine"};
static const char *const precision_names[] = {"fp32", "tf32", "bf16"};
static const char *const noise_names[] = {"linear", "scaled_linear", "cosine"};
static const char *const sampler_names[] = {"ddpm", "ddim"};
static const char *const metric_names[] = {"fid",          "kid",          "diversity",
                                           "memorization", "heldout_loss", "precision_recall"};
static const char *const backend_names[] = {"auto", "cpu", "cuda"};
static const char *const schedule_names[] = {"dynamic", "static"};

#define BIG INT64_C(1000000000) // a generous cap that still catches typos such as 1e12
#define OPEN A3_KEY_MIN_OPEN
#define CLOSED 0u

static const a3_config_key schema[] = {
    SECTION("model", "The model to train: where its weights start and its architecture."),
    STRING("model.init", model.init, "random",
           "\"random\" for a fresh initialisation, or the weights to fine-tune: an a3fta "
           "checkpoint (its raw /params), a .safetensors file (e.g. `a3fta export` of a "
           "pretraining checkpoint: its EMA weights) or a diffusers UNet2DModel folder. The "
           "architecture must match model.arch."),
    SECTION("model.arch", "The U-Net architecture, with the names and defaults of diffusers' "
                          "UNet2DModel (so a diffusers config.json maps onto it key by key)."),
    INT("model.arch.sample_size", model.arch.sample_size, "32", 1, 4096,
        "Image height and width in pixels. Must be divisible by 2^(number of blocks - 1)."),
    INT("model.arch.in_channels", model.arch.in_channels, "1", 1, 64,
        "Channels of the input images (1 = grayscale)."),
    INT("model.arch.out_channels", model.arch.out_channels, "1", 1, 64,
        "Channels of the predicted noise (normally equal to in_channels)."),
    INT_LIST("model.arch.block_out_channels", model.arch.block_out_channels,
             model.arch.n_block_out_channels, "[32, 64, 64]", 1, 65536, A3_KEY_NONEMPTY,
             "Feature channels of each resolution level, highest resolution first. Each must be "
             "divisible by norm_num_groups."),
    INT("model.arch.layers_per_block", model.arch.layers_per_block, "2", 1, 16,
        "ResNet layers in each down block (up blocks have one more)."),
    ENUM_LIST("model.arch.down_block_types", model.arch.down_block_types,
              model.arch.n_down_block_types, "[DownBlock2D, DownBlock2D, AttnDownBlock2D]",
              down_names, A3_KEY_NONEMPTY,
              "One per entry of block_out_channels, highest resolution first; Attn blocks add "
              "self-attention after each ResNet layer."),
    ENUM_LIST("model.arch.up_block_types", model.arch.up_block_types, model.arch.n_up_block_types,
              "[AttnUpBlock2D, UpBlock2D, UpBlock2D]", up_names, A3_KEY_NONEMPTY,
              "One per entry of block_out_channels, lowest resolution first."),
    INT("model.arch.norm_num_groups", model.arch.norm_num_groups, "8", 1, 1024,
        "Groups of GroupNorm; divides every channel count."),
    FLOAT("model.arch.norm_eps", model.arch.norm_eps, "1.0e-5", 0.0, 1.0, OPEN | A3_KEY_MAX_OPEN,
          "Epsilon of GroupNorm."),
    OPT_INT("model.arch.attention_head_dim", model.arch.attention_head_dim, "null", 1, 65536,
            "Channels per attention head; null = one head spanning all channels. Must divide "
            "the channels of every attention block."),
    INT("model.arch.downsample_padding", model.arch.downsample_padding, "1", 0, 2,
        "Padding of the stride-2 downsampling convolution."),
    BOOL("model.arch.flip_sin_to_cos", model.arch.flip_sin_to_cos, "true",
         "Order of the timestep embedding halves: true = cos first (diffusers' default)."),
    INT("model.arch.freq_shift", model.arch.freq_shift, "0", 0, 1,
        "Frequency shift of the sinusoidal timestep embedding (0 or 1)."),
    ENUM("model.arch.time_embedding_type", model.arch.time_embedding_type, "positional",
         time_emb_names, "Timestep embedding: sinusoidal (positional) or Gaussian Fourier."),
    ENUM("model.arch.act_fn", model.arch.act_fn, "silu", act_fn_names,
         "Activation of the ResNet layers and the time embedding."),
    BOOL("model.arch.center_input_sample", model.arch.center_input_sample, "false",
         "Map inputs from [0, 1] to [-1, 1] inside the model."),
    FLOAT("model.arch.mid_block_scale_factor", model.arch.mid_block_scale_factor, "1.0", 0.0,
          1000.0, OPEN, "Output scale of the middle block's ResNet layers."),
    FLOAT("model.arch.dropout", model.arch.dropout, "0.0", 0.0, 1.0, A3_KEY_MAX_OPEN,
          "Dropout probability in the ResNet layers."),

    SECTION("data", "The training images: an HDF5 dataset written by 'a3fta import'."),
    STRING("data.path", data.path, "data/fashion-mnist.h5",
           "Path of the dataset file (relative to the working directory)."),
    ENUM("data.split", data.split, "train", split_names, "Which split of the file to train on."),
    INT_LIST("data.classes", data.classes, data.n_classes, "[]", 0, 65535, A3_KEY_UNIQUE,
             "Class labels to keep, each once; [] keeps every class."),
    INT("data.shots", data.shots, "0", 0, BIG,
        "Training examples per kept class (the few-shot subset); 0 keeps all."),
    INT("data.subset_seed", data.subset_seed, "0", 0, INT64_MAX,
        "Seed that picks the few-shot subset, separate from train.seed so the same images can "
        "be trained with several seeds."),
    BOOL("data.hflip", data.hflip, "false", "Random horizontal flips as augmentation."),

    SECTION("strategy", "Which parameters fine-tuning updates."),
    ENUM("strategy.name", strategy.name, "a3fta", strategy_names,
         "full: every weight; attention: attention weights only; a3fta: attention weights plus "
         "adapters; adapter: adapters only; lora: low-rank updates of attention; bitfit: biases "
         "only."),
    SECTION("strategy.adapter", "Bottleneck adapters (strategies a3fta and adapter)."),
    INT("strategy.adapter.rank", strategy.adapter.rank, "8", 1, 4096,
        "Bottleneck width of each adapter."),
    ENUM("strategy.adapter.activation", strategy.adapter.activation, "gelu", adapter_act_names,
         "Activation inside the bottleneck."),
    ENUM("strategy.adapter.placement", strategy.adapter.placement, "pre_out", placement_names,
         "Where the adapter sits in an attention block: before or after its output projection."),
    BOOL("strategy.adapter.gate", strategy.adapter.gate, "false",
         "Scale the adapter's output by a learned scalar gate that starts at 1 (the zero "
         "up-projection makes step 0 exact)."),
    SECTION("strategy.lora", "Low-rank adaptation of attention projections (strategy lora)."),
    INT("strategy.lora.rank", strategy.lora.rank, "4", 1, 4096, "Rank of each update."),
    FLOAT("strategy.lora.alpha", strategy.lora.alpha, "4.0", 0.0, 1.0e6, OPEN,
          "Scale: the update is multiplied by alpha / rank."),

    SECTION("train", "The optimisation: AdamW on the DDPM noise-prediction loss."),
    INT("train.steps", train.steps, "1000", 1, BIG, "Optimizer steps."),
    INT("train.batch_size", train.batch_size, "16", 1, 65536,
        "Images per optimizer step per run (over all ranks of the run and grad_accum)."),
    INT("train.grad_accum", train.grad_accum, "1", 1, 1024,
        "Micro-batches accumulated into one step."),
    FLOAT("train.lr", train.lr, "1.0e-4", 0.0, 10.0, OPEN, "Peak learning rate."),
    ENUM("train.lr_schedule", train.lr_schedule, "cosine", lr_schedule_names,
         "Learning-rate decay after warmup: none, or cosine to 0 at the last step."),
    INT("train.warmup", train.warmup, "50", 0, BIG,
        "Steps of linear warmup from 0 to lr; at most train.steps."),
    FLOAT("train.adam_beta1", train.adam_beta1, "0.95", 0.0, 1.0, A3_KEY_MAX_OPEN,
          "AdamW first-moment decay."),
    FLOAT("train.adam_beta2", train.adam_beta2, "0.999", 0.0, 1.0, A3_KEY_MAX_OPEN,
          "AdamW second-moment decay."),
    FLOAT("train.weight_decay", train.weight_decay, "1.0e-6", 0.0, 1.0, CLOSED,
          "AdamW decoupled weight decay."),
    FLOAT("train.adam_eps", train.adam_eps, "1.0e-8", 0.0, 1.0, OPEN, "AdamW epsilon."),
    FLOAT("train.grad_clip", train.grad_clip, "1.0", 0.0, 1.0e6, CLOSED,
          "Clip the global gradient norm to this; 0 = no clipping."),
    BOOL("train.ema", train.ema, "true",
         "Keep an exponential moving average of the weights and sample from it."),
    FLOAT("train.ema_max_decay", train.ema_max_decay, "0.9999", 0.0, 1.0, CLOSED,
          "Upper bound of the EMA decay (which warms up from 0 as in diffusers' EMAModel)."),
    ENUM("train.precision", train.precision, "fp32", precision_names,
         "Arithmetic of the matrix products on a GPU: fp32; tf32 or bf16 tensor cores "
         "(operands rounded to 10 or 8 mantissa bits, fp32 accumulation and storage). "
         "The CPU backend computes fp32 whatever is set."),
    INT("train.seed", train.seed, "0", 0, INT64_MAX,
        "Seed of initialisation, noise and batch order (Philox streams: any rank count gives "
        "the same numbers)."),
    INT("train.log_every", train.log_every, "10", 1, BIG, "Steps between loss log lines."),
    INT("train.checkpoint_every", train.checkpoint_every, "0", 0, BIG,
        "Steps between checkpoints; 0 = only at the end."),
    ENUM("train.noise_schedule", train.noise_schedule, "linear", noise_names,
         "DDPM beta schedule (diffusers' beta_schedule, with squaredcos_cap_v2 named cosine)."),
    INT("train.num_train_timesteps", train.num_train_timesteps, "1000", 1, 100000,
        "Diffusion steps of the noise schedule."),

    SECTION("eval", "Sampling and metrics after training."),
    INT("eval.samples", eval.samples, "256", 1, 10000000, "Images to sample for the metrics."),
    ENUM("eval.sampler", eval.sampler, "ddim", sampler_names, "Sampler for evaluation images."),
    INT("eval.sampler_steps", eval.sampler_steps, "50", 1, 100000,
        "Denoising steps of the sampler; at most train.num_train_timesteps."),
    FLOAT("eval.eta", eval.eta, "0.0", 0.0, 1.0, CLOSED,
          "DDIM eta: 0 = deterministic, 1 = as stochastic as DDPM."),
    ENUM_LIST("eval.metrics", eval.metrics, eval.n_metrics, "[fid, kid, diversity, memorization]",
              metric_names, A3_KEY_UNIQUE, "Metrics to compute, each once; [] computes none."),
    INT("eval.heldout_every", eval.heldout_every, "0", 0, BIG,
        "Steps between held-out denoising losses during training (0 = off): the mean MSE of "
        "the epsilon prediction on the test split's images of data.classes at fixed timesteps "
        "and fixed noise, logged and written to losses.csv (column heldout) and loss.png, so "
        "overfitting shows as a rising curve. Also evaluated at the last step."),
    INT("eval.heldout_images", eval.heldout_images, "64", 1, 1000000,
        "Held-out images: the first N (in file order) of split test of data.path in "
        "data.classes (fewer if the split has fewer)."),
    INT("eval.heldout_timesteps", eval.heldout_timesteps, "8", 1, 100000,
        "Timesteps per held-out image, evenly spaced: t_k = floor((2k + 1) T / (2K)), the "
        "midpoints of K equal slices of the T = train.num_train_timesteps steps."),

    SECTION("sweep",
            "Runs derived from this config: every combination of the grid axes and the zip "
            "tuples, then each point on its own. Values are checked like the keys they set."),
    SWEEP("sweep.grid", A3_KEY_SWEEP_AXES, sweep.grid, "{}",
          "Map from key path to a non-empty list of values; every combination is a run."),
    SWEEP("sweep.zip", A3_KEY_SWEEP_AXES, sweep.zip, "{}",
          "Map from key path to lists of equal length, advanced together (one grid axis)."),
    SWEEP("sweep.points", A3_KEY_SWEEP_POINTS, sweep.points, "[]",
          "List of maps from key path to value; each is one more run."),

    SECTION("parallel", "How runs use MPI ranks and devices."),
    INT("parallel.ranks_per_run", parallel.ranks_per_run, "1", 1, 1048576,
        "Ranks that train one run together (data parallel); a sweep runs world size / "
        "ranks_per_run runs at a time."),
    ENUM("parallel.backend", parallel.backend, "auto", backend_names,
         "Compute backend: auto = cuda when a GPU is usable, else cpu."),
    ENUM("parallel.schedule", parallel.schedule, "dynamic", schedule_names,
         "How sweep runs go to rank groups: dynamic = the next free group takes the next run, "
         "longest first (train.steps x train.batch_size); static = round robin fixed in "
         "advance, in point order."),
    INT("parallel.nccl_timeout_s", parallel.nccl_timeout_s, "600", 1, 86400,
        "Seconds before a stuck collective aborts the job."),

    SECTION("output", "Where results go."),
    STRING("output.dir", output.dir, "runs/default",
           "Directory for results, checkpoints and samples (created if missing)."),
    BOOL("output.save_weights", output.save_weights, "true",
         "Keep each finished run's checkpoint.h5 (weights, EMA, optimizer state; what eval, "
         "sample, export and --resume read). false: removed once the run is trained, sampled "
         "and evaluated, to save disk in large sweeps (still written during training, for "
         "resume)."),
    INT("output.samples_per_run", output.samples_per_run, "16", 0, 1000000,
        "Sample images stored with each run's results."),
};

_Static_assert(N_OF(schema) <= A3_CONFIG_SCHEMA_MAX, "raise A3_CONFIG_SCHEMA_MAX");

const a3_config_key *a3_config_schema(int *n_keys) {
  if (n_keys) *n_keys = N_OF(schema);
  return schema;
}

const a3_config_key *a3_config_find_key(const char *path) {
  for (int i = 0; i < N_OF(schema); i++)
    if (!strcmp(schema[i].path, path)) return &schema[i];
  return NULL;
}

// Names other tools use for the same settings (diffusers' training scripts,
// common typos' targets); they only feed "did you mean", never parse.
static const struct {
  const char *path, *aliases;
} aliases[] = {
    {"train.lr", "learning_rate lr_rate"},
    {"train.steps", "max_steps num_steps max_train_steps iterations"},
    {"train.batch_size", "batch train_batch_size bs"},
    {"train.grad_accum", "gradient_accumulation_steps grad_accumulation"},
    {"train.warmup", "warmup_steps lr_warmup_steps"},
    {"train.adam_eps", "adam_epsilon eps"},
    {"train.weight_decay", "adam_weight_decay"},
    {"train.grad_clip", "max_grad_norm clip_grad_norm"},
    {"train.ema", "use_ema"},
    {"train.ema_max_decay", "ema_decay"},
    {"train.precision", "mixed_precision dtype"},
    {"train.lr_schedule", "lr_scheduler scheduler"},
    {"train.noise_schedule", "beta_schedule"},
    {"train.num_train_timesteps", "timesteps"},
    {"eval.samples", "num_samples n_samples"},
    {"eval.sampler_steps", "num_inference_steps inference_steps"},
    {"data.shots", "shot n_shots"},
    {"data.classes", "labels class"},
    {"strategy.name", "strategy method"},
    {"output.dir", "output_dir out_dir"},
};

const char *a3_cfg_key_aliases(const a3_config_key *key) {
  for (int i = 0; i < N_OF(aliases); i++)
    if (!strcmp(aliases[i].path, key->path)) return aliases[i].aliases;
  return "";
}
