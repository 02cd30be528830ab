"""`none`: no compression. The payload is the vector's own float32 bytes (little-endian), no header.

payload_bytes(P) = 4 P. Its payloads can be summed as they are, so a round
without compression is one Allreduce of the contributions
(fedmpi.protocol); `decode(encode(u))` is u bit for bit.
"""

from __future__ import annotations

import numpy as np

from fedmpi.compress._wire import check_update
from fedmpi.compress.base import COMPRESSORS, Compressor


@COMPRESSORS.register("none")
class Identity(Compressor):
    summable = True

    def payload_bytes(self, size):
        return 4 * size

    def encode(self, vector, state, rng):
        u = check_update(vector, finite=False)  # passes inf/NaN through, as the uncompressed round does
        return u.astype("<f4").view(np.uint8), {}  # astype copies: the payload owns its bytes

    def decode(self, payload):
        if not isinstance(payload, np.ndarray) or payload.dtype != np.uint8 or payload.ndim != 1:
            raise ValueError("a none payload must be a 1-D uint8 array")
        if len(payload) == 0 or len(payload) % 4:
            raise ValueError(f"a none payload is 4 bytes per entry; got {len(payload)} bytes")
        return np.ascontiguousarray(payload).view("<f4").astype(np.float32)
