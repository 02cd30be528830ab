"""Bounds on I(Z;Y) that need no MI estimator, with their sampling errors, in nats.

Adilova et al. (2019) plot I(Z;Y) of the representation Z and the labels Y;
whatever estimates it must lie in [Fano lower bound, H(Y)]:

- **Upper:** I(Z;Y) <= H(Y). fedmpi uses the plug-in entropy of the labels,
  H = -sum_c p_c ln p_c with p_c the class frequencies.  Its standard error
  is the multinomial delta method, Var(H) ~ (sum_c p_c (ln p_c)^2 - H^2) / N,
  computed as the standard error of the mean of psi_i = -ln p_{y_i} - H.
  (The plug-in entropy is biased low by about (K - 1) / (2N), 0.002 nats for
  10 classes at N = 2,000; at exactly balanced classes the first-order
  error vanishes and the standard error is 0.)
- **Lower (Fano):** for any classifier Yhat = g(Z) with error rate
  Pe = P(Yhat != Y), data processing and Fano's inequality (Cover & Thomas,
  *Elements of Information Theory*, Thm. 2.10.1) give
  I(Z;Y) >= I(Yhat;Y) = H(Y) - H(Y|Yhat) >= H(Y) - h(Pe) - Pe ln M,
  with h the binary entropy (nats) and M the number of labels Y can take
  once the prediction is known to be wrong.  Fano's inequality holds for any
  distribution of Y, balanced or not, with H(Y) that distribution's
  entropy.  fedmpi evaluates it on the empirical distribution of the N
  examples (Y uniform over the examples' labels, Yhat their predictions):
  there it is an exact inequality with the plug-in H and the empirical Pe,
  and M = m - 1 when every prediction is one of the m classes present in
  ``labels``, M = m when some wrong prediction names a class absent from
  ``labels`` (then a wrong answer leaves all m classes possible).  For the
  population it is the plug-in estimate of the bound.  The value is
  max(0, H - h(Pe) - Pe ln M).  Its standard error is the delta method on
  (class frequencies, Pe) jointly, i.e. the standard error of the mean of
  psi_i = (-ln p_{y_i} - H) - (ln((1 - Pe)/Pe) + ln M)(e_i - Pe), e_i the
  error indicator: the binomial error of Pe and the multinomial error of H
  together, with their correlation, for the unclamped expression.  At
  Pe = 0 or 1 the Pe term is 0 (the delta method has nothing to linearise:
  no error was seen).
- **Variational (Barber & Agakov 2003, "The IM algorithm"):** for any
  conditional model q(y|z), I(Z;Y) >= H(Y) + E log q(Y|Z).  Given the
  per-example log-probabilities of the true label, :func:`variational_bound`
  returns H(Y) - CE with the standard error of the mean of the per-example
  terms ln q(y_i|z_i) - ln p_{y_i}.  It is a lower bound in expectation only
  when q was not fitted on the examples it scores (cross-fitting, as the
  ``decoder`` estimator does); a model's own head scored on its training
  examples can overstate it.  The same reasoning as Adilova, Geiger &
  Fischer (ICLR 2023), who plot H(Y) - CE.

Everything here is a pure function of arrays; inputs are not modified.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from ._common import Estimate


class LabelBounds(NamedTuple):
    """The band [fano, entropy] for I(Z;Y) on one set of labelled examples, nats."""

    entropy: float  # plug-in H(Y)
    entropy_stderr: float
    fano: float  # max(0, H - h(Pe) - Pe ln M)
    fano_stderr: float
    error_rate: float  # Pe
    alternatives: int  # M
    n: int


class BoundCheck(NamedTuple):
    """Where an estimate lies relative to [lower, upper].

    ``side`` is "below" or "above" only when the estimate is beyond the bound
    by more than ``z`` combined standard errors; "inside" otherwise;
    "unknown" for a NaN estimate.  ``excess`` is the distance beyond the bound
    in nats (0 when inside the band, even if it is not significant: then
    ``side`` is "inside" and ``excess`` > 0 tells how far it was).
    ``excess_se`` is ``excess`` in combined standard errors.
    """

    side: str
    excess: float
    excess_se: float


def _labels(labels) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or not (np.issubdtype(y.dtype, np.integer) or y.dtype == np.bool_):
        raise ValueError(f"labels must be a 1-D integer array, got shape {y.shape} dtype {y.dtype}")
    if y.shape[0] < 2:
        raise ValueError(f"labels need at least 2 examples, got {y.shape[0]}")
    return y


def _entropy_terms(y: np.ndarray) -> tuple[float, np.ndarray]:
    """Plug-in H(Y) and the per-example terms -ln p_{y_i} (N,) float64 (mean = H)."""
    _, codes, counts = np.unique(y, return_inverse=True, return_counts=True)
    p = counts / y.shape[0]
    terms = -np.log(p)[codes.reshape(-1)]
    return float(-(p * np.log(p)).sum()), terms


def _stderr_of_mean(psi: np.ndarray) -> float:
    n = psi.shape[0]
    centred = psi - psi.mean()
    return float(math.sqrt(float(centred @ centred) / (n * (n - 1))))


def label_entropy(labels) -> float:
    """Plug-in H(Y) in nats of an integer label vector (N,)."""
    return _entropy_terms(_labels(labels))[0]


def label_entropy_stderr(labels) -> float:
    """Delta-method standard error of the plug-in H(Y) (module docstring)."""
    h, terms = _entropy_terms(_labels(labels))
    return _stderr_of_mean(terms - h)


def binary_entropy(p: float) -> float:
    """h(p) = -p ln p - (1 - p) ln(1 - p) in nats; h(0) = h(1) = 0."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return float(-p * math.log(p) - (1.0 - p) * math.log1p(-p))


