// Sampling from a trained U-Net (DDPM / DDIM), and the files samples go to:
// an HDF5 array and a PNG grid.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/trainer.h"

#include "a3fta/dataset.h"
#include "a3fta/dist.h"
#include "a3fta/plot.h"

#include "io/h5util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { GRID_GAP = 2 }; // pixels between grid cells

// One sampling run's buffers: the working tensors in the model's backend
// memory, a host buffer that stages the noise up and the images down.
typedef struct {
  const a3_backend *be;
  float *x, *eps, *noise; // (batch, per), backend memory
  float *tf;              // (steps, batch) every step's timesteps, backend memory
  float *host;            // (batch, per), host
  int32_t *timesteps;     // (steps), host
} sample_buffers;

static void free_buffers(sample_buffers *b) {
  if (b->be) {
    b->be->ops->release(b->be, b->x);
    b->be->ops->release(b->be, b->eps);
    b->be->ops->release(b->be, b->noise);
    b->be->ops->release(b->be, b->tf);
  }
  free(b->host);
  free(b->timesteps);
}

static a3_status alloc_buffers(sample_buffers *b, const a3_backend *be,
                               const a3_noise_schedule_table *sched, int batch, int64_t per,
                               int64_t steps) {
  memset(b, 0, sizeof *b);
  b->be = be;
  const size_t n = (size_t)batch * (size_t)per, nt = (size_t)steps * (size_t)batch;
  A3_TRY(A3_ALLOC(b->timesteps, (size_t)steps));
  A3_TRY(a3_sampler_timesteps(sched->T, steps, b->timesteps)); // checks steps first
  A3_TRY(be->ops->alloc(be, (void **)&b->x, n * sizeof(float)));
  A3_TRY(be->ops->alloc(be, (void **)&b->eps, n * sizeof(float)));
  A3_TRY(be->ops->alloc(be, (void **)&b->noise, n * sizeof(float)));
  A3_TRY(be->ops->alloc(be, (void **)&b->tf, nt * sizeof(float)));
  A3_TRY(A3_ALLOC(b->host, n));
  // Every step's timesteps go up once (the host buffer holds them on the way).
  float *tf = NULL;
  A3_TRY(A3_ALLOC(tf, nt));
  for (size_t i = 0; i < nt; i++) tf[i] = (float)b->timesteps[i / (size_t)batch];
  const a3_status s = be->ops->upload(be, b->tf, tf, nt * sizeof(float));
  free(tf);
  A3_TRY(s);
  return A3_OK;
}

static uint8_t to_u8(float v) {
  const float p = roundf((v + 1.0f) * 127.5f);
  return (uint8_t)(p < 0.0f ? 0.0f : p > 255.0f ? 255.0f : p);
}

// Samples [first, first + b) of the run into out (b, per), on the model's
// backend: the noise is drawn on the host and uploaded, the model and the
// sampler step run on the backend, and the images come down once.
static a3_status sample_chunk(a3_unet *m, const a3_noise_schedule_table *sched,
                              const a3_sample_options *o, int64_t first, int b, int batch,
                              int64_t per, sample_buffers *buf, uint8_t *out) {
  const a3_backend *be = buf->be;
  if (a3_unet_batch(m) != b) A3_TRY(a3_unet_plan(m, b));
  const int64_t n = (int64_t)b * per;
  const size_t bytes = (size_t)n * sizeof(float);
  a3_diffusion_randn(o->seed, A3_STREAM_SAMPLE_INIT, 0, (uint64_t)first, b, per, buf->host);
  A3_TRY(be->ops->upload(be, buf->x, buf->host, bytes));
  for (int64_t i = 0; i < o->steps; i++) {
    const int32_t t = buf->timesteps[i];
    a3_sampler_scalars sc;
    A3_TRY(a3_sampler_prepare(o->sampler, sched, t, a3_sampler_prev_timestep(sched->T, o->steps, t),
                              o->eta, &sc));
    A3_TRY(a3_unet_forward(m, buf->x, buf->tf + i * batch, buf->eps));
    if (sc.add_noise) {
      a3_diffusion_randn(o->seed, A3_STREAM_SAMPLE_NOISE, (uint64_t)i, (uint64_t)first, b, per,
                         buf->host);
      A3_TRY(be->ops->upload(be, buf->noise, buf->host, bytes));
    }
    be->ops->sampler_step(be, buf->x, buf->eps, buf->x, sc.add_noise ? buf->noise : NULL, (size_t)n,
                          &sc);
  }
  A3_TRY(be->ops->synchronize(be));
  A3_TRY(be->ops->download(be, buf->host, buf->x, bytes));
  for (int64_t k = 0; k < n; k++) out[k] = to_u8(buf->host[k]);
  return A3_OK;
}

