// One sweep point on its group of ranks: train (resuming the point's own
// earlier attempt), read back its losses, evaluate, sample, and drop its
// weights when output.save_weights is false; everything lands in the
// a3_run_result the sweep engine records.
#define _POSIX_C_SOURCE 200809L
#include "cli/sweep_point.h"

#include "a3fta/dist.h"
#include "a3fta/eval.h"
#include "a3fta/strategy.h"
#include "a3fta/trainer.h"

#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { PATH_CAP = A3_CONFIG_STR_MAX + 32 };

// ---------------------------------------------------------------- one point
// Resume a point's training only from its own earlier attempt: the folder's
// config.yaml (written by a3_train) must be this point's config.
static a3_status same_config_on_disk(const a3_config *pc, bool *same) {
  char path[PATH_CAP], *mine = NULL, *disk = NULL;
  snprintf(path, sizeof path, "%s/config.yaml", pc->output.dir);
  *same = false;
  if (access(path, F_OK) != 0) return A3_OK;
  A3_TRY(a3_config_to_yaml(pc, &mine, NULL));
  if (a3_read_file(path, A3_CONFIG_MAX_BYTES, &disk, NULL) == A3_OK)
    *same = !strcmp(mine, disk);
  else
    a3_error_clear();
  free(mine);
  free(disk);
  return A3_OK;
}

// The held-out loss of a losses.csv row's rest after "step,": "loss,lr,heldout"
// (heldout empty where it was not evaluated, absent in older files); NaN if none.
static double row_heldout(const char *rest) {
  const char *lr = strchr(rest, ',');
  const char *held = lr ? strchr(lr + 1, ',') : NULL;
  if (!held || !held[1]) return NAN;
  char *end = NULL;
  const double v = strtod(held + 1, &end);
  return end != held + 1 ? v : NAN;
}

// losses.csv ("step,loss,lr,heldout") -> the loss curve, final loss,
// divergence, the held-out curve.
static a3_status read_losses(const a3_config *pc, a3_run_result *r) {
  char path[PATH_CAP], *text = NULL;
  snprintf(path, sizeof path, "%s/losses.csv", pc->output.dir);
  A3_TRY(a3_read_file(path, (size_t)1 << 30, &text, NULL));
  const int64_t n = pc->train.steps;
  double *loss = NULL, *held = NULL;
  int64_t *held_step = NULL, n_held = 0;
  a3_status s = a3_alloc((void **)&loss, (size_t)n + 1, sizeof *loss);
  if (s == A3_OK) s = a3_alloc((void **)&held, (size_t)n + 1, sizeof *held);
  if (s == A3_OK) s = a3_alloc((void **)&held_step, (size_t)n + 1, sizeof *held_step);
  for (int64_t i = 0; s == A3_OK && i < n; i++) loss[i] = held[i] = NAN;
  int64_t last = 0;
  for (char *line = text; s == A3_OK && line && *line;) {
    char *next = strchr(line, '\n');
    if (next) *next++ = '\0';
    char *end = NULL;
    const long long step = strtoll(line, &end, 10);
    if (end != line && *end == ',' && step >= 1 && step <= n) {
      loss[step - 1] = strtod(end + 1, NULL);
      held[step - 1] = row_heldout(end + 1);
      if (step > last) last = step;
    }
    line = next;
  }
  for (int64_t i = 0; s == A3_OK && i < last; i++)
    if (!isnan(held[i])) {
      held_step[n_held] = i + 1;
      held[n_held++] = held[i]; // n_held <= i: compacting in place
    }
  if (s == A3_OK) {
    a3_run_result_set_heldout(r, held_step, held, n_held);
    a3_run_result_set_curve(r, loss, last);
    r->final_loss = last > 0 ? loss[last - 1] : NAN;
    for (int64_t i = 0; i < last; i++)
      if (!isfinite(loss[i])) {
        r->status = A3_POINT_DIVERGED;
        snprintf(r->reason, sizeof r->reason, "training diverged: loss is %g at step %lld", loss[i],
                 (long long)i + 1);
        break;
      }
    if (!a3_point_failed(r->status) && last < n) {
      r->status = A3_POINT_FAILED;
      snprintf(r->reason, sizeof r->reason, "losses.csv has losses for %lld of %lld steps",
               (long long)last, (long long)n);
    }
  }
  free(loss);
  free(held);
  free(held_step);
  free(text);
  return s;
}

