"""`fedprox`: FedAvg with a proximal term that pulls each client towards the global model.

Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, "Federated Optimization in
Heterogeneous Networks", MLSys 2020. Each client minimises its local loss
plus (mu / 2) ||theta - theta_g||^2, theta_g the global model of the round
(`server["theta"]`, also under `sync.redistribute: false`), so after every
backward pass

    g <- g + mu * (theta - theta_g)

is added to the whole gradient, before the optimizer's weight decay and
momentum. Contribution and aggregation are FedAvg's: `[w * theta | w]`,
(num_params + 1,) float32, and the example-weighted mean. mu = 0 is FedAvg
step for step (no hook at all).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from fedmpi.algorithms.base import ALGORITHMS, State
from fedmpi.algorithms.fedavg import FedAvg


@dataclass(frozen=True)
class FedProxParams:
    mu: float = 0.01  # proximal weight; Li et al. 2020 pick it from {0.001, 0.01, 0.1, 1}; 0 is FedAvg

    def check(self) -> None:
        if not (math.isfinite(self.mu) and self.mu >= 0):
            raise ValueError(f"mu must be a number >= 0 (0 = FedAvg), got {self.mu!r}")


class _Proximal:
    """hook(theta, grad): grad += mu * (theta - theta_g).

    theta_g moves to the parameters' device and the difference buffer is
    allocated on the first call of the round; each step then runs two
    in-place kernels and allocates nothing."""

    def __init__(self, mu: float, anchor: np.ndarray):
        self._mu = mu
        self._anchor = torch.from_numpy(anchor)  # (num_params,) float32, theta_g; owned: a fresh copy
        self._diff: torch.Tensor | None = None  # (num_params,) float32 on the parameters' device

    def __call__(self, theta: torch.Tensor, grad: torch.Tensor) -> None:
        if self._diff is None or self._diff.device != theta.device:
            self._anchor = self._anchor.to(theta.device)
            self._diff = torch.empty_like(theta)
        torch.sub(theta, self._anchor, out=self._diff)
        grad.add_(self._diff, alpha=self._mu)


@ALGORITHMS.register("fedprox", FedProxParams)
class FedProx(FedAvg):
    def gradient_hook(self, client: State, server: State):
        if self.params.mu == 0:
            return None
        return _Proximal(self.params.mu, np.array(server["theta"], dtype=np.float32, copy=True))
