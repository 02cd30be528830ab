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
scores its local model before the sync point and the new global model on
the first n = `examples` examples of its probe (all of them when the probe,
`data.probe_size`, is smaller). With d_i = ln q'_local(y_i|z_i) -
ln q'_global(y_i|z_i) (H(Y) cancels in the difference of the two bounds),

    loss_k = mean_i d_i = [H(Y) - CE](local) - [H(Y) - CE](global)     (nats)
    se_k^2 = var_i(d_i) / n                                            (its sampling error, paired)

the label information the average lost on worker k's data (negative when
averaging helped). One Allreduce of `[sum_k loss_k, sum_k se_k^2, workers]`
(in units of FIXED, so the sums are exact) gives every rank the mean loss L
over the W' workers with a say and its standard error SE = sqrt(sum se_k^2)
/ W'. The period P (in check points, starting at `min_period`) moves only
on evidence beyond `z` standard errors:

    L - z SE > threshold:    P <- max(min_period, P / 2)    (averaging destroyed information: sync sooner)
    L + z SE <= threshold:   P <- min(max_period, 2 P)      (averaging was harmless: wait longer)
    otherwise:               P stays                        (the measurement cannot tell)

The next sync point is P check points after this one (and the last check
point is one in any case). There is no collective between sync points.
`z: 0` is the plain rule (halve above the threshold, double otherwise).

What it measures, and its limits: the probe is drawn from the worker's own
training shard, so both heads are scored on examples the local model was
trained on; the bound is then optimistic for the local model, which is what
makes the gap large when the local model has fitted its own data in a way
the average does not keep. It sees label information in the classifier,
not in Z alone (the decoder of fedmpi.info.decoder would, at the cost of
shipping Z and fitting at every sync point). The measurement of a round
decides the length of the next one. Two things measured on CIFAR-10
(docs/algorithms.md) shaped it: without the restriction to the labels
present, on a split into classes 0-4 and 5-9 the loss stayed at 0.5-0.7
nats (about ln 2, the prior) even with a sync every 4 batches, so no
threshold could tell a harmless period from a harmful one; and with the
plain rule (z = 0) on 256 examples, the losses of one run jumped between
-0.02 and +0.09 nats from one sync point to the next, where the standard
error of one such loss is 0.01 to 0.04 nats, so the period followed
sampling noise as much as the models.

State (recorded per logged sync point in /sync): `period`, the period now
in check points; `since`, check points since the last sync point; `loss`
and `loss_se`, the latest mean loss L in nats and its standard error (NaN
before the first); `measured`, the number of measurements so far.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedmpi.sync.base import FIXED, SYNC_POLICIES, SyncPolicy, to_fixed


@dataclass(frozen=True)
class InformationParams:
    threshold: float = 0.05  # nats of I(Z;Y) the average may lose (mean over workers)
    z: float = 2.0  # standard errors by which the loss must clear the threshold to move the period
    examples: int = 256  # probe examples per worker the heads are scored on (the whole probe if it is smaller)
    min_period: int = 1  # shortest period, check points; the first period
    max_period: int = 16  # longest period, check points

    def check(self) -> None:
        for key in ("threshold", "z"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (key == "threshold" and value == 0):
                raise ValueError(f"{key} must be a number {'> 0 (nats)' if key == 'threshold' else '>= 0'}, "
                                 f"got {value!r}")
        if self.examples < 2:
            raise ValueError(f"examples must be an integer >= 2, got {self.examples!r}")
        if self.min_period < 1:
            raise ValueError(f"min_period must be an integer >= 1, got {self.min_period!r}")
        if self.max_period < self.min_period:
            raise ValueError(f"max_period must be an integer >= min_period ({self.min_period}), "
                             f"got {self.max_period!r}")


@SYNC_POLICIES.register("information", InformationParams)
class Information(SyncPolicy):
    measure_values = ("loss", "variance", "workers")
    state_keys = ("period", "since", "loss", "loss_se", "measured")

    def init_state(self):
        return {"period": float(self.params.min_period), "since": 0.0, "loss": math.nan, "loss_se": math.nan,
                "measured": 0.0}

    def decide(self, state, summed, final):
        since = state["since"] + 1
        sync = final or since >= state["period"]
        return sync, dict(state, since=0.0 if sync else since)

    def measure(self, view, out):
        if view.local is None:  # none of this worker's clients trained: no say
            out[:] = 0.0
            return
        n = self.params.examples
        loss, se = paired_loss(view.log_q(view.local, n), view.log_q(view.global_model, n))
        out[:] = to_fixed(loss), to_fixed(se * se), 1.0

    def measured(self, state, summed):
        loss_sum, variance_sum, workers = (float(v) for v in summed)
        if workers == 0:
            return dict(state, measured=state["measured"] + 1)
        loss, se = loss_sum * FIXED / workers, math.sqrt(max(variance_sum, 0.0) * FIXED) / workers
        p, period = self.params, state["period"]
        if loss - p.z * se > p.threshold:
            period = max(p.min_period, period // 2)
        elif loss + p.z * se <= p.threshold:
            period = min(p.max_period, period * 2)
        return dict(state, period=float(period), loss=loss, loss_se=se, measured=state["measured"] + 1)

    def describe(self, state):
        return (f"period {int(state['period'])} check point(s); latest loss {state['loss']:.4f} "
                f"± {state['loss_se']:.4f} nats (threshold {self.params.threshold:g}, z {self.params.z:g})")


def paired_loss(log_q_local: np.ndarray, log_q_global: np.ndarray) -> tuple[float, float]:
    """(mean, standard error) of the per-example differences ln q_local - ln q_global (n,), n >= 2:
    the loss of one worker and its sampling error."""
    d = np.asarray(log_q_local, np.float64) - np.asarray(log_q_global, np.float64)
    return float(d.mean()), float(math.sqrt(d.var(ddof=1) / len(d)))
