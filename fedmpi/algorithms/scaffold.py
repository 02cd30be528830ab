"""`scaffold`: stochastic controlled averaging with control variates on every tensor.

Karimireddy, Kale, Mohri, Reddi, Stich, Suresh, "SCAFFOLD: Stochastic
Controlled Averaging for Federated Learning", ICML 2020, Algorithm 1 with
option II. The server keeps a control variate c, each client i its own c_i
(all zero at first). Client i starts from the global model x and takes K
local steps at learning rate eta with the corrected gradient

    g <- g + (c - c_i)                                  (the paper's g - c_i + c)

then sets c_i+ = c_i - c + (x - y_i) / (K eta), y_i its model after the
steps, and sends y_i and delta_c_i = c_i+ - c_i. The server sets

    x <- sum_i w_i y_i / sum_i w_i                      (example-weighted, as FedAvg)
    c <- c + (1/N) sum_i delta_c_i                      (N = clients in the federation)

over the clients that trained, so with full participation c stays the mean
of the c_i. The paper's x update is x + eta_g * mean(y_i - x) with an
unweighted mean; here eta_g is 1 and the mean is FedAvg's weighted one, so
x is exactly FedAvg's average (same numerators, same rounding) and a
SCAFFOLD round with zero control variates is a FedAvg round bit for bit.
x is `LocalWork.start`, the model the client started from: the global model
under `sync.redistribute: true`, the client's own otherwise. The correction
is added before the optimizer's weight decay and momentum, as part of the
gradient.

`ControlVariates` is the machinery for any set V of tensors with control
variates (FedPVR, fedmpi.algorithms.fedpvr, chooses V; SCAFFOLD takes every
parameter, not the floating buffers a gradient never moves). Contribution
layout, (num_params + 1 + |V|,) float32:

    [ w * theta (num_params) | w (1) | delta_c over V (|V|) ]

the first num_params + 1 entries exactly FedAvg's; V's entries are packed in
the flat vector's order. SCAFFOLD: 2 * num_params + 1 entries for a model
without floating buffers (LeNet). States:
client {"c": (|V|,)}, server {"theta": (num_params,), "c": (|V|,)}, float32.
"""

from __future__ import annotations

import numpy as np
import torch

from fedmpi.algorithms.base import ALGORITHMS, Algorithm, LocalWork, Setting, State
from fedmpi.algorithms.fedavg import average_from_sum, pack_contribution

Ranges = tuple[tuple[int, int], ...]  # (start, stop) spans of the flat vector, ascending, disjoint


def merged_ranges(slots, names) -> Ranges:
    """The spans of the flat vector that the slots named in `names` cover, adjacent ones merged.

    Sorted by offset whatever the order of `names`, so the packed V vector
    follows the model's flat layout."""
    spans = sorted((s.offset, s.offset + s.numel) for s in slots if s.name in set(names))
    merged: list[list[int]] = []
    for start, stop in spans:
        if merged and merged[-1][1] == start:
            merged[-1][1] = stop
        else:
            merged.append([start, stop])
    return tuple((start, stop) for start, stop in merged)


def cut(vector: np.ndarray, ranges: Ranges) -> np.ndarray:
    """The entries of `vector` (num_params,) inside `ranges`, packed: (|V|,).

    One span is a view, more are a copy; either way the caller's array is
    only read."""
    if len(ranges) == 1:
        start, stop = ranges[0]
        return vector[start:stop]
    return np.concatenate([vector[start:stop] for start, stop in ranges]) if ranges else vector[:0]


def updated_variate(c_i: np.ndarray, c: np.ndarray, start: np.ndarray, theta: np.ndarray,
                    steps: int, lr: float) -> np.ndarray:
    """Option II of Karimireddy et al. 2020: c_i+ = (c_i - c) + (x - y_i) / (K eta), float32.

    All arrays are (|V|,) float32: c_i, c the client's and the server's
    variates, start (x) and theta (y_i) the model before and after the K =
    `steps` local steps. K * eta is formed in float64 and rounded once to
    float32. A client that took no step learnt nothing new: c_i+ = c_i.
    """
    if steps == 0:
        return np.array(c_i, dtype=np.float32, copy=True)
    span = np.float32(steps * lr)
    return (c_i - c) + (start - theta) / span


class _AddToGradient:
    """hook(theta, grad): grad[V] += correction, one vector add per span of V.

    Built once per client and round; the correction moves to the gradient's
    device and the views into the gradient are cut on the first call (the
    trainer passes the same vector every step), so a step allocates nothing.
    """

    def __init__(self, ranges: Ranges, correction: np.ndarray):
        self._ranges = ranges
        self._correction = torch.from_numpy(correction)  # (|V|,) float32; owned: a fresh array
        self._grad: torch.Tensor | None = None
        self._pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (view into grad, piece of correction)

    def __call__(self, theta: torch.Tensor, grad: torch.Tensor) -> None:
        if grad is not self._grad:
            correction = self._correction.to(grad.device)
            self._pairs, packed = [], 0
            for start, stop in self._ranges:
                self._pairs.append((grad[start:stop], correction[packed:packed + stop - start]))
                packed += stop - start
            self._grad = grad
        for target, piece in self._pairs:
            target.add_(piece)


class ControlVariates(Algorithm):
    """SCAFFOLD's control variates on the spans `ranges` of the flat vector, plain SGD elsewhere."""

    def __init__(self, params, setting: Setting, ranges: Ranges):
        super().__init__(params, setting)
        self.ranges = ranges
        self.num_variates = sum(stop - start for start, stop in ranges)  # |V|

    @property
    def contribution_size(self) -> int:
        return self.num_params + 1 + self.num_variates

    def client_init(self) -> State:
        return {"c": np.zeros(self.num_variates, dtype=np.float32)}

    def server_init(self, theta0: np.ndarray) -> State:
        return {"theta": np.array(theta0, dtype=np.float32, copy=True),
                "c": np.zeros(self.num_variates, dtype=np.float32)}

    def gradient_hook(self, client: State, server: State):
        if self.num_variates == 0:  # nothing to correct: plain local SGD, FedAvg's step exactly
            return None
        return _AddToGradient(self.ranges, server["c"] - client["c"])  # (|V|,) float32, c - c_i

    def contribute(self, work: LocalWork, client: State, server: State, out: np.ndarray) -> State:
        P = self.num_params
        pack_contribution(work.theta, work.weight, out[:P + 1])
        c_plus = updated_variate(client["c"], server["c"], cut(work.start, self.ranges),
                                 cut(work.theta, self.ranges), work.steps, work.lr)
        np.subtract(c_plus, client["c"], out=out[P + 1:])  # delta_c_i, unweighted
        return {"c": c_plus}

    def aggregate(self, server: State, summed: np.ndarray) -> State:
        P = self.num_params
        c = server["c"] + summed[P + 1:] / np.float32(self.setting.num_clients)
        return {"theta": average_from_sum(summed[:P + 1]), "c": c}

    def local_model(self, summed: np.ndarray) -> np.ndarray:
        return average_from_sum(summed[:self.num_params + 1])


@ALGORITHMS.register("scaffold")
class Scaffold(ControlVariates):
    """Control variates on every parameter (not on floating buffers such as BatchNorm statistics,
    which no gradient moves): |V| = the number of trainable entries."""

    def __init__(self, params, setting: Setting):
        super().__init__(params, setting, merged_ranges(setting.slots, [s.name for s in setting.slots
                                                                        if s.trainable]))
