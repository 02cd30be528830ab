"""Sync policies against each other: bytes communicated against final test accuracy (a Pareto plot).

    python benchmarks/sync_policies.py --data-root DIR [--out runs/sync_policies] [--figure FILE] [--seeds 0 1]

LeNet on CIFAR-10, 2 workers with --samples images each (default 2,500),
iid and non-iid (`classes`: labels 0-4 on worker 1, 5-9 on worker 2, the
split of Adilova et al. 2019), batch 32, lr 0.01, momentum 0.9, --epochs
local epochs (default 10), test accuracy on 2,000 test images. Check points
every 4 local batches; then, per partition:

- periodic sync every 4, 16 and 64 batches (`sync.every`);
- dynamic (Kamp et al. 2018) at Delta in DELTAS: ||theta_c - r||^2 checked every 4 batches;
- information at the thresholds in THRESHOLDS (nats), period 1 to 16 check points (4 to 64 batches),
  its other parameters at their defaults (z 2, 256 probe examples).

Each run is repeated for every seed of --seeds (data split, initialisation,
batch order); the table gives each seed's numbers and the figure their mean,
with the range over seeds as error bars.

For each run it reads from the trace the bytes all workers handed to MPI
over the whole run (`/comm/bytes_up` + `/comm/bytes_down`, every collective
counted: sync points, check and measurement collectives, reports), the sync
points made, the final test accuracy and the wall time, prints a table and
draws accuracy against bytes for both partitions, the Pareto front of each
marked. Runs go one after another (one MPI job at a time); an existing
complete trace is reused unless --force. Scaled down from the papers (25,000
images per worker, 20 epochs, sync every 100 batches in Adilova et al.; deep
nets and many learners in Kamp et al.) to finish in minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASE = ["data.name=cifar10", "data.probe_size=256", "data.eval_size=500", "data.test_size=2000",
        "train.batch_size=32", "train.lr=0.01", "train.momentum=0.9", "mi.estimators=[]",
        "trace.activations=false", "trace.every=10", "checkpoint.every=0", "device=cpu"]
CHECK_EVERY = 4  # local batches between check points (dynamic, information)
PERIODS = (4, 16, 64)
DELTAS = (0.1, 0.5, 2.0)  # squared distances: after 4 batches about 0.001-0.03 (iid), 0.2 (classes)
THRESHOLDS = (0.005, 0.02, 0.08)  # nats of I(Z;Y) lost by averaging, mean over workers
MAX_PERIOD = 16  # check points: 64 batches, the longest periodic run
PARTITIONS = ("iid", "classes")


def runs() -> list[tuple[str, str, list[str]]]:
    """(policy, label, overrides) of every run of one partition."""
    out = [("periodic", f"every {p}", [f"sync.every={p}"]) for p in PERIODS]
    out += [("dynamic", f"Delta {d:g}", [f"sync.every={CHECK_EVERY}", "sync.policy.name=dynamic",
                                          f"sync.policy.delta={d}"]) for d in DELTAS]
    out += [("information", f"threshold {t:g}", [f"sync.every={CHECK_EVERY}", "sync.policy.name=information",
                                                  f"sync.policy.threshold={t}",
                                                  f"sync.policy.max_period={MAX_PERIOD}"]) for t in THRESHOLDS]
    return out


def read(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        if f.attrs.get("status") != "complete":
            raise RuntimeError(f"{path} is not complete")
        sync = {k: f[f"sync/{k}"][-1] for k in f["sync"]} if "sync" in f else {}
        return {"acc": float(f["metrics/test_acc"][-1]), "syncs": int(f["rounds/index"][-1]) + 1,
                "up": int(f["comm/bytes_up"][:].sum()), "down": int(f["comm/bytes_down"][:].sum()),
                "messages": int(f["comm/messages"][:].sum()), "seconds": float(f["rounds/time"][-1]),
                "checks": int(f["sync"].attrs.get("num_checks", 0)) if "sync" in f else 0, "state": sync}


def pareto(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats (fewer or equal bytes and higher or equal accuracy,
    one of them strictly), sorted by bytes."""
    keep = [i for i, (b, a) in enumerate(points)
            if not any((b2 <= b and a2 >= a) and (b2 < b or a2 > a) for b2, a2 in points)]
    return sorted(keep, key=lambda i: points[i][0])


def mean_point(seeds: list[dict]) -> tuple[float, float, float, float]:
    """(MB up + down, accuracy, lowest and highest accuracy) over a run's seeds."""
    acc = [r["acc"] for r in seeds]
    return (float(np.mean([r["up"] + r["down"] for r in seeds])) / 1e6, float(np.mean(acc)), min(acc), max(acc))


