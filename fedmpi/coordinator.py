"""The coordinator loop (rank 0): average, evaluate, measure, write the trace.

It trains nothing. At every sync point it joins the sum of the workers'
contributions (giving zeros); at logged ones it collects the workers' metrics
and representations and hands the averaged model and the representations to
its measurement thread (test accuracy, mutual information), which works while
the workers train towards the next sync point. A round is written to the
trace once its test accuracy is known; MI values follow when estimated.
Every `checkpoint.every` sync points, and when a rank got SIGTERM/SIGUSR1,
it collects the workers' states, waits for the measurements to catch up and
writes one checkpoint next to the trace.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import torch

from fedmpi import checkpoint
from fedmpi import config as config_mod
from fedmpi.averaging import average_from_sum
from fedmpi.console import Console
from fedmpi.flat import layout_arrays
from fedmpi.local import new_model
from fedmpi.measure import Measurements
from fedmpi.trace import TraceWriter
from fedmpi.worker import METRICS, checkpoint_due


def run_coordinator(comm, cfg, dataset, plan, trace_path: str, job: str, console: Console, stop,
                    resume_state: dict | None = None) -> int:
    torch.set_num_threads(cfg.train.threads)
    W, P = plan.num_workers, plan.probe_size
    schedule = plan.schedule
    placement = comm.placement()
    probe_x, probe_y = comm.gather_probes(np.zeros((P,) + dataset.input_shape, np.float32),
                                          np.zeros(P, np.int64))
    model = new_model(cfg, dataset.input_shape, dataset.num_classes, "cpu")  # evaluated by `measurements`
    test_x = dataset.to_tensor(dataset.test_x[plan.test_indices])  # (T, C, H, W) float32
    test_y = torch.from_numpy(dataset.test_y[plan.test_indices])
    D = model.representation_dim
    mi_params = {name: cfg.mi.params(name) for name in cfg.mi.estimators}
    probe_indices = np.stack([w.shard[w.probe_positions] for w in plan.workers])  # (W, P) global indices
    measurements = Measurements(model, test_x, test_y, mi_params, probe_x, probe_y)
    config_yaml = config_mod.to_yaml(cfg)
    ckpt_path = checkpoint.path_for(trace_path)

    first, elapsed, cpu_used = 0, 0.0, 0.0
    if resume_state is None:
        writer = TraceWriter(
            trace_path, config_yaml=config_yaml, job=job, world_size=comm.world_size,
            num_examples=plan.num_examples, metric_names=METRICS, layout=layout_arrays(measurements.flat.slots),
            probe_indices=probe_indices, probe_labels=probe_y,
            probe_inputs=probe_x if cfg.trace.activations else None, representation_dim=D,
            activations=cfg.trace.activations,
            mi_params={n: _attrs(p) for n, p in mi_params.items()},
            client_owner=np.concatenate([[k] * len(w.client_ids) for k, w in enumerate(plan.workers)]),
            clients_per_round=plan.clients_per_round)
    else:
        next_sync = resume_state["sync_index"] + 1
        comm.distribute([{"group": s, "next_sync": next_sync} for s in resume_state["workers"]])
        writer = TraceWriter.reopen(trace_path, resume_state["rows"], METRICS)
        first, elapsed, cpu_used = next_sync, resume_state["elapsed"], resume_state["cpu_seconds"]

    zero_buf = np.zeros(measurements.flat.size + 2, dtype=np.float32)  # [w * theta, w, stop]: zeros
    sum_buf = np.empty_like(zero_buf)
    metrics_buf = np.zeros(len(METRICS), dtype=np.float64)
    z_buf = np.zeros((2, P, D), dtype=np.float32)
    steps_per_epoch = schedule.total_steps / cfg.train.epochs
    ranks = ", ".join(f"{r}={host}:{pid}" for r, host, pid in placement)
    console.start(f"fedmpi {job}: {W} workers, {cfg.data.name} {cfg.data.partition}, "
                  f"sync every {schedule.sync_every} batches "
                  f"({'with' if cfg.sync.redistribute else 'without'} redistribution), "
                  f"{schedule.num_syncs} sync points -> {trace_path}"
                  + (f"\nresuming after sync point {first}/{schedule.num_syncs}" if first else "")
                  + f"\nranks (rank=host:pid): {ranks}", first=first)
    # Rounds reported by the workers, waiting for their test evaluation to be written.
    pending: dict[int, dict] = {}
    last: dict = {}

    def record(results) -> None:
        for res in results:
            if res.kind == "test":
                entry = pending.pop(res.row)
                writer.append(test_acc=res.value.accuracy, test_loss=res.value.loss, **entry)
                last.update(entry, test_acc=res.value.accuracy)
                wm = entry["worker_metrics"]
                console.round(entry["index"], entry["epoch"], res.value.accuracy,
                              wm[:, METRICS.index("local_acc")], wm[:, METRICS.index("averaged_acc")])
            else:
                for name, values in res.value.items():
                    writer.write_mi(res.row, name, values)
                name, values = next(iter(res.value.items()))
                console.mi(f"I(Z;Y) {name} local {np.mean(values['zy_local']):.2f} "
                           f"averaged {np.mean(values['zy_averaged']):.2f} nats")

    start = time.perf_counter() - elapsed
    cpu_start = time.process_time() - cpu_used
    row = writer.rows
    for i in range(first, schedule.num_syncs):
        zero_buf[-1] = stop.requested
        comm.sum_contributions(zero_buf, sum_buf, cfg.sync.collective)
        if schedule.logged(i):
            # Read before measuring: the coordinator's CPU cost of waiting through the workers' training.
            cpu_seconds = time.process_time() - cpu_start
            worker_metrics, z = comm.report(metrics_buf, z_buf if schedule.wants_z(i) else None)
            pending[row] = dict(index=i, step=schedule.step(i), epoch=schedule.step(i) / steps_per_epoch,
                                seconds=time.perf_counter() - start, coordinator_cpu=cpu_seconds,
                                sampled=plan.sampled(i),
                                worker_metrics=worker_metrics, z=z if cfg.trace.activations else None)
            mi_z = z if mi_params and schedule.mi_due(i) else None
            measurements.submit(row, average_from_sum(sum_buf[:-1]), mi_z, console.note)
            row += 1
            record(measurements.poll())
        stopping = sum_buf[-1] > 0
        if checkpoint_due(cfg, schedule, i, stopping):
            states = comm.collect(None)
            record(measurements.drain())
            checkpoint.save(ckpt_path, {
                "config": config_yaml, "world_size": comm.world_size, "sync_index": i, "rows": writer.rows,
                "elapsed": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start,
                "workers": [s["group"] for s in states]})
            if stopping:
                measurements.close()
                writer.close(None)
                console.note(f"checkpointed after sync point {i + 1}/{schedule.num_syncs} on request "
                             f"(SIGTERM/SIGUSR1); continue with: python -m fedmpi run --resume {trace_path}")
                return 0
    record(measurements.close())
    writer.close(average_from_sum(sum_buf[:-1]))  # the last sync point is always logged
    checkpoint.remove(ckpt_path)  # the run is complete: nothing left to resume
    wall = time.perf_counter() - start
    wm = last["worker_metrics"]
    console.finish(f"fedmpi {job}: done", {
        "trace": trace_path,
        "sync points": f"{schedule.num_syncs} ({writer.rows} logged)",
        "local batches per worker": str(schedule.total_steps),
        "wall time": f"{wall:.1f} s",
        "test accuracy (averaged)": f"{last['test_acc']:.4f}",
        "local accuracy (own shard)": " ".join(f"{v:.4f}" for v in wm[:, METRICS.index("local_acc")]),
        "averaged accuracy (each shard)": " ".join(f"{v:.4f}" for v in wm[:, METRICS.index("averaged_acc")]),
    })
    return 0


def _attrs(params) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(params).items()}
