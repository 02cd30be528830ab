"""What a worker shows its sync policy (fedmpi.sync.WorkerView), built from its ClientGroup.

At a check point: the models of its clients that train in the current
round, as they are now, and the global model of the last sync point (the
reference r of dynamic averaging). After a sync point: its local model
before the sync point, the new global model, and `log_q`, which scores a
model's own classifier on the first n examples of the worker's probe.
Shared by the MPI worker and the single-process reference, so both show
their policies the same numbers.

`log_q` gives ln q'(y_i|z_i) per example, where H(Y) + E ln q'(Y|Z) <= I(Z;Y)
is the variational bound (Barber and Agakov 2003;
fedmpi.info.bounds.variational_bound) with q' the model's softmax
**restricted to the labels present among the scored examples**:
q'(y|z) = q(y|z) / sum_{y' in S} q(y'|z) for y in S. Y takes values in S on
those examples, so q' is a conditional distribution of Y given Z and the
bound holds for it; as q' >= q on S it is never below the plain head bound
(/bounds/head_*), and equal to it when every class is present. On non-iid
data this drops the cost of the label prior alone: a global model that
spreads its mass over all ten classes while a worker holds five pays
about ln 2 nats on that worker's examples whatever its features, which no
sync period changes; restricted, the bound measures how well the model
tells apart the labels the worker has.
"""

from __future__ import annotations

import numpy as np
import torch

from fedmpi.inputs import Inputs
from fedmpi.local import EVAL_CHUNK, ClientGroup
from fedmpi.sync import WorkerView


def check_view(group: ClientGroup) -> WorkerView:
    return WorkerView(group.round_models(), group.server["theta"])


def restricted_log_prob(logits: torch.Tensor, labels: np.ndarray) -> np.ndarray:
    """ln q'(y_i | z_i) (n,) float64: the log-softmax of logits (n, K) over the classes present in
    labels (n,) int64, at each example's own label."""
    present = np.unique(labels)
    columns = torch.from_numpy(present).to(logits.device)
    logp = torch.log_softmax(logits.double().index_select(1, columns), dim=1)  # (n, |S|)
    where = torch.from_numpy(np.searchsorted(present, labels)).to(logits.device)
    return logp.gather(1, where[:, None])[:, 0].cpu().numpy()


def sync_view(group: ClientGroup, probe_x, probe_y: torch.Tensor) -> WorkerView:
    """After a sync point; probe_x (P, C, H, W) (Inputs, or normalised float32) and probe_y (P,) int64
    on the worker's device."""
    labels = probe_y.cpu().numpy()
    x = Inputs.of(probe_x)

    @torch.inference_mode()
    def log_q(theta: np.ndarray, n: int) -> np.ndarray:
        n = min(n, len(labels))
        group.eval_flat.assign(torch.from_numpy(theta))
        group.evaluator.eval()
        logits = torch.cat([group.evaluator(x.chunk(s, min(s + EVAL_CHUNK, n))) for s in range(0, n, EVAL_CHUNK)])
        return restricted_log_prob(logits, labels[:n])

    local = None if group.local_theta is None else group.local_theta.numpy()
    return WorkerView((), group.server["theta"], local, log_q)
