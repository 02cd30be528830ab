"""`dynamic`: sync when some local model has drifted more than Delta from the last average.

Kamp, Adilova, Sicking, Hüger, Schlicht, Wirtz, Wrobel, "Efficient
decentralized deep learning by dynamic model averaging", ECML-PKDD 2018,
with the simplest resolution of a violation: a full sync. The reference
model r is the global model of the last sync point. At every check point
(every b = `sync.every` local steps) each worker tests, for each of its
clients that train in the current round,

    ||theta_c - r||^2 <= Delta                    (squared L2 over the whole flat vector)

and the check collective sums `[violations, distance, clients]` over the
ranks: the clients in violation, the sum of their squared distances (in
units of FIXED, so the sum is exact) and the clients tested. Any violation
makes the check point a sync point, whose average becomes the next r. The
check is one Allreduce of four float64 (with the stop flag), not a
parameter exchange. With `sync.redistribute: false` the clients keep their
own models and r is still the last average.

State (recorded per logged sync point in /sync): `checks` and `violations`,
counted over the whole run, and `distance`, the mean squared distance of the
tested clients from r at the latest check point (NaN when none was tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedmpi.sync.base import FIXED, SYNC_POLICIES, SyncPolicy, to_fixed


@dataclass(frozen=True)
class DynamicParams:
    delta: float = 1.0  # Delta: the squared distance ||theta_c - r||^2 a client may drift before a sync

    def check(self) -> None:
        if isinstance(self.delta, bool) or not isinstance(self.delta, (int, float)) \
                or not (math.isfinite(self.delta) and self.delta > 0):
            raise ValueError(f"delta must be a number > 0 (a squared distance in parameter space), "
                             f"got {self.delta!r}")


def squared_distance(theta: np.ndarray, reference: np.ndarray) -> float:
    """||theta - reference||^2 in float64 of two (num_params,) float32 vectors."""
    diff = theta.astype(np.float64) - reference.astype(np.float64)
    return float(diff @ diff)


@SYNC_POLICIES.register("dynamic", DynamicParams)
class Dynamic(SyncPolicy):
    check_values = ("violations", "distance", "clients")
    state_keys = ("checks", "violations", "distance")

    def init_state(self):
        return {"checks": 0.0, "violations": 0.0, "distance": math.nan}

    def signal(self, view, out):
        distances = [squared_distance(theta, view.global_model) for theta in view.models]
        out[0] = sum(not d <= self.params.delta for d in distances)  # a NaN distance is a violation too
        out[1] = sum(to_fixed(d) if math.isfinite(d) else 0.0 for d in distances)
        out[2] = len(distances)

    def decide(self, state, summed, final):
        violations, distance, clients = (float(v) for v in summed)
        new = {"checks": state["checks"] + 1, "violations": state["violations"] + violations,
               "distance": distance * FIXED / clients if clients > 0 else math.nan}
        return final or violations > 0, new

    def describe(self, state):
        return (f"{int(state['violations'])} violation(s) in {int(state['checks'])} checks; "
                f"mean ||theta - r||^2 at the latest {state['distance']:.4g} (Delta {self.params.delta:g})")
