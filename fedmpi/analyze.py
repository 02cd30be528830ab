"""`python -m fedmpi analyze`: read traces back -- summaries, the paper's figures, CSV, MI re-estimation.

Adilova, Rosenzweig, Kamp, "Information-theoretic perspective of federated
learning" (2019) show, for each local dataset, I(X;Z) (left) and I(Z;Y)
(right) at every aggregation point, for the local models and the averaged
model (their Figures 1-4). This module draws that layout, the accuracy curves
and the information plane from a trace (docs/trace-format.md), exports every
per-round metric as long-format CSV, and re-estimates MI from the logged
activations with any estimator of fedmpi.info without re-running training.
See docs/analysis.md.

Traces are read with fedmpi.trace.open_trace (SWMR), so a trace that is still
being written or was cut off by a crash reads up to its last complete round,
R = len(/rounds/step). Bad input (missing, non-HDF5, foreign, newer-schema or
truncated files, bad estimator parameters) raises UsageError: one line, exit 2.
Importing this module is cheap: h5py, numpy, rich, matplotlib and fedmpi.info
are imported where they are used; mpi4py and torch never are.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import sys
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from fedmpi.errors import UsageError

MODELS = ("local", "averaged")
ANALYSIS_GROUP = "analysis/mi"  # re-estimates written by --write live here, never under /mi
_MISSING = "?"  # shown for config fields a trace's config does not give

DESCRIPTION = """\
Summarise fedmpi traces (HDF5, see docs/trace-format.md), draw the figures of
Adilova et al. (2019), export per-round metrics as CSV, or re-estimate mutual
information from the logged activations. Works on finished traces, on traces
still being written, and on traces cut off by a crash (up to the last complete
round). Without --plots, --csv or --estimator it prints a summary: one table
per trace, or one comparison table (a row per trace) for several.

examples:
  python -m fedmpi analyze runs/default.h5
  python -m fedmpi analyze runs/iid.h5 runs/noniid.h5 --plots figures/
  python -m fedmpi analyze runs/default.h5 --csv metrics.csv
  python -m fedmpi analyze runs/default.h5 --estimator ksg --param k=5 --write
