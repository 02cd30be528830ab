"""Measure the error of each fedmpi.info estimator on cases with known MI, and on real activations.

Suites (``--suite``, any of them; default ``labels lenet``):

``labels`` -- I(Z;Y), 10 classes, the regime of a trained network's last layer:
- ``gmm-d{d}-I{t}``: Z|y ~ N(s * m_y, I_d), m_y ~ N(0, I_d) fixed
  (``default_rng(1234 + d)``), equiprobable labels, d in (10, 20, 84); the
  scale s is found by bisection (common random numbers, 20,000 draws) so
  that I(Z;Y) is about t in (0.3, 1.0, 1.5, 2.0, 2.25) nats; the truth is
  then H(Y) + E ln p(y|z) with the exact posterior, by Monte Carlo over
  200,000 fresh draws (its standard error is printed).
- ``noise-rho{rho}``: well separated clusters (Z|c ~ N(10 m_c, I_84), so
  the cluster c is a function of Z up to an overlap of order e^-1000),
  c uniform, and the label is c with probability 1 - rho and otherwise
  drawn uniformly from all 10 classes (possibly c again).  Then
  p(y|z) = 1 - rho + rho/10 for y = c and rho/10 for each other class, Y
  is uniform, and exactly
  I(Z;Y) = ln 10 + (1 - rho + rho/10) ln(1 - rho + rho/10) + 9 (rho/10) ln(rho/10).
- ``prior-d{d}-I{t}``: as gmm, with class priors p_c proportional to
  exp(-0.35 c) (H(Y) = 1.915 nats), truth by Monte Carlo with the prior in
  the posterior.
- ``softplus``, ``cube``, ``rotation``: gmm-d84-I1.5 with Z replaced by
  softplus(Z), Z^3 elementwise, or Z Q with Q a random orthogonal matrix:
  invertible maps, so the truth is unchanged.
  Each case runs at every ``--sizes`` N with ``--seeds`` seeds (data seed =
  seed; estimator parameters at their defaults).

``lenet`` -- Z of a LeNet trained in the repo (benchmarks/lenet_activations.py,
cached): truth unknown; for each snapshot, probe set (shard = training
examples, as fedmpi logs them; test = held out) and N, every estimator is
checked against [Fano bound from the model's own errors, H(Y)] with
:func:`fedmpi.info.bounds.compare_to_bounds` (2 combined standard errors).

``old`` -- the cases of the previous version of this benchmark (Gaussian
pairs for I(X;Z)-type estimates, classes-2d, independent labels in 84-d),
one sample per N.

Slow estimators (``--slow``, default ksg kde decoder_mlp) run only at
N <= ``--slow-max-n`` (2000).  Times are wall-clock seconds of one estimate
in this process (set OMP_NUM_THREADS=1 for one core).

Usage: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/mi_accuracy.py
       [--suite labels lenet old] [--cases gmm-d84 noise]
       [--estimators decoder decoder:transform=standardize edge]
       [--sizes 1000 2000 5000] [--seeds 5]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
from scipy.special import logsumexp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fedmpi import info  # noqa: E402
from fedmpi.info import ESTIMATORS, bounds, estimate, estimate_with_error  # noqa: E402

TARGETS = (0.3, 1.0, 1.5, 2.0, 2.25)
DIMS = (10, 20, 84)
RHOS = (0.2, 0.5, 0.8)
PRIOR_DECAY = 0.35
MC_TRUTH = 200_000
MC_BISECT = 20_000


def parse_spec(spec: str) -> tuple[str, dict]:
    """"name" or "name:key=value,key=value" (values as Python literals or strings) -> (name, overrides)."""
    import ast
    name, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        key, _, text = item.partition("=")
        try:
            overrides[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            overrides[key] = text
    return name, overrides


def run_estimator(spec: str, a, b):
    name, overrides = parse_spec(spec)
    return estimate_with_error(name, a, b, **overrides)


# ----- cases with known I(Z;Y) ---------------------------------------------------


def _log_posterior_true(z, y, means, log_prior):
    """ln p(y_i | z_i) (n,) for Z|y ~ N(means_y, I), in chunks of 20,000 rows."""
    out = np.empty(z.shape[0])
    sq_means = (means ** 2).sum(1)
    for start in range(0, z.shape[0], 20_000):
        zc = z[start:start + 20_000]
        logits = zc @ means.T - 0.5 * sq_means + log_prior  # (chunk, K); the -||z||^2/2 term cancels
        out[start:start + 20_000] = logits[np.arange(zc.shape[0]), y[start:start + 20_000]] - logsumexp(logits, 1)
    return out


class GaussianMixture:
    """Z|y ~ N(scale * m_y, I_d), y ~ prior."""

    def __init__(self, d: int, prior: np.ndarray, target: float):
        self.d, self.prior = d, prior
        self.log_prior = np.log(prior)
        self.h_y = float(-(prior * self.log_prior).sum())
        self.base = np.random.default_rng(1234 + d).standard_normal((len(prior), d))
        rng = np.random.default_rng(99)
        y = rng.choice(len(prior), MC_BISECT, p=prior)
        eps = rng.standard_normal((MC_BISECT, d))

        def mi(scale):  # common random numbers: smooth and monotone in scale
            means = scale * self.base
            return self.h_y + _log_posterior_true(means[y] + eps, y, means, self.log_prior).mean()

        lo, hi = 0.0, 1.0
        while mi(hi) < target:
            hi *= 2.0
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if mi(mid) < target else (lo, mid)
        self.scale = 0.5 * (lo + hi)
        self.means = self.scale * self.base
        zt, yt = self.draw(MC_TRUTH, np.random.default_rng(7))
        terms = _log_posterior_true(zt, yt, self.means, self.log_prior)
        self.truth = self.h_y + float(terms.mean())
        self.truth_se = float(terms.std() / math.sqrt(MC_TRUTH))

    def draw(self, n, rng):
        y = rng.choice(len(self.prior), n, p=self.prior)
        return self.means[y] + rng.standard_normal((n, self.d)), y


def label_noise_truth(rho: float, k: int = 10) -> float:
    keep = 1.0 - rho + rho / k
    other = rho / k
    h_cond = -keep * math.log(keep) - ((k - 1) * other * math.log(other) if other > 0 else 0.0)
    return math.log(k) - h_cond


def labels_cases() -> dict:
    """name -> (make(n, seed) -> (z, y), truth, truth_se)."""
    cases = {}
    uniform = np.full(10, 0.1)
    for d in DIMS:
        for t in TARGETS:
            g = GaussianMixture(d, uniform, t)
            cases[f"gmm-d{d}-I{t}"] = (lambda n, s, g=g: g.draw(n, np.random.default_rng(s)), g.truth, g.truth_se)
    base = np.random.default_rng(4321).standard_normal((10, 84))
    for rho in RHOS:
        def make(n, seed, rho=rho):
            rng = np.random.default_rng(seed)
            c = rng.integers(0, 10, n)
            flip = rng.random(n) < rho
            y = np.where(flip, rng.integers(0, 10, n), c)
            return 10.0 * base[c] + rng.standard_normal((n, 84)), y
        cases[f"noise-rho{rho}"] = (make, label_noise_truth(rho), 0.0)
    prior = np.exp(-PRIOR_DECAY * np.arange(10))
    prior /= prior.sum()
    for d, t in ((20, 1.0), (84, 1.0), (84, 1.5)):
        g = GaussianMixture(d, prior, t)
        cases[f"prior-d{d}-I{t}"] = (lambda n, s, g=g: g.draw(n, np.random.default_rng(s)), g.truth, g.truth_se)
    g = GaussianMixture(84, uniform, 1.5)
    rot, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((84, 84)))
    warps = {"softplus": lambda z: np.logaddexp(0.0, z), "cube": lambda z: z ** 3, "rotation": lambda z: z @ rot}
    for name, warp in warps.items():
        def make(n, seed, warp=warp, g=g):
            z, y = g.draw(n, np.random.default_rng(seed))
            return warp(z), y
        cases[f"{name}-d84-I1.5"] = (make, g.truth, g.truth_se)
    return cases


def run_labels(args) -> None:
    cases = {k: v for k, v in labels_cases().items() if not args.cases or any(s in k for s in args.cases)}
    print("\n## I(Z;Y) with known truth (nats; bias = mean estimate - truth over seeds)\n")
    print(f"seeds {args.seeds}; truth by Monte Carlo over {MC_TRUTH:,} draws (its standard error in brackets)\n")
    print("| case | truth | estimator | N | mean | bias | std | mean SE | s/estimate |")
    print("|---|---|---|---|---|---|---|---|---|")
    summary = {}
    for case, (make, truth, truth_se) in cases.items():
        for n in args.sizes:
            data = [make(n, seed) for seed in range(args.seeds)]
            for name in args.estimators:
                if parse_spec(name)[0] in args.slow and n > args.slow_max_n:
                    continue
                values, ses, times = [], [], []
                for z, y in data:
                    t0 = time.perf_counter()
                    v, se = run_estimator(name, z, y)
                    times.append(time.perf_counter() - t0)
                    values.append(v)
                    ses.append(se)
                mean = float(np.mean(values))
                summary[case, name, n] = (mean, mean - truth, float(np.std(values)))
                se_txt = "-" if np.all(np.isnan(ses)) else f"{np.nanmean(ses):.3f}"
                print(f"| {case} | {truth:.3f} ({truth_se:.3f}) | {name} | {n} | {mean:.3f} | {mean - truth:+.3f} | "
                      f"{np.std(values):.3f} | {se_txt} | {np.mean(times):.3f} |", flush=True)
    print("\n### Largest |bias| per estimator and N over the cases run\n")
    print("| estimator | N | max abs bias | case |")
    print("|---|---|---|---|")
    for name in args.estimators:
        for n in args.sizes:
            rows = [(abs(b), case) for (case, est, nn), (_, b, _) in summary.items() if est == name and nn == n]
            if rows:
                worst = max(rows)
                print(f"| {name} | {n} | {worst[0]:.3f} | {worst[1]} |")
    print("\n### Monotone in separation? (mean over seeds, gmm cases by d, targets increasing)\n")
    for name in args.estimators:
        for n in args.sizes:
            for d in DIMS:
                seq = [summary.get((f"gmm-d{d}-I{t}", name, n)) for t in TARGETS]
                if all(s is not None for s in seq):
                    means = [s[0] for s in seq]
                    ok = all(b > a for a, b in zip(means, means[1:]))
                    print(f"{name:12s} N={n:5d} d={d:3d}: {' < '.join(f'{m:.3f}' for m in means)}  "
                          f"{'monotone' if ok else 'NOT monotone'}")


# ----- real activations ------------------------------------------------------------


def run_lenet(args) -> None:
    import lenet_activations
    snaps = lenet_activations.load_or_build(args.lenet_cache, args.data)
    print("\n## I(Z;Y) on LeNet activations: inside [Fano, H(Y)]?\n")
    print("Z: 84-unit ReLU layer of a LeNet trained on one iid CIFAR-10 half (benchmarks/lenet_activations.py). "
          "shard = first N training examples of the half (what fedmpi logs), test = first N test images. "
          "Fano from the model's own predictions on these N; head = H(Y) - CE of the model's own classifier "
          "(not cross-fitted: on shard examples it was trained on them). Verdict: compare_to_bounds, z = 2.\n")
    print("| step | probe | N | acc | H(Y) | Fano | head | estimator | estimate | SE | verdict | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    fails: dict[str, int] = {}
    for step in snaps["steps"]:
        for probe in ("shard", "test"):
            for n in args.lenet_sizes:
                z = snaps[f"{probe}_z_{step}"][:n]
                y = snaps[f"{probe}_y_{step}"][:n]
                pred = snaps[f"{probe}_pred_{step}"][:n]
                lb = bounds.label_bounds(y, pred)
                head = bounds.variational_bound(snaps[f"{probe}_logp_{step}"][:n], y)
                for name in args.estimators:
                    if parse_spec(name)[0] in args.slow and n > args.slow_max_n:
                        continue
                    t0 = time.perf_counter()
                    v, se = run_estimator(name, z, y)
                    dt = time.perf_counter() - t0
                    chk = bounds.compare_to_bounds(v, se, lb.fano, lb.fano_stderr, lb.entropy, lb.entropy_stderr)
                    verdict = chk.side if chk.side == "inside" else f"{chk.side} by {chk.excess:.3f}"
                    if chk.side != "inside":
                        fails[name] = fails.get(name, 0) + 1
                    se_txt = "-" if math.isnan(se) else f"{se:.3f}"
                    print(f"| {step} | {probe} | {n} | {1 - lb.error_rate:.3f} | {lb.entropy:.3f} | "
                          f"{lb.fano:.3f} ({lb.fano_stderr:.3f}) | {head.value:.3f} | {name} | {v:.3f} | {se_txt} | "
                          f"{verdict} | {dt:.2f} |", flush=True)
    print("\nOutside [Fano, H(Y)] beyond 2 combined SE: " +
          ", ".join(f"{name} {fails.get(name, 0)}" for name in args.estimators))


# ----- the previous version's cases -------------------------------------------------


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


def run_old(args) -> None:
    cases = {f"gauss-d1-rho{r}": gaussian_case(1, r) for r in (0.0, 0.5, 0.9, 0.99)}
    cases["gauss-d2-rho0.9"] = gaussian_case(2, 0.9)
    cases["gauss-d5-rho0.5"] = gaussian_case(5, 0.5)
    cases["classes-2d"] = classes_case()
    cases["indep-labels-84d"] = indep_labels_case()
    print("\n## Previous cases (one sample per row, seed = N)\n")
    print("| case | estimator | N | truth | estimate | error |")
    print("|---|---|---|---|---|---|")
    for case, (make, truth) in cases.items():
        if args.cases and not any(s in case for s in args.cases):
            continue
        for spec in args.estimators:
            name, kw = parse_spec(spec)
            for n in args.sizes:
                a, b = make(n, seed=n)
                labels = b.ndim == 1
                if not labels and (name == "kde" or info.XZ not in info.pairs(name)):
                    continue  # kde bounds I(X; Z + noise) for Z = f(X); decoders take labels only
                if name == "binning" and not labels:
                    kw = {**kw, "a_distinct": False}
                value = estimate(name, a, b, **kw)
                print(f"| {case} | {name} | {n} | {truth:.3f} | {value:.3f} | {value - truth:+.3f} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", nargs="+", default=["labels", "lenet"], choices=["labels", "lenet", "old"])
    ap.add_argument("--cases", nargs="+", default=[], help="run only cases whose name contains one of these")
    ap.add_argument("--estimators", nargs="+", default=[e for e in ESTIMATORS if e != "decoder_mlp"],
                    help='names, or "name:key=value,..." for non-default parameters')
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 2000, 5000])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--slow", nargs="+", default=["ksg", "kde", "decoder_mlp"])
    ap.add_argument("--slow-max-n", type=int, default=2000)
    ap.add_argument("--lenet-sizes", type=int, nargs="+", default=[1000, 2000])
    ap.add_argument("--lenet-cache", default="/tmp/fedmpi-lenet-z.npz")
    ap.add_argument("--data", default="/work/data", help="folder holding cifar-10-batches-py/")
    args = ap.parse_args()
    t0 = time.perf_counter()
    for suite in args.suite:
        {"labels": run_labels, "lenet": run_lenet, "old": run_old}[suite](args)
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
