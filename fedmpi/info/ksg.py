"""KSG k-nearest-neighbour MI estimator, in nats.

Kraskov, Stoegbauer, Grassberger, "Estimating mutual information", Phys. Rev.
E 69, 066138 (2004), estimator 1 with the max-norm; used here as a
cross-check of the EDGE values that Adilova et al. (2019) report.

fedmpi's KSG computes, on N samples:

- Preprocessing of a continuous side: centre, divide each feature by its std
  (constant features by 1), then add jitter ``jitter * N(0, 1)`` per entry
  (the data are unit-std now, so this is relative to the std) to break ties
  between duplicated points; the noise comes from ``default_rng([seed, 0])``
  for side a and ``default_rng([seed, 1])`` for side b.
- Both sides continuous: eps_i = max-norm distance from point i to its k-th
  nearest neighbour in the joint space (x, y); n_x(i) = #{j != i :
  ||x_j - x_i||_inf < eps_i} (strict, via ``np.nextafter(eps_i, 0)``), n_y
  likewise, and ``I = psi(k) + psi(N) - mean_i[psi(n_x(i) + 1) + psi(n_y(i) + 1)]``.
- One side integer labels y: ``I = H(Z) - sum_y p(y) H(Z | y)`` with both
  Kozachenko-Leonenko entropies (max-norm) evaluated at the same radius per
  point, which is KSG's bias-cancelling trick applied to the mixed case
  (Ross, "Mutual information between discrete and continuous data sets",
  PLoS ONE 2014; also scikit-learn's ``mutual_info_classif``): r_i = max-norm
  distance from z_i to its k_y-th neighbour among the N_y samples with the
  same label (k_y = min(k, N_y - 1)), m_i = #{j : ||z_j - z_i||_inf < r_i}
  over all samples (self included), and
  ``I = psi(N) + <psi(k_y)> - <psi(N_y)> - <psi(m_i)>``.  Samples whose label
  occurs once are left out (N counts the rest).  The textbook difference of
  two independent KL entropies was measured to be far off in 84 dims (-2.3
  nats for labels independent of Z at N = 1,000), so it is not used.
- Both sides labels: the plug-in MI of the two label vectors.

Neighbour searches are exact (``scipy.spatial.cKDTree`` with p = inf).

What the numbers are (:func:`describe`): consistent estimates when the pair
has a joint density.  For I(X;Z) with Z = f(X) it has none (the true value
is infinite), so the number reflects k, N and the jitter.  For I(Z;Y) k-NN
estimates are biased low in high dimension: on the 84-d validation cases of
docs/mutual-information.md, 0.19-1.21 nats low at N = 2,000.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _common as c

NAME = "ksg"


@dataclass(frozen=True)
class KsgParams:
    """KSG parameters; stored in the trace with every estimate."""

    k: int = 3  # neighbours; KSG recommend 2-4, larger k = lower variance, more bias
    jitter: float = 1e-10  # tie-breaking noise, in units of each feature's std
    seed: int = 0  # seeds the jitter
    workers: int = -1  # cKDTree query threads (-1 = all cores); results do not depend on it

    def check(self) -> None:
        c.check_int(NAME, "k", self.k, 1)
        c.check_float(NAME, "jitter", self.jitter, 0.0, lo_open=False)
        c.check_int(NAME, "seed", self.seed, 0)
        if not (isinstance(self.workers, int) and not isinstance(self.workers, bool)
                and (self.workers == -1 or self.workers >= 1)):
            raise ValueError(f"ksg.workers must be -1 or an integer >= 1, got {self.workers!r}")


@dataclass(frozen=True, eq=False)
class KsgSide:
    kind: str  # c.FLOAT or c.LABELS
    values: np.ndarray  # (N, d) float64 standardized + jittered, or (N,) int64 labels
    n_classes: int
    tree: cKDTree | None  # max-norm tree on values (float sides only)


def prepare_side(side: c.Side, params: KsgParams, position: int) -> KsgSide:
    from scipy.spatial import cKDTree  # scipy where it is used: see fedmpi/info/decoder.py
    if side.kind == c.LABELS:
        return KsgSide(side.kind, side.values, side.n_classes, None)
    rng = np.random.default_rng([params.seed, position])
    x = c.standardize(side.values)
    if params.jitter > 0:
        x = x + params.jitter * rng.standard_normal(x.shape)
    return KsgSide(side.kind, x, 0, cKDTree(x))


def _count_within(tree: cKDTree, x: np.ndarray, radius: np.ndarray, workers: int) -> np.ndarray:
    """#points (self included) strictly closer than radius_i to x_i, max-norm."""
    r = np.nextafter(radius, 0.0)
    return np.asarray(tree.query_ball_point(x, r, p=np.inf, return_length=True, workers=workers))


