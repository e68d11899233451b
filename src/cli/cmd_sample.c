// a3fta sample: images from a checkpoint (EMA weights when it has them),
// split across the ranks of the job, written as HDF5 and/or a PNG grid.
#include "a3fta/trainer.h"
#include "cli/commands.h"
#include "cli/options.h"

#include <mpi.h>
#include <stdlib.h>
#include <string.h>

static bool ends_with(const char *s, const char *tail) {
  const size_t n = strlen(s), k = strlen(tail);
  return n >= k && !strcmp(s + n - k, tail);
}

static a3_status parse_sampler(const char *text, a3_sampler *out) {
  if (!strcmp(text, "ddim"))
    *out = A3_SAMPLER_DDIM;
  else if (!strcmp(text, "ddpm"))
    *out = A3_SAMPLER_DDPM;
  else
    return A3_FAIL(A3_ERR_USAGE, "a3fta sample: --sampler expects ddim or ddpm, got '%s'", text);
  return A3_OK;
}

typedef struct {
  const char *out, *png, *sampler, *eta, *backend;
  long num, steps, seed, batch;
  int no_ema;
} sample_args;

// --out FILE.png is a grid only; --out FILE(.h5) the HDF5 array (+ --png).
static a3_status to_request(const sample_args *a, a3_sample_request *req) {
  if (!a->out && !a->png)
    return A3_FAIL(A3_ERR_USAGE, "a3fta sample: --out FILE.h5 (or --png FILE.png) is required");
  memset(req, 0, sizeof *req);
  req->num = a->num;
  req->steps = a->steps;
  req->seed = (uint64_t)a->seed;
  req->use_ema = !a->no_ema;
  req->max_batch = (int)a->batch;
  req->out_h5 = a->out && !ends_with(a->out, ".png") ? a->out : NULL;
  req->out_png = a->png ? a->png : (a->out && ends_with(a->out, ".png") ? a->out : NULL);
  A3_TRY(parse_sampler(a->sampler, &req->sampler));
  int kind = 0;
  A3_TRY(a3_cli_backend("sample", a->backend, &req->set_backend, &kind));
  req->backend = (a3_backend_kind)kind;
  char *end = NULL;
  req->eta = strtod(a->eta, &end);
  if (end == a->eta || *end || !(req->eta >= 0.0 && req->eta <= 1.0))
    return A3_FAIL(A3_ERR_USAGE, "a3fta sample: --eta expects a number in [0, 1], got '%s'",
                   a->eta);
  return A3_OK;
}

a3_status a3_cmd_sample(int argc, char **argv) {
  sample_args a = {NULL, NULL, "ddim", "0", NULL, 16, 0, 0, 0, 0};
  const a3_cli_option options[] = {
      {"out", 'o', A3_OPT_STRING, "FILE.h5",
       "write /samples (N, C, H, W) uint8 here; a name ending in .png writes only a grid", &a.out,
       0, 0},
      {"png", 0, A3_OPT_STRING, "FILE.png", "also write the samples as a PNG grid", &a.png, 0, 0},
      {"num", 'n', A3_OPT_INT, "N", "number of images (default 16)", &a.num, 1, 1000000},
      {"sampler", 0, A3_OPT_STRING, "ddim|ddpm", "sampler (default ddim)", &a.sampler, 0, 0},
      {"steps", 0, A3_OPT_INT, "S",
       "sampler steps (default: eval.sampler_steps of the checkpoint's config)", &a.steps, 1,
       100000},
      {"eta", 0, A3_OPT_STRING, "X", "DDIM eta in [0, 1] (default 0: deterministic)", &a.eta, 0, 0},
      {"seed", 0, A3_OPT_INT, "K", "seed of the noise (default 0)", &a.seed, 0, 2147483647L},
      {"batch", 0, A3_OPT_INT, "B", "images per forward pass (default 16 on the CPU, 256 on a GPU)",
       &a.batch, 1, 4096},
      {"no-ema", 0, A3_OPT_FLAG, NULL, "use the raw weights even if the checkpoint has an EMA",
       &a.no_ema, 0, 0},
      {"backend", 0, A3_OPT_STRING, "auto|cpu|cuda",
       "where to sample (default: the checkpoint config's parallel.backend)", &a.backend, 0, 0},
  };
  const a3_cli_command cmd = {
      "sample",
      "CHECKPOINT --out FILE.h5 [--num N] [--sampler ddim|ddpm] [--steps S] [--seed K] "
      "[--png FILE.png] [--backend auto|cpu|cuda]",
      "Sample images from a checkpoint.",
      "Draws N images with the checkpoint's model (its EMA weights when it has them) and noise\n"
      "schedule. Image i's noise depends only on (seed, i), so the images are the same for any\n"
      "number of ranks (mpirun -n R a3fta sample ... splits the work). Sampling runs where the\n"
      "checkpoint's config trains (parallel.backend: a GPU when it picks one, else the CPU);\n"
      "--backend overrides it (cpu: a GPU-trained checkpoint on a machine without one).",
      options,
      (int)(sizeof options / sizeof options[0]),
      1,
      1};
  a3_cli_args args;
  A3_TRY(a3_cli_parse(&cmd, argc, argv, &args));
  if (args.help_requested) return A3_OK;
  A3_TRY(a3_cli_start_mpi());
  a3_sample_request req;
  A3_TRY(to_request(&a, &req));
  A3_TRY(a3_sample_checkpoint(MPI_COMM_WORLD, args.positional[0], &req));
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0)
    a3_info("sample: wrote %s%s%s", req.out_h5 ? req.out_h5 : "",
            req.out_h5 && req.out_png ? " and " : "", req.out_png ? req.out_png : "");
  return A3_OK;
}
