"""Checkpoint files: atomic, verified by a digest, and unable to run code when loaded."""

import hashlib
import os
import pickle

import pytest
import torch

from fedmpi import checkpoint
from fedmpi.errors import UsageError


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch exploited",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_checkpoint_file_cannot_execute_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.ckpt"
    payload = pickle.dumps({"format": checkpoint.FORMAT, "x": _Exploit()})
    # A valid envelope with a matching digest, so the payload reaches torch.load: the digest
    # guards against damage, weights_only against code.
    path.write_bytes(checkpoint.MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)
    with pytest.raises(UsageError, match="cannot be read"):
        checkpoint.load(str(path))
    assert not (tmp_path / "exploited").exists()


def test_damaged_or_old_checkpoint_is_refused_with_one_line(tmp_path):
    path = tmp_path / "a.ckpt"
    checkpoint.save(str(path), {"sync_index": 3, "theta": torch.arange(1000, dtype=torch.float32)})
    assert checkpoint.load(str(path))["sync_index"] == 3
    data = bytearray(path.read_bytes())
    for pos in (len(data) // 3, len(data) // 2, len(data) - 10):  # a few flipped bytes in the payload
        data[pos] ^= 0x5A
    path.write_bytes(bytes(data))
    with pytest.raises(UsageError, match="is damaged") as err:
        checkpoint.load(str(path))
    assert "\n" not in str(err.value)
    path.write_bytes(path.read_bytes()[:len(data) // 2])  # a partial copy
    with pytest.raises(UsageError, match="is damaged"):
        checkpoint.load(str(path))
    legacy = tmp_path / "old.ckpt"
    torch.save({"format": 1, "sync_index": 3}, str(legacy))  # written before digests
    with pytest.raises(UsageError, match="not a fedmpi checkpoint of format 2"):
        checkpoint.load(str(legacy))


def test_checkpoint_is_replaced_atomically(tmp_path):
    path = str(tmp_path / "a.ckpt")
    checkpoint.save(path, {"sync_index": 1})
    checkpoint.save(path, {"sync_index": 2})
    assert checkpoint.load(path)["sync_index"] == 2
    assert sorted(os.listdir(tmp_path)) == ["a.ckpt"]  # no temporary left behind
