"""TensorBoard scalars of a run: live (`trace.tensorboard: DIR`) or from a trace (`analyze --tensorboard DIR`).

The same rows give the same scalars either way: `row_scalars` maps one trace
row (its metrics, and its MI values once estimated) to TensorBoard tags, at
the row's local step. The event files are written with torch's
`SummaryWriter`, which needs the optional `tensorboard` package:
`pip install -e ".[tensorboard]"`; without it, `require()` says so in one line.
"""

from __future__ import annotations

import math
import os
from typing import Mapping

import numpy as np

from fedmpi.errors import UsageError

INSTALL = 'pip install -e ".[tensorboard]"'

# Per-row metrics and their tags: (group, what); per-worker ones get "/worker_k" appended.
_TAGS = {"test_acc": "test/accuracy", "test_loss": "test/loss",
         "local_acc": "local/accuracy", "local_loss": "local/loss",
         "averaged_acc": "averaged/accuracy", "averaged_loss": "averaged/loss",
         "train_loss": "train/loss"}


def require(what: str) -> None:
    """Fail with one line if the tensorboard package is missing; `what` names the key or flag."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UsageError(f"{what} writes TensorBoard event files and needs the tensorboard package; "
                         f"install it with {INSTALL}") from None


def row_scalars(metrics: Mapping[str, object], mi: Mapping[str, Mapping[str, np.ndarray]] | None = None,
                extra: Mapping[str, object] | None = None) -> dict[str, float]:
    """Tag -> value for one row. `metrics`: name -> scalar or (W,) array (trace names);
    `mi`: estimator -> key (zy_local, ...) -> (W,) nats; `extra`: more tags as they are
    (bounds, communication totals), scalar or (W,). NaN values are left out."""
    out: dict[str, float] = {}

    def put(tag: str, value: object) -> None:
        values = np.atleast_1d(np.asarray(value, dtype=np.float64))
        if values.shape == (1,) and np.ndim(value) == 0:
            if math.isfinite(values[0]):
                out[tag] = float(values[0])
            return
        for k, v in enumerate(values):
            if math.isfinite(v):
                out[f"{tag}/worker_{k}"] = float(v)

    for name, tag in _TAGS.items():
        if name in metrics:
            put(tag, metrics[name])
    for est, values in (mi or {}).items():
        for key, v in values.items():
            if key.endswith("_se"):
                continue  # standard errors stay in the trace
            side, model = key.split("_", 1)  # "zy_local" -> I(Z;Y) of the local model
            put(f"mi/{est}/{'I(Z;Y)' if side == 'zy' else 'I(X;Z)'} {model}", v)
    for tag, value in (extra or {}).items():
        put(tag, value)
    return out


def bound_scalars(bounds: Mapping[str, object]) -> dict[str, object]:
    """The `extra` tags of a row's bounds on I(Z;Y): /bounds name -> (W,), standard errors left out."""
    return {f"bounds/{name}": value for name, value in bounds.items() if "_se" not in name}


class Board:
    """One run's event files under `logdir/run`."""

    def __init__(self, logdir: str, run: str):
        require("trace.tensorboard")
        from torch.utils.tensorboard import SummaryWriter
        path = os.path.join(logdir, run)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot create TensorBoard folder {path}: {exc.strerror}") from None
        self.writer = SummaryWriter(log_dir=path)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, global_step=int(step))
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