def label_bounds(labels, predicted) -> LabelBounds:
    """H(Y), the Fano lower bound on I(Z;Y) from the classifier's ``predicted``
    labels (N,) on the same examples, and their standard errors."""
    y = _labels(labels)
    yhat = np.asarray(predicted)
    if yhat.shape != y.shape:
        raise ValueError(f"predicted must have the shape of labels {y.shape}, got {yhat.shape}")
    n = y.shape[0]
    h, terms = _entropy_terms(y)
    wrong = (yhat != y)  # (N,) bool
    pe = float(wrong.mean())
    present = np.unique(y)
    m = present.shape[0]
    outside = bool(np.any(~np.isin(yhat[wrong], present)))
    alternatives = m if outside else m - 1
    log_m = math.log(alternatives) if alternatives > 0 else 0.0
    raw = h - binary_entropy(pe) - pe * log_m
    psi = terms - h
    if 0.0 < pe < 1.0:
        slope = math.log((1.0 - pe) / pe) + log_m  # d/dPe of (h(Pe) + Pe ln M)
        psi = psi - slope * (wrong - pe)
    return LabelBounds(h, _stderr_of_mean(terms - h), max(0.0, raw), _stderr_of_mean(psi), pe, alternatives, n)


def fano_bound(labels, predicted) -> float:
    """max(0, H(Y) - h(Pe) - Pe ln M): the Fano lower bound on I(Z;Y) (module docstring)."""
    return label_bounds(labels, predicted).fano


def variational_bound(log_prob_true, labels) -> Estimate:
    """H(Y) - CE and its standard error from per-example ln q(y_i | z_i) (N,).

    ``log_prob_true[i]`` is a model's natural-log probability of example i's
    true label; CE = -mean(log_prob_true).  The value is
    mean_i(ln q(y_i|z_i) - ln p_{y_i}) with p the label frequencies (equal to
    plug-in H(Y) - CE); the standard error is that of this mean over the N
    examples.  It covers the sampling of the N scored examples (including
    H(Y)'s part), treating the model as fixed; it does not cover the
    randomness of fitting the model (fold split, seed), nor the gap between
    the bound and I(Z;Y) (the KL from the true posterior to q).
    """
    y = _labels(labels)
    lq = np.asarray(log_prob_true, dtype=np.float64)
    if lq.shape != y.shape:
        raise ValueError(f"log_prob_true must have the shape of labels {y.shape}, got {lq.shape}")
    # Rounding can leave a log-probability of ~1 a hair above 0; more than 1e-9 is a wrong input.
    if not np.all(lq <= 1e-9) or np.any(np.isnan(lq)):
        raise ValueError("log_prob_true must be natural-log probabilities (<= 0, not NaN)")
    h, terms = _entropy_terms(y)
    t = np.minimum(lq, 0.0) + terms  # (N,) ln q(y_i|z_i) - ln p_{y_i}
    if not np.all(np.isfinite(t)):
        return Estimate(-math.inf, math.nan)  # a true label given probability 0: CE is infinite
    return Estimate(float(t.mean()), _stderr_of_mean(t))


def compare_to_bounds(value: float, stderr: float, lower: float, lower_stderr: float,
                      upper: float, upper_stderr: float, z: float = 2.0) -> BoundCheck:
    """Is ``value`` (standard error ``stderr``, NaN allowed) outside [lower, upper]
    by more than ``z`` combined standard errors?

    The combined error against a bound is sqrt(stderr^2 + bound_stderr^2);
    a NaN ``stderr`` counts as 0, so only the bound's own error is allowed.
    """
    if not (z >= 0.0):
        raise ValueError(f"z must be >= 0, got {z!r}")
    if math.isnan(value):
        return BoundCheck("unknown", math.nan, math.nan)
    own = 0.0 if math.isnan(stderr) else float(stderr)
    for side, excess, bound_se in (("below", lower - value, lower_stderr), ("above", value - upper, upper_stderr)):
        if excess > 0.0:
            combined = math.hypot(own, 0.0 if math.isnan(bound_se) else float(bound_se))
            excess_se = excess / combined if combined > 0.0 else math.inf
            return BoundCheck(side if excess > z * combined else "inside", float(excess), float(excess_se))
    return BoundCheck("inside", 0.0, 0.0)


def outside_band(values, stderrs, bounds, which: str, z: float = 2.0) -> list[tuple[int, BoundCheck]]:
    """The workers whose I(Z;Y) estimate lies outside [Fano, H(Y)] beyond sampling error.

    values, stderrs: (W,) estimates and standard errors for model ``which``
    ("local" or "averaged"); bounds: a trace's /bounds names -> (W,)
    ("entropy", "entropy_se", "fano_<which>", "fano_se_<which>").  Returns
    (worker index, check) for each worker whose check is "below" or "above".
    """
    out = []
    for k, (value, se) in enumerate(zip(np.asarray(values, float), np.asarray(stderrs, float))):
        check = compare_to_bounds(float(value), float(se), float(bounds[f"fano_{which}"][k]),
                                  float(bounds[f"fano_se_{which}"][k]), float(bounds["entropy"][k]),
                                  float(bounds["entropy_se"][k]), z)
        if check.side in ("below", "above"):
            out.append((k, check))
    return out
