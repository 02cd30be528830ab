"""A watcher per MPI rank, so that a rank killed outright is still named.

A rank killed by SIGKILL (a user, the out-of-memory killer) cannot report
anything, and MPI launchers report the death of "a process", not which rank
it was. So under a launcher, `python -m fedmpi` forks before anything else
happens (no MPI, no torch, no threads yet): the child is the real rank, and
the parent only waits for it. It forwards signals to the child and, if the
child dies from a signal, prints which rank it was and exits with 128 +
signal. The launcher then ends the job as usual. The child asks the kernel
to kill it if the parent dies (PR_SET_PDEATHSIG), so launcher clean-up that
kills only the parent leaves no orphan behind.

Outside a launcher (no rank in the environment: `--help`, `check`, `analyze`)
nothing forks.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import Callable

# Rank variables set by MPICH/hydra and Intel MPI, Open MPI, PMIx launchers, and srun.
_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID")
_FORWARDED = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT, signal.SIGHUP)
_PR_SET_PDEATHSIG = 1
_CHILD_FLAG = "FEDMPI_SUPERVISED"


def launcher_rank() -> int | None:
    for name in _RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def supervised(main: Callable[[], int]) -> int:
    rank = launcher_rank()
    if rank is None or os.environ.get(_CHILD_FLAG) or not sys.platform.startswith("linux"):
        return main()
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        os.environ[_CHILD_FLAG] = "1"
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)
        return main()
    def forward(signum, frame) -> None:
        try:
            os.kill(child, signum)
        except ProcessLookupError:  # the rank has ended and been reaped (see below)
            pass

    for sig in _FORWARDED:
        signal.signal(sig, forward)
    _, status = os.waitpid(child, 0)  # retried by Python when a forwarded signal interrupts it
    # The rank has ended. A launcher that ends the job when one rank exits non-zero (Open MPI's
    # mpirun does) may signal this watcher now, while it exits: nothing is left to forward to,
    # and the rank's own exit status must stand (seen under load: a ProcessLookupError traceback).
    for sig in _FORWARDED:
        signal.signal(sig, signal.SIG_IGN)
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        role = "coordinator" if rank == 0 else f"worker {rank}"
        sys.stderr.write(f"fedmpi: rank {rank} ({role}, pid {child}) was killed by "
                         f"{signal.Signals(sig).name}; the job ends\n")
        sys.stderr.flush()
        return 128 + sig
    return os.WEXITSTATUS(status)
