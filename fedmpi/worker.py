"""The worker loop: train the own clients, join every sync point, report.

Round protocol (fedmpi.protocol, docs/design.md): at every check point the
worker's sampled clients take the steps up to it; with a sync policy that
checks (fedmpi.sync), the worker adds its signal to the check collective;
every rank's policy decides alike whether the check point is a sync point.
At a sync point the worker writes the sum of its clients' contributions into
the round buffer, joins the sync point, and turns the sum into the next
global model as every rank does (then, for a policy that measures, adds its
measurement to the policy's collective). At logged sync points it
evaluates its local model and the global one on its evaluation subset,
computes the bounds on I(Z;Y) of its probe under both and Z when due, and reports them to the
coordinator.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fedmpi import compressed, observe
from fedmpi.device import limit_threads, pick_device
from fedmpi.local import ClientGroup, evaluate_with_probe, probe_bounds, probe_tensors, worker_tensors
from fedmpi.protocol import (BOUNDS, METRICS, PolicyBuffers, Position, RoundBuffers, checkpoint_due,
                             policy_collective, sync_point)
from fedmpi.sync import build_policy


def run_worker(comm, cfg, dataset, plan, stop, resume: bool = False) -> int:
    """Train, join every sync point; with `resume`, continue from the coordinator's checkpoint."""
    k = comm.worker_index
    limit_threads(cfg.train.threads)
    cuda_count = torch.cuda.device_count() if cfg.device != "cpu" else 0
    device = torch.device(pick_device(cfg.device, comm.node_worker_index, cuda_count))

    mine = plan.workers[k]
    x, y, eval_x, eval_y = worker_tensors(dataset, mine, device)
    probe_x, probe_y = probe_tensors(dataset, mine, eval_x, eval_y, plan.probe_size, device)
    dataset.release()  # this rank's examples are copied: the mapped dataset's pages can go
    comm.placement()
    comm.gather_probes(probe_x.all().contiguous().cpu().numpy(), probe_y.cpu().numpy())

    group = ClientGroup(cfg, dataset, mine, x, y, device, plan.num_clients, worker=k)
    policy = build_policy(cfg.sync.policy.name, cfg.sync.policy.params)
    position = Position.start(policy)
    if resume:
        state = comm.distribute(None)
        group.load_state(state["group"])
        position = Position.restore(state["position"])
    schedule = plan.schedule

    bufs = RoundBuffers(group.algorithm.contribution_size)
    check_bufs = PolicyBuffers(len(policy.check_values), with_stop=True)
    measure_bufs = PolicyBuffers(len(policy.measure_values), with_stop=False)
    metrics_buf = np.zeros(len(METRICS), dtype=np.float64)
    bounds_buf = np.zeros(len(BOUNDS), dtype=np.float64)
    probe_labels = probe_y.cpu().numpy()
    z_buf = np.empty((2, plan.probe_size, group.evaluator.representation_dim), dtype=np.float32)  # (2, P, D)
    down = np.empty(group.size + 1, dtype=np.float32)  # [theta | stop] of a gathered compressed sync point
    div_buf = np.empty(2 * group.size, dtype=np.float32)  # [local model | its update], trace.divergence
    times = dict(train=0.0, eval=0.0, sync=0.0)

    for j in range(position.next_check, schedule.num_checks):
        final = j == schedule.num_checks - 1
        i = position.syncs  # the round under way ends at sync point i
        t0 = time.perf_counter()
        if not group.in_round:
            group.begin_round(set(plan.sampled(i)), schedule.learning_rate(i))
        group.train_segment(schedule.client_steps(j), f"worker {k + 1} before sync point {i + 1} "
                            f"(check point {j + 1}, local step {schedule.step(j)})")
        t1 = time.perf_counter()
        stopping = False
        if policy.check_values:
            policy.signal(observe.check_view(group), check_bufs.values)
            check_bufs.set_stop(stop.requested)
            policy_collective(comm, check_bufs)
            stopping = check_bufs.stopping
        synced = position.decide(policy, check_bufs.summed, final)
        times["train"] += t1 - t0
        times["sync"] += time.perf_counter() - t1
        if synced:
            t1 = time.perf_counter()
            train_loss = group.finish_round(bufs.payload)
            times["train"] += time.perf_counter() - t1
            stopping = _sync(comm, cfg, schedule, group, bufs, down, div_buf, i, final, stop, times) or stopping
            if policy.measure_values:
                t2 = time.perf_counter()
                policy.measure(observe.sync_view(group, probe_x, probe_y), measure_bufs.values)
                times["eval"] += time.perf_counter() - t2
                policy_collective(comm, measure_bufs)
                position.measured(policy, measure_bufs.summed)
            if schedule.logs(i, final):
                t2 = time.perf_counter()
                want_z = schedule.z_at(i, final)
                local, avg = evaluate_with_probe(group, eval_x, eval_y, probe_x, probe_y, want_z, mine.held_out_probe)
                times["eval"] += time.perf_counter() - t2
                metrics_buf[:] = (local.accuracy, local.loss, avg.accuracy, avg.loss, train_loss,
                                  times["train"], times["eval"], times["sync"])
                bounds_buf[:] = probe_bounds(probe_labels, local, avg)
                if want_z:
                    z_buf[0], z_buf[1] = local.z_probe.numpy(), avg.z_probe.numpy()
                comm.report(metrics_buf, bounds_buf, z_buf if want_z else None)
                times = dict(train=0.0, eval=0.0, sync=0.0)
        if checkpoint_due(cfg.checkpoint.every, schedule.num_checks, j, stopping):
            comm.collect({"group": group.state()})
        if stopping:
            return 0
    return 0


def _sync(comm, cfg, schedule, group, bufs, down, div_buf, i: int, final: bool, stop, times) -> bool:
    """The worker's sync point i, uncompressed or compressed, and the diagnostic gathers of a
    logged one; returns whether some rank asked to stop."""
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
        if cfg.compression.measure_distortion and schedule.logs(i, final):
            comm.gather(group.uplink.update, diagnostic=True)
    if cfg.trace.divergence and schedule.logs(i, final):
        comm.gather(group.divergence_row(div_buf), diagnostic=True)
    times["sync"] += time.perf_counter() - t1
    return stopping
