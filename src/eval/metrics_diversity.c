// Diversity of samples: mean pairwise feature distance, overall and within
// clusters of samples that share their nearest training image.
#include "a3fta/metrics.h"
#include "eval/metrics_internal.h"

#include <math.h>
#include <stdlib.h>

a3_status a3_mean_pairwise_distance(const float *x, int64_t n, int64_t d, double *out) {
  A3_TRY(metrics_check_rows("diversity", x, n, d, 2));
  A3_TRY(metrics_mean_pairwise(x, d, NULL, n, out));
  return A3_OK;
}

// Sample indices grouped by cluster (counting sort, ascending within each):
// cluster c owns order[start[c] .. start[c + 1]).
static a3_status group_by_cluster(const int64_t *cluster, int64_t n, int64_t n_clusters,
                                  int64_t *start, int64_t *order) {
  for (int64_t i = 0; i < n; i++) {
    if (cluster[i] < 0 || cluster[i] >= n_clusters)
      return A3_FAIL(A3_ERR_INPUT,
                     "intra-cluster diversity: sample %lld is in cluster %lld, "
                     "outside [0, %lld)",
                     (long long)i, (long long)cluster[i], (long long)n_clusters);
    start[cluster[i] + 1]++;
  }
  for (int64_t c = 0; c < n_clusters; c++) start[c + 1] += start[c];
  for (int64_t i = 0; i < n; i++) order[start[cluster[i]]++] = i;
  for (int64_t c = n_clusters; c > 0; c--) start[c] = start[c - 1]; // undo the advance
  start[0] = 0;
  return A3_OK;
}

static a3_status cluster_means(const float *x, int64_t d, const int64_t *start,
                               const int64_t *order, int64_t n_clusters, double *per_cluster,
                               a3_cluster_diversity *out) {
  double total = 0;
  int64_t used = 0;
  for (int64_t c = 0; c < n_clusters; c++) {
    const int64_t size = start[c + 1] - start[c];
    double mean = NAN;
    if (size >= 2) {
      A3_TRY(metrics_mean_pairwise(x, d, order + start[c], size, &mean));
      total += mean;
      used++;
    }
    if (per_cluster) per_cluster[c] = mean;
  }
  out->n_clusters = used;
  out->mean = used ? total / (double)used : NAN;
  return A3_OK;
}

a3_status a3_intra_cluster_diversity(const float *x, int64_t n, int64_t d, const int64_t *cluster,
                                     int64_t n_clusters, double *per_cluster,
                                     a3_cluster_diversity *out) {
  A3_TRY(metrics_check_rows("intra-cluster diversity", x, n, d, 1));
  if (!cluster || n_clusters < 1)
    return A3_FAIL(A3_ERR_INPUT, "intra-cluster diversity: no cluster assignment (%lld clusters)",
                   (long long)n_clusters);
  int64_t *start = NULL, *order = NULL;
  a3_status st;
  A3_TRY_GOTO(st, A3_ALLOC(start, n_clusters + 1), done);
  A3_TRY_GOTO(st, A3_ALLOC(order, n), done);
  A3_TRY_GOTO(st, group_by_cluster(cluster, n, n_clusters, start, order), done);
  A3_TRY_GOTO(st, cluster_means(x, d, start, order, n_clusters, per_cluster, out), done);
done:
  free(start);
  free(order);
  return st;
}
