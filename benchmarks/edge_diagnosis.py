"""Why does EDGE underestimate I(Z;Y) for an 84-d Z?  Vary one of its choices at a time.

EDGE (fedmpi.info.edge) quantises Z in three steps; each is a candidate:

1. the random projection of the standardized Z to d' = floor(log2(N/10))
   axes (7 at N = 2,000) -- here d' is set to 1, 2, 4, 7, 14, 28, 84 (84 =
   no projection), and the projection is also replaced by the top-d' principal
   axes of Z (``pca``) or by the d' axes of the exact class-mean subspace
   (``oracle``: the 9-d span of the true class means, available only for
   these synthetic cases; an upper reference for any linear projection);
2. the cell-count target K = N^0.4 (21 cells at N = 2,000), which sets the
   bucket width -- here the exponent is 0.2 ... 0.9;
3. per-side hashing: the labels are their own cells; Z's cells are a grid
   on the projected axes -- measured implicitly by 1 and 2 (with labels on
   one side there is no second hashed side to misalign).

For each variant: the mean EDGE I(Z;Y) over --seeds data sets at N, next to
the truth, and the value on labels independent of Z (truth 0: the plug-in
bias that larger K and d' bring).  Cases are gmm-d{d}-I{t} of
benchmarks/mi_accuracy.py.

Usage: PYTHONPATH=. python benchmarks/edge_diagnosis.py [--n 2000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fedmpi.info import _common as c  # noqa: E402
from fedmpi.info import edge  # noqa: E402

import mi_accuracy  # noqa: E402


def edge_zy(z: np.ndarray, y: np.ndarray, params: edge.EdgeParams, dim: int, axes: str,
            oracle_means: np.ndarray | None = None) -> float:
    """EDGE I(Z;Y) with the projection replaced: ``axes`` "random" (EDGE's W ~ N(0, 1/d)), "pca", "oracle"."""
    rng = np.random.default_rng([params.seed, 0])
    x = c.standardize(z)
    d = x.shape[1]
    if dim >= d:
        proj = x
    elif axes == "random":
        proj = x @ (rng.standard_normal((d, dim)) / math.sqrt(d))
    elif axes == "pca":
        _, _, vt = np.linalg.svd(x - x.mean(0), full_matrices=False)
        proj = x @ vt[:dim].T
    else:  # the class-mean subspace, in standardized coordinates
        centred = (oracle_means - oracle_means.mean(0)) / z.std(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        proj = x @ vt[:min(dim, vt.shape[0])].T
    dp = proj.shape[1]
    shifts = rng.random((params.L + 1, dp))
    key = rng.integers(1, 2**62, size=dp, dtype=np.int64) | 1
    eps0 = edge.bucket_width(proj, params, shifts[params.L], key)
    values = []
    for l, t in enumerate(edge.ensemble_factors(params)):
        codes = c.row_codes(np.floor(proj / (t * eps0) + shifts[l]).astype(np.int64))
        values.append(edge.edge_mi_single(codes, y, params.U))
    return float(np.median(values))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--cases", nargs="+", default=["gmm-d84-I1.0", "gmm-d84-I1.5", "gmm-d84-I2.25", "gmm-d10-I1.5"])
    args = ap.parse_args()
    t0 = time.perf_counter()
    uniform = np.full(10, 0.1)
    mixtures = {}
    for name in args.cases:
        d, t = name.split("-")[1:]
        mixtures[name] = mi_accuracy.GaussianMixture(int(d[1:]), uniform, float(t[1:]))
    default = edge.EdgeParams()
    dims = (1, 2, 4, 7, 14, 28, 84)
    exponents = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    print(f"N = {args.n}, {args.seeds} seeds; EDGE defaults except the varied choice "
          f"(default d' = {edge.projected_dim(args.n, 84)}, K = N^0.4 = {round(args.n ** 0.4)} cells)\n")
    for name, g in mixtures.items():
        data = [g.draw(args.n, np.random.default_rng(s)) for s in range(args.seeds)]
        indep = [(z, np.random.default_rng(100 + s).integers(0, 10, args.n)) for s, (z, _) in enumerate(data)]

        def mean_edge(params, dim, axes, sets):
            return float(np.mean([edge_zy(z, y, params, dim, axes, g.means) for z, y in sets]))

        print(f"### {name}: truth {g.truth:.3f} nats\n")
        print("| projection | d' | K exponent | cells K | EDGE I(Z;Y) | on independent labels |")
        print("|---|---|---|---|---|---|")
        for axes in ("random", "pca", "oracle"):
            for dim in dims:
                if dim > g.d or (axes != "random" and dim >= g.d):
                    continue
                print(f"| {axes} | {dim} | 0.4 | {round(args.n ** 0.4)} | {mean_edge(default, dim, axes, data):.3f} | "
                      f"{mean_edge(default, dim, axes, indep):.3f} |", flush=True)
        d_default = edge.projected_dim(args.n, g.d)
        for expo in exponents:
            p = edge.EdgeParams(cells_exponent=expo)
            for axes in ("random", "oracle"):
                dim = d_default if axes == "random" else 9
                print(f"| {axes} | {dim} | {expo} | {round(args.n ** expo)} | {mean_edge(p, dim, axes, data):.3f} | "
                      f"{mean_edge(p, dim, axes, indep):.3f} |", flush=True)
        print()
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
