// The NCCL gradient sum (a3fta/comm.h) and the trainer's choice of sum.
//
//   test_cuda_nccl --cpu     what needs no GPU (CI, any number of ranks):
//     A3FTA_GRAD_COMM's parsing and the choice of sum; a3_grad_comm_create_nccl
//     refusing a CPU backend (or a build without CUDA) with a message and no
//     communicator, on every rank; the watchdog's wait with a limit (done,
//     failed, timed out, never spinning a core) and the agreement of the
//     ranks after a failure (all arrive; one alone gives up after its
//     grace); the trainer refusing A3FTA_GRAD_COMM=nccl on the CPU and bad
//     values, and A3FTA_GRAD_COMM=mpi giving the same losses as unset; and
//     the harness of check 1 below on the CPU backend, the MPI communicator
//     standing in for NCCL.
//   test_cuda_nccl           on the GPUs: 1 rank, or N ranks under mpirun with
//     N GPUs (rank r takes GPU local rank mod visible), exit 77 (skipped)
//     without a usable GPU:
//     1. for bucket sizes 4 B .. 2^40 B, the trainer's pieces of the tiny
//        U-Net under a3fta (real stages; frozen parameters, NaN, between
//        them): a step whose stages reach the device as asynchronous
//        accumulates on the compute stream, each reported after its own (a
//        bucket packed before its stage's values landed would miss them), and
//        a step with no reports; the sums against the MPI communicator's on
//        the same host values (1 and 2 ranks bitwise: the inputs, a + b; more
//        to fp32 rounding), the gaps still NaN, the two steps bitwise alike;
//        each size after the first takes over the communicator the one
//        before left; then rank 0 leaves one of MPI_COMM_SELF behind, and
//        the next sum on WORLD must make a new one (1 rank: take it over);
//     2. the trainer on the GPU (parallel.backend cuda): A3FTA_GRAD_COMM=nccl
//        against mpi (1 rank: no sum at all): losses bitwise equal for 1 and
//        2 ranks, to 1e-6 relative for more;
//     3. the watchdog: 2 s limit, the compute stream busy for ~8 s before the
//        sums can start: finish returns at once, and settle times out on
//        every rank, aborts, returns A3_ERR_CUDA naming rank, host, bucket
//        and parallel.nccl_timeout_s; a new communicator (not the aborted
//        one) then sums correctly. (On the CUDA emulator, tests/cuda_emu, the
//        compute stream is held back 8 s instead of the GEMMs, and the
//        emulator's single device takes any number of ranks.)
//   test_cuda_nccl --peer-missing   (2 ranks, through peer_missing_check.sh:
//     tests/gpu/run.sh on 2+ GPUs, CTest on the CUDA emulator) rank 1 never
//     starts its sums: rank 0's watchdog must abort the MPI job
//     (the 2 s limit plus A3FTA_ABORT_GRACE_S after it): this program exits non-zero
//     and the log says "aborting the MPI job"; exit 3 if it ever returns.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/backend.h"
#include "a3fta/comm.h"
#include "a3fta/strategy.h"
#include "a3fta/trainer.h"
#include "dist/grad_comm_internal.h"
#include "io/io_test_util.h"
#include "test_util.h"
#include "trainer/trainer_test_util.h"
#ifdef A3FTA_HAVE_CUDA
#include "a3fta/cuda_probe.h"
#endif

#include <float.h>
#include <math.h>
#include <mpi.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum { STAGES = 64 }; // at least the tiny U-Net's backward stages

static int rank = 0, size = 1;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static bool has(const char *text, const char *part) { return strstr(text, part) != NULL; }

// ================================================================ CPU checks

