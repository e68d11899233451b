#!/usr/bin/python3
"""Independent reference values for a3fta's metrics (src/eval, a3fta/metrics.h),
in numpy float64, written as the fixture tests/eval/metrics_golden.h5.

Regenerate (deterministic: fixed seeds; numpy and h5py only):

    /usr/bin/python3 tools/metrics_reference.py tests/eval/metrics_golden.h5

Methods differ from the C code on purpose, so that agreement means something:
- FID: Tr sqrt(S1^1/2 S2 S1^1/2) is the nuclear norm (sum of singular values)
  of A^T B, where S1 = A A^T and S2 = B B^T with A = Xc1^T / sqrt(N1 - 1):
  one SVD of the (N1, N2) matrix Xc1 Xc2^T, no covariance square root at all
  (the C code does two symmetric eigen-decompositions). Cross-checked here
  against sum sqrt(eigvals(S1 S2)) (non-symmetric eigenvalues) and, when scipy
  is installed, against scipy.linalg.sqrtm (pytorch-fid's route) on the
  full-rank cases; the script stops if they disagree.
- KID: torch-fidelity's mmd2 formula (full kernel sums minus the diagonal) on
  the subsets that a3fta draws; Philox4x32-10 and the partial Fisher-Yates
  shuffle are re-implemented here in Python integers from their definitions.
- precision/recall/density/coverage: a transcription of the `prdc` package
  (Naeem et al.), with distances as sqrt of float64 sums of squares and the
  k-NN radius by np.partition with self-distance included (k + 1-th value).
- diversity, memorization: direct float64 distances, argsort (stable) for
  neighbours.

Fixture layout (features float32 (N, D); values float64 attributes unless said):
  /fid/<case>   x1 (N1, D), x2 (N2, D); attrs fid, mean_dist2, trace1, trace2,
                trace_sqrt. Cases: differ (two different distributions), close
                (two draws of one distribution: small FID, hard cancellation),
                rankdef (N1, N2 < D: singular covariances).
  /kid/<case>   attrs fid_case (which /fid case holds x1, x2), seed, n_subsets,
                subset_size, m, mean, std; per_subset (n_subsets,) float64;
                idx1, idx2 (n_subsets, m) int64: the rows drawn.
  /prdc/<case>  attrs fid_case (x1 is real, x2 is fake), k, precision, recall,
                density, coverage.
  /diversity    attrs fid_case, mean_pairwise (over the rows of x2).
  /memo         samples (N, P), train (T, P) pixels; features (N, D); attr
                ratio; nearest, second (N,) int64; d1, d2 (N,) float64;
                memorized (N,) int64 (0/1); attrs fraction, n_memorized;
                order (N,) int64 (most memorized first); cluster_mean,
                n_clusters (intra-cluster diversity of features, clusters =
                nearest training image in pixel space); per_cluster (T,) (NaN
                when < 2 members).
  /eigh         a (n, n) float64 symmetric; w (n,) numpy.linalg.eigvalsh.
"""
import sys

import h5py
import numpy as np

M32 = 0xFFFFFFFF
M64 = (1 << 64) - 1
STREAM_KID_SUBSET = 32


# ---------------------------------------------------------------- Philox (core's RNG)
def philox4x32(key, hi, lo):
    """Philox4x32-10 (Salmon et al. 2011): counter (lo, hi) as four 32-bit words."""
    k0, k1 = key & M32, (key >> 32) & M32
    c = [lo & M32, (lo >> 32) & M32, hi & M32, (hi >> 32) & M32]
    for r in range(10):
        p0 = 0xD2511F53 * c[0]
        p1 = 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & M32, p1 & M32, ((p0 >> 32) ^ c[3] ^ k1) & M32, p0 & M32]
        if r < 9:
            k0 = (k0 + 0x9E3779B9) & M32
            k1 = (k1 + 0xBB67AE85) & M32
    return c


def rng_below(seed, stream, index, n):
    """Uniform in [0, n): rejection of the (2^64 mod n) lowest values, a fresh
    counter per attempt (stream ^ attempt << 56), as a3_rng_below."""
    threshold = (2**64 - n) % n
    attempt = 0
    while True:
        c = philox4x32(seed, (stream ^ (attempt << 56)) & M64, index)
        r = c[0] | (c[1] << 32)
        if r >= threshold:
            return r % n
        attempt += 1


def kid_subset(seed, subset, which, n, m):
    perm = list(range(n))
    base = (2 * subset + which) << 32
    for i in range(m):
        j = i + rng_below(seed, STREAM_KID_SUBSET, base | i, n - i)
        perm[i], perm[j] = perm[j], perm[i]
    return np.array(perm[:m], dtype=np.int64)


