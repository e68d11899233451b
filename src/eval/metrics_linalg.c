// Symmetric eigen-decomposition in double: Householder reduction to
// tridiagonal form, then the implicit QL method, after EISPACK's tred2/tql2
// (as in the public-domain JAMA). Written here rather than linking LAPACK
// (dsyevd) so that a3fta needs no LAPACK; FID's matrices are D x D with D a
// few hundred, where O(D^3) takes milliseconds.
#include "a3fta/metrics.h"

#include <math.h>
#include <stdlib.h>

enum { EIGH_MAX_SWEEPS = 50 }; // EISPACK stops at 30; QL needs ~1.5 per eigenvalue

// The matrix V of EISPACK's algorithms is stored transposed, vt = V^T: their
// inner loops run down columns of V, which are rows of vt, contiguous. (With
// V row-major, n = 512 took 4.4 s instead of 0.3 s here: a 4 KiB stride
// defeats the cache.)
#define V(i, j) vt[(j)*n + (i)]

// Reduces the symmetric matrix V (n, n; lower triangle) to tridiagonal form:
// diagonal d (n), off-diagonal e (n, e[i] couples i-1 and i). With
// `vectors`, V becomes the orthogonal transformation; else it is scratch.
static void tred2(double *vt, int64_t n, double *d, double *e, int vectors) {
  for (int64_t j = 0; j < n; j++) d[j] = V(n - 1, j);
  for (int64_t i = n - 1; i > 0; i--) {
    double scale = 0, h = 0;
    for (int64_t k = 0; k < i; k++) scale += fabs(d[k]);
    if (scale == 0) { // row already reduced: skip the reflection
      e[i] = d[i - 1];
      for (int64_t j = 0; j < i; j++) {
        d[j] = V(i - 1, j);
        V(i, j) = 0;
        V(j, i) = 0;
      }
      d[i] = h;
      continue;
    }
    // The Householder vector, scaled to avoid under/overflow.
    for (int64_t k = 0; k < i; k++) {
      d[k] /= scale;
      h += d[k] * d[k];
    }
    double f = d[i - 1], g = sqrt(h);
    if (f > 0) g = -g;
    e[i] = scale * g;
    h -= f * g;
    d[i - 1] = f - g;
    for (int64_t j = 0; j < i; j++) e[j] = 0;
    // Apply the similarity transformation to the remaining columns.
    for (int64_t j = 0; j < i; j++) {
      f = d[j];
      V(j, i) = f;
      g = e[j] + V(j, j) * f;
      for (int64_t k = j + 1; k <= i - 1; k++) {
        g += V(k, j) * d[k];
        e[k] += V(k, j) * f;
      }
      e[j] = g;
    }
    f = 0;
    for (int64_t j = 0; j < i; j++) {
      e[j] /= h;
      f += e[j] * d[j];
    }
    const double hh = f / (h + h);
    for (int64_t j = 0; j < i; j++) e[j] -= hh * d[j];
    for (int64_t j = 0; j < i; j++) {
      f = d[j];
      g = e[j];
      for (int64_t k = j; k <= i - 1; k++) V(k, j) -= (f * e[k] + g * d[k]);
      d[j] = V(i - 1, j);
      V(i, j) = 0;
    }
    d[i] = h;
  }
  if (!vectors) { // the diagonal was left in place; skip accumulating
    for (int64_t j = 0; j < n; j++) d[j] = V(j, j);
    e[0] = 0;
    return;
  }
  // Accumulate the transformations.
  for (int64_t i = 0; i < n - 1; i++) {
    V(n - 1, i) = V(i, i);
    V(i, i) = 1;
    const double h = d[i + 1];
    if (h != 0) {
      for (int64_t k = 0; k <= i; k++) d[k] = V(k, i + 1) / h;
      for (int64_t j = 0; j <= i; j++) {
        double g = 0;
        for (int64_t k = 0; k <= i; k++) g += V(k, i + 1) * V(k, j);
        for (int64_t k = 0; k <= i; k++) V(k, j) -= g * d[k];
      }
    }
    for (int64_t k = 0; k <= i; k++) V(k, i + 1) = 0;
  }
  for (int64_t j = 0; j < n; j++) {
    d[j] = V(n - 1, j);
    V(n - 1, j) = 0;
  }
  V(n - 1, n - 1) = 1;
  e[0] = 0;
}