static void check_kind(void) {
  a3_grad_comm_kind k = A3_GRAD_COMM_NONE;
  CHECK(a3_grad_comm_kind_parse(NULL, &k) == A3_OK && k == A3_GRAD_COMM_AUTO);
  CHECK(a3_grad_comm_kind_parse("", &k) == A3_OK && k == A3_GRAD_COMM_AUTO);
  CHECK(a3_grad_comm_kind_parse("mpi", &k) == A3_OK && k == A3_GRAD_COMM_MPI);
  CHECK(a3_grad_comm_kind_parse("nccl", &k) == A3_OK && k == A3_GRAD_COMM_NCCL);
  const char *bad[] = {"NCCL", "gloo", "mpi ", "auto"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    a3_error_clear();
    CHECK(a3_grad_comm_kind_parse(bad[i], &k) == A3_ERR_CONFIG);
    CHECK_MSG(has(a3_error_message(), "A3FTA_GRAD_COMM") && has(a3_error_message(), bad[i]) &&
                  has(a3_error_message(), "mpi or nccl"),
              "%s", a3_error_message());
  }
  a3_error_clear();
  static const struct {
    a3_grad_comm_kind asked;
    int ranks;
    bool gpu;
    a3_status s;
    a3_grad_comm_kind use;
  } cases[] = {
      {A3_GRAD_COMM_AUTO, 1, true, A3_OK, A3_GRAD_COMM_NONE},
      {A3_GRAD_COMM_AUTO, 1, false, A3_OK, A3_GRAD_COMM_NONE},
      {A3_GRAD_COMM_AUTO, 2, true, A3_OK, A3_GRAD_COMM_NCCL},
      {A3_GRAD_COMM_AUTO, 4, false, A3_OK, A3_GRAD_COMM_MPI},
      {A3_GRAD_COMM_MPI, 1, true, A3_OK, A3_GRAD_COMM_NONE},
      {A3_GRAD_COMM_MPI, 2, true, A3_OK, A3_GRAD_COMM_MPI},
      {A3_GRAD_COMM_NCCL, 1, true, A3_OK, A3_GRAD_COMM_NCCL},
      {A3_GRAD_COMM_NCCL, 3, true, A3_OK, A3_GRAD_COMM_NCCL},
      {A3_GRAD_COMM_NCCL, 1, false, A3_ERR_CONFIG, A3_GRAD_COMM_NONE},
      {A3_GRAD_COMM_NCCL, 2, false, A3_ERR_CONFIG, A3_GRAD_COMM_MPI},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    a3_grad_comm_kind use = A3_GRAD_COMM_AUTO;
    const a3_status s = a3_grad_comm_choose(cases[i].asked, cases[i].ranks, cases[i].gpu, &use);
    CHECK_MSG(s == cases[i].s && (s != A3_OK || use == cases[i].use),
              "case %zu: %s on %d ranks (GPU %d) -> status %d, %s", i,
              a3_grad_comm_kind_name(cases[i].asked), cases[i].ranks, cases[i].gpu, (int)s,
              a3_grad_comm_kind_name(use));
    if (s != A3_OK) CHECK(has(a3_error_message(), "A3FTA_GRAD_COMM=nccl"));
    a3_error_clear();
  }
}

// A CPU backend (or a build without CUDA): an error on every rank, no comm.
static void check_create_refuses_cpu(void) {
  const a3_grad_piece pieces[2] = {{0, 10, 0}, {12, 5, 1}};
  a3_grad_comm *c = (a3_grad_comm *)&c; // must be reset
  a3_error_clear();
  const a3_status s =
      a3_grad_comm_create_nccl(MPI_COMM_WORLD, a3_backend_cpu(), pieces, 2, 16, 5.0, &c);
  CHECK(c == NULL);
#ifdef A3FTA_HAVE_CUDA
  CHECK_MSG(s == A3_ERR_CUDA && has(a3_error_message(), "needs a CUDA backend") &&
                has(a3_error_message(), "cpu"),
            "status %d: %s", (int)s, a3_error_message());
#else
  CHECK_MSG(s == A3_ERR_UNIMPLEMENTED && has(a3_error_message(), "without"), "status %d: %s",
            (int)s, a3_error_message());
#endif
  a3_error_clear();
}

typedef struct {
  int polls, done_at, fail_at; // poll n (from 1) answers done / failed; 0: never
} fake;

static int fake_poll(void *ctx) {
  fake *f = ctx;
  f->polls++;
  if (f->fail_at && f->polls >= f->fail_at) return -1;
  return f->done_at && f->polls >= f->done_at;
}

static void check_watch(void) {
  fake f = {0, 3, 0};
  CHECK(a3_grad_comm_watch(fake_poll, &f, 10.0) == A3_WATCH_DONE && f.polls == 3);
  f = (fake){0, 0, 2};
  CHECK(a3_grad_comm_watch(fake_poll, &f, 10.0) == A3_WATCH_FAILED && f.polls == 2);
  f = (fake){0, 1, 0};
  CHECK(a3_grad_comm_watch(fake_poll, &f, 0.0) == A3_WATCH_DONE && f.polls == 1);
  f = (fake){0, 0, 0};
  CHECK(a3_grad_comm_watch(fake_poll, &f, 0.0) == A3_WATCH_TIMEOUT && f.polls == 1);
  f = (fake){0, 0, 0};
  const double t0 = now_s();
  CHECK(a3_grad_comm_watch(fake_poll, &f, 0.2) == A3_WATCH_TIMEOUT);
  const double waited = now_s() - t0;
  // Sleeps of up to 1 ms between polls: 0.2 s take a few hundred polls, not millions.
  CHECK_MSG(waited >= 0.2 && waited < 5.0 && f.polls >= 2 && f.polls <= 2000,
            "0.2 s limit: waited %.3f s, %d polls", waited, f.polls);
}

