"""Rows of a gzip + Fletcher-32 HDF5 dataset written as chunks compressed here.

The trace's activations are its one large per-row write (two models x W x
probe x D float32: 1.3 MB a row on the default job). HDF5's deflate filter
compresses them with zlib at level 1 (21 ms a row, measured with the trace
writer alone); ISA-L's deflate (the `isal` package) writes the same format,
a zlib stream any HDF5 reader inflates, in about a quarter of the time
(checksum included) and a little smaller. So `ChunkRows` compresses each
row itself (with `isal` where it is installed, else with Python's zlib at
level 1, as HDF5 would), appends the Fletcher-32 checksum HDF5's filter
would, and writes the chunk directly (H5Dwrite_chunk). What a reader gets
is the same file as before: the same filters in the dataset's pipeline, the
same values, checked the same way.
"""

from __future__ import annotations

import zlib

import h5py
import numpy as np

H5Z_FILTER_DEFLATE = 1
H5Z_FILTER_FLETCHER32 = 3

try:  # wheels for x86-64 and 64-bit ARM (setup.cfg); elsewhere zlib does the same job slower
    from isal import isal_zlib as _fast_zlib
except ImportError:  # pragma: no cover - depends on the platform
    _fast_zlib = None

_BLOCK = 360  # words HDF5 sums between reductions
_WEIGHTS = np.arange(_BLOCK, 0, -1, dtype=np.float64)


def deflate(raw: bytes) -> bytes:
    """A zlib stream of raw, as HDF5's deflate filter stores a chunk."""
    return _fast_zlib.compress(raw, 1) if _fast_zlib is not None else zlib.compress(raw, 1)


def fletcher32(data: bytes) -> int:
    """HDF5's Fletcher-32 (H5_checksum_fletcher32) of data, value for value.

    Big-endian 16-bit words, both sums folded to 16 bits ((s & 0xffff) +
    (s >> 16)) after every 360 words, a last odd byte as the high byte of a
    word, and a final fold. Each block's plain and position-weighted word
    sums are computed at once (in float64: below 2**53, so exact); the
    folds, in uint32 arithmetic as in C, run block by block.
    """
    n = len(data)
    words = np.frombuffer(data, dtype=">u2", count=n // 2).astype(np.float64)
    full = len(words) // _BLOCK * _BLOCK
    blocks = words[:full].reshape(-1, _BLOCK)
    sizes = [_BLOCK] * blocks.shape[0]
    plain, weighted = blocks.sum(axis=1).tolist(), (blocks @ _WEIGHTS).tolist()
    tail = words[full:]
    if len(tail):
        sizes.append(len(tail))
        plain.append(float(tail.sum()))
        weighted.append(float(tail @ _WEIGHTS[_BLOCK - len(tail):]))
    s1 = s2 = 0
    for size, a, b in zip(sizes, plain, weighted):
        # Word j of a block adds w_j to s1 and then s1 to s2: s2 gains size * s1 + sum (size - j) w_j.
        s2 = (s2 + size * s1 + int(b)) & 0xFFFFFFFF
        s1 = (s1 + int(a)) & 0xFFFFFFFF
        s1, s2 = _fold(s1), _fold(s2)
    if n % 2:
        s1 += data[-1] << 8
        s2 += s1
        s1, s2 = _fold(s1), _fold(s2)
    return (_fold(s2) << 16) | _fold(s1)


def _fold(s: int) -> int:
    return (s & 0xFFFF) + (s >> 16)


class ChunkRows:
    """Writes row r of a dataset whose chunks are single rows, with the filters [deflate,
    fletcher32] in that order, as one precompressed chunk; any other dataset is written
    through h5py as usual (`direct` says which)."""

    def __init__(self, ds: h5py.Dataset):
        self.ds = ds
        dcpl = ds.id.get_create_plist()
        filters = [dcpl.get_filter(i)[0] for i in range(dcpl.get_nfilters())]
        self.direct = (filters == [H5Z_FILTER_DEFLATE, H5Z_FILTER_FLETCHER32]
                       and ds.chunks == (1,) + ds.shape[1:] and ds.dtype == np.dtype("<f4"))

    def write(self, r: int, values: np.ndarray) -> None:
        """values: row r (the dataset's shape without its first axis); the dataset already has row r."""
        if not self.direct:
            self.ds[r] = values
            return
        raw = np.ascontiguousarray(values, dtype="<f4")
        if raw.shape != self.ds.shape[1:]:
            raise ValueError(f"row of shape {raw.shape} for {self.ds.name} of rows {self.ds.shape[1:]}")
        body = deflate(raw.tobytes())
        chunk = body + fletcher32(body).to_bytes(4, "little")  # H5Zfletcher32 appends it little-endian
        self.ds.id.write_direct_chunk((r,) + (0,) * (self.ds.ndim - 1), chunk, 0)