// samples.h5 (/samples (N, C, H, W) uint8) -> the result's sample slots.
static a3_status read_samples(const char *path, a3_run_result *r) {
  hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
  if (f < 0) return A3_FAIL(A3_ERR_IO, "cannot open %s", path);
  hid_t ds = H5Dopen2(f, "samples", H5P_DEFAULT);
  a3_status s = A3_OK;
  hsize_t dims[4] = {0};
  if (ds < 0) {
    s = A3_FAIL(A3_ERR_INPUT, "%s: no /samples", path);
  } else {
    hid_t space = H5Dget_space(ds);
    const int nd = H5Sget_simple_extent_ndims(space);
    H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    if (nd != 4 || dims[0] > (hsize_t)r->samples_cap || dims[1] != (hsize_t)r->channels ||
        dims[2] != (hsize_t)r->height || dims[3] != (hsize_t)r->width)
      s = A3_FAIL(A3_ERR_INPUT, "%s: /samples has another shape than the results file's slots",
                  path);
    else if (H5Dread(ds, H5T_NATIVE_UINT8, H5S_ALL, H5S_ALL, H5P_DEFAULT, r->samples) < 0)
      s = A3_FAIL(A3_ERR_IO, "cannot read %s", path);
    else
      r->n_samples = (int)dims[0];
    H5Dclose(ds);
  }
  H5Fclose(f);
  return s;
}

// ---------------------------------------------------------------- evaluation
// The rank-0 part of a finished evaluation: metrics into the row, eval.json,
// and (keep) its first images as the point's samples (samples.h5/png).
static a3_status store_eval(const a3_config *pc, const char *ckpt, const a3_eval_report *rep,
                            bool keep, a3_run_result *r) {
  for (int i = 0; i < A3_RESULT_N_METRICS; i++)
    if (i != A3_RESULT_HELDOUT_LOSS) r->metrics[i] = rep->metrics[i];
  r->n_memorized = rep->n_top < A3_RESULT_MEMORIZED_MAX ? rep->n_top : A3_RESULT_MEMORIZED_MAX;
  for (int k = 0; k < r->n_memorized; k++) {
    memcpy(r->memorized[k], rep->top_pixels[k], sizeof r->memorized[k]);
    r->memorized_d1[k] = rep->top[k].d1;
    r->memorized_d2[k] = rep->top[k].d2;
  }
  char path[PATH_CAP];
  snprintf(path, sizeof path, "%s/eval.json", pc->output.dir);
  A3_TRY(a3_eval_write_json(rep, ckpt, path));
  if (!keep) return A3_OK;
  const int64_t n = rep->n_images, S = rep->image_size;
  memcpy(r->samples, rep->images, (size_t)(n * S * S));
  r->n_samples = (int)n;
  char source[PATH_CAP + 128];
  snprintf(source, sizeof source, "%s (%s, %lld steps, seed %llu)", ckpt,
           rep->sampler == A3_SAMPLER_DDPM ? "ddpm" : "ddim", (long long)rep->sampler_steps,
           (unsigned long long)rep->seed);
  snprintf(path, sizeof path, "%s/samples.h5", pc->output.dir);
  A3_TRY(a3_write_samples_h5(path, rep->images, n, 1, (int)S, (int)S, source));
  snprintf(path, sizeof path, "%s/samples.png", pc->output.dir);
  A3_TRY(a3_write_png_grid(path, rep->images, n, 1, (int)S, (int)S));
  return A3_OK;
}

