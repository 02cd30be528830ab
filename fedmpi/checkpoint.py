"""Checkpoints: one file next to the trace, written atomically by the coordinator.

`runs/NAME.h5` has its checkpoint in `runs/NAME.ckpt`. It holds what an
exact continuation needs: every worker's parameters, optimizer state,
batch-order generator state and position, the index of the last completed
sync point, the number of trace rows written up to it, the elapsed wall time,
the resolved config and the world size. It is saved with `torch.save` and
read with `torch.load(weights_only=True)`, which unpickles tensors and plain
containers only: a checkpoint file cannot execute code.

Written as a temporary file, flushed to disk, then renamed over the old one:
a crash while writing leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os

import torch

from fedmpi.errors import UsageError

FORMAT = 1


def path_for(trace_path: str) -> str:
    root, _ = os.path.splitext(trace_path)
    return root + ".ckpt"


def save(path: str, state: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as fh:
        torch.save({"format": FORMAT, **state}, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            state = torch.load(fh, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UsageError(f"no checkpoint {path}: the run never wrote one (checkpoint.every: 0 and no "
                         "signal) or it finished; start it again with --force") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same bad input
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