// All ranks arrive; then rank 0 alone gives up after its grace, and the
// others complete its barrier later (so that nothing is left pending).
static void check_peers(void) {
  MPI_Request pending = MPI_REQUEST_NULL;
  CHECK(a3_grad_comm_peers_arrive(MPI_COMM_WORLD, 60.0, &pending));
  if (size < 2) return;
  MPI_Comm dup;
  MPI_Comm_dup(MPI_COMM_WORLD, &dup);
  if (rank == 0) {
    const double t0 = now_s();
    CHECK(!a3_grad_comm_peers_arrive(dup, 0.3, &pending));
    const double waited = now_s() - t0;
    CHECK_MSG(waited >= 0.3 && waited < 10.0, "waited %.3f s for 0.3 s", waited);
    CHECK(pending != MPI_REQUEST_NULL);
  }
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank != 0) {
    MPI_Request mine = MPI_REQUEST_NULL;
    CHECK(a3_grad_comm_peers_arrive(dup, 60.0, &mine));
  } else if (pending != MPI_REQUEST_NULL) {
    MPI_Wait(&pending, MPI_STATUS_IGNORE);
  }
  MPI_Comm_free(&dup);
}

// ---------------------------------------------------------------- the trainer's choice

typedef struct {
  char dir[4096], data[4200];
} train_env;

static bool train_env_make(train_env *e) {
  tt_shared_temp_dir(MPI_COMM_WORLD, "nccl", e->dir, sizeof e->dir);
  snprintf(e->data, sizeof e->data, "%s/data.h5", e->dir);
  int ok = e->dir[0] != '\0';
  if (rank == 0 && ok) ok = tt_make_dataset(e->data) == 0;
  MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return ok;
}

static void train_env_free(train_env *e) {
  MPI_Barrier(MPI_COMM_WORLD);
  if (rank == 0 && e->dir[0]) io_remove_tree(e->dir);
}

// Trains the tiny run with A3FTA_GRAD_COMM = comm (NULL: unset); 0 on success.
static int train_with(const train_env *e, const char *comm, const char *backend, const char *tag,
                      tt_losses *l) {
  if (comm)
    setenv("A3FTA_GRAD_COMM", comm, 1);
  else
    unsetenv("A3FTA_GRAD_COMM");
  char out[4300], be_o[64];
  snprintf(out, sizeof out, "%s/%s", e->dir, tag);
  snprintf(be_o, sizeof be_o, "parallel.backend=%s", backend);
  const char *const extra[] = {"train.steps=6", "train.batch_size=6", "train.grad_accum=2",
                               "train.checkpoint_every=0", be_o};
  a3_config cfg;
  if (tt_config(&cfg, e->data, out, extra, 5)) return 1;
  const int rc = tt_train(&cfg, MPI_COMM_WORLD, 0, 0, l);
  a3_config_free(&cfg);
  unsetenv("A3FTA_GRAD_COMM");
  return rc;
}

// a3_trainer_create's error with A3FTA_GRAD_COMM = comm, on the CPU.
static a3_status create_error(const train_env *e, const char *comm) {
  setenv("A3FTA_GRAD_COMM", comm, 1);
  const char *const extra[] = {"parallel.backend=cpu"};
  a3_config cfg;
  a3_status s = A3_ERR_INTERNAL;
  if (tt_config(&cfg, e->data, e->dir, extra, 1) == 0) {
    a3_trainer *t = NULL;
    s = a3_trainer_create(&cfg, MPI_COMM_WORLD, &t);
    CHECK(t == NULL || s == A3_OK);
    a3_trainer_free(t);
    a3_config_free(&cfg);
  }
  unsetenv("A3FTA_GRAD_COMM");
  return s;
}

static void check_trainer_cpu(void) {
  train_env e;
  const bool ok = train_env_make(&e);
  CHECK(ok);
  if (ok) {
    a3_error_clear();
    CHECK(create_error(&e, "bogus") == A3_ERR_CONFIG);
    CHECK_MSG(has(a3_error_message(), "A3FTA_GRAD_COMM=bogus"), "%s", a3_error_message());
    a3_error_clear();
    CHECK(create_error(&e, "nccl") == A3_ERR_CONFIG);
    CHECK_MSG(has(a3_error_message(), "on a GPU"), "%s", a3_error_message());
    a3_error_clear();
    tt_losses unset = {0}, mpi = {0};
    CHECK(train_with(&e, NULL, "cpu", "unset", &unset) == 0 && unset.n == 6);
    CHECK(train_with(&e, "mpi", "cpu", "mpi", &mpi) == 0 && mpi.n == 6);
    CHECK_MSG(memcmp(unset.loss, mpi.loss, sizeof unset.loss) == 0,
              "A3FTA_GRAD_COMM=mpi changed the CPU losses");
  }
  train_env_free(&e);
}

// ================================================================ the sums, on any backend

typedef struct {
  a3_grad_piece *p; // the trainer's pieces
  int n;
  int64_t floats; // of the whole buffer, frozen parameters included
  int stages;     // the pieces' stages are 0 .. stages - 1
} layout;

