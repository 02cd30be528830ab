"""The worker loop: train on the own shard, join every sync point, report.

Round protocol (DESIGN.md): every `sync.every` local batches the worker packs
`[w * theta, w]` into one float32 buffer, joins the sum over all ranks, and
continues from the average (`sync.redistribute: true`) or from its own model.
At logged sync points it evaluates its local model and the average on its
evaluation subset, computes Z of its probe under both, and reports them to
the coordinator.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fedmpi.averaging import average_from_sum, pack_contribution
from fedmpi.device import pick_device
from fedmpi.local import LocalTrainer, evaluate_and_continue, new_model, worker_tensors

# Per-worker metrics sent at each logged sync point, in this order.
METRICS = ("local_acc", "local_loss", "averaged_acc", "averaged_loss", "train_loss",
           "train_seconds", "eval_seconds", "sync_seconds")


class NonFiniteError(RuntimeError):
    pass


def run_worker(comm, cfg, dataset, plan, stop, resume: bool = False) -> int:
    """Train, join every sync point; with `resume`, continue from the coordinator's checkpoint."""
    k = comm.worker_index
    torch.set_num_threads(cfg.train.threads)
    cuda_count = torch.cuda.device_count() if cfg.device != "cpu" else 0
    device = torch.device(pick_device(cfg.device, comm.node_worker_index, cuda_count))

    x, y, eval_x, eval_y = worker_tensors(dataset, plan.workers[k], device)
    comm.placement()
    comm.gather_probes(eval_x[:plan.probe_size].cpu().numpy(), eval_y[:plan.probe_size].cpu().numpy())

    model = new_model(cfg, dataset.input_shape, dataset.num_classes, device)
    trainer = LocalTrainer(cfg, model, x, y, k)
    first = 0
    if resume:
        state = comm.distribute(None)
        trainer.load_state(state["trainer"])
        first = state["next_sync"]
    redistribute = cfg.sync.redistribute
    num_examples = len(y)
    schedule = plan.schedule
    on_cpu = device.type == "cpu"

    # (N + 2,) [w * theta, w, stop]: the stop flag rides along with the contribution.
    send_buf = np.empty(trainer.flat.size + 2, dtype=np.float32)
    sum_buf = np.empty_like(send_buf)  # sum over ranks
    metrics_buf = np.zeros(len(METRICS), dtype=np.float64)
    z_buf = np.empty((2, plan.probe_size, model.representation_dim), dtype=np.float32)  # (2, P, D) local, averaged
    times = dict(train=0.0, eval=0.0, sync=0.0)

    for i in range(first, schedule.num_syncs):
        t0 = time.perf_counter()
        train_loss = trainer.train(schedule.steps_before(i))
        t1 = time.perf_counter()
        # On CPU the flat vector is shared with numpy; on a GPU it comes over once per sync.
        theta = trainer.flat.vector.numpy() if on_cpu else trainer.flat.vector.cpu().numpy()
        if not (np.isfinite(train_loss) and np.isfinite(theta).all()):
            raise NonFiniteError(f"worker {k + 1}: loss or parameters are not finite before sync point "
                                 f"{i} (step {schedule.step(i)}); lower train.lr or check the data")
        pack_contribution(theta, num_examples, send_buf[:-1])
        send_buf[-1] = stop.requested
        comm.sum_contributions(send_buf, sum_buf, cfg.sync.collective)
        averaged = average_from_sum(sum_buf[:-1])  # (N,) float32
        t2 = time.perf_counter()
        times["train"] += t1 - t0
        times["sync"] += t2 - t1

        if schedule.logged(i):
            want_z = schedule.wants_z(i)
            local, avg = evaluate_and_continue(trainer, torch.from_numpy(averaged), eval_x, eval_y,
                                               plan.probe_size if want_z else 0, redistribute)
            times["eval"] += time.perf_counter() - t2
            metrics_buf[:] = (local.accuracy, local.loss, avg.accuracy, avg.loss, train_loss,
                              times["train"], times["eval"], times["sync"])
            if want_z:
                z_buf[0], z_buf[1] = local.z_probe.numpy(), avg.z_probe.numpy()
            comm.report(metrics_buf, z_buf if want_z else None)
            times = dict(train=0.0, eval=0.0, sync=0.0)
        elif redistribute:
            trainer.flat.assign(torch.from_numpy(averaged))
        stopping = sum_buf[-1] > 0
        if checkpoint_due(cfg, schedule, i, stopping):
            comm.collect({"trainer": trainer.state()})
        if stopping:
            return 0
    return 0


def checkpoint_due(cfg, schedule, i: int, stopping: bool) -> bool:
    """Checkpoint after sync point i: on a stop request, or every checkpoint.every (not after the last)."""
    if i == schedule.num_syncs - 1:
        return False
    every = cfg.checkpoint.every
    return stopping or (every > 0 and (i + 1) % every == 0)
