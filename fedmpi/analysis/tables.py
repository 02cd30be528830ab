"""Every per-row metric of one or more traces as long-format CSV (`analyze --csv`)."""

from __future__ import annotations

import sys
from typing import Iterator, Sequence

from fedmpi.errors import UsageError
from fedmpi.trace import MODELS, Trace

CSV_HEADER = ("round", "step", "worker", "model", "metric", "value")


def _metric_model(name: str) -> str:
    """Which model a per-round metric measures ("" for timings and metrics this version does not know)."""
    if name.startswith(("test_", "averaged_")):
        return "averaged"
    if name.startswith(("local_", "train_loss")):
        return "local"
    return ""


def csv_rows(t: Trace) -> Iterator[tuple]:
    """Long-format rows (round, step, worker, model, metric, value) of one trace.

    round is /rounds/index (0-based sync point); worker is "" for the test set
    metrics, which measure the averaged model on the shared test set; MI rows
    (mi/<estimator>/<xz|zy>[_se]), bound rows (bounds/<entropy|error|fano|head>[_se],
    docs/trace-format.md), the sync policy's state (sync/<key>) and communication
    diagnostics (comm/<name>) that are NaN are left out; the communication counts
    (comm/<messages|bytes_up|...>) and sync/check_index are integers.
    """
    import numpy as np
    W = t.num_workers
    for r in range(t.rounds):
        head = (int(t.index[r]), int(t.step[r]))
        for name, values in t.metrics.items():
            if values.ndim == 1:
                yield head + ("", _metric_model(name), name, float(values[r]))
        for k in range(W):
            for name, values in t.metrics.items():
                if values.ndim == 2:
                    yield head + (k, _metric_model(name), name, float(values[r, k]))
        for est, values in t.mi.items():
            for k in range(W):
                for model in MODELS:
                    for side in ("xz", "zy"):
                        v = float(values[f"{side}_{model}"][r, k])
                        if not np.isnan(v):
                            yield head + (k, model, f"mi/{est}/{side}", v)
                            se = float(t.mi_se[est][f"{side}_{model}"][r, k])
                            if not np.isnan(se):
                                yield head + (k, model, f"mi/{est}/{side}_se", se)
        for name, values in (t.bounds or {}).items():
            model = next((m for m in MODELS if name.endswith(f"_{m}")), "")
            metric = name[:-len(model) - 1] if model else name  # fano_se_local -> fano_se
            for k in range(W):
                v = float(values[r, k])
                if not np.isnan(v):
                    yield head + (k, model, f"bounds/{metric}", v)
        for name, values in (t.divergence or {}).items():
            for layer, v in zip(t.layers, values[r]):
                if not np.isnan(v):
                    yield head + ("", "", f"divergence/{name}/{layer}", float(v))
        for name, values in (t.sync or {}).items():  # the sync policy's check point and state (/sync)
            if not np.isnan(values[r]):
                yield head + ("", "", f"sync/{name}", int(values[r]) if name == "check_index" else float(values[r]))
        for name, values in (t.comm or {}).items():
            if values.ndim == 2:
                for k in range(W):
                    yield head + (k, "", f"comm/{name}", int(values[r, k]))
            elif not np.isnan(values[r]):
                yield head + ("", "", f"comm/{name}", float(values[r]))


def write_csv_file(traces: Sequence[Trace], path: str, out) -> None:
    import csv
    many = len(traces) > 1
    try:
        fh = sys.stdout if path == "-" else open(path, "w", newline="", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write CSV file {path}: {exc.strerror}") from None
    count = 0
    try:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow((("trace",) if many else ()) + CSV_HEADER)
        for t in traces:
            for row in csv_rows(t):
                # repr of a float round-trips exactly, so the CSV holds the trace's values.
                row = row[:-1] + (repr(row[-1]),)
                writer.writerow(((t.path,) if many else ()) + row)
                count += 1
    finally:
        if fh is not sys.stdout:
            fh.close()
    if path != "-":
        out.print(f"wrote {path} ({count} rows)")
