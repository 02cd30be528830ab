"""The byte format shared by the lossy compressors: header, bit packing, index widths, checks.

Every payload except the identity's starts with one 16-byte little-endian
header, so `decode` needs nothing but the payload and a payload of the wrong
scheme or length is refused:

    offset  type  field
    0       u1    tag      which scheme made it (TAGS)
    1       u1    version  of that scheme's layout (VERSION)
    2       <u2   aux      a scheme parameter (qsgd: its levels s), else 0
    4       <u4   size     P, entries of the vector
    8       <u4   count    entries carried (topk, randk: k), else 0
    12      <f4   scale    a scale (qsgd: ||u||_2; sign schemes: ||u||_1 / P), else 0

What follows the header is the scheme's own (see its module). Multi-byte
fields are little-endian whatever the machine, so a payload means the same
on every rank. Bits are packed little-endian within each byte
(`np.packbits(..., bitorder="little")`): bit j of the stream is bit j % 8 of
byte j // 8.
"""

from __future__ import annotations

import numpy as np

VERSION = 1

# One tag per scheme; a new scheme takes the next number.
TAGS = {"fp16": 1, "qsgd": 2, "topk": 3, "randk": 4, "sign": 5, "sign-majority": 6}
_NAMES = {tag: name for name, tag in TAGS.items()}

HEADER = np.dtype([("tag", "u1"), ("version", "u1"), ("aux", "<u2"), ("size", "<u4"),
                   ("count", "<u4"), ("scale", "<f4")])
HEADER_BYTES = HEADER.itemsize  # 16
MAX_SIZE = 2**32 - 1  # the header's size field is u4


def header(scheme: str, size: int, aux: int = 0, count: int = 0, scale: float = 0.0) -> np.ndarray:
    """The (16,) uint8 header of a `scheme` payload."""
    h = np.zeros(1, dtype=HEADER)
    h[0] = (TAGS[scheme], VERSION, aux, size, count, scale)
    return h.view(np.uint8)


def read_header(payload: np.ndarray, scheme: str) -> np.void:
    """The header of `payload`, after checking that `scheme` made it."""
    if not isinstance(payload, np.ndarray) or payload.dtype != np.uint8 or payload.ndim != 1:
        raise ValueError(f"a {scheme} payload must be a 1-D uint8 array, got "
                         f"{getattr(payload, 'dtype', type(payload).__name__)} "
                         f"{getattr(payload, 'shape', '')}")
    if len(payload) < HEADER_BYTES:
        raise ValueError(f"a {scheme} payload has a {HEADER_BYTES}-byte header; got {len(payload)} bytes")
    h = np.ascontiguousarray(payload[:HEADER_BYTES]).view(HEADER)[0].copy()
    if h["tag"] != TAGS[scheme]:
        made_by = _NAMES.get(int(h["tag"]), f"unknown tag {int(h['tag'])}")
        raise ValueError(f"payload was made by {made_by}, not {scheme}")
    if h["version"] != VERSION:
        raise ValueError(f"{scheme} payload has layout version {int(h['version'])}; this fedmpi reads {VERSION}")
    return h


def check_length(payload: np.ndarray, expected: int, scheme: str) -> None:
    if len(payload) != expected:
        raise ValueError(f"{scheme} payload is {len(payload)} bytes; its header promises {expected}")


def check_update(vector: np.ndarray, finite: bool = True) -> np.ndarray:
    """`vector` itself after checking that it is a non-empty (P,) float32 vector (finite, if asked)."""
    if not isinstance(vector, np.ndarray) or vector.dtype != np.float32 or vector.ndim != 1:
        raise ValueError(f"a compressor takes a 1-D float32 vector, got "
                         f"{getattr(vector, 'dtype', type(vector).__name__)} {getattr(vector, 'shape', '')}")
    if not 1 <= vector.shape[0] <= MAX_SIZE:
        raise ValueError(f"a compressor takes 1 to {MAX_SIZE} entries, got {vector.shape[0]}")
    if finite and not np.all(np.isfinite(vector)):
        raise ValueError("the update has non-finite entries (the local model diverged?); "
                         "lossy compressors need finite values")
    return vector


def residual_of(state: dict, size: int) -> np.ndarray:
    """The error-feedback residual (size,) float32 in `state`, checked (not copied)."""
    if "residual" not in state:
        raise ValueError(f"error-feedback state needs a 'residual' array; got keys {sorted(state)}")
    e = state["residual"]
    if not isinstance(e, np.ndarray) or e.dtype != np.float32 or e.shape != (size,):
        raise ValueError(f"state['residual'] must be float32 ({size},), got "
                         f"{getattr(e, 'dtype', type(e).__name__)} {getattr(e, 'shape', '')}")
    return e


def pack_bits(codes: np.ndarray, width: int) -> np.ndarray:
    """The low `width` bits of each code, concatenated: (ceil(n * width / 8),) uint8.

    codes: (n,) unsigned integers < 2**width, width in 1..16. Code i
    occupies stream bits i*width .. i*width + width - 1, least significant
    first.
    """
    n = codes.shape[0]
    nbytes = 1 if width <= 8 else 2
    as_bytes = codes.astype("<u1" if nbytes == 1 else "<u2").view(np.uint8).reshape(n, nbytes)
    bits = np.unpackbits(as_bytes, axis=1, bitorder="little")[:, :width]  # (n, width) uint8, LSB first
    return np.packbits(bits.reshape(-1), bitorder="little")


def unpack_bits(packed: np.ndarray, n: int, width: int) -> np.ndarray:
    """The n codes that `pack_bits(codes, width)` packed: (n,) uint16."""
    nbytes = 1 if width <= 8 else 2
    bits = np.unpackbits(packed, count=n * width, bitorder="little").reshape(n, width)
    padded = np.zeros((n, 8 * nbytes), dtype=np.uint8)  # (n, 8 or 16) uint8
    padded[:, :width] = bits
    as_bytes = np.packbits(padded, axis=1, bitorder="little")  # (n, nbytes) uint8
    return as_bytes.reshape(-1).view("<u1" if nbytes == 1 else "<u2").astype(np.uint16)


def sign_bits(x: np.ndarray) -> np.ndarray:
    """Bit i = 1 where x_i >= 0 (+1), 0 where x_i < 0 (-1): (ceil(P / 8),) uint8."""
    return np.packbits(x >= 0, bitorder="little")


def signs_of(packed: np.ndarray, n: int) -> np.ndarray:
    """The n signs (n,) float32 in {-1, +1} that `sign_bits` packed."""
    bits = np.unpackbits(packed, count=n, bitorder="little")  # (n,) uint8
    return bits.astype(np.float32) * 2.0 - 1.0


def packed_bytes(n: int, width: int) -> int:
    """len(pack_bits(codes, width)) for n codes: ceil(n * width / 8)."""
    return -(-n * width // 8)


def index_dtype(size: int) -> np.dtype:
    """The narrowest little-endian unsigned integer that holds every index 0..size-1."""
    if size <= 2**8:
        return np.dtype("<u1")
    if size <= 2**16:
        return np.dtype("<u2")
    return np.dtype("<u4")


def body(payload: np.ndarray, start: int, count: int, dtype: str | np.dtype) -> np.ndarray:
    """`count` values of `dtype` at byte `start` of the payload, as a new native-order array."""
    dt = np.dtype(dtype)
    raw = np.ascontiguousarray(payload[start:start + count * dt.itemsize])
    return raw.view(dt).astype(dt.newbyteorder("="))  # astype copies: the result owns its memory
