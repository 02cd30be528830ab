"""Rank `argv[1]` raises while every other rank waits in a sync point.

Without fedmpi's abort the waiting ranks would hang forever; with it the
whole job ends with the failing rank's traceback.
"""
import sys

import numpy as np

from fedmpi.comm import Comm, run_or_abort

comm = Comm()
failing = int(sys.argv[1])


def role() -> int:
    if comm.rank == failing:
        raise RuntimeError("injected failure")
    buf = np.zeros(4, np.float32)
    comm.allreduce_sum(buf, np.empty_like(buf))
    return 0


sys.exit(run_or_abort(comm, role))
