"""Every measurement behind docs/performance.md, one after the other, in one command.

    python benchmarks/run_all.py [--data DIR] [--before DIR] [--mpiexec mpiexec] [--quick]

Runs, printing each one's output as it comes:
  1. benchmarks/overhead.py      local step rate against plain PyTorch (one and two processes)
  2. benchmarks/eval_speed.py    evaluation cost per example: chunk size and memory layout
  3. benchmarks/speed.py         measuring every sync point against every 10th, start-up (also a
                                 first run's, which writes the data cache), memory
  4. benchmarks/mi_overhead.py   the default MI estimator in a run, against MI off (--skip-eval)
With --before DIR, overhead.py and speed.py also measure that checkout, alternately with this
one. --quick runs each with fewer repeats (a smoke test of the scripts, not numbers to quote).
--data is a folder holding cifar-10-batches-py/ (`python ../shared/data/prepare_cifar10.py DIR`).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=HERE.parent / "data")
    parser.add_argument("--before", type=Path, default=None)
    parser.add_argument("--mpiexec", default="mpiexec")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    before = ["--before", str(args.before)] if args.before else []
    steps = ["--steps", "1000"] if args.quick else []
    runs = [
        ["overhead.py", "--mpiexec", args.mpiexec, *steps],
        ["eval_speed.py", *(["--repeats", "1"] if args.quick else [])],
        ["speed.py", "--data", str(args.data), "--mpiexec", args.mpiexec, *before,
         *(["--repeats", "1"] if args.quick else [])],
        ["mi_overhead.py", "--mpiexec", args.mpiexec, "--skip-eval", *(["--steps", "400"] if args.quick else [])],
    ]
    if args.before:  # overhead.py's before/after comparison is its own mode
        runs.insert(1, ["overhead.py", "--mpiexec", args.mpiexec, "--before", str(args.before), *steps])
    failed = []
    for cmd in runs:
        print(f"\n===== python benchmarks/{' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / cmd[0]), *cmd[1:]])
        print(f"===== {cmd[0]}: exit {code}, {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(cmd[0])
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