a3_status a3_sample_images(a3_unet *m, const a3_noise_schedule_table *sched,
                           const a3_sample_options *o, uint8_t *out) {
  const a3_arch_config *arch = a3_unet_arch(m);
  if (arch->in_channels != arch->out_channels)
    return A3_FAIL(A3_ERR_CONFIG,
                   "sampling needs out_channels == in_channels (epsilon prediction); the model "
                   "has %lld and %lld",
                   (long long)arch->out_channels, (long long)arch->in_channels);
  if (o->count <= 0) return A3_OK;
  const int64_t per = arch->in_channels * arch->sample_size * arch->sample_size;
  const int batch = (int)(o->max_batch < o->count ? o->max_batch : o->count);
  if (batch < 1) return A3_FAIL(A3_ERR_INTERNAL, "sampling: max_batch %d < 1", o->max_batch);
  sample_buffers buf;
  a3_status s = alloc_buffers(&buf, a3_unet_backend(m), sched, batch, per, o->steps);
  for (int64_t start = 0; s == A3_OK && start < o->count; start += batch) {
    const int b = (int)(o->count - start < batch ? o->count - start : batch);
    s = sample_chunk(m, sched, o, o->first + start, b, batch, per, &buf, out + start * per);
  }
  free_buffers(&buf);
  A3_TRY(s);
  return A3_OK;
}

// ---------------------------------------------------------------- the sampling backend

a3_status a3_sampling_model_open(const a3_config *cfg, MPI_Comm comm, a3_unet *host, int max_batch,
                                 const char *who, a3_sampling_model *out) {
  memset(out, 0, sizeof *out);
  a3_status s = a3_backend_pick(cfg, comm, &out->device, out->name, sizeof out->name);
  out->model = host;
  out->batch = max_batch > 0 ? max_batch : out->device ? A3_SAMPLE_BATCH_GPU : A3_SAMPLE_BATCH_CPU;
  if (s == A3_OK && out->device) {
    s = a3_unet_build_on(a3_unet_arch(host), a3_unet_get_extras(host), out->device,
                         &out->device_copy);
    if (s == A3_OK) s = a3_unet_copy_params(out->device_copy, host);
    if (s == A3_OK) out->model = out->device_copy;
  }
  s = a3_agree(comm, s, who); // a rank without its GPU: none goes on to sample
  if (s != A3_OK) {
    a3_sampling_model_close(out);
    A3_TRY(s);
  }
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  if (rank == 0)
    a3_info("%s: sampling on %s, %d images per forward pass", who, out->name, out->batch);
  return A3_OK;
}

void a3_sampling_model_close(a3_sampling_model *sm) {
  if (!sm) return;
  a3_unet_free(sm->device_copy);
  a3_backend_cuda_destroy(sm->device);
  memset(sm, 0, sizeof *sm);
}

// ---------------------------------------------------------------- HDF5

