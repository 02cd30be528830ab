"""Failures end the whole job with the failing rank's message; traces survive a crash."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fedmpi.trace import open_trace

from conftest import ROOT, kill_job, launch, mpiexec, smoke_args

pytestmark = pytest.mark.mpi  # launches real MPI jobs: `python -m pytest -m "not mpi"` skips them


@pytest.mark.parametrize("rank,role", [(0, "coordinator"), (2, "worker 2")])
def test_exception_on_one_rank_aborts_every_rank(rank, role):
    # Without the abort the other ranks would wait forever: the launch timeout is the hang guard.
    proc = launch(3, [str(rank)], timeout=60, script=[str(ROOT / "tests" / "scripts" / "fail_one_rank.py")])
    assert proc.returncode != 0
    assert f"fedmpi: rank {rank} ({role}) failed; aborting the job" in proc.stderr
    assert "RuntimeError: injected failure" in proc.stderr


def test_diverging_training_stops_with_a_message_naming_the_worker(tmp_path):
    proc = launch(3, smoke_args(tmp_path, "nan", "train.lr=1e30", "train.momentum=0.0"), timeout=120)
    assert proc.returncode != 0
    assert "NonFiniteError: worker" in proc.stderr and "before sync point 1" in proc.stderr and "not finite" in proc.stderr


def test_trace_is_readable_while_running_and_after_the_job_is_killed(tmp_path):
    # A long run: 200 sync points. Read it while it runs, then kill -9 every rank.
    args = smoke_args(tmp_path, "killed", "train.epochs=100", "mi.estimators=[]")
    cmd = [*mpiexec(), "-n", "3", sys.executable, "-m", "fedmpi", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
                            start_new_session=True)
    path = tmp_path / "killed.h5"
    rounds = 0
    deadline = time.time() + 120
    try:
        while rounds < 3 and time.time() < deadline:
            time.sleep(0.5)
            if path.exists():
                try:
                    with open_trace(str(path)) as f:  # SWMR read while the coordinator writes
                        rounds = len(f["rounds/step"])
                        assert f.attrs["status"] == "running"
                except OSError:
                    pass  # the file exists but is not yet switched to SWMR mode
        assert rounds >= 3, "the run never wrote 3 rounds"
    finally:
        kill_job(proc, str(tmp_path))
    with open_trace(str(path)) as f:
        R = len(f["rounds/step"])
        assert R >= rounds
        assert f.attrs["status"] == "running"  # never marked complete
        acc = f["metrics/local_acc"][:R]
        z = f["activations/local"][:R]
        assert acc.shape == (R, 2) and np.isfinite(acc).all()
        assert z.shape[0] == R and np.isfinite(z).all()
        np.testing.assert_array_equal(f["rounds/step"][:R], 8 * np.arange(1, R + 1))


def test_worker_killed_with_sigkill_ends_the_job_names_it_and_loses_nothing(tmp_path):
    args = smoke_args(tmp_path, "sigkill", "train.epochs=200", "mi.estimators=[]", "checkpoint.every=5")
    cmd = [*mpiexec(), "-n", "3", sys.executable, "-m", "fedmpi", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    header = ""
    while "ranks (rank=host:pid)" not in header:  # the coordinator prints where every rank runs
        line = proc.stdout.readline()
        assert line, "the run ended before printing its ranks"
        header += line
    ranks = dict(item.split("=") for item in header.split("ranks (rank=host:pid): ")[1].split()[0:3])
    ranks = {int(r.rstrip(",")): hp.rstrip(",") for r, hp in ranks.items()}
    victim = int(ranks[2].split(":")[1])
    deadline = time.time() + 120
    while not (tmp_path / "sigkill.ckpt").exists():  # let it write a round and a checkpoint first
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.2)
    os.kill(victim, signal.SIGKILL)
    rest, _ = proc.communicate(timeout=60)  # the job must end by itself; a hang fails here
    assert proc.returncode != 0
    assert f"fedmpi: rank 2 (worker 2, pid {victim}) was killed by SIGKILL" in rest
    with open_trace(str(tmp_path / "sigkill.h5")) as f:  # readable up to its last complete round
        assert len(f["rounds/step"]) >= 5
    from fedmpi import checkpoint
    assert checkpoint.load(str(tmp_path / "sigkill.ckpt"))["sync_index"] >= 4  # the last checkpoint is intact


def test_unwritable_output_folder_is_one_line_and_nothing_written(tmp_path):
    blocked = tmp_path / "file-not-folder"
    blocked.write_text("x")
    proc = launch(3, ["-c", str(ROOT / "jobs" / "smoke.yaml"), "-o", str(blocked / "runs")], timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count("fedmpi: error: cannot create output folder") == 1
    assert "Traceback" not in proc.stderr


def test_unreadable_data_is_one_line(tmp_path):
    root = tmp_path / "data" / "cifar-10-batches-py"
    root.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (root / name).write_bytes(b"not a pickle")
    proc = launch(3, ["-c", str(ROOT / "jobs" / "default.yaml"), "-o", str(tmp_path / "runs"),
                      "--set", f"data.root={tmp_path / 'data'}"], timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count("fedmpi: error: cannot read CIFAR-10 batch") == 1
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


def test_a_rank_waiting_for_another_to_work_sleeps_instead_of_spinning():
    # The workers wait through the coordinator's one-second preflight, the coordinator through
    # the workers' one second before a checkpoint. Spinning would cost each about a CPU second
    # (MPICH polls in its blocking collectives); polling with sleeps costs a few milliseconds.
    proc = launch(3, [], timeout=60, script=[str(ROOT / "tests" / "scripts" / "wait_asleep.py")])
    assert proc.returncode == 0, proc.stderr
    waits = [line.split() for line in proc.stdout.splitlines() if "waited using" in line]
    assert sorted((w[0], w[2]) for w in waits) == [("agree", "1"), ("agree", "2"), ("collect", "0")], proc.stdout
    for w in waits:
        assert float(w[5]) < 0.3, proc.stdout
