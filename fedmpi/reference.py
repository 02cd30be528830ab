"""The same algorithm in one process, without MPI: the reference for the MPI run.

It builds the same plan, the same `LocalTrainer` per worker and averages
with the pure `weighted_average`, running the workers one after another. An
MPI run of a job and `run_reference` of the same job (CPU, same seed, same
number of workers) must agree to float32 rounding; tests hold them to it.
It is slow by design (no parallelism) and meant for small jobs.
"""

from __future__ import annotations

import numpy as np
import torch

from fedmpi import data
from fedmpi.averaging import weighted_average
from fedmpi.flat import FlatParams
from fedmpi.local import LocalTrainer, evaluate, evaluate_and_continue, new_model, worker_tensors
from fedmpi.plan import make_plan


def run_reference(cfg, num_workers: int) -> dict[str, np.ndarray]:
    """Run `cfg` with `num_workers` simulated workers; returns trace-shaped arrays.

    Keys: step [R], test_acc [R], test_loss [R], local_acc, local_loss, averaged_acc,
    averaged_loss, train_loss [R, W], z_local, z_averaged [R, W, P, D] (when the run
    logs activations) and final_averaged [N].
    """
    torch.set_num_threads(cfg.train.threads)
    dataset = data.load(cfg.data, num_workers, cfg.seed)
    plan = make_plan(cfg, dataset.train_y, len(dataset.test_y), num_workers)
    schedule = plan.schedule
    tensors = [worker_tensors(dataset, w, "cpu") for w in plan.workers]
    trainers = [LocalTrainer(cfg, new_model(cfg, dataset.input_shape, dataset.num_classes, "cpu"), x, y, k)
                for k, (x, y, _, _) in enumerate(tensors)]
    weights = np.asarray(plan.num_examples, dtype=np.float32)
    evaluator = new_model(cfg, dataset.input_shape, dataset.num_classes, "cpu")
    evaluator_flat = FlatParams(evaluator)
    test_x = dataset.to_tensor(dataset.test_x[plan.test_indices])
    test_y = torch.from_numpy(dataset.test_y[plan.test_indices])

    out: dict[str, list] = {key: [] for key in (
        "step", "test_acc", "test_loss", "local_acc", "local_loss", "averaged_acc", "averaged_loss",
        "train_loss", "z_local", "z_averaged")}
    averaged = None
    for i in range(schedule.num_syncs):
        losses = [t.train(schedule.steps_before(i)) for t in trainers]
        thetas = np.stack([t.flat.vector.numpy() for t in trainers])  # (W, N) float32
        averaged = torch.from_numpy(weighted_average(thetas, weights))
        if not schedule.logged(i):
            if cfg.sync.redistribute:
                for t in trainers:
                    t.flat.assign(averaged)
            continue
        probe = plan.probe_size if schedule.wants_z(i) else 0
        pairs = [evaluate_and_continue(t, averaged, ex, ey, probe, cfg.sync.redistribute)
                 for t, (_, _, ex, ey) in zip(trainers, tensors)]
        evaluator_flat.assign(averaged)
        test = evaluate(evaluator, test_x, test_y)
        out["step"].append(schedule.step(i))
        out["test_acc"].append(test.accuracy)
        out["test_loss"].append(test.loss)
        out["local_acc"].append([lo.accuracy for lo, _ in pairs])
        out["local_loss"].append([lo.loss for lo, _ in pairs])
        out["averaged_acc"].append([av.accuracy for _, av in pairs])
        out["averaged_loss"].append([av.loss for _, av in pairs])
        out["train_loss"].append(losses)
        if probe and cfg.trace.activations:
            out["z_local"].append(np.stack([lo.z_probe.numpy() for lo, _ in pairs]))
            out["z_averaged"].append(np.stack([av.z_probe.numpy() for _, av in pairs]))
    result = {key: np.asarray(values) for key, values in out.items() if len(values)}
    result["final_averaged"] = averaged.numpy().copy()
    return result
