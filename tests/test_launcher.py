"""What fedmpi does about its launcher, without MPI: the watcher that runs each rank as its child
(fedmpi.supervise), and the error for a launcher of another MPI."""

import os
import signal
import subprocess
import sys

from fedmpi.cli import too_few_ranks

from conftest import ROOT

# Runs `supervised(main)` as a rank of a launcher would (PMI_RANK set); `main` is the rank.
SCRIPT = """
import os, signal, sys, time
from fedmpi import supervise
{setup}
sys.exit(supervise.supervised({main}))
"""


def _watch(main: str, setup: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PMI_RANK="1", PYTHONPATH=str(ROOT))
    env.pop("FEDMPI_SUPERVISED", None)
    return subprocess.run([sys.executable, "-c", SCRIPT.format(main=main, setup=setup)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_rank_killed_outright_is_named_and_its_signal_is_the_exit_status():
    proc = _watch("lambda: os.kill(os.getpid(), signal.SIGKILL)")
    assert proc.returncode == 128 + signal.SIGKILL
    assert "fedmpi: rank 1 (worker 1, pid " in proc.stderr and "was killed by SIGKILL" in proc.stderr


def test_a_signal_after_the_rank_has_ended_leaves_its_exit_status():
    """Open MPI's mpirun ends the job when a rank exits non-zero, signalling the others' watchers
    while they exit. The watcher must not fail on a child that is gone."""
    setup = """
real = os.waitpid
def waitpid_then_signal(pid, options):
    result = real(pid, options)
    os.kill(os.getpid(), signal.SIGTERM)  # the launcher's teardown arrives as the rank has ended
    time.sleep(0.2)
    return result
os.waitpid = waitpid_then_signal
"""
    proc = _watch("lambda: 2", setup)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_launcher_of_another_mpi_is_named_as_the_cause_of_a_world_of_one():
    """MPICH's mpirun (first on PATH under pyenv, from the `mpich` extra) starting an mpi4py built
    for Open MPI: every rank is alone in a world of 1."""
    message = too_few_ranks(1, {"PMI_SIZE": "3", "PMI_RANK": "1"}, "Open MPI v4.1.4")
    assert "the launcher started 3 ranks, but each sees a world of 1" in message
    assert "(Open MPI v4.1.4)" in message
    assert "the launcher started" in too_few_ranks(1, {"OMPI_COMM_WORLD_SIZE": "3"}, "MPICH Version: 5.0.2")
    alone = too_few_ranks(1, {"PMI_SIZE": "1"}, "MPICH Version: 5.0.2")  # mpirun -n 1: the plain error
    assert alone.startswith("fedmpi needs at least 2 MPI ranks")
    assert too_few_ranks(1, {}, "MPICH Version: 5.0.2") == alone
