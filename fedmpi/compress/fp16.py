"""`fp16`: the update rounded to IEEE 754 half precision (binary16), 16 bits per entry.

Half-precision communication as in mixed-precision training (Micikevicius
et al., "Mixed precision training", ICLR 2018). Each entry is rounded to the
nearest binary16 value (ties to even), so the error of one entry is at most
half a unit in the last place:

    |u_i - fp16(u_i)| <= max(2**-11 |u_i|, 2**-25)

(2**-11: 10 stored mantissa bits; 2**-25: half the subnormal spacing 2**-24,
below |u_i| = 2**-14). Entries with |u_i| >= 65520 would round to infinity;
encode refuses them rather than send an infinite update.

Payload: the 16-byte header (fedmpi.compress._wire) then P little-endian
binary16 values. payload_bytes(P) = 16 + 2 P. Deterministic and stateless.
"""

from __future__ import annotations

import numpy as np

from fedmpi.compress import _wire
from fedmpi.compress.base import COMPRESSORS, Compressor

_HALF_MAX = 65504.0  # the largest finite binary16


@COMPRESSORS.register("fp16")
class Fp16(Compressor):
    def payload_bytes(self, size):
        return _wire.HEADER_BYTES + 2 * size

    def encode(self, vector, state, rng):
        u = _wire.check_update(vector)
        with np.errstate(over="ignore"):  # an entry beyond binary16 becomes inf, refused just below
            half = u.astype("<f2")  # (P,) float16, round to nearest even
        if not np.all(np.isfinite(half)):
            worst = float(np.max(np.abs(u)))
            raise ValueError(f"fp16 cannot carry an update entry of magnitude {worst:g} "
                             f"(binary16 ends at {_HALF_MAX:g}); use compression 'none'")
        return np.concatenate([_wire.header("fp16", u.shape[0]), half.view(np.uint8)]), {}

    def decode(self, payload):
        h = _wire.read_header(payload, "fp16")
        size = int(h["size"])
        _wire.check_length(payload, self.payload_bytes(size), "fp16")
        return _wire.body(payload, _wire.HEADER_BYTES, size, "<f2").astype(np.float32)
