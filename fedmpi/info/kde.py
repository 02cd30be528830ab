"""Pairwise-distance (KDE) bounds on the MI of a noisy representation, in nats.

Kolchinsky, Tracey, "Estimating mixture entropy with pairwise distances",
Entropy 19(7):361 (2017), and its use by Saxe et al., "On the information
bottleneck theory of deep learning", ICLR 2018 -- a cross-check for the EDGE
values of Adilova et al. (2019).

The representation is made stochastic, ``T = Z + noise``, noise ~
N(0, sigma2 I_d).  With the N samples z_i as an equal-weight Gaussian mixture,
Kolchinsky & Tracey's KL bound ``H(T) <= H(T|X) - (1/N) sum_i log (1/N)
sum_j exp(-KL(p_i || p_j))`` with ``KL(p_i || p_j) = ||z_i - z_j||^2 /
(2 sigma2)`` gives, since ``H(T|X) = H(noise)``:

    I(X;T) <= B(Z) := -(1/N) sum_i log[(1/N) sum_j exp(-||z_i - z_j||^2 / (2 sigma2))]

The same theorem with the Bhattacharyya distance
``BD(p_i, p_j) = ||z_i - z_j||^2 / (8 sigma2)`` in place of the KL gives a
*lower* bound (Kolchinsky & Tracey, Sec. 4: any Chernoff alpha-divergence
does; alpha = 1/2 is Bhattacharyya), i.e. ``B(Z)`` with 4 sigma2 in place of
sigma2.  Write B_KL(Z) = B(Z; sigma2) and B_BD(Z) = B(Z; 4 sigma2).  Both
are exact statements about the noisy representation T = Z + N(0, sigma2 I)
of X drawn uniformly from the N examples given (the probe), not about the
noiseless, deterministic Z, whose I(X;Z) is infinite for continuous X and
H(Z) = ln N on N distinct examples (Goldfeld et al., ICML 2019).

fedmpi's KDE returns, on N samples, with ``bound`` selecting the form:

- a and b both continuous (``a`` = inputs X, ``b`` = representation Z; Z is
  assumed to be a deterministic function of X, so a is only used for N):
  ``bound="saxe"`` or ``"upper"``: B_KL(b), an upper bound on I(X;T);
  ``bound="lower"``: B_BD(b), a lower bound on I(X;T).  0 <= B_BD <= B_KL <= ln N.
- One side labels y, the other Z, with Z_y the samples of label y and
  p(y) the label frequencies (the H(noise) terms cancel):
  ``"saxe"`` (default, Saxe et al.'s form): B_KL(Z) - sum_y p(y) B_KL(Z_y),
  a difference of two upper bounds, itself neither a lower nor an upper
  bound on I(T;Y);
  ``"lower"``: B_BD(Z) - sum_y p(y) B_KL(Z_y) <= I(T;Y) (lower bound on H(T)
  minus upper bounds on H(T|y));
  ``"upper"``: B_KL(Z) - sum_y p(y) B_BD(Z_y) >= I(T;Y).
- Both sides labels: the plug-in MI of the two label vectors.

Z is used as given (not standardized): sigma2 is in the units of Z.  Rows are
processed in chunks with logsumexp, so memory is O(chunk * N), not O(N^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _common as c

NAME = "kde"

# Rows per chunk of the pairwise matrix: 512 x 25,000 float64 is 100 MB.
_CHUNK_ROWS = 512
_BOUNDS = ("saxe", "lower", "upper")
# sigma2 multiplier of the pairwise distance: KL = d^2 / (2 s2), Bhattacharyya = d^2 / (8 s2) = KL at 4 s2.
_KL, _BD = 1.0, 4.0


@dataclass(frozen=True)
class KdeParams:
    """KDE parameters; stored in the trace with every estimate."""

    sigma2: float = 0.1  # variance of the added Gaussian noise (Saxe et al. 2018 use 0.1)
    bound: str = "saxe"  # "saxe" (KL/KL, the historical form), "lower" or "upper": see the module docstring

    def check(self) -> None:
        c.check_float(NAME, "sigma2", self.sigma2, 0.0)
        c.check_choice(NAME, "bound", self.bound, _BOUNDS)


@dataclass(frozen=True, eq=False)
class KdeSide:
    kind: str  # c.FLOAT or c.LABELS
    values: np.ndarray  # (N, d) float64 or (N,) int64 labels
    n_classes: int


def prepare_side(side: c.Side, params: KdeParams, position: int) -> KdeSide:
    return KdeSide(side.kind, side.values, side.n_classes)


def pairwise_bound(z: np.ndarray, sigma2: float) -> float:
    from scipy.special import logsumexp  # here, not at import: see fedmpi/info/decoder.py
    """B(z) of the module docstring, z (n, d) float64, in nats."""
    n = z.shape[0]
    sq = np.einsum("ij,ij->i", z, z)  # (n,) squared norms
    lse = np.empty(n)
    for start in range(0, n, _CHUNK_ROWS):
        stop = min(start + _CHUNK_ROWS, n)
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (z[start:stop] @ z.T)  # (chunk, n)
        np.maximum(d2, 0.0, out=d2)  # the expansion can go slightly negative
        d2 *= -0.5 / sigma2
        lse[start:stop] = logsumexp(d2, axis=1)
    return float(np.log(n) - lse.mean())


def _mixed(z: np.ndarray, y: KdeSide, params: KdeParams) -> float:
    whole, parts = {"saxe": (_KL, _KL), "lower": (_BD, _KL), "upper": (_KL, _BD)}[params.bound]
    n = z.shape[0]
    cond = sum(idx.shape[0] / n * pairwise_bound(z[idx], parts * params.sigma2)
               for idx in c.conditional_split(y.values, y.n_classes))
    return pairwise_bound(z, whole * params.sigma2) - cond


def mutual_information(a: KdeSide, b: KdeSide, params: KdeParams) -> float:
    if a.kind == c.LABELS and b.kind == c.LABELS:
        return c.plugin_mi(a.values, b.values)
    if b.kind == c.LABELS:
        return _mixed(a.values, b, params)
    if a.kind == c.LABELS:
        return _mixed(b.values, a, params)
    return pairwise_bound(b.values, (_BD if params.bound == "lower" else _KL) * params.sigma2)


def describe(params: KdeParams) -> dict:
    sigma = params.sigma2 ** 0.5
    t = f"T = Z + N(0, {params.sigma2:g} I) (sigma {sigma:.3g}, units of Z), X uniform over the N examples"
    xz = {"lower": f"Bhattacharyya pairwise lower bound on I(X;T), {t}; <= ln N",
          "upper": f"KL pairwise upper bound on I(X;T), {t}; <= ln N",
          "saxe": f"KL pairwise upper bound on I(X;T), {t}; <= ln N"}[params.bound]
    zy = {"lower": f"lower bound on I(T;Y): Bhattacharyya bound on H(T) minus KL bounds on H(T|y), {t}",
          "upper": f"upper bound on I(T;Y): KL bound on H(T) minus Bhattacharyya bounds on H(T|y), {t}",
          "saxe": f"difference of KL pairwise bounds on H(T) and H(T|Y) (Saxe et al. 2018; not a bound), {t}"
          }[params.bound]
    return {"xz": xz, "zy": zy,
            "xz_kind": "lower_bound" if params.bound == "lower" else "upper_bound",
            "zy_kind": {"lower": "lower_bound", "upper": "upper_bound", "saxe": "estimate"}[params.bound],
            "noise_sigma": float(sigma)}


c.ESTIMATORS.register(NAME, KdeParams)(c.Estimator(prepare_side, mutual_information, describe,
                                                   modules=("scipy.special",)))
