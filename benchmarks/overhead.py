"""What fedmpi costs on top of plain PyTorch training, measured side by side in one run.

    python benchmarks/overhead.py [--steps 3000] [--mpiexec mpiexec]

(a) plain single-process PyTorch: LeNet, batch 32, SGD with momentum, one
    thread, batches indexed from an in-memory tensor; local steps per second.
(b) fedmpi with 2 workers (`mpiexec -n 3`), sync every 100 batches,
    activations and MI off, metrics at every 10th sync point (trace.every=10;
    before 2026-12-04 only the last was logged): local steps per second per
    worker, over the whole run (every sync included).
(c) as (b) but logging metrics at every sync point (evaluation of the local
    and averaged model on 2,000 shard examples and of the test set): the
    price of measuring, reported separately.
(a2) two copies of (a) at once: what two processes on this machine's cores
    get each, without any fedmpi, so the machine's own contention (shared
    caches, memory bandwidth) can be told apart from fedmpi's overhead.
(a2cl) as (a2), with each batch in channels-last memory format, as fedmpi
    trains on images since 2026-12-04 (`Inputs.layout`): how much of b/a2 is
    the layout, which plain PyTorch code could use too.
(before) with --before DIR: (b) run again from another checkout of fedmpi
    (its `fedmpi` package and jobs/smoke.yaml), alternating with this
    checkout's (b) twice each, so a restructuring's cost shows as a ratio
    measured in the same run.
It prints b/a, b/a2 and c/a and the coordinator's CPU seconds per wall second
while the workers train (from /timing/coordinator_cpu_seconds in the trace).
Data are synthetic images of CIFAR-10's shape: the compute per step is the
same as on CIFAR-10. (a) runs twice, before and after (b) and (c), and the
mean is used, so drift of the machine shows up in the spread.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedmpi.data import synthetic  # noqa: E402
from fedmpi.models import build_model  # noqa: E402

BATCH = 32
SYNC_EVERY = 100
EXAMPLES = 3200  # per worker: 100 batches per epoch


def plain_steps_per_second(steps: int, channels_last: bool = False) -> float:
    torch.set_num_threads(1)
    data = synthetic(EXAMPLES, 10, seed=0)
    x = torch.from_numpy(data.train_x)
    y = torch.from_numpy(data.train_y)
    model = build_model("lenet", (3, 32, 32), 10, seed=0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    perm, pos = torch.randperm(len(y), generator=gen), 0
    start = time.perf_counter()
    for _ in range(steps):
        if pos >= len(y):
            perm, pos = torch.randperm(len(y), generator=gen), 0
        idx = perm[pos:pos + BATCH]
        pos += BATCH
        batch = x.index_select(0, idx)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(model(batch), y.index_select(0, idx))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps / (time.perf_counter() - start)


def two_plain_at_once(steps: int, channels_last: bool = False) -> list[float]:
    code = (f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
            f"from overhead import plain_steps_per_second as f; print(f({steps}, {channels_last}))")
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    return [float(p.communicate()[0]) for p in procs]


def fedmpi_run(mpiexec: list[str], steps: int, out: Path, name: str, trace_every: int,
               root: Path = ROOT) -> dict:
    epochs = steps // (EXAMPLES // BATCH)
    sets = [f"data.samples_per_worker={EXAMPLES}", "data.probe_size=1000", "data.eval_size=2000",
            "data.test_size=10000", f"train.epochs={epochs}", f"sync.every={SYNC_EVERY}",
            "trace.activations=false", "mi.estimators=[]", f"trace.every={trace_every}",
            f"trace.path={name}.h5", "train.lr=0.01", "train.momentum=0.9"]
    cmd = [*mpiexec, "-n", "3", sys.executable, "-m", "fedmpi", "-c", str(root / "jobs" / "smoke.yaml"),
           "-o", str(out)]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    subprocess.run(cmd, check=True, cwd=root, env=env, stdout=subprocess.DEVNULL)
    with h5py.File(out / f"{name}.h5", "r") as f:
        wall = f["rounds/time"][-1]
        total_steps = int(f["rounds/step"][-1])
        cpu = f["timing/coordinator_cpu_seconds"][-1]
        train = f["timing/train_seconds"][:].sum(axis=0)
        sync = f["timing/sync_seconds"][:].sum(axis=0)
    return dict(steps_per_s=total_steps / wall, wall=wall, steps=total_steps, coord_cpu_per_s=cpu / wall,
                train_s=train, sync_s=sync)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3000, help="local steps per worker (multiple of 100)")
    parser.add_argument("--mpiexec", default="mpiexec", help="MPI launcher (add Open MPI flags yourself)")
    parser.add_argument("--before", type=Path, default=None,
                        help="another checkout of fedmpi whose (b) is measured alternately with this one's")
    args = parser.parse_args()
    mpiexec = args.mpiexec.split()
    if args.before is not None:
        compare(mpiexec, args.steps, args.before.resolve())
        return
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, steps per run {args.steps}")
    a1 = plain_steps_per_second(args.steps)
    with tempfile.TemporaryDirectory() as tmp:
        b = fedmpi_run(mpiexec, args.steps, Path(tmp), "every-10th", trace_every=10)
        c = fedmpi_run(mpiexec, args.steps, Path(tmp), "metrics-every-sync", trace_every=1)
    pair = two_plain_at_once(args.steps)
    pair_cl = two_plain_at_once(args.steps, channels_last=True)
    a_end = plain_steps_per_second(args.steps)
    a = (a1 + a_end) / 2
    a2, a2cl = sum(pair) / 2, sum(pair_cl) / 2
    print(f"(a)  plain PyTorch, 1 thread:            {a:8.1f} steps/s  (runs: {a1:.1f}, {a_end:.1f})")
    print(f"(a2) two plain processes at once:        {a2:8.1f} steps/s each ({pair[0]:.1f}, {pair[1]:.1f})")
    print(f"(a2cl) the same, channels-last batches: {a2cl:8.1f} steps/s each ({pair_cl[0]:.1f}, {pair_cl[1]:.1f})")
    print(f"(b) fedmpi -n 3, sync every {SYNC_EVERY}, every 10th logged: {b['steps_per_s']:8.1f} steps/s per worker "
          f"({b['steps']} steps in {b['wall']:.1f} s)")
    print(f"    per worker: training {np.round(b['train_s'], 1)} s, in sync {np.round(b['sync_s'], 2)} s")
    print(f"(c) fedmpi -n 3, metrics every sync:      {c['steps_per_s']:8.1f} steps/s per worker "
          f"({c['steps']} steps in {c['wall']:.1f} s)")
    print(f"ratio b/a = {b['steps_per_s'] / a:.3f}   (target >= 0.90)")
    print(f"ratio b/a2 = {b['steps_per_s'] / a2:.3f}  (target >= 0.95: fedmpi against the same two processes without it)")
    print(f"ratio b/a2cl = {b['steps_per_s'] / a2cl:.3f}  (against plain PyTorch in fedmpi's memory layout)")
    print(f"ratio c/a = {c['steps_per_s'] / a:.3f}   (with evaluation at every sync point)")
    print(f"coordinator CPU s per wall s while workers train: {b['coord_cpu_per_s']:.4f} (target <= 0.05)")


def compare(mpiexec: list[str], steps: int, before: Path) -> None:
    """(b) from `before` and from this checkout, alternating: before, after, before, after."""
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, steps per run {steps}")
    print(f"before: {before}\nafter:  {ROOT}")
    rates: dict[str, list[float]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(2):
            for label, root in (("before", before), ("after", ROOT)):
                r = fedmpi_run(mpiexec, steps, Path(tmp), f"{label}-{i}", trace_every=10, root=root)
                rates[label].append(r["steps_per_s"])
                print(f"(b) {label:6s} run {i + 1}: {r['steps_per_s']:8.1f} steps/s per worker "
                      f"({r['steps']} steps in {r['wall']:.1f} s)")
    b, a = np.mean(rates["before"]), np.mean(rates["after"])
    print(f"mean before {b:.1f}, after {a:.1f} steps/s per worker; ratio after/before = {a / b:.3f}")


if __name__ == "__main__":
    main()