// One implicit QL sweep on the unreduced block l..m, rotating V's columns
// when vt is given. Returns nothing: convergence is judged by the caller.
static void ql_sweep(double *d, double *e, int64_t n, int64_t l, int64_t m, double *f, double *vt) {
  double g = d[l];
  double p = (d[l + 1] - g) / (2 * e[l]);
  double r = hypot(p, 1);
  if (p < 0) r = -r;
  d[l] = e[l] / (p + r);
  d[l + 1] = e[l] * (p + r);
  const double dl1 = d[l + 1];
  double h = g - d[l];
  for (int64_t i = l + 2; i < n; i++) d[i] -= h;
  *f += h;
  p = d[m];
  double c = 1, c2 = 1, c3 = 1, s = 0, s2 = 0;
  const double el1 = e[l + 1];
  for (int64_t i = m - 1; i >= l; i--) {
    c3 = c2;
    c2 = c;
    s2 = s;
    g = c * e[i];
    h = c * p;
    r = hypot(p, e[i]);
    e[i + 1] = s * r;
    s = e[i] / r;
    c = p / r;
    p = c * d[i] - s * g;
    d[i + 1] = h + s * (c * g + s * d[i]);
    if (vt)
      for (int64_t k = 0; k < n; k++) {
        h = V(k, i + 1);
        V(k, i + 1) = s * V(k, i) + c * h;
        V(k, i) = c * V(k, i) - s * h;
      }
  }
  p = -s * s2 * c3 * el1 * e[l] / dl1;
  e[l] = s * p;
  d[l] = c * p;
}

// Diagonalises the tridiagonal (d, e) from tred2; eigenvalues into d.
static a3_status tql2(double *d, double *e, int64_t n, double *vt) {
  for (int64_t i = 1; i < n; i++) e[i - 1] = e[i];
  e[n - 1] = 0;
  double f = 0, tst1 = 0;
  const double eps = 0x1p-52;
  for (int64_t l = 0; l < n; l++) {
    tst1 = fmax(tst1, fabs(d[l]) + fabs(e[l]));
    int64_t m = l;
    while (m < n - 1 && !(fabs(e[m]) <= eps * tst1)) m++; // e[n-1] == 0 ends it
    for (int sweep = 0; m > l && fabs(e[l]) > eps * tst1; sweep++) {
      if (sweep == EIGH_MAX_SWEEPS)
        return A3_FAIL(A3_ERR_INTERNAL,
                       "symmetric eigensolver: QL iteration did not converge for eigenvalue "
                       "%lld of %lld after %d sweeps (|e| = %g, tolerance %g)",
                       (long long)l, (long long)n, EIGH_MAX_SWEEPS, fabs(e[l]), eps * tst1);
      ql_sweep(d, e, n, l, m, &f, vt);
    }
    d[l] += f;
    e[l] = 0;
  }
  return A3_OK;
}

// Ascending order, eigenvector columns along (selection sort: O(n^2) swaps
// of columns is nothing next to the O(n^3) above).
static void sort_ascending(double *d, int64_t n, double *vt) {
  for (int64_t i = 0; i < n - 1; i++) {
    int64_t k = i;
    for (int64_t j = i + 1; j < n; j++)
      if (d[j] < d[k]) k = j;
    if (k == i) continue;
    const double t = d[k];
    d[k] = d[i];
    d[i] = t;
    if (vt)
      for (int64_t r = 0; r < n; r++) {
        const double u = V(r, i);
        V(r, i) = V(r, k);
        V(r, k) = u;
      }
  }
}
#undef V

static void transpose_in_place(double *m, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j < i; j++) {
      const double t = m[i * n + j];
      m[i * n + j] = m[j * n + i];
      m[j * n + i] = t;
    }
}

a3_status a3_sym_eigh(const double *a, int64_t n, double *w, double *v) {
  if (n < 1 || !a || !w)
    return A3_FAIL(A3_ERR_INTERNAL, "a3_sym_eigh: bad arguments (n = %lld)", (long long)n);
  for (int64_t i = 0; i < n; i++)
    for (int64_t j = 0; j <= i; j++)
      if (!isfinite(a[i * n + j]))
        return A3_FAIL(A3_ERR_INPUT, "symmetric eigensolver: non-finite entry (%lld, %lld) = %g",
                       (long long)i, (long long)j, a[i * n + j]);
  double *vt = v, *e = NULL; // vt = V^T, see V(i, j)
  if (!vt) A3_TRY(A3_ALLOC(vt, n * n));
  a3_status st = A3_ALLOC(e, n);
  if (st == A3_OK) {
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j <= i; j++) vt[j * n + i] = a[i * n + j]; // V's lower = a's lower
    tred2(vt, n, w, e, v != NULL);
    st = tql2(w, e, n, v ? vt : NULL);
    if (st == A3_OK) sort_ascending(w, n, v ? vt : NULL);
    if (st == A3_OK && v) transpose_in_place(v, n); // V itself: eigenvectors as columns
  }
  free(e);
  if (!v) free(vt);
  if (st != A3_OK) a3_error_trace(__FILE__, __LINE__);
  return st;
}
