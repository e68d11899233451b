// a3fta dist: the MPI world, and how a job ends when a rank fails.
// Later issues add group communicators, scheduling and gradient reduction here.
#ifndef A3FTA_DIST_H
#define A3FTA_DIST_H

#include "a3fta/core.h"

#include <mpi.h>

typedef struct {
  MPI_Comm comm;   // MPI_COMM_WORLD
  int rank, size;  // in comm
  int local_rank;  // rank among the ranks on this node (GPU binding uses it)
  int local_size;  // ranks on this node
  int initialized; // we called MPI_Init (and must finalize)
  int mpirun_np;   // OMPI_COMM_WORLD_SIZE before MPI_Init (set by Open MPI's mpirun), or 0
} a3_world;

// An MPI return code as an a3_status (A3_ERR_MPI naming the call and MPI's
// own error text); A3_MPI_TRY returns it from the calling function.
a3_status a3_mpi_failure(int rc, const char *what, const char *file, int line);
#define A3_MPI_TRY(call, what)                                                                     \
  do {                                                                                             \
    int a3_mpi_rc_ = (call);                                                                       \
    if (a3_mpi_rc_ != MPI_SUCCESS) return a3_mpi_failure(a3_mpi_rc_, (what), __FILE__, __LINE__);  \
  } while (0)

// Starts MPI (thread level FUNNELED), fills `w`, tells the logger the rank,
// and checks the launch (a3_world_check_launch).
a3_status a3_world_init(int *argc, char ***argv, a3_world *w);

// The launch check, on every rank: under Slurm (SLURM_JOB_ID set), a process
// that srun started must be in an MPI world of SLURM_STEP_NUM_TASKS ranks
// (SLURM_NTASKS where the step's count is not set). A mismatch is what srun
// without a PMI that the MPI library understands gives: N copies of a 1-rank
// world, each of which would run the whole job. Then A3_ERR_USAGE (exit 2),
// naming both numbers and the fix (srun --mpi=pmix; srun --mpi=list); every
// copy is its own world, so every copy exits and none hangs. Not checked:
// processes started by Open MPI's mpirun (w->mpirun_np > 0: mpirun's -np
// sizes the world, and on remote nodes the Slurm variables describe
// mpirun's daemons), one process started directly in a batch or salloc
// shell (world size 1 and no SLURM_STEP_NUM_TASKS: 'a3fta info', 'a3fta
// merge'), and any launch with A3FTA_LAUNCH_CHECK=0.
a3_status a3_world_check_launch(const a3_world *w);

// Ends a command. Every rank passes its own status. Ranks that failed print
// their error (with their rank). If all ranks reach this point within the
// grace period, they agree on the worst exit code and finalize MPI cleanly;
// if some rank is stuck (e.g. waiting in a collective the failed rank never
// joined), the job is aborted with MPI_Abort instead of hanging.
// Returns the process exit code (0, 1 or 2).
int a3_world_finish(a3_world *w, a3_status s);

// This rank's place on its node: its rank among the node's ranks of the
// whole job, and their number. Which GPU a rank drives and how many CPU
// threads it takes depend on the node, never on the sweep group a rank
// trains in (groups of 1 rank would each think they were alone: every rank
// on GPU 0). a3_world_init records them from MPI_COMM_WORLD; a program that
// started MPI itself gets them from `fallback`, split by node (a collective
// on it then, made by every rank of it).
a3_status a3_node_place(MPI_Comm fallback, int *local_rank, int *local_size);

// Every rank's outcome of a step, agreed on over comm (collective): mine when
// it failed, else the worst of the others', "WHAT: rank R failed (its error
// is in its log)", R its rank in MPI_COMM_WORLD, the log's rank. Call it
// after any step that can fail on one rank alone, before the next
// collective: a rank that returned early never joins it, and the others
// would wait in it for good.
a3_status a3_agree(MPI_Comm comm, a3_status mine, const char *what);

// Seconds a failed rank waits for the others before MPI_Abort (env
// A3FTA_ABORT_GRACE_S overrides; default 30).
double a3_world_abort_grace_s(void);

#endif
