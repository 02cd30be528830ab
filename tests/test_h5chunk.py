"""The trace's precompressed rows: HDF5's own checksum, values read back by plain h5py."""

import h5py
import numpy as np
import pytest

from fedmpi import h5chunk
from fedmpi.h5chunk import ChunkRows, fletcher32


def hdf5_fletcher32(data: bytes) -> int:
    """H5_checksum_fletcher32 written out word by word, as in HDF5's C source."""
    s1 = s2 = 0
    i, left = 0, len(data) // 2
    while left:
        block = min(left, 360)
        left -= block
        for _ in range(block):
            s1 = (s1 + ((data[i] << 8) | data[i + 1])) & 0xFFFFFFFF
            s2 = (s2 + s1) & 0xFFFFFFFF
            i += 2
        s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    if len(data) % 2:
        s1 += data[i] << 8
        s2 += s1
        s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    s1, s2 = (s1 & 0xFFFF) + (s1 >> 16), (s2 & 0xFFFF) + (s2 >> 16)
    return (s2 << 16) | s1


def test_fletcher32_is_hdf5s_at_every_length_and_where_its_sums_wrap():
    rng = np.random.default_rng(0)
    for n in list(range(0, 24)) + [359 * 2, 720, 721, 722, 1441, 5000, 5001]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert fletcher32(data) == hdf5_fletcher32(data), n
    # All words 0xffff: the second sum passes 2**32 within a block, which C's uint32 wraps.
    for n in (720, 7201, 20000):
        assert fletcher32(b"\xff" * n) == hdf5_fletcher32(b"\xff" * n), n


def relu_rows(rng, shape, rows):
    return [np.maximum(rng.standard_normal(shape), 0).astype(np.float32) for _ in range(rows)]


def activations_like(f, shape):
    return f.create_dataset("a", shape=(0,) + shape, maxshape=(None,) + shape, chunks=(1,) + shape,
                            dtype=np.float32, compression="gzip", compression_opts=1, shuffle=False,
                            fletcher32=True)


def test_fletcher32_is_the_checksum_hdf5_stores(tmp_path):
    rng = np.random.default_rng(1)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        ds = activations_like(f, (2, 50, 7))
        ds.resize(4, axis=0)
        for r, row in enumerate(relu_rows(rng, (2, 50, 7), 4)):
            ds[r] = row
        f.flush()
        for r in range(4):
            _, raw = ds.id.read_direct_chunk((r, 0, 0, 0))
            assert fletcher32(raw[:-4]) == int.from_bytes(raw[-4:], "little")


@pytest.mark.parametrize("fast", [True, False])
def test_rows_written_as_chunks_read_back_exactly_while_the_file_is_in_swmr_mode(tmp_path, monkeypatch, fast):
    if not fast:
        monkeypatch.setattr(h5chunk, "_fast_zlib", None)  # Python's zlib, where isal has no wheel
    rng = np.random.default_rng(2)
    shape = (2, 100, 84)
    rows = relu_rows(rng, shape, 3)
    with h5py.File(tmp_path / "t.h5", "w", libver="latest") as f:
        writer = ChunkRows(activations_like(f, shape))
        assert writer.direct
        f.swmr_mode = True
        for r, row in enumerate(rows):
            writer.ds.resize(r + 1, axis=0)
            writer.write(r, row)
            f.flush()
    with h5py.File(tmp_path / "t.h5", "r") as f:
        assert np.array_equal(f["a"][:], np.stack(rows))
        assert f["a"].compression == "gzip" and f["a"].fletcher32


def test_a_chunk_with_a_wrong_checksum_fails_when_read(tmp_path, monkeypatch):
    monkeypatch.setattr(h5chunk, "fletcher32", lambda data: 12345)
    with h5py.File(tmp_path / "t.h5", "w") as f:
        writer = ChunkRows(activations_like(f, (3, 4)))
        writer.ds.resize(1, axis=0)
        writer.write(0, np.ones((3, 4), np.float32))
    with h5py.File(tmp_path / "t.h5", "r") as f, pytest.raises(OSError):
        f["a"][0]


def test_other_layouts_are_written_through_h5py(tmp_path):
    with h5py.File(tmp_path / "t.h5", "w") as f:
        plain = f.create_dataset("p", shape=(1, 3), maxshape=(None, 3), chunks=(1, 3), dtype=np.float32)
        shuffled = f.create_dataset("s", shape=(1, 3), maxshape=(None, 3), chunks=(1, 3), dtype=np.float32,
                                    compression="gzip", shuffle=True, fletcher32=True)
        for ds in (plain, shuffled):
            writer = ChunkRows(ds)
            assert not writer.direct
            writer.write(0, np.array([1, 2, 3], np.float32))
            assert ds[0].tolist() == [1, 2, 3]
