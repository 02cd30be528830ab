"""`qsgd`: stochastic quantisation of u / ||u||_2 to s levels per entry (unbiased).

Alistarh, Grubic, Li, Tomioka, Vojnovic, "QSGD: communication-efficient SGD
via gradient quantization and encoding", NeurIPS 2017, eq. (1)-(2):

    Q_s(u_i) = ||u||_2 * sign(u_i) * l_i / s,
    l_i = floor(r_i) + Bernoulli(r_i - floor(r_i)),   r_i = s |u_i| / ||u||_2 in [0, s].

E[l_i] = r_i, so E[Q_s(u)] = u; per entry Var[Q_s(u_i)] = (||u||/s)^2 p_i (1 - p_i)
with p_i = r_i - floor(r_i), at most ||u||^2 / (4 s^2) (the paper's Lemma 3.1
bounds the total by min(P / s^2, sqrt(P) / s) ||u||^2).

fedmpi computes r_i in float64 from the float32 norm that travels in the
payload (rounded up from the float64 norm, so that r_i <= s), draws the
Bernoulli variables as `rng.random(P) < p`, and decodes in float64 before
rounding to float32, so the only bias is float32 rounding of the result.

Payload, where b = ceil(log2(s + 1)) = s.bit_length() bits hold a level:
the 16-byte header (fedmpi.compress._wire; aux = s, scale = the float32
norm) then one (b + 1)-bit code per entry, code_i = l_i + 2**b * [u_i < 0],
bit-packed least significant bit first. payload_bytes(P) = 16 +
ceil(P (b + 1) / 8); s = 15 (the default) gives 5 bits per entry. This is the
fixed-width code, not the paper's Elias code (which spends fewer bits when
most levels are 0, at the price of a payload length that depends on the
data). Stateless.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedmpi.compress import _wire
from fedmpi.compress.base import COMPRESSORS, Compressor

_MAX_LEVELS = 2**15 - 1  # b + 1 <= 16: a code fits in a uint16


@dataclass(frozen=True)
class QSGDParams:
    levels: int = 15  # s; 15 uses all of 4 level bits (5 bits per entry with the sign)

    def check(self) -> None:
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) \
                or not 1 <= self.levels <= _MAX_LEVELS:
            raise ValueError(f"levels must be an integer in [1, {_MAX_LEVELS}], got {self.levels!r}")


def _level_bits(levels: int) -> int:
    return int(levels).bit_length()  # ceil(log2(levels + 1))


@COMPRESSORS.register("qsgd", QSGDParams)
class QSGD(Compressor):
    stochastic = True

    def payload_bytes(self, size):
        return _wire.HEADER_BYTES + _wire.packed_bytes(size, _level_bits(self.params.levels) + 1)

    def encode(self, vector, state, rng):
        u = _wire.check_update(vector)
        s = self.params.levels
        b = _level_bits(s)
        mag = np.abs(u).astype(np.float64)  # (P,) float64
        norm64 = float(np.sqrt(np.dot(mag, mag)))
        norm = np.float32(norm64)
        if norm < norm64:  # round up, so that |u_i| <= norm and every r_i <= s
            norm = np.nextafter(norm, np.float32(np.inf))
        # s * |u_i| is exact in float64 (24 + 15 mantissa bits) and one correctly rounded
        # division of it by norm >= |u_i| cannot exceed s, so no level exceeds s.
        r = (mag * s) / np.float64(norm) if norm > 0 else np.zeros_like(mag)  # (P,) float64 in [0, s]
        low = np.floor(r)
        levels = (low + (rng.random(u.shape[0]) < r - low)).astype(np.uint16)  # (P,) uint16, 0..s
        codes = levels | (np.signbit(u).astype(np.uint16) << b)  # (P,) uint16 < 2**(b+1)
        head = _wire.header("qsgd", u.shape[0], aux=s, scale=float(norm))
        return np.concatenate([head, _wire.pack_bits(codes, b + 1)]), {}

    def decode(self, payload):
        h = _wire.read_header(payload, "qsgd")
        size, s, norm = int(h["size"]), int(h["aux"]), float(h["scale"])
        if not 1 <= s <= _MAX_LEVELS:
            raise ValueError(f"qsgd payload says {s} levels; valid payloads have 1 to {_MAX_LEVELS}")
        b = _level_bits(s)
        _wire.check_length(payload, _wire.HEADER_BYTES + _wire.packed_bytes(size, b + 1), "qsgd")
        codes = _wire.unpack_bits(payload[_wire.HEADER_BYTES:], size, b + 1)  # (P,) uint16
        levels = codes & np.uint16((1 << b) - 1)
        if levels.max() > s:
            raise ValueError(f"qsgd payload holds a level above its {s} levels; it is corrupt")
        sign = np.where(codes >> b, -1.0, 1.0)  # (P,) float64
        return (sign * levels * (norm / s)).astype(np.float32)
