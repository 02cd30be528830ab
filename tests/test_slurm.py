"""SLURM end to end: slurm/*.sbatch on a real one-node cluster that the test starts (tests/slurm_cluster.py).

Skips only when the SLURM or munge programs are missing (`.ci/install-slurm` installs them).
Every wait has a deadline: a hang is a failure.
"""

from __future__ import annotations

import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from fedmpi.trace import open_trace

from conftest import ROOT, SMOKE, run_ok, smoke_args
from slurm_cluster import SlurmCluster, missing_programs

pytestmark = pytest.mark.mpi  # launches real MPI jobs: `python -m pytest -m "not mpi"` skips them

CPU_SCRIPT, GPU_SCRIPT = "slurm/cpu.sbatch", "slurm/gpu.sbatch"
RANKS = ["--ntasks=3"]  # 1 coordinator + 2 workers
# 16 epochs of 512 examples in batches of 32, sync every 8 batches: 32 sync points, a second or less each.
LONG = ("train.epochs=16", "checkpoint.every=4")
LONG_SYNCS = 32
COMPARED = ("metrics/test_acc", "metrics/local_acc", "metrics/averaged_acc", "rounds/step", "model/final_averaged")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    missing = missing_programs()
    if missing:
        pytest.skip(f"SLURM packages not installed: {', '.join(missing)} not found (run .ci/install-slurm)")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def job_args(out: Path, name: str, *overrides: str) -> list[str]:
    """The batch script's arguments: the job file, then `fedmpi run` options passed through."""
    return [*smoke_args(out, name, *overrides)[1:], "--progress", "plain"]


def rounds(trace: Path) -> int:
    try:
        with open_trace(str(trace)) as f:
            return len(f["rounds/step"])
    except (OSError, KeyError):  # not created yet, or between the writer's create and its first flush
        return 0


def wait_rounds(cluster: SlurmCluster, job_id: int, trace: Path, at_least: int, output: Path,
                timeout: float = 150) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = rounds(trace)
        if n >= at_least:
            return n
        time.sleep(0.3)
    cluster.cancel_all()
    pytest.fail(f"{trace} has {rounds(trace)} < {at_least} rounds after {timeout} s: {cluster.job(job_id)}\n"
                f"--- job output\n{read(output)}\n{cluster.logs()}")


def wait(cluster: SlurmCluster, job_id: int, done, what: str, output: Path, timeout: float = 150) -> dict:
    try:
        return cluster.wait_job(job_id, done, timeout, what)
    except RuntimeError as exc:
        cluster.cancel_all()
        pytest.fail(f"{exc}\n--- job output\n{read(output)}")


def read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else f"({path} not written)"


def sbatch_wait(cluster: SlurmCluster, options: list[str], script: str, out: Path, launcher: str,
                *overrides: str) -> str:
    """`sbatch --wait` the smoke job into `out`; return the job's output after checking it ended well."""
    out.mkdir(exist_ok=True)
    output = out / "slurm.out"
    cmd = ["sbatch", "--wait", *options, f"--output={output}", script, *job_args(out, "smoke", *overrides)]
    try:
        proc = cluster.run(cmd, timeout=240, check=False, cwd=ROOT, env={"LAUNCHER": launcher})
    except subprocess.TimeoutExpired as exc:
        cluster.cancel_all()  # free the node for the next test
        pytest.fail(f"{' '.join(cmd)}: {exc}\n--- job output\n{read(output)}\n{cluster.logs()}")
    log = read(output)
    assert proc.returncode == 0, f"sbatch exit {proc.returncode}\n{proc.stderr}\n--- job output\n{log}"
    assert "fedmpi smoke: done" in log, log
    with open_trace(str(out / "smoke.h5")) as f:
        assert f.attrs["status"] == "complete"
        assert f.attrs["world_size"] == 3
        np.testing.assert_array_equal(f["rounds/step"][:], [8, 16, 24, 32])  # 2 epochs x 16 batches, sync every 8
        assert f["metrics/test_acc"].shape == (4,)
    assert not (out / "smoke.ckpt").exists()  # a complete run deletes its checkpoint
    return log


