"""The coordinator loop (rank 0): aggregate, evaluate, measure, write the trace.

It trains nothing. At every check point it joins the sync policy's check
collective when the policy has one (fedmpi.sync) and decides, as every rank
does, whether it is a sync point. At every sync point it joins the sum of
the workers' contributions (giving zeros) and turns it into the global
model as every rank does (fedmpi.protocol); at logged rounds it collects the workers'
metrics and representations and hands the global model and the
representations to its measurement thread (test accuracy, mutual
information), which works while the workers train towards the next sync
point. A round is written to the trace once its test accuracy is known; MI
values follow when estimated. Every `checkpoint.every` check points, and when a
rank got SIGTERM/SIGUSR1, it collects the workers' states and writes one
checkpoint next to the trace once the trace holds every row logged so far
(checkpoint.Pending; the workers go on meanwhile, except on a stop).
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from fedmpi import checkpoint, compressed, divergence
from fedmpi import config as config_mod
from fedmpi.compress import build_compressor
from fedmpi.console import Console
from fedmpi.device import limit_threads
from fedmpi.flat import layout_arrays
from fedmpi.local import arrays, new_algorithm, new_model, tensors
from fedmpi.measure import Measurements
from fedmpi.plan import label_counts
from fedmpi.protocol import (BOUNDS, METRICS, PolicyBuffers, Position, RoundBuffers, checkpoint_due,
                             policy_collective, sync_point)
from fedmpi.recorder import Recorder
from fedmpi.sync import build_policy
from fedmpi.tensorboard import Board
from fedmpi.trace import TraceWriter


def run_coordinator(comm, cfg, dataset, plan, trace_path: str, job: str, console: Console, stop,
                    resume_state: dict | None = None) -> int:
    limit_threads(cfg.train.threads)
    W, P = plan.num_workers, plan.probe_size  # workers, probe examples per worker
    schedule = plan.schedule
    placement = comm.placement()
    probe_x, probe_y = comm.gather_probes(np.zeros((P,) + dataset.input_shape, np.float32),
                                          np.zeros(P, np.int64))
    model = new_model(cfg, dataset.input_shape, dataset.num_classes, "cpu")  # evaluated by `measurements`
    test_x = dataset.inputs(dataset.test_x[plan.test_indices])  # (T, C, H, W), normalised per chunk
    test_y = torch.from_numpy(dataset.test_y[plan.test_indices])
    D = model.representation_dim
    mi_params = {name: cfg.mi.params(name) for name in cfg.mi.estimators}
    # (W, P) indices into the training set, or the test set with data.probe_from: test
    probe_indices = np.stack([w.probe_indices() for w in plan.workers])
    measurements = Measurements(model, test_x, test_y, mi_params, probe_x, probe_y, test_subset=plan.test_subset)
    algorithm = new_algorithm(cfg, model, measurements.flat, plan.num_clients)
    server = algorithm.server_init(measurements.flat.vector.numpy())
    num_params = measurements.flat.size
    bufs = RoundBuffers(algorithm.contribution_size)  # the coordinator's payload stays zero
    compressor = None if cfg.compression.name == "none" else build_compressor(cfg.compression.name,
                                                                               cfg.compression.params)
    message = bufs.send.nbytes if compressor is None else compressed.message_bytes(compressor, num_params)
    down = np.empty(num_params + 1, dtype=np.float32)  # [theta | stop] of a gathered compressed sync point
    config_yaml = config_mod.to_yaml(cfg)
    ckpt_path = checkpoint.path_for(trace_path)

    policy = build_policy(cfg.sync.policy.name, cfg.sync.policy.params)
    periodic = cfg.sync.policy.name == "periodic"  # sync points known ahead: one per check point
    position = Position.start(policy)
    check_bufs = PolicyBuffers(len(policy.check_values), with_stop=True)  # the coordinator's values stay zero
    measure_bufs = PolicyBuffers(len(policy.measure_values), with_stop=False)
    elapsed, cpu_used = 0.0, 0.0
    if resume_state is None:
        writer = TraceWriter(
            trace_path, config_yaml=config_yaml, job=job, world_size=comm.world_size,
            num_examples=plan.num_examples, metric_names=METRICS, layout=layout_arrays(measurements.flat.slots),
            probe_indices=probe_indices, probe_labels=probe_y,
            probe_inputs=probe_x if cfg.trace.activations else None, representation_dim=D,
            activations=cfg.trace.activations,
            mi_params={n: _attrs(n, p) for n, p in mi_params.items()},
            client_owner=np.concatenate([[k] * len(w.client_ids) for k, w in enumerate(plan.workers)]),
            clients_per_round=plan.clients_per_round,
            divergence_layers=len(measurements.flat.slots) if cfg.trace.divergence else 0,
            label_counts=label_counts(plan, dataset.train_y, dataset.num_classes),
            comm_attrs=dict(_attrs_of(cfg.compression.params), compression=cfg.compression.name,
                            collective=cfg.compression.collective if compressor else cfg.sync.collective,
                            measure_distortion=bool(compressor and cfg.compression.measure_distortion),
                            num_params=num_params, message_bytes=message,
                            payload_bytes=compressor.payload_bytes(num_params) if compressor else message),
            sync_keys=policy.state_keys,
            sync_attrs=dict(_attrs_of(cfg.sync.policy.params), policy=cfg.sync.policy.name,
                            check_every=cfg.sync.every, unit=cfg.sync.unit, num_checks=schedule.num_checks))
        client_steps = np.zeros(plan.num_clients, dtype=np.int64)  # (C,) local steps of each client so far
    else:
        if "position" in resume_state:
            position = Position.restore(resume_state["position"])
            client_steps = resume_state["client_steps"].numpy().copy()
        else:  # a checkpoint written before sync policies: periodic, saved at sync point sync_index
            done = resume_state["sync_index"] + 1
            position = Position(done, done, policy.init_state())
            client_steps = plan.steps_through(done - 1)
        comm.distribute([{"group": s, "position": position.saved()} for s in resume_state["workers"]])
        writer = TraceWriter.reopen(trace_path, resume_state["rows"], METRICS)
        elapsed, cpu_used = resume_state["elapsed"], resume_state["cpu_seconds"]
        server = arrays(resume_state["server"])

    dataset.release()  # the test set and the label counts are copied: the mapped dataset's pages can go
    metrics_buf = np.zeros(len(METRICS), dtype=np.float64)
    bounds_buf = np.zeros(len(BOUNDS), dtype=np.float64)
    z_buf = np.zeros((2, P, D), dtype=np.float32)
    steps_per_epoch = schedule.total_steps / cfg.train.epochs
    ranks = ", ".join(f"{r}={host}:{pid}" for r, host, pid in placement)
    first = position.next_check
    if periodic:
        plan_line = f"sync every {cfg.sync.every} {cfg.sync.unit}"
        count_line = f"{schedule.num_rounds} rounds"
        resumed = f"\nresuming after sync point {first}/{schedule.num_rounds}"
    else:
        plan_line = (f"sync policy {cfg.sync.policy.name} ({_params_text(cfg.sync.policy.params)}), "
                     f"check points every {cfg.sync.every} {cfg.sync.unit}")
        count_line = f"{schedule.num_checks} check points, {schedule.total_steps} local steps"
        resumed = (f"\nresuming after check point {first}/{schedule.num_checks} "
                   f"({position.syncs} sync points done)")
    console.start(f"fedmpi {job}: {W} workers, {cfg.data.name} {cfg.data.partition}, {plan_line} "
                  f"({'with' if cfg.sync.redistribute else 'without'} redistribution), "
                  f"{count_line} -> {trace_path}" + (resumed if first else "")
                  + f"\nranks (rank=host:pid): {ranks}", first=first if periodic else position.syncs,
                  first_step=schedule.step(first - 1) if first else 0)
    start = time.perf_counter() - elapsed
    cpu_start = time.process_time() - cpu_used
    board = Board(cfg.trace.tensorboard, job) if cfg.trace.tensorboard else None
    recorder = Recorder(writer, console, board, start)
    # Finished measurements are written while this rank waits in any collective, so a
    # logged round reaches the trace and the console as soon as it is measured.
    comm.idle = lambda: recorder.take(measurements.poll())
    row = writer.rows
    pending = checkpoint.Pending(ckpt_path)  # saved once the trace holds its rows
    for j in range(first, schedule.num_checks):
        final = j == schedule.num_checks - 1
        i = position.syncs  # the round under way ends at sync point i
        stopping = False
        if policy.check_values:
            check_bufs.set_stop(stop.requested)
            policy_collective(comm, check_bufs)
            stopping = check_bufs.stopping
        synced = position.decide(policy, check_bufs.summed, final)
        client_steps = client_steps + plan.interval_steps(j, i)
        if not synced:
            console.check_point(schedule.step(j))
        else:
            diagnostics = np.full(len(compressed.DIAGNOSTICS), np.nan)
            diagnostics[0] = compressed.uplink_bits(message, W, num_params)
            logged = schedule.logs(i, final)
            if compressor is None:
                bufs.set_stop(stop.requested)
                sync_point(comm, bufs, cfg.sync.collective)
                server = algorithm.aggregate(server, bufs.summed)
                stopping = bufs.stopping or stopping
            else:
                combined = compressed.coordinator_sync(comm, cfg.compression.collective, compressor, message,
                                                       stop.requested, server["theta"], down)
                server, stopping = {"theta": combined.theta}, combined.stop or stopping
                if cfg.compression.measure_distortion and logged:
                    updates = comm.gather(np.zeros(num_params, np.float32), diagnostic=True)
                    diagnostics[1:] = compressed.diagnose(combined, updates)
            layers = None
            if cfg.trace.divergence and logged:
                rows = comm.gather(np.zeros(2 * num_params, np.float32), diagnostic=True)  # (W, 2 P)
                layers = divergence.layer_divergence(rows[:, :num_params], rows[:, num_params:],
                                                     measurements.flat.slots)
            if policy.measure_values:
                policy_collective(comm, measure_bufs)
                position.measured(policy, measure_bufs.summed)
            console.sync_point(i, schedule.step(j))
            if logged:
                # Read before measuring: the coordinator's CPU cost of waiting through the workers' training.
                cpu_seconds = time.process_time() - cpu_start
                wants_z = schedule.z_at(i, final)
                worker_metrics, worker_bounds, z, counts = comm.report(metrics_buf, bounds_buf,
                                                                       z_buf if wants_z else None)
                recorder.expect(row, dict(index=i, step=schedule.step(j), epoch=schedule.step(j) / steps_per_epoch,
                                          seconds=time.perf_counter() - start, coordinator_cpu=cpu_seconds,
                                          sampled=plan.sampled(i), worker_metrics=worker_metrics,
                                          worker_bounds=worker_bounds, comm_counts=counts,
                                          comm_diagnostics=diagnostics, divergence=layers,
                                          client_steps=client_steps, check_index=j,
                                          sync_state=dict(position.policy_state),
                                          z=z if cfg.trace.activations else None))
                mi_z = z if mi_params and schedule.mi_at(i, final) else None
                measurements.submit(row, server["theta"], mi_z, console.note, full_test=plan.full_test(final))
                row += 1
                recorder.take(measurements.poll())
        pending.ready(writer.rows)
        if checkpoint_due(cfg.checkpoint.every, schedule.num_checks, j, stopping):
            states = comm.collect(None)
            if pending.state is not None:  # the one before is still waiting for its rows
                recorder.take(measurements.drain())
                pending.save()
            pending.hold({
                "config": config_yaml, "world_size": comm.world_size, "sync_index": position.syncs - 1,
                "check_index": j, "position": position.saved(), "client_steps": torch.from_numpy(client_steps),
                "rows": row, "elapsed": time.perf_counter() - start,  # row: the rows logged so far
                "cpu_seconds": time.process_time() - cpu_start,
                "server": tensors(server), "workers": [s["group"] for s in states]})
            pending.ready(writer.rows)  # at once when nothing is being measured
            if stopping:
                recorder.take(measurements.drain())
                pending.save()
                comm.idle = None
                measurements.close()
                writer.close(None)
                if board is not None:
                    board.close()
                where = (f"sync point {j + 1}/{schedule.num_rounds}" if periodic else
                         f"check point {j + 1}/{schedule.num_checks} ({position.syncs} sync points)")
                console.note(f"checkpointed after {where} on request "
                             f"(SIGTERM/SIGUSR1); continue with: python -m fedmpi run --resume {trace_path}")
                return 0
    comm.idle = None
    recorder.take(measurements.close())
    writer.close(server["theta"])  # the last round is always logged
    if board is not None:
        board.close()
    checkpoint.remove(ckpt_path)  # the run is complete: nothing left to resume
    wall = time.perf_counter() - start
    last = recorder.last
    wm = last["worker_metrics"]
    console.finish(f"fedmpi {job}: done", {
        "trace": trace_path,
        "rounds": f"{schedule.num_rounds} ({writer.rows} logged)" if periodic else
                  f"{position.syncs} sync points at {schedule.num_checks} check points ({writer.rows} logged); "
                  f"{policy.describe(position.policy_state)}",
        "local batches per worker": str(schedule.total_steps) + (
            " (the largest client's; each client's: /clients/steps)" if cfg.sync.unit == "epochs" else ""),
        "wall time": f"{wall:.1f} s",
        "test accuracy (averaged)": f"{last['test_acc']:.4f}",
        "local accuracy (own shard)": " ".join(f"{v:.4f}" for v in wm[:, METRICS.index("local_acc")]),
        "averaged accuracy (each shard)": " ".join(f"{v:.4f}" for v in wm[:, METRICS.index("averaged_acc")]),
    })
    return 0


def _attrs_of(params) -> dict:
    """A plug-in's parameters as HDF5 attributes (tuples as lists)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(params).items()}


def _params_text(params) -> str:
    return ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(params).items()) or "no parameters"


def _attrs(name: str, params) -> dict:
    """An estimator's parameters and, prefixed `what_`, what its numbers are (info.describe)."""
    from fedmpi import info
    out = _attrs_of(params)
    out.update({f"what_{k}": v for k, v in info.describe(name, params).items()})
    return out
