"""EDGE: ensemble dependence-graph MI estimator (hashing), in nats.

Noshad, Zeng, Hero, "Scalable mutual information estimation using dependence
graphs", ICASSP 2019 -- the estimator Adilova et al. (2019) use for I(X;Z) and
I(Z;Y) at every aggregation. fedmpi's EDGE computes exactly this (N samples):

1. Continuous side with d features: centre and divide each feature by its std
   (constant features are divided by 1, not 0).  If d > d' with
   ``d' = max(1, floor(log2(N / 10)))``, project: ``P = S W`` with
   ``W ~ N(0, 1/d)^{d x d'}``; otherwise ``P = S`` (no projection, so low-d
   data keeps its geometry).
2. Bucket width per projected axis a: ``eps0_a = gamma * c * std(P_a)``
   (std 0 -> 1), with c found by bisection (48 halvings of log c over
   [1e-6, 1e6]) so that ``floor(P / (c std) + u_0)`` occupies
   ``K = cells_scale * N ** cells_exponent`` cells (clipped to [2, N]).  The
   reference code's per-axis 1-D k-NN spacing ignores d' and, measured here,
   put every point in its own cell for d' >= 2 (about log N for independent
   data); see docs/mutual-information.md.
3. Ensemble member l = 1..L has ``t_l = geomspace(t_min, t_max, L)`` (L = 1:
   ``sqrt(t_min t_max)``) and ``eps_l = t_l * eps0``; point i goes to the cell
   ``floor(P_i / eps_l + u_l)`` with ``u_l ~ U[0, 1)^{d'}`` (a random shift of
   the grid by ``u_l eps_l``).  Integer labels are their own cells, in every
   member, with no projection.
4. With cell occupancies N_i (side a), M_j (side b) and N_ij (joint cell),
   ``I_l = (1/N) sum_{occupied (i,j)} N_ij * min(log(N N_ij / (N_i M_j)), U)``.
   Each term is already <= log(N / N_ij) <= log N, so the default ``U = inf``
   never clips; a finite U below log N caps the estimate (as the public
   reference code's clip does).  There is no lower clip.
5. ``combine="median"``: median of the I_l.  ``combine="mean"``: mean.
   ``combine="weighted"``: sum_l w_l I_l with the EDGE / ensemble-estimation
   optimal weights, the least-norm w with ``sum_l w_l = 1`` and
   ``sum_l w_l t_l^(i/D) = 0`` for ``i = 1..m``, D the joint projected
   dimension (labels count 0, D >= 1) and ``m = min(D, L - 2)`` so at least
   one degree of freedom remains; w is computed in closed form with
   ``np.linalg.lstsq`` (minimum norm).  ``combine="weighted"`` needs L >= 3.

Randomness: W and u for side a come from ``default_rng([seed, 0])``, for side
b from ``default_rng([seed, 1])``; the global RNG is never touched.

What the numbers are (:func:`describe`): I(X;Z) is the plug-in MI of the two
quantisations Q_X(X) and Q_Z(Z) of steps 1-3 on the sample, <= ln(cells);
I(Z;Y) is the plug-in MI of Q_Z(Z) and Y, which by data processing is at
most I(Z;Y) plus its plug-in bias (about (cells - 1)(K - 1) / (2N)).  In 84
dimensions the random projection to d' axes and the ~N^0.4 cells lose most
of the label information (benchmarks/edge_diagnosis.py): on the 84-d
validation cases of docs/mutual-information.md EDGE returns 0.03-0.19 nats
for truths of 0.3-2.25 (N = 1,000-5,000).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _common as c

NAME = "edge"


@dataclass(frozen=True)
class EdgeParams:
    """EDGE parameters; stored in the trace with every estimate."""

    seed: int = 0  # seeds the projection matrices W and grid shifts u
    gamma: float = 1.0  # smoothness: multiplies every bucket width eps0
    cells_scale: float = 1.0  # eps0 targets K = cells_scale * N^cells_exponent cells per side
    cells_exponent: float = 0.4  # growth of K with N (bias ~ K^2/(2N) vs. cap ~ log K)
    L: int = 5  # ensemble size (number of bucket widths)
    t_min: float = 0.8  # smallest bucket-width factor t_1
    t_max: float = 1.25  # largest bucket-width factor t_L
    U: float = math.inf  # per-cell cap on log(N N_ij/(N_i M_j)); inf = no cap
    combine: str = "median"  # "median", "mean" or "weighted" (optimal weights)

    def check(self) -> None:
        c.check_int(NAME, "seed", self.seed, 0)
        c.check_float(NAME, "gamma", self.gamma, 0.0)
        c.check_float(NAME, "cells_scale", self.cells_scale, 0.0)
        c.check_float(NAME, "cells_exponent", self.cells_exponent, 0.0, lo_open=False)
        c.check_int(NAME, "L", self.L, 1)
        c.check_float(NAME, "t_min", self.t_min, 0.0)
        c.check_float(NAME, "t_max", self.t_max, 0.0)
        if self.t_max < self.t_min:
            raise ValueError(f"edge.t_max must be >= edge.t_min ({self.t_min}), got {self.t_max}")
        c.check_float(NAME, "U", self.U, 0.0, allow_inf=True)
        c.check_choice(NAME, "combine", self.combine, ("median", "mean", "weighted"))
        if self.combine == "weighted" and self.L < 3:
            raise ValueError(f"edge.L must be an integer >= 3 with combine='weighted', got {self.L}")


@dataclass(frozen=True, eq=False)
class EdgeSide:
    """One side hashed for every ensemble member."""

    codes: np.ndarray  # (L, N) int64 dense cell codes per member
    dim: int  # projected dimension d' (0 for labels)


def ensemble_factors(params: EdgeParams) -> np.ndarray:
    """The bucket-width factors t_l, shape (L,) float64."""
    if params.L == 1:
        return np.array([math.sqrt(params.t_min * params.t_max)])
    return np.geomspace(params.t_min, params.t_max, params.L)


def projected_dim(n: int, d: int) -> int:
    return min(d, max(1, int(math.floor(math.log2(n / 10.0))) if n >= 20 else 1))


def _count_cells(scaled: np.ndarray, shift: np.ndarray, key: np.ndarray) -> int:
    """Number of occupied cells of floor(scaled + shift); rows combined by a
    random 64-bit linear key (wrapping), whose collisions are negligible for a
    count (~N^2 / 2^64)."""
    cells = np.floor(scaled + shift).astype(np.int64)  # (N, d')
    return int(np.unique(cells @ key).shape[0])


def bucket_width(proj: np.ndarray, params: EdgeParams, shift: np.ndarray,
                 key: np.ndarray) -> np.ndarray:
    """Per-axis eps0, shape (d',): step 2 of the module docstring."""
    n = proj.shape[0]
    spread = proj.std(axis=0)
    spread[spread == 0.0] = 1.0  # constant axis: any width puts it in one bucket
    target = int(min(max(round(params.cells_scale * n ** params.cells_exponent), 2), n))
    # Bisection on log(c): the occupied-cell count falls as the width c*spread
    # grows.  48 halvings of [1e-6, 1e6] resolve c to ~1e-7 relative.
    lo, hi = math.log(1e-6), math.log(1e6)
    for _ in range(48):
        mid = 0.5 * (lo + hi)
        if _count_cells(proj / (math.exp(mid) * spread), shift, key) > target:
            lo = mid
        else:
            hi = mid
    return params.gamma * math.exp(hi) * spread


def prepare_side(side: c.Side, params: EdgeParams, position: int) -> EdgeSide:
    """Project and hash one side for all L bucket widths."""
    n = side.n
    if side.kind == c.LABELS:
        return EdgeSide(np.broadcast_to(side.values, (params.L, n)), 0)
    rng = np.random.default_rng([params.seed, position])
    x = side.values  # (N, d) float64
    d = x.shape[1]
    d_proj = projected_dim(n, d)
    if d_proj < d:
        mean = x.mean(axis=0)
        std = x.std(axis=0)
        std[std == 0.0] = 1.0
        w = rng.standard_normal((d, d_proj)) / math.sqrt(d)  # (d, d') float64
        # ((x - mean) / std) @ w without materialising a standardized (N, d) copy.
        w_scaled = w / std[:, None]
        proj = x @ w_scaled - mean @ w_scaled  # (N, d') float64
    else:
        proj = c.standardize(x)  # (N, d) float64
    shifts = rng.random((params.L + 1, d_proj))  # (L+1, d') grid offsets in cell units
    key = rng.integers(1, 2**62, size=d_proj, dtype=np.int64) | 1  # odd multipliers
    eps0 = bucket_width(proj, params, shifts[params.L], key)  # (d',)
    codes = np.empty((params.L, n), dtype=np.int64)
    for l, t in enumerate(ensemble_factors(params)):
        cells = np.floor(proj / (t * eps0) + shifts[l]).astype(np.int64)  # (N, d')
        codes[l] = c.row_codes(cells)
    return EdgeSide(codes, d_proj)


def edge_mi_single(codes_a: np.ndarray, codes_b: np.ndarray, U: float) -> float:
    """EDGE estimate (nats) for one bucket width: step 4 of the module docstring."""
    n = codes_a.shape[0]
    counts_a = np.bincount(codes_a)
    counts_b = np.bincount(codes_b)
    kb = counts_b.shape[0]
    joint, n_ij = np.unique(codes_a * kb + codes_b, return_counts=True)
    n_i = counts_a[joint // kb]
    m_j = counts_b[joint % kb]
    terms = np.log(n * n_ij / (n_i * m_j).astype(np.float64))
    if math.isfinite(U):
        terms = np.minimum(terms, U)
    return float((n_ij * terms).sum() / n)


def optimal_weights(t: np.ndarray, dim: int) -> np.ndarray:
    """Least-norm weights with sum w = 1 and sum w t^(i/dim) = 0, i = 1..m."""
    m = min(max(dim, 1), t.shape[0] - 2)
    rows = [np.ones_like(t)] + [t ** (i / max(dim, 1)) for i in range(1, m + 1)]
    a = np.stack(rows)  # (m+1, L)
    rhs = np.zeros(m + 1)
    rhs[0] = 1.0
    w, *_ = np.linalg.lstsq(a, rhs, rcond=None)
    return w


def mutual_information(a: EdgeSide, b: EdgeSide, params: EdgeParams) -> float:
    values = np.array([edge_mi_single(a.codes[l], b.codes[l], params.U) for l in range(params.L)])
    if params.combine == "median":
        return float(np.median(values))
    if params.combine == "mean":
        return float(values.mean())
    w = optimal_weights(ensemble_factors(params), a.dim + b.dim)
    return float(w @ values)


def describe(params: EdgeParams) -> dict:
    cells = f"~{params.cells_scale:g}*N^{params.cells_exponent:g} occupied cells per side"
    quant = (f"EDGE's quantisation (standardize, random projection to floor(log2(N/10)) axes when wider, "
             f"grid cells of width gamma={params.gamma:g} x [{params.t_min:g}, {params.t_max:g}] x eps0, {cells})")
    return {"xz": f"plug-in MI of the cells of X and of Z under {quant}, {params.combine} over L={params.L}; "
                  "<= ln(cells)",
            "zy": f"plug-in MI of the cells of Z and Y under {quant}, {params.combine} over L={params.L}",
            "xz_kind": "estimate", "zy_kind": "estimate",
            "cells_per_side": f"{params.cells_scale:g}*N^{params.cells_exponent:g}"}


c.ESTIMATORS.register(NAME, EdgeParams)(c.Estimator(prepare_side, mutual_information, describe))
