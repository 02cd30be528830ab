"""The compressor contract, and the registry `compression.name` looks compressors up in.

A compressor turns one flat float32 vector (a client's model update
u = theta_k - theta_global) into the bytes a worker really sends, and those
bytes back into a vector, with explicit state (the error-feedback residual of
top-k or sign compression) and an explicit random generator (for stochastic
quantisers), so that a run is reproducible and a checkpoint holds everything:

    state = comp.init_state(size)                      # once per client
    payload, state = comp.encode(vector, state, rng)   # payload: (B,) uint8, the wire bytes
    vector_hat = comp.decode(payload)                  # (size,) float32, needs nothing else
    update = comp.combine([vector_hat, ...], weights)  # (size,) float32, on the coordinator

Rules every compressor keeps (tests/test_compress.py checks them for every
registered name):

- `encode` changes neither `vector` nor the caller's `state`: it returns a
  new dict whose arrays share no memory with the caller's.
- `len(payload) == comp.payload_bytes(size)`, exactly, for every input of
  that size: payloads of one scheme and size are all the same length, so the
  round can preallocate its receive buffer.
- `decode` needs only the payload: every payload except the identity's
  starts with the 16-byte header of fedmpi.compress._wire (scheme tag, size,
  the scheme's parameters), and a payload of another scheme or length is a
  ValueError, not a wrong vector.
- Only `stochastic` schemes draw from `rng`; the others leave it untouched.
- The state is a dict of numpy arrays by name, so the caller saves it in a
  checkpoint as it is and a resumed run encodes exactly as the original.

`combine` turns the decoded vectors of one round into the aggregate update.
The default is the weighted mean sum_k w_k v_k / sum_k w_k (FedAvg, McMahan
et al. 2017); a scheme whose aggregate is not an average overrides it
(`sign-majority`, Bernstein et al. 2018, takes a vote).

`summable` says whether payloads of different workers may be added as they
are (only the identity): then the round keeps its single Allreduce;
otherwise payloads travel as bytes and are decoded before they are combined.
Control values of the round (the stop flag) never pass through a compressor.
"""

from __future__ import annotations

import abc
from typing import Any, Sequence

import numpy as np

from fedmpi.registry import Registry

State = dict[str, np.ndarray]


class Compressor(abc.ABC):
    summable: bool = False  # payloads may be summed as they are (one Allreduce)
    stochastic: bool = False  # encode draws from rng

    def __init__(self, params: Any):
        self.params = params

    def init_state(self, size: int) -> State:
        """The state before the first round: arrays by name (empty for stateless schemes)."""
        return {}

    @abc.abstractmethod
    def payload_bytes(self, size: int) -> int:
        """The exact length of every payload this compressor makes from a (size,) vector."""

    @abc.abstractmethod
    def encode(self, vector: np.ndarray, state: State,
               rng: np.random.Generator) -> tuple[np.ndarray, State]:
        """(payload (B,) uint8, new state) for vector (size,) float32."""

    @abc.abstractmethod
    def decode(self, payload: np.ndarray) -> np.ndarray:
        """The vector (size,) float32 that `payload` stands for, a new array."""

    def combine(self, decoded: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
        """The aggregate (size,) float32 of one round: here the weighted mean of `decoded`.

        decoded: K vectors (size,) float32, one per payload; weights: (K,)
        numbers >= 0 with a positive sum (each client's number of examples).
        Summed in float64, in the order given, so every rank that combines
        the same vectors gets the same bits.
        """
        w = check_combine(decoded, weights)
        acc = np.zeros(decoded[0].shape[0], dtype=np.float64)  # (size,) float64
        for w_k, v_k in zip(w, decoded):
            acc += w_k * v_k.astype(np.float64)
        return (acc / w.sum()).astype(np.float32)

    def bits_per_element(self, size: int) -> float:
        """Bits on the wire per vector entry: 8 * payload_bytes(size) / size."""
        return 8.0 * self.payload_bytes(size) / size


def check_combine(decoded: Sequence[np.ndarray], weights: np.ndarray) -> np.ndarray:
    """The weights as (K,) float64 after checking them against the K decoded vectors."""
    if len(decoded) == 0:
        raise ValueError("combine needs at least one decoded vector")
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(decoded),):
        raise ValueError(f"weights must have shape ({len(decoded)},), one per decoded vector; got {w.shape}")
    if not (np.all(np.isfinite(w)) and np.all(w >= 0) and w.sum() > 0):
        raise ValueError(f"weights must be finite, >= 0 and not all 0; got {w.tolist()}")
    shape = decoded[0].shape
    for k, v in enumerate(decoded):
        if v.ndim != 1 or v.shape != shape or v.dtype != np.float32:
            raise ValueError(f"decoded[{k}] is {v.dtype} {v.shape}; every decoded vector must be "
                             f"float32 {shape}")
    return w


COMPRESSORS: Registry[type[Compressor]] = Registry("compressor")


def build_compressor(name: str, params: Any | None = None) -> Compressor:
    """The compressor registered as `name`, with checked `params` (the defaults when None)."""
    entry = COMPRESSORS[name]
    params = entry.params() if params is None else params
    if not isinstance(params, entry.params):
        raise ValueError(f"params for compressor {name!r} must be a {entry.params.__name__}, "
                         f"got {type(params).__name__}")
    params.check()
    return entry.impl(params)
