"""Failures end the whole job with the failing rank's message; traces survive a crash."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fedmpi.trace import open_trace

from conftest import ROOT, launch, mpiexec, smoke_args


@pytest.mark.parametrize("rank,role", [(0, "coordinator"), (2, "worker 2")])
def test_exception_on_one_rank_aborts_every_rank(rank, role):
    start = time.perf_counter()
    proc = launch(3, [str(rank)], timeout=60, script=[str(ROOT / "tests" / "scripts" / "fail_one_rank.py")])
    assert proc.returncode != 0
    assert f"fedmpi: rank {rank} ({role}) failed; aborting the job" in proc.stderr
    assert "RuntimeError: injected failure" in proc.stderr
    assert time.perf_counter() - start < 30


def test_diverging_training_stops_with_a_message_naming_the_worker(tmp_path):
    proc = launch(3, smoke_args(tmp_path, "nan", "train.lr=1e30", "train.momentum=0.0"), timeout=120)
    assert proc.returncode != 0
    assert "NonFiniteError: worker" in proc.stderr and "before sync point 0" in proc.stderr and "not finite" in proc.stderr


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
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    with open_trace(str(path)) as f:
        R = len(f["rounds/step"])
        assert R >= rounds
        assert f.attrs["status"] == "running"  # never marked complete
        acc = f["metrics/local_acc"][:R]
        z = f["activations/local"][:R]
        assert acc.shape == (R, 2) and np.isfinite(acc).all()
        assert z.shape[0] == R and np.isfinite(z).all()
        np.testing.assert_array_equal(f["rounds/step"][:R], 8 * np.arange(1, R + 1))
