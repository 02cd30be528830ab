"""Federated averaging over flat parameter vectors: pure functions.

McMahan et al. 2017 (FedAvg): the aggregate is the example-weighted mean
sum_k w_k theta_k / sum_k w_k, w_k = worker k's number of training examples.
Each worker contributes one buffer `[w_k * theta_k, w_k]`; summing those
buffers (one Allreduce, or a Gather and a sum) and dividing by the last entry
gives the average, so one collective carries both numerator and denominator.
Adilova et al. 2019 also run averaging "without sending back": the average
exists for analysis only and workers continue from their own models.
"""

from __future__ import annotations

import numpy as np


def pack_contribution(theta: np.ndarray, num_examples: float, out: np.ndarray) -> np.ndarray:
    """Write `[w * theta, w]` into `out` (P + 1,) float32 and return it."""
    np.multiply(theta, np.float32(num_examples), out=out[:-1])
    out[-1] = num_examples
    return out


def average_from_sum(summed: np.ndarray) -> np.ndarray:
    """The weighted mean (P,) from the summed contributions (P + 1,)."""
    total = summed[-1]
    if not total > 0:
        raise ValueError(f"total weight of the average is {total}; every worker must have examples")
    return summed[:-1] / total