// The pieces the trainer forms for the tiny U-Net under the a3fta strategy:
// real stages, and frozen parameters (the gaps) between the pieces.
static bool make_layout(layout *l) {
  memset(l, 0, sizeof *l);
  const char *const extra[] = {"strategy.name=a3fta"};
  a3_config cfg;
  if (tt_config(&cfg, "unused.h5", "unused", extra, 1)) return false;
  a3_unet *m = NULL;
  a3_strategy_stats st;
  a3_status s = a3_strategy_build_model(&cfg, &m);
  if (s == A3_OK) s = a3_strategy_apply(m, cfg.strategy.name, &st);
  if (s == A3_OK) s = a3_trainer_grad_pieces(m, &l->p, &l->n);
  if (s == A3_OK) l->floats = (int64_t)a3_unet_num_floats(m);
  for (int i = 0; i < l->n; i++)
    l->stages = l->p[i].stage >= l->stages ? l->p[i].stage + 1 : l->stages;
  if (s != A3_OK) fprintf(stderr, "the tiny U-Net's pieces: %s\n", a3_error_message());
  a3_unet_free(m);
  a3_config_free(&cfg);
  return s == A3_OK && l->n > 0 && l->stages <= STAGES;
}

static int64_t piece_floats(const layout *l) {
  int64_t n = 0;
  for (int i = 0; i < l->n; i++) n += l->p[i].count;
  return n;
}

// Rank r's gradient float j: [-0.5, 0.5) times 2^-10 .. 2^10 (rounding shows).
static float value(int r, int64_t j) {
  const uint64_t u = a3_rng_u64(13, (uint64_t)r, (uint64_t)j);
  return ldexpf((float)(u >> 40) / 16777216.0f - 0.5f, (int)(u % 21) - 10);
}

enum { ALL = -1, NONE = -2 };
// g = NaN (or 0) in the gaps; in the pieces this rank's values of `stage`
// (ALL: of every stage; NONE: of none) and 0 elsewhere.
static void fill(const layout *l, float *g, int stage, bool gaps_nan) {
  for (int64_t j = 0; j < l->floats; j++) g[j] = gaps_nan ? NAN : 0.0f;
  for (int i = 0; i < l->n; i++)
    for (int64_t k = 0; k < l->p[i].count; k++) {
      const int64_t j = l->p[i].offset + k;
      g[j] = stage == ALL || l->p[i].stage == stage ? value(rank, j) : 0.0f;
    }
}

typedef struct {
  const a3_backend *be;
  layout l;
  float *host, *ref, *got, *again; // (floats)
  float *d_g, *d_out, *d_zero, *d_stage[STAGES];
} sum_env;

static size_t bytes_of(const sum_env *g) { return (size_t)g->l.floats * sizeof(float); }

// One step on the device. With reports: stage s's values land on the compute
// stream (after busy no-op accumulates) before stage s is reported, which
// starts every bucket; finish then unpacks into another buffer, zero in the
// pieces (so that a sum that never arrives shows, also on one rank). Without:
// the values are there from the start and finish does it all in place. The
// result goes to out.
static a3_status device_step(sum_env *g, a3_grad_comm *c, bool report, float *out) {
  const a3_backend *be = g->be;
  const size_t n = (size_t)g->l.floats;
  fill(&g->l, g->host, report ? NONE : ALL, true);
  A3_TRY(be->ops->upload(be, g->d_g, g->host, bytes_of(g)));
  const a3_grad_buckets *b = a3_grad_comm_buckets(c);
  // accumulate is an activation op; these backends are fp32 (act_bytes 4,
  // checked in open_env), so their activations are floats and it adds the
  // gradients as they are.
  for (int s = 0; report && s < g->l.stages; s++) {
    for (int busy = 0; busy < 8; busy++)
      be->ops->accumulate(be, a3_act_f32(g->d_g), a3_act_cf32(g->d_zero), n);
    be->ops->accumulate(be, a3_act_f32(g->d_g), a3_act_cf32(g->d_stage[s]), n);
    A3_TRY(a3_grad_comm_ready(c, g->d_g, s));
    int expect = 0;
    while (expect < b->n_buckets && b->stage[expect] <= s) expect++;
    CHECK(a3_grad_comm_started(c) == expect);
  }
  float *into = g->d_g;
  if (report) {
    CHECK(a3_grad_comm_started(c) == b->n_buckets);
    into = g->d_out;
    A3_TRY(be->ops->upload(be, into, g->host, bytes_of(g))); // still NaN and zeros
  }
  A3_TRY(a3_grad_comm_finish(c, into));
  A3_TRY(a3_grad_comm_settle(c));
  A3_TRY(be->ops->download(be, out, into, bytes_of(g)));
  return be->ops->synchronize(be);
}

