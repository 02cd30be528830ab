"""The coordinator's recording: finished measurements become trace rows, console lines and
TensorBoard scalars as soon as they are done.

The coordinator registers each logged round it hands to its measurement
thread (`expect`), and calls `take` with whatever the thread has finished:
from its main loop and, through `Comm.idle`, from inside every wait for a
collective, so a row reaches the trace and the console while the workers
train towards the next sync point (not when the next logged round comes).
All writing happens on the coordinator's main thread: the trace has one
writer. Each row records how long after its sync point it reached the trace
(`/timing/row_latency_seconds`).
"""

from __future__ import annotations

import time

import numpy as np

from fedmpi.info.bounds import outside_band
from fedmpi.protocol import BOUNDS, METRICS
from fedmpi.tensorboard import bound_scalars, row_scalars


class Recorder:
    def __init__(self, writer, console, board, start: float):
        """writer: TraceWriter; console: Console; board: tensorboard.Board or None; start: the
        perf_counter origin of the row times (`entry["seconds"]`)."""
        self.writer, self.console, self.board = writer, console, board
        self.start = start
        self.pending: dict[int, dict] = {}  # row -> what the workers reported, until its test is done
        self.steps: dict[int, int] = {}  # row -> its local step, for MI scalars that come later
        self.bounds: dict[int, dict] = {}  # row -> BOUNDS name -> (W,), for checking MI that comes later
        self.last: dict = {}  # the newest row written (for the final summary)

    def expect(self, row: int, entry: dict) -> None:
        self.pending[row] = entry

    def take(self, results) -> None:
        for res in results:
            if res.kind == "test":
                self._row(res.row, res.value)
            else:
                self._mi(res.row, res.value)

    def _row(self, row: int, test) -> None:
        entry = self.pending.pop(row)
        latency = time.perf_counter() - self.start - entry["seconds"]
        self.writer.append(test_acc=test.accuracy, test_loss=test.loss, test_examples=test.examples,
                           latency=latency, **entry)
        self.last = dict(entry, test_acc=test.accuracy, test_examples=test.examples)
        self.steps[row] = entry["step"]
        self.bounds[row] = {name: entry["worker_bounds"][:, b] for b, name in enumerate(BOUNDS)}
        wm = entry["worker_metrics"]  # (W, len(METRICS))
        self.console.round(entry["index"], entry["epoch"], test.accuracy,
                           wm[:, METRICS.index("local_acc")], wm[:, METRICS.index("averaged_acc")])
        if self.board is not None:
            metrics = {name: wm[:, m] for m, name in enumerate(METRICS) if not name.endswith("_seconds")}
            self.board.write(entry["step"], row_scalars(dict(metrics, test_acc=test.accuracy,
                                                             test_loss=test.loss),
                                                        extra=bound_scalars(self.bounds[row])))

    def _mi(self, row: int, results: dict) -> None:
        """results: estimator -> (values, failure) from the measurement thread."""
        for name, (values, failure) in results.items():
            self.writer.write_mi(row, name, values, failure)
            if failure:
                self.console.note(f"{name} failed at row {row} (values NaN, reason in the trace): {failure}")
        bounds = self.bounds.pop(row)
        name, (values, _) = next(iter(results.items()))
        self.console.mi(f"I(Z;Y) {name} local {np.nanmean(values['zy_local']):.2f} "
                        f"averaged {np.nanmean(values['zy_averaged']):.2f} nats "
                        f"[Fano {np.nanmean(bounds['fano_averaged']):.2f}, H(Y) {np.nanmean(bounds['entropy']):.2f}]")
        outside = [f"{est} {which} worker {k + 1} {check.side} by {check.excess:.2f} nats"
                   for est, (values, _) in results.items() for which in ("local", "averaged")
                   for k, check in outside_band(values[f"zy_{which}"], values[f"zy_{which}_se"], bounds, which)]
        if outside:
            self.console.note("I(Z;Y) outside [Fano, H(Y)] beyond sampling error: " + "; ".join(outside[:4])
                              + (f" (+{len(outside) - 4} more)" if len(outside) > 4 else ""))
        if self.board is not None:
            self.board.write(self.steps[row], row_scalars({}, {est: v for est, (v, _) in results.items()}))
