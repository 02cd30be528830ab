"""The sync-policy contract, and the registry `sync.policy` looks policies up in.

A run's local steps are cut into **check points**, one every `sync.every`
local batches (or epochs, `sync.unit`) of the largest client; the last one
ends the run. At each check point a policy decides, identically on every
rank, whether it is a **sync point**. Under `periodic` every check point is
one (the schedule of fedmpi.plan, unchanged); `dynamic` and `information`
decide at run time. Every rank holds the same policy state and feeds it the
same numbers, so it takes the same decision without another message:

    state = policy.init_state()                           # dict of floats, alike on every rank
    policy.signal(view, out)                              # worker, at a check point: (len(check_values),)
    sync, state = policy.decide(state, summed, final)     # every rank; summed over ranks (len(check_values),)
    policy.measure(view, out)                             # worker, after a sync point: (len(measure_values),)
    state = policy.measured(state, summed)                # every rank; summed over ranks (len(measure_values),)

- `check_values` names what each worker adds to the **check collective**, one
  Allreduce(SUM) of `[values | stop]` float64 at every check point
  (fedmpi.protocol.policy_collective); the coordinator adds zeros. Empty:
  the policy needs no check collective, none is made and `summed` is empty.
- `measure_values`, likewise, for one Allreduce right after each sync point
  (its new global model known on every rank); empty: none is made.
- `decide` is pure and deterministic, and returns True when `final` (the
  last check point always ends with a sync point, so a run ends with a
  global model). `measured` is pure.
- Every value a worker contributes is an integer (counts, or a quantity in
  units of `FIXED` rounded by `to_fixed`): float64 sums of integers below
  2**53 are exact in any order, so MPI's reduction tree and the reference's
  loop give the same bits, and no decision flips on rounding.
- `state_keys` are the keys of the state, floats, in a fixed order; the trace
  records them after every logged sync point (`/sync/<key>`) and checkpoints
  save them, so a resumed run decides as the uninterrupted one.

The view a worker shows its policy (`WorkerView`) is built by
fedmpi.observe; the policies here are pure functions of arrays and numbers.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from fedmpi.registry import Registry

State = dict[str, float]
FIXED = 1e-9  # the unit of a policy's fractional values on the wire: nano-units, rounded to integers


def to_fixed(value: float) -> float:
    """`value` in units of FIXED, rounded to an integer (as float64): exactly summable."""
    return float(np.rint(value / FIXED))


@dataclass(frozen=True)
class WorkerView:
    """What one worker shows its policy.

    models: (num_params,) float32 of each of its clients that train in the current round, as they
      are now (at a check point: after the steps so far);
    global_model: (num_params,) float32, the global model of the last sync point (after a sync
      point: the one it just made);
    local: after a sync point, the worker's local model before it (the weighted mean of its
      clients that trained), None when none trained or at a check point;
    log_q: log_q(theta, n) (n,) float64 = ln q'(y_i | z_i) of model theta's own classifier, its
      softmax restricted to the labels present, on the first n examples of the worker's probe
      (at most all of them): mean_i ln q' + H(Y) is a variational bound on I(Z;Y), fedmpi.observe.
    """

    models: tuple[np.ndarray, ...]
    global_model: np.ndarray
    local: np.ndarray | None = None
    log_q: Callable[[np.ndarray, int], np.ndarray] | None = None


class SyncPolicy(abc.ABC):
    check_values: tuple[str, ...] = ()  # each worker's part of the check collective; () = no check collective
    measure_values: tuple[str, ...] = ()  # each worker's part of the collective after a sync point; () = none
    state_keys: tuple[str, ...] = ()  # the state's keys, in the order the trace lists them

    def __init__(self, params: Any):
        self.params = params

    def init_state(self) -> State:
        """The state before the first check point."""
        return {}

    def signal(self, view: WorkerView, out: np.ndarray) -> None:
        """Write this worker's part of the check collective into `out` (len(check_values),) float64."""

    @abc.abstractmethod
    def decide(self, state: State, summed: np.ndarray, final: bool) -> tuple[bool, State]:
        """(whether this check point is a sync point, the new state); True when `final`.
        `summed`: (len(check_values),) float64, the check collective's sum over ranks."""

    def measure(self, view: WorkerView, out: np.ndarray) -> None:
        """Write this worker's part of the collective after a sync point into `out`
        (len(measure_values),) float64."""

    def measured(self, state: State, summed: np.ndarray) -> State:
        """The state after a sync point's measurement, from its sum over ranks."""
        return state

    def describe(self, state: State) -> str:
        """One line on where the policy stands, for the console and `analyze`."""
        return ""


SYNC_POLICIES: Registry[type[SyncPolicy]] = Registry("sync policy")


def build_policy(name: str, params: Any | None = None) -> SyncPolicy:
    entry = SYNC_POLICIES[name]
    return entry.impl(entry.params() if params is None else params)
