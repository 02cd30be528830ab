"""Measure the error of each fedmpi.info estimator on cases with known MI.

Cases (truth in nats):
- gauss-d{d}-rho{rho}: d independent pairs (x_i, rho x_i + sqrt(1-rho^2) e_i),
  I = -(d/2) ln(1 - rho^2).
- classes-2d: Z|y ~ N(mu_y, 0.5^2 I_2), 10 equiprobable labels, means
  1.0 * N(0, I); I(Z;Y) by Monte-Carlo (200,000 draws) of H(Y) - H(Y|Z).
- indep-labels-84d: Z ~ N(0, I_84) and labels independent of it, I = 0.

Binning on float pairs uses a_distinct=False (plug-in MI of both binned
sides); KDE on float pairs is left out (it bounds I(X; Z + noise) for a
deterministic Z = f(X), which these pairs are not).  Defaults otherwise.

Usage: PYTHONPATH=. python benchmarks/mi_accuracy.py [--sizes 1000 5000]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy.special import logsumexp

from fedmpi.info import ESTIMATORS, estimate


def gaussian_case(d, rho):
    def make(n, seed):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((n, d))
        return x, rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((n, d))
    return make, -0.5 * d * np.log(1 - rho**2)


def classes_case(d=2, sep=1.0, s=0.5):
    mu = sep * np.random.default_rng(1234).standard_normal((10, d))

    def make(n, seed):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 10, n)
        return mu[y] + s * rng.standard_normal((n, d)), y

    z, y = make(200_000, 99)
    logits = -((z[:, None, :] - mu[None]) ** 2).sum(-1) / (2 * s**2)
    truth = np.log(10) + (logits[np.arange(len(y)), y] - logsumexp(logits, axis=1)).mean()
    return make, truth


def indep_labels_case():
    def make(n, seed):
        rng = np.random.default_rng(seed)
        return rng.standard_normal((n, 84)), rng.integers(0, 10, n)
    return make, 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 5000])
    args = ap.parse_args()
    cases = {f"gauss-d1-rho{r}": gaussian_case(1, r) for r in (0.0, 0.5, 0.9, 0.99)}
    cases["gauss-d2-rho0.9"] = gaussian_case(2, 0.9)
    cases["gauss-d5-rho0.5"] = gaussian_case(5, 0.5)
    cases["classes-2d"] = classes_case()
    cases["indep-labels-84d"] = indep_labels_case()
    print("| case | estimator | N | truth | estimate | error |")
    print("|---|---|---|---|---|---|")
    for case, (make, truth) in cases.items():
        for name in ESTIMATORS:
            for n in args.sizes:
                a, b = make(n, seed=n)
                labels = b.ndim == 1
                if name == "kde" and not labels:
                    continue
                kw = {"a_distinct": False} if name == "binning" and not labels else {}
                value = estimate(name, a, b, **kw)
                print(f"| {case} | {name} | {n} | {truth:.3f} | {value:.3f} | {value - truth:+.3f} |",
                      flush=True)


if __name__ == "__main__":
    main()
