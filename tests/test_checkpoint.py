"""Checkpoint files: atomic, verified by a digest, and unable to run code when loaded."""

import hashlib
import os
import pickle
import threading

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


def test_a_reader_never_sees_a_partial_checkpoint(tmp_path):
    """While one thread replaces the checkpoint again and again, every read gets a whole,
    verified version (the digest would refuse a partial one)."""
    path = str(tmp_path / "a.ckpt")
    big = torch.zeros(1_000_000)  # 4 MB: writes take long enough to be caught halfway
    checkpoint.save(path, {"sync_index": 0, "x": big})
    versions, errors, done = [], [], threading.Event()

    def read():
        while not done.is_set():
            try:
                versions.append(checkpoint.load(path)["sync_index"])
            except UsageError as exc:
                errors.append(str(exc))
    reader = threading.Thread(target=read)
    reader.start()
    for i in range(1, 20):
        checkpoint.save(path, {"sync_index": i, "x": big + i})
    done.set()
    reader.join()
    assert errors == [] and len(versions) > 0
    assert versions == sorted(versions) and set(versions) <= set(range(20))
    assert sorted(os.listdir(tmp_path)) == ["a.ckpt"]  # no temporary left behind


def test_a_crash_while_writing_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = str(tmp_path / "a.ckpt")
    checkpoint.save(path, {"sync_index": 1})
    before = open(path, "rb").read()

    def disk_full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(checkpoint.os, "fsync", disk_full)  # the new file is half done when this hits
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(path, {"sync_index": 2, "x": torch.zeros(100_000)})
    monkeypatch.undo()
    assert open(path, "rb").read() == before and checkpoint.load(path)["sync_index"] == 1
    assert sorted(os.listdir(tmp_path)) == ["a.ckpt"]


def test_a_held_checkpoint_is_saved_only_once_the_trace_holds_its_rows(tmp_path):
    path = str(tmp_path / "run.ckpt")
    pending = checkpoint.Pending(path)
    pending.ready(0)  # nothing held: nothing written
    assert not os.path.exists(path)
    pending.hold({"rows": 5, "theta": torch.arange(3.0)})
    pending.ready(4)  # the measuring thread is still at the fifth row
    assert not os.path.exists(path)
    pending.ready(5)
    assert checkpoint.load(path)["rows"] == 5 and pending.state is None
    pending.hold({"rows": 9})
    pending.save()  # a stop: saved now (the caller has drained the measurements)
    assert checkpoint.load(path)["rows"] == 9