// Evaluates the point's checkpoint (a3fta/eval.h) when eval.metrics names
// metrics it computes: exactly `a3fta eval CHECKPOINT` with the group's ranks
// (eval.samples images, seed train.seed), the metrics eval.metrics names into
// the row, eval.json and memorized.png beside the checkpoint. When it draws
// at least output.samples_per_run images, the first ones are the point's
// samples (the same images the separate sampling would draw: same noise,
// sampler and weights), *got_samples. A failed evaluation fails the point with
// its reason and keeps the training results. Models the feature network
// cannot evaluate (not 1 channel at 28 or 32 pixels) are skipped with one
// warning: their metrics stay NaN.
static a3_status eval_point(const a3_config *pc, MPI_Comm group, int grank,
                            const a3_sweep_point_options *ctx, a3_run_result *r,
                            bool *got_samples) {
  *got_samples = false;
  const unsigned set = a3_eval_metric_set(pc);
  if (!ctx->eval || !set || pc->eval.samples <= 0) return A3_OK;
  char why[256];
  if (!a3_eval_supported(pc, why, sizeof why)) {
    static bool warned = false; // once per process
    if (grank == 0 && !warned)
      a3_warn("sweep: points are not evaluated (their metrics stay NaN): %s; eval.metrics: [] "
              "or --no-eval turns the evaluation off",
              why);
    warned = true;
    return A3_OK;
  }
  const int S = (int)pc->model.arch.sample_size;
  const bool keep = ctx->samples && r->samples_cap > 0 && pc->eval.samples >= r->samples_cap &&
                    r->channels == 1 && r->height == S && r->width == S;
  char ckpt[PATH_CAP], png[PATH_CAP];
  snprintf(ckpt, sizeof ckpt, "%s/checkpoint.h5", pc->output.dir);
  snprintf(png, sizeof png, "%s/memorized.png", pc->output.dir);
  const bool memo = (set & A3_EVAL_METRIC_BIT(A3_METRIC_MEMORIZATION)) != 0;
  const a3_eval_options o = {.num_samples = pc->eval.samples,
                             .seed = A3_EVAL_SEED_TRAIN,
                             .metrics = set,
                             .keep_images = keep ? r->samples_cap : 0,
                             .memorized_png = memo ? png : NULL};
  a3_eval_report rep;
  a3_status s = a3_eval_checkpoint(group, ckpt, &o, &rep);
  const bool have_report = s == A3_OK; // a failed evaluation freed its report
  if (s == A3_OK && grank == 0) s = store_eval(pc, ckpt, &rep, keep, r);
  if (s == A3_OK && grank == 0)
    a3_info("point %lld: evaluated %lld samples in %.1f s + %.1f s (FID %.4g, memorization %.4g)",
            (long long)r->point, (long long)rep.n_samples, rep.sampling_s, rep.metrics_s,
            rep.metrics[A3_RESULT_FID], rep.metrics[A3_RESULT_MEMORIZATION]);
  if (have_report) a3_eval_report_free(&rep);
  int code = (int)s;
  MPI_Bcast(&code, 1, MPI_INT, 0, group);
  if (code != A3_OK) {
    r->status = A3_POINT_FAILED;
    snprintf(r->reason, sizeof r->reason, "evaluation failed: %s: %s",
             a3_status_name((a3_status)code),
             grank == 0 ? a3_error_message() : "on the group's first rank");
    if (grank == 0) a3_warn("point %lld: %s", (long long)r->point, r->reason);
    a3_error_clear();
    return A3_OK;
  }
  *got_samples = keep;
  return A3_OK;
}

// The parameters the point's strategy trains and all of its model's (what
// `a3fta info --model` and the trainer's log line count).
static a3_status count_params(const a3_config *pc, a3_run_result *r) {
  a3_unet *m = NULL;
  a3_strategy_stats st = {0};
  a3_status s = a3_strategy_build_model(pc, &m);
  if (s == A3_OK) s = a3_strategy_apply(m, pc->strategy.name, &st);
  a3_unet_free(m);
  A3_TRY(s);
  r->trainable_params = (int64_t)st.trainable_params;
  r->total_params = (int64_t)st.params;
  return A3_OK;
}

a3_status a3_sweep_train_point(const a3_config *pc, MPI_Comm group, a3_run_result *r, void *vctx) {
  const a3_sweep_point_options *ctx = vctx;
  int grank = 0;
  MPI_Comm_rank(group, &grank);
  bool resume = false;
  a3_status s = grank == 0 ? same_config_on_disk(pc, &resume) : A3_OK;
  A3_TRY(a3_agree(group, s, "checking the point's folder"));
  int flag = resume;
  MPI_Bcast(&flag, 1, MPI_INT, 0, group);
  const a3_train_options opt = {.resume = flag != 0};
  a3_train_result tr;
  A3_TRY(a3_train(pc, group, &opt, &tr));
  r->compute_s = tr.seconds;
  r->step_compute_s = tr.timing.compute_s; // this rank's; the engine gathers the group's
  r->step_comm_s = tr.timing.comm_s;
  r->steps = tr.timing.steps;
  r->grad_bytes = tr.timing.grad_bytes;
  r->final_loss = tr.last_loss;
  r->metrics[A3_RESULT_HELDOUT_LOSS] = tr.final_heldout_loss; // NaN without eval.heldout_every
  s = grank == 0 ? read_losses(pc, r) : A3_OK;
  if (s == A3_OK && grank == 0) s = count_params(pc, r);
  A3_TRY(a3_agree(group, s, "reading the point's losses and parameter counts"));
  int failed = a3_point_failed(r->status);
  MPI_Bcast(&failed, 1, MPI_INT, 0, group);
  if (failed) return A3_OK;
  bool got_samples = false;
  A3_TRY(eval_point(pc, group, grank, ctx, r, &got_samples));
  if (a3_point_failed(r->status)) return A3_OK; // its checkpoint stays, for a retry
  if (!got_samples && ctx->samples && r->samples_cap > 0) {
    A3_TRY(a3_sample_run(group, pc, r->samples_cap));
    char h5[PATH_CAP];
    snprintf(h5, sizeof h5, "%s/" A3_SAMPLES_H5, pc->output.dir);
    s = grank == 0 ? read_samples(h5, r) : A3_OK;
    A3_TRY(a3_agree(group, s, "reading the point's samples"));
  }
  return a3_run_drop_weights(group, pc);
}
