"""Pairwise-distance (KDE) upper bound on MI, in nats.

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

fedmpi's KDE returns, on N samples:

- a and b both continuous (``a`` = inputs X, ``b`` = representation Z):
  ``B(b)``; Z is assumed to be a deterministic function of X, so a is only
  used for N.  0 <= B <= log N.
- One side labels y, the other Z (Saxe et al.'s form):
  ``I(T;Y) = B(Z) - sum_y p(y) B(Z_y)`` with Z_y the samples of label y (the
  H(noise) terms cancel).  This is a difference of two bounds, not itself a
  bound.
- Both sides labels: the plug-in MI of the two label vectors.

Z is used as given (not standardized): sigma2 is in the units of Z.  Rows are
processed in chunks with logsumexp, so memory is O(chunk * N), not O(N^2).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from . import _common as c

NAME = "kde"

# Rows per chunk of the pairwise matrix: 512 x 25,000 float64 is 100 MB.
_CHUNK_ROWS = 512


@dataclass(frozen=True)
class KdeParams:
    """KDE parameters; stored in the trace with every estimate."""

    sigma2: float = 0.1  # variance of the added Gaussian noise (Saxe et al. 2018 use 0.1)

    def check(self) -> None:
        c.check_float(NAME, "sigma2", self.sigma2, 0.0)


@dataclass(frozen=True, eq=False)
class KdeSide:
    kind: str  # c.FLOAT or c.LABELS
    values: np.ndarray  # (N, d) float64 or (N,) int64 labels
    n_classes: int


def prepare_side(side: c.Side, params: KdeParams, position: int) -> KdeSide:
    return KdeSide(side.kind, side.values, side.n_classes)


def pairwise_bound(z: np.ndarray, sigma2: float) -> float:
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


def _mixed(z: np.ndarray, y: KdeSide, sigma2: float) -> float:
    n = z.shape[0]
    cond = sum(idx.shape[0] / n * pairwise_bound(z[idx], sigma2)
               for idx in c.conditional_split(y.values, y.n_classes))
    return pairwise_bound(z, sigma2) - cond


def mutual_information(a: KdeSide, b: KdeSide, params: KdeParams) -> float:
    if a.kind == c.LABELS and b.kind == c.LABELS:
        return c.plugin_mi(a.values, b.values)
    if b.kind == c.LABELS:
        return _mixed(a.values, b, params.sigma2)
    if a.kind == c.LABELS:
        return _mixed(b.values, a, params.sigma2)
    return pairwise_bound(b.values, params.sigma2)


c.ESTIMATORS.register(NAME, KdeParams)(c.Estimator(prepare_side, mutual_information))
