"""Mutual-information estimation on the coordinator, pipelined behind training.

For each due sync point and each worker k, with X_k its probe inputs, Y_k its
probe labels and Z the representation under the local or the averaged model,
it estimates I(X_k; Z) and I(Z; Y_k) (Adilova et al. 2019, Section 2) with
every configured estimator. Estimation of sync point r runs in a background
thread while the workers train towards r + 1; numpy and torch release the GIL
in their kernels, so the coordinator's main loop stays responsive. At most
`max_pending` rounds wait in the queue: when estimation falls behind, the
coordinator waits (and says so) rather than growing memory or dropping rounds.
The X side depends only on the fixed probe inputs, so it is prepared once.
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Mapping

import numpy as np

from fedmpi import info
from fedmpi.trace import MI_KEYS

_STOP = object()


class MIPipeline:
    def __init__(self, params: Mapping[str, object], probe_x: np.ndarray, probe_y: np.ndarray,
                 max_pending: int = 2):
        """params: estimator name -> parameter dataclass; probe_x (W, P, ...), probe_y (W, P)."""
        self.params = dict(params)
        self.probe_y = probe_y
        num_workers, probe_size = probe_y.shape
        flat_x = probe_x.reshape(num_workers, probe_size, -1)
        self.prepared = {(name, k): info.prepare(name, flat_x[k], p)
                         for name, p in self.params.items() for k in range(num_workers)}
        self._jobs: queue.Queue = queue.Queue(maxsize=max_pending)
        self._results: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="fedmpi-mi", daemon=True)
        self._thread.start()

    def estimate_round(self, z: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """All estimates for one round: z (W, 2, P, D) -> {estimator: {key: (W,) nats}}."""
        num_workers = z.shape[0]
        out = {}
        for name, p in self.params.items():
            values = {key: np.empty(num_workers) for key in MI_KEYS}
            for k in range(num_workers):
                for m, which in enumerate(("local", "averaged")):
                    zk = z[k, m].astype(np.float64)
                    values[f"xz_{which}"][k] = info.estimate(name, self.prepared[name, k], zk, p)
                    values[f"zy_{which}"][k] = info.estimate(name, zk, self.probe_y[k], p)
            out[name] = values
        return out

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            row, z = job
            try:
                self._results.put((row, self.estimate_round(z)))
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which aborts the job
                self._error = exc
                return

    def submit(self, row: int, z: np.ndarray, on_wait: Callable[[str], None]) -> None:
        """Queue round `row` (z is copied); waits, and says so, when estimation is behind."""
        self._raise_if_failed()
        job = (row, np.array(z, copy=True))
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            on_wait(f"MI estimation is {self._jobs.qsize()} rounds behind; the coordinator waits for it "
                    "(raise mi.every or use a cheaper estimator to avoid this)")
            while True:
                self._raise_if_failed()
                try:
                    self._jobs.put(job, timeout=0.5)
                    break
                except queue.Full:
                    continue

    def poll(self) -> list[tuple[int, dict]]:
        """Finished rounds so far, without waiting."""
        self._raise_if_failed()
        done = []
        while True:
            try:
                done.append(self._results.get_nowait())
            except queue.Empty:
                return done

    def close(self) -> list[tuple[int, dict]]:
        """Wait for every queued round and return the results not yet polled."""
        self._jobs.put(_STOP)
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)
            self._raise_if_failed()
        self._raise_if_failed()
        return self.poll()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError("mutual-information estimation failed") from self._error
