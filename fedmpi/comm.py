"""The one module that talks MPI.

Rank 0 is the coordinator, ranks 1..W the workers. Each method below that
moves data is a collective: every rank calls it, in the same order, with
buffers of the same shape. It only moves buffers; what they hold and what is
done with them is fedmpi.protocol's and the algorithm's business. Waits are non-blocking collectives polled with a
growing sleep, because a rank blocked in MPICH's `Allreduce` busy-polls a whole
core (measured here: ~100% CPU), which on a shared node takes that core from a
worker. Importing this module starts nothing; `Comm()` initialises MPI.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from typing import Callable, TypeVar

import numpy as np

COORDINATOR = 0
# Sleeping poll: start short so a sync that is ready costs little latency,
# back off to at most this many seconds so a long wait costs ~no CPU.
_POLL_MAX_S = 0.002
_POLL_MIN_S = 0.00002
ABORT_GRACE_S = 1.0  # pause between the failing rank's message and the abort, for stderr to be forwarded

T = TypeVar("T")


class Comm:
    """World communicator with fedmpi's roles and sync points."""

    def __init__(self) -> None:
        from mpi4py import MPI  # initialises MPI: only when a run really starts
        self._MPI = MPI
        self._comm = MPI.COMM_WORLD
        self.rank: int = self._comm.Get_rank()
        self.world_size: int = self._comm.Get_size()
        # What this rank sent and received since the last report: protocol.COMM_COUNTS
        # (collectives joined, bytes up, bytes down, diagnostic bytes up). Counted from the
        # buffers each collective moves (pickled size for objects), from this rank's side.
        self.counts = np.zeros(4, dtype=np.int64)
        # Collective over all ranks, so done here, once, where every rank passes.
        self.node_worker_index, self.node_workers = self._node_placement()
        # Work this rank does while it waits in a collective (the coordinator writes finished
        # measurements to the trace there, so rows appear while the workers train on).
        self.idle: Callable[[], None] | None = None

    # ------------------------------------------------------------ roles
    @property
    def is_coordinator(self) -> bool:
        return self.rank == COORDINATOR

    @property
    def num_workers(self) -> int:
        return self.world_size - 1

    @property
    def worker_index(self) -> int:
        """0-based worker index (rank - 1); -1 on the coordinator."""
        return self.rank - 1

    def _node_placement(self) -> tuple[int, int]:
        """(this worker's index among the workers on its node, number of workers on the node).

        Uses the shared-memory split (MPI_COMM_TYPE_SHARED), so it follows the
        real placement of ranks on nodes, whatever the launcher.
        """
        node = self._comm.Split_type(self._MPI.COMM_TYPE_SHARED, key=self.rank)
        ranks = node.allgather(self.rank)
        node.Free()
        self._count(_pickled(self.rank), sum(_pickled(r) for r in ranks if r != self.rank))
        workers = sorted(r for r in ranks if r != COORDINATOR)
        return (workers.index(self.rank) if self.rank in workers else -1), len(workers)

    # ------------------------------------------------------------ waits
    def _wait(self, request) -> None:
        delay = _POLL_MIN_S
        while not request.Test():
            if self.idle is not None:
                self.idle()
            time.sleep(delay)
            delay = min(2 * delay, _POLL_MAX_S)

    def _settle(self) -> None:
        """Collective: wait, sleeping between polls, until every rank has arrived. Called before
        each blocking object collective, where one side can wait long (the workers for the
        coordinator's preflight or its reading of a checkpoint, the coordinator for the workers'
        data): MPICH spins in a blocking call, and a spinning rank takes the core a rank still at
        work needs."""
        self._wait(self._comm.Ibarrier())
        self._count(0, 0)

    # ------------------------------------------------------------ sync points
    def agree(self, fn: Callable[[], T]) -> T:
        """Collective: run `fn` on the coordinator only and give every rank its result.

        If `fn` raises a UsageError on the coordinator, every rank raises it, so a
        bad data root or output path ends the job cleanly everywhere.
        """
        from fedmpi.errors import UsageError
        outcome: tuple[str, object] = ("ok", None)
        if self.is_coordinator:
            try:
                outcome = ("ok", fn())
            except UsageError as exc:
                outcome = ("usage", str(exc))
        self._settle()
        kind, value = self._comm.bcast(outcome, root=COORDINATOR)
        self._count(0, 0 if self.is_coordinator else _pickled((kind, value)))
        if kind == "usage":
            raise UsageError(value)
        return value

    def gather_probes(self, x_buf: np.ndarray, y_buf: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Collective, once at start: each worker's probe inputs (probe_size, C, H, W) float32 and
        labels (probe_size,) int64.

        The coordinator passes zero buffers of the same shape and gets them
        stacked, (W, probe_size, ...); workers get None.
        """
        xs = self._gather(x_buf)
        ys = self._gather(y_buf)
        return (xs, ys) if self.is_coordinator else None

    def allreduce_sum(self, send_buf: np.ndarray, recv_buf: np.ndarray) -> None:
        """Collective: recv_buf <- the elementwise sum over ranks of send_buf (same shape on every rank)."""
        self._wait(self._comm.Iallreduce(send_buf, recv_buf, op=self._MPI.SUM))
        self._count(send_buf.nbytes, recv_buf.nbytes)

    def gather(self, buf: np.ndarray, diagnostic: bool = False) -> np.ndarray | None:
        """Collective: every worker's buf, stacked (W, ...) on the coordinator; None on workers.

        The coordinator passes a buffer of the same shape, which is left out.
        `diagnostic` counts the bytes apart (traffic a measurement adds, not the algorithm)."""
        return self._gather(buf, diagnostic)

    def allgather(self, buf: np.ndarray) -> np.ndarray:
        """Collective: every rank's buf, stacked (world_size, ...) in rank order (the
        coordinator's first), on every rank."""
        recv = np.empty((self.world_size,) + buf.shape, dtype=buf.dtype)
        self._wait(self._comm.Iallgather(buf, recv))
        self._count(buf.nbytes, (self.world_size - 1) * buf.nbytes)
        return recv

    def bcast(self, buf: np.ndarray) -> None:
        """Collective: every rank's buf <- the coordinator's, in place."""
        self._wait(self._comm.Ibcast(buf, root=COORDINATOR))
        self._count(0, 0 if self.is_coordinator else buf.nbytes)

    def report(self, metrics_buf: np.ndarray, bounds_buf: np.ndarray,
               z_buf: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Collective, each logged round: workers' metrics (len(METRICS),) and bounds
        (len(BOUNDS),) float64, when due Z (2, probe_size, D) float32 under the local
        and the averaged model, and last each worker's `counts` (len(COMM_COUNTS),) int64
        since its previous report, this report included; the counts then restart from 0.

        The coordinator passes zero buffers and gets them stacked, (W, ...).
        """
        metrics = self._gather(metrics_buf)
        bounds = self._gather(bounds_buf)
        z = self._gather(z_buf) if z_buf is not None else None
        self._count(self.counts.nbytes, 0)  # the counts' own message, counted before it is sent
        counts = self._gather(self.counts, counted=False)
        self.counts[:] = 0
        return metrics, bounds, z, counts

    def collect(self, obj: object) -> list | None:
        """Collective, at checkpoints: each worker's state (small, pickled) to the coordinator."""
        self._settle()
        gathered = self._comm.gather(obj, root=COORDINATOR)
        self._count(0 if self.is_coordinator else _pickled(obj), 0)
        return gathered[1:] if self.is_coordinator else None

    def distribute(self, objs: list | None) -> object:
        """Collective, on resume: the coordinator hands worker k objs[k]; it gets None itself."""
        self._settle()
        mine = self._comm.scatter([None] + list(objs) if self.is_coordinator else None, root=COORDINATOR)
        self._count(0, _pickled(mine) if not self.is_coordinator else 0)
        return mine

    def placement(self) -> list[tuple[int, str, int]] | None:
        """Collective, at start: (rank, host, pid) of every rank, on the coordinator.

        Printed and stored, so that a launcher's message about a dead PID can be
        traced back to a rank."""
        import socket
        mine = (self.rank, socket.gethostname(), os.getpid())
        self._settle()
        gathered = self._comm.gather(mine, root=COORDINATOR)
        self._count(0 if self.is_coordinator else _pickled(mine), 0)
        return gathered if self.is_coordinator else None

    def _gather(self, buf: np.ndarray, diagnostic: bool = False, counted: bool = True) -> np.ndarray | None:
        recv = np.empty((self.world_size,) + buf.shape, dtype=buf.dtype) if self.is_coordinator else None
        self._wait(self._comm.Igather(buf, recv, root=COORDINATOR))
        if counted:
            self._count(0 if self.is_coordinator else buf.nbytes, 0, diagnostic)
        return recv[1:] if self.is_coordinator else None

    def _count(self, up: int, down: int, diagnostic: bool = False) -> None:
        self.counts[0] += 1
        self.counts[3 if diagnostic else 1] += up
        self.counts[2] += down

    # ------------------------------------------------------------ failure
    def abort(self, code: int = 1) -> None:
        self._comm.Abort(code)


def _pickled(obj: object) -> int:
    """Bytes of `obj` as mpi4py sends it (pickle, highest protocol)."""
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def run_or_abort(comm: Comm, fn: Callable[[], T]) -> T:
    """Run this rank's role; if it raises, print why and abort every rank.

    Without the abort the other ranks would wait forever in their next sync
    point. A UsageError here was seen by this rank alone, so it aborts too,
    with its one line instead of a traceback.
    """
    from fedmpi.errors import UsageError
    try:
        return fn()
    except BaseException as exc:  # noqa: BLE001 - anything, KeyboardInterrupt too, must end the job
        role = "coordinator" if comm.is_coordinator else f"worker {comm.worker_index + 1}"
        if isinstance(exc, UsageError):
            text, code = f"fedmpi: error on rank {comm.rank} ({role}): {exc}\n", 2
        else:
            lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
            text, code = f"fedmpi: rank {comm.rank} ({role}) failed; aborting the job\n" + "".join(lines), 1
        sys.stderr.write(text)
        sys.stderr.flush()
        # The launcher forwards each rank's stderr through a pipe and kills every rank as soon as
        # the abort reaches it; a moment's pause lets the message out first (MPICH's hydra lost it
        # under load without one).
        time.sleep(ABORT_GRACE_S)
        comm.abort(code)
        raise
