"""Every compressor on LeNet/CIFAR-10 against the rate-distortion limit, and the two payload paths.

    python benchmarks/compression.py --data-root DIR [--out runs/compression] [--workers 2 8]
        [--partitions iid dirichlet] [--compressors none fp16 qsgd ...] [--paths]

For each number of workers, partition (iid, or Dirichlet alpha = 0.3) and
compressor it runs one fedmpi job (`mpiexec -n W+1`) with
`compression.measure_distortion: true`, and reads from its trace: the final
test accuracy of the averaged model, the update bits per parameter per sync
point of all workers (`/comm/update_bits`), the total bits the update
messages carried, the mean distortion of the aggregate and the mean ratio of
the bits to the rate-distortion limit R_sum at that distortion
(`/comm/rd_limit_bits`). It prints one table per setting and writes the
traces to --out, so `python -m fedmpi analyze OUT/*.h5 --plots FIG` draws the
accuracy-against-bits figure.

The job is scaled to this machine: 1,000 CIFAR-10 images per worker, LeNet,
batch 32, 15 epochs, a sync point every 31 batches (about one epoch), 16
sync points, the whole run logged. Needs the CIFAR-10 copy in the standard
layout (`python ../shared/data/prepare_cifar10.py DIR`).

With --paths it also times the two paths compressed payloads can take
(`compression.collective`: gather on the coordinator and broadcast the model,
or all-gather and decode on every rank): the same qsgd job with each, twice,
alternately, reporting the mean of /timing/sync_seconds per worker.
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
# name, or name:key=value,... for a compressor's parameters (defaults otherwise)
COMPRESSORS = ("none", "fp16", "qsgd", "topk", "randk", "randk:fraction=0.1", "sign", "sign-majority")
BASE = ["data.name=cifar10", "data.samples_per_worker=1000", "data.probe_size=100", "data.eval_size=500",
        "data.test_size=2000", "data.alpha=0.3", "train.batch_size=32", "train.lr=0.01", "train.momentum=0.9",
        "train.epochs=15", "sync.every=31", "mi.estimators=[]", "trace.activations=false", "checkpoint.every=0",
        "device=cpu"]


def compressor_sets(spec: str) -> list[str]:
    """`topk:fraction=0.05` -> the --set overrides for that compressor."""
    name, _, params = spec.partition(":")
    sets = [f"compression.name={name}"] + [f"compression.{p}" for p in params.split(",") if p]
    return sets + (["compression.measure_distortion=true"] if name != "none" else [])


def run(mpiexec: list[str], out: Path, name: str, workers: int, sets: list[str]) -> tuple[Path, str]:
    """Run one job; returns its trace and "" or the line saying why it failed (it keeps its rows)."""
    cmd = [*mpiexec, "-n", str(workers + 1), sys.executable, "-m", "fedmpi", "-o", str(out), "--force",
           "--set", f"trace.path={name}.h5"]
    for s in BASE + sets:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    failed = ""
    if proc.returncode:
        lines = [line for line in proc.stderr.splitlines() if "Error:" in line or "error:" in line]
        failed = lines[-1] if lines else proc.stderr.strip().splitlines()[-1]
    return out / f"{name}.h5", failed


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values[np.isfinite(values)])) if np.isfinite(values).any() else float("nan")


def read(path: Path) -> dict:
    with h5py.File(path, "r", swmr=True, libver="latest") as f:
        bits = f["comm/update_bits"][:]
        limit = f["comm/rd_limit_bits"][:]
        measured = np.isfinite(limit)
        return dict(
            acc=float(f["metrics/test_acc"][-1]), bits=float(bits.mean()), total=float(bits.sum()),
            distortion=_mean(f["comm/distortion"][:]), limit=_mean(limit),
            ratio=_mean(bits[measured] / limit[measured]),
            signal=_mean(f["comm/signal_var"][:]), noise=_mean(f["comm/noise_var"][:]),
            sync=float(f["timing/sync_seconds"][:].sum(axis=0).mean()), wall=float(f["rounds/time"][-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", required=True, help="folder holding cifar-10-batches-py/")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "compression")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--partitions", nargs="+", default=["iid", "dirichlet"], choices=["iid", "dirichlet"])
    parser.add_argument("--compressors", nargs="+", default=list(COMPRESSORS),
                        help="names, or name:key=value,... with parameters")
    parser.add_argument("--paths", action="store_true", help="also time gather against allgather")
    parser.add_argument("--path-workers", type=int, default=2, help="workers of the --paths runs")
    parser.add_argument("--only-paths", action="store_true", help="time the paths only")
    parser.add_argument("--mpiexec", default="mpiexec", help="MPI launcher (add Open MPI flags yourself)")
    args = parser.parse_args()
    mpiexec = args.mpiexec.split()
    args.out.mkdir(parents=True, exist_ok=True)
    data = [f"data.root={args.data_root}"]
    print(f"machine: {os.cpu_count()} CPUs; traces in {args.out}; a compressor whose run fails "
          "(a diverging model) is listed with the run's error")
    for workers in [] if args.only_paths else args.workers:
        for partition in args.partitions:
            print(f"\n{workers} workers, {partition}{' (alpha 0.3)' if partition == 'dirichlet' else ''}")
            print(f"{'compressor':20s} {'test acc':>8s} {'bits/param/sync':>15s} {'total bits/param':>16s} "
                  f"{'distortion':>10s} {'R_sum':>8s} {'bits/R_sum':>10s} {'sigma_X^2':>9s} {'sigma_N^2':>9s} "
                  f"{'wall s':>6s}")
            for comp in args.compressors:
                sets = data + [f"data.partition={partition}"] + compressor_sets(comp)
                label = comp.replace(":", "-").replace("=", "").replace(",", "-")
                trace, failed = run(mpiexec, args.out, f"w{workers}-{partition}-{label}", workers, sets)
                if failed:
                    print(f"{comp:20s} failed: {failed}", flush=True)
                    continue
                r = read(trace)
                print(f"{comp:20s} {r['acc']:8.4f} {r['bits']:15.3f} {r['total']:16.1f} {r['distortion']:10.3g} "
                      f"{r['limit']:8.3f} {r['ratio']:10.2f} {r['signal']:9.3g} {r['noise']:9.3g} "
                      f"{r['wall']:6.1f}", flush=True)
    if args.paths or args.only_paths:
        print(f"\ncompressed payload paths (qsgd, {args.path_workers} workers, iid): mean sync seconds per "
              "worker over the run")
        times: dict[str, list[float]] = {"gather": [], "allgather": []}
        for i in range(2):
            for path in times:
                sets = data + ["compression.name=qsgd", f"compression.collective={path}"]
                trace, failed = run(mpiexec, args.out, f"path-{path}-{i}", args.path_workers, sets)
                if failed:
                    sys.exit(f"{path} run failed: {failed}")
                r = read(trace)
                times[path].append(r["sync"])
                print(f"{path:9s} run {i + 1}: sync {r['sync']:.3f} s, wall {r['wall']:.1f} s", flush=True)
        g, a = np.mean(times["gather"]), np.mean(times["allgather"])
        print(f"mean sync: gather {g:.3f} s, allgather {a:.3f} s; allgather/gather = {a / g:.2f}")


if __name__ == "__main__":
    main()
