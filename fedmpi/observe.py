"""What a worker shows its sync policy (fedmpi.sync.WorkerView), built from its ClientGroup.

At a check point: the models of its clients that train in the current
round, as they are now, and the global model of the last sync point (the
reference r of dynamic averaging). After a sync point: its local model
before the sync point, the new global model, and `head_bound`, which scores
a model's own classifier on the first n examples of the worker's probe:
H(Y) - CE, the variational bound on I(Z;Y) of fedmpi.info.bounds, in nats.
Shared by the MPI worker and the single-process reference, so both show
their policies the same numbers.
"""

from __future__ import annotations

import numpy as np
import torch

from fedmpi.local import ClientGroup, evaluate
from fedmpi.sync import WorkerView


def check_view(group: ClientGroup) -> WorkerView:
    return WorkerView(group.round_models(), group.server["theta"])


def sync_view(group: ClientGroup, probe_x: torch.Tensor, probe_y: torch.Tensor) -> WorkerView:
    """After a sync point; probe_x (P, C, H, W) float32 and probe_y (P,) int64 on the worker's device."""
    labels = probe_y.cpu().numpy()

    def head_bound(theta: np.ndarray, n: int) -> float:
        from fedmpi.info import bounds  # here, not at import: fedmpi.info loads scipy
        n = min(n, len(labels))
        group.eval_flat.assign(torch.from_numpy(theta))
        scored = evaluate(group.evaluator, probe_x[:n], probe_y[:n], probe_size=n, want_z=False)
        return bounds.variational_bound(scored.probe_logp, labels[:n]).value

    local = None if group.local_theta is None else group.local_theta.numpy()
    return WorkerView((), group.server["theta"], local, head_bound)
