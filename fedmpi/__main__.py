"""`python -m fedmpi` runs the command line (see fedmpi.cli), each MPI rank under a watcher
(see fedmpi.supervise)."""

import gc
import sys

from fedmpi.cli import main
from fedmpi.supervise import supervised

code = supervised(main)
# At exit Python collects garbage while it frees its modules: with torch loaded that took 0.44 s
# of a process that had only imported torch, 0.10 s after gc.freeze(), which moves every live
# object out of the collector's view (measured). The exit is otherwise the usual one: atexit
# handlers run, mpi4py's finalises MPI. (os._exit right after MPI_Finalize was faster still, but
# MPICH's launcher then sometimes killed a rank's watcher and failed the job.)
gc.freeze()
sys.exit(code)
