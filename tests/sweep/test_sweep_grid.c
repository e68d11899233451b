// Sweep points without MPI ranks: expansion order (grid x zip, last key
// fastest, then explicit points), each point's config, the typed columns,
// errors that name the point and key, what the hashes cover, loss curves, point statuses.
#include "sweep_fake.h"

static a3_status plan_of(const char *yaml, a3_sweep_plan **p) {
  a3_config cfg;
  A3_TRY(load_config(yaml, "/tmp/a3fta-grid-test", &cfg));
  a3_status s = a3_sweep_plan_make(&cfg, p);
  a3_config_free(&cfg);
  return s;
}

static const a3_result_column *column(const a3_sweep_plan *p, const char *key) {
  for (int v = 0; v < p->n_varied; v++)
    if (!strcmp(p->columns[v].key, key)) return &p->columns[v];
  return NULL;
}

static void test_order(void) {
  a3_sweep_plan *p = NULL;
  a3_status s = plan_of("train: {steps: 10, warmup: 0}\n"
                        "output: {dir: @DIR@}\n"
                        "sweep:\n"
                        "  grid: {train.seed: [0, 1, 2], strategy.name: [full, lora]}\n"
                        "  zip: {data.hflip: [true, false], data.shots: [10, 100]}\n"
                        "  points: [{train.lr: 0.5}, {}]\n",
                        &p);
  CHECK_MSG(s == A3_OK, "%s", a3_error_message());
  if (s != A3_OK) return;
  // Axes in schema order: zip (data.shots, data.hflip), strategy.name, train.seed (fastest).
  CHECK(p->n_combos == 12 && p->n_points == 14);
  CHECK(p->n_varied == 5);
  const char *want[5] = {"data.shots", "data.hflip", "strategy.name", "train.lr", "train.seed"};
  for (int v = 0; v < 5 && v < p->n_varied; v++)
    CHECK_MSG(!strcmp(p->varied[v], want[v]), "varied[%d] = %s", v, p->varied[v]);
  const a3_result_column *seed = column(p, "train.seed"), *strat = column(p, "strategy.name"),
                         *shots = column(p, "data.shots"), *hflip = column(p, "data.hflip"),
                         *lr = column(p, "train.lr");
  CHECK(seed && strat && shots && hflip && lr);
  if (!(seed && strat && shots && hflip && lr)) return;
  CHECK(seed->type == A3_RESULT_INT64 && strat->type == A3_RESULT_STRING &&
        hflip->type == A3_RESULT_INT64 && lr->type == A3_RESULT_FLOAT64);
  for (int64_t i = 0; i < 12; i++) {
    const int z = (int)(i / 6), st = (int)(i / 3 % 2), sd = (int)(i % 3);
    CHECK_MSG(seed->ints[i] == sd && shots->ints[i] == (z ? 100 : 10) &&
                  hflip->ints[i] == (z ? 0 : 1) &&
                  !strcmp(strat->strings[i], st ? "lora" : "full") && lr->floats[i] == 1e-4,
              "point %lld: seed %lld shots %lld hflip %lld strategy %s", (long long)i,
              (long long)seed->ints[i], (long long)shots->ints[i], (long long)hflip->ints[i],
              strat->strings[i]);
  }
  CHECK(lr->floats[12] == 0.5 && seed->ints[12] == 0 && !strcmp(strat->strings[12], "a3fta"));
  CHECK(lr->floats[13] == 1e-4); // {} is the base config itself
  char label[256];
  a3_sweep_point_label(p, 4, label, sizeof label);
  CHECK_MSG(!strcmp(label, "data.shots=10, data.hflip=true, strategy.name=lora, train.seed=1"),
            "label %s", label);
  a3_config pc;
  s = a3_sweep_point_config(p, 7, &pc);
  CHECK(s == A3_OK);
  if (s == A3_OK) {
    CHECK(!strcmp(pc.output.dir, "/tmp/a3fta-grid-test/point-000007"));
    CHECK(pc.train.seed == 1 && pc.data.shots == 100 && !pc.data.hflip &&
          pc.strategy.name == A3_STRATEGY_FULL);
    CHECK(pc.sweep.grid.n == 0 && pc.sweep.zip.n == 0 && pc.sweep.points.n == 0);
    a3_config_free(&pc);
  }
  CHECK(p->total_steps == 14 * 10);
  CHECK(p->samples == 16 && p->channels == 1 && p->height == 32 && p->width == 32);
  CHECK(p->config_len >= 4096);
  a3_sweep_plan_free(p);
}

static void test_counts(void) {
  a3_sweep_plan *p = NULL;
  CHECK(plan_of("train: {warmup: 0}\n", &p) == A3_OK && p && p->n_points == 1 && p->n_varied == 0);
  a3_sweep_plan_free(p);
  p = NULL;
  CHECK(plan_of("sweep: {points: [{train.seed: 3}, {train.seed: 4}]}\n", &p) == A3_OK && p &&
        p->n_points == 2 && p->n_combos == 0 && column(p, "train.seed")->ints[1] == 4);
  a3_sweep_plan_free(p);
}

