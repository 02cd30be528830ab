"""Cross-fitted variational lower bound on I(Z;Y) with a one-hidden-layer MLP decoder, in nats.

Barber & Agakov (NIPS 2003) as in :mod:`fedmpi.info.decoder`, with the same
folds, inner cross-validation of the L2 strength, out-of-fold scoring and
standard error; only the model q(y|z) differs:

    logits = W2^T tanh(W1^T x + b1) + A^T x + b2

on standardized x, with ``hidden`` tanh units and a linear skip path A, so
the model contains the linear decoder.  The objective is
sum_i -ln q(y_i|x_i) + (alpha / 2)(||W1||^2 + ||W2||^2 + ||A||^2), minimised
by L-BFGS for at most ``max_iter`` iterations from W1 ~ N(0, 1/D) (drawn
from ``default_rng([seed, 3])``, the same draw for every fit), W2 = A = 0,
b = 0; along the alpha grid each fit starts from the previous one, and the
refit of fold f starts from the inner model of the split (f, g) with the
smallest g != f (averaging hidden units of different fits would be
meaningless).

The difference ``decoder_mlp - decoder`` is (a lower bound on) the label
information in Z that a linear read-out misses at this sample size.  The
cost is about two orders of magnitude above the linear decoder's (see
docs/mutual-information.md), so it is meant for analysis, not for every
sync point.  I(Z;Y) only; I(X;Z) raises ValueError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import _common as c
from .bounds import variational_bound
from .decoder import _TRANSFORMS, TrainingSet, cross_fitted_bound, input_words, log_softmax_true, prepare_side

NAME = "decoder_mlp"

_FTOL = 1e-8  # L-BFGS relative objective decrease at which a fit stops
_GTOL = 1e-4  # ... or largest gradient entry


@dataclass(frozen=True)
class DecoderMlpParams:
    """MLP-decoder parameters; stored in the trace with every estimate."""

    folds: int = 5  # outer folds F, as the linear decoder
    hidden: int = 32  # tanh units of the hidden layer
    l2_grid: tuple[float, ...] = (1000.0, 300.0, 100.0, 30.0, 10.0, 3.0, 1.0)  # alpha candidates (prior precision)
    transform: str = "standardize"  # input map, as decoder.transform ("auto" doubles the cost)
    seed: int = 0  # seeds the folds and the initial W1
    max_iter: int = 300  # L-BFGS iterations per fit (a cap, not a tuned early stop)
    retune: int = 10  # in a series, the inner CV every retune-th estimate (see decoder.retune)

    def check(self) -> None:
        c.check_int(NAME, "folds", self.folds, 3)
        c.check_choice(NAME, "transform", self.transform, _TRANSFORMS)
        c.check_int(NAME, "hidden", self.hidden, 1)
        c.check_positive_grid(NAME, "l2_grid", self.l2_grid)
        c.check_int(NAME, "seed", self.seed, 0)
        c.check_int(NAME, "max_iter", self.max_iter, 1)
        c.check_int(NAME, "retune", self.retune, 1)


@dataclass(frozen=True, eq=False)
class Mlp:
    """The MLP on mapped inputs x."""

    w1: np.ndarray  # (D, H)
    b1: np.ndarray  # (H,)
    w2: np.ndarray  # (H, K)
    a: np.ndarray  # (D, K) linear skip
    b2: np.ndarray  # (K,)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return np.tanh(x @ self.w1 + self.b1) @ self.w2 + x @ self.a + self.b2  # (n, K)


class MlpFamily:
    """The model class of the module docstring, for :func:`fedmpi.info.decoder.cross_fit`."""

    def __init__(self, transform: str, grid: tuple[float, ...], hidden: int, seed: int, max_iter: int):
        self.transform = transform
        self.grid = tuple(sorted((float(v) for v in grid), reverse=True))  # strong -> weak: warm starts
        self.hidden, self.seed, self.max_iter = hidden, seed, max_iter

    def initial(self, d: int, k: int) -> Mlp:
        w1 = np.random.default_rng([self.seed, 3]).standard_normal((d, self.hidden)) / math.sqrt(d)
        return Mlp(w1, np.zeros(self.hidden), np.zeros((self.hidden, k)), np.zeros((d, k)), np.zeros(k))

    def fit(self, ts: TrainingSet, alpha: float, start: Mlp) -> Mlp:
        x = ts.x  # (n, D) float64
        n, d = x.shape
        h, k = self.hidden, ts.n_classes
        onehot = np.zeros((n, k))
        onehot[np.arange(n), ts.labels] = 1.0
        shapes = [(d, h), (h,), (h, k), (d, k), (k,)]
        sizes = [int(np.prod(shape)) for shape in shapes]
        theta0 = np.concatenate([start.w1.ravel(), start.b1, start.w2.ravel(), start.a.ravel(), start.b2])
        pen = alpha / n  # penalty per example

        def unpack(theta):
            parts, pos = [], 0
            for shape, size in zip(shapes, sizes):
                parts.append(theta[pos:pos + size].reshape(shape))
                pos += size
            return parts

        def objective(theta):
            w1, b1, w2, skip, b2 = unpack(theta)
            hid = np.tanh(x @ w1 + b1)  # (n, H)
            s = hid @ w2 + x @ skip + b2  # (n, K)
            s -= s.max(axis=1, keepdims=True)
            e = np.exp(s)
            total = e.sum(axis=1)
            loss = (np.log(total).sum() - (s * onehot).sum()) / n
            loss += 0.5 * pen * float((w1 * w1).sum() + (w2 * w2).sum() + (skip * skip).sum())
            e /= total[:, None]
            e -= onehot
            e /= n  # (n, K) d loss / d logits
            back = (e @ w2.T) * (1.0 - hid * hid)  # (n, H)
            return loss, np.concatenate([(x.T @ back + pen * w1).ravel(), back.sum(axis=0),
                                         (hid.T @ e + pen * w2).ravel(), (x.T @ e + pen * skip).ravel(),
                                         e.sum(axis=0)])

        from scipy.optimize import minimize  # here: see fedmpi/info/decoder.py
        res = minimize(objective, theta0, jac=True, method="L-BFGS-B",
                       options={"maxiter": self.max_iter, "ftol": _FTOL, "gtol": _GTOL})
        return Mlp(*unpack(res.x))

    def log_prob(self, model: Mlp, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
        return log_softmax_true(model.logits(x), labels)

    def final_start(self, models: list[Mlp]) -> Mlp:
        return models[0]


def _family(params: DecoderMlpParams):
    return lambda t: MlpFamily(t, params.l2_grid, params.hidden, params.seed, params.max_iter)


def with_error(a: c.Side, b: c.Side, params: DecoderMlpParams) -> c.Estimate:
    return cross_fitted_bound(NAME, a, b, params, _family(params))[0]


def series_step(a: c.Side, b: c.Side, params: DecoderMlpParams, memo):
    return cross_fitted_bound(NAME, a, b, params, _family(params), memo)


def mutual_information(a: c.Side, b: c.Side, params: DecoderMlpParams) -> float:
    return with_error(a, b, params).value


def describe(params: DecoderMlpParams) -> dict:
    return {
        "xz": "not estimated (decoder_mlp estimates I(Z;Y) only)",
        "zy": (f"H(Y) - CE of a {params.hidden}-unit tanh MLP (with linear skip) decoding Y from "
               f"{input_words(params.transform)}, "
               f"{params.folds}-fold cross-fitted, L2 by inner CV: a lower bound on I(Z;Y) in expectation"),
        "xz_kind": "none",
        "zy_kind": "lower_bound",
        "hidden": params.hidden,
    }


c.ESTIMATORS.register(NAME, DecoderMlpParams)(
    c.Estimator(prepare_side, mutual_information, describe, with_error=with_error, pairs=(c.ZY,),
                series_step=series_step, modules=("scipy.optimize",)))
