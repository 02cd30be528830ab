"""`fedavg`: federated averaging over flat parameter vectors.

McMahan et al. 2017 (FedAvg): the global model is the example-weighted mean
sum_k w_k theta_k / sum_k w_k, w_k = client k's weight (its number of
training examples). Each client contributes `[w_k * theta_k, w_k]`; summing
those buffers (one Allreduce, or a Gather and a sum) and dividing by the
last entry gives the average, so one collective carries numerator and
denominator. Adilova et al. 2019 also run averaging "without sending back"
(`sync.redistribute: false`): the average then exists for analysis only.
"""

from __future__ import annotations

import numpy as np

from fedmpi.algorithms.base import ALGORITHMS, Algorithm


def pack_contribution(theta: np.ndarray, weight: float, out: np.ndarray) -> np.ndarray:
    """Write `[w * theta, w]` into `out` (num_params + 1,) float32 and return it."""
    np.multiply(theta, np.float32(weight), out=out[:-1])
    out[-1] = weight
    return out


def average_from_sum(summed: np.ndarray) -> np.ndarray:
    """The weighted mean (num_params,) from the summed contributions (num_params + 1,)."""
    total = summed[-1]
    if not total > 0:
        raise ValueError(f"total weight of the average is {total}; every worker must have examples")
    return summed[:-1] / total


@ALGORITHMS.register("fedavg")
class FedAvg(Algorithm):
    compressible = True

    @property
    def contribution_size(self) -> int:
        return self.num_params + 1

    def contribute(self, work, client, server, out):
        pack_contribution(work.theta, work.weight, out)
        return client

    def aggregate(self, server, summed):
        return {"theta": average_from_sum(summed)}

    def local_model(self, summed):
        return average_from_sum(summed)