static bool in_piece(const layout *l, int64_t j) {
  for (int i = 0; i < l->n; i++)
    if (j >= l->p[i].offset && j < l->p[i].offset + l->p[i].count) return true;
  return false;
}

static void compare(const sum_env *g, size_t bucket) {
  int64_t differ = 0, gaps = 0, again = 0;
  double worst = 0.0;
  for (int64_t j = 0; j < g->l.floats; j++) {
    if (!in_piece(&g->l, j)) {
      gaps += !isnan(g->got[j]) || !isnan(g->again[j]);
      continue;
    }
    again += memcmp(&g->got[j], &g->again[j], sizeof(float)) != 0;
    if (memcmp(&g->got[j], &g->ref[j], sizeof(float)) == 0) continue;
    differ++;
    double terms = 0.0;
    for (int r = 0; r < size; r++) terms += fabs((double)value(r, j));
    const double e = fabs((double)g->got[j] - g->ref[j]) / (FLT_EPSILON * fmax(terms, 1e-30));
    worst = fmax(worst, isnan(e) ? INFINITY : e);
  }
  CHECK_MSG(gaps == 0, "%zu-byte buckets: %lld floats between the pieces changed", bucket,
            (long long)gaps);
  CHECK_MSG(again == 0, "%zu-byte buckets: %lld floats differ between two steps", bucket,
            (long long)again);
  if (size <= 2)
    CHECK_MSG(differ == 0, "%zu-byte buckets on %d ranks: %lld floats differ from MPI's", bucket,
              size, (long long)differ);
  else
    CHECK_MSG(worst <= size, "%zu-byte buckets on %d ranks: %.3g eps * sum |terms| from MPI's",
              bucket, size, worst);
  if (rank == 0)
    fprintf(stderr,
            "%d rank(s), %zu-byte buckets: %lld floats differ from MPI's (at most %.3g eps)\n",
            size, bucket, (long long)differ, worst);
}

// The candidate against the MPI communicator on the host values: NCCL on a
// GPU, or (the harness, on the CPU backend) the MPI communicator itself.
static void check_sums(sum_env *g, bool nccl) {
  const size_t sizes[] = {4, 4 * 7, 1000, 4096, 65536, (size_t)4 << 20, (size_t)1 << 40};
  for (size_t z = 0; z < sizeof sizes / sizeof *sizes; z++) {
    // The reference: the MPI communicator on the host values.
    a3_grad_comm *m = NULL;
    CHECK(a3_grad_comm_create_mpi(MPI_COMM_WORLD, g->l.p, g->l.n, sizes[z], &m) == A3_OK);
    if (!m) return;
    fill(&g->l, g->ref, ALL, true);
    CHECK(a3_grad_comm_finish(m, g->ref) == A3_OK);
    a3_grad_comm_free(m);
    if (size == 1) { // one rank: the sums are the inputs
      fill(&g->l, g->host, ALL, true);
      int64_t differ = 0;
      for (int64_t j = 0; j < g->l.floats; j++)
        differ += in_piece(&g->l, j) && memcmp(&g->host[j], &g->ref[j], sizeof(float)) != 0;
      CHECK_MSG(differ == 0, "1 rank: %lld sums differ from the inputs", (long long)differ);
    }
    a3_grad_comm *c = NULL;
    a3_status s =
        nccl ? a3_grad_comm_create_nccl(MPI_COMM_WORLD, g->be, g->l.p, g->l.n, sizes[z], 60.0, &c)
             : a3_grad_comm_create_mpi(MPI_COMM_WORLD, g->l.p, g->l.n, sizes[z], &c);
    CHECK_MSG(s == A3_OK, "%zu bytes: %s", sizes[z], a3_error_message());
    if (!c) return;
    CHECK(strcmp(a3_grad_comm_name(c), nccl ? "nccl" : "mpi") == 0);
    // The sum before freed its communicator in order: this one takes it over.
    CHECK_MSG(a3_grad_comm_reused(c) == (nccl && z > 0), "%zu bytes: communicator %s", sizes[z],
              a3_grad_comm_reused(c) ? "reused" : "new");
    s = device_step(g, c, true, g->got);
    CHECK_MSG(s == A3_OK, "%zu bytes, reported step: %s", sizes[z], a3_error_message());
    if (s == A3_OK) s = device_step(g, c, false, g->again);
    CHECK_MSG(s == A3_OK, "%zu bytes, unreported step: %s", sizes[z], a3_error_message());
    if (s == A3_OK) compare(g, sizes[z]);
    a3_grad_comm_free(c);
    a3_error_clear();
  }
}