"""


def add_parser(subparsers) -> None:
    """Add the `analyze` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser(
        "analyze", help="summarise traces, draw the paper's figures, export CSV, re-estimate MI",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("traces", metavar="TRACE.h5", nargs="+", help="trace file(s) written by a fedmpi run")
    p.add_argument("--plots", metavar="DIR", default=None,
                   help="write PNG figures to DIR: <job>-mi-<estimator>.png (the paper's Figures 1-4), "
                        "<job>-accuracy.png, <job>-infoplane-<estimator>.png")
    p.add_argument("--csv", metavar="FILE", default=None,
                   help="write every per-round metric to FILE in long format "
                        "(round,step,worker,model,metric,value; a leading trace column for several "
                        "traces); '-' writes to stdout")
    p.add_argument("--estimator", metavar="NAME", default=None,
                   help="re-estimate I(X;Z) and I(Z;Y) from the logged activations with this estimator "
                        "(edge, ksg, binning, kde) and print the results")
    p.add_argument("--param", dest="params", metavar="KEY=VALUE", action="append", default=[],
                   help="estimator parameter for --estimator, e.g. --param k=5 (repeatable; the value is "
                        "YAML)")
    p.add_argument("--write", action="store_true",
                   help="with --estimator: store the results in the trace under "
                        "/analysis/mi/<estimator>-<hash of params>; never touches what the run recorded")
    p.add_argument("--overwrite", action="store_true",
                   help="with --write: replace that analysis group if it exists")


def main(args) -> int:
    """Run `analyze` for parsed arguments; returns the exit status (2 for bad input)."""
    try:
        return _main(args)
    except BrokenPipeError:
        # Output piped into e.g. `head`, which stopped reading: not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except UsageError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"fedmpi: error: {exc}\n")
        sys.stderr.flush()
        return 2


def _main(args) -> int:
    if args.estimator is None and (args.params or args.write or args.overwrite):
        raise UsageError("--param, --write and --overwrite need --estimator NAME")
    if args.overwrite and not args.write:
        raise UsageError("--overwrite only applies with --write")
    params = _estimator_params(args.estimator, args.params) if args.estimator else None
    traces = [load_trace(path) for path in args.traces]
    out = _console()
    if args.estimator is not None:
        _reestimate_all(traces, args.estimator, params, args.write, args.overwrite, out)
    if args.csv is not None:
        _write_csv_file(traces, args.csv, out)
    if args.plots is not None:
        for path in write_plots(traces, args.plots):
            out.print(path)
    if args.estimator is None and args.csv is None and args.plots is None:
        if len(traces) == 1:
            _print_summary(traces[0], out)
        else:
            _print_comparison(traces, out)
    return 0


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class Trace:
    """The per-round contents of one trace, cut to its R complete rounds."""

    path: str
    attrs: dict  # root attributes (job, status, created, ...)
    config: Any  # fedmpi.config.Config, or None when the stored config does not parse
    num_examples: Any  # (W,) int64 training examples per worker
    index: Any  # (R,) int64 0-based sync-point index
    step: Any  # (R,) int64 local batches per worker
    epoch: Any  # (R,) float64
    time: Any  # (R,) float64 wall seconds
    metrics: dict  # name -> (R,) or (R, W) float64, from /metrics and /timing
    mi: dict  # estimator (or "<estimator>-<hash>" for /analysis/mi) -> MI key -> (R, W) nats
    mi_params: dict  # same keys -> attributes of the MI group
    analysis: frozenset  # the keys of mi that come from /analysis/mi
    has_activations: bool

    @property
    def rounds(self) -> int:
        return len(self.step)

    @property
    def num_workers(self) -> int:
        return len(self.num_examples)

    @property
    def job(self) -> str:
        return str(self.attrs.get("job", os.path.splitext(os.path.basename(self.path))[0]))

    @property
    def status(self) -> str:
        """`complete`, or `running or interrupted` (a crashed trace looks like a running one)."""
        return "complete" if self.attrs.get("status") == "complete" else "running or interrupted"


def load_trace(path: str) -> Trace:
    with _opened(path) as f, _h5_errors(path):
        return _read(f, path)


@contextlib.contextmanager
def _opened(path: str, write: bool = False) -> Iterator[Any]:
    """Open a trace (SWMR read, or 'r+' to write) after checking it is a readable fedmpi trace."""
    import h5py

    from fedmpi.trace import SCHEMA_VERSION, open_trace
    if not os.path.exists(path):
        raise UsageError(f"trace {path} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a folder; give a trace file (.h5)")
    if not h5py.is_hdf5(path):
        raise UsageError(f"{path} is not an HDF5 file, so not a fedmpi trace")
    # SWMR readers skip HDF5's check of the stored end of file, so a truncated copy
    # would open and fail later; a plain open checks it. A trace being written (or
    # left by a crashed writer) refuses the plain open, and is checked as it is read.
    try:
        h5py.File(path, "r").close()
    except OSError as exc:
        if "already open for write" not in str(exc):
            raise UsageError(f"cannot open trace {path}: {_why(exc)}") from None
    try:
        f = h5py.File(path, "r+", libver="latest") if write else open_trace(path)
    except OSError as exc:
        if write and "already open for write" in str(exc):
            raise UsageError(f"cannot write to {path}: it is open for writing, by a run still going or by "
                             "one that crashed (then `h5clear -s FILE` clears the flag); wait for the run "
                             "to finish") from None
        raise UsageError(f"cannot open trace {path}{' for writing' if write else ''}: {_why(exc)}") from None
    try:
        with _h5_errors(path):
            version = f.attrs.get("schema_version")
        if version is None:
            raise UsageError(f"{path} is an HDF5 file but not a fedmpi trace (no schema_version attribute)")
        if int(version) > SCHEMA_VERSION:
            raise UsageError(f"{path} has trace schema version {int(version)}, newer than this fedmpi "
                             f"reads ({SCHEMA_VERSION}); analyse it with a newer fedmpi")
        yield f
    finally:
        f.close()


@contextlib.contextmanager
def _h5_errors(path: str) -> Iterator[None]:
    """Turn HDF5 read failures (truncated or corrupt files) into one-line UsageErrors."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        raise UsageError(f"cannot read trace {path}: it is truncated or corrupt ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    # h5py wraps HDF5's reason in "Unable to ... (reason)"; the reason is the useful part.
    if text.endswith(")") and "(" in text:
        text = text[text.index("(") + 1:-1]
    if "unable to lock file" in text:
        return "the file is locked by another process (a run closing it?); try again in a moment"
    truncated = re.match(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if truncated:
        text = (f"the file is truncated, {truncated[1]} of {truncated[2]} bytes (an incomplete copy or "
                "download?)")
    return text


def _dataset(f, name: str, path: str):
    if name not in f:
        raise UsageError(f"{path} is not a complete fedmpi trace: it has no /{name}")
    return f[name]


def _rows(ds, R: int):
    """The first R rows of a per-round dataset as float64/int64; NaN rows pad a shorter one."""
    import numpy as np
    data = ds[:R]
    if len(data) < R:  # only an analysis group written before more rounds came could be shorter
        pad = np.full((R - len(data),) + data.shape[1:], np.nan)
        data = np.concatenate([data.astype(np.float64), pad])
    return data


_METRIC_ORDER = ("test_acc", "test_loss", "local_acc", "local_loss", "averaged_acc", "averaged_loss",
                 "train_loss", "train_seconds", "eval_seconds", "sync_seconds",
                 "coordinator_cpu_seconds")  # then metrics this version does not know, by name


def _read(f, path: str) -> Trace:
    import numpy as np

    from fedmpi.trace import MI_KEYS
    R = len(_dataset(f, "rounds/step", path))
    attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    found = {}
    for group in ("metrics", "timing"):
        if group in f:
            for name, ds in f[group].items():
                found[name] = _rows(ds, R).astype(np.float64)
    order = {name: i for i, name in enumerate(_METRIC_ORDER)}
    metrics = {name: found[name] for name in sorted(found, key=lambda n: (order.get(n, len(order)), n))}
    for name in ("test_acc", "local_acc", "averaged_acc"):
        if name not in metrics:
            raise UsageError(f"{path} is not a complete fedmpi trace: it has no /metrics/{name}")
    mi, mi_params, analysis = {}, {}, set()
    for group_name, prefix in (("mi", ""), (ANALYSIS_GROUP, "analysis")):
        if group_name not in f:
            continue
        for est, group in f[group_name].items():
            if not all(key in group for key in MI_KEYS):
                continue
            mi[est] = {key: _rows(group[key], R).astype(np.float64) for key in MI_KEYS}
            mi_params[est] = {k: (v.item() if hasattr(v, "item") else v) for k, v in group.attrs.items()}
            if prefix:
                analysis.add(est)
    return Trace(
        path=path, attrs=attrs, config=_parse_config(attrs.get("config")),
        num_examples=_dataset(f, "workers/num_examples", path)[:],
        index=_rows(_dataset(f, "rounds/index", path), R), step=_rows(f["rounds/step"], R),
        epoch=_rows(_dataset(f, "rounds/epoch", path), R), time=_rows(_dataset(f, "rounds/time", path), R),
        metrics=metrics, mi=mi, mi_params=mi_params, analysis=frozenset(analysis),
        has_activations=all(n in f for n in ("activations/local", "activations/averaged", "probe/inputs",
                                             "probe/labels")))


def _parse_config(text):
    """The trace's resolved config as a fedmpi.config.Config; None if it does not parse."""
    import yaml

    from fedmpi import config
    if not isinstance(text, str):
        return None
    try:
        return config.from_dict(yaml.safe_load(text))
    except (UsageError, yaml.YAMLError):
        return None  # e.g. written by another fedmpi version; the summary shows "?" for it


# ---------------------------------------------------------------- summary

def _console():
    from rich.console import Console
    # Pipes and files get a wide console so comparison tables keep one line per trace.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 400)


def _job_fields(t: Trace) -> dict[str, str]:
    cfg = t.config
    if cfg is None:
        return {"dataset": _MISSING, "partition": _MISSING, "sync every": _MISSING, "redistribution": _MISSING}
    partition = cfg.data.partition + (f" (alpha {cfg.data.alpha:g})" if cfg.data.partition == "dirichlet" else "")
    return {"dataset": cfg.data.name, "partition": partition,
            "sync every": f"{cfg.sync.every} local batches",
            "redistribution": "with redistribution" if cfg.sync.redistribute else "without redistribution"}


def _fmt(values, digits: int = 4) -> str:
    import numpy as np
    values = np.atleast_1d(values)
    return " ".join("-" if np.isnan(v) else f"{v:.{digits}f}" for v in values)


def _best(values) -> tuple:
    """Best value per column of (R,) or (R, W) and the 1-based aggregation where it was reached."""
    import numpy as np
    if len(values) == 0:
        return np.full(values.shape[1:], np.nan), None
    return np.nanmax(values, axis=0), np.nanargmax(values, axis=0) + 1


def latest_mi(t: Trace, est: str) -> tuple[int | None, dict]:
    """Row of the newest round whose MI estimate is written (all NaN before), and its values."""
    import numpy as np
    values = t.mi[est]
    done = np.flatnonzero(~np.all(np.isnan(np.stack([values[k] for k in values], axis=1)), axis=(1, 2)))
    if len(done) == 0:
        return None, {}
    r = int(done[-1])
    return r, {k: v[r] for k, v in values.items()}


def _est_label(t: Trace, est: str) -> str:
    return f"{est} (re-estimated)" if est in t.analysis else est


def _print_summary(t: Trace, out) -> None:
    import numpy as np
    from rich.table import Table
    table = Table(title=f"fedmpi trace {t.path}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    job = _job_fields(t)
    table.add_row("job", t.job)
    table.add_row("data", f"{job['dataset']}, {job['partition']} partition, {t.num_workers} workers "
                          f"({' '.join(str(n) for n in t.num_examples)} examples)")
    table.add_row("sync", f"every {job['sync every']}, {job['redistribution']}")
    status = t.status + (f" (finished {t.attrs['finished']})" if "finished" in t.attrs else "")
    table.add_row("status", status)
    R = t.rounds
    if R:
        table.add_row("rounds done", f"{R} logged (last: aggregation {int(t.index[-1]) + 1}, local step "
                                     f"{int(t.step[-1])}, epoch {t.epoch[-1]:.2f}, {t.time[-1]:.1f} s)")
    else:
        table.add_row("rounds done", "0 (no round written yet)")
    for name, what in (("test_acc", "test accuracy (averaged)"), ("local_acc", "local accuracy (own shard)"),
                       ("averaged_acc", "averaged accuracy (each shard)")):
        values = t.metrics[name]
        if R:
            best, at = _best(values)
            bests = "  ".join(f"{_fmt(b)} (aggregation {a})"
                              for b, a in zip(np.atleast_1d(best), np.atleast_1d(at)))
            table.add_row(what, f"final {_fmt(values[-1])}  best {bests}")
    out.print(table)
    if not t.mi:
        out.print("no MI estimates in this trace (mi.estimators was empty)")
        return
    mi_table = Table(title="latest MI estimates (nats), per worker")
    for col in ("estimator", "aggregation", "worker", "I(X;Z) local", "I(X;Z) averaged", "I(Z;Y) local",
                "I(Z;Y) averaged"):
        mi_table.add_column(col, justify="left" if col == "estimator" else "right")
    for est in t.mi:
        r, values = latest_mi(t, est)
        if r is None:
            mi_table.add_row(_est_label(t, est), "-", "-", "not estimated yet", "", "", "")
            continue
        for k in range(t.num_workers):
            mi_table.add_row(_est_label(t, est) if k == 0 else "", str(int(t.index[r]) + 1), str(k),
                             *(_fmt(values[key][k]) for key in ("xz_local", "xz_averaged", "zy_local",
                                                                "zy_averaged")))
    out.print(mi_table)


def _print_comparison(traces: Sequence[Trace], out) -> None:
    import numpy as np
    from rich.table import Table
    estimators = list(dict.fromkeys(est for t in traces for est in t.mi))
    table = Table(title="fedmpi traces (accuracies: final; local/averaged: mean over workers; "
                        "MI: latest, mean over workers, nats)")
    cols = ["trace", "job", "data", "workers", "sync every", "redistribution", "status", "rounds",
            "test acc", "best test", "local acc", "averaged acc"]
    for est in estimators:
        cols += [f"{est} I(X;Z) loc/avg", f"{est} I(Z;Y) loc/avg"]
    left = ("trace", "job", "data", "status")
    for col in cols:
        table.add_column(col, justify="left" if col in left else "right", no_wrap=col in left)
    for t in traces:
        cfg = t.config
        job = _job_fields(t)
        R = t.rounds
        row = [t.path, t.job, f"{job['dataset']} {job['partition']}", str(t.num_workers),
               str(cfg.sync.every) if cfg else _MISSING,
               ("yes" if cfg.sync.redistribute else "no") if cfg else _MISSING, t.status, str(R)]
        if R:
            row += [_fmt(t.metrics["test_acc"][-1]), _fmt(np.nanmax(t.metrics["test_acc"])),
                    _fmt(np.mean(t.metrics["local_acc"][-1])), _fmt(np.mean(t.metrics["averaged_acc"][-1]))]
        else:
            row += ["-"] * 4
        for est in estimators:
            r, values = latest_mi(t, est) if est in t.mi else (None, {})
            if r is None:
                row += ["-", "-"]
            else:
                row += [f"{np.mean(values[f'{s}_local']):.3f}/{np.mean(values[f'{s}_averaged']):.3f}"
                        for s in ("xz", "zy")]
        table.add_row(*row)
    out.print(table)


# ---------------------------------------------------------------- CSV

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
    that are NaN (not estimated) are left out.
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


def _write_csv_file(traces: Sequence[Trace], path: str, out) -> None:
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


# ---------------------------------------------------------------- figures

_MODEL_STYLE = {"local": dict(marker="o", linestyle="-"), "averaged": dict(marker="s", linestyle="--")}
_MODEL_COLOR = {"local": "tab:blue", "averaged": "tab:orange"}


def _labels(traces: Sequence[Trace]) -> list[str]:
    """File-name prefixes: the job name; where jobs repeat, the trace's file name (prefixed by the job)."""
    jobs = [t.job for t in traces]
    labels = []
    for job, t in zip(jobs, traces):
        stem = os.path.splitext(os.path.basename(t.path))[0]
        labels.append(job if jobs.count(job) == 1 else stem if stem.startswith(job) else f"{job}-{stem}")
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        if labels.count(label) > 1:
            seen[label] = seen.get(label, 0) + 1
            labels[i] = f"{label}-{seen[label]}"
    return labels


def _title(t: Trace) -> str:
    job = _job_fields(t)
    running = "" if t.status == "complete" else f", {t.status} after {t.rounds} rounds"
    return (f"{t.job}: {job['dataset']} {job['partition']}, {t.num_workers} workers, sync every "
            f"{job['sync every']}, {job['redistribution']}{running}")


def write_plots(traces: Sequence[Trace], folder: str) -> list[str]:
    """Write every figure of every trace into folder; returns the paths written."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create plot folder {folder}: {exc.strerror}") from None
    paths = []
    for t, label in zip(traces, _labels(traces)):
        if t.rounds == 0:
            sys.stderr.write(f"fedmpi: {t.path} has no complete round yet; no figures for it\n")
            continue
        figures = [(f"{label}-accuracy.png", _accuracy_figure(t))]
        for est in t.mi:
            if latest_mi(t, est)[0] is None:
                continue
            figures.append((f"{label}-mi-{est}.png", _mi_figure(t, est)))
            figures.append((f"{label}-infoplane-{est}.png", _infoplane_figure(t, est)))
        for name, fig in figures:
            path = os.path.join(folder, name)
            try:
                fig.savefig(path, dpi=110)
            except OSError as exc:
                raise UsageError(f"cannot write figure {path}: {exc.strerror}") from None
            paths.append(path)
    return paths


def _figure(rows: int, cols: int, width: float, height: float):
    # A bare Figure renders with Agg without touching pyplot's global state.
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _mi_figure(t: Trace, est: str):
    """The paper's Figures 1-4: per worker, I(X;Z) left and I(Z;Y) right at each aggregation."""
    import numpy as np
    from matplotlib.ticker import MaxNLocator
    W = t.num_workers
    fig, axes = _figure(W, 2, 11, 2.6 * W + 0.8)
    aggregation = t.index + 1
    values = t.mi[est]
    for k in range(W):
        for c, (side, what) in enumerate((("xz", "I(X;Z)"), ("zy", "I(Z;Y)"))):
            ax = axes[k, c]
            for model in MODELS:
                y = values[f"{side}_{model}"][:, k]
                ok = ~np.isnan(y)  # rounds skipped by mi.every or not estimated yet
                ax.plot(aggregation[ok], y[ok], color=_MODEL_COLOR[model], label=f"{model} model",
                        markersize=4, **_MODEL_STYLE[model])
            ax.set_title(f"worker {k} (local dataset {k}): {what}")
            ax.set_ylabel(f"{what} [nats]")
            ax.set_xlabel("aggregation (sync point)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"Mutual information ({_est_label(t, est)}), X left, Y right\n{_title(t)}")
    return fig


def _accuracy_figure(t: Trace):
    """Accuracy and loss vs local step: local models on own shard, averaged on each shard, test."""
    import matplotlib
    fig, axes = _figure(1, 2, 12, 4.6)
    colors = matplotlib.colormaps["tab10"]
    for c, (kind, ylabel) in enumerate((("acc", "accuracy"), ("loss", "cross-entropy loss [nats]"))):
        ax = axes[0, c]
        test = t.metrics.get(f"test_{kind}")
        if test is not None:
            ax.plot(t.step, test, color="black", linewidth=2.2, marker="D", markersize=4,
                    label="averaged model, test set")
        for k in range(t.num_workers):
            color = colors(k % 10)
            for model in MODELS:
                values = t.metrics.get(f"{model}_{kind}")
                if values is not None:
                    ax.plot(t.step, values[:, k], color=color, markersize=3,
                            label=f"{model} model, shard {k}", **_MODEL_STYLE[model])
        ax.set_xlabel("local step (batches per worker)")
        ax.set_ylabel(ylabel)
        ax.set_title(ylabel.split(" [")[0])
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    fig.suptitle(f"Accuracy and loss (local: before averaging)\n{_title(t)}")
    return fig


def _infoplane_figure(t: Trace, est: str):
    """Information plane: I(X;Z) vs I(Z;Y) per worker, coloured by aggregation, marker = model."""
    import matplotlib
    import numpy as np
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator
    W = t.num_workers
    cols = min(W, 3)
    rows = -(-W // cols)
    fig, axes = _figure(rows, cols, 5.2 * cols + 1, 4.4 * rows + 0.8)
    aggregation = t.index + 1
    norm = matplotlib.colors.Normalize(vmin=1, vmax=max(int(aggregation[-1]), 2))
    cmap = matplotlib.colormaps["viridis"]
    values = t.mi[est]
    for k in range(rows * cols):
        ax = axes[k // cols, k % cols]
        if k >= W:
            ax.set_visible(False)
            continue
        for model in MODELS:
            x, y = values[f"xz_{model}"][:, k], values[f"zy_{model}"][:, k]
            ok = ~(np.isnan(x) | np.isnan(y))
            ax.plot(x[ok], y[ok], color="grey", linewidth=0.7, alpha=0.5,
                    linestyle=_MODEL_STYLE[model]["linestyle"])
            ax.scatter(x[ok], y[ok], c=aggregation[ok], cmap=cmap, norm=norm, s=36,
                       marker=_MODEL_STYLE[model]["marker"], edgecolors="black", linewidths=0.4)
        ax.set_xlabel("I(X;Z) [nats]")
        ax.set_ylabel("I(Z;Y) [nats]")
        ax.set_title(f"worker {k} (local dataset {k})")
        ax.grid(alpha=0.3)
        ax.legend(handles=[Line2D([], [], color="grey", markerfacecolor="white", markeredgecolor="black",
                                  label=f"{model} model", **_MODEL_STYLE[model]) for model in MODELS],
                  loc="best", fontsize="small")
    bar = fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes,
                       label="aggregation (sync point)")
    bar.locator = MaxNLocator(integer=True)
    bar.update_ticks()
    fig.suptitle(f"Information plane ({_est_label(t, est)})\n{_title(t)}")
    return fig


# ---------------------------------------------------------------- MI re-estimation

def _estimator_params(name: str, assignments: Sequence[str]):
    """Validated parameters for estimator `name` from KEY=VALUE strings (values are YAML)."""
    import typing

    import yaml

    from fedmpi import info
    if name not in info.ESTIMATORS:
        raise UsageError(f"unknown MI estimator {name!r}; choose one of {', '.join(info.ESTIMATORS)}")
    hints = typing.get_type_hints(info.PARAMS[name])
    overrides = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"--param takes KEY=VALUE, got {assignment!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError:
            value = text
        if hints.get(key) is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            with contextlib.suppress(ValueError):  # YAML reads 1e-3 and inf as strings
                value = float(value)
        overrides[key] = value
    try:
        return info.resolve_params(name, **overrides)
    except ValueError as exc:
        raise UsageError(f"--param: {exc}") from None
    except TypeError as exc:
        raise UsageError(f"--param: bad value for {name}: {exc}") from None


def analysis_name(name: str, params) -> str:
    """`<estimator>-<8 hex digits>`: the group name under /analysis/mi for these parameters."""
    import hashlib
    import json
    text = json.dumps(_plain(params), sort_keys=True)
    return f"{name}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _plain(params) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(params).items()}


def reestimate(f, name: str, params, path: str) -> dict:
    """I(X;Z) and I(Z;Y) for every complete round and worker from an open trace: key -> (R, W) nats.

    Mirrors the run (fedmpi.measure): X is worker k's flattened probe inputs,
    prepared once per worker; Z is its probe's representation as float64.
    """
    import numpy as np

    from fedmpi import info
    from fedmpi.trace import MI_KEYS
    needed = ("activations/local", "activations/averaged", "probe/inputs", "probe/labels")
    if not all(n in f for n in needed):
        raise UsageError(f"{path} has no logged activations (the run had trace.activations: false), so MI "
                         "cannot be re-estimated from it; re-run with --set trace.activations=true")
    with _h5_errors(path):
        R = len(_dataset(f, "rounds/step", path))
        probe_x = f["probe/inputs"][:]  # (W, P, C, H, W) float32
        probe_y = f["probe/labels"][:]  # (W, P) int64
    W, P = probe_y.shape
    flat_x = probe_x.reshape(W, P, -1)
    try:
        prepared = [info.prepare(name, flat_x[k], params) for k in range(W)]
    except ValueError as exc:
        raise UsageError(f"{name} cannot estimate on {path}: {exc}") from None
    out = {key: np.full((R, W), np.nan) for key in MI_KEYS}
    for r in range(R):
        with _h5_errors(path):
            z = {model: f[f"activations/{model}"][r] for model in MODELS}  # (W, P, D) float32 each
        for k in range(W):
            for model in MODELS:
                zk = z[model][k].astype(np.float64)
                out[f"xz_{model}"][r, k] = info.estimate(name, prepared[k], zk, params)
                out[f"zy_{model}"][r, k] = info.estimate(name, zk, probe_y[k], params)
    return out


def _reestimate_all(traces: Sequence[Trace], name: str, params, write: bool, overwrite: bool, out) -> None:
    import datetime

    import fedmpi
    group_name = f"{ANALYSIS_GROUP}/{analysis_name(name, params)}"
    for t in traces:
        if not t.has_activations:
            raise UsageError(f"{t.path} has no logged activations (the run had trace.activations: false), so "
                             "MI cannot be re-estimated from it; re-run with --set trace.activations=true")
    if write:  # fail before any estimate is computed
        for t in traces:
            with _opened(t.path, write=True) as f:
                if group_name in f and not overwrite:
                    raise UsageError(f"{t.path} already has /{group_name} (same estimator and parameters); "
                                     "pass --overwrite to replace it")
    for t in traces:
        with _opened(t.path, write=write) as f:
            values = reestimate(f, name, params, t.path)
            _print_estimates(t, name, params, values, out)
            if write:
                with _h5_errors(t.path):
                    if group_name in f:
                        del f[group_name]  # --overwrite: only this analysis group is replaced
                    group = f.create_group(group_name)
                    group.attrs.update(_plain(params))
                    group.attrs.update(
                        estimator=name, units="nats", rounds=t.rounds, fedmpi_version=fedmpi.__version__,
                        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
                    for key, data in values.items():
                        group.create_dataset(key, data=data)
                out.print(f"wrote /{group_name} to {t.path}")


def _print_estimates(t: Trace, name: str, params, values: dict, out) -> None:
    from rich.table import Table
    settings = ", ".join(f"{k}={v}" for k, v in _plain(params).items())
    table = Table(title=f"{t.path}: {name} ({settings}), nats")
    for col in ("aggregation", "step", "worker", "I(X;Z) local", "I(X;Z) averaged", "I(Z;Y) local",
                "I(Z;Y) averaged"):
        table.add_column(col, justify="right")
    for r in range(t.rounds):
        for k in range(t.num_workers):
            table.add_row(str(int(t.index[r]) + 1) if k == 0 else "", str(int(t.step[r])) if k == 0 else "",
                          str(k), *(_fmt(values[key][r, k]) for key in ("xz_local", "xz_averaged", "zy_local",
                                                                         "zy_averaged")))
    out.print(table)