def draw(results: dict, figure: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    style = {"periodic": ("o", "tab:blue"), "dynamic": ("s", "tab:orange"), "information": ("^", "tab:green")}
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.8), squeeze=False)
    for ax, (partition, rows) in zip(axes[0], results.items()):
        points = [mean_point(seeds) for _, _, seeds in rows]
        labels: dict[tuple[float, float], list[str]] = {}  # runs that land on the same point share a label
        for (policy, label, _), (mb, acc, low, high) in zip(rows, points):
            marker, color = style[policy]
            ax.errorbar(mb, acc, yerr=[[acc - low], [high - acc]], fmt=marker, color=color, ms=7, capsize=3,
                        label=policy if policy not in ax.get_legend_handles_labels()[1] else None)
            labels.setdefault((round(mb, 1), round(acc, 4)), []).append(label)
        for (mb, acc), names in labels.items():
            ax.annotate(", ".join(names), (mb, acc), textcoords="offset points", xytext=(6, 3), fontsize=7)
        front = pareto([(mb, acc) for mb, acc, _, _ in points])
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="0.6", lw=1, ls="--",
                zorder=0, label="Pareto front (means)")
        ax.set_xscale("log")
        ax.set_xlabel("MB handed to MPI by all workers, whole run (up + down)")
        ax.set_ylabel("final test accuracy (averaged model)")
        ax.set_title(f"LeNet, CIFAR-10, 2 workers, {partition}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(figure, dpi=120)
    print(f"figure: {figure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "sync_policies")
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "figures" / "sync-policies.png")
    parser.add_argument("--samples", type=int, default=2500, help="training images per worker")
    parser.add_argument("--epochs", type=int, default=10, help="local epochs of each worker")
    parser.add_argument("--partitions", nargs="+", default=list(PARTITIONS), choices=PARTITIONS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--force", action="store_true", help="run again even where a complete trace exists")
    parser.add_argument("--mpiexec", default=str(Path(sys.executable).parent / "mpiexec")
                        if (Path(sys.executable).parent / "mpiexec").exists() else "mpiexec")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    print(f"machine: {os.cpu_count()} CPUs; {args.samples} images per worker, {args.epochs} epochs; "
          f"traces in {args.out}")
    results: dict[str, list] = {}
    for partition in args.partitions:
        results[partition] = []
        for policy, label, sets in runs():
            seeds = []
            for seed in args.seeds:
                name = f"{partition}-{policy}-{label.split()[-1]}-seed{seed}"
                path = args.out / f"{name}.h5"
                if args.force or not _complete(path):
                    cmd = [*args.mpiexec.split(), "-n", "3", sys.executable, "-m", "fedmpi", "-o", str(args.out),
                           "--force", "--set", f"trace.path={name}.h5", "--set", f"data.root={args.data_root}",
                           "--set", f"data.partition={partition}", "--set", f"data.samples_per_worker={args.samples}",
                           "--set", f"train.epochs={args.epochs}", "--set", f"seed={seed}"]
                    for s in BASE + sets:
                        cmd += ["--set", s]
                    started = time.perf_counter()
                    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          text=True)
                    if proc.returncode:
                        print(f"{name}: failed: {proc.stderr.strip().splitlines()[-1:]}")
                        continue
                    print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
                seeds.append(dict(read(path), seed=seed))
            if seeds:
                results[partition].append((policy, label, seeds))
    print(f"\n{'partition':9s} {'policy':12s} {'setting':16s} {'seed':>4s} {'sync points':>11s} {'MB up':>8s} "
          f"{'MB up+down':>10s} {'messages':>8s} {'test acc':>8s} {'wall s':>7s}  policy state at the end")
    for partition, rows in results.items():
        for policy, label, seeds in rows:
            for r in seeds:
                state = ", ".join(f"{k} {v:.3g}" for k, v in r["state"].items() if k != "check_index")
                print(f"{partition:9s} {policy:12s} {label:16s} {r['seed']:4d} {r['syncs']:11d} {r['up'] / 1e6:8.2f} "
                      f"{(r['up'] + r['down']) / 1e6:10.2f} {r['messages']:8d} {r['acc']:8.4f} {r['seconds']:7.1f}"
                      f"  {state}")
    print(f"\nmeans over seeds {args.seeds}:")
    print(f"{'partition':9s} {'policy':12s} {'setting':16s} {'sync points':>11s} {'MB up+down':>10s} {'test acc':>8s} "
          f"{'range':>15s}")
    for partition, rows in results.items():
        for policy, label, seeds in rows:
            mb, acc, low, high = mean_point(seeds)
            print(f"{partition:9s} {policy:12s} {label:16s} {np.mean([r['syncs'] for r in seeds]):11.1f} {mb:10.2f} "
                  f"{acc:8.4f} {low:7.4f}-{high:.4f}")
    for partition, rows in results.items():
        front = pareto([mean_point(seeds)[:2] for _, _, seeds in rows])
        print(f"Pareto front of the means, {partition}: " + "; ".join(f"{rows[i][0]} {rows[i][1]}" for i in front))
    if results:
        draw(results, args.figure)


def _complete(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("status") == "complete"
    except OSError:
        return False


if __name__ == "__main__":
    main()
