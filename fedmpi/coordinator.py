"""The coordinator loop (rank 0): average, evaluate, measure, write the trace.

It trains nothing. At every sync point it joins the sum of the workers'
contributions (giving zeros); at logged ones it collects the workers' metrics
and representations first — so they go back to training at once — then
evaluates the averaged model on the test set, writes the round, and hands the
representations to the MI pipeline, which estimates while the workers train.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from fedmpi import config as config_mod
from fedmpi.averaging import average_from_sum
from fedmpi.console import Console
from fedmpi.flat import FlatParams, layout_arrays
from fedmpi.local import evaluate, new_model
from fedmpi.measure import MIPipeline
from fedmpi.trace import TraceWriter
from fedmpi.worker import METRICS


def run_coordinator(comm, cfg, dataset, plan, trace_path: str, job: str, console: Console) -> int:
    torch.set_num_threads(cfg.train.threads)
    W, P = plan.num_workers, plan.probe_size
    schedule = plan.schedule
    probe_x, probe_y = comm.gather_probes(np.zeros((P,) + dataset.input_shape, np.float32),
                                          np.zeros(P, np.int64))
    model = new_model(cfg, dataset.input_shape, dataset.num_classes, "cpu")
    flat = FlatParams(model)
    test_x = dataset.to_tensor(dataset.test_x[plan.test_indices])  # (T, C, H, W) float32
    test_y = torch.from_numpy(dataset.test_y[plan.test_indices])
    D = model.representation_dim
    mi_params = {name: cfg.mi.params(name) for name in cfg.mi.estimators}
    probe_indices = np.stack([w.shard[w.probe_positions] for w in plan.workers])  # (W, P) global indices

    writer = TraceWriter(
        trace_path, config_yaml=config_mod.to_yaml(cfg), job=job, world_size=comm.world_size,
        num_examples=plan.num_examples, metric_names=METRICS, layout=layout_arrays(flat.slots),
        probe_indices=probe_indices, probe_labels=probe_y,
        probe_inputs=probe_x if cfg.trace.activations else None, representation_dim=D,
        activations=cfg.trace.activations,
        mi_params={n: _attrs(p) for n, p in mi_params.items()})
    mi = MIPipeline(mi_params, probe_x, probe_y) if mi_params else None

    zero_buf = np.zeros(flat.size + 1, dtype=np.float32)  # the coordinator adds nothing to the sum
    sum_buf = np.empty_like(zero_buf)
    metrics_buf = np.zeros(len(METRICS), dtype=np.float64)
    z_buf = np.zeros((2, P, D), dtype=np.float32)
    steps_per_epoch = schedule.total_steps / cfg.train.epochs
    console.start(f"fedmpi {job}: {W} workers, {cfg.data.name} {cfg.data.partition}, "
                  f"sync every {schedule.sync_every} batches "
                  f"({'with' if cfg.sync.redistribute else 'without'} redistribution), "
                  f"{schedule.num_syncs} sync points -> {trace_path}")
    start = time.perf_counter()
    averaged = None
    test = None
    for i in range(schedule.num_syncs):
        comm.sum_contributions(zero_buf, sum_buf, cfg.sync.collective)
        if not schedule.logged(i):
            continue
        want_z = schedule.wants_z(i)
        worker_metrics, z = comm.report(metrics_buf, z_buf if want_z else None)
        averaged = average_from_sum(sum_buf)
        flat.assign(torch.from_numpy(averaged))
        test = evaluate(model, test_x, test_y)
        row = writer.append(index=i, step=schedule.step(i), epoch=schedule.step(i) / steps_per_epoch,
                            seconds=time.perf_counter() - start, test_acc=test.accuracy,
                            test_loss=test.loss, worker_metrics=worker_metrics, z=z)
        if mi is not None:
            if schedule.mi_due(i):
                mi.submit(row, z, console.note)
            _write_mi(writer, console, mi.poll())
        console.round(i, schedule.step(i) / steps_per_epoch, test.accuracy,
                      worker_metrics[:, METRICS.index("local_acc")],
                      worker_metrics[:, METRICS.index("averaged_acc")])
    if mi is not None:
        _write_mi(writer, console, mi.close())
    writer.close(averaged)
    wall = time.perf_counter() - start
    last = {name: worker_metrics[:, m] for m, name in enumerate(METRICS)}
    console.finish(f"fedmpi {job}: done", {
        "trace": trace_path,
        "sync points": f"{schedule.num_syncs} ({writer.rows} logged)",
        "local batches per worker": str(schedule.total_steps),
        "wall time": f"{wall:.1f} s",
        "test accuracy (averaged)": f"{test.accuracy:.4f}",
        "local accuracy (own shard)": " ".join(f"{v:.4f}" for v in last["local_acc"]),
        "averaged accuracy (each shard)": " ".join(f"{v:.4f}" for v in last["averaged_acc"]),
    })
    return 0


def _write_mi(writer: TraceWriter, console: Console, results) -> None:
    for row, per_estimator in results:
        for name, values in per_estimator.items():
            writer.write_mi(row, name, values)
        name, values = next(iter(per_estimator.items()))
        console.mi(f"I(Z;Y) {name} local {np.mean(values['zy_local']):.2f} "
                   f"averaged {np.mean(values['zy_averaged']):.2f} nats")


def _attrs(params) -> dict:
    import dataclasses
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(params).items()}
