"""Stop requests: SIGTERM or SIGUSR1 ask the job to checkpoint and exit.

The handler only sets a flag. Every rank sends its flag along with its
contribution at the next sync point (one more float in the summed buffer),
so all ranks learn of it at the same sync point, write one checkpoint and
exit cleanly: what SLURM's `--signal` before a time limit, or a preemption,
needs.
"""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequest:
    def __init__(self) -> None:
        self.signal_name: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def install(self) -> "StopRequest":
        for sig in SIGNALS:
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.signal_name = signal.Signals(signum).name
