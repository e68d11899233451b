// The trainable segments of a model, its gradient pieces for the bucketed
// sum (a3fta/comm.h), and the one-call gradient sum they replace.
#include "a3fta/trainer.h"

#include <limits.h>
#include <stdlib.h>

a3_status a3_trainable_segments(const a3_unet *m, a3_param_segment **segs, int *n_segs) {
  *segs = NULL;
  *n_segs = 0;
  const int n = a3_unet_param_count(m);
  A3_TRY(A3_ALLOC(*segs, (size_t)n + 1));
  for (int i = 0; i < n; i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    if (!p->trainable) continue;
    // No decay on 1-D tensors (biases, GroupNorm scales, gates), as usual.
    (*segs)[(*n_segs)++] = (a3_param_segment){(int64_t)p->offset, (int64_t)p->numel, p->ndim >= 2};
  }
  return A3_OK;
}

a3_status a3_trainer_grad_pieces(const a3_unet *m, a3_grad_piece **pieces, int *n_pieces) {
  *pieces = NULL;
  *n_pieces = 0;
  const int n = a3_unet_param_count(m);
  A3_TRY(A3_ALLOC(*pieces, (size_t)n + 1));
  for (int i = 0; i < n; i++) {
    const a3_param *p = a3_unet_param_at(m, i);
    if (!p->trainable) continue;
    (*pieces)[(*n_pieces)++] =
        (a3_grad_piece){(int64_t)p->offset, (int64_t)p->numel, a3_unet_param_grad_stage(m, i)};
  }
  return A3_OK;
}

a3_status a3_grad_allreduce(MPI_Comm comm, const a3_param_segment *segs, int n_segs, float *grads,
                            float *scratch) {
  int size = 1;
  MPI_Comm_size(comm, &size);
  if (size == 1) return A3_OK;
  const int64_t total = a3_segments_numel(segs, n_segs);
  a3_segments_gather(segs, n_segs, grads, scratch);
  // MPI counts are ints: reduce in chunks below INT_MAX elements.
  for (int64_t begin = 0; begin < total; begin += INT_MAX / 2) {
    const int64_t count = total - begin < INT_MAX / 2 ? total - begin : INT_MAX / 2;
    const int rc =
        MPI_Allreduce(MPI_IN_PLACE, scratch + begin, (int)count, MPI_FLOAT, MPI_SUM, comm);
    if (rc != MPI_SUCCESS)
      return A3_FAIL(A3_ERR_MPI, "gradient all-reduce of %lld floats over %d ranks failed (%d)",
                     (long long)count, size, rc);
  }
  a3_segments_scatter(segs, n_segs, scratch, grads);
  return A3_OK;
}
