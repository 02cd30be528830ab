"""`randk`: k uniformly random entries of the update, rescaled by P / k so that it is unbiased.

Random-k sparsification (Stich, Cordonnier, Jaggi, "Sparsified SGD with
memory", NeurIPS 2018, the rand_k operator; Wangni, Wang, Liu, Zhang,
"Gradient sparsification for communication-efficient distributed
optimization", NeurIPS 2018). With S a uniformly random k-subset of the P
indices,

    decoded_i = (P / k) u_i for i in S, 0 elsewhere,

each index is in S with probability k / P, so E[decoded] = u and
Var[decoded_i] = (P / k - 1) u_i^2. No error feedback: the scheme is
unbiased as it is. k = max(1, floor(fraction * P + 1/2)), as for topk.

The indices do not travel: the payload carries a 64-bit seed drawn from the
rng, and S is derived from it exactly, with integer arithmetic only (so it
does not depend on numpy's generator algorithms or version):

    key_i = mix64(seed + (i + 1) * 0x9E3779B97F4A7C15 mod 2**64),  i = 0..P-1,
    mix64(z): z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 mod 2**64
              z = (z ^ (z >> 27)) * 0x94D049BB133111EB mod 2**64
              return z ^ (z >> 31)
    S = the k indices with the smallest keys, in increasing order.

key_i is the i-th output of SplitMix64 started at `seed` (Steele, Lea, Flood,
"Fast splittable pseudorandom number generators", OOPSLA 2014). The keys are
distinct (the step is odd, so the states differ, and mix64 is a bijection),
so S is well defined.

Payload: the 16-byte header (fedmpi.compress._wire; count = k), the seed as
little-endian uint64, then the k entries u_i, i in S in increasing order, as
little-endian float32 (unscaled; decode multiplies by P / k in float64).
payload_bytes(P) = 24 + 4 k. Stateless.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmpi.compress import _wire
from fedmpi.compress.base import COMPRESSORS, Compressor
from fedmpi.compress.topk import check_fraction, kept

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_SEED_BYTES = 8


def splitmix64(seed: int, n: int) -> np.ndarray:
    """The first n outputs (n,) uint64 of SplitMix64 started at `seed` (0 <= seed < 2**64)."""
    # Array operations on uint64 wrap modulo 2**64, which is the arithmetic SplitMix64 is defined in.
    z = np.arange(1, n + 1, dtype=np.uint64) * _GAMMA + np.uint64(seed)
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def random_subset(seed: int, size: int, k: int) -> np.ndarray:
    """The k indices (k,) int64 of `size` that `seed` selects, in increasing order (module docstring)."""
    if k == size:
        return np.arange(size, dtype=np.int64)
    keys = splitmix64(seed, size)  # (size,) uint64, all distinct
    return np.sort(np.argpartition(keys, k - 1)[:k])


@dataclass(frozen=True)
class RandKParams:
    fraction: float = 0.01  # share of the P entries sent each round

    def check(self) -> None:
        check_fraction(self.fraction)


@COMPRESSORS.register("randk", RandKParams)
class RandK(Compressor):
    stochastic = True

    def payload_bytes(self, size):
        return _wire.HEADER_BYTES + _SEED_BYTES + 4 * kept(self.params.fraction, size)

    def encode(self, vector, state, rng):
        u = _wire.check_update(vector)
        size = u.shape[0]
        k = kept(self.params.fraction, size)
        seed = int(rng.integers(0, 2**64, dtype=np.uint64))
        values = u[random_subset(seed, size, k)]  # (k,) float32
        return np.concatenate([_wire.header("randk", size, count=k),
                               np.array([seed], dtype="<u8").view(np.uint8),
                               values.astype("<f4").view(np.uint8)]), {}

    def decode(self, payload):
        h = _wire.read_header(payload, "randk")
        size, k = int(h["size"]), int(h["count"])
        if not 1 <= k <= size:
            raise ValueError(f"randk payload keeps {k} of {size} entries; valid payloads keep 1 to {size}")
        _wire.check_length(payload, _wire.HEADER_BYTES + _SEED_BYTES + 4 * k, "randk")
        seed = int(_wire.body(payload, _wire.HEADER_BYTES, 1, "<u8")[0])
        values = _wire.body(payload, _wire.HEADER_BYTES + _SEED_BYTES, k, "<f4")  # (k,) float32
        out = np.zeros(size, dtype=np.float32)
        out[random_subset(seed, size, k)] = (values.astype(np.float64) * (size / k)).astype(np.float32)
        return out
