"""`python -m fedmpi` runs the command line (see fedmpi.cli), each MPI rank under a watcher
(see fedmpi.supervise), and exits without the garbage collector's last passes
(fedmpi.comm.exit_process)."""

from fedmpi.cli import main
from fedmpi.supervise import supervised

code = supervised(main)
from fedmpi.comm import exit_process  # noqa: E402 - after the fork: the watcher imports no numpy

exit_process(code)
