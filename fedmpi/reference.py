"""The same algorithm in one process, without MPI: the reference for the MPI run.

It builds the same plan and the same `ClientGroup` per worker, walks the
same check points, runs the workers one after another, sums their payloads
(and their sync policy's check and measurement values) in rank order as the
collectives do and hands the sums to the same algorithm and policy. An MPI
run of a job and `run_reference` of the same job (CPU, same seed, same
number of workers) must agree to float32 rounding, and take the same sync
decisions; tests hold them to it, for every registered algorithm,
compressor and sync policy. It is slow by design (no parallelism) and meant
for small jobs.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch

from fedmpi import compressed, data, divergence, observe
from fedmpi.device import limit_threads
from fedmpi.flat import FlatParams
from fedmpi.local import (ClientGroup, evaluate, evaluate_with_probe, new_model, probe_bounds, probe_tensors,
                          worker_tensors)
from fedmpi.plan import make_plan
from fedmpi.protocol import CONTROL, Position
from fedmpi.sync import build_policy


def run_reference(cfg, num_workers: int) -> dict[str, np.ndarray]:
    """Run `cfg` with `num_workers` simulated workers; returns trace-shaped arrays.

    Keys: step [R], index [R] (the sync point of each row), check_index [R] (its check point),
    sync_<key> [R] (each key of the sync policy's state after it), test_acc [R], test_loss [R], test_examples [R],
    local_acc, local_loss, averaged_acc,
    averaged_loss, train_loss [R, W], bounds [R, W, len(BOUNDS)], sampled [R, S], z_local, z_averaged [R, W, P, D]
    (when the run logs activations), comm_diagnostics [R, len(compressed.DIAGNOSTICS)],
    divergence_relative and divergence_drift_diversity [R, L] (with trace.divergence),
    final_averaged [num_params] and syncs (the number of sync points).
    """
    limit_threads(cfg.train.threads)
    dataset = data.load(cfg.data, cfg.clients.total or num_workers, cfg.seed)
    plan = make_plan(cfg, dataset.train_y, len(dataset.test_y), num_workers, dataset.test_y)
    schedule = plan.schedule
    tensors = [worker_tensors(dataset, w, "cpu") for w in plan.workers]
    probes = [probe_tensors(dataset, w, ex, ey, plan.probe_size, "cpu")
              for w, (_, _, ex, ey) in zip(plan.workers, tensors)]
    groups = [ClientGroup(cfg, dataset, w, x, y, "cpu", plan.num_clients, worker=k)
              for k, (w, (x, y, _, _)) in enumerate(zip(plan.workers, tensors))]
    evaluator = new_model(cfg, dataset.input_shape, dataset.num_classes, "cpu")
    evaluator_flat = FlatParams(evaluator)
    test_x = dataset.inputs(dataset.test_x[plan.test_indices])
    test_y = torch.from_numpy(dataset.test_y[plan.test_indices])
    subset = torch.from_numpy(plan.test_subset)
    tests = {True: (test_x, test_y), False: (test_x[subset], test_y[subset])}  # data.test_subset
    algorithm = groups[0].algorithm
    payloads = np.empty((num_workers, algorithm.contribution_size), dtype=np.float32)  # each worker's
    server = algorithm.server_init(evaluator_flat.vector.numpy())

    out: dict[str, list] = defaultdict(list)
    uplink = groups[0].uplink
    message = (payloads.shape[1] + len(CONTROL)) * 4 if uplink is None else \
        compressed.message_bytes(uplink.compressor, algorithm.num_params)
    policy = build_policy(cfg.sync.policy.name, cfg.sync.policy.params)
    position = Position.start(policy)
    signals = np.zeros((num_workers, len(policy.check_values)), dtype=np.float64)  # each worker's check values
    measures = np.zeros((num_workers, len(policy.measure_values)), dtype=np.float64)
    for j in range(schedule.num_checks):
        final = j == schedule.num_checks - 1
        i = position.syncs  # the round under way ends at sync point i
        for k, g in enumerate(groups):
            if not g.in_round:
                g.begin_round(set(plan.sampled(i)), schedule.learning_rate(i))
            g.train_segment(schedule.client_steps(j), f"worker {k + 1}")
        for k, g in enumerate(groups):
            policy.signal(observe.check_view(g), signals[k])
        if not position.decide(policy, _in_rank_order(signals), final):
            continue
        losses = [g.finish_round(payloads[k]) for k, g in enumerate(groups)]
        logged = schedule.logs(i, final)
        diagnostics = np.full(len(compressed.DIAGNOSTICS), np.nan)
        diagnostics[0] = compressed.uplink_bits(message, num_workers, algorithm.num_params)
        if uplink is None:
            summed = _in_rank_order(payloads)
            server = algorithm.aggregate(server, summed)
            for g in groups:
                g.aggregate(summed)
        else:
            messages = np.stack([g.message(payloads[k], i, False) for k, g in enumerate(groups)])
            combined = compressed.combine(uplink.compressor, messages, server["theta"])
            server = {"theta": combined.theta}
            for g in groups:
                g.set_global(combined.theta)
            if cfg.compression.measure_distortion and logged:
                diagnostics[1:] = compressed.diagnose(combined, np.stack([g.uplink.update for g in groups]))
        if policy.measure_values:
            for k, (g, (px, py)) in enumerate(zip(groups, probes)):
                policy.measure(observe.sync_view(g, px, py), measures[k])
            position.measured(policy, _in_rank_order(measures))
        if not logged:
            continue
        out["check_index"].append(j)
        for key in policy.state_keys:
            out[f"sync_{key}"].append(position.policy_state[key])
        out["comm_diagnostics"].append(diagnostics)
        if cfg.trace.divergence:
            P = algorithm.num_params
            rows = np.stack([g.divergence_row(np.empty(2 * P, np.float32)) for g in groups])
            relative, diversity = divergence.layer_divergence(rows[:, :P], rows[:, P:], evaluator_flat.slots)
            out["divergence_relative"].append(relative)
            out["divergence_drift_diversity"].append(diversity)
        want_z = schedule.z_at(i, final)
        pairs = [evaluate_with_probe(g, ex, ey, px, py, want_z, w.held_out_probe)
                 for g, w, (_, _, ex, ey), (px, py) in zip(groups, plan.workers, tensors, probes)]
        evaluator_flat.assign(torch.from_numpy(server["theta"]))
        test = evaluate(evaluator, *tests[plan.full_test(final)])
        out["step"].append(schedule.step(j))
        out["index"].append(i)
        out["test_acc"].append(test.accuracy)
        out["test_examples"].append(test.examples)
        out["test_loss"].append(test.loss)
        out["local_acc"].append([lo.accuracy for lo, _ in pairs])
        out["local_loss"].append([lo.loss for lo, _ in pairs])
        out["averaged_acc"].append([av.accuracy for _, av in pairs])
        out["averaged_loss"].append([av.loss for _, av in pairs])
        out["train_loss"].append(losses)
        out["bounds"].append([probe_bounds(py.numpy(), lo, av) for (lo, av), (_, py) in zip(pairs, probes)])
        out["sampled"].append(plan.sampled(i))
        if want_z and cfg.trace.activations:
            out["z_local"].append(np.stack([lo.z_probe.numpy() for lo, _ in pairs]))
            out["z_averaged"].append(np.stack([av.z_probe.numpy() for _, av in pairs]))
    result = {key: np.asarray(values) for key, values in out.items() if len(values)}
    result["final_averaged"] = server["theta"].copy()
    result["syncs"] = position.syncs
    return result


def _in_rank_order(parts: np.ndarray) -> np.ndarray:
    """The sum of each worker's buffer (W, n) as a collective makes it: the coordinator's zeros
    first, then worker after worker."""
    summed = np.zeros(parts.shape[1], dtype=parts.dtype)
    for part in parts:
        summed += part
    return summed
