"""Shared helpers: launching real MPI jobs under a timeout (a hang is a failure); a small
worker's client group in process."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "jobs" / "smoke.yaml"


@functools.lru_cache(maxsize=None)
def mpiexec() -> list[str]:
    # Prefer the launcher installed beside this interpreter (the `mpich` extra), so the
    # tests use the MPI that mpi4py was installed with, whatever else is on PATH.
    beside = Path(sys.executable).parent / "mpiexec"
    exe = str(beside) if beside.exists() else (shutil.which("mpiexec") or shutil.which("mpirun"))
    if exe is None:
        pytest.fail("no mpiexec on PATH: install the test setup with `pip install -e .[mpich,test]`")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    # Open MPI refuses root and more ranks than cores unless told; MPICH needs nothing. Open MPI
    # 4's launcher names itself "(Open MPI)" when called as mpirun but "(OpenRTE)" as mpiexec.
    openmpi = "Open MPI" in version or "OpenRTE" in version
    extra = ["--allow-run-as-root", "--oversubscribe"] if openmpi else []
    return [exe, *extra]


def launch(n: int, args: list[str], timeout: float = 240, cwd: Path = ROOT,
           script: list[str] | None = None, launcher_args: list[str] = ()) -> subprocess.CompletedProcess:
    """Run `mpiexec -n N python -m fedmpi ARGS` (or another script); fail the test on a hang."""
    cmd = [*mpiexec(), *launcher_args, "-n", str(n), sys.executable, *(script or ["-m", "fedmpi"]), *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{' '.join(cmd)} hung for {timeout} s\nstdout: {exc.stdout}\nstderr: {exc.stderr}")


def run_ok(n: int, args: list[str], **kw) -> subprocess.CompletedProcess:
    proc = launch(n, args, **kw)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def smoke_args(out: Path, name: str, *overrides: str) -> list[str]:
    args = ["-c", str(SMOKE), "-o", str(out), "--set", f"trace.path={name}.h5"]
    for o in overrides:
        args += ["--set", o]
    return args


def rank_pids(marker: str) -> list[int]:
    """PIDs of the MPI ranks (and their watchers), not the launcher, of the job whose command
    line holds `marker` (its output folder). Launchers give each rank a process group of its
    own, so they are found by their command line."""
    ps = subprocess.run(["ps", "-ww", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return sorted(int(line.split()[0]) for line in ps.splitlines()
                  if marker in line and line.split()[1] in (sys.executable, "python", "python3"))


def kill_job(proc: subprocess.Popen, marker: str, limit: float = 30) -> None:
    """SIGKILL the launcher (started with start_new_session) and every rank, and wait until
    none is left. Killing the launcher alone is not enough: Open MPI's ranks outlive its
    mpirun by a second or so, and write to the trace and checkpoint meanwhile."""
    os.killpg(proc.pid, signal.SIGKILL)
    deadline = time.time() + limit
    while pids := rank_pids(marker):
        assert time.time() < deadline, f"ranks {pids} still alive {limit} s after SIGKILL"
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    proc.communicate(timeout=30)


# ------------------------------------------------------------------ a small worker, in process

def small_config(probe_size: int, batch_size: int, **sections):
    """A half-width LeNet on synthetic data, on the CPU; `sections` overlay the job's sections."""
    from fedmpi import config
    raw = {"seed": 2, "model": {"name": "lenet", "width": 0.5}, "device": "cpu",
           "data": {"name": "synthetic", "probe_size": probe_size, "eval_size": 0},
           "train": {"batch_size": batch_size, "lr": 0.05, "momentum": 0.9}}
    for section, values in sections.items():
        raw[section] = {**raw.get(section, {}), **values}
    return config.from_dict(raw)


def small_group(cfg, sizes, eval_size: int, probe_size: int):
    """(ClientGroup, eval_x, eval_y) of one worker holding clients of the given sizes (in id order)
    on synthetic data, its evaluation subset and probe the first eval_size / probe_size examples."""
    import numpy as np

    from fedmpi import data
    from fedmpi.local import ClientGroup, worker_tensors
    from fedmpi.plan import WorkerData
    dataset = data.synthetic(sum(sizes), 4, seed=3)
    bounds = np.cumsum((0,) + tuple(sizes))
    wd = WorkerData(np.arange(bounds[-1], dtype=np.int64), np.arange(eval_size), np.arange(probe_size),
                    tuple(range(len(sizes))), tuple(slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])))
    x, y, ex, ey = worker_tensors(dataset, wd, "cpu")
    return ClientGroup(cfg, dataset, wd, x, y, "cpu", num_clients=len(sizes), worker=0), ex, ey
