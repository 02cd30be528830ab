"""`information`: sync less often while averaging keeps the label information, more often when it loses it.

Adilova, Rosenzweig and Kamp (2019) found that the averaged model keeps the
information I(Z;Y) of its local models when averaging is frequent enough
and loses it when the locals have drifted apart (at once on non-iid data,
after ~10 aggregations without sending back on iid data), and proposed
watching that information to choose the period. This policy does so at run
time with the measure that costs nothing beyond two forward passes: each
model's own classifier head, whose H(Y) - CE on labelled examples is a
variational lower bound on I(Z;Y) (Barber and Agakov 2003;
fedmpi.info.bounds.variational_bound), here with the head's softmax
restricted to the labels present on the worker (fedmpi.observe: still a
bound, never below the plain one, and blind to the label prior a global
model must spread over every worker's labels whatever the period).

After every sync point each worker k whose clients trained in the round
scores, on the first `examples` examples of its probe (all of them when the
probe, `data.probe_size`, is smaller),

    loss_k = [H(Y) - CE](local model before the sync point) - [H(Y) - CE](new global model)   (nats)

the label information the average lost on worker k's data (negative when
averaging helped). One Allreduce of `[sum_k loss_k, workers]` (the losses in
units of FIXED, so the sum is exact) gives every rank the mean loss L, and
the period P (in check points, starting at `min_period`) is updated:

    L > threshold:   P <- max(min_period, P / 2)     (averaging destroyed information: sync sooner)
    otherwise:       P <- min(max_period, 2 P)       (averaging was harmless: wait longer)

The next sync point is P check points after this one (and the last check
point is one in any case). There is no collective between sync points.

What it measures, and its limits: the probe is drawn from the worker's own
training shard, so both heads are scored on examples the local model was
trained on; the bound is then optimistic for the local model, which is what
makes the gap large when the local model has fitted its own data in a way
the average does not keep. It sees label information in the classifier,
not in Z alone (the decoder of fedmpi.info.decoder would, at the cost of
shipping Z and fitting at every sync point). The measurement of a round
decides the length of the next one. Without the restriction to the labels
present, on a split of CIFAR-10 into classes 0-4 and 5-9 the loss stayed
at 0.5-0.7 nats (about ln 2, the prior) even with a sync every 4 batches,
so no threshold could tell a harmless period from a harmful one there.

State (recorded per logged sync point in /sync): `period`, the period now
in check points; `since`, check points since the last sync point; `loss`,
the latest mean loss L in nats (NaN before the first); `measured`, the
number of measurements so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fedmpi.sync.base import FIXED, SYNC_POLICIES, SyncPolicy, to_fixed


@dataclass(frozen=True)
class InformationParams:
    threshold: float = 0.05  # nats of I(Z;Y) the average may lose (mean over workers) before P halves
    examples: int = 256  # probe examples per worker the heads are scored on (the whole probe if it is smaller)
    min_period: int = 1  # shortest period, check points; the first period
    max_period: int = 16  # longest period, check points

    def check(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float)) \
                or not (math.isfinite(self.threshold) and self.threshold > 0):
            raise ValueError(f"threshold must be a number > 0 (nats), got {self.threshold!r}")
        if self.examples < 2:
            raise ValueError(f"examples must be an integer >= 2, got {self.examples!r}")
        if self.min_period < 1:
            raise ValueError(f"min_period must be an integer >= 1, got {self.min_period!r}")
        if self.max_period < self.min_period:
            raise ValueError(f"max_period must be an integer >= min_period ({self.min_period}), "
                             f"got {self.max_period!r}")


@SYNC_POLICIES.register("information", InformationParams)
class Information(SyncPolicy):
    measure_values = ("loss", "workers")
    state_keys = ("period", "since", "loss", "measured")

    def init_state(self):
        return {"period": float(self.params.min_period), "since": 0.0, "loss": math.nan, "measured": 0.0}

    def decide(self, state, summed, final):
        since = state["since"] + 1
        sync = final or since >= state["period"]
        return sync, dict(state, since=0.0 if sync else since)

    def measure(self, view, out):
        if view.local is None:  # none of this worker's clients trained: no say
            out[:] = 0.0
            return
        n = self.params.examples
        out[0] = to_fixed(view.head_bound(view.local, n) - view.head_bound(view.global_model, n))
        out[1] = 1.0

    def measured(self, state, summed):
        loss_sum, workers = float(summed[0]), float(summed[1])
        if workers == 0:
            return dict(state, measured=state["measured"] + 1)
        loss = loss_sum * FIXED / workers
        p = self.params
        period = max(p.min_period, state["period"] // 2) if loss > p.threshold else \
            min(p.max_period, state["period"] * 2)
        return dict(state, period=float(period), loss=loss, measured=state["measured"] + 1)

    def describe(self, state):
        return (f"period {int(state['period'])} check point(s); latest loss {state['loss']:.4f} nats "
                f"(threshold {self.params.threshold:g})")
