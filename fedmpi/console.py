"""What the coordinator shows: a rich progress display on a terminal, plain lines elsewhere.

SLURM output files and pipes get one plain line per logged round (at most one
a second, the last always), so logs stay readable. mpirun hands rank 0 a
pipe even when it runs in a terminal, so `--progress live` asks for the
live display explicitly; it works wherever the launcher passes output through
unchanged (MPICH's and Open MPI's do). Workers print nothing but
errors.
"""

from __future__ import annotations

import sys
import time
from typing import Mapping

import numpy as np
from rich.console import Console as RichConsole
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

_PLAIN_MIN_INTERVAL_S = 1.0


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Console:
    def __init__(self, job: str, num_rounds: int, live: bool | None = None):
        self.job = job
        self.num_rounds = num_rounds
        self.live = sys.stdout.isatty() if live is None else live
        self.out = RichConsole(highlight=False, soft_wrap=True, force_terminal=self.live or None)
        self.start_time = time.perf_counter()
        self._last_plain = -1e9
        self._first = 0
        self._mi_text = ""
        self._progress: Progress | None = None
        self._task = None

    def start(self, header: str, first: int = 0) -> None:
        """Show the header; `first` sync points were done before (a resumed run)."""
        self._first = first
        self.start_time = time.perf_counter()
        self.out.print(header)
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(bar_width=20),
                TextColumn("sync {task.completed}/{task.total}"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=self.out)
            self._progress.start()
            self._task = self._progress.add_task(self.job, total=self.num_rounds, completed=first, stats="")

    def note(self, message: str) -> None:
        self.out.print(f"[yellow]{message}[/yellow]" if self.live else message)

    def mi(self, text: str) -> None:
        self._mi_text = text

    def round(self, sync_index: int, epoch: float, test_acc: float, local_acc: np.ndarray,
              averaged_acc: np.ndarray) -> None:
        done = sync_index + 1
        stats = (f"epoch {epoch:.2f}  test {test_acc:.3f}  local {_accs(local_acc)}  "
                 f"averaged {_accs(averaged_acc)}" + (f"  {self._mi_text}" if self._mi_text else ""))
        if self._progress is not None:
            self._progress.update(self._task, completed=done, stats=stats)
            return
        now = time.perf_counter()
        if now - self._last_plain < _PLAIN_MIN_INTERVAL_S and done < self.num_rounds:
            return
        self._last_plain = now
        elapsed = now - self.start_time
        eta = elapsed / max(done - self._first, 1) * (self.num_rounds - done)
        print(f"[{self.job}] sync {done}/{self.num_rounds}  {stats}  elapsed {_fmt_time(elapsed)}  "
              f"eta {_fmt_time(eta)}", flush=True)

    def finish(self, title: str, rows: Mapping[str, str]) -> None:
        if self._progress is not None:
            self._progress.stop()
        table = Table(title=title, show_header=False)
        table.add_column("what", style="bold")
        table.add_column("value")
        for key, value in rows.items():
            table.add_row(key, value)
        self.out.print(table)


def _accs(values: np.ndarray) -> str:
    return " ".join(f"{v:.3f}" for v in values) if len(values) <= 4 else \
        f"{np.mean(values):.3f} (mean of {len(values)})"
