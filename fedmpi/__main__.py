"""`python -m fedmpi` runs the command line (see fedmpi.cli)."""

import sys

from fedmpi.cli import main

sys.exit(main())
