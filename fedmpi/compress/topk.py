"""`topk`: the k largest-magnitude entries of the update, with error feedback.

Top-k sparsification with memory: Stich, Cordonnier, Jaggi, "Sparsified SGD
with memory", NeurIPS 2018 (Algorithm 1); error feedback as in Seide, Fu,
Droppo, Li, Yu, "1-bit stochastic gradient descent and its application to
data-parallel distributed training of speech DNNs", Interspeech 2014. Each
round, with e the residual kept in the state (zeros at first):

    c = u + e                          (float32)
    S = the k indices of the largest |c_i|
    decoded = c on S, 0 elsewhere
    e' = c - decoded                   (c off S, exactly 0 on S)

so what a client has not yet sent is never lost: summed over rounds,
sum decoded = sum u - e_final (up to float32 rounding of c = u + e).
k = max(1, floor(fraction * P + 1/2)) (round half up). Ties at the k-th
magnitude are broken by `np.argpartition`, deterministically for a given
input.

Payload: the 16-byte header (fedmpi.compress._wire; count = k), then the k
values as little-endian float32, then their k indices in increasing order as
the narrowest little-endian unsigned integer that holds P - 1 (uint8 for P <=
256, uint16 for P <= 65,536, else uint32). payload_bytes(P) = 16 + k (4 + w)
with w = 1, 2 or 4. State: {"residual": (P,) float32}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedmpi.compress import _wire
from fedmpi.compress.base import COMPRESSORS, Compressor


def check_fraction(fraction: float) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
            or not (math.isfinite(fraction) and 0 < fraction <= 1):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")


def kept(fraction: float, size: int) -> int:
    """k = max(1, floor(fraction * size + 1/2)): the entries a sparsifier keeps of `size`."""
    return max(1, min(size, math.floor(fraction * size + 0.5)))


def sparse_payload(scheme: str, size: int, indices: np.ndarray, values: np.ndarray) -> np.ndarray:
    """header, values (k,) <f4, indices (k,) in the narrowest width: the topk layout."""
    head = _wire.header(scheme, size, count=indices.shape[0])
    return np.concatenate([head, values.astype("<f4").view(np.uint8),
                           indices.astype(_wire.index_dtype(size)).view(np.uint8)])


@dataclass(frozen=True)
class TopKParams:
    fraction: float = 0.01  # share of the P entries sent each round

    def check(self) -> None:
        check_fraction(self.fraction)


@COMPRESSORS.register("topk", TopKParams)
class TopK(Compressor):
    def init_state(self, size):
        return {"residual": np.zeros(size, dtype=np.float32)}

    def payload_bytes(self, size):
        k = kept(self.params.fraction, size)
        return _wire.HEADER_BYTES + k * (4 + _wire.index_dtype(size).itemsize)

    def encode(self, vector, state, rng):
        u = _wire.check_update(vector)
        size = u.shape[0]
        c = u + _wire.residual_of(state, size)  # (P,) float32, a new array
        k = kept(self.params.fraction, size)
        idx = np.sort(np.argpartition(np.abs(c), size - k)[size - k:])  # (k,) int64, increasing
        values = c[idx]  # (k,) float32
        residual = c  # c is ours: zeroing what was sent turns it into c - decoded
        residual[idx] = 0.0
        return sparse_payload("topk", size, idx, values), {"residual": residual}

    def decode(self, payload):
        h = _wire.read_header(payload, "topk")
        size, k = int(h["size"]), int(h["count"])
        w = _wire.index_dtype(size)
        _wire.check_length(payload, _wire.HEADER_BYTES + k * (4 + w.itemsize), "topk")
        values = _wire.body(payload, _wire.HEADER_BYTES, k, "<f4")
        idx = _wire.body(payload, _wire.HEADER_BYTES + 4 * k, k, w)
        if k and idx.max() >= size:
            raise ValueError(f"topk payload holds an index >= its size {size}; it is corrupt")
        out = np.zeros(size, dtype=np.float32)
        out[idx] = values
        return out
