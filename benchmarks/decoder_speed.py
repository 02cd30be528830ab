"""Seconds per I(Z;Y) estimate of the decoders on informative Z (the brief's target: <= 0.5 s at
N = 2,000, D = 84, 10 classes, one core).

Z: gmm-d84-I1.5 of benchmarks/mi_accuracy.py (synthetic, 84-d, 10 classes) and, if the cache of
benchmarks/lenet_activations.py exists, the LeNet activations after 15,640 steps (shard probe).
Each row is the best and the median of --repeats runs, on one core: every estimate runs with one
BLAS thread (fedmpi.info; before 2026-12-04 only with OMP_NUM_THREADS=1 set, as below).

Usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/decoder_speed.py [--sizes 1000 2000 5000]
       [--estimators decoder decoder:transform=standardize decoder_mlp]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mi_accuracy  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000])
    ap.add_argument("--estimators", nargs="+",
                    default=["decoder", "decoder:transform=standardize", "decoder:transform=quantile"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--lenet-cache", default="/tmp/fedmpi-lenet-z.npz")
    args = ap.parse_args()
    g = mi_accuracy.GaussianMixture(84, np.full(10, 0.1), 1.5)
    data = {("gmm-d84-I1.5", n): g.draw(n, np.random.default_rng(0)) for n in args.sizes}
    if os.path.exists(args.lenet_cache):
        with np.load(args.lenet_cache) as f:
            for n in args.sizes:
                if n <= f["shard_z_15640"].shape[0]:
                    data["lenet-15640", n] = (f["shard_z_15640"][:n], f["shard_y_15640"][:n])
    print(f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
    print("| Z | N | estimator | best s | median s | estimate |")
    print("|---|---|---|---|---|---|")
    for (case, n), (z, y) in data.items():
        for spec in args.estimators:
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                value, _ = mi_accuracy.run_estimator(spec, z, y)
                times.append(time.perf_counter() - t0)
            print(f"| {case} | {n} | {spec} | {min(times):.3f} | {float(np.median(times)):.3f} | {value:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