# ---------------------------------------------------------------- metrics
def fid(x1, x2):
    x1 = x1.astype(np.float64)
    x2 = x2.astype(np.float64)
    mu1, mu2 = x1.mean(0), x2.mean(0)
    c1, c2 = x1 - mu1, x2 - mu2
    n1, n2 = len(x1), len(x2)
    s1 = c1.T @ c1 / (n1 - 1)
    s2 = c2.T @ c2 / (n2 - 1)
    tr_sqrt = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    # Cross-checks by other routes.
    ev = np.linalg.eigvals(s1 @ s2)
    tr_eig = np.sqrt(np.clip(ev.real, 0, None)).sum()
    assert abs(tr_eig - tr_sqrt) <= 1e-7 * tr_sqrt, (tr_eig, tr_sqrt)
    try:
        import scipy.linalg
        if n1 > x1.shape[1] and n2 > x1.shape[1]:  # sqrtm is unreliable on singular products
            tr_sqrtm = np.trace(scipy.linalg.sqrtm(s1 @ s2)).real
            assert abs(tr_sqrtm - tr_sqrt) <= 1e-8 * tr_sqrt, (tr_sqrtm, tr_sqrt)
            print("  scipy sqrtm agrees: rel %.1e" % (abs(tr_sqrtm - tr_sqrt) / tr_sqrt))
    except ImportError:
        pass
    d = dict(mean_dist2=float(((mu1 - mu2) ** 2).sum()), trace1=float(np.trace(s1)),
             trace2=float(np.trace(s2)), trace_sqrt=float(tr_sqrt))
    d["fid"] = d["mean_dist2"] + d["trace1"] + d["trace2"] - 2 * d["trace_sqrt"]
    print("  FID %.10g (eigvals route rel %.1e)" % (d["fid"], abs(tr_eig - tr_sqrt) / tr_sqrt))
    return d


def poly_kernel(a, b):
    return (a @ b.T / a.shape[1] + 1) ** 3


def mmd2(f1, f2):
    """torch-fidelity's mmd2 (kid.py), unbiased."""
    k11, k22, k12 = poly_kernel(f1, f1), poly_kernel(f2, f2), poly_kernel(f1, f2)
    m = f1.shape[0]
    kt_xx = (k11.sum(axis=-1) - np.diag(k11)).sum()
    kt_yy = (k22.sum(axis=-1) - np.diag(k22)).sum()
    k_xy = k12.sum(axis=0).sum()
    return (kt_xx + kt_yy) / (m * (m - 1)) - 2 * k_xy / m**2


def kid(x1, x2, n_subsets, subset_size, seed):
    x1 = x1.astype(np.float64)
    x2 = x2.astype(np.float64)
    m = min(subset_size, len(x1), len(x2))
    idx1 = np.stack([kid_subset(seed, s, 0, len(x1), m) for s in range(n_subsets)])
    idx2 = np.stack([kid_subset(seed, s, 1, len(x2), m) for s in range(n_subsets)])
    for r in list(idx1) + list(idx2):
        assert len(set(r.tolist())) == m
    vals = np.array([mmd2(x1[idx1[s]], x2[idx2[s]]) for s in range(n_subsets)])
    return dict(m=m, mean=float(vals.mean()), std=float(vals.std())), vals, idx1, idx2


def pairwise(a, b):
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))


def prdc(real, fake, k):
    """Transcription of prdc.compute_prdc (Naeem et al. 2020)."""
    def radii(x):
        dist = pairwise(x, x)
        return np.partition(dist, k, axis=-1)[:, k]  # (k+1)-th smallest, self (0) included
    rr, rf = radii(real), radii(fake)
    drf = pairwise(real, fake)
    # A comparison within rounding of its threshold could go either way in C.
    for r in (rr[:, None], rf[None, :]):
        assert (abs(drf - r) > 1e-9 * r).all(), "a distance ties a k-NN radius: change the data"
    precision = (drf < rr[:, None]).any(axis=0).mean()
    recall = (drf < rf[None, :]).any(axis=1).mean()
    density = (1.0 / k) * (drf < rr[:, None]).sum(axis=0).mean()
    coverage = (drf.min(axis=1) < rr).mean()
    return dict(precision=float(precision), recall=float(recall), density=float(density),
                coverage=float(coverage))


def mean_pairwise(x):
    d = pairwise(x, x)
    iu = np.triu_indices(len(x), 1)
    return float(d[iu].mean())


def memorization(samples, train, ratio):
    d = pairwise(samples, train)
    order = np.argsort(d, axis=1, kind="stable")
    nearest, second = order[:, 0], order[:, 1]
    rows = np.arange(len(samples))
    d1, d2 = d[rows, nearest], d[rows, second]
    memorized = ((d1 == 0) | (d1 < d2 / ratio)).astype(np.int64)
    gap = abs(d1 * ratio - d2)[d1 > 0]
    assert (gap > 1e-9 * d2[d1 > 0]).all(), "a sample sits on the threshold: change the data"
    key = np.where(d1 == 0, 0.0, d1 / np.where(d2 == 0, 1, d2))
    mem_order = np.lexsort((rows, key))  # by key, ties by index
    return nearest, second, d1, d2, memorized, mem_order


def intra_cluster(features, cluster, n_clusters):
    per = np.full(n_clusters, np.nan)
    for c in range(n_clusters):
        members = features[cluster == c]
        if len(members) >= 2:
            per[c] = mean_pairwise(members)
    used = ~np.isnan(per)
    return per, float(per[used].mean()), int(used.sum())


