"""The HDF5 trace: its schema, its one writer and its readers (schema: docs/trace-format.md).

Only the coordinator writes a trace (`TraceWriter`); `fedmpi analyze` and
users read it (`open_trace`, `load_trace`, `opened`). Every dataset that
grows per logged round has the row as its first axis, is chunked one row per
chunk, and is created before the file switches to SWMR mode, so a reader can
open the trace while the run writes it. Each row is flushed when written,
and `/rounds/*` is extended last, so `len(/rounds/step)` always counts
complete rows, also in a trace cut off by a crash. New analyses add groups
(`/analysis/...`, written through `write_analysis`); they never change the
meaning of an existing dataset. This module imports neither torch nor MPI.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import re
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

import fedmpi
from fedmpi.errors import UsageError
from fedmpi.compressed import DIAGNOSTICS
from fedmpi.h5chunk import ChunkRows
from fedmpi.protocol import BOUNDS, COMM_COUNTS, METRICS

# 2: /bounds, /mi/<estimator>/<key>_se and /mi/<estimator>/failure, `what_*` attributes.
# 3: /comm (communication counts per worker, the compressor and its distortion).
# Optional in 3 (written since data.augment and sync.unit came; absent in older traces):
# /clients/label_counts (C, K) and /clients/steps (R, C); since sync.policy: /sync (the check point
# of each row and the policy's state; absent: periodic, every check point a sync point).
# Readers take every version up to this one; what an older trace lacks reads as absent.
SCHEMA_VERSION = 3
MODELS = ("local", "averaged")  # the two models a trace follows per worker: its own, and the global one
MI_KEYS = ("xz_local", "zy_local", "xz_averaged", "zy_averaged")
DIVERGENCE = ("relative", "drift_diversity")  # /divergence/<name> [R, L], trace.divergence
MI_SE_KEYS = tuple(f"{key}_se" for key in MI_KEYS)  # standard errors (NaN: the estimator has none)
FAILURE_LENGTH = 400  # bytes kept of the reason an estimate failed (/mi/<estimator>/failure)
ANALYSIS_GROUP = "analysis/mi"  # re-estimates written by `analyze --write` live here, never under /mi
# Per-row metrics in the order readers list them; names this version does not know follow, by name.
METRIC_ORDER = ("test_acc", "test_loss") + METRICS + ("coordinator_cpu_seconds", "row_latency_seconds")
# Probe inputs and activations: gzip at level 1 without the byte shuffle. Both hold few distinct
# values (normalised 8-bit pixels; ReLU zeros), which whole 4-byte words repeat and the shuffle
# hides: on the default job's probe, 0.23 s and 9.2 MB against 0.56 s and 18.8 MB at level 4 with
# the shuffle; a row of activations 9 ms and 0.32 MB against 21 ms and 0.36 MB. Activation rows are
# compressed before HDF5 sees them (fedmpi.h5chunk: ISA-L's deflate, the same format).
_GZIP = {"compression": "gzip", "compression_opts": 1, "shuffle": False}
# Every numeric dataset carries a Fletcher-32 checksum per chunk, so a damaged copy fails when
# read instead of giving wrong numbers (HDF5 checksums its own metadata already).
_CHECKED = {"fletcher32": True}
_ROUNDS = (("index", np.int64), ("step", np.int64), ("epoch", np.float64), ("time", np.float64))
# A reader of a trace that a writer holds (or held, and crashed) retries metadata whose checksum
# fails, since the writer may be changing it. HDF5's default is 100 attempts with growing sleeps:
# minutes on a damaged copy. 20 still rides out a live writer and fails a damaged file in ms.
_SWMR_READ_ATTEMPTS = 20


def open_trace(path: str) -> h5py.File:
    """Open a trace for reading, also while it is written or after its writer crashed.

    A file no writer holds opens plainly, so a damaged one fails at once. One
    flagged as open for writing (a run going, or one that crashed) is opened
    in SWMR mode with bounded metadata read attempts.
    """
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        if "already open for write" not in str(exc):
            raise
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    _bound_read_attempts(fapl)
    fid = h5py.h5f.open(os.fsencode(path), h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ, fapl=fapl)
    return h5py.File(fid)


def _bound_read_attempts(fapl) -> None:
    """H5Pset_metadata_read_attempts on the HDF5 library h5py runs on (h5py does not wrap it).

    Found through the process's own memory map, so it is the very library h5py
    loaded; where it cannot be found (not Linux), HDF5's default stays."""
    lib = _hdf5_library()
    if lib is not None:
        lib.H5Pset_metadata_read_attempts(fapl.id, _SWMR_READ_ATTEMPTS)


