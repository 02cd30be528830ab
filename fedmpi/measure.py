"""The coordinator's measurements, pipelined behind the workers' training.

For each logged sync point the coordinator evaluates the averaged model on
the test set and, when due, estimates mutual information: for each worker k,
with X_k its probe inputs, Y_k its probe labels and Z the representation
under the local or the averaged model, I(X_k; Z) and I(Z; Y_k) (Adilova et
al. 2019, Section 2) with every configured estimator.

Both run in one background thread, rounds in order, while the main thread
goes straight back to the next sync point: otherwise the workers would wait
for the coordinator's evaluation at every sync. numpy and torch release the
GIL in their kernels, so the two threads overlap. At most `max_pending`
rounds wait in the queue: when measuring falls behind, the coordinator waits
(and says so) rather than growing memory or dropping rounds. The X side of
the MI estimators depends only on the fixed probe inputs, so it is prepared
once.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np
import torch

from fedmpi import info
from fedmpi.flat import FlatParams
from fedmpi.inputs import Inputs
from fedmpi.local import Evaluation, evaluate
from fedmpi.trace import MI_KEYS, MI_SE_KEYS

_STOP = object()


@dataclass(frozen=True)
class RoundResult:
    row: int
    kind: str  # "test" (value: Evaluation) or "mi" (value: {estimator: ({key: (W,) nats}, failure)})
    value: object


class Measurements:
    def __init__(self, model: torch.nn.Module, test_x, test_y: torch.Tensor,
                 mi_params: Mapping[str, object], probe_x: np.ndarray, probe_y: np.ndarray,
                 max_pending: int = 2, test_subset: np.ndarray | None = None):
        """mi_params: estimator name -> parameter dataclass; probe_x (W, P, ...), probe_y (W, P);
        test_x: Inputs or a normalised tensor (T, ...); test_subset (S,): positions in it tested at
        rounds submitted with full_test=False (data.test_subset)."""
        self.model = model  # used by the background thread only
        self.flat = FlatParams(model)
        self.test_sets = {True: (test_x, test_y)}
        if test_subset is not None and len(test_subset):
            positions = torch.from_numpy(np.asarray(test_subset, dtype=np.int64))
            # Tested at almost every logged round: normalised once (Inputs.for_evaluation).
            self.test_sets[False] = (Inputs.of(test_x)[positions].for_evaluation(), test_y[positions])
        self.mi_params = dict(mi_params)
        self.probe_y = probe_y
        num_workers, probe_size = probe_y.shape
        flat_x = probe_x.reshape(num_workers, probe_size, -1)
        self.prepared = {(name, k): info.prepare(name, flat_x[k], p)
                         for name, p in self.mi_params.items() if info.XZ in info.pairs(name)
                         for k in range(num_workers)}
        self._serieses: dict[tuple[str, int, str], info.Series] = {}
        self._jobs: queue.Queue = queue.Queue(maxsize=max_pending)
        self._results: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="fedmpi-measure", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ the work
    def test(self, averaged: np.ndarray, full: bool = True) -> Evaluation:
        """The averaged parameters (num_params,) on all test examples, or on the subset."""
        self.flat.assign(torch.from_numpy(averaged))
        x, y = self.test_sets[full or False not in self.test_sets]
        return evaluate(self.model, x, y)

    def mutual_information(self, z: np.ndarray) -> dict[str, tuple[dict[str, np.ndarray], str]]:
        """All estimates for one round: z (W, 2, P, D) -> {estimator: (values, failure)}.

        values: MI_KEYS and MI_SE_KEYS -> (W,) nats; a pair the estimator does not estimate
        (I(X;Z) for the decoders) stays NaN. An estimate that fails (ValueError: too few
        examples of a class, say) is NaN too, and `failure` says why; the run goes on.
        """
        num_workers = z.shape[0]
        out = {}
        for name, p in self.mi_params.items():
            values = {key: np.full(num_workers, np.nan) for key in MI_KEYS + MI_SE_KEYS}
            failures = []
            pairs = info.pairs(name)
            for k in range(num_workers):
                for m, which in enumerate(("local", "averaged")):
                    zk = z[k, m]
                    if np.isnan(zk).any():  # a local model that did not train this round
                        continue
                    for pair, a, b in ((info.XZ, self.prepared.get((name, k)), zk),
                                       (info.ZY, zk, self.probe_y[k])):
                        if pair not in pairs:
                            continue
                        key = f"{pair}_{which}"
                        try:
                            est = (self._series(name, k, which, p).estimate_with_error(a, b) if pair == info.ZY
                                   else info.estimate_with_error(name, a, b, p))
                        except ValueError as exc:
                            failures.append(f"worker {k + 1} {key}: {exc}")
                            continue
                        values[key][k], values[f"{key}_se"][k] = est.value, est.stderr
            out[name] = (values, "; ".join(failures))
        return out

    def _series(self, name: str, k: int, which: str, params) -> info.Series:
        """One series per estimator, worker and model: the decoders carry their tuning from one
        round to the next (`DecoderParams.retune`)."""
        key = (name, k, which)
        if key not in self._serieses:
            self._serieses[key] = info.Series(name, params)
        return self._serieses[key]

    def _work(self) -> None:
        try:
            info.load(self.mi_params)  # scipy, say: off the critical path, before the first round
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which aborts the job
            self._error = exc
            return
        while True:
            job = self._jobs.get()
            if job is _STOP:
                return
            row, averaged, z, full = job
            try:
                self._results.put(RoundResult(row, "test", self.test(averaged, full)))
                if z is not None:
                    self._results.put(RoundResult(row, "mi", self.mutual_information(z)))
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which aborts the job
                self._error = exc
                return
            self._jobs.task_done()

    # ------------------------------------------------------------ the main thread's side
    def submit(self, row: int, averaged: np.ndarray, z: np.ndarray | None,
               on_wait: Callable[[str], None], full_test: bool = True) -> None:
        """Queue round `row`: test the averaged parameters (N,) (on the test subset unless
        full_test), and estimate MI from z (W, 2, P, D) unless None. Both are copied. Waits, and
        says so, when behind."""
        self._raise_if_failed()
        job = (row, np.array(averaged, copy=True), None if z is None else np.array(z, copy=True), full_test)
        try:
            self._jobs.put_nowait(job)
            return
        except queue.Full:
            on_wait(f"measurements are {self._jobs.qsize()} rounds behind; the coordinator waits for them "
                    "(raise mi.every or trace.every, or use a cheaper estimator)")
        while True:
            self._raise_if_failed()
            try:
                self._jobs.put(job, timeout=0.5)
                return
            except queue.Full:
                continue

    def poll(self) -> list[RoundResult]:
        """Results finished so far, in round order, without waiting."""
        self._raise_if_failed()
        done = []
        while True:
            try:
                done.append(self._results.get_nowait())
            except queue.Empty:
                return done

    def drain(self) -> list[RoundResult]:
        """Wait until every queued round is measured; return the results not yet polled."""
        while self._jobs.unfinished_tasks:
            self._raise_if_failed()
            time.sleep(0.01)
        return self.poll()

    def close(self) -> list[RoundResult]:
        """Wait for every queued round; return the results not yet polled."""
        self._jobs.put(_STOP)
        while self._thread.is_alive():
            self._thread.join(timeout=0.5)
            self._raise_if_failed()
        return self.poll()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise RuntimeError("the coordinator's measurement thread failed") from self._error
