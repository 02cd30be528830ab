"""Cross-fitted variational lower bound on I(Z;Y): a logistic-regression decoder, in nats.

Barber & Agakov, "The IM algorithm: a variational approach to information
maximization" (NIPS 2003): for any model q(y|z),
I(Z;Y) >= H(Y) + E log q(Y|Z).  Adilova, Geiger & Fischer (ICLR 2023) plot
this bound, H(Y) - CE, in place of the EDGE estimates of Adilova et al.
(2019).  fedmpi's ``decoder`` computes, on N examples (Z, Y) with K classes:

1. **Folds.** The examples are split into F = ``folds`` folds, stratified by
   label (each class's examples, in an order drawn from
   ``default_rng([seed, 2])``, are dealt round-robin, classes one after the
   other).  Every class needs at least F examples (ValueError otherwise,
   naming the class and all counts).
2. **Inputs.** Z is mapped with statistics of the training examples only:
   ``transform="standardize"``: x = (z - mean) / std (constant columns
   divided by 1); ``"quantile"``: each unit through its training mid-ranks
   and the normal quantile function, then standardized (invariant to any
   increasing map of a unit); ``"auto"`` (default): both, the inner CV of
   step 4 picks one per fold.  Mapped values of held-out examples are
   clipped to the training range of each column.
3. **Models.** q is a linear decoder, logits = W^T x + b, from two
   families (``models``): multinomial logistic regression, fitted by
   minimising sum_i -ln q(y_i|x_i) + (alpha / 2) ||W||^2 (alpha a prior
   precision, the same meaning at any N; b unpenalised) with L-BFGS (scipy,
   preconditioned); and linear discriminant analysis (``lda``): Bayes' rule
   for Gaussian classes with one covariance, fitted in closed form with the
   covariance shrunk towards a multiple of I by lam (``lda_shrinkage``)
   and the class means towards the overall mean by a prior worth kappa
   examples (``lda_prior``; :class:`LdaFamily`).  Where the classes are
   close to Gaussian, lda needs far fewer examples than logistic regression
   (Efron, JASA 1975); where they are not, logistic regression does better.
   Every probability scored is
   q' = (1 - 1e-3) q + 1e-3 p_train (p_train the training label
   frequencies): still a decoder fitted on training examples only, at most
   0.001 nats worse than q, and one held-out example far outside the
   training range can no longer drive the estimate to -infinity.
4. **Inner cross-validation.**  For test fold f, (transform, family,
   its parameter) is chosen from the transforms, ``models`` and their grids
   (alpha in ``l2_grid``; kappa in ``lda_prior`` for each lam) by
   (F-1)-fold cross-validation inside the training folds, whose inner folds
   are the other outer folds g != f: the model for the inner split (f, g),
   fitted on the folds other than f and g and scored on g, sees neither f
   nor g, so it serves the inner split (g, f) too: C(F, 2) fits per grid
   value instead of F (F - 1).  Each grid is walked from the strongest
   regularisation to the weakest, each fit starting from the previous one;
   an outer fold stops walking a grid at the first value that scores below
   its best (the inner score is unimodal in practice; the weak-alpha fits
   are the slow ones).
5. **Scoring.** The model for f is refitted on all folds but f with the
   chosen (transform, alpha) and scores fold f: every example gets
   ln q'(y_i|z_i) exactly once, from a model that never saw it.
6. **Estimate.** H(Y) - CE = mean_i (ln q'(y_i|z_i) - ln p_{y_i}), p the
   label frequencies of all N, and its standard error over the N
   per-example terms (:func:`fedmpi.info.bounds.variational_bound`).  Not
   clipped at 0: labels independent of Z give a small negative value.

What the standard error covers: the sampling of the N examples, with the
fitted models treated as fixed (the usual cross-validation standard error;
Bayle et al., "Cross-validation confidence intervals for test error",
NeurIPS 2020, show it is asymptotically valid for stable learners).  It does
not cover the bound's gap to I(Z;Y) (the KL from the true posterior to q,
plus the excess loss of a model fitted on (F-1)/F of the data, which makes
the estimate low, never high, in expectation), nor the fold split.

The value depends only on (Z, Y, params): no global RNG, inputs untouched.
It estimates I(Z;Y) only; I(X;Z) of two float sides raises ValueError.
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass

import numpy as np

from . import _common as c
from .bounds import variational_bound

# scipy is imported where it is used: every rank imports fedmpi.info (for the config), only the
# coordinator estimates, and scipy.spatial/optimize cost about half a second of start-up.

NAME = "decoder"

# L-BFGS stops when the relative decrease of the objective falls below _FTOL
# (scipy's `ftol`) or the largest preconditioned gradient entry below _GTOL.
# Tightening _GTOL to 1e-4 doubled the time and moved the estimate by at most
# 3e-4 nats on two of the LeNet snapshots of benchmarks/mi_accuracy.py
# (standard error there: 0.02); loosening it from 1e-3 to 3e-3 saved 15% of
# the time and moved estimates by at most 0.003 nats on LeNet activations and
# three synthetic cases at N = 2,000 (any fit gives a valid bound).
_FTOL = 1e-8
_GTOL = 3e-3


@dataclass(frozen=True)
class DecoderParams:
    """Decoder parameters; stored in the trace with every estimate."""

    folds: int = 5  # outer folds F; each model is fitted on (F-1)/F of the examples
    l2_grid: tuple[float, ...] = (1000.0, 300.0, 100.0, 30.0, 10.0, 3.0, 1.0, 0.3, 0.1)  # alpha candidates
    transform: str = "auto"  # input map: "standardize", "quantile", or "auto" (inner CV picks per fold; 2x time)
    models: tuple[str, ...] = ("logistic", "lda")  # decoder families the inner CV picks from (step 3)
    lda_shrinkage: tuple[float, ...] = (1.0, 0.1, 0.01)  # lda: covariance shrinkage candidates
    lda_prior: tuple[float, ...] = (1000.0, 300.0, 100.0, 30.0, 10.0, 3.0, 0.0)  # lda: class-mean prior, examples
    seed: int = 0  # seeds the fold assignment
    max_iter: int = 500  # L-BFGS iterations per fit (any model gives a valid bound)
    # In a series (one worker's Z under one model, sync point after sync point, as a run
    # estimates it), the inner CV runs at the first estimate and at every retune-th after it;
    # in between, each fold keeps its (transform, alpha) and starts from its last model
    # (see Series). 1: the inner CV every time. A single estimate always runs it. 20 since
    # 2026-12-04 (10 before): a quarter to a third cheaper in a run's series, and on a non-iid
    # paper run's activations within 0.004 nats of 10 in mean difference to the full inner CV
    # (docs/mutual-information.md).
    retune: int = 20

    def check(self) -> None:
        c.check_int(NAME, "folds", self.folds, 3)
        c.check_int(NAME, "retune", self.retune, 1)
        c.check_choice(NAME, "transform", self.transform, _TRANSFORMS)
        c.check_positive_grid(NAME, "l2_grid", self.l2_grid)
        c.check_positive_grid(NAME, "lda_shrinkage", self.lda_shrinkage)
        if max(self.lda_shrinkage) > 1.0:
            raise ValueError(f"{NAME}.lda_shrinkage: {max(self.lda_shrinkage)} is above 1; use values in (0, 1]")
        if not (isinstance(self.lda_prior, tuple) and self.lda_prior
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0
                        for v in self.lda_prior) and len(set(self.lda_prior)) == len(self.lda_prior)):
            raise ValueError(f"{NAME}.lda_prior must be a non-empty list of distinct finite numbers >= 0, "
                             f"got {self.lda_prior!r}")
        if not self.models or len(set(self.models)) != len(self.models) or set(self.models) - set(_MODELS):
            raise ValueError(f"{NAME}.models: {list(self.models)} must be distinct names from {list(_MODELS)}")
        c.check_int(NAME, "seed", self.seed, 0)
        c.check_int(NAME, "max_iter", self.max_iter, 1)


_MODELS = ("logistic", "lda")
_MODEL_WORDS = {"logistic": "multinomial logistic regression, L2", "lda": "shrinkage LDA"}
_TRANSFORMS = ("standardize", "quantile", "auto")

# Every scored probability is mixed with the training labels' frequencies:
# q' = (1 - _PRIOR_MIX) q + _PRIOR_MIX p_train.  q' is as valid a decoder as q
# (fitted on training examples only) and costs at most -ln(1 - 1e-3) = 0.001
# nats, but a held-out example far outside the training range can no longer
# send its ln q, and the estimate, towards -infinity.  With it and the
# clipping of InputMap, the LeNet activations after 200 training steps gave
# 0.408 +- 0.019 nats instead of 0.369 +- 0.037 (a few examples with huge
# log-losses); an early quantile-map prototype without either gave -3e12.
_PRIOR_MIX = 1e-3
_PATIENCE = 1  # grid values scoring below the best before a fold stops walking (2 gave equal results)


# ----- the pieces, shared with decoder_mlp -------------------------------------


def class_counts_message(est: str, side: c.Side, folds: int) -> str | None:
    """The one-line error for a class with fewer than ``folds`` examples, or None."""
    counts = np.bincount(side.values, minlength=side.n_classes)
    rare = np.flatnonzero(counts < folds)
    if rare.shape[0] == 0:
        return None
    names = side.classes if side.classes is not None else np.arange(side.n_classes)
    listing = ", ".join(f"{names[k]}: {counts[k]}" for k in range(side.n_classes))
    worst = int(rare[np.argmin(counts[rare])])
    return (f"{est}: class {names[worst]} has {counts[worst]} example(s), fewer than {est}.folds = {folds} "
            f"(each fold needs one of every class; class counts {{{listing}}}); "
            "lower folds or use a larger probe")


def stratified_folds(labels: np.ndarray, n_classes: int, folds: int, seed: int) -> np.ndarray:
    """Fold index (N,) int64 of each example: step 1 of the module docstring."""
    rng = np.random.default_rng([seed, 2])
    order = np.concatenate([rng.permutation(idx) for idx in c.conditional_split(labels, n_classes)])
    fold = np.empty(labels.shape[0], dtype=np.int64)
    fold[order] = np.arange(labels.shape[0]) % folds
    return fold


@dataclass(frozen=True, eq=False)
class InputMap:
    """Z -> x, fitted on a training set: the map of step 2.

    ``standardize``: x = (z - mean) / std (std 0 -> 1).  ``quantile``: each
    column goes through its training ranks, x = Phi^-1((r + 1/2) / (n + 1))
    with r = #(training values < v) + #(training values == v) / 2 (ties
    share a mid-rank; a ReLU unit's zeros all map to one value), then is
    standardized; this makes the decoder invariant to any increasing map
    of each unit.  Either way the mapped values of other examples are
    clipped to the training range of each column, so a decoder is never
    asked about values it was not fitted on.
    """

    kind: str  # "standardize" or "quantile"
    sorted_t: np.ndarray | None  # (D, n) float64 training values, each row sorted; quantile only
    mean: np.ndarray  # (D,) float64
    std: np.ndarray  # (D,) float64
    lo: np.ndarray  # (D,) float64, per-column range of the mapped training set
    hi: np.ndarray

    @classmethod
    def fit(cls, z: np.ndarray, kind: str) -> tuple["InputMap", np.ndarray]:
        """The map and the mapped training set x (n, D)."""
        sorted_t = None
        u = z
        if kind == "quantile":
            ranks, sorted_t = _own_mid_ranks(z)
            from scipy.special import ndtri
            u = ndtri((ranks + 0.5) / (z.shape[0] + 1))
        std = u.std(axis=0)
        std[std == 0.0] = 1.0
        mean = u.mean(axis=0)
        x = (u - mean) / std
        return cls(kind, sorted_t, mean, std, x.min(axis=0), x.max(axis=0)), x

    def __call__(self, z: np.ndarray) -> np.ndarray:
        u = z
        if self.sorted_t is not None:
            from scipy.special import ndtri
            u = ndtri((_mid_ranks_in(self.sorted_t, z) + 0.5) / (self.sorted_t.shape[1] + 1))
        return np.clip((u - self.mean) / self.std, self.lo, self.hi)  # (n, D) float64, new array


def _own_mid_ranks(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mid-rank (n, D) of every entry of z within its column, and the sorted columns (D, n)."""
    z_t = np.ascontiguousarray(z.T)  # (D, n): sorts and scans run along contiguous rows
    order = np.argsort(z_t, axis=1, kind="stable")  # ties are grouped by the scan below: any order of equal values works
    s = np.take_along_axis(z_t, order, axis=1)
    n = s.shape[1]
    pos = np.arange(n)
    differs = s[:, 1:] != s[:, :-1]
    starts = np.ones(s.shape, dtype=bool)
    starts[:, 1:] = differs
    ends = np.ones(s.shape, dtype=bool)
    ends[:, :-1] = differs
    below = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)  # #(values < v)
    upto = np.minimum.accumulate(np.where(ends, pos + 1, n)[:, ::-1], axis=1)[:, ::-1]  # #(values <= v)
    ranks = np.empty(s.shape)
    np.put_along_axis(ranks, order, 0.5 * (below + upto), axis=1)
    return ranks.T, s


