"""`none`: no compression. The payload is the vector's own float32 bytes.

Its payloads can be summed as they are, so a round without compression is
one Allreduce of the contributions (fedmpi.protocol).
"""

from __future__ import annotations

import numpy as np

from fedmpi.compress.base import COMPRESSORS, Compressor


@COMPRESSORS.register("none")
class Identity(Compressor):
    summable = True

    def encode(self, vector, state, rng):
        return np.ascontiguousarray(vector, dtype=np.float32).view(np.uint8).copy(), state

    def decode(self, payload):
        return np.frombuffer(np.ascontiguousarray(payload, dtype=np.uint8).tobytes(), dtype=np.float32).copy()