def test_cpu_script_runs_the_smoke_job_with_srun(cluster, tmp_path):
    log = sbatch_wait(cluster, RANKS, CPU_SCRIPT, tmp_path, "srun")
    assert f"on {cluster.node}: srun --mpi=pmi2 -n 3 python -m fedmpi run -c {SMOKE} --auto-resume" in log, log


def test_gpu_script_starts_a_worker_per_gpu_with_mpiexec(cluster, tmp_path):
    if not cluster.fake_gpus:
        pytest.skip("no fake GPUs: making their device files (mknod) needs CAP_MKNOD")
    # 2 GPUs that are /dev/null on 1 node: 2 workers + the coordinator. device=cpu: they are not GPUs.
    options = [f"--gres=gpu:{cluster.fake_gpus}", f"--ntasks-per-node={cluster.fake_gpus + 1}", "--cpus-per-task=1"]
    log = sbatch_wait(cluster, options, GPU_SCRIPT, tmp_path / "gpu", "mpiexec", "device=cpu")
    assert f"on {cluster.node}: mpiexec -n 3 python -m fedmpi run" in log, log


def test_interrupted_and_requeued_job_resumes_to_the_uninterrupted_result(cluster, tmp_path):
    """Two interruptions of one job, then compare with an uninterrupted mpiexec run of the same job.

    1. What `--signal=B:USR1@300` does before the time limit: USR1 to the batch shell only; it
       forwards it, fedmpi checkpoints and exits 0, the script requeues the job itself.
    2. A preemption: `scontrol requeue` makes SLURM send SIGTERM to every process of the job
       and SIGKILL KillWait (30 s) later; fedmpi checkpoints at its next sync point, SLURM requeues.
    """
    out = tmp_path / "slurm"
    out.mkdir()
    output = out / "slurm.out"
    trace = out / "long.h5"
    with ThreadPoolExecutor(1) as pool:
        # The reference runs while the SLURM job runs and waits out its requeues.
        reference = pool.submit(run_ok, 3, smoke_args(tmp_path / "ref", "long", *LONG), timeout=300)
        job_id = cluster.sbatch([*RANKS, f"--output={output}", CPU_SCRIPT, *job_args(out, "long", *LONG)], cwd=ROOT)

        wait_rounds(cluster, job_id, trace, 4, output)
        cluster.run(["scancel", "--batch", "--signal=USR1", str(job_id)])
        wait(cluster, job_id, lambda j: int(j.get("Restarts", 0)) >= 1, "requeue by the batch script", output)

        wait_rounds(cluster, job_id, trace, rounds(trace) + 4, output)  # resumed and past its start-up
        cluster.run(["scontrol", "requeue", str(job_id)])
        wait(cluster, job_id, lambda j: int(j.get("Restarts", 0)) >= 2, "requeue by scontrol", output)

        last = wait(cluster, job_id, lambda j: j.get("JobState") in (None, "COMPLETED", "FAILED", "CANCELLED"),
                    "end", output, timeout=200)
        reference.result()

    log = read(output)
    assert last.get("JobState", "COMPLETED") == "COMPLETED" and last.get("ExitCode", "0:0") == "0:0", (last, log)
    # Each start after the first resumes where the one before it checkpointed, before the end.
    checkpointed = re.findall(rf"checkpointed after sync point (\d+)/{LONG_SYNCS}", log)
    resumed = re.findall(rf"resuming after sync point (\d+)/{LONG_SYNCS}", log)
    assert len(checkpointed) == 2 and checkpointed == resumed, log
    assert log.count("requeueing job") == 1, log  # the batch script's own requeue, after USR1
    assert not (out / "long.ckpt").exists()
    with open_trace(str(trace)) as got, open_trace(str(tmp_path / "ref" / "long.h5")) as want:
        assert got.attrs["status"] == want.attrs["status"] == "complete"
        for name in COMPARED:
            np.testing.assert_array_equal(got[name][:], want[name][:], err_msg=name)
