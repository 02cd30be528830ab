"""The worker loop: train on the own shard, join every sync point, report.

Round protocol (DESIGN.md): every `sync.every` local batches the worker packs
`[w * theta, w]` into one float32 buffer, joins the sum over all ranks, and
continues from the average (`sync.redistribute: true`) or from its own model.
With simulated clients (`clients.total`), the worker trains its sampled
clients one after another and sends their summed contributions.
At logged sync points it evaluates its local model and the average on its
evaluation subset, computes Z of its probe under both, and reports them to
the coordinator.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fedmpi.averaging import average_from_sum
from fedmpi.device import pick_device
from fedmpi.local import ClientGroup, worker_tensors

# Per-worker metrics sent at each logged sync point, in this order.
METRICS = ("local_acc", "local_loss", "averaged_acc", "averaged_loss", "train_loss",
           "train_seconds", "eval_seconds", "sync_seconds")


def run_worker(comm, cfg, dataset, plan, stop, resume: bool = False) -> int:
    """Train, join every sync point; with `resume`, continue from the coordinator's checkpoint."""
    k = comm.worker_index
    torch.set_num_threads(cfg.train.threads)
    cuda_count = torch.cuda.device_count() if cfg.device != "cpu" else 0
    device = torch.device(pick_device(cfg.device, comm.node_worker_index, cuda_count))

    x, y, eval_x, eval_y = worker_tensors(dataset, plan.workers[k], device)
    comm.placement()
    comm.gather_probes(eval_x[:plan.probe_size].cpu().numpy(), eval_y[:plan.probe_size].cpu().numpy())

    group = ClientGroup(cfg, dataset, plan.workers[k], x, y, device)
    first = 0
    if resume:
        state = comm.distribute(None)
        group.load_state(state["group"])
        first = state["next_sync"]
    schedule = plan.schedule

    # (N + 2,) [sum of w * theta, sum of w, stop]: the stop flag rides along with the contribution.
    send_buf = np.empty(group.size + 2, dtype=np.float32)
    sum_buf = np.empty_like(send_buf)  # sum over ranks
    metrics_buf = np.zeros(len(METRICS), dtype=np.float64)
    z_buf = np.empty((2, plan.probe_size, group.evaluator.representation_dim), dtype=np.float32)  # (2, P, D)
    times = dict(train=0.0, eval=0.0, sync=0.0)

    for i in range(first, schedule.num_syncs):
        t0 = time.perf_counter()
        train_loss = group.train_round(set(plan.sampled(i)), schedule.steps_before(i), send_buf[:-1],
                                       f"worker {k + 1} before sync point {i} (step {schedule.step(i)})")
        t1 = time.perf_counter()
        send_buf[-1] = stop.requested
        comm.sum_contributions(send_buf, sum_buf, cfg.sync.collective)
        group.set_global(average_from_sum(sum_buf[:-1]))
        t2 = time.perf_counter()
        times["train"] += t1 - t0
        times["sync"] += t2 - t1

        if schedule.logged(i):
            want_z = schedule.wants_z(i)
            local, avg = group.evaluate(eval_x, eval_y, plan.probe_size if want_z else 0)
            times["eval"] += time.perf_counter() - t2
            metrics_buf[:] = (local.accuracy, local.loss, avg.accuracy, avg.loss, train_loss,
                              times["train"], times["eval"], times["sync"])
            if want_z:
                z_buf[0], z_buf[1] = local.z_probe.numpy(), avg.z_probe.numpy()
            comm.report(metrics_buf, z_buf if want_z else None)
            times = dict(train=0.0, eval=0.0, sync=0.0)
        stopping = sum_buf[-1] > 0
        if checkpoint_due(cfg, schedule, i, stopping):
            comm.collect({"group": group.state()})
        if stopping:
            return 0
    return 0


def checkpoint_due(cfg, schedule, i: int, stopping: bool) -> bool:
    """Checkpoint after sync point i: on a stop request, or every checkpoint.every (not after the last)."""
    if i == schedule.num_syncs - 1:
        return False
    every = cfg.checkpoint.every
    return stopping or (every > 0 and (i + 1) % every == 0)
