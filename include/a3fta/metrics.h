// a3fta metrics: sample quality (FID, KID, precision/recall, density/
// coverage), diversity and memorization, on matrices the caller provides.
//
// Every input is a row-major float (N, D) matrix: one row per image, either
// features of the feature network (FID, KID, PRDC, diversity) or flattened
// pixels (memorization; any fixed scale, the criterion is a ratio). All
// arithmetic is in double. Results do not depend on the thread count: work
// is split by rows and every floating-point sum runs in a fixed order.
//
// Inputs are validated: too few rows, D < 1 and NaN/Inf entries are
// A3_ERR_INPUT errors naming the metric (a NaN feature usually means that
// sampling diverged; a metric computed around it would be silently wrong).
//
// Checked against independent numpy implementations by tests/eval (fixture
// by tools/metrics_reference.py).
#ifndef A3FTA_METRICS_H
#define A3FTA_METRICS_H

#include "a3fta/core.h"

#include <stdint.h>

// RNG stream of this layer (core reserves < 16, diffusion 16..31).
enum { A3_STREAM_KID_SUBSET = 32 };

// ---------------------------------------------------------------- linear algebra
// Eigen-decomposition of the symmetric (n, n) matrix `a` (only its lower
// triangle is read): a = v diag(w) v^T, w (n) ascending, v (n, n) with the
// eigenvectors as columns, or NULL for eigenvalues only. Householder
// tridiagonalisation + implicit QL (EISPACK tred2/tql2), O(n^3): about 0.3 s
// for n = 512 on one core of the build machines. v must not alias a. Never
// fails silently: non-finite input is A3_ERR_INPUT, and a QL iteration that
// has not converged after 50 sweeps for one eigenvalue is A3_ERR_INTERNAL.
a3_status a3_sym_eigh(const double *a, int64_t n, double *w, double *v) A3_WARN_UNUSED;

// ---------------------------------------------------------------- FID
// Gaussian statistics of a feature set, for FID against a fixed reference
// set (compute the reference's once).
typedef struct {
  int64_t n, d; // samples (>= 2) and feature dimension
  double *mean; // (D)
  double *cov;  // (D, D) unbiased: divided by N - 1
} a3_feature_stats;

a3_status a3_feature_stats_compute(const float *x, int64_t n, int64_t d,
                                   a3_feature_stats *out) A3_WARN_UNUSED; // x (N, D)
void a3_feature_stats_free(a3_feature_stats *s); // safe on a zeroed or freed struct

typedef struct {
  double fid;        // mean_dist2 + trace1 + trace2 - 2 trace_sqrt (not clamped at 0)
  double mean_dist2; // ||mu1 - mu2||^2
  double trace1;     // Tr S1
  double trace2;     // Tr S2
  double trace_sqrt; // Tr (S1^1/2 S2 S1^1/2)^1/2
  // The most negative eigenvalue clamped to 0 (of S1, then of the product),
  // relative to the largest: rounding gives ~1e-15; much more means trouble.
  double clamped_rel;
} a3_fid_result;

// Frechet distance between N(mu1, S1) and N(mu2, S2). With S1 = V L V^T,
// S1^1/2 = V L^1/2 V^T, and the product M = S1^1/2 S2 S1^1/2 is orthogonally
// similar to M' = L^1/2 (V^T S2 V) L^1/2, so Tr M^1/2 = sum sqrt(eig(M')),
// negative rounding eigenvalues clamped to 0: two symmetric eigen-
// decompositions, valid for rank-deficient covariances (N <= D).
a3_status a3_fid_from_stats(const a3_feature_stats *s1, const a3_feature_stats *s2,
                            a3_fid_result *out) A3_WARN_UNUSED;
// The same from two feature sets: x1 (N1, D), x2 (N2, D), N1, N2 >= 2.
a3_status a3_fid(const float *x1, int64_t n1, const float *x2, int64_t n2, int64_t d,
                 a3_fid_result *out) A3_WARN_UNUSED;

// ---------------------------------------------------------------- KID
typedef struct {
  double mean, std;    // over subsets; std is the population std (ddof 0)
  int64_t subset_size; // m actually used
  int64_t n_subsets;
} a3_kid_result;

// Kernel Inception Distance: the unbiased MMD^2 estimator with the kernel
// k(x, y) = (x.y / D + 1)^3,
//   sum_{i!=j} k(x_i,x_j) / (m(m-1)) + sum_{i!=j} k(y_i,y_j) / (m(m-1))
//   - 2 sum_{i,j} k(x_i,y_j) / m^2,
// on n_subsets pairs of random subsets of m = min(subset_size, N1, N2) rows
// (m >= 2) drawn without replacement. Estimator and std (ddof 0) as
// torch-fidelity's kid; the subset size rule as clean-fid's (never larger
// than either set, where torch-fidelity would refuse). torch-fidelity
// defaults: 100 subsets of 1000. Subsets come from a3_kid_subset_indices.
// The kernel matrices of the whole sets are computed once when (N1 + N2)^2
// doubles fit in 128 MiB (100 subsets of 1000 from 1000 + 1000 samples,
// D = 256: 1 s on the 2-core build machine), else those of each subset pair.
a3_status a3_kid(const float *x1, int64_t n1, const float *x2, int64_t n2, int64_t d,
                 int64_t n_subsets, int64_t subset_size, uint64_t seed,
                 a3_kid_result *out) A3_WARN_UNUSED;
