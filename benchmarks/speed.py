"""Everything around training, on the real CIFAR-10 job: measuring every sync point, start-up, memory.

    python benchmarks/speed.py [measuring] [startup] [firstrun] [memory] [--data DIR] [--before DIR]
                               [--mpiexec mpiexec] [--repeats 2] [--workers 2] [--set KEY=VALUE ...]

measuring  jobs/default.yaml (the paper's setup: LeNet, 2 workers, batch 32, sync every
           100, decoder MI, activations) scaled to 10,000 CIFAR-10 images per worker and
           6 epochs, run with metrics at every sync point (trace.every=1) and at every
           10th (trace.every=10), alternately, --repeats times each, after one warm-up
           run that is not counted; every second repeat runs its jobs in the mirrored
           order (A B, B A), so a drift of the machine's speed during the benchmark
           weighs on both settings alike with an even --repeats.  Prints the wall
           time of each (launch to exit) and the ratio every-sync / every-10th (target
           <= 1.3), the same ratio of the CPU seconds all ranks used (steadier than wall
           time when other work shares the machine), and the seconds each worker spends
           evaluating per logged round.  --workers 1 runs the same job with one worker
           (mpiexec -n 2): on a 2-core machine each rank then has a core of its own, as
           the coordinator has on a cluster node, instead of three ranks sharing two.
           --set KEY=VALUE (repeatable) changes the config of both settings' jobs, to see
           what a choice costs (data.eval_size=1000, say).
startup    a near-empty job: jobs/default.yaml with 320 images per worker, one epoch,
           sync every 10 batches (10 local steps, one sync point), probe 100.  Launch to
           exit and launch to the start of training (the trace's `training_started`
           attribute against the launch time), median of 3 (targets <= 4.5 s and <= 3 s).
firstrun   the start-up job on a fresh copy of cifar-10-batches-py/ each time, as a user's
           first run: the coordinator's preflight decodes the dataset into its cache
           (data.write_cache) while the workers wait.  Medians of 3.
memory     jobs/default.yaml for one epoch (782 local steps; all 25,000 images per
           worker, the paper's shards): each rank's peak resident memory (VmHWM, sampled from /proc
           every 0.2 s) and its minor page faults (target <= 0.6 GB per rank).

--before DIR runs every measurement from another checkout too (its own `fedmpi`
package and jobs/), alternating with this one, so a change shows as a ratio
measured in one run on the same machine.  --data is a folder holding
cifar-10-batches-py/ (python ../shared/data/prepare_cifar10.py DIR writes one).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def launch(mpiexec: list[str], root: Path, out: Path, name: str, sets: list[str], watch=None,
           workers: int = 2) -> dict:
    """Run jobs/default.yaml from checkout `root` with `--set` overrides; wall time from launch to exit."""
    cmd = [*mpiexec, "-n", str(workers + 1), sys.executable, "-m", "fedmpi",
           "-c", str(root / "jobs" / "default.yaml"), "-o", str(out), "--force", "--progress", "plain",
           "--set", f"trace.path={name}.h5"]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    launched = time.time()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watcher = None
    if watch is not None:
        watcher = threading.Thread(target=watch, args=(proc,), daemon=True)
        watcher.start()
    _, err = proc.communicate()
    wall = time.time() - launched
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # every rank and the launcher, once waited for
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err}")
    if watcher is not None:
        watcher.join()
    with h5py.File(out / f"{name}.h5", "r") as f:
        started = f.attrs.get("training_started")
        result = dict(wall=wall, cpu=cpu, rows=len(f["rounds/step"]), train_wall=float(f["rounds/time"][-1]),
                      eval_s=f["timing/eval_seconds"][:].sum(axis=0),
                      coord_cpu=float(f["timing/coordinator_cpu_seconds"][-1]),
                      to_training=None if started is None else float(started) - launched)
    return result


def data_sets(data: Path) -> list[str]:
    return [f"data.root={data}"]


# ----- measuring every sync point ------------------------------------------------------


def measuring(mpiexec, roots: dict[str, Path], data: Path, repeats: int, workers: int = 2,
              extra_sets: tuple[str, ...] = ()) -> None:
    sets = data_sets(data) + ["data.samples_per_worker=10000", "train.epochs=6", *extra_sets]
    walls = {(label, every): [] for label in roots for every in (1, 10)}
    cpus = {(label, every): [] for label in roots for every in (1, 10)}
    extra = {}
    order = [(label, every) for label in roots for every in (1, 10)]
    with tempfile.TemporaryDirectory() as tmp:
        # The first job after a pause ran slower here (cold caches, the CPU's clock): not counted.
        label, every = order[0]
        r = launch(mpiexec, roots[label], Path(tmp), "m-warmup", sets + [f"trace.every={every}"], workers=workers)
        print(f"  {label:6s} trace.every={every:<3d} warm-up: wall {r['wall']:6.1f} s (not counted)", flush=True)
        for i in range(repeats):
            for label, every in (order if i % 2 == 0 else order[::-1]):
                root = roots[label]
                r = launch(mpiexec, root, Path(tmp), f"m-{label}-{every}-{i}", sets + [f"trace.every={every}"],
                           workers=workers)
                walls[label, every].append(r["wall"])
                cpus[label, every].append(r["cpu"])
                extra[label, every] = r
                print(f"  {label:6s} trace.every={every:<3d} run {i + 1}: wall {r['wall']:6.1f} s, "
                      f"CPU {r['cpu']:6.1f} s "
                      f"({r['rows']} rows; workers evaluating {np.round(r['eval_s'], 1)} s)", flush=True)
    if repeats % 2:
        print("  (an odd --repeats: the mirrored order does not balance a drift of the machine's speed)")
    for label in roots:
        one, ten = statistics.mean(walls[label, 1]), statistics.mean(walls[label, 10])
        c1, c10 = statistics.mean(cpus[label, 1]), statistics.mean(cpus[label, 10])
        r1 = extra[label, 1]
        pairs = " ".join(f"{a / b:.3f}" for a, b in zip(walls[label, 1], walls[label, 10]))
        settings = f"{workers} worker{'s' if workers > 1 else ''}" + "".join(f", {s}" for s in extra_sets)
        print(f"measuring [{label}, {settings}]: wall every sync {one:.1f} s, every 10th {ten:.1f} s, "
              f"ratio = {one / ten:.3f} (target <= 1.3; each repeat's pair: {pairs}); "
              f"CPU seconds of all ranks {c1:.1f} and {c10:.1f}, ratio = {c1 / c10:.3f}; "
              f"per logged row each worker evaluates for {np.mean(r1['eval_s']) / r1['rows']:.3f} s")


# ----- start-up ---------------------------------------------------------------------------


def startup(mpiexec, roots: dict[str, Path], data: Path, repeats: int = 3, first_run: bool = False) -> None:
    """The near-empty job's start-up; with `first_run`, each job on a fresh copy of the data folder
    (only cifar-10-batches-py/), so its preflight writes the decoded cache while the workers wait."""
    sets = ["data.samples_per_worker=320", "data.probe_size=100", "data.eval_size=320",
            "train.epochs=1", "sync.every=10"]
    got = {label: ([], []) for label in roots}
    name = "first run" if first_run else "start-up"
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(repeats):
            for label, root in roots.items():
                root_data = data
                if first_run:
                    root_data = Path(tmp) / f"data-{label}-{i}"
                    shutil.copytree(data / "cifar-10-batches-py", root_data / "cifar-10-batches-py")
                r = launch(mpiexec, root, Path(tmp), f"s-{label}-{i}", data_sets(root_data) + sets)
                if first_run:
                    shutil.rmtree(root_data)
                got[label][0].append(r["wall"])
                if r["to_training"] is not None:
                    got[label][1].append(r["to_training"])
                first = "n/a" if r["to_training"] is None else f"{r['to_training']:.2f} s"
                print(f"  {label:6s} run {i + 1}: launch to exit {r['wall']:.2f} s, to training {first}",
                      flush=True)
    for label in roots:
        exits, firsts = got[label]
        first = f"{statistics.median(firsts):.2f} s" if firsts else "n/a (no training_started in the trace)"
        print(f"{name} [{label}]: launch to exit {statistics.median(exits):.2f} s (target <= 4.5), "
              f"launch to training {first} (target <= 3), medians of {repeats}")


# ----- memory and page faults ---------------------------------------------------------------


def _rank_processes(launcher_pid: int) -> dict[int, int]:
    """pid -> MPI rank of the fedmpi ranks under the launcher (the watcher's child, not the watcher)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = {}, [launcher_pid]
    while stack:
        pid = stack.pop()
        for child in children.get(pid, []):
            stack.append(child)
            try:
                with open(f"/proc/{child}/cmdline", "rb") as fh:
                    argv = fh.read().split(b"\0")
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    parent_argv = fh.read().split(b"\0")
                with open(f"/proc/{child}/environ", "rb") as fh:
                    env = dict(kv.split(b"=", 1) for kv in fh.read().split(b"\0") if b"=" in kv)
            except OSError:
                continue
            if b"fedmpi" in argv and b"fedmpi" in parent_argv and b"PMI_RANK" in env:
                found[child] = int(env[b"PMI_RANK"])
    return found


def _status(pid: int) -> tuple[int, int] | None:
    """(VmHWM bytes, minor faults) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            hwm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
        with open(f"/proc/{pid}/stat") as fh:
            minflt = int(fh.read().rsplit(")", 1)[1].split()[7])
        return hwm, minflt
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def memory(mpiexec, roots: dict[str, Path], data: Path) -> None:
    sets = data_sets(data) + ["train.epochs=1", "sync.every=100", "trace.every=1"]
    with tempfile.TemporaryDirectory() as tmp:
        for label, root in roots.items():
            peak: dict[int, tuple[int, int]] = {}

            def watch(proc):
                ranks: dict[int, int] = {}
                while proc.poll() is None:
                    ranks.update(_rank_processes(proc.pid))
                    for pid, rank in ranks.items():
                        st = _status(pid)
                        if st is not None:
                            peak[rank] = (max(st[0], peak.get(rank, (0, 0))[0]), max(st[1], peak.get(rank, (0, 0))[1]))
                    time.sleep(0.2)

            # One epoch of the paper's shards: the data, models and buffers of a full run.
            r = launch(mpiexec, root, Path(tmp), f"mem-{label}", sets, watch=watch)
            for rank in sorted(peak):
                role = "coordinator" if rank == 0 else f"worker {rank}"
                print(f"memory [{label}]: rank {rank} ({role}): peak resident {peak[rank][0] / 2**30:.3f} GB, "
                      f"{peak[rank][1]:,} minor page faults   (target <= 0.6 GB)")
            print(f"memory [{label}]: run wall {r['wall']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="*", metavar="PART",
                        help="measuring, startup, firstrun and/or memory (default: all four)")
    parser.add_argument("--data", type=Path, default=ROOT / "data", help="folder holding cifar-10-batches-py/")
    parser.add_argument("--before", type=Path, default=None, help="another checkout, measured alternately")
    parser.add_argument("--mpiexec", default="mpiexec")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="workers of the measuring job (default 2)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for the measuring jobs (repeatable)")
    args = parser.parse_args()
    unknown = sorted(set(args.parts) - {"measuring", "startup", "firstrun", "memory"})
    if unknown:
        parser.error(f"unknown part {unknown[0]!r}: choose from measuring, startup, firstrun, memory")
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if not (args.data / "cifar-10-batches-py").is_dir():
        raise SystemExit(f"{args.data}/cifar-10-batches-py not found: pass --data DIR "
                         "(python ../shared/data/prepare_cifar10.py DIR writes it)")
    roots = {"after": ROOT} if args.before is None else {"before": args.before.resolve(), "after": ROOT}
    mpiexec = args.mpiexec.split()
    print(f"machine: {os.cpu_count()} CPUs; {', '.join(f'{k}: {v}' for k, v in roots.items())}", flush=True)
    for part in args.parts or ["measuring", "startup", "firstrun", "memory"]:
        {"measuring": lambda: measuring(mpiexec, roots, args.data.resolve(), args.repeats, args.workers,
                                        tuple(args.sets)),
         "startup": lambda: startup(mpiexec, roots, args.data.resolve()),
         "firstrun": lambda: startup(mpiexec, roots, args.data.resolve(), first_run=True),
         "memory": lambda: memory(mpiexec, roots, args.data.resolve())}[part]()


if __name__ == "__main__":
    main()
