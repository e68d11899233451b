// MPI start-up and orderly shutdown (or abort) when commands fail.
#define _POSIX_C_SOURCE 200809L
#include "a3fta/dist.h"

#include <stdlib.h>
#include <time.h>

a3_status a3_mpi_failure(int rc, const char *what, const char *file, int line) {
  char text[MPI_MAX_ERROR_STRING] = "";
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return a3_error_set(A3_ERR_MPI, file, line, "%s failed: %s", what, text);
}

a3_status a3_world_init(int *argc, char ***argv, a3_world *w) {
  int provided = 0;
  A3_MPI_TRY(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
  w->initialized = 1;
  w->comm = MPI_COMM_WORLD;
  // Errors come back as codes so that we can report them, not abort in MPI.
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  A3_MPI_TRY(MPI_Comm_rank(w->comm, &w->rank), "MPI_Comm_rank");
  A3_MPI_TRY(MPI_Comm_size(w->comm, &w->size), "MPI_Comm_size");
  MPI_Comm node = MPI_COMM_NULL;
  A3_MPI_TRY(MPI_Comm_split_type(w->comm, MPI_COMM_TYPE_SHARED, w->rank, MPI_INFO_NULL, &node),
             "MPI_Comm_split_type(SHARED)");
  MPI_Comm_rank(node, &w->local_rank);
  MPI_Comm_size(node, &w->local_size);
  MPI_Comm_free(&node);
  a3_log_set_rank(w->rank, w->size);
  return A3_OK;
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
