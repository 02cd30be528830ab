"""The HDF5 trace, written by the coordinator only (schema: docs/trace-format.md).

Every dataset that grows per logged sync point has the round as its first
axis, is chunked one round per chunk, and is created before the file switches
to SWMR mode, so a reader can open the trace while the run writes it
(`h5py.File(path, "r", swmr=True)`). Each round is flushed when written, and
`/rounds/*` is extended last, so `len(/rounds/step)` always counts complete
rounds, also in a trace cut off by a crash. New analyses add groups; they
never change the meaning of an existing dataset.
"""

from __future__ import annotations

import datetime
import os
from typing import Mapping

import h5py
import numpy as np

import fedmpi

SCHEMA_VERSION = 1
MI_KEYS = ("xz_local", "zy_local", "xz_averaged", "zy_averaged")
_GZIP = 4  # compression level: activations of ReLU layers compress well at low cost
_ROUNDS = (("index", np.int64), ("step", np.int64), ("epoch", np.float64), ("time", np.float64))


def open_trace(path: str) -> h5py.File:
    """Open a trace for reading, also while it is written or after its writer crashed."""
    return h5py.File(path, "r", swmr=True, libver="latest")


class TraceWriter:
    def __init__(self, path: str, *, config_yaml: str, job: str, world_size: int,
                 num_examples: tuple[int, ...], metric_names: tuple[str, ...],
                 layout: Mapping[str, np.ndarray], probe_indices: np.ndarray, probe_labels: np.ndarray,
                 probe_inputs: np.ndarray | None, representation_dim: int, activations: bool,
                 mi_params: Mapping[str, Mapping[str, object]], client_owner: np.ndarray,
                 clients_per_round: int):
        num_workers = len(num_examples)
        probe_size = probe_labels.shape[1]
        self.path = path
        self.metric_names = metric_names
        self.f = f = h5py.File(path, "w", libver="latest")
        f.attrs.update(schema_version=SCHEMA_VERSION, fedmpi_version=fedmpi.__version__, config=config_yaml,
                       job=job, world_size=world_size, num_workers=num_workers, status="running",
                       created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
        f.create_dataset("workers/num_examples", data=np.asarray(num_examples, dtype=np.int64))
        model = f.create_group("model")
        model.attrs.update(representation_dim=representation_dim, num_params=int(layout["sizes"].sum()))
        model.create_dataset("layout/names", data=layout["names"].astype(h5py.string_dtype()))
        model.create_dataset("layout/offsets", data=layout["offsets"])
        model.create_dataset("layout/sizes", data=layout["sizes"])
        f.create_dataset("clients/owner", data=np.asarray(client_owner, dtype=np.int64))
        f.create_dataset("probe/indices", data=probe_indices.astype(np.int64))
        f.create_dataset("probe/labels", data=probe_labels.astype(np.int64))
        if probe_inputs is not None:
            f.create_dataset("probe/inputs", data=probe_inputs.astype(np.float32), compression="gzip",
                             compression_opts=_GZIP, shuffle=True,
                             chunks=(1,) + probe_inputs.shape[1:])

        W = num_workers

        def per_round(name: str, shape: tuple[int, ...], dtype, **kw) -> None:
            f.create_dataset(name, shape=(0,) + shape, maxshape=(None,) + shape, dtype=dtype,
                             chunks=(1,) + shape if shape else (256,), **kw)

        per_round("metrics/test_acc", (), np.float64)
        per_round("metrics/test_loss", (), np.float64)
        per_round("timing/coordinator_cpu_seconds", (), np.float64)
        per_round("clients/sampled", (clients_per_round,), np.int64)
        for name in metric_names:
            per_round(f"{_group(name)}/{name}", (W,), np.float64)
        if activations:
            for which in ("local", "averaged"):
                per_round(f"activations/{which}", (W, probe_size, representation_dim), np.float32,
                          compression="gzip", compression_opts=_GZIP, shuffle=True)
        for est, params in mi_params.items():
            group = f.create_group(f"mi/{est}")
            group.attrs.update({k: v for k, v in params.items()})
            group.attrs["units"] = "nats"
            for key in MI_KEYS:
                per_round(f"mi/{est}/{key}", (W,), np.float64, fillvalue=np.nan)
        # The round datasets come last: their length is the number of complete rounds.
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
        self._attach(rows)
        return self

    def _attach(self, rows: int) -> None:
        f = self.f
        grow: list[h5py.Dataset] = []
        f.visititems(lambda name, obj: grow.append(obj) if isinstance(obj, h5py.Dataset)
                     and obj.maxshape and obj.maxshape[0] is None and not name.startswith("analysis/") else None)
        # /rounds/* last: a round counts as complete once they are extended.
        self._rounds = [f[f"rounds/{name}"] for name, _ in _ROUNDS]
        self._grow = [ds for ds in grow if ds.name.split("/")[1] != "rounds"]
        for ds in self._grow + self._rounds:
            if ds.shape[0] > rows:
                ds.resize(rows, axis=0)
        self.activations = {w: f[f"activations/{w}"] for w in ("local", "averaged") if f"activations/{w}" in f}
        self.mi = {(est, key): f[f"mi/{est}/{key}"] for est in f.get("mi", {}) for key in MI_KEYS}
        self.rows = rows
        f.swmr_mode = True  # from here on: no new objects, readers may attach

    def append(self, *, index: int, step: int, epoch: float, seconds: float, test_acc: float,
               test_loss: float, coordinator_cpu: float, sampled: np.ndarray, worker_metrics: np.ndarray,
               z: np.ndarray | None) -> int:
        """Write one logged round; worker_metrics (W, M) in metric_names order, z (W, 2, P, D)."""
        f, r = self.f, self.rows
        for ds in self._grow:
            ds.resize(r + 1, axis=0)
        f["metrics/test_acc"][r] = test_acc
        f["metrics/test_loss"][r] = test_loss
        f["timing/coordinator_cpu_seconds"][r] = coordinator_cpu
        f["clients/sampled"][r] = sampled
        for m, name in enumerate(self.metric_names):
            f[f"{_group(name)}/{name}"][r] = worker_metrics[:, m]
        if self.activations and z is not None:
            self.activations["local"][r] = z[:, 0]
            self.activations["averaged"][r] = z[:, 1]
        for ds, value in zip(self._rounds, (index, step, epoch, seconds)):
            ds.resize(r + 1, axis=0)
            ds[r] = value
        self.rows = r + 1
        f.flush()
        return r

    def write_mi(self, row: int, estimator: str, values: Mapping[str, np.ndarray]) -> None:
        for key in MI_KEYS:
            self.mi[estimator, key][row] = values[key]
        self.f.flush()

    def close(self, final_averaged: np.ndarray | None) -> None:
        """Finish the trace: store the final averaged parameters and mark it complete."""
        self.f.close()
        if final_averaged is None:
            return
        # SWMR forbids new objects and attribute changes, so finish in a short normal session.
        with h5py.File(self.path, "r+", libver="latest") as f:
            f.create_dataset("model/final_averaged", data=final_averaged.astype(np.float32))
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
    from fedmpi.errors import UsageError
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
