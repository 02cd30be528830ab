"""FedAvg, FedProx, SCAFFOLD and FedPVR on heterogeneous CIFAR-10: accuracy per round and per byte.

    python benchmarks/algorithms.py --data-root DIR [--out runs/algorithms] [--target 0.3]

10 simulated clients (`clients.total: 10`, all of them in every round) on 2
workers, Dirichlet(alpha = 0.1) over the labels, LeNet, 300 images per
client, batch 32, plain SGD at --lr (default 0.05; SCAFFOLD is defined for
plain SGD, and with momentum 0.9 at lr 0.01 its run diverged here at sync
point 10), a sync point every 10 batches of
each client, 30 sync points, every one logged. For each algorithm it prints
the final and best test accuracy, the first sync point at which the test
accuracy reaches --target, the bytes all workers sent up over the run
(`/comm/bytes_up`, control variates included) and the test accuracy at a
fixed communication budget: the row at which FedAvg's run had sent half its
bytes. FedProx uses mu = 0.01; FedPVR puts control variates on the
classifier head (its default). Scaled down from the papers (which use 100
clients and hundreds of rounds) to finish in minutes here.
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
BASE = ["data.name=cifar10", "data.partition=dirichlet", "data.alpha=0.1", "data.samples_per_worker=300",
        "data.probe_size=100", "data.eval_size=300", "data.test_size=2000", "clients.total=10",
        "train.batch_size=32", "train.momentum=0.0", "train.epochs=30", "sync.every=10",
        "mi.estimators=[]", "trace.activations=false", "checkpoint.every=0", "device=cpu"]
ALGORITHMS = (("fedavg", []), ("fedprox", ["algorithm.mu=0.01"]), ("scaffold", []), ("fedpvr", []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "algorithms")
    parser.add_argument("--target", type=float, default=0.3)
    parser.add_argument("--lr", type=float, default=0.05, help="local learning rate (plain SGD)")
    parser.add_argument("--mpiexec", default="mpiexec")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    print(f"machine: {os.cpu_count()} CPUs; lr {args.lr}; traces in {args.out}")
    results = {}
    for name, sets in ALGORITHMS:
        cmd = [*args.mpiexec.split(), "-n", "3", sys.executable, "-m", "fedmpi", "-o", str(args.out), "--force",
               "--set", f"trace.path={name}.h5", "--set", f"data.root={args.data_root}",
               "--set", f"algorithm.name={name}", "--set", f"train.lr={args.lr}"]
        for s in BASE + sets:
            cmd += ["--set", s]
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode:
            errors = [line for line in proc.stderr.splitlines() if "Error:" in line]
            print(f"{name}: failed: {errors[-1] if errors else proc.stderr.strip().splitlines()[-1]}")
            continue
        with h5py.File(args.out / f"{name}.h5", "r") as f:
            results[name] = (f["metrics/test_acc"][:], np.cumsum(f["comm/bytes_up"][:].sum(axis=1)),
                             f["rounds/index"][:] + 1)
    if "fedavg" not in results:
        sys.exit("the FedAvg run failed: no budget to compare at")
    budget = results["fedavg"][1][-1] / 2
    print(f"{'algorithm':10s} {'final acc':>9s} {'best acc':>8s} {'sync point >= target':>20s} "
          f"{'MB up':>8s} {'acc at FedAvg/2 bytes':>21s}")
    for name, (acc, sent, sync_point) in results.items():
        hit = np.nonzero(acc >= args.target)[0]
        within = np.nonzero(sent <= budget)[0]
        print(f"{name:10s} {acc[-1]:9.4f} {acc.max():8.4f} {str(sync_point[hit[0]]) if len(hit) else '-':>20s} "
              f"{sent[-1] / 1e6:8.2f} {acc[within[-1]] if len(within) else float('nan'):21.4f}")
    print(f"target test accuracy {args.target}; budget {budget / 1e6:.2f} MB (half of FedAvg's run)")


if __name__ == "__main__":
    main()
