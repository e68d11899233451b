// An evaluation report as a table and as JSON (a3fta/eval.h).
#define _POSIX_C_SOURCE 200809L
#include "a3fta/eval.h"

#include "a3fta/features.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

static const char *sampler_name(a3_sampler s) { return s == A3_SAMPLER_DDPM ? "ddpm" : "ddim"; }

// Metrics in table order, with what each compares.
static const struct {
  int slot;
  const char *what;
} rows[] = {
    {A3_RESULT_FID, "samples vs reference, features (lower is better)"},
    {A3_RESULT_KID_MEAN, "samples vs reference, features (lower is better)"},
    {A3_RESULT_KID_STD, "over the KID subsets"},
    {A3_RESULT_PRECISION, "samples inside the reference manifold"},
    {A3_RESULT_RECALL, "reference inside the samples' manifold"},
    {A3_RESULT_DENSITY, "precision counting neighbourhoods"},
    {A3_RESULT_COVERAGE, "reference neighbourhoods holding a sample"},
    {A3_RESULT_DIVERSITY, "mean pairwise feature distance of the samples"},
    {A3_RESULT_INTRA_CLUSTER_DIVERSITY, "the same within clusters of the nearest training image"},
    {A3_RESULT_MEMORIZATION, "fraction with d1 < d2/3 to the training images (pixels)"},
};
enum { N_ROWS = sizeof rows / sizeof rows[0] };

static void classes_text(const a3_config *cfg, char *buf, size_t cap) {
  size_t k = 0;
  buf[0] = '\0';
  for (int i = 0; i < cfg->data.n_classes && k + 24 < cap; i++)
    k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "",
                          (long long)cfg->data.classes[i]);
}

void a3_eval_print(const a3_eval_report *r, const char *checkpoint, FILE *f) {
  const a3_config *cfg = &r->cfg;
  char cls[256];
  classes_text(cfg, cls, sizeof cls);
  fprintf(f, "eval: %s (%s weights)\n", checkpoint, r->used_ema ? "EMA" : "raw");
  fprintf(f, "  samples    %lld, %s %lld steps, eta %g, seed %llu (%.1f s)\n",
          (long long)r->n_samples, sampler_name(r->sampler), (long long)r->sampler_steps, r->eta,
          (unsigned long long)r->seed, r->sampling_s);
  fprintf(f, "  reference  %lld test images of classes [%s] of %s\n", (long long)r->n_reference,
          cls, cfg->data.path);
  fprintf(f, "  training   %lld images: split %s, classes [%s], shots %lld, subset_seed %lld\n",
          (long long)r->n_train, cfg->data.split == A3_SPLIT_TEST ? "test" : "train", cls,
          (long long)cfg->data.shots, (long long)cfg->data.subset_seed);
  fprintf(f, "  features   %s (%s)\n", A3_FEATNET_NAME, r->features);
  fprintf(f, "\n  %-24s %12s  %s\n", "metric", "value", "");
  for (int i = 0; i < N_ROWS; i++) {
    const double v = r->metrics[rows[i].slot];
    if (isnan(v))
      fprintf(f, "  %-24s %12s  %s\n", a3_result_metric_name(rows[i].slot), "-", rows[i].what);
    else
      fprintf(f, "  %-24s %12.6g  %s\n", a3_result_metric_name(rows[i].slot), v, rows[i].what);
  }
  if (!isnan(r->metrics[A3_RESULT_MEMORIZATION]))
    fprintf(f,
            "\n  memorized %lld of %lld samples; closest d1/d2: %.4f (sample %lld, training "
            "image %lld)\n",
            (long long)r->n_memorized, (long long)r->n_samples,
            r->n_top > 0 && r->top[0].d2 > 0 ? r->top[0].d1 / r->top[0].d2 : 0.0,
            r->n_top > 0 ? (long long)r->top[0].sample : -1LL,
            r->n_top > 0 ? (long long)r->top[0].train_index : -1LL);
  fprintf(f, "  metrics computed in %.1f s\n", r->metrics_s);
}

// ---------------------------------------------------------------- JSON
static void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    const unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\')
      fprintf(f, "\\%c", c);
    else if (c < 0x20)
      fprintf(f, "\\u%04x", c);
    else
      fputc(c, f);
  }
  fputc('"', f);
}

// %.17g: every double reads back exactly; NaN and infinities as null.
static void json_number(FILE *f, double v) {
  if (isfinite(v))
    fprintf(f, "%.17g", v);
  else
    fputs("null", f);
}