# ---------------------------------------------------------------- data
def correlated(rng, n, d, scale, shift):
    mix = rng.normal(size=(d, d)) * scale / np.sqrt(d)
    return (rng.normal(size=(n, d)) @ mix + shift).astype(np.float32)


def fid_cases(rng):
    d = 32
    cases = {}
    a = correlated(rng, 200, d, 1.0, 0.5)
    b = np.tanh(correlated(rng, 150, d, 1.0, 0.0)) * 1.3 + 0.5  # non-Gaussian, other covariance
    cases["differ"] = (a, b.astype(np.float32))
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    cases["close"] = ((rng.normal(size=(200, d)) @ mix + 1).astype(np.float32),
                      (rng.normal(size=(180, d)) @ mix + 1).astype(np.float32))
    cases["rankdef"] = (correlated(rng, 20, d, 1.0, 0.0), correlated(rng, 24, d, 0.8, 0.4))
    return cases


def memo_data(rng):
    t, p, dfeat = 10, 64, 16
    train = rng.uniform(0, 1, size=(t, p))
    train[9] = train[3]  # a duplicated training image
    parts = [train[rng.integers(0, t, 15)] + rng.normal(0, 0.01, size=(15, p)),  # near copies
             train[[0, 3, 5, 7, 9]],  # exact copies (3 and 9: of the duplicate)
             0.5 * train[rng.integers(0, t, 10)] + 0.5 * train[rng.integers(0, t, 10)],  # blends
             0.8 * train[rng.integers(0, t, 10)] + 0.2 * rng.uniform(0, 1, size=(10, p)),
             rng.uniform(0, 1, size=(20, p))]  # unrelated
    samples = np.concatenate(parts).astype(np.float32)
    train = train.astype(np.float32)
    proj = rng.normal(size=(p, dfeat)) / np.sqrt(p)
    features = (samples @ proj + rng.normal(0, 0.05, size=(len(samples), dfeat))).astype(np.float32)
    return samples, train, features


def main(path):
    rng = np.random.default_rng(20261126)
    cases = fid_cases(rng)
    with h5py.File(path, "w") as f:
        for name, (x1, x2) in cases.items():
            print("fid/%s: %s vs %s" % (name, x1.shape, x2.shape))
            g = f.create_group("fid/" + name)
            g["x1"], g["x2"] = x1, x2
            for key, val in fid(x1, x2).items():
                g.attrs[key] = val
        for name, case, n_subsets, size, seed in [("differ50", "differ", 20, 50, 7),
                                                  ("close_all", "close", 5, 1000, 3),
                                                  ("rankdef10", "rankdef", 10, 10, 11)]:
            x1, x2 = cases[case]
            vals, per, idx1, idx2 = kid(x1, x2, n_subsets, size, seed)
            print("kid/%s: m %d mean %.8g std %.3g" % (name, vals["m"], vals["mean"], vals["std"]))
            g = f.create_group("kid/" + name)
            g.attrs.update(dict(fid_case=case, seed=seed, n_subsets=n_subsets, subset_size=size,
                                **vals))
            g["per_subset"], g["idx1"], g["idx2"] = per, idx1, idx2
        for name, case, k in [("differ_k3", "differ", 3), ("close_k5", "close", 5),
                              ("rankdef_k3", "rankdef", 3)]:
            x1, x2 = cases[case]
            vals = prdc(x1, x2, k)
            print("prdc/%s: %s" % (name, vals))
            g = f.create_group("prdc/" + name)
            g.attrs.update(dict(fid_case=case, k=k, **vals))
        g = f.create_group("diversity")
        g.attrs["fid_case"] = "differ"
        g.attrs["mean_pairwise"] = mean_pairwise(cases["differ"][1])

        samples, train, features = memo_data(rng)
        ratio = 3.0
        nearest, second, d1, d2, memorized, order = memorization(samples, train, ratio)
        per, cmean, nclu = intra_cluster(features.astype(np.float64), nearest, len(train))
        print("memo: %d of %d memorized, %d clusters, intra-cluster %.6g" %
              (memorized.sum(), len(samples), nclu, cmean))
        g = f.create_group("memo")
        g["samples"], g["train"], g["features"] = samples, train, features
        g["nearest"], g["second"], g["d1"], g["d2"] = nearest, second, d1, d2
        g["memorized"], g["order"], g["per_cluster"] = memorized, order, per
        g.attrs.update(dict(ratio=ratio, fraction=float(memorized.mean()),
                            n_memorized=int(memorized.sum()), cluster_mean=cmean,
                            n_clusters=nclu))

        a = rng.normal(size=(40, 40))
        a = a + a.T
        a[:, :3] = a[:3, :] = 0  # a zero block: exercises tred2's "already reduced" branch
        a[0, 0] = 1e-3
        f["eigh/a"], f["eigh/w"] = a, np.linalg.eigvalsh(a)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: /usr/bin/python3 tools/metrics_reference.py OUT.h5")
    main(sys.argv[1])
