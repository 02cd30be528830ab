"""`python -m fedmpi` runs the command line (see fedmpi.cli), each MPI rank under a watcher
(see fedmpi.supervise)."""

import sys

from fedmpi.cli import main
from fedmpi.supervise import supervised

sys.exit(supervised(main))