static void expect_error(const char *yaml, const char *text) {
  a3_sweep_plan *p = NULL;
  a3_status s = plan_of(yaml, &p);
  CHECK_MSG(s == A3_ERR_CONFIG && strstr(a3_error_message(), text),
            "want config error with '%s', got %d: %s", text, s, a3_error_message());
  CHECK(p == NULL);
  a3_error_clear();
}

static void test_errors(void) {
  // Default steps 1000, warmup 50: warmup 2000 is invalid at point 1 only.
  expect_error("sweep: {grid: {train.warmup: [0, 2000]}}\n",
               "sweep point 1 (train.warmup=2000): train.warmup");
  expect_error("sweep: {grid: {output.dir: [a, b]}}\n", "output.dir cannot be swept");
  expect_error("sweep: {points: [{parallel.ranks_per_run: 2}]}\n",
               "parallel.ranks_per_run cannot be swept");
  expect_error("sweep: {grid: {output.samples_per_run: [1, 2]}}\n",
               "sweep point 1: output.samples_per_run = 2 differs from point 0's 1");
}

static void test_hashes(void) {
  a3_sweep_plan *a = NULL, *b = NULL, *c = NULL, *d = NULL;
  const char *base = "sweep: {grid: {train.lr: [0.1, 0.2]}}\noutput: {dir: @DIR@}\n";
  CHECK(plan_of(base, &a) == A3_OK);
  CHECK(plan_of("sweep: {grid: {train.lr: [0.1, 0.2]}}\noutput: {dir: /elsewhere}\n"
                "parallel: {schedule: static}\n",
                &b) == A3_OK);
  CHECK(plan_of("sweep: {grid: {train.lr: [0.1, 0.3]}}\n", &c) == A3_OK);
  CHECK(plan_of("sweep: {grid: {train.lr: [0.1, 0.2]}}\nparallel: {ranks_per_run: 2}\n", &d) ==
        A3_OK);
  if (a && b && c && d) {
    CHECK(a->sweep_hash == b->sweep_hash); // folder and schedule do not change results
    CHECK(a->agree_hash != b->agree_hash); // but all ranks must agree on them
    CHECK(a->sweep_hash != c->sweep_hash && a->sweep_hash != d->sweep_hash);
  }
  a3_sweep_plan_free(a);
  a3_sweep_plan_free(b);
  a3_sweep_plan_free(c);
  a3_sweep_plan_free(d);
}

static void test_curve(void) {
  static double loss[250];
  for (int i = 0; i < 250; i++) loss[i] = i + 1;
  a3_run_result r;
  a3_run_result_init(&r);
  CHECK(r.status == A3_POINT_DONE && isnan(r.final_loss) && isnan(r.metrics[A3_RESULT_FID]));
  a3_run_result_set_curve(&r, loss, 250); // 3 steps per slot: 84 slots, the last of one step
  CHECK(r.n_curve == 84 && r.curve_step[0] == 3 && r.curve_loss[0] == 2.0);
  CHECK(r.curve_step[83] == 250 && r.curve_loss[83] == 250.0);
  a3_run_result_set_curve(&r, loss, 7);
  CHECK(r.n_curve == 7 && r.curve_step[6] == 7 && r.curve_loss[6] == 7.0);
  a3_run_result_set_curve(&r, loss, 0);
  CHECK(r.n_curve == 0);
}

// Point statuses: names, which a resume runs, the --status list.
static void test_point_status(void) {
  CHECK(!strcmp(a3_point_status_name(A3_POINT_DIVERGED), "diverged"));
  CHECK(!strcmp(a3_point_status_name(7), "?"));
  CHECK(a3_point_failed(A3_POINT_DIVERGED) && a3_point_failed(A3_POINT_FAILED));
  CHECK(!a3_point_failed(A3_POINT_DONE) && !a3_point_failed(A3_POINT_RUNNING));
  CHECK(a3_point_to_run(A3_POINT_PENDING, 0, false) && a3_point_to_run(A3_POINT_RUNNING, 1, false));
  CHECK(a3_point_to_run(A3_POINT_FAILED, A3_RESULT_MAX_ATTEMPTS - 1, false));
  CHECK(!a3_point_to_run(A3_POINT_FAILED, A3_RESULT_MAX_ATTEMPTS, false));
  CHECK(!a3_point_to_run(A3_POINT_DIVERGED, 1, false) && !a3_point_to_run(A3_POINT_DONE, 1, false));
  unsigned mask = 0;
  CHECK(a3_point_status_mask("failed,diverged", &mask) == A3_OK &&
        mask == (1u << A3_POINT_FAILED | 1u << A3_POINT_DIVERGED));
  CHECK(a3_point_status_mask("done", &mask) == A3_OK && mask == 1u << A3_POINT_DONE);
  const char *bad[] = {"", "done,", "faild", "done,,failed", "failed diverged"};
  for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
    CHECK_MSG(a3_point_status_mask(bad[k], &mask) == A3_ERR_USAGE, "'%s' accepted", bad[k]);
    a3_error_clear();
  }
}

int main(void) {
  test_point_status();
  test_order();
  test_counts();
  test_errors();
  test_hashes();
  test_curve();
  return TEST_DONE("test_sweep_grid");
}