def _mixed(z: KsgSide, y: KsgSide, params: KsgParams) -> float:
    """Ross (2014) mixed KSG: I(Z;Y) = psi(N) + psi(k) - <psi(N_y)> - <psi(m)>."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma
    keep = np.ones(z.values.shape[0], dtype=bool)
    radius = np.zeros(z.values.shape[0])
    k_used = np.zeros(z.values.shape[0])
    n_label = np.zeros(z.values.shape[0])
    for idx in c.conditional_split(y.values, y.n_classes):
        n_y = idx.shape[0]
        if n_y < 2:
            keep[idx] = False  # a lone sample has no same-label neighbour
            continue
        k_y = min(params.k, n_y - 1)
        zy = z.values[idx]
        dist, _ = cKDTree(zy).query(zy, k=[k_y + 1], p=np.inf, workers=params.workers)
        radius[idx], k_used[idx], n_label[idx] = dist[:, 0], k_y, n_y
    if not keep.any():
        return 0.0
    zk = z.values[keep]
    tree = z.tree if keep.all() else cKDTree(zk)
    m = _count_within(tree, zk, radius[keep], params.workers)  # includes self
    n = int(keep.sum())
    return float(digamma(n) + np.mean(digamma(k_used[keep]))
                 - np.mean(digamma(n_label[keep])) - np.mean(digamma(m)))


def mutual_information(a: KsgSide, b: KsgSide, params: KsgParams) -> float:
    from scipy.spatial import cKDTree
    from scipy.special import digamma
    if a.kind == c.LABELS and b.kind == c.LABELS:
        return c.plugin_mi(a.values, b.values)
    if b.kind == c.LABELS:
        return _mixed(a, b, params)
    if a.kind == c.LABELS:
        return _mixed(b, a, params)
    n = a.values.shape[0]
    k = min(params.k, n - 1)
    joint = np.hstack([a.values, b.values])  # (N, d_a + d_b) float64
    dist, _ = cKDTree(joint).query(joint, k=[k + 1], p=np.inf, workers=params.workers)
    eps = dist[:, 0]  # (N,) distance to the k-th neighbour (self is at index 0)
    n_a = _count_within(a.tree, a.values, eps, params.workers)  # includes self: n_x + 1
    n_b = _count_within(b.tree, b.values, eps, params.workers)
    return float(digamma(k) + digamma(n) - np.mean(digamma(n_a) + digamma(n_b)))


def describe(params: KsgParams) -> dict:
    return {"xz": (f"KSG k-NN estimate (k={params.k}, max-norm, standardized sides, jitter {params.jitter:g} std) "
                   "of I(X;Z) as if (X,Z) had a joint density; for deterministic Z = f(X) the true value is "
                   "infinite and the number reflects k, N and the jitter"),
            "zy": (f"Ross (2014) mixed k-NN estimate (k={params.k}) of I(Z;Y) on standardized Z; "
                   "biased low in high dimension"),
            "xz_kind": "estimate", "zy_kind": "estimate", "k": int(params.k)}


c.ESTIMATORS.register(NAME, KsgParams)(c.Estimator(prepare_side, mutual_information, describe,
                                                   modules=("scipy.spatial", "scipy.special")))