// The layout and its buffers on `be` (device memory on a GPU); 0 on success.
static int open_env(sum_env *g, const a3_backend *be) {
  g->be = be;
  if (be->act_bytes != sizeof(float)) { // device_step's accumulate needs fp32 activations
    fprintf(stderr, "rank %d: %s stores activations in %zu bytes, not fp32\n", rank, be->name,
            be->act_bytes);
    return 1;
  }
  if (!make_layout(&g->l)) return 1;
  if (rank == 0)
    fprintf(stderr, "layout: %d pieces, %lld of %lld floats, %d stages\n", g->l.n,
            (long long)piece_floats(&g->l), (long long)g->l.floats, g->l.stages);
  const size_t n = (size_t)g->l.floats;
  g->host = malloc(n * sizeof(float));
  g->ref = malloc(n * sizeof(float));
  g->got = malloc(n * sizeof(float));
  g->again = malloc(n * sizeof(float));
  a3_status s = g->host && g->ref && g->got && g->again ? A3_OK : A3_ERR_NOMEM;
  if (s == A3_OK) s = be->ops->alloc(be, (void **)&g->d_g, bytes_of(g));
  if (s == A3_OK) s = be->ops->alloc(be, (void **)&g->d_out, bytes_of(g));
  if (s == A3_OK) s = be->ops->alloc(be, (void **)&g->d_zero, bytes_of(g)); // zeroed
  for (int st = 0; st < g->l.stages && s == A3_OK; st++) {
    s = be->ops->alloc(be, (void **)&g->d_stage[st], bytes_of(g));
    fill(&g->l, g->host, st, false);
    if (s == A3_OK) s = be->ops->upload(be, g->d_stage[st], g->host, bytes_of(g));
  }
  if (s != A3_OK) fprintf(stderr, "rank %d: %s\n", rank, a3_error_message());
  return s == A3_OK ? 0 : 1;
}

static void close_env(sum_env *g) {
  if (g->be) {
    g->be->ops->release(g->be, g->d_g);
    g->be->ops->release(g->be, g->d_out);
    g->be->ops->release(g->be, g->d_zero);
    for (int st = 0; st < STAGES; st++) g->be->ops->release(g->be, g->d_stage[st]);
  }
  free(g->host), free(g->ref), free(g->got), free(g->again), free(g->l.p);
}

// The harness on the CPU backend, its candidate the MPI communicator.
static void check_harness(void) {
  sum_env g;
  memset(&g, 0, sizeof g);
  CHECK(open_env(&g, a3_backend_cpu()) == 0);
  if (g.d_stage[0]) check_sums(&g, false);
  close_env(&g);
}

static int cpu_checks(void) {
  check_kind();
  check_create_refuses_cpu();
  check_watch();
  check_peers();
  check_trainer_cpu();
  check_harness();
  return 0;
}

// ================================================================ GPU checks
#ifdef A3FTA_HAVE_CUDA

// c's sums of two steps (reported stages, then none) against the MPI
// communicator's on the host values.
static void check_one_size(sum_env *g, a3_grad_comm *c, size_t bucket) {
  a3_grad_comm *m = NULL;
  CHECK(a3_grad_comm_create_mpi(MPI_COMM_WORLD, g->l.p, g->l.n, bucket, &m) == A3_OK);
  fill(&g->l, g->ref, ALL, true);
  if (m) CHECK(a3_grad_comm_finish(m, g->ref) == A3_OK);
  a3_grad_comm_free(m);
  CHECK(device_step(g, c, true, g->got) == A3_OK);
  CHECK(device_step(g, c, false, g->again) == A3_OK);
  compare(g, bucket);
}

// Work for the compute stream: fp32 GEMMs of 8192^3 (~20 ms each on an
// H100); on the emulator, the stream held back as long (tests/cuda_emu).
// The buffers outlive the work (cudaFree would wait for it).
#ifdef A3FTA_CUDA_EMU
enum { BUSY_D = 64 };
void emu_stall_stream(void *stream, double seconds);
static void keep_busy(const a3_backend *be, float *busy[3]) {
  (void)busy;
  emu_stall_stream(a3_backend_cuda_stream(be), 8.0);
}
#else
enum { BUSY_D = 8192, BUSY_GEMMS = 400 };
// (The backend is fp32: busy[0] and busy[2], the activations, are floats.)
static void keep_busy(const a3_backend *be, float *busy[3]) {
  for (int i = 0; i < BUSY_GEMMS; i++)
    be->ops->linear_forward(be, a3_act_f32(busy[2]), a3_act_cf32(busy[0]), busy[1], NULL, BUSY_D,
                            BUSY_D, BUSY_D);
}
#endif