static void write_json(FILE *f, const a3_eval_report *r, const char *checkpoint) {
  const a3_config *cfg = &r->cfg;
  fputs("{\n  \"checkpoint\": ", f);
  json_string(f, checkpoint);
  fprintf(f, ",\n  \"weights\": \"%s\",\n  \"samples\": %lld,\n  \"seed\": %llu,\n",
          r->used_ema ? "ema" : "raw", (long long)r->n_samples, (unsigned long long)r->seed);
  fprintf(f, "  \"sampler\": \"%s\",\n  \"sampler_steps\": %lld,\n  \"eta\": ",
          sampler_name(r->sampler), (long long)r->sampler_steps);
  json_number(f, r->eta);
  fprintf(f, ",\n  \"feature_network\": {\"name\": \"%s\", \"path\": ", A3_FEATNET_NAME);
  json_string(f, r->features);
  fputs("},\n  \"data\": {\"path\": ", f);
  json_string(f, cfg->data.path);
  fputs(", \"classes\": [", f);
  for (int i = 0; i < cfg->data.n_classes; i++)
    fprintf(f, "%s%lld", i ? ", " : "", (long long)cfg->data.classes[i]);
  fprintf(f,
          "], \"reference_split\": \"test\", \"n_reference\": %lld, \"train_split\": \"%s\", "
          "\"shots\": %lld, \"subset_seed\": %lld, \"n_train\": %lld},\n",
          (long long)r->n_reference, cfg->data.split == A3_SPLIT_TEST ? "test" : "train",
          (long long)cfg->data.shots, (long long)cfg->data.subset_seed, (long long)r->n_train);
  fputs("  \"metrics\": {", f);
  for (int i = 0; i < A3_RESULT_N_METRICS; i++) {
    if (i == A3_RESULT_HELDOUT_LOSS) continue;
    fprintf(f, "%s\n    \"%s\": ", i ? "," : "", a3_result_metric_name(i));
    json_number(f, r->metrics[i]);
  }
  fprintf(f,
          "\n  },\n  \"details\": {\"kid_subsets\": %lld, \"kid_subset_size\": %lld, "
          "\"prdc_k\": %lld, \"memorization_ratio\": %d, \"n_memorized\": %lld, "
          "\"intra_cluster_clusters\": %lld, \"fid_mean_dist2\": ",
          (long long)r->kid_subsets, (long long)r->kid_subset_size, (long long)r->prdc_k,
          A3_EVAL_MEMO_RATIO, (long long)r->n_memorized, (long long)r->n_clusters);
  json_number(f, r->fid_mean_dist2);
  fputs(", \"fid_trace_sqrt\": ", f);
  json_number(f, r->fid_trace_sqrt);
  fputs(", \"fid_clamped_rel\": ", f);
  json_number(f, r->fid_clamped_rel);
  fputs("},\n  \"most_memorized\": [", f);
  for (int k = 0; k < r->n_top; k++) {
    fprintf(f, "%s\n    {\"sample\": %lld, \"train_index\": %lld, \"d1\": ", k ? "," : "",
            (long long)r->top[k].sample, (long long)r->top[k].train_index);
    json_number(f, r->top[k].d1);
    fputs(", \"d2\": ", f);
    json_number(f, r->top[k].d2);
    fputs(", \"d1_over_d2\": ", f);
    json_number(f, r->top[k].d2 > 0 ? r->top[k].d1 / r->top[k].d2 : 0.0);
    fputc('}', f);
  }
  fputs(r->n_top ? "\n  ],\n" : "],\n", f);
  fputs("  \"seconds\": {\"sampling\": ", f);
  json_number(f, r->sampling_s);
  fputs(", \"metrics\": ", f);
  json_number(f, r->metrics_s);
  fputs("}\n}\n", f);
}

a3_status a3_eval_write_json(const a3_eval_report *r, const char *checkpoint, const char *path) {
  char tmp[A3_CONFIG_STR_MAX + 16];
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  FILE *f = fopen(tmp, "w");
  if (!f) return A3_FAIL(A3_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
  write_json(f, r, checkpoint);
  const bool bad = ferror(f) != 0;
  if (fclose(f) != 0 || bad) {
    remove(tmp);
    return A3_FAIL(A3_ERR_IO, "cannot write %s (disk full?)", tmp);
  }
  A3_TRY(a3_publish_file(tmp, path));
  return A3_OK;
}
