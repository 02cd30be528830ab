"""The aggregation-algorithm contract, and the registry `algorithm.name` looks algorithms up in.

An algorithm has a worker side (what one client sends after its local
steps, what it keeps between rounds, what it adds to the local objective)
and a combining side (how the sum of the contributions becomes the next
global model). State is explicit: dicts of float32 arrays by name, kept by
the caller and saved in checkpoints, never hidden in the algorithm object.

Worker side, for each client that trains in a round:

    client = algo.client_init()                      # once per client
    hook = algo.gradient_hook(client, server)        # None, or hook(theta, grad) after each backward
    client = algo.contribute(work, client, server, out)  # writes (contribution_size,) float32

Combining side, on every rank, from the same sum (pure and deterministic, so
every rank holds the same server state without another message):

    server = algo.server_init(theta0)                # server["theta"] is the global model
    server = algo.aggregate(server, summed)          # summed: the sum of all contributions
    theta = algo.local_model(partial)                # the model a partial sum stands for

`summable = True` says the contributions combine by summing: a round is one
Allreduce however many clients a worker simulates, each worker adding up its
own clients' contributions first (fedmpi.protocol). Every algorithm
registered today is summable; an aggregation that needs each contribution on
its own (a median) would set it False and get the contributions gathered
instead, the path compressed payloads take (docs/design.md).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fedmpi.registry import Registry

State = dict[str, np.ndarray]
GradientHook = Callable[[Any, Any], None]  # hook(theta (num_params,), grad (num_params,)), grad changed in place


@dataclass(frozen=True)
class Setting:
    """What an algorithm is built for: the model's flat layout and the federation's size."""

    num_params: int
    slots: tuple  # fedmpi.flat.Slot per tensor: name, offset, shape (parameters first, then float buffers)
    final_layers: tuple[str, ...]  # names of the model's classifier-head tensors (fedmpi.models.base)
    num_clients: int  # clients in the federation (clients.total, or one per worker)


@dataclass(frozen=True)
class LocalWork:
    """What one client did in one round, handed to `contribute`."""

    start: np.ndarray  # (num_params,) float32, the model it started the round from
    theta: np.ndarray  # (num_params,) float32, its model after the local steps
    weight: float  # its share in the average (its number of examples)
    steps: int  # local steps it took
    lr: float  # its local learning rate in this round


class Algorithm(abc.ABC):
    summable: bool = True
    # The contribution is the weighted model [w theta, w] and the server state is {"theta"}:
    # then a compressor can carry theta - theta_global and w instead (fedmpi.compressed).
    compressible: bool = False

    def __init__(self, params: Any, setting: Setting):
        self.params = params
        self.setting = setting
        self.num_params = setting.num_params

    @property
    @abc.abstractmethod
    def contribution_size(self) -> int:
        """Length of one contribution vector (float32)."""

    def client_init(self) -> State:
        """A client's state before its first round (empty when the algorithm keeps none)."""
        return {}

    def server_init(self, theta0: np.ndarray) -> State:
        """The combining side's state before the first round; "theta" is the initial model."""
        return {"theta": np.array(theta0, dtype=np.float32, copy=True)}

    def gradient_hook(self, client: State, server: State) -> GradientHook | None:
        """What the algorithm adds to the local gradient this round, or None for plain SGD."""
        return None

    @abc.abstractmethod
    def contribute(self, work: LocalWork, client: State, server: State, out: np.ndarray) -> State:
        """Write the contribution of a client after its local work into `out`
        (contribution_size,) float32; return the client's new state."""

    @abc.abstractmethod
    def aggregate(self, server: State, summed: np.ndarray) -> State:
        """The next server state from the sum (contribution_size,) of every contribution."""

    @abc.abstractmethod
    def local_model(self, summed: np.ndarray) -> np.ndarray:
        """The model (num_params,) that a sum of some clients' contributions stands for."""


ALGORITHMS: Registry[type[Algorithm]] = Registry("algorithm")


def build_algorithm(name: str, setting: Setting, params: Any | None = None) -> Algorithm:
    entry = ALGORITHMS[name]
    return entry.impl(entry.params() if params is None else params, setting)
