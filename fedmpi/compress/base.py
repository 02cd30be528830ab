"""The compressor contract, and the registry `compression.name` looks compressors up in.

A compressor turns one flat float32 vector into the bytes a worker really
sends, and those bytes back into a vector, with explicit state (e.g. the
error-feedback residual of top-k or sign compression) and an explicit random
generator (for stochastic quantisers), so that a run is reproducible and a
checkpoint holds everything:

    state = comp.init_state(size)
    payload, state = comp.encode(vector, state, rng)   # payload: (B,) uint8, the wire bytes
    vector_hat = comp.decode(payload)                  # (size,) float32

`encode` never changes its inputs. `summable` says whether payloads of
different workers may be added as they are (only the identity): then the
round keeps its single Allreduce; otherwise payloads travel as bytes and are
decoded before they are combined. Control values of the round (the stop
flag) never pass through a compressor.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from fedmpi.registry import Registry


class Compressor(abc.ABC):
    summable: bool = False

    def __init__(self, params: Any):
        self.params = params

    def init_state(self, size: int) -> dict[str, np.ndarray]:
        """The state before the first round: arrays by name (empty for stateless schemes)."""
        return {}

    @abc.abstractmethod
    def encode(self, vector: np.ndarray, state: dict[str, np.ndarray],
               rng: np.random.Generator) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(payload (B,) uint8, new state) for vector (size,) float32."""

    @abc.abstractmethod
    def decode(self, payload: np.ndarray) -> np.ndarray:
        """The vector (size,) float32 that `payload` stands for."""


COMPRESSORS: Registry[type[Compressor]] = Registry("compressor")


def build_compressor(name: str, params: Any | None = None) -> Compressor:
    entry = COMPRESSORS[name]
    return entry.impl(entry.params() if params is None else params)
