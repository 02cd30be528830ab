"""Time the fedmpi.info estimators at the sizes the coordinator uses.

X: (N, 3072) float32 uniform "images" (prepared once, as the coordinator
does), Z: (N, 84) float32 tanh of a random projection of X, Y: 10 labels.
For every estimator and N in (1000, 5000, 25000) prints the seconds for
prepare(X), estimate(prepared X, Z) and estimate(Z, Y) ("n/a" where an
estimator does not estimate I(X;Z)), then the growth ratio per 5x N.  The
labels here are independent of Z, the easiest case for the decoders; their
times on informative Z are in benchmarks/mi_accuracy.py.  A step whose predicted time (quadratic extrapolation from
the previous N) exceeds --budget seconds is skipped with the reason printed.

Usage: python benchmarks/mi_speed.py [--sizes 1000 5000 25000] [--budget 120]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from fedmpi.info import ESTIMATORS, XZ, estimate, pairs, prepare


def make_data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 3072), dtype=np.float32)  # (N, 3072) float32
    w = rng.standard_normal((3072, 84)).astype(np.float32) / np.sqrt(3072 / 12)
    z = np.tanh((x - 0.5) @ w)  # (N, 84) float32
    y = rng.integers(0, 10, n)  # (N,) int64
    return x, z, y


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return time.perf_counter() - t0, value


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000, 25000])
    ap.add_argument("--budget", type=float, default=120.0)
    ap.add_argument("--estimators", nargs="+", default=list(ESTIMATORS))
    args = ap.parse_args()

    data = {n: make_data(n) for n in args.sizes}
    rows = []
    times: dict[tuple[str, str], list[float | None]] = {}
    for name in args.estimators:
        last: dict[str, tuple[int, float]] = {}
        for n in args.sizes:
            x, z, y = data[n]
            cells = [name, str(n)]
            steps = [("prepare(X)", lambda: prepare(name, x)), None, ("I(Z;Y)", lambda: estimate(name, z, y))]
            prepared = None
            for i, step in enumerate(steps):
                label = "I(X;Z)" if step is None else step[0]
                if label != "I(Z;Y)" and XZ not in pairs(name):
                    cells.append("n/a")  # the decoders estimate I(Z;Y) only
                    times.setdefault((name, label), []).append(None)
                    continue
                prev = last.get(label)
                predicted = None if prev is None else prev[1] * (n / prev[0]) ** 2
                if predicted is not None and predicted > args.budget:
                    print(f"skip {name} {label} N={n}: predicted {predicted:.0f} s > budget {args.budget:.0f} s")
                    cells.append("skipped")
                    times.setdefault((name, label), []).append(None)
                    continue
                if step is None:
                    if prepared is None:
                        cells.append("skipped")
                        times.setdefault((name, label), []).append(None)
                        continue
                    seconds, value = timed(lambda: estimate(name, prepared, z))
                else:
                    seconds, value = timed(step[1])
                    if i == 0:
                        prepared = value
                if not isinstance(value, float):
                    value = None
                cells.append(f"{seconds:.3f}" + ("" if value is None else f" ({value:.3f})"))
                last[label] = (n, seconds)
                times.setdefault((name, label), []).append(seconds)
            rows.append(cells)
            print("  ".join(cells), flush=True)

    print()
    print("| estimator | N | prepare(X) s | I(X;Z) s (value, nats) | I(Z;Y) s (value, nats) |")
    print("|---|---|---|---|---|")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
    print()
    print("Growth of the time per 5x N (ratio of consecutive sizes):")
    for (name, label), ts in times.items():
        ratios = [f"{b / a:.1f}x" if a and b else "-" for a, b in zip(ts, ts[1:])]
        print(f"  {name:8s} {label:11s} " + ", ".join(ratios))


if __name__ == "__main__":
    main()