_HDF5: list = []


def _hdf5_library():
    if not _HDF5:
        lib = None
        try:
            with open("/proc/self/maps", encoding="utf-8") as fh:
                paths = {line.split()[-1] for line in fh if re.search(r"/libhdf5[-.][^/]*$", line.strip())}
            for path in sorted(paths):
                candidate = ctypes.CDLL(path)
                if hasattr(candidate, "H5Pset_metadata_read_attempts"):
                    candidate.H5Pset_metadata_read_attempts.argtypes = [ctypes.c_int64, ctypes.c_uint]
                    lib = candidate
                    break
        except OSError:
            pass
        _HDF5.append(lib)
    return _HDF5[0]


class TraceWriter:
    def __init__(self, path: str, *, config_yaml: str, job: str, world_size: int,
                 num_examples: tuple[int, ...], metric_names: tuple[str, ...],
                 layout: Mapping[str, np.ndarray], probe_indices: np.ndarray, probe_labels: np.ndarray,
                 probe_inputs: np.ndarray | None, representation_dim: int, activations: bool,
                 mi_params: Mapping[str, Mapping[str, object]], client_owner: np.ndarray,
                 clients_per_round: int, comm_attrs: Mapping[str, object] | None = None,
                 divergence_layers: int = 0, label_counts: np.ndarray | None = None,
                 sync_keys: tuple[str, ...] = (), sync_attrs: Mapping[str, object] | None = None):
        num_workers = len(num_examples)
        probe_size = probe_labels.shape[1]
        self.path = path
        self.metric_names = metric_names
        self.f = f = h5py.File(path, "w", libver="latest")
        f.attrs.update(schema_version=SCHEMA_VERSION, fedmpi_version=fedmpi.__version__, config=config_yaml,
                       job=job, world_size=world_size, num_workers=num_workers, status="running",
                       created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       training_started=time.time())
        f.create_dataset("workers/num_examples", data=np.asarray(num_examples, dtype=np.int64), **_CHECKED)
        model = f.create_group("model")
        model.attrs.update(representation_dim=representation_dim, num_params=int(layout["sizes"].sum()))
        model.create_dataset("layout/names", data=layout["names"].astype(h5py.string_dtype()))
        model.create_dataset("layout/offsets", data=layout["offsets"], **_CHECKED)
        model.create_dataset("layout/sizes", data=layout["sizes"], **_CHECKED)
        f.create_dataset("clients/owner", data=np.asarray(client_owner, dtype=np.int64), **_CHECKED)
        if label_counts is not None:  # (C, K): each client's training examples per label
            f.create_dataset("clients/label_counts", data=np.asarray(label_counts, dtype=np.int64), **_CHECKED)
        f.create_dataset("probe/indices", data=probe_indices.astype(np.int64), **_CHECKED)
        f.create_dataset("probe/labels", data=probe_labels.astype(np.int64), **_CHECKED)
        if probe_inputs is not None:
            f.create_dataset("probe/inputs", data=probe_inputs.astype(np.float32), **_GZIP, **_CHECKED,
                             chunks=(1,) + probe_inputs.shape[1:])

        W = num_workers

        def per_round(name: str, shape: tuple[int, ...], dtype, **kw) -> None:
            f.create_dataset(name, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype, **_CHECKED,
                             chunks=(1,) + shape if shape else (256,), **kw)

        per_round("metrics/test_acc", (), np.float64)
        per_round("metrics/test_loss", (), np.float64)
        per_round("metrics/test_examples", (), np.int64)  # test examples behind test_acc, test_loss
        per_round("timing/coordinator_cpu_seconds", (), np.float64)
        per_round("timing/row_latency_seconds", (), np.float64)
        per_round("clients/sampled", (clients_per_round,), np.int64)
        per_round("clients/steps", (len(client_owner),), np.int64)  # local steps of each client so far
        for name in metric_names:
            per_round(f"{_group(name)}/{name}", (W,), np.float64)
        for name in BOUNDS:
            per_round(f"bounds/{name}", (W,), np.float64, fillvalue=np.nan)
        f.create_group("comm").attrs.update(dict(comm_attrs or {}))
        for name in COMM_COUNTS:
            per_round(f"comm/{name}", (W,), np.int64)
        for name in DIAGNOSTICS:
            per_round(f"comm/{name}", (), np.float64, fillvalue=np.nan)
        # The sync policy (fedmpi.sync): the check point of each row's sync point and the policy's state.
        f.create_group("sync").attrs.update(dict(sync_attrs or {}))
        per_round("sync/check_index", (), np.int64)
        for name in sync_keys:
            per_round(f"sync/{name}", (), np.float64, fillvalue=np.nan)
        if divergence_layers:  # trace.divergence: per tensor of /model/layout, in its order
            for name in DIVERGENCE:
                per_round(f"divergence/{name}", (divergence_layers,), np.float64, fillvalue=np.nan)
        if activations:
            for which in ("local", "averaged"):
                per_round(f"activations/{which}", (W, probe_size, representation_dim), np.float32, **_GZIP)
        for est, params in mi_params.items():
            group = f.create_group(f"mi/{est}")
            group.attrs.update({k: v for k, v in params.items()})
            group.attrs["units"] = "nats"
            for key in MI_KEYS + MI_SE_KEYS:
                per_round(f"mi/{est}/{key}", (W,), np.float64, fillvalue=np.nan)
            per_round(f"mi/{est}/failure", (), f"S{FAILURE_LENGTH}")  # empty, or why this row's values are NaN
        # The /rounds datasets come last: their length is the number of complete rows.
        for name, dtype in _ROUNDS:
            per_round(f"rounds/{name}", (), dtype)
        self._attach(rows=0)

    @classmethod
    def reopen(cls, path: str, rows: int, metric_names: tuple[str, ...]) -> "TraceWriter":
        """Continue writing a trace from a checkpoint: rows past `rows` are dropped,
        since the resumed run writes them again."""
        self = cls.__new__(cls)
        self.path = path
        self.metric_names = metric_names
        try:
            self.f = h5py.File(path, "r+", libver="latest")
        except OSError:
            # A writer killed in SWMR mode leaves the file flagged as open; HDF5 then
            # refuses to write it. Copy its contents into a fresh file and use that.
            _copy_into_fresh_file(path)
            self.f = h5py.File(path, "r+", libver="latest")
        self.f.attrs["status"] = "running"
        self.f.attrs["resumed"] = int(self.f.attrs.get("resumed", 0)) + 1
        self.f.attrs["training_started"] = time.time()
        self._attach(rows)
        return self

    def _attach(self, rows: int) -> None:
        f = self.f
        grow: list[h5py.Dataset] = []
        f.visititems(lambda name, obj: grow.append(obj) if isinstance(obj, h5py.Dataset)
                     and obj.maxshape and obj.maxshape[0] is None and not name.startswith("analysis/") else None)
        # /rounds/* last: a row counts as complete once they are extended.
        self._rounds = [f[f"rounds/{name}"] for name, _ in _ROUNDS]
        self._grow = [ds for ds in grow if ds.name.split("/")[1] != "rounds"]
        for ds in self._grow + self._rounds:
            if ds.shape[0] > rows:
                ds.resize(rows, axis=0)
        # Written as chunks compressed here (fedmpi.h5chunk): a quarter of the time of HDF5's filter.
        self.activations = {w: ChunkRows(f[f"activations/{w}"]) for w in MODELS if f"activations/{w}" in f}
        self.mi = {(est, key): f[f"mi/{est}/{key}"] for est in f.get("mi", {})
                   for key in MI_KEYS + MI_SE_KEYS + ("failure",) if key in f[f"mi/{est}"]}
        self.bounds = {name: f[f"bounds/{name}"] for name in BOUNDS if f"bounds/{name}" in f}
        self.comm = {name: f[f"comm/{name}"] for name in COMM_COUNTS + DIAGNOSTICS if f"comm/{name}" in f}
        self.divergence = {name: f[f"divergence/{name}"] for name in DIVERGENCE if f"divergence/{name}" in f}
        self.sync = {name: f[f"sync/{name}"] for name in f.get("sync", {})}
        self.rows = rows
        f.swmr_mode = True  # from here on: no new objects, readers may attach

    def append(self, *, index: int, step: int, epoch: float, seconds: float, test_acc: float,
               test_loss: float, coordinator_cpu: float, sampled: np.ndarray, worker_metrics: np.ndarray,
               worker_bounds: np.ndarray, test_examples: int = 0, z: np.ndarray | None, latency: float,
               comm_counts: np.ndarray | None = None, comm_diagnostics: np.ndarray | None = None,
               divergence: tuple[np.ndarray, np.ndarray] | None = None,
               client_steps: np.ndarray | None = None, check_index: int | None = None,
               sync_state: Mapping[str, float] | None = None) -> int:
        """Write one logged round as the next row; worker_metrics (W, len(metric_names)),
        worker_bounds (W, len(BOUNDS)), z (W, 2, probe_size, D) under the local and the global model,
        comm_counts (W, len(COMM_COUNTS)) int64, comm_diagnostics (len(DIAGNOSTICS),) float64,
        divergence (relative (L,), drift_diversity (L,)) per tensor of the layout,
        client_steps (C,) int64 local steps each client has taken up to this round's sync point,
        check_index the check point of the sync point, sync_state the policy's state after it (its
        keys are the writer's sync_keys)."""
        f, r = self.f, self.rows
        for ds in self._grow:
            ds.resize(r + 1, axis=0)
        f["metrics/test_acc"][r] = test_acc
        f["metrics/test_loss"][r] = test_loss
        if "metrics/test_examples" in f:  # traces written before 2026-12-04 have none
            f["metrics/test_examples"][r] = test_examples
        f["timing/coordinator_cpu_seconds"][r] = coordinator_cpu
        f["timing/row_latency_seconds"][r] = latency
        f["clients/sampled"][r] = sampled
        if client_steps is not None and "clients/steps" in f:
            f["clients/steps"][r] = client_steps
        for m, name in enumerate(self.metric_names):
            f[f"{_group(name)}/{name}"][r] = worker_metrics[:, m]
        for b, name in enumerate(BOUNDS):
            if name in self.bounds:
                self.bounds[name][r] = worker_bounds[:, b]
        for values, names in ((comm_counts, COMM_COUNTS), (comm_diagnostics, DIAGNOSTICS)):
            if values is not None:
                for c, name in enumerate(names):
                    if name in self.comm:
                        self.comm[name][r] = values[..., c]
        if check_index is not None and "check_index" in self.sync:
            self.sync["check_index"][r] = check_index
        for name, value in (sync_state or {}).items():
            if name in self.sync and name != "check_index":
                self.sync[name][r] = value
        if divergence is not None:
            for name, values in zip(DIVERGENCE, divergence):
                if name in self.divergence:
                    self.divergence[name][r] = values
        if self.activations and z is not None:
            for m, which in enumerate(MODELS):  # z[:, m]: Z under that model
                self.activations[which].write(r, z[:, m])
        for ds, value in zip(self._rounds, (index, step, epoch, seconds)):
            ds.resize(r + 1, axis=0)
            ds[r] = value
        self.rows = r + 1
        f.flush()
        return r

    def write_mi(self, row: int, estimator: str, values: Mapping[str, np.ndarray], failure: str = "") -> None:
        """One row of an estimator: values holds MI_KEYS (and MI_SE_KEYS) -> (W,) nats;
        `failure` says why some of them are NaN."""
        for key in MI_KEYS + MI_SE_KEYS:
            if key in values and (estimator, key) in self.mi:
                self.mi[estimator, key][row] = values[key]
        if failure and (estimator, "failure") in self.mi:
            self.mi[estimator, "failure"][row] = failure.encode("utf-8", "replace")[:FAILURE_LENGTH]
        self.f.flush()

    def close(self, final_averaged: np.ndarray | None) -> None:
        """Finish the trace: store the final averaged parameters and mark it complete."""
        self.f.close()
        if final_averaged is None:
            return
        # SWMR forbids new objects and attribute changes, so finish in a short normal session.
        with h5py.File(self.path, "r+", libver="latest") as f:
            f.create_dataset("model/final_averaged", data=final_averaged.astype(np.float32), **_CHECKED)
            f.attrs["status"] = "complete"
            f.attrs["finished"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _copy_into_fresh_file(path: str) -> None:
    tmp = f"{path}.resume{os.getpid()}"
    with open_trace(path) as src, h5py.File(tmp, "w", libver="latest") as dst:
        dst.attrs.update(dict(src.attrs))
        for name in src:
            src.copy(src[name], dst, name=name)
    os.replace(tmp, path)


def _group(metric: str) -> str:
    return "timing" if metric.endswith("_seconds") else "metrics"


def check_writable(path: str, force: bool) -> None:
    """Refuse to clobber an existing trace and fail early on an unwritable folder."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path) and not force:
        raise UsageError(f"trace {path} already exists; pass --force to overwrite it or choose "
                         "another --out / trace.path")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create output folder {folder}: {exc.strerror}; choose another --out") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"output folder {folder} is not writable; choose another --out")


# ---------------------------------------------------------------- reading

@dataclass(frozen=True)
class Trace:
    """The per-row contents of one trace, cut to its R complete rows (logged rounds)."""

    path: str
    attrs: dict  # root attributes (job, status, created, ...)
    config: dict | None  # the resolved config as stored (see `setting`), None when it does not parse
    num_examples: Any  # (W,) int64 training examples per worker
    index: Any  # (R,) int64 0-based round index of each row
    step: Any  # (R,) int64 local batches per worker
    epoch: Any  # (R,) float64
    time: Any  # (R,) float64 wall seconds
    metrics: dict  # name -> (R,) or (R, W) float64, from /metrics and /timing
    mi: dict  # estimator (or "<estimator>-<hash>" for /analysis/mi) -> MI key -> (R, W) nats
    mi_params: dict  # same keys -> attributes of the MI group
    analysis: frozenset  # the keys of mi that come from /analysis/mi
    has_activations: bool
    # Schema 2 on (empty or NaN for older traces):
    mi_se: dict = None  # same keys as mi -> MI key -> (R, W) standard errors, NaN where none
    mi_failures: dict = None  # estimator -> {row: reason} for rows whose estimates failed
    bounds: dict = None  # BOUNDS name -> (R, W) nats (/bounds); {} when the trace has none
    # Schema 3 on ({} for older traces):
    comm: dict = None  # COMM_COUNTS name -> (R, W) int64; DIAGNOSTICS name -> (R,) float64 (/comm)
    comm_attrs: dict = None  # the compressor: name, its parameters, message and payload bytes
    divergence: dict = None  # DIVERGENCE name -> (R, L) per tensor of the layout ({} without trace.divergence)
    layers: tuple = ()  # the layout's tensor names (/model/layout/names)
    # Optional (None for traces written before them):
    client_owner: Any = None  # (C,) int64 the worker of each client
    label_counts: Any = None  # (C, K) int64 each client's training examples per label
    client_steps: Any = None  # (R, C) int64 local steps each client took up to each row's sync point
    test_examples: Any = None  # (R,) int64 test examples behind each row's test_acc (data.test_subset)
    # /sync ({} for traces written before sync.policy: periodic sync, each check point a sync point):
    sync: dict = None  # "check_index" -> (R,) int64; each key of the policy's state -> (R,) float64
    sync_attrs: dict = None  # the policy's name ("policy") and parameters, check_every, unit, num_checks

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
    """Everything per row of one trace, cut to its complete rows (UsageError for bad files)."""
    with opened(path) as f, h5_errors(path):
        return _read(f, path)


@contextlib.contextmanager
def opened(path: str, write: bool = False) -> Iterator[h5py.File]:
    """Open a trace (to read, or 'r+' to add analyses) after checking it is a readable fedmpi
    trace; bad files raise UsageError with one line saying what is wrong."""
    if not os.path.exists(path):
        raise UsageError(f"trace {path} does not exist")
    if os.path.isdir(path):
        raise UsageError(f"{path} is a folder; give a trace file (.h5)")
    if not h5py.is_hdf5(path):
        raise UsageError(f"{path} is not an HDF5 file, so not a fedmpi trace")
    # A plain open checks the stored end of file, so a truncated copy fails here; a
    # trace being written (or left by a crashed writer) opens in SWMR mode instead
    # (open_trace), and is checked as it is read.
    try:
        f = h5py.File(path, "r+", libver="latest") if write else open_trace(path)
    except OSError as exc:
        if write and "already open for write" in str(exc):
            raise UsageError(f"cannot write to {path}: it is open for writing, by a run still going or by "
                             "one that crashed (then `h5clear -s FILE` clears the flag); wait for the run "
                             "to finish") from None
        raise UsageError(f"cannot open trace {path}{' for writing' if write else ''}: {_why(exc)}") from None
    try:
        with h5_errors(path):
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
def h5_errors(path: str) -> Iterator[None]:
    """Turn HDF5 read failures (truncated or corrupt files) into one-line UsageErrors.

    h5py reports damaged metadata as OSError, RuntimeError or, when an object
    listed in its group cannot be opened, KeyError."""
    try:
        yield
    except (OSError, RuntimeError, KeyError) as exc:
        raise UsageError(f"cannot read trace {path}: it is truncated or corrupt ({_why(exc)})") from None


def _why(exc: BaseException) -> str:
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    text = str(message).strip().splitlines()[0] if str(message).strip() else type(exc).__name__
    # h5py wraps HDF5's reason in "Unable to ... (reason)"; the reason is the useful part.
    if text.endswith(")") and "(" in text:
        text = text[text.index("(") + 1:-1]
    if "filter returned failure during read" in text:
        return "a data checksum does not match (filter returned failure during read)"
    if "unable to lock file" in text:
        return "the file is locked by another process (a run closing it?); try again in a moment"
    truncated = re.match(r"truncated file: eof = (\d+).*stored_eof = (\d+)", text)
    if truncated:
        text = (f"the file is truncated, {truncated[1]} of {truncated[2]} bytes (an incomplete copy or "
                "download?)")
    return text


def dataset(f, name: str, path: str):
    if name not in f:
        raise UsageError(f"{path} is not a complete fedmpi trace: it has no /{name}")
    return f[name]


def _rows(ds, R: int):
    """The first R rows of a per-row dataset as float64/int64; NaN rows pad a shorter one."""
    data = ds[:R]
    if len(data) < R:  # only an analysis group written before more rounds came could be shorter
        pad = np.full((R - len(data),) + data.shape[1:], np.nan)
        data = np.concatenate([data.astype(np.float64), pad])
    return data


def _read(f, path: str) -> Trace:
    R = len(dataset(f, "rounds/step", path))
    attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items()}
    found = {}
    for group in ("metrics", "timing"):
        if group in f:
            for name in f[group]:  # f[group][name], not .items(): that yields None for a damaged object
                found[name] = _rows(f[group][name], R).astype(np.float64)
    order = {name: i for i, name in enumerate(METRIC_ORDER)}
    metrics = {name: found[name] for name in sorted(found, key=lambda n: (order.get(n, len(order)), n))}
    for name in ("test_acc", "local_acc", "averaged_acc"):
        if name not in metrics:
            raise UsageError(f"{path} is not a complete fedmpi trace: it has no /metrics/{name}")
    mi, mi_se, failures, mi_params, analysis = {}, {}, {}, {}, set()
    for group_name, prefix in (("mi", ""), (ANALYSIS_GROUP, "analysis")):
        if group_name not in f:
            continue
        for est in f[group_name]:
            group = f[group_name][est]
            if not all(key in group for key in MI_KEYS):
                continue
            mi[est] = {key: _rows(group[key], R).astype(np.float64) for key in MI_KEYS}
            mi_se[est] = {key: (_rows(group[f"{key}_se"], R).astype(np.float64) if f"{key}_se" in group
                                else np.full_like(mi[est][key], np.nan)) for key in MI_KEYS}
            if "failure" in group:
                failures[est] = {r: text.decode("utf-8", "replace") for r, text in enumerate(group["failure"][:R])
                                 if text}
            mi_params[est] = {k: _attr(v) for k, v in group.attrs.items()}
            if prefix:
                analysis.add(est)
    bounds = {name: _rows(f[f"bounds/{name}"], R).astype(np.float64) for name in BOUNDS if f"bounds/{name}" in f}
    comm = {name: _rows(f[f"comm/{name}"], R) for name in COMM_COUNTS + DIAGNOSTICS if f"comm/{name}" in f}
    comm_attrs = {k: _attr(v) for k, v in f["comm"].attrs.items()} if "comm" in f else {}
    div = {name: _rows(f[f"divergence/{name}"], R).astype(np.float64) for name in DIVERGENCE
           if f"divergence/{name}" in f}
    sync = {name: _rows(f["sync"][name], R) for name in f["sync"]} if "sync" in f else {}
    sync_attrs = {k: _attr(v) for k, v in f["sync"].attrs.items()} if "sync" in f else {}
    layers = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in f["model/layout/names"][:]) \
        if "model/layout/names" in f else ()
    return Trace(
        path=path, attrs=attrs, config=_parse_config(attrs.get("config")),
        num_examples=dataset(f, "workers/num_examples", path)[:],
        index=_rows(dataset(f, "rounds/index", path), R), step=_rows(f["rounds/step"], R),
        epoch=_rows(dataset(f, "rounds/epoch", path), R), time=_rows(dataset(f, "rounds/time", path), R),
        metrics=metrics, mi=mi, mi_params=mi_params, analysis=frozenset(analysis),
        mi_se=mi_se, mi_failures=failures, bounds=bounds, comm=comm, comm_attrs=comm_attrs,
        divergence=div, layers=layers,
        client_owner=f["clients/owner"][:] if "clients/owner" in f else None,
        label_counts=f["clients/label_counts"][:] if "clients/label_counts" in f else None,
        client_steps=_rows(f["clients/steps"], R) if "clients/steps" in f else None,
        test_examples=_rows(f["metrics/test_examples"], R) if "metrics/test_examples" in f else None,
        sync=sync, sync_attrs=sync_attrs,
        has_activations=all(n in f for n in ("activations/local", "activations/averaged", "probe/inputs",
                                             "probe/labels")))


def _attr(value):
    """An HDF5 attribute as a plain value: numpy scalars as Python scalars, arrays as lists."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value.item() if hasattr(value, "item") else value


def _parse_config(text) -> dict | None:
    """The trace's resolved config as a mapping (every key is there: the run stored it resolved);
    None if it does not parse. Read as YAML, not validated: a trace outlives the config code."""
    import yaml
    if not isinstance(text, str):
        return None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return raw if isinstance(raw, dict) else None


def setting(t: "Trace", key: str, missing: Any = None) -> Any:
    """One value of a trace's config by dotted key (`setting(t, "sync.every")`), or `missing`."""
    node: Any = t.config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
    return node


def read_probe(f, path: str) -> tuple[np.ndarray, np.ndarray]:
    """The logged probe: inputs (W, probe_size, C, H, W) float32 and labels (W, probe_size) int64."""
    needed = ("activations/local", "activations/averaged", "probe/inputs", "probe/labels")
    if not all(n in f for n in needed):
        raise UsageError(f"{path} has no logged activations (the run had trace.activations: false), so MI "
                         "cannot be re-estimated from it; re-run with --set trace.activations=true")
    with h5_errors(path):
        return f["probe/inputs"][:], f["probe/labels"][:]


def read_activations(f, path: str, row: int) -> dict[str, np.ndarray]:
    """Z of every worker's probe at one row: model -> (W, probe_size, D) float32."""
    with h5_errors(path):
        return {model: f[f"activations/{model}"][row] for model in MODELS}


def write_analysis(f, group_name: str, attrs: Mapping[str, Any], datasets: Mapping[str, np.ndarray]) -> None:
    """Store an analysis result as a new group of a trace opened with `opened(path, write=True)`;
    an existing group of that name is replaced. Nothing outside /analysis is touched."""
    if not group_name.startswith("analysis/"):
        raise ValueError(f"analysis results go under /analysis, not {group_name}")
    with h5_errors(f.filename):
        if group_name in f:
            del f[group_name]
        group = f.create_group(group_name)
        group.attrs.update(dict(attrs))
        group.attrs.update(fedmpi_version=fedmpi.__version__,
                           created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        for key, data in datasets.items():
            group.create_dataset(key, data=data)
