"""Compares two a3fta results files point by point (used by the Slurm job tests).

compare_results.py A.h5 B.h5 [OUTPUT_DIR_A OUTPUT_DIR_B]

Every dataset whose first dimension is the number of points must hold equal values in both
files (NaN equal to NaN), except the timings (wall_s, compute_s, peak_mem_bytes and everything
under /timing: per-rank step times, steps timed, idle), which differ between runs;
/points/config is compared with OUTPUT_DIR_A replaced by OUTPUT_DIR_B (the point folders
differ when the sweeps ran into different folders). Both files must hold the same
datasets, every point done. Prints 'same: N points, D datasets' or the differences; exit 1 on
a difference.
"""
import sys

import h5py
import numpy as np

TIMINGS = {"wall_s", "compute_s", "peak_mem_bytes"}
TIMING_GROUP = "timing/"  # a resumed point's /timing/steps counts only its last attempt


def datasets(f):
    out = {}
    f.visititems(lambda name, obj: out.__setitem__(name, obj) if isinstance(obj, h5py.Dataset) else None)
    return out


def main():
    a_path, b_path = sys.argv[1:3]
    dir_a, dir_b = (sys.argv[3:5] + [None, None])[:2]
    a, b = h5py.File(a_path, "r"), h5py.File(b_path, "r")
    n = a["status"].shape[0]
    da, db = datasets(a), datasets(b)
    problems = []
    if sorted(da) != sorted(db):
        problems.append(f"different datasets: {sorted(set(da) ^ set(db))}")
    for name in ("status",):
        for p, f in ((a_path, a), (b_path, b)):
            if not (f[name][:] == 1).all():
                problems.append(f"{p}: not every point is done: /status = {list(f[name][:])}")
    compared = 0
    for name in sorted(set(da) & set(db)):
        x, y = da[name], db[name]
        if not x.shape or x.shape[0] != n or name in TIMINGS or name.startswith(TIMING_GROUP):
            continue
        compared += 1
        if x.shape != y.shape or x.dtype != y.dtype:
            problems.append(f"/{name}: shape/type {x.shape} {x.dtype} vs {y.shape} {y.dtype}")
            continue
        xv, yv = x[:], y[:]
        if name == "points/config" and dir_a and dir_b:
            xv = np.array([v.replace(dir_a.encode(), dir_b.encode()) for v in xv])
        if xv.dtype.kind == "f":
            same = np.array_equal(xv, yv, equal_nan=True)
        else:
            same = np.array_equal(xv, yv)
        if not same:
            rows = [i for i in range(n) if not np.array_equal(np.asarray(xv[i]), np.asarray(yv[i]),
                                                              equal_nan=xv.dtype.kind == "f")]
            problems.append(f"/{name}: points {rows} differ (first: {xv[rows[0]]!r} vs {yv[rows[0]]!r})")
    if problems:
        print(f"{a_path} vs {b_path}:")
        for p in problems:
            print("  " + p[:400])
        return 1
    print(f"same: {n} points, {compared} per-point datasets (timings aside)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
