"""One side of each object collective works for a second while the others wait in it.

`agree`: the coordinator's preflight sleeps; `collect`: the workers sleep before handing over
their state. Each waiting rank prints the CPU seconds it used while waiting: a rank that
spins in MPI (MPICH's blocking collectives do) uses about as much CPU as the wait is long.
"""
import sys
import time

from fedmpi.comm import Comm, run_or_abort

WORK_S = 1.0
comm = Comm()


def say(line: str) -> None:
    sys.stdout.write(line + "\n")  # one write: print's text and newline can interleave with another rank's
    sys.stdout.flush()


def role() -> int:
    cpu = time.process_time()
    comm.agree(lambda: time.sleep(WORK_S) or "ok")
    if not comm.is_coordinator:
        say(f"agree rank {comm.rank} waited using {time.process_time() - cpu:.3f} CPU s")
        time.sleep(WORK_S)
    cpu = time.process_time()
    comm.collect({"rank": comm.rank} if not comm.is_coordinator else None)
    if comm.is_coordinator:
        say(f"collect rank {comm.rank} waited using {time.process_time() - cpu:.3f} CPU s")
    return 0


sys.exit(run_or_abort(comm, role))