// The sums go to busy[3], not g->d_g: the aborted communicator's stream
// still unpacks into them once the busy work ends, while the fresh one uses
// g->d_g.
static void check_watchdog(sum_env *g) {
  const a3_backend *be = g->be;
  float *busy[4] = {NULL, NULL, NULL, NULL};
  for (int i = 0; i < 3; i++)
    CHECK(be->ops->alloc(be, (void **)&busy[i], (size_t)BUSY_D * BUSY_D * sizeof(float)) == A3_OK);
  CHECK(be->ops->alloc(be, (void **)&busy[3], bytes_of(g)) == A3_OK);
  a3_grad_comm *c = NULL;
  const double limit = 2.0;
  CHECK(a3_grad_comm_create_nccl(MPI_COMM_WORLD, be, g->l.p, g->l.n, 4096, limit, &c) == A3_OK);
  if (!c || !busy[0] || !busy[1] || !busy[2] || !busy[3]) {
    for (int i = 0; i < 4; i++) be->ops->release(be, busy[i]);
    a3_grad_comm_free(c);
    return;
  }
  fill(&g->l, g->host, ALL, true);
  CHECK(be->ops->upload(be, busy[3], g->host, bytes_of(g)) == A3_OK);
  const double t0 = now_s();
  keep_busy(be, busy);
  a3_error_clear();
  a3_status s = a3_grad_comm_finish(c, busy[3]); // queues: no wait
  CHECK_MSG(s == A3_OK && now_s() - t0 < limit, "finish: status %d after %.1f s: %s", (int)s,
            now_s() - t0, a3_error_message());
  if (s == A3_OK) s = a3_grad_comm_settle(c);
  const double waited = now_s() - t0;
  char host[MPI_MAX_PROCESSOR_NAME + 1] = "";
  int len = 0;
  MPI_Get_processor_name(host, &len);
  char me[64];
  snprintf(me, sizeof me, "rank %d of %d", rank, size);
  CHECK_MSG(s == A3_ERR_CUDA && has(a3_error_message(), me) && has(a3_error_message(), host) &&
                has(a3_error_message(), "bucket") &&
                has(a3_error_message(), "parallel.nccl_timeout_s"),
            "status %d after %.1f s: %s", (int)s, waited, a3_error_message());
  CHECK_MSG(waited >= limit && waited < limit + 30.0, "the watchdog fired after %.1f s", waited);
  if (rank == 0) fprintf(stderr, "watchdog: fired after %.2f s: %s\n", waited, a3_error_message());
  a3_error_clear();
  a3_grad_comm_free(c); // in flight: its device side waits for the queued work
  const a3_status drained = be->ops->synchronize(be);
  CHECK_MSG(drained == A3_OK, "the compute stream after the abort: %s", a3_error_message());
  if (rank == 0) fprintf(stderr, "watchdog: the busy work ended after %.2f s\n", now_s() - t0);
  a3_error_clear();
  for (int i = 0; i < 4; i++) be->ops->release(be, busy[i]);
  // The GPU and NCCL still work: a fresh communicator sums.
  a3_grad_comm *fresh = NULL;
  CHECK(a3_grad_comm_create_nccl(MPI_COMM_WORLD, be, g->l.p, g->l.n, 4096, 60.0, &fresh) == A3_OK);
  CHECK_MSG(!fresh || !a3_grad_comm_reused(fresh), "an aborted communicator was taken over");
  if (fresh) check_one_size(g, fresh, 4096);
  a3_grad_comm_free(fresh);
}

// Rank 0 leaves a communicator of its own group (MPI_COMM_SELF) behind:
// with more ranks the others' communicator no longer serves the whole
// group, so all of them make a new one, which sums; on 1 rank SELF is
// congruent with WORLD and the communicator is taken over.
static void check_rejoin(sum_env *g) {
  if (rank == 0) {
    a3_grad_comm *alone = NULL;
    CHECK(a3_grad_comm_create_nccl(MPI_COMM_SELF, g->be, g->l.p, g->l.n, 4096, 60.0, &alone) ==
          A3_OK);
    CHECK(!alone || a3_grad_comm_reused(alone) == (size == 1));
    a3_grad_comm_free(alone);
  }
  a3_grad_comm *c = NULL;
  CHECK(a3_grad_comm_create_nccl(MPI_COMM_WORLD, g->be, g->l.p, g->l.n, 4096, 60.0, &c) == A3_OK);
  CHECK_MSG(!c || a3_grad_comm_reused(c) == (size == 1), "%d rank(s): communicator %s", size,
            c && a3_grad_comm_reused(c) ? "reused" : "new");
  if (c) check_one_size(g, c, 4096);
  a3_grad_comm_free(c);
}

