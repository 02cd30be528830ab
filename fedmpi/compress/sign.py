"""`sign`: scaled sign compression with error feedback (EF-SignSGD), 1 bit per entry.

Karimireddy, Rebjock, Stich, Jaggi, "Error feedback fixes SignSGD and other
gradient compression schemes", ICML 2019, Algorithm 1 (EF-SGD with the
scaled sign compressor C(p) = (||p||_1 / P) sign(p)). Each round, with e the
residual kept in the state (zeros at first):

    p = u + e                          (float32)
    scale = ||p||_1 / P                (float64 sum, stored as float32)
    decoded = scale * sign(p)          (sign(0) = +1: one bit has no third value)
    e' = p - decoded                   (float32)

so summed over rounds, sum decoded = sum u - e_final (up to float32
rounding of p and e').

Payload: the 16-byte header (fedmpi.compress._wire; scale = the float32
scale), then P sign bits (bit i = 1 for p_i >= 0), `np.packbits`
little-endian. payload_bytes(P) = 16 + ceil(P / 8). State: {"residual": (P,)
float32}.
"""

from __future__ import annotations

import numpy as np

from fedmpi.compress import _wire
from fedmpi.compress.base import COMPRESSORS, Compressor


def scaled_sign_payload(scheme: str, p: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """(payload, scale) of the scaled sign of p (P,) float32: header with ||p||_1 / P, then P bits."""
    scale = np.float32(np.abs(p).sum(dtype=np.float64) / p.shape[0])
    return np.concatenate([_wire.header(scheme, p.shape[0], scale=float(scale)), _wire.sign_bits(p)]), scale


def scaled_sign_decode(payload: np.ndarray, scheme: str) -> np.ndarray:
    """The vector scale * signs (P,) float32 of a scaled-sign payload."""
    h = _wire.read_header(payload, scheme)
    size = int(h["size"])
    _wire.check_length(payload, _wire.HEADER_BYTES + _wire.packed_bytes(size, 1), scheme)
    return _wire.signs_of(payload[_wire.HEADER_BYTES:], size) * h["scale"].astype(np.float32)


@COMPRESSORS.register("sign")
class Sign(Compressor):
    def init_state(self, size):
        return {"residual": np.zeros(size, dtype=np.float32)}

    def payload_bytes(self, size):
        return _wire.HEADER_BYTES + _wire.packed_bytes(size, 1)

    def encode(self, vector, state, rng):
        u = _wire.check_update(vector)
        p = u + _wire.residual_of(state, u.shape[0])  # (P,) float32, a new array
        payload, scale = scaled_sign_payload("sign", p)
        decoded = np.where(p >= 0, scale, -scale)  # (P,) float32, what decode will return
        return payload, {"residual": p - decoded}

    def decode(self, payload):
        return scaled_sign_decode(payload, "sign")