static a3_status write_samples(hid_t file, const char *where, const uint8_t *images, int64_t n,
                               int channels, int height, int width, const char *source) {
  const hsize_t dims[4] = {(hsize_t)n, (hsize_t)channels, (hsize_t)height, (hsize_t)width};
  hid_t space = H5Screate_simple(4, dims, NULL);
  hid_t ds =
      H5Dcreate2(file, "samples", H5T_STD_U8LE, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  a3_status s = A3_OK;
  if (ds < 0 ||
      (n > 0 && H5Dwrite(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, images) < 0))
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot write /samples%s", where, a3_h5_detail());
  if (s == A3_OK)
    s = a3_h5_write_string_attr(
        ds, "layout", "(N, C, H, W) uint8: 0 = black (-1), 255 = full intensity (+1)", where);
  if (ds >= 0) H5Dclose(ds);
  H5Sclose(space);
  hid_t root = H5Gopen2(file, "/", H5P_DEFAULT);
  if (s == A3_OK) s = a3_h5_write_string_attr(root, "format", "a3fta-samples", where);
  if (s == A3_OK) s = a3_h5_write_string_attr(root, "source", source ? source : "", where);
  H5Gclose(root);
  return s;
}

a3_status a3_write_samples_h5(const char *path, const uint8_t *images, int64_t n, int channels,
                              int height, int width, const char *source) {
  char tmp[A3_CONFIG_STR_MAX + 8];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  a3_h5_quiet();
  hid_t file = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  if (file < 0) return A3_FAIL(A3_ERR_IO, "cannot create %s%s", tmp, a3_h5_detail());
  a3_status s = write_samples(file, tmp, images, n, channels, height, width, source);
  if (H5Fclose(file) < 0 && s == A3_OK)
    s = A3_FAIL(A3_ERR_HDF5, "%s: cannot close%s", tmp, a3_h5_detail());
  if (s == A3_OK && rename(tmp, path) != 0)
    s = A3_FAIL(A3_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
  if (s != A3_OK) remove(tmp);
  A3_TRY(s);
  return A3_OK;
}

// ---------------------------------------------------------------- PNG grid

typedef struct {
  int cols, rows, width, height; // grid in cells and in pixels
} grid_shape;

static grid_shape grid_for(int64_t n, int h, int w) {
  grid_shape g;
  g.cols = (int)ceil(sqrt((double)n));
  if (g.cols < 1) g.cols = 1;
  g.rows = (int)((n + g.cols - 1) / g.cols);
  if (g.rows < 1) g.rows = 1;
  g.width = g.cols * w + (g.cols + 1) * GRID_GAP;
  g.height = g.rows * h + (g.rows + 1) * GRID_GAP;
  return g;
}

// Interleaved (height, width, C) pixels of the grid; black gaps.
static void fill_grid(const uint8_t *images, int64_t n, int C, int h, int w, grid_shape g,
                      uint8_t *px) {
  for (int64_t i = 0; i < n; i++) {
    const int x0 = GRID_GAP + (int)(i % g.cols) * (w + GRID_GAP);
    const int y0 = GRID_GAP + (int)(i / g.cols) * (h + GRID_GAP);
    const uint8_t *img = images + (size_t)i * C * h * w;
    for (int c = 0; c < C; c++)
      for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
          px[((size_t)(y0 + y) * g.width + x0 + x) * C + c] = img[((size_t)c * h + y) * w + x];
  }
}

a3_status a3_write_png_grid(const char *path, const uint8_t *images, int64_t n, int channels,
                            int height, int width) {
  if (channels != 1 && channels != 3)
    return A3_FAIL(A3_ERR_USAGE, "%s: a PNG grid needs 1 or 3 channels, the images have %d", path,
                   channels);
  const grid_shape g = grid_for(n, height, width);
  uint8_t *px = NULL;
  A3_TRY(a3_alloc((void **)&px, (size_t)g.width * g.height * channels, 1));
  fill_grid(images, n, channels, height, width, g, px);
  const a3_status s = a3_write_png(path, px, g.width, g.height, channels);
  free(px);
  A3_TRY(s);
  return A3_OK;
}

// ---------------------------------------------------------------- from a checkpoint

typedef struct {
  int rank, size;
  int64_t begin, count; // this rank's samples
  int64_t per;          // bytes per image
} shard;

// Rank 0 collects every rank's images (uint8) in sample order.
static a3_status gather(MPI_Comm comm, const shard *sh, int64_t num, const uint8_t *mine,
                        uint8_t *all) {
  if (sh->size == 1) {
    memcpy(all, mine, (size_t)(num * sh->per));
    return A3_OK;
  }
  int *counts = NULL, *displs = NULL;
  A3_TRY(A3_ALLOC(counts, (size_t)sh->size));
  a3_status s = A3_ALLOC(displs, (size_t)sh->size);
  for (int r = 0; s == A3_OK && r < sh->size; r++) {
    int64_t b = 0, e = 0;
    a3_shard_range(num, r, sh->size, &b, &e);
    counts[r] = (int)((e - b) * sh->per);
    displs[r] = (int)(b * sh->per);
  }
  if (s == A3_OK && MPI_Gatherv(mine, (int)(sh->count * sh->per), MPI_UINT8_T, all, counts, displs,
                                MPI_UINT8_T, 0, comm) != MPI_SUCCESS)
    s = A3_FAIL(A3_ERR_MPI, "sample: gathering the images failed");
  free(counts);
  free(displs);
  return s;
}

a3_status a3_sample_gather(MPI_Comm comm, a3_unet *m, const a3_noise_schedule_table *sched,
                           const a3_sample_options *o, int64_t n, uint8_t *all) {
  shard sh;
  MPI_Comm_rank(comm, &sh.rank);
  MPI_Comm_size(comm, &sh.size);
  int64_t end = 0;
  a3_shard_range(n, sh.rank, sh.size, &sh.begin, &end);
  sh.count = end - sh.begin;
  const a3_arch_config *arch = a3_unet_arch(m);
  sh.per = arch->in_channels * arch->sample_size * arch->sample_size;
  a3_sample_options mine_opt = *o;
  mine_opt.first = sh.begin;
  mine_opt.count = sh.count;
  uint8_t *mine = NULL;
  a3_status s = a3_alloc((void **)&mine, (size_t)(sh.count * sh.per) + 1, 1);
  if (s == A3_OK && sh.size > 1 && n * sh.per > INT32_MAX)
    s = A3_FAIL(A3_ERR_USAGE, "sample: %lld images are too many to gather at once", (long long)n);
  if (s == A3_OK) s = a3_sample_images(m, sched, &mine_opt, mine);
  s = a3_agree(comm, s, "sample");
  if (s == A3_OK) s = gather(comm, &sh, n, mine, all);
  free(mine);
  A3_TRY(s);
  return A3_OK;
}

static a3_status write_outputs(const a3_sample_request *req, const char *checkpoint,
                               const uint8_t *all, const a3_arch_config *arch) {
  const int C = (int)arch->in_channels, S = (int)arch->sample_size;
  char source[A3_CONFIG_STR_MAX + 128];
  snprintf(source, sizeof source, "%s (%s, %lld steps, seed %llu)", checkpoint,
           req->sampler == A3_SAMPLER_DDPM ? "ddpm" : "ddim", (long long)req->steps,
           (unsigned long long)req->seed);
  if (req->out_h5) A3_TRY(a3_write_samples_h5(req->out_h5, all, req->num, C, S, S, source));
  if (req->out_png) A3_TRY(a3_write_png_grid(req->out_png, all, req->num, C, S, S));
  return A3_OK;
}

static a3_status sample_loaded(MPI_Comm comm, const char *checkpoint, const a3_sample_request *req,
                               a3_config *cfg, a3_unet *m) {
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  const a3_arch_config *arch = a3_unet_arch(m);
  const int64_t per = arch->in_channels * arch->sample_size * arch->sample_size;
  a3_noise_schedule_table sched = {0};
  A3_TRY(a3_schedule_init(&sched, cfg->train.noise_schedule, cfg->train.num_train_timesteps,
                          A3_BETA_START, A3_BETA_END));
  uint8_t *all = NULL;
  a3_sampling_model sm = {0};
  a3_status s = rank == 0 ? a3_alloc((void **)&all, (size_t)(req->num * per) + 1, 1) : A3_OK;
  s = a3_agree(comm, s, "sample");
  if (s == A3_OK) s = a3_sampling_model_open(cfg, comm, m, req->max_batch, "sample", &sm);
  s = a3_agree(comm, s, "sample");
  const a3_sample_options o = {.sampler = req->sampler,
                               .steps = req->steps > 0 ? req->steps : cfg->eval.sampler_steps,
                               .eta = req->eta,
                               .seed = req->seed,
                               .max_batch = sm.batch};
  if (s == A3_OK) s = a3_sample_gather(comm, sm.model, &sched, &o, req->num, all);
  a3_sampling_model_close(&sm);
  a3_sample_request resolved = *req;
  resolved.steps = o.steps;
  if (s == A3_OK && rank == 0) s = write_outputs(&resolved, checkpoint, all, arch);
  free(all);
  a3_schedule_free(&sched);
  return s;
}

a3_status a3_sample_run(MPI_Comm comm, const a3_config *cfg, int64_t num) {
  char ckpt[A3_CONFIG_STR_MAX + 32], h5[A3_CONFIG_STR_MAX + 32], png[A3_CONFIG_STR_MAX + 32];
  snprintf(ckpt, sizeof ckpt, "%s/checkpoint.h5", cfg->output.dir);
  snprintf(h5, sizeof h5, "%s/" A3_SAMPLES_H5, cfg->output.dir);
  snprintf(png, sizeof png, "%s/" A3_SAMPLES_PNG, cfg->output.dir);
  const a3_sample_request req = {.num = num,
                                 .sampler = cfg->eval.sampler,
                                 .steps = cfg->eval.sampler_steps,
                                 .eta = cfg->eval.eta,
                                 .seed = (uint64_t)cfg->train.seed,
                                 .use_ema = cfg->train.ema,
                                 .out_h5 = h5,
                                 .out_png = png};
  A3_TRY(a3_sample_checkpoint(comm, ckpt, &req));
  return A3_OK;
}

a3_status a3_sample_checkpoint(MPI_Comm comm, const char *checkpoint,
                               const a3_sample_request *req) {
  a3_config cfg;
  a3_unet *m = NULL;
  bool used_ema = false;
  a3_status s = a3_model_checkpoint_load(checkpoint, req->use_ema, &cfg, &m, &used_ema);
  int rank = 0;
  MPI_Comm_rank(comm, &rank);
  if (s == A3_OK && rank == 0)
    a3_info("sample: %lld images from %s (%s weights)", (long long)req->num, checkpoint,
            used_ema ? "EMA" : "raw");
  if (s == A3_OK && req->set_backend) cfg.parallel.backend = req->backend;
  if (s == A3_OK) {
    s = sample_loaded(comm, checkpoint, req, &cfg, m);
    a3_unet_free(m);
    a3_config_free(&cfg);
  }
  // Rank 0 writes: every rank returns the worst status.
  int code = (int)s, worst = 0;
  MPI_Allreduce(&code, &worst, 1, MPI_INT, MPI_MAX, comm);
  A3_TRY(s);
  if (worst != A3_OK) return A3_FAIL((a3_status)worst, "sample: another rank failed");
  return A3_OK;
}
