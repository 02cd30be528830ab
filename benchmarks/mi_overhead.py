"""Does MI estimation hide behind training? And what do activations cost the workers?

    python benchmarks/mi_overhead.py [--steps 2000] [--mpiexec mpiexec] [--skip-eval]

Runs fedmpi with 2 workers (`mpiexec -n 3`), sync every 100 batches,
CIFAR-10-shaped synthetic data, side by side, activations logged:
  (1) MI off, (2) the default estimator (decoder) at every sync point,
at probe 1,000 (the default data.probe_size) and 5,000, (3) decoder and
EDGE together (the paper jobs) at probe 1,000, and (4) MI off and on with one
worker, where the coordinator has a core of its own. It prints each wall time
(from the start of training to the last sync point, as before 2026-12-04)
over MI off's at the same probe size (target <= 1.05), and the same ratio
of the times from launch to exit, which include the measurements still
queued at the last sync point (and the fixed start-up and final test). Then, for probe sizes 1,000
and 5,000 (evaluation subset = probe), the workers' seconds per logged round
spent evaluating the local and averaged models and computing Z, with
activations on and off: what logging Z costs a worker.
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

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32
EXAMPLES = 6400  # per worker: 200 batches per epoch


def run(mpiexec: list[str], out: Path, name: str, steps: int, probe: int, activations: bool, mi: str,
        workers: int = 2) -> dict:
    sets = [f"data.samples_per_worker={EXAMPLES}", f"data.probe_size={probe}", f"data.eval_size={probe}",
            "data.test_size=10000", f"train.epochs={steps // (EXAMPLES // BATCH)}", "sync.every=100",
            f"trace.activations={str(activations).lower()}", f"mi.estimators={mi}", f"trace.path={name}.h5"]
    cmd = [*mpiexec, "-n", str(workers + 1), sys.executable, "-m", "fedmpi", "-c", str(ROOT / "jobs" / "smoke.yaml"),
           "-o", str(out)]
    for s in sets:
        cmd += ["--set", s]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    launched = time.perf_counter()
    proc = subprocess.run(cmd, check=True, cwd=ROOT, env=env, capture_output=True, text=True)
    with h5py.File(out / f"{name}.h5", "r") as f:
        # Launch to exit (the measurements still queued at the last sync point are in it), and
        # the start of training to the last sync point (rounds/time, as before 2026-12-04).
        return dict(exit=time.perf_counter() - launched, wall=float(f["rounds/time"][-1]),
                    eval_s=float(np.mean(f["timing/eval_seconds"][:])),
                    train_s=float(np.mean(f["timing/train_seconds"][:])),
                    waited=proc.stdout.count("rounds behind"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="local steps per worker (multiple of 200)")
    parser.add_argument("--mpiexec", default="mpiexec")
    parser.add_argument("--skip-eval", action="store_true", help="leave out the table of the workers' evaluation cost")
    args = parser.parse_args()
    mpiexec = args.mpiexec.split()
    print(f"machine: {os.cpu_count()} CPUs; {args.steps} local steps per worker, sync every 100")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        offs = {}
        for probe, mi in ((1000, "[decoder]"), (5000, "[decoder]"), (1000, "[decoder,edge]")):
            if probe not in offs:
                offs[probe] = run(mpiexec, out, f"mi-off-{probe}", args.steps, probe, True, "[]")
                print(f"probe {probe}, activations on, MI off: wall {offs[probe]['wall']:.1f} s")
            on = run(mpiexec, out, f"mi-{probe}-{len(mi)}", args.steps, probe, True, mi)
            print(f"probe {probe}, activations on, {mi}: wall {on['wall']:.1f} s "
                  f"(coordinator said it waited {on['waited']} times); "
                  f"ratio on / off = {on['wall'] / offs[probe]['wall']:.3f}   (target <= 1.05); "
                  f"launch to exit {on['exit']:.1f} s against {offs[probe]['exit']:.1f} s, "
                  f"ratio {on['exit'] / offs[probe]['exit']:.3f}")
        # One worker: the coordinator has a core of its own, as on a cluster node.
        alone_off = run(mpiexec, out, "w1-off", args.steps, 1000, True, "[]", workers=1)
        alone_on = run(mpiexec, out, "w1-on", args.steps, 1000, True, "[decoder]", workers=1)
        print(f"1 worker (the coordinator has its own core), probe 1000, [decoder]: wall {alone_on['wall']:.1f} s "
              f"against {alone_off['wall']:.1f} s MI off (coordinator said it waited {alone_on['waited']} times); "
              f"ratio on / off = {alone_on['wall'] / alone_off['wall']:.3f}   (target <= 1.05); "
              f"launch to exit {alone_on['exit']:.1f} s against {alone_off['exit']:.1f} s, "
              f"ratio {alone_on['exit'] / alone_off['exit']:.3f}")
        if args.skip_eval:
            return
        off = offs[5000]
        print("\nworker cost per logged round (evaluation subset = probe):")
        print(f"{'probe':>6} {'activations':>12} {'eval s/round':>13} {'train s/round':>14}")
        for probe in (1000, 5000):
            for act in (False, True):
                r = off if (probe, act) == (5000, True) else \
                    run(mpiexec, out, f"p{probe}-{act}", args.steps, probe, act, "[]")
                print(f"{probe:>6} {str(act):>12} {r['eval_s']:>13.3f} {r['train_s']:>14.3f}")


if __name__ == "__main__":
    main()
