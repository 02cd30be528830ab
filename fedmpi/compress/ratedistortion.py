"""The rate-distortion limit of model aggregation, and what a round's updates say about it.

Zhang, Tao, Wang, Xu, on the rate-distortion limit of model aggregation,
IEEE Transactions on Communications (summarised in the project's
papers/neighbours.md, which this module follows). K workers each observe
a noisy copy of the global update, G_k = G + N_k, with G ~ N(0, sigma_X^2 I)
and N_k ~ N(0, sigma_N^2 I) independent; the coordinator wants an estimate
of G with mean-squared error d per element. This is the symmetric vector
Gaussian CEO problem, whose minimum total rate over all workers is, in bits
per element,

    R_sum(d) = -(K / 2) log2(1 - sigma_N^2 / (K d)) + (1 / 2) log2(1 + sigma_X^2 / d),

for d > sigma_N^2 / K, the error of the uncompressed mean; no finite rate
reaches d <= sigma_N^2 / K. Compare a compressor's total
sum_k 8 len(payload_k) / P bits per element with R_sum at the distortion
it reached: `aggregate_distortion` measures it about the exact mean of the
updates, and `limit_bits` adds the exact mean's own error sigma_N^2 / K.

Everything here is a pure function in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def _check_model(num_workers: int, signal_var: float, noise_var: float) -> None:
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 1:
        raise ValueError(f"num_workers must be an integer >= 1, got {num_workers!r}")
    for name, v in (("signal_var", signal_var), ("noise_var", noise_var)):
        if not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")


def min_distortion(num_workers: int, noise_var: float) -> float:
    """sigma_N^2 / K: the per-element error of the exact mean, below which no rate suffices."""
    _check_model(num_workers, 0.0, noise_var)
    return noise_var / num_workers


def ceo_sum_rate(distortion, num_workers: int, signal_var: float, noise_var: float):
    """R_sum(d) in bits per element, summed over the K workers; inf where d <= sigma_N^2 / K.

    distortion: a number or an array of them (the result has its shape, a
    float for a number). d = inf gives 0.
    """
    _check_model(num_workers, signal_var, noise_var)
    d = np.asarray(distortion, dtype=np.float64)
    if np.any(np.isnan(d)):
        raise ValueError("distortion must not be NaN")
    k = float(num_workers)
    floor = noise_var / k
    valid = d > floor
    safe = np.where(valid, d, floor + 1.0)  # keeps the logs off invalid arguments; those become inf below
    # log2(1 - floor / d) written as log2(d - floor) - log2(d): exact subtraction near the floor
    # (Sterbenz), where 1 - floor / d would round to 0 or lose its digits.
    with np.errstate(invalid="ignore"):  # d = inf: inf - inf, replaced by the where below
        rate = (-(k / 2) * (np.log2(safe - floor) - np.log2(safe))
                + 0.5 * np.log1p(signal_var / safe) / math.log(2))
    rate = np.where(np.isinf(safe), 0.0, rate)
    out = np.where(valid, rate, np.inf)
    return float(out) if out.ndim == 0 else out


def ceo_distortion(rate: float, num_workers: int, signal_var: float, noise_var: float) -> float:
    """The inverse of `ceo_sum_rate`: the least per-element distortion a total of `rate` bits allows.

    R_sum falls strictly from +inf (at d = sigma_N^2 / K) to 0 (d -> inf),
    so the answer is unique; found by bisection to float64 precision. rate =
    0 gives inf; with sigma_X^2 = sigma_N^2 = 0 every rate gives 0.
    """
    _check_model(num_workers, signal_var, noise_var)
    if not (rate >= 0 and not math.isnan(rate)):
        raise ValueError(f"rate must be a number >= 0, got {rate!r}")
    floor = noise_var / num_workers
    if signal_var == 0 and noise_var == 0:
        return 0.0
    if rate == 0:
        return math.inf
    if math.isinf(rate):
        return floor
    lo = floor
    hi = max(floor, signal_var, 1e-300) * 2
    while ceo_sum_rate(hi, num_workers, signal_var, noise_var) > rate:
        hi *= 2
    while True:  # invariant: R(lo) > rate >= R(hi)
        mid = lo + (hi - lo) / 2
        if mid <= lo or mid >= hi:
            return hi
        if ceo_sum_rate(mid, num_workers, signal_var, noise_var) > rate:
            lo = mid
        else:
            hi = mid


@dataclass(frozen=True)
class UpdateVariances:
    """The CEO model's variances, estimated from one round's worker updates (per element)."""

    signal_var: float  # sigma_X^2: mean_var less the noise's share noise_var / K, at least 0
    noise_var: float  # sigma_N^2: mean over entries of the variance across workers (ddof 1)
    mean_var: float  # variance across entries of the mean update (ddof 1) = sigma_X^2 + sigma_N^2 / K
    num_workers: int  # K


def estimate_variances(updates: np.ndarray) -> UpdateVariances:
    """sigma_X^2 and sigma_N^2 of the CEO model from a stack of worker updates (K, P).

    With m = the mean over workers (P,):
    noise_var = mean_i [ sum_k (u_ki - m_i)^2 / (K - 1) ], unbiased for sigma_N^2;
    mean_var = sum_i (m_i - mean(m))^2 / (P - 1), whose expectation under
    the model is sigma_X^2 + sigma_N^2 / K (the mean still holds the
    workers' averaged noise); signal_var = max(0, mean_var - noise_var / K),
    unbiased for sigma_X^2 before the clip at 0.
    """
    u = np.asarray(updates)
    if u.ndim != 2 or u.shape[0] < 2 or u.shape[1] < 2:
        raise ValueError(f"updates must be a (K, P) stack with K >= 2 workers and P >= 2 entries, "
                         f"got shape {u.shape}")
    if not np.all(np.isfinite(u)):
        raise ValueError("updates must be finite")
    k = u.shape[0]
    m = u.mean(axis=0, dtype=np.float64)  # (P,) float64
    noise_var = float(np.var(u, axis=0, ddof=1, dtype=np.float64).mean())
    mean_var = float(np.var(m, ddof=1))
    return UpdateVariances(signal_var=max(0.0, mean_var - noise_var / k), noise_var=noise_var,
                           mean_var=mean_var, num_workers=k)


def aggregate_distortion(aggregate: np.ndarray, exact: np.ndarray) -> float:
    """||aggregate - exact||^2 / P in float64: the per-element error of a compressed round's aggregate.

    aggregate: (P,) what the coordinator combined from decoded payloads;
    exact: (P,) the same combination of the uncompressed updates.
    """
    a, b = np.asarray(aggregate), np.asarray(exact)
    if a.ndim != 1 or a.shape != b.shape or a.shape[0] == 0:
        raise ValueError(f"aggregate and exact must be vectors of one length, got {a.shape} and {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    return float(np.dot(diff, diff) / a.shape[0])


def limit_bits(distortion: float, variances: UpdateVariances) -> float:
    """R_sum at a compressed aggregate's distortion `distortion` about the exact mean, in bits per element.

    The CEO problem measures the error about the common update G, and the
    exact mean of the K updates is itself sigma_N^2 / K away from G; a
    compression error of d about the exact mean, independent of the workers'
    noise, puts the aggregate sigma_N^2 / K + d away from G. So the limit of
    a scheme that reached d is R_sum(sigma_N^2 / K + d): finite for every d > 0,
    and infinite only for d = 0 (lossless).
    """
    k = variances.num_workers
    return ceo_sum_rate(variances.noise_var / k + distortion, k, variances.signal_var, variances.noise_var)
