"""A finished (or running) trace as TensorBoard scalars (`analyze --tensorboard DIR`).

The same tags and steps as a live run with `trace.tensorboard` (fedmpi.tensorboard.row_scalars),
so old runs and new ones can be compared in one board; each trace is one run, named like its
figures (the job name, or the file name where jobs repeat).
"""

from __future__ import annotations

from typing import Sequence

from fedmpi.trace import Trace


def export(traces: Sequence[Trace], folder: str, out) -> None:
    import numpy as np

    from fedmpi.analysis.plots import labels
    from fedmpi.tensorboard import Board, bound_scalars, require, row_scalars
    require("--tensorboard")
    for t, label in zip(traces, labels(traces)):
        board = Board(folder, label)
        for r in range(t.rounds):
            metrics = {name: values[r] for name, values in t.metrics.items() if not name.endswith("_seconds")}
            mi = {est: {key: v[r] for key, v in values.items()} for est, values in t.mi.items()
                  if not np.all(np.isnan(np.stack(list(values.values()))[:, r]))}
            bounds = bound_scalars({name: values[r] for name, values in (t.bounds or {}).items()})
            board.write(int(t.step[r]), row_scalars(metrics, mi, bounds))
        board.close()
        out.print(f"wrote {t.rounds} rows of {t.path} to {folder}/{label}")
