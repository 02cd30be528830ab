"""`sign-majority`: every worker sends its update's signs; the aggregate is their majority vote.

Bernstein, Wang, Azizzadenesheli, Anandkumar, "signSGD: compressed
optimisation for non-convex problems", ICML 2018 (Algorithm 3, majority
vote), and Bernstein, Zhao, Azizzadenesheli, Anandkumar, "signSGD with
majority vote is communication efficient and fault tolerant", ICLR 2019.
No error feedback (as in the paper); stateless and deterministic.

Worker k sends sign(u_k) (sign(0) = +1) and one float32 scale
a_k = ||u_k||_1 / P; decode gives a_k sign(u_k), the worker's scaled sign.
The paper's server multiplies the vote by a learning rate; here the update
is already a step, so the vote is given the weighted mean magnitude of the
workers' steps:

    combine(decoded, w) = (sum_k w_k a_k / sum_k w_k) * sign(sum_k w_k sign_k),   sign(0) = 0.

With equal weights this is the plain majority vote; a tie (even number of
workers split evenly) leaves the entry unchanged. a_k and sign_k are read
back from the decoded vector (a_k = max_i |decoded_i|, exact since every
entry is +-a_k); a worker whose update is exactly 0 (a_k = 0) casts no vote.

Payload: as `sign`'s (the 16-byte header with scale = a_k, then P sign bits,
`np.packbits` little-endian), under its own tag. payload_bytes(P) = 16 +
ceil(P / 8).
"""

from __future__ import annotations

import numpy as np

from fedmpi.compress import _wire
from fedmpi.compress.base import COMPRESSORS, Compressor, check_combine
from fedmpi.compress.sign import scaled_sign_decode, scaled_sign_payload


@COMPRESSORS.register("sign-majority")
class SignMajority(Compressor):
    def payload_bytes(self, size):
        return _wire.HEADER_BYTES + _wire.packed_bytes(size, 1)

    def encode(self, vector, state, rng):
        u = _wire.check_update(vector)
        return scaled_sign_payload("sign-majority", u)[0], {}

    def decode(self, payload):
        return scaled_sign_decode(payload, "sign-majority")

    def combine(self, decoded, weights):
        w = check_combine(decoded, weights)
        vote = np.zeros(decoded[0].shape[0], dtype=np.float64)  # (P,) float64, sum_k w_k sign_k
        magnitude = 0.0
        for w_k, v_k in zip(w, decoded):
            vote += w_k * np.sign(v_k)  # np.sign(0) = 0: a zero update casts no vote
            magnitude += w_k * float(np.max(np.abs(v_k)))
        scale = np.float32(magnitude / w.sum())
        return np.sign(vote).astype(np.float32) * scale