def _mid_ranks_in(sorted_t: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Mid-rank (m, D) of every entry of z among the sorted training column (D, n)."""
    z_t = np.ascontiguousarray(z.T)  # (D, m)
    order = np.argsort(z_t, axis=1, kind="stable")
    q = np.take_along_axis(z_t, order, axis=1)  # sorted queries: searchsorted runs ~4x faster
    counts = np.empty(q.shape)
    for j in range(q.shape[0]):
        counts[j] = np.searchsorted(sorted_t[j], q[j], "left") + np.searchsorted(sorted_t[j], q[j], "right")
    ranks = np.empty(q.shape)
    np.put_along_axis(ranks, order, 0.5 * counts, axis=1)
    return ranks.T



class SortedColumns:
    """Every column of Z (N, D) sorted once: each training set's mid-ranks follow from it.

    ``mid_ranks(train)`` gives, for every example, the mid-rank that
    :class:`InputMap` computes (its own among the training examples, or a
    held-out one's among them), from one sort of all N per column instead of
    one per training set and one per held-out fold.
    """

    def __init__(self, z: np.ndarray):
        z_t = np.ascontiguousarray(z.T)  # (D, N)
        d, n = z_t.shape
        # Any order of equal values gives the same ranks; the stable sort is the faster one on a
        # ReLU's columns (2.3 against 5.5 ms at N = 1,000, D = 84: quicksort slows on the zeros).
        self.order = np.argsort(z_t, axis=1, kind="stable")
        s = np.take_along_axis(z_t, self.order, axis=1)
        starts = np.ones(s.shape, dtype=bool)
        starts[:, 1:] = s[:, 1:] != s[:, :-1]
        # flat index of each sorted position's tie group: row * N + (groups before it in the row)
        self.group = np.cumsum(starts, axis=1) - 1 + (np.arange(d) * n)[:, None]

    def mid_ranks(self, train: np.ndarray) -> np.ndarray:
        """(N, D) mid-rank of every example among the training examples (train (N,) bool) of its column."""
        d, n = self.order.shape
        count = np.bincount(self.group.ravel(), weights=train[self.order].ravel(), minlength=d * n).reshape(d, n)
        below = np.cumsum(count, axis=1) - count  # training values in the groups before each group
        rank_sorted = (below + 0.5 * count).ravel()[self.group]  # (D, N) at sorted positions
        ranks = np.empty((d, n))
        np.put_along_axis(ranks, self.order, rank_sorted, axis=1)
        return ranks.T


@functools.lru_cache(maxsize=8)
def _normal_scores(n: int) -> np.ndarray:
    """Phi^-1((r + 1/2) / (n + 1)) for every mid-rank r = 0, 1/2, ..., n among n training values
    (2n + 1,), indexed by 2r: the same values as computing it per entry, once per training size."""
    from scipy.special import ndtri
    scores = ndtri((np.arange(2 * n + 1) * 0.5 + 0.5) / (n + 1))
    scores.flags.writeable = False  # shared by every call with this n
    return scores


def map_rows(z: np.ndarray, train: np.ndarray, kind: str, cols: SortedColumns | None) -> np.ndarray:
    """Every row of z (N, D) mapped by the InputMap of the rows ``train`` (N,) bool: x (N, D).

    Equal, value for value, to ``InputMap.fit(z[train], kind)`` on the
    training rows and that map applied to the others (tested); ``cols`` is
    ``SortedColumns(z)``, needed for "quantile".
    """
    u = z
    if kind == "quantile":
        u = _normal_scores(int(train.sum()))[(2 * cols.mid_ranks(train)).astype(np.intp)]
    u_train = u[train]
    std = u_train.std(axis=0)
    std[std == 0.0] = 1.0
    mean = u_train.mean(axis=0)
    x_train = (u_train - mean) / std
    return np.clip((u - mean) / std, x_train.min(axis=0), x_train.max(axis=0))


def log_softmax_true(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ln softmax(logits)[i, y_i], logits (n, K) -> (n,) float64."""
    top = logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return logits[np.arange(labels.shape[0]), labels] - lse


def mixed_log_prob(log_q: np.ndarray, labels: np.ndarray, log_prior: np.ndarray) -> np.ndarray:
    """ln((1 - _PRIOR_MIX) q + _PRIOR_MIX p_train) of the true labels (n,)."""
    return np.logaddexp(math.log1p(-_PRIOR_MIX) + log_q, math.log(_PRIOR_MIX) + log_prior[labels])


class SoftmaxProblem:
    """One training set for penalised multinomial logistic regression (step 3).

    x (n, D) is standardized, so its columns have mean 0 and the intercept
    decouples from W in the curvature.  L-BFGS runs in preconditioned
    coordinates V = P^(1/2) W with P = Cov(x) / K + (alpha / n) I, about
    the curvature of the objective per example near uniform predictions:
    the same minimiser, reached in about half the iterations on
    correlated activations (measured).
    """

    def __init__(self, x: np.ndarray, labels: np.ndarray, n_classes: int):
        self.n, self.d = x.shape
        self.k = n_classes
        # (D+1, n): a row of ones carries the intercept, so logits and both
        # gradients are one matrix product each; reductions over classes run
        # along axis 0 of the (K, n) logits.
        self.x_t = np.empty((self.d + 1, self.n))
        self.x_t[:self.d] = x.T
        self.x_t[self.d] = 1.0
        self.true_flat = labels * self.n + np.arange(self.n)  # flat indices of the true logits in (K, n)
        self.onehot_t = np.zeros((n_classes, self.n))  # (K, n) float64
        self.onehot_t[labels, np.arange(self.n)] = 1.0
        eigval, self.eigvec = np.linalg.eigh(x.T @ x / self.n)  # Cov(x) = Q diag(g) Q^T
        self.eigval = np.maximum(eigval, 0.0)

    def fit(self, alpha: float, w0: np.ndarray, b0: np.ndarray, max_iter: int) -> tuple[np.ndarray, np.ndarray]:
        """(W (D, K), b (K,)) minimising the step-3 objective, started from (w0, b0)."""
        n, d, k = self.n, self.d, self.k
        a = alpha / n  # penalty per example
        root = np.zeros((d + 1, d + 1))  # P^(-1/2): features block, and the intercept's (curvature ~ 1/K)
        root[:d, :d] = (self.eigvec / np.sqrt(self.eigval / k + a)) @ self.eigvec.T
        root[d, d] = math.sqrt(k)
        penalty = np.full((d + 1, 1), a)
        penalty[d] = 0.0  # the intercept is not penalised
        x_t, onehot_t, true_flat = self.x_t, self.onehot_t, self.true_flat
        start = np.vstack([w0, b0[None, :]])  # (D+1, K)

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w = root @ theta.reshape(d + 1, k)  # (D+1, K), last row the intercept
            s = w.T @ x_t  # (K, n) logits
            s -= s.max(axis=0)
            e = np.exp(s)
            total = e.sum(axis=0)  # (n,)
            pw = penalty * w
            loss = (np.log(total).sum() - s.ravel()[true_flat].sum()) / n + 0.5 * float((pw * w).sum())
            e /= total
            e -= onehot_t  # (K, n): d loss_i / d logits
            grad = x_t @ e.T
            grad /= n
            grad += pw
            return loss, (root @ grad).ravel()

        theta0 = np.linalg.solve(root, start).ravel()
        from scipy.optimize import minimize
        res = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": max_iter, "ftol": _FTOL, "gtol": _GTOL})
        w = root @ res.x.reshape(d + 1, k)
        return w[:d], w[d]


@dataclass(frozen=True, eq=False)
class LinearModel:
    """logits = x @ w + b on mapped inputs x."""

    w: np.ndarray  # (D, K)
    b: np.ndarray  # (K,)


@dataclass(eq=False)
class TrainingSet:
    """One training set of the cross-fitting; families cache their work in ``cache``."""

    x_all: np.ndarray  # (N, D) float64: every example mapped by this set's InputMap (map_rows)
    x: np.ndarray  # (n, D) float64 the training examples' rows of x_all
    labels: np.ndarray  # (n,) int64
    n_classes: int
    log_prior: np.ndarray  # (K,) ln of the training label frequencies
    cache: dict


class LinearFamily:
    """Multinomial logistic regression (step 3), for :func:`cross_fit`."""

    def __init__(self, transform: str, grid: tuple[float, ...], max_iter: int):
        self.transform = transform
        self.grid = tuple(sorted((float(v) for v in grid), reverse=True))  # strong -> weak: warm starts
        self.max_iter = max_iter

    def initial(self, d: int, k: int) -> LinearModel:
        return LinearModel(np.zeros((d, k)), np.zeros(k))

    def fit(self, ts: TrainingSet, alpha: float, start: LinearModel) -> LinearModel:
        # The eigendecomposition depends only on the training set: kept along the alpha path.
        if "problem" not in ts.cache:
            ts.cache["problem"] = SoftmaxProblem(ts.x, ts.labels, ts.n_classes)
        return LinearModel(*ts.cache["problem"].fit(alpha, start.w, start.b, self.max_iter))

    def log_prob(self, model: LinearModel, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return log_softmax_true(x @ model.w + model.b, labels)

    def final_start(self, models: list[LinearModel]) -> LinearModel:
        # A convex problem: the mean of the inner solutions is close to the refit's optimum.
        return LinearModel(np.mean([m.w for m in models], axis=0), np.mean([m.b for m in models], axis=0))


@dataclass(frozen=True, eq=False)
class LdaStats:
    """What every shrinkage value of one training set shares: class means and the pooled covariance."""

    means: np.ndarray  # (K, D) float64 class means of the mapped training inputs
    counts: np.ndarray  # (K,) float64 training examples per class
    center: np.ndarray  # (D,) float64 mean of all training inputs
    eigval: np.ndarray  # (D,) eigenvalues of the pooled within-class covariance S
    eigvec: np.ndarray  # (D, D) its eigenvectors
    scale: float  # tr(S) / D: the target of the shrinkage
    log_prior: np.ndarray  # (K,) ln of the training label frequencies


class LdaFamily:
    """Linear discriminant analysis with a shrunk covariance, for :func:`cross_fit` (step 3).

    The Gaussian model of each class, x | y ~ N(mu_y, Sigma) with one
    covariance for all classes, and Bayes' rule give a linear decoder:
    logits = x Sigma^-1 mu_y^T - mu_y Sigma^-1 mu_y^T / 2 + ln p_y.  Fitted in
    closed form from the training examples: p_y their label frequencies,
    Sigma = (1 - lam) S + lam (tr(S) / D) I with S the pooled within-class
    covariance (Friedman, "Regularized discriminant analysis", JASA 1989),
    and mu_y = m + (m_y - m) n_y / (n_y + kappa), the class mean m_y drawn
    towards the mean of all training inputs m as a normal prior worth kappa
    examples would (a small class's mean is the noisiest; kappa -> infinity
    leaves only the label frequencies).  kappa (``lda_prior``, walked from
    strong to weak) plays the part of logistic regression's alpha; each lam
    in ``lda_shrinkage`` is a family of its own for the inner CV.  Where the classes are close to
    Gaussian, as a wide layer's units often are, it needs far fewer
    examples than logistic regression for the same log-loss (Efron, JASA
    1975): at 84 dimensions and N = 2,000 it halves the decoder's gap to
    the truth (docs/mutual-information.md).  Where they are not, the inner
    CV prefers logistic regression.  Either is a decoder fitted on training
    examples only, so the bound holds whichever is picked.
    """

    def __init__(self, transform: str, grid: tuple[float, ...], lam: float):
        self.transform = transform
        self.grid = tuple(sorted((float(v) for v in grid), reverse=True))  # kappa, strong -> weak
        self.lam = float(lam)

    def initial(self, d: int, k: int) -> None:
        return None  # closed form: nothing to start from

    def fit(self, ts: TrainingSet, kappa: float, start) -> LinearModel:
        if "lda" not in ts.cache:
            ts.cache["lda"] = self._stats(ts)
        st = ts.cache["lda"]
        means = st.center + (st.means - st.center) * (st.counts / (st.counts + kappa))[:, None]  # (K, D)
        # Eigenvalues of Sigma; a floor keeps a unit that is constant on the training set finite.
        lam = self.lam
        e = np.maximum((1.0 - lam) * st.eigval + lam * st.scale, 1e-12 * max(st.scale, 1.0))
        w = (st.eigvec / e) @ (st.eigvec.T @ means.T)  # (D, K) = Sigma^-1 mu^T
        b = -0.5 * np.einsum("kd,dk->k", means, w) + st.log_prior
        return LinearModel(w, b)

    @staticmethod
    def _stats(ts: TrainingSet) -> LdaStats:
        n, d = ts.x.shape
        k = ts.n_classes
        counts = np.bincount(ts.labels, minlength=k)  # every class is present (class_counts_message)
        onehot = np.zeros((k, n))
        onehot[ts.labels, np.arange(n)] = 1.0
        means = onehot @ ts.x / counts[:, None]  # (K, D)
        r = ts.x - means[ts.labels]
        cov = r.T @ r / max(n - k, 1)  # (D, D) pooled within-class covariance
        eigval, eigvec = np.linalg.eigh(cov)
        return LdaStats(means, counts.astype(np.float64), ts.x.mean(axis=0), np.maximum(eigval, 0.0), eigvec,
                        float(np.trace(cov)) / d, ts.log_prior)

    def log_prob(self, model: LinearModel, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return log_softmax_true(x @ model.w + model.b, labels)

    def final_start(self, models: list) -> None:
        return None


def training_set(z: np.ndarray, train: np.ndarray, labels: np.ndarray, n_classes: int, transform: str,
                 cols: SortedColumns | None) -> TrainingSet:
    """The examples ``train`` (N,) bool of z (N, D) and labels (N,) as a training set."""
    x_all = map_rows(z, train, transform, cols)
    freq = np.bincount(labels[train], minlength=n_classes) / int(train.sum())
    with np.errstate(divide="ignore"):
        log_prior = np.log(freq)
    return TrainingSet(x_all, x_all[train], labels[train], n_classes, log_prior, {})


def cross_fit(z: np.ndarray, labels: np.ndarray, n_classes: int, folds: int, seed: int,
              families: list, reuse: list | None = None) -> tuple[np.ndarray, list[tuple[int, float, object]]]:
    """Out-of-fold ln q'(y_i|z_i) (N,) and, per fold, (family index, alpha, fitted model): steps 1-5.

    Each family (:class:`LinearFamily`, or the MLP of
    :mod:`fedmpi.info.decoder_mlp`) walks its own grid with its own early
    stop; the inner CV then picks the best (family, alpha) for each fold.

    ``reuse``: the per-fold result of an earlier call on the same labels
    (a series, see :class:`Series`): the inner CV is skipped, and fold f is
    refitted with its earlier (family, alpha), starting from its earlier
    model. Nothing of fold f's labels went into either, so the bound stays
    valid.
    """
    fold = stratified_folds(labels, n_classes, folds, seed)
    held = [fold == g for g in range(folds)]
    used = families if reuse is None else [families[m] for m, _, _ in reuse]
    cols = SortedColumns(z) if any(family.transform == "quantile" for family in used) else None
    if reuse is not None:
        return _refit(z, labels, n_classes, fold, held, families, reuse, cols)
    d = z.shape[1]
    pairs = list(itertools.combinations(range(folds), 2))
    candidates = []  # (inner-CV score, family index, grid index, outer fold)
    fitted: dict[tuple, object] = {}  # (family, f, g, grid index) -> model
    sets: dict[tuple, TrainingSet] = {}
    for m, family in enumerate(families):
        for p in pairs:
            key = (family.transform, p)
            if key not in sets:
                train = (fold != p[0]) & (fold != p[1])
                sets[key] = training_set(z, train, labels, n_classes, family.transform, cols)
        current = {p: family.initial(d, n_classes) for p in pairs}
        best = np.full(folds, -np.inf)
        misses = np.zeros(folds, dtype=np.int64)  # grid values in a row scoring below the best
        active = np.ones(folds, dtype=bool)
        for j, alpha in enumerate(family.grid):
            if not active.any():
                break
            for p in pairs:
                if active[p[0]] or active[p[1]]:
                    current[p] = family.fit(sets[family.transform, p], alpha, current[p])
                    fitted[m, p[0], p[1], j] = current[p]
            for f in np.flatnonzero(active):
                total = 0.0
                for g in range(folds):
                    if g != f:
                        p = (min(f, g), max(f, g))
                        ts = sets[family.transform, p]
                        if g not in ts.cache:  # the mapped held-out fold, reused along the grid
                            ts.cache[g] = ts.x_all[held[g]]
                        lq = family.log_prob(fitted[m, p[0], p[1], j], ts.cache[g], labels[held[g]])
                        total += float(mixed_log_prob(lq, labels[held[g]], ts.log_prior).sum())
                candidates.append((total, m, j, int(f)))
                if total > best[f]:
                    best[f], misses[f] = total, 0
                else:
                    misses[f] += 1
                    active[f] = misses[f] < _PATIENCE
    log_q = np.empty(z.shape[0])
    chosen = []
    for f in range(folds):
        _, m, j = max((score, m, j) for score, m, j, ff in candidates if ff == f)
        family = families[m]
        ts = training_set(z, fold != f, labels, n_classes, family.transform, cols)
        start = family.final_start([fitted[(m,) + (min(f, g), max(f, g), j)] for g in range(folds) if g != f])
        model = family.fit(ts, family.grid[j], start)
        chosen.append((m, family.grid[j], model))
        lq = family.log_prob(model, ts.x_all[held[f]], labels[held[f]])
        log_q[held[f]] = mixed_log_prob(lq, labels[held[f]], ts.log_prior)
    return log_q, chosen


def _refit(z: np.ndarray, labels: np.ndarray, n_classes: int, fold: np.ndarray, held: list[np.ndarray],
           families: list, reuse: list, cols: SortedColumns | None) -> tuple[np.ndarray, list[tuple[int, float, object]]]:
    """Step 5 alone, with each fold's (family, alpha) and starting model from ``reuse``."""
    log_q = np.empty(z.shape[0])
    chosen = []
    for f, (m, alpha, start) in enumerate(reuse):
        family = families[m]
        ts = training_set(z, fold != f, labels, n_classes, family.transform, cols)
        model = family.fit(ts, alpha, start)
        chosen.append((m, alpha, model))
        lq = family.log_prob(model, ts.x_all[held[f]], labels[held[f]])
        log_q[held[f]] = mixed_log_prob(lq, labels[held[f]], ts.log_prior)
    return log_q, chosen


def families_for(transform: str, make) -> list:
    """The families of every input map: ``make(transform)`` (a family or a list of them) for
    "standardize"/"quantile", for both under "auto"."""
    out = []
    for t in (("standardize", "quantile") if transform == "auto" else (transform,)):
        made = make(t)
        out.extend(made if isinstance(made, list) else [made])
    return out


# ----- the estimator -------------------------------------------------------------


def split_zy(est: str, a: c.Side, b: c.Side) -> tuple[c.Side, c.Side]:
    """(Z side, label side) of a pair, or ValueError saying what ``est`` estimates."""
    kind = c.pair_kind(a.kind, b.kind)
    if kind != c.ZY:
        what = "two float sides (I(X;Z))" if kind == c.XZ else "two label vectors"
        raise ValueError(f"{est} estimates I(Z;Y) only, between a float representation Z and integer "
                         f"labels Y; got {what}")
    return (a, b) if b.kind == c.LABELS else (b, a)


def prepare_side(side: c.Side, params, position: int) -> c.Side:
    return side  # the work depends on both sides together (folds are drawn from the labels)


@dataclass(frozen=True, eq=False)
class SeriesMemo:
    """What one estimate of a series hands the next: see ``DecoderParams.retune``."""

    labels: np.ndarray  # (N,) the labels it was made on: another label vector starts afresh
    dim: int  # D of Z
    chosen: list  # per fold (family index, alpha, fitted model)
    since: int  # estimates since the last inner CV (0: this one ran it)


def cross_fitted_bound(est: str, a: c.Side, b: c.Side, params, make_family,
                       memo: SeriesMemo | None = None) -> tuple[c.Estimate, SeriesMemo | None]:
    """Steps 1-6 for the decoders: (estimate, memo for the next estimate of a series)."""
    z, y = split_zy(est, a, b)
    if y.n_classes == 1:
        return c.Estimate(0.0, 0.0), None  # one class: H(Y) = 0
    message = class_counts_message(est, y, params.folds)
    if message:
        raise ValueError(message)
    values = np.asarray(z.values, dtype=np.float64)
    reuse = memo is not None and memo.since + 1 < params.retune and memo.dim == values.shape[1] \
        and np.array_equal(memo.labels, y.values)
    log_q, chosen = cross_fit(values, y.values, y.n_classes, params.folds, params.seed,
                              families_for(params.transform, make_family), memo.chosen if reuse else None)
    after = SeriesMemo(np.array(y.values, copy=True), values.shape[1], chosen, memo.since + 1 if reuse else 0)
    return variational_bound(log_q, y.values), after


def _family(params: DecoderParams):
    def make(t: str) -> list:
        out = []
        if "logistic" in params.models:
            out.append(LinearFamily(t, params.l2_grid, params.max_iter))
        if "lda" in params.models:
            out.extend(LdaFamily(t, params.lda_prior, lam) for lam in params.lda_shrinkage)
        return out
    return make


def with_error(a: c.Side, b: c.Side, params: DecoderParams) -> c.Estimate:
    return cross_fitted_bound(NAME, a, b, params, _family(params))[0]


def series_step(a: c.Side, b: c.Side, params: DecoderParams, memo: SeriesMemo | None):
    return cross_fitted_bound(NAME, a, b, params, _family(params), memo)


def mutual_information(a: c.Side, b: c.Side, params: DecoderParams) -> float:
    return with_error(a, b, params).value


def input_words(transform: str) -> str:
    return {"standardize": "standardized Z", "quantile": "quantile-transformed Z",
            "auto": "standardized or quantile-transformed Z (inner CV picks)"}[transform]


def describe(params: DecoderParams) -> dict:
    return {
        "xz": "not estimated (decoder estimates I(Z;Y) only)",
        "zy": (f"H(Y) - CE of a linear decoder of Y ({' or '.join(_MODEL_WORDS[m] for m in params.models)}, "
               f"picked with its regularisation by inner CV) on {input_words(params.transform)}, "
               f"{params.folds}-fold cross-fitted: a lower bound on I(Z;Y) in expectation"),
        "xz_kind": "none",
        "zy_kind": "lower_bound",
    }


c.ESTIMATORS.register(NAME, DecoderParams)(
    c.Estimator(prepare_side, mutual_information, describe, with_error=with_error, pairs=(c.ZY,),
                series_step=series_step, modules=("scipy.optimize", "scipy.special")))
