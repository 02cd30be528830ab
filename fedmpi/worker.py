"""The worker loop: train the own clients, join every sync point, report.

Round protocol (fedmpi.protocol, docs/design.md): each round the worker
trains its sampled clients for the round's local steps, writes the sum of
their contributions into the round buffer, joins the sync point, and turns
the sum into the next global model as every rank does. At logged rounds it
evaluates its local model and the global one on its evaluation subset,
computes the bounds on I(Z;Y) of its probe under both and Z when due, and reports them to the
coordinator.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fedmpi import compressed
from fedmpi.device import limit_threads, pick_device
from fedmpi.local import ClientGroup, probe_bounds, worker_tensors
from fedmpi.protocol import BOUNDS, METRICS, RoundBuffers, checkpoint_due, sync_point


def run_worker(comm, cfg, dataset, plan, stop, resume: bool = False) -> int:
    """Train, join every sync point; with `resume`, continue from the coordinator's checkpoint."""
    k = comm.worker_index
    limit_threads(cfg.train.threads)
    cuda_count = torch.cuda.device_count() if cfg.device != "cpu" else 0
    device = torch.device(pick_device(cfg.device, comm.node_worker_index, cuda_count))

    x, y, eval_x, eval_y = worker_tensors(dataset, plan.workers[k], device)
    dataset.release()  # this rank's examples are copied: the mapped dataset's pages can go
    comm.placement()
    comm.gather_probes(eval_x.rows(0, plan.probe_size).contiguous().cpu().numpy(),
                       eval_y[:plan.probe_size].cpu().numpy())

    group = ClientGroup(cfg, dataset, plan.workers[k], x, y, device, plan.num_clients, worker=k)
    first = 0
    if resume:
        state = comm.distribute(None)
        group.load_state(state["group"])
        first = state["next_round"]
    schedule = plan.schedule

    bufs = RoundBuffers(group.algorithm.contribution_size)
    metrics_buf = np.zeros(len(METRICS), dtype=np.float64)
    bounds_buf = np.zeros(len(BOUNDS), dtype=np.float64)
    probe_y = eval_y[:plan.probe_size].cpu().numpy()
    z_buf = np.empty((2, plan.probe_size, group.evaluator.representation_dim), dtype=np.float32)  # (2, P, D)
    down = np.empty(group.size + 1, dtype=np.float32)  # [theta | stop] of a gathered compressed sync point
    div_buf = np.empty(2 * group.size, dtype=np.float32)  # [local model | its update], trace.divergence
    times = dict(train=0.0, eval=0.0, sync=0.0)

    for i in range(first, schedule.num_rounds):
        t0 = time.perf_counter()
        train_loss = group.train_round(set(plan.sampled(i)), schedule.client_steps(i), bufs.payload,
                                       f"worker {k + 1} before sync point {i} (step {schedule.step(i)})",
                                       schedule.learning_rate(i))
        t1 = time.perf_counter()
        if group.uplink is None:
            bufs.set_stop(stop.requested)
            sync_point(comm, bufs, cfg.sync.collective)
            group.aggregate(bufs.summed)
            stopping = bufs.stopping
        else:
            theta, stopping = compressed.worker_sync(
                comm, cfg.compression.collective, group.uplink.compressor,
                group.message(bufs.payload, i, stop.requested), group.server["theta"], down)
            group.set_global(theta)
            if cfg.compression.measure_distortion and schedule.logged(i):
                comm.gather(group.uplink.update, diagnostic=True)
        if cfg.trace.divergence and schedule.logged(i):
            comm.gather(group.divergence_row(div_buf), diagnostic=True)
        t2 = time.perf_counter()
        times["train"] += t1 - t0
        times["sync"] += t2 - t1

        if schedule.logged(i):
            want_z = schedule.wants_z(i)
            local, avg = group.evaluate(eval_x, eval_y, plan.probe_size, want_z)
            times["eval"] += time.perf_counter() - t2
            metrics_buf[:] = (local.accuracy, local.loss, avg.accuracy, avg.loss, train_loss,
                              times["train"], times["eval"], times["sync"])
            bounds_buf[:] = probe_bounds(probe_y, local, avg)
            if want_z:
                z_buf[0], z_buf[1] = local.z_probe.numpy(), avg.z_probe.numpy()
            comm.report(metrics_buf, bounds_buf, z_buf if want_z else None)
            times = dict(train=0.0, eval=0.0, sync=0.0)
        if checkpoint_due(cfg.checkpoint.every, schedule.num_rounds, i, stopping):
            comm.collect({"group": group.state()})
        if stopping:
            return 0
    return 0
