"""Checkpoints: one file next to the trace, written atomically, verified when read.

`runs/NAME.h5` has its checkpoint in `runs/NAME.ckpt`. It holds what an
exact continuation needs: every worker's client states (parameters, integer
buffers, optimizer state, batch-order generator state and position, the
algorithm's per-client state), the server state, the index of the last
completed round, the number of trace rows written up to it, the elapsed wall
time, the resolved config and the world size. The payload is written with
`torch.save` and read with `torch.load(weights_only=True)`, which unpickles
tensors and plain containers only: a checkpoint file cannot execute code.

The file is `MAGIC`, the SHA-256 of the payload in hex, a newline, then the
payload. A damaged copy (flipped bytes, a partial copy) fails the digest and
is refused before anything is resumed from it. It is written as a temporary
file, flushed to disk, then renamed over the old one: a crash while writing
leaves the previous checkpoint intact.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os

import torch

from fedmpi.errors import UsageError

FORMAT = 2  # 2: with a digest; 1 (before it) is refused
MAGIC = b"fedmpi checkpoint\n"
_DIGEST_LEN = 64  # hex characters of a SHA-256


def path_for(trace_path: str) -> str:
    root, _ = os.path.splitext(trace_path)
    return root + ".ckpt"


def save(path: str, state: dict) -> None:
    payload = io.BytesIO()
    torch.save({"format": FORMAT, **state}, payload)
    data = payload.getvalue()
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as fh:
            fh.write(MAGIC + hashlib.sha256(data).hexdigest().encode() + b"\n")
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic: a reader sees the old file or the new one, never a part
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def load(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise UsageError(f"no checkpoint {path}: the run never wrote one (checkpoint.every: 0 and no "
                         "signal) or it finished; start it again with --force") from None
    except OSError as exc:
        raise UsageError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    head = len(MAGIC) + _DIGEST_LEN + 1
    if not raw.startswith(MAGIC):
        raise UsageError(f"checkpoint {path} cannot be read: it is not a fedmpi checkpoint of format {FORMAT} "
                         "(written by an older fedmpi, or not a checkpoint); start the run again with --force")
    digest, data = raw[len(MAGIC):head - 1].decode("ascii", "replace"), raw[head:]
    if raw[head - 1:head] != b"\n" or hashlib.sha256(data).hexdigest() != digest:
        raise UsageError(f"checkpoint {path} is damaged (its SHA-256 does not match its contents: a "
                         "truncated or corrupted copy); resume from an intact copy or start again with --force")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable payload is the same bad input
        raise UsageError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); it is not a "
                         "fedmpi checkpoint or it is damaged") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UsageError(f"checkpoint {path} has format {state.get('format') if isinstance(state, dict) else '?'}"
                         f", this fedmpi reads format {FORMAT}")
    return state


def remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


class Pending:
    """A checkpoint taken but not yet saved: the coordinator's trace does not hold all its
    logged rows yet, because the measuring thread is still at them.

    The checkpoint says the trace holds `state["rows"]` rows; saving it before they are
    written would make a resume skip rows. Waiting for them at the check point kept the
    workers waiting too: with the decoder at every sync point they waited 1.28 s at each
    checkpoint instead of 0.10 s (measured, one worker). So the state is held, the workers
    go on, and it is saved at the first check point where the rows are written (`ready`)
    or when it must be (`save`: a stop, or the next checkpoint). A rank killed in between
    resumes from the checkpoint before, as if killed just before this one.
    """

    def __init__(self, path: str):
        self.path = path
        self.state: dict | None = None

    def hold(self, state: dict) -> None:
        self.state = state

    def ready(self, rows_written: int) -> None:
        """Save the held checkpoint if the trace holds all its rows."""
        if self.state is not None and rows_written >= self.state["rows"]:
            self.save()

    def save(self) -> None:
        """Save the held checkpoint now (the caller has had every row written)."""
        if self.state is not None:
            save(self.path, self.state)
            self.state = None
