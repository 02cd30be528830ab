"""Checkpoint and resume: a stopped or killed run continues to exactly the same result."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from fedmpi import checkpoint
from fedmpi.trace import open_trace

from conftest import ROOT, kill_job, launch, mpiexec, rank_pids, run_ok, smoke_args

pytestmark = pytest.mark.mpi  # launches real MPI jobs: `python -m pytest -m "not mpi"` skips them

LONG = ("train.epochs=30", "checkpoint.every=5")  # 60 sync points of 8 batches
COMPARED = ("metrics/test_acc", "metrics/local_acc", "metrics/local_loss", "metrics/averaged_acc",
            "metrics/train_loss", "mi/edge/xz_local", "mi/edge/zy_averaged", "activations/averaged",
            "rounds/step", "rounds/index", "model/final_averaged")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    run_ok(3, smoke_args(out, "run", *LONG))
    return out / "run.h5"


def _start(out, *extra):
    cmd = [*mpiexec(), "-n", "3", sys.executable, "-m", "fedmpi", *smoke_args(out, "run", *LONG, *extra)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)


def _wait_for_rounds(path, rounds, proc, limit=120):
    deadline = time.time() + limit
    while time.time() < deadline:
        assert proc.poll() is None, f"run ended early: {proc.communicate()}"
        try:
            with open_trace(str(path)) as f:
                if len(f["rounds/step"]) >= rounds:
                    return
        except (OSError, KeyError):
            pass
        time.sleep(0.2)
    pytest.fail(f"{path} never reached {rounds} rounds")


def _wait_for_checkpoint(path, proc, ready=lambda state: True, limit=120):
    """Wait until the checkpoint at `path` exists and `ready(state)`. A periodic checkpoint is
    saved at the first check point after its trace rows are written (checkpoint.Pending), so it
    can trail the rows the trace already shows: a test that kills the job waits for it."""
    deadline = time.time() + limit
    while time.time() < deadline:
        assert proc.poll() is None, f"run ended early: {proc.communicate()}"
        if path.exists() and ready(checkpoint.load(str(path))):  # saved whole, then renamed: never partial
            return
        time.sleep(0.2)
    pytest.fail(f"{path} never held the checkpoint the test needs")


def _assert_same(a_path, b_path):
    with open_trace(str(a_path)) as a, open_trace(str(b_path)) as b:
        assert b.attrs["status"] == "complete" and b.attrs["resumed"] >= 1
        for name in COMPARED:
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def test_signal_to_one_worker_checkpoints_every_rank_and_resume_is_exact(tmp_path, uninterrupted):
    proc = _start(tmp_path)
    _wait_for_rounds(tmp_path / "run.h5", 12, proc)
    worker = rank_pids(str(tmp_path))[-1]  # a rank, not the launcher: the flag must travel with the sync
    os.kill(worker, signal.SIGUSR1)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "checkpointed after sync point" in stdout and "--resume" in stdout
    with open_trace(str(tmp_path / "run.h5")) as f:
        assert f.attrs["status"] == "running" and 12 <= len(f["rounds/step"]) < 60
    assert (tmp_path / "run.ckpt").exists()
    run_ok(3, ["--resume", str(tmp_path / "run")])
    _assert_same(uninterrupted, tmp_path / "run.h5")
    assert not (tmp_path / "run.ckpt").exists()  # a complete run has nothing to resume


def test_sigusr1_to_the_launcher_checkpoints_every_rank_and_exits_0(tmp_path):
    """What slurm/launch.sh sends at a time limit: MPICH's and Open MPI's mpirun both pass
    SIGUSR1 on to every rank. (SIGTERM to mpirun differs: see docs/cluster.md, Open MPI.)"""
    proc = _start(tmp_path)
    _wait_for_rounds(tmp_path / "run.h5", 3, proc)
    os.kill(proc.pid, signal.SIGUSR1)  # _start runs the launcher itself, not a shell
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "checkpointed after sync point" in stdout
    state = checkpoint.load(str(tmp_path / "run.ckpt"))
    with open_trace(str(tmp_path / "run.h5")) as f:
        assert f.attrs["status"] == "running" and len(f["rounds/step"]) == state["rows"] < 60


def test_killed_job_resumes_from_its_last_periodic_checkpoint(tmp_path, uninterrupted):
    proc = _start(tmp_path)
    _wait_for_rounds(tmp_path / "run.h5", 23, proc)
    _wait_for_checkpoint(tmp_path / "run.ckpt", proc, lambda state: state["sync_index"] >= 19)
    kill_job(proc, str(tmp_path))  # no chance to checkpoint: the periodic one must do
    state = checkpoint.load(str(tmp_path / "run.ckpt"))  # intact, and loads without executing anything
    assert state["sync_index"] % 5 == 4 and state["sync_index"] >= 19
    with open_trace(str(tmp_path / "run.h5")) as f:
        assert len(f["rounds/step"]) >= state["rows"]
    # --auto-resume, as a requeued batch job would run it.
    run_ok(3, smoke_args(tmp_path, "run", *LONG, ) + ["--auto-resume"])
    _assert_same(uninterrupted, tmp_path / "run.h5")


def test_resume_refuses_a_changed_config_world_size_or_damaged_checkpoint(tmp_path):
    proc = _start(tmp_path, "checkpoint.every=2")
    ckpt = tmp_path / "run.ckpt"
    _wait_for_rounds(tmp_path / "run.h5", 3, proc)
    _wait_for_checkpoint(ckpt, proc)
    kill_job(proc, str(tmp_path))
    intact = ckpt.read_bytes()
    damaged = bytearray(intact)
    for pos in (len(damaged) // 2, len(damaged) // 2 + 7, len(damaged) - 3):
        damaged[pos] ^= 0xFF
    ckpt.write_bytes(bytes(damaged))
    trace_before = (tmp_path / "run.h5").read_bytes()
    refused = launch(3, ["--resume", str(tmp_path / "run.h5")], timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.count("fedmpi: error: checkpoint") == 1 and "is damaged" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert (tmp_path / "run.h5").read_bytes() == trace_before  # nothing appended, nothing rewritten
    ckpt.write_bytes(intact)
    changed = launch(3, ["--resume", str(tmp_path / "run.h5"), "--set", "train.lr=0.5",
                         "--set", "sync.every=4"], timeout=120)
    assert changed.returncode == 2
    assert "cannot resume" in changed.stderr and "train.lr: 0.01 -> 0.5" in changed.stderr
    assert "sync.every: 8 -> 4" in changed.stderr
    bigger = launch(4, ["--resume", str(tmp_path / "run.h5")], timeout=120)
    assert bigger.returncode == 2 and "launch it with mpirun -n 3" in bigger.stderr
    fresh = launch(3, smoke_args(tmp_path, "run", *LONG), timeout=120)
    assert fresh.returncode == 2 and "already exists" in fresh.stderr


def test_compressed_run_with_error_feedback_resumes_exactly(tmp_path):
    """The top-k residual each worker carries is part of its checkpoint."""
    extra = ("compression.name=topk", "compression.fraction=0.05", "mi.estimators=[]")
    full = tmp_path / "full"
    run_ok(3, smoke_args(full, "run", *LONG, *extra))
    out = tmp_path / "cut"
    proc = _start(out, *extra)
    _wait_for_rounds(out / "run.h5", 23, proc)
    _wait_for_checkpoint(out / "run.ckpt", proc)
    kill_job(proc, str(out))
    assert "compressor" in checkpoint.load(str(out / "run.ckpt"))["workers"][0]
    run_ok(3, smoke_args(out, "run", *LONG, *extra) + ["--auto-resume"])
    with open_trace(str(full / "run.h5")) as a, open_trace(str(out / "run.h5")) as b:
        assert b.attrs["resumed"] >= 1
        for name in ("metrics/test_acc", "metrics/local_acc", "metrics/averaged_acc", "model/final_averaged"):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)
        # The counts are what crossed MPI: the resumed run's first row also holds the states handed back.
        more = b["comm/bytes_down"][:] != a["comm/bytes_down"][:]
        assert more.any(axis=1).sum() == 1 and (b["comm/bytes_down"][:][more] > a["comm/bytes_down"][:][more]).all()


# ------------------------------------------------------------------ sync policies

SYNC_COMPARED = ("metrics/test_acc", "metrics/local_acc", "metrics/local_loss", "metrics/averaged_acc",
                 "metrics/train_loss", "activations/averaged", "clients/steps", "rounds/step", "rounds/index",
                 "model/final_averaged")


def _assert_same_sync(a_path, b_path):
    with open_trace(str(a_path)) as a, open_trace(str(b_path)) as b:
        assert b.attrs["status"] == "complete" and b.attrs["resumed"] >= 1
        for name in SYNC_COMPARED + tuple(f"sync/{k}" for k in a["sync"]):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def test_dynamic_sync_stops_at_a_check_point_and_resumes_exactly(tmp_path):
    """A stop request travels in dynamic's check collective, so every rank checkpoints at the next
    check point, sync point or not, and the resumed run decides as the uninterrupted one."""
    extra = ("sync.policy.name=dynamic", "sync.policy.delta=0.05", "mi.estimators=[]", "checkpoint.every=0")
    full = tmp_path / "full"
    run_ok(3, smoke_args(full, "run", *LONG, *extra))
    with open_trace(str(full / "run.h5")) as f:
        rows = len(f["rounds/step"])
        assert 3 < rows < 60  # dynamic made some check points sync points, not all
    out = tmp_path / "cut"
    proc = _start(out, *extra)
    _wait_for_rounds(out / "run.h5", 3, proc)
    os.kill(rank_pids(str(out))[-1], signal.SIGUSR1)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "checkpointed after check point" in stdout
    state = checkpoint.load(str(out / "run.ckpt"))
    assert state["position"]["next_check"] == state["check_index"] + 1 < 60
    run_ok(3, ["--resume", str(out / "run")])
    _assert_same_sync(full / "run.h5", out / "run.h5")


def test_information_sync_killed_in_mid_round_resumes_exactly(tmp_path):
    """A period of 7 check points and a checkpoint every 5: the checkpoints before check point 34
    fall inside rounds, so the run resumes from the middle of one (its clients' round-start
    models, losses and steps so far, and the policy's state, are in the checkpoint)."""
    extra = ("sync.policy.name=information", "sync.policy.min_period=7", "sync.policy.max_period=7",
             "mi.estimators=[]")
    full = tmp_path / "full"
    run_ok(3, smoke_args(full, "run", *LONG, *extra))
    out = tmp_path / "cut"
    proc = _start(out, *extra)
    _wait_for_rounds(out / "run.h5", 3, proc)  # sync points at check points 6, 13, 20
    _wait_for_checkpoint(out / "run.ckpt", proc, lambda state: state["position"]["policy"]["measured"] >= 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    state = checkpoint.load(str(out / "run.ckpt"))
    assert state["check_index"] % 5 == 4 and state["check_index"] % 7 != 6  # not a sync point
    assert "round" in state["workers"][0] and state["position"]["policy"]["measured"] >= 2
    run_ok(3, smoke_args(out, "run", *LONG, *extra) + ["--auto-resume"])
    _assert_same_sync(full / "run.h5", out / "run.h5")


def test_a_checkpoint_from_before_sync_policies_resumes_exactly(tmp_path, uninterrupted):
    """Checkpoints written before sync.policy hold no position, check index or client steps:
    they are periodic runs saved at a sync point, and resume as such."""
    proc = _start(tmp_path)
    _wait_for_rounds(tmp_path / "run.h5", 12, proc)
    _wait_for_checkpoint(tmp_path / "run.ckpt", proc)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    ckpt = str(tmp_path / "run.ckpt")
    state = checkpoint.load(ckpt)
    for key in ("position", "check_index", "client_steps", "format"):
        del state[key]
    checkpoint.save(ckpt, state)
    run_ok(3, smoke_args(tmp_path, "run", *LONG) + ["--auto-resume"])
    _assert_same(uninterrupted, tmp_path / "run.h5")
