"""Divergence accumulation: per-layer divergence of the workers' models against depth, width and kernel.

    python benchmarks/divergence.py --data-root DIR [--out runs/divergence] [--workers 4]

neighbours.md ("divergence accumulation") says that the workers' models
drift apart more in deeper layers, and that wider models and smaller
receptive fields reduce it. This runs the plain CNN (`model: cnn`) on
CIFAR-10 with `trace.divergence: true` for depth 2, 4, 6 and 8 (width 32,
kernel 3, iid), then width 16, 32 and 64 and kernel 3 and 5 at depth 4,
and prints, per run, the relative divergence D_l of each layer's
weight at the last sync point and its mean over the run's sync points.

Scaled to this machine: 4 workers, 1,000 images each, batch 32, lr 0.01,
momentum 0.9, 4 epochs, a sync point every 32 batches (one epoch), every
sync point logged. Traces go to --out for `python -m fedmpi analyze --plots`
(heat maps of every layer).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASE = ["data.name=cifar10", "data.samples_per_worker=1000", "data.probe_size=100", "data.eval_size=500",
        "data.test_size=1000", "train.batch_size=32", "train.lr=0.01", "train.momentum=0.9", "train.epochs=4",
        "sync.every=32", "mi.estimators=[]", "trace.activations=false", "trace.divergence=true",
        "checkpoint.every=0", "device=cpu", "model.name=cnn"]
RUNS = ([("depth", d, [f"model.depth={d}"]) for d in (2, 4, 6, 8)]
        + [("width", w, ["model.depth=4", f"model.width={w}"]) for w in (16, 64)]
        + [("kernel", k, ["model.depth=4", f"model.kernel={k}"]) for k in (5,)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "divergence")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--mpiexec", default="mpiexec")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    print(f"machine: {os.cpu_count()} CPUs, {args.workers} workers, traces in {args.out}")
    for what, value, sets in RUNS:
        name = f"cnn-{what}{value}"
        cmd = [*args.mpiexec.split(), "-n", str(args.workers + 1), sys.executable, "-m", "fedmpi",
               "-o", str(args.out), "--force", "--set", f"trace.path={name}.h5", "--set", f"data.root={args.data_root}"]
        for s in BASE + sets:
            cmd += ["--set", s]
        subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        with h5py.File(args.out / f"{name}.h5", "r") as f:
            names = [n.decode() for n in f["model/layout/names"][:]]
            rel = f["divergence/relative"][:]  # (R, L)
            acc = f["metrics/test_acc"][-1]
        convs = [i for i, n in enumerate(names) if n.endswith(".weight")]  # every layer's weight
        last = " ".join(f"{rel[-1, i]:.4f}" for i in convs)
        mean = " ".join(f"{np.nanmean(rel[:, i]):.4f}" for i in convs)
        print(f"{name:14s} test acc {acc:.4f}\n  layer weights, input first: {[names[i] for i in convs]}\n"
              f"  D_l last sync point: {last}\n  D_l mean over sync points: {mean}", flush=True)


if __name__ == "__main__":
    main()