// The trainer on the GPU, NCCL against MPI (on 1 rank MPI means no sum).
static void check_trainer_gpu(void) {
  train_env e;
  const bool ok = train_env_make(&e);
  CHECK(ok);
  if (ok) {
    tt_losses nccl = {0}, mpi = {0};
    CHECK(train_with(&e, "nccl", "cuda", "nccl", &nccl) == 0 && nccl.n == 6);
    CHECK(train_with(&e, "mpi", "cuda", "mpi", &mpi) == 0 && mpi.n == 6);
    double worst = 0.0;
    for (int i = 0; i < nccl.n && i < mpi.n; i++)
      worst = fmax(worst, fabs(nccl.loss[i] - mpi.loss[i]) / fabs(mpi.loss[i]));
    if (size <= 2)
      CHECK_MSG(memcmp(nccl.loss, mpi.loss, sizeof nccl.loss) == 0,
                "%d rank(s): NCCL losses differ from MPI's by %.3g relative", size, worst);
    else
      CHECK_MSG(worst <= 1e-6, "%d ranks: NCCL losses differ from MPI's by %.3g", size, worst);
    if (rank == 0)
      fprintf(stderr, "trainer on %d GPU(s): NCCL vs MPI losses differ by %.3g relative\n", size,
              worst);
  }
  train_env_free(&e);
}

#ifdef A3FTA_CUDA_EMU
static const bool on_emulator = true; // tests/cuda_emu
#else
static const bool on_emulator = false;
#endif

static int local_rank(void) {
  MPI_Comm local;
  int r = 0;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, &r);
  MPI_Comm_free(&local);
  return r;
}

// 77 when this machine cannot run the GPU checks with this many ranks.
static int open_gpu(sum_env *g) {
  memset(g, 0, sizeof *g);
  a3_cuda_info info;
  a3_cuda_probe(&info);
  // (The emulator's one device takes any number of ranks.)
  int enough = info.device_count >= 1 && (on_emulator || info.device_count >= size), all = 0;
  MPI_Allreduce(&enough, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all) {
    if (rank == 0)
      fprintf(stderr, "SKIPPED: %d usable GPU(s) (%s) for %d rank(s)\n", info.device_count,
              info.error_name, size);
    return 77;
  }
  const int device = local_rank() % info.device_count;
  const a3_backend *be = NULL;
  if (a3_backend_cuda_create(device, A3_PRECISION_FP32, &be) != A3_OK) {
    fprintf(stderr, "rank %d: %s\n", rank, a3_error_message());
    return 1;
  }
  fprintf(stderr, "rank %d of %d: GPU %d of %d (%s)\n", rank, size, device, info.device_count,
          info.device_name);
  return open_env(g, be);
}

static void close_gpu(sum_env *g) {
  close_env(g);
  a3_backend_cuda_destroy(g->be);
}

static int gpu_checks(void) {
  sum_env g;
  const int rc = open_gpu(&g);
  if (rc == 0) {
    check_sums(&g, true);
    check_rejoin(&g);
    check_trainer_gpu();
    check_watchdog(&g); // last: it leaves an aborted communicator behind
  }
  close_gpu(&g);
  return rc;
}

// Rank 1 never starts its sums: rank 0 must abort the job.
static int peer_missing(void) {
  sum_env g;
  const int rc = open_gpu(&g);
  if (rc != 0 || size < 2) {
    close_gpu(&g);
    return rc ? rc : 77;
  }
  a3_grad_comm *c = NULL;
  CHECK(a3_grad_comm_create_nccl(MPI_COMM_WORLD, g.be, g.l.p, g.l.n, 4096, 2.0, &c) == A3_OK);
  if (c && rank == 0) {
    fill(&g.l, g.host, ALL, true);
    CHECK(g.be->ops->upload(g.be, g.d_g, g.host, bytes_of(&g)) == A3_OK);
    a3_status s = a3_grad_comm_finish(c, g.d_g);
    if (s == A3_OK) s = a3_grad_comm_settle(c); // never returns: MPI_Abort
    fprintf(stderr, "rank 0: finish returned %d: %s\n", (int)s, a3_error_message());
  } else if (c) {
    sleep(120); // the job is aborted long before
  }
  return 3;
}
#else
static int gpu_checks(void) {
  if (rank == 0) fprintf(stderr, "SKIPPED: this a3fta was built without CUDA\n");
  return 77;
}
static int peer_missing(void) { return gpu_checks(); }
#endif

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  a3_log_set_level(A3_LOG_WARN);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  const char *mode = argc > 1 ? argv[1] : "";
  int rc = 0;
  if (strcmp(mode, "--cpu") == 0) {
    rc = cpu_checks();
  } else if (strcmp(mode, "--peer-missing") == 0) {
    rc = peer_missing();
  } else if (mode[0]) {
    if (rank == 0) fprintf(stderr, "usage: test_cuda_nccl [--cpu | --peer-missing]\n");
    rc = 2;
  } else {
    rc = gpu_checks();
  }
  int failures = test_failures + (rc == 1), total = 0, skip = rc == 77, all_skip = 0;
  MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Allreduce(&skip, &all_skip, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  if (rc == 2 || rc == 3) return rc;
  if (total) return rank == 0 ? TEST_DONE("test_cuda_nccl") || 1 : 1;
  if (all_skip) return 77;
  return rank == 0 ? TEST_DONE("test_cuda_nccl") : 0;
}
