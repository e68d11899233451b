// MPI start-up and orderly shutdown (or abort) when commands fail.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/dist.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

a3_status a3_mpi_failure(int rc, const char *what, const char *file, int line) {
  char text[MPI_MAX_ERROR_STRING] = "";
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return a3_error_set(A3_ERR_MPI, file, line, "%s failed: %s", what, text);
}

// A positive count from the environment, or 0 when unset or not a number.
static long env_count(const char *name) {
  const char *v = getenv(name);
  if (!v || !*v) return 0;
  char *end = NULL;
  errno = 0;
  const long n = strtol(v, &end, 10);
  return errno || *end || n < 1 ? 0 : n;
}

a3_status a3_world_check_launch(const a3_world *w) {
  const char *job = getenv("SLURM_JOB_ID"), *off = getenv("A3FTA_LAUNCH_CHECK");
  if (!job || !*job || (off && !strcmp(off, "0")) || w->mpirun_np > 0) return A3_OK;
  const long step = env_count("SLURM_STEP_NUM_TASKS"), ntasks = env_count("SLURM_NTASKS");
  const long expected = step ? step : ntasks;
  if (!expected || expected == w->size || (!step && w->size == 1)) return A3_OK;
  const char *var = step ? "SLURM_STEP_NUM_TASKS" : "SLURM_NTASKS";
  if (w->size == 1)
    return A3_FAIL(A3_ERR_USAGE,
                   "launch check: MPI sees a world of 1 rank, but Slurm started %ld tasks "
                   "(%s=%ld, job %s): each task is its own 1-rank world, so the job would run "
                   "%ld times over. srun started the tasks without a PMI that this MPI "
                   "understands: launch with 'srun --mpi=pmix' ('srun --mpi=list' shows the PMI "
                   "plugins your Slurm has, e.g. pmix_v4 or pmi2; pick the one your MPI was built "
                   "with), or with mpirun inside the allocation (A3FTA_LAUNCH_CHECK=0 skips this "
                   "check)",
                   expected, var, expected, job, expected);
  return A3_FAIL(A3_ERR_USAGE,
                 "launch check: MPI sees a world of %d ranks, but Slurm started %ld tasks (%s=%ld, "
                 "job %s): the tasks did not form one MPI world. Launch with 'srun --mpi=pmix' "
                 "('srun --mpi=list' shows the PMI plugins your Slurm has), or with mpirun inside "
                 "the allocation (A3FTA_LAUNCH_CHECK=0 skips this check)",
                 w->size, expected, var, expected, job);
}

// The node place a3_world_init found (a3_node_place); 0 ranks: not known.
static int node_rank = 0, node_size = 0;

a3_status a3_node_place(MPI_Comm fallback, int *local_rank, int *local_size) {
  if (node_size > 0) {
    *local_rank = node_rank;
    *local_size = node_size;
    return A3_OK;
  }
  MPI_Comm node = MPI_COMM_NULL;
  A3_MPI_TRY(MPI_Comm_split_type(fallback, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node),
             "MPI_Comm_split_type(SHARED)");
  MPI_Comm_rank(node, local_rank);
  MPI_Comm_size(node, local_size);
  MPI_Comm_free(&node);
  return A3_OK;
}

a3_status a3_world_init(int *argc, char ***argv, a3_world *w) {
  // Before MPI_Init, which may set it itself.
  w->mpirun_np = (int)env_count("OMPI_COMM_WORLD_SIZE");
  int provided = 0;
  A3_MPI_TRY(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  w->initialized = 1;
  w->comm = MPI_COMM_WORLD;
  // Errors come back as codes so that we can report them, not abort in MPI.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  A3_MPI_TRY(MPI_Comm_rank(w->comm, &w->rank), "MPI_Comm_rank");
  A3_MPI_TRY(MPI_Comm_size(w->comm, &w->size), "MPI_Comm_size");
  A3_TRY(a3_node_place(w->comm, &w->local_rank, &w->local_size)); // not recorded yet: splits
  node_rank = w->local_rank;
  node_size = w->local_size;
  a3_log_set_rank(w->rank, w->size);
  A3_TRY(a3_world_check_launch(w));
  return A3_OK;
}

a3_status a3_agree(MPI_Comm comm, a3_status mine, const char *what) {
  struct {
    int code, rank;
  } in = {(int)mine, 0}, worst = {0, 0};
  MPI_Comm_rank(MPI_COMM_WORLD, &in.rank);
  if (MPI_Allreduce(&in, &worst, 1, MPI_2INT, MPI_MAXLOC, comm) != MPI_SUCCESS && mine == A3_OK)
    return A3_FAIL(A3_ERR_MPI, "%s: the ranks could not agree on its outcome (MPI_Allreduce)",
                   what);
  if (mine != A3_OK || worst.code == A3_OK) return mine;
  return A3_FAIL((a3_status)worst.code, "%s: rank %d failed (its error is in its log)", what,
                 worst.rank);
}

double a3_world_abort_grace_s(void) {
  const char *env = getenv("A3FTA_ABORT_GRACE_S");
  double v = env ? strtod(env, NULL) : 0.0;
  return v > 0.0 ? v : 30.0;
}

// Waits up to `grace_s` for every rank to enter this barrier.
static int everyone_arrives(MPI_Comm comm, double grace_s) {
  MPI_Request req = MPI_REQUEST_NULL;
  if (MPI_Ibarrier(comm, &req) != MPI_SUCCESS) return 0;
  const double start = MPI_Wtime();
  int done = 0;
  while (!done) {
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    if (!done && MPI_Wtime() - start > grace_s) return 0;
    if (!done) nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL); // do not spin a core
  }
  return 1;
}

int a3_world_finish(a3_world *w, a3_status s) {
  int code = a3_status_exit_code(s);
  if (s != A3_OK) a3_log_error_status(s);
  if (!w->initialized) return code;
  if (w->size > 1 && code != 0 && !everyone_arrives(w->comm, a3_world_abort_grace_s())) {
    a3_log(A3_LOG_ERROR,
           "a3fta: rank %d failed and the other ranks did not finish within %.0f s; "
           "aborting the job",
           w->rank, a3_world_abort_grace_s());
    MPI_Abort(w->comm, code);
  }
  if (w->size > 1) {
    if (code == 0) everyone_arrives(w->comm, 1e30); // pair with failed ranks' barrier
    int worst = code;
    MPI_Allreduce(&code, &worst, 1, MPI_INT, MPI_MAX, w->comm);
    code = worst;
  }
  MPI_Finalize();
  return code;
}