// Rows of subset `subset` of set `which` (0: x1, 1: x2): m distinct indices
// in [0, n), the first m of a partial Fisher-Yates shuffle of 0..n-1 whose
// step i swaps in i + a3_rng_below(seed, A3_STREAM_KID_SUBSET,
// ((2 subset + which) << 32) | i, n - i).
a3_status a3_kid_subset_indices(uint64_t seed, int64_t subset, int which, int64_t n, int64_t m,
                                int64_t *idx) A3_WARN_UNUSED; // idx (m)

// ---------------------------------------------------------------- neighbours
// For each row of q (N, D): its nearest and second-nearest rows of ref (R, D)
// by L2 distance (ties: the lower index first) and the distances. idx2 and
// d2 may both be NULL (then R >= 1, else R >= 2). Distances are summed
// directly, sum (a - b)^2, not as |a|^2 + |b|^2 - 2 a.b, which cancels
// catastrophically for the near-copies that memorization looks for.
a3_status a3_nearest2(const float *q, int64_t n, const float *ref, int64_t r, int64_t d,
                      int64_t *idx1, double *d1, int64_t *idx2, double *d2) A3_WARN_UNUSED;

// ---------------------------------------------------------------- diversity
// Mean L2 distance over the N(N-1)/2 pairs of rows of x (N, D), N >= 2.
a3_status a3_mean_pairwise_distance(const float *x, int64_t n, int64_t d,
                                    double *out) A3_WARN_UNUSED;

typedef struct {
  double mean;        // over clusters with >= 2 members; NaN when there is none
  int64_t n_clusters; // clusters used (>= 2 members)
} a3_cluster_diversity;

// Intra-cluster diversity (Ojha et al. 2021, with L2 feature distance for
// LPIPS): sample i belongs to cluster[i] in [0, n_clusters), usually its
// nearest training image (a3_nearest2 in pixel or feature space: the caller
// chooses). Per cluster with >= 2 members: the mean pairwise distance of its
// rows of x (N, D); then the unweighted mean over those clusters.
// per_cluster (n_clusters) may be NULL; it gets NaN for clusters not used.
a3_status a3_intra_cluster_diversity(const float *x, int64_t n, int64_t d, const int64_t *cluster,
                                     int64_t n_clusters, double *per_cluster,
                                     a3_cluster_diversity *out) A3_WARN_UNUSED;

// ---------------------------------------------------------------- memorization
typedef struct {
  double fraction;     // n_memorized / n
  int64_t n_memorized; //
  int64_t n;           // samples
  double ratio;        // the ratio used
} a3_memorization_result;

// Sample i is memorized when d1 * ratio < d2 (d1 < d2/3 for ratio 3), where
// d1, d2 are its L2 distances to the nearest and second-nearest training
// images, or when d1 == 0 (an exact copy, even of an image that the training
// set holds twice). samples (N, D), train (T, D) in pixel space, T >= 2,
// ratio >= 1. nearest, d1, d2 (N) may be NULL; otherwise they get each
// sample's nearest training image and the two distances, for a3_memorization_order.
a3_status a3_memorization(const float *samples, int64_t n, const float *train, int64_t n_train,
                          int64_t d, double ratio, int64_t *nearest, double *d1, double *d2,
                          a3_memorization_result *out) A3_WARN_UNUSED;
// order (N): sample indices most memorized first, by ascending d1/d2 (0 when
// d1 == 0), ties by index: the rows for a PNG of the most-memorized samples.
a3_status a3_memorization_order(const double *d1, const double *d2, int64_t n,
                                int64_t *order) A3_WARN_UNUSED;

// ---------------------------------------------------------------- k-NN manifolds
typedef struct {
  double precision, recall; // Kynkaanniemi et al. 2019
  double density, coverage; // Naeem et al. 2020
  int64_t k;
} a3_prdc_result;

// All four from the k-NN radii of each set (distance to the k-th nearest
// other row of the same set), exactly as Naeem et al.'s `prdc` package:
//   precision = mean_j [exists i: d(r_i, f_j) < rad_r(i)]
//   recall    = mean_i [exists j: d(r_i, f_j) < rad_f(j)]
//   density   = mean_j #{i: d(r_i, f_j) < rad_r(i)} / k
//   coverage  = mean_i [min_j d(r_i, f_j) < rad_r(i)]
// with strict inequalities (NVlabs' precision/recall uses <=: they differ
// only on exact ties). real (NR, D), fake (NF, D), NR, NF > k >= 1; the
// paper's k is 3 (prdc's default is 5).
a3_status a3_prdc(const float *real, int64_t n_real, const float *fake, int64_t n_fake, int64_t d,
                  int64_t k, a3_prdc_result *out) A3_WARN_UNUSED;

#endif
