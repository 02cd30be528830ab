"""What the coordinator shows: a rich progress display on a terminal, plain lines elsewhere.

SLURM output files and pipes get one plain line per logged round (at most one
a second, the last always) and, when rounds are long and rarely logged, a
progress line at least every `PLAIN_PROGRESS_S`, so logs stay readable and
never go quiet for long. The ETA comes from measured progress: local steps
per second over the recent sync points (`Pace`), times the steps still to
come; it is not extrapolated from when a line happens to be printed.
Under a sync policy that decides its sync points at run time (fedmpi.sync)
their number is not known ahead, so progress counts local steps of the
total and the sync points made so far.
mpirun hands rank 0 a pipe even when it runs in a terminal (MPICH), or a
pseudo-terminal of its own even when its output goes to a pipe or a file
(Open MPI), so neither says whether a person is watching: under either,
`auto` prints plain lines, and `--progress live` asks for the live display
explicitly; it works wherever the launcher passes output through unchanged
(MPICH's and Open MPI's do). Workers print nothing but errors.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Mapping

import numpy as np
from rich.console import Console as RichConsole
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

_PLAIN_MIN_INTERVAL_S = 1.0
PLAIN_PROGRESS_S = 60.0  # plain logs: a progress line at least this often


def _fmt_time(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 \
        else f"{seconds // 60}:{seconds % 60:02d}"


class Pace:
    """Local steps per second over the recent sync points, and the time left at that pace.

    Fed (wall seconds, steps done) at every sync point; the rate is measured
    over the last `window` sync points (all of them, evaluation and waiting
    included, since that is what the remaining rounds will cost too).
    """

    def __init__(self, total_steps: int, window: int = 20):
        self.total_steps = total_steps
        self.window = window
        self._points: list[tuple[float, int]] = []

    def add(self, seconds: float, steps: int) -> None:
        self._points.append((seconds, steps))
        del self._points[:-self.window - 1]

    def rate(self) -> float | None:
        """Steps per second over the window; None before two sync points are seen."""
        if len(self._points) < 2:
            return None
        (t0, s0), (t1, s1) = self._points[0], self._points[-1]
        return (s1 - s0) / (t1 - t0) if t1 > t0 and s1 > s0 else None

    def eta(self) -> float | None:
        """Seconds until the last step at the measured rate (0 when done)."""
        if self._points and self._points[-1][1] >= self.total_steps:
            return 0.0
        rate = self.rate()
        return None if rate is None else (self.total_steps - self._points[-1][1]) / rate


def stdout_is_a_terminal() -> bool:
    """Whether stdout is a terminal a person watches (`--progress auto`).

    Open MPI's launcher gives every rank's stdout a pseudo-terminal, without a
    size, whatever its own output is (a pipe, a log file): seen with Open MPI
    4.1. Under it, that says nothing, so it counts as no terminal."""
    return sys.stdout.isatty() and "OMPI_COMM_WORLD_RANK" not in os.environ


class Console:
    def __init__(self, job: str, num_rounds: int | None, total_steps: int, live: bool | None = None):
        """num_rounds: the run's sync points, or None when its sync policy decides them at run time
        (fedmpi.sync); progress then counts local steps, and the sync points made so far."""
        self.job = job
        self.num_rounds = num_rounds
        self.total_steps = total_steps
        self._step = 0  # local steps of the largest client so far
        self.pace = Pace(total_steps)
        self.live = stdout_is_a_terminal() if live is None else live
        # Not live and no terminal a person watches: no escape codes either (rich would see Open MPI's
        # pseudo-terminal and colour the log).
        self.out = RichConsole(highlight=False, soft_wrap=True,
                               force_terminal=self.live or (None if stdout_is_a_terminal() else False))
        self.start_time = time.perf_counter()
        self._last_plain = -1e9
        self._done = 0  # sync points reached
        self._stats = ""
        self._mi_text = ""
        self._progress: Progress | None = None
        self._task = None

    def start(self, header: str, first: int = 0, first_step: int = 0) -> None:
        """Show the header; `first` rounds (`first_step` steps) were done before (a resumed run)."""
        self._done = first
        self._step = first_step
        self.start_time = self._last_plain = time.perf_counter()
        self.pace.add(0.0, first_step)
        self.out.print(header)
        if self.live:
            known = self.num_rounds is not None
            count = TextColumn("sync {task.completed}/{task.total}") if known else \
                TextColumn("step {task.completed}/{task.total}, {task.fields[syncs]} sync points")
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(bar_width=20), count, TimeElapsedColumn(),
                TextColumn("eta {task.fields[eta]}"), TextColumn("{task.fields[stats]}"), console=self.out)
            self._progress.start()
            self._task = self._progress.add_task(self.job, total=self.num_rounds if known else self.total_steps,
                                                 completed=first if known else first_step, stats="", eta="-",
                                                 syncs=first)

    def note(self, message: str) -> None:
        self.out.print(f"[yellow]{message}[/yellow]" if self.live else message)

    def mi(self, text: str) -> None:
        self._mi_text = text

    def _eta_text(self) -> str:
        eta = self.pace.eta()
        return "-" if eta is None else _fmt_time(eta)

    def sync_point(self, round_idx: int, step: int) -> None:
        """Every sync point: progress and pace (a plain line only if the log went quiet)."""
        self._done = round_idx + 1
        self.check_point(step)

    def check_point(self, step: int) -> None:
        """Every check point (fedmpi.sync) and sync point: progress and pace."""
        self._step = step
        now = time.perf_counter()
        self.pace.add(now - self.start_time, step)
        if self._progress is not None:
            self._progress.update(self._task, completed=self._done if self.num_rounds is not None else step,
                                  syncs=self._done, eta=self._eta_text())
        elif now - self._last_plain >= PLAIN_PROGRESS_S:
            self._plain_line(now, self._stats or "waiting for the first logged round")

    def round(self, sync_index: int, epoch: float, test_acc: float, local_acc: np.ndarray,
              averaged_acc: np.ndarray) -> None:
        """A logged round reached the trace: show its numbers."""
        self._stats = (f"round {sync_index + 1}: epoch {epoch:.2f}  test {test_acc:.3f}  local {_accs(local_acc)}  "
                       f"averaged {_accs(averaged_acc)}" + (f"  {self._mi_text}" if self._mi_text else ""))
        if self._progress is not None:
            self._progress.update(self._task, stats=self._stats, eta=self._eta_text())
            return
        now = time.perf_counter()
        if now - self._last_plain < _PLAIN_MIN_INTERVAL_S and self._step < self.total_steps:
            return
        self._plain_line(now, self._stats)

    def _plain_line(self, now: float, stats: str) -> None:
        self._last_plain = now
        rate = self.pace.rate()
        pace = f"{rate:.1f} steps/s" if rate is not None else "-"
        where = f"sync {self._done}/{self.num_rounds}" if self.num_rounds is not None else \
            f"step {self._step}/{self.total_steps}, {self._done} sync points"
        print(f"[{self.job}] {where}  {stats}  elapsed {_fmt_time(now - self.start_time)}"
              f"  {pace}  eta {self._eta_text()}", flush=True)

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
