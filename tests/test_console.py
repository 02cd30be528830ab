"""The console's pace and ETA, and the TensorBoard tags: pure parts, no MPI."""

import math
import sys

import numpy as np
import pytest

from fedmpi.console import Console, Pace, stdout_is_a_terminal
from fedmpi.errors import UsageError
from fedmpi.tensorboard import require, row_scalars


def test_pace_measures_steps_per_second_over_the_recent_window():
    pace = Pace(total_steps=1000, window=2)
    assert pace.rate() is None and pace.eta() is None  # nothing measured yet
    pace.add(0.0, 0)
    pace.add(10.0, 100)  # 10 steps/s
    assert pace.rate() == 10.0 and pace.eta() == 90.0  # 900 steps left
    pace.add(12.0, 200)  # faster now: 100 steps in 2 s
    pace.add(14.0, 300)
    # A window of 2 intervals keeps (10, 100), (12, 200), (14, 300): 200 steps in 4 s; the slow
    # start is forgotten.
    assert pace.rate() == 50.0 and pace.eta() == 700 / 50.0
    pace.add(20.0, 1000)
    assert pace.eta() == 0.0


def test_eta_follows_progress_not_the_printing(capsys, monkeypatch):
    """Plain lines print the ETA of the measured pace, whenever they are printed."""
    clock = iter([0.0, 0.0, 5.0, 10.0, 10.0])  # start, start's pace origin, sync 1, sync 2, the row
    monkeypatch.setattr("fedmpi.console.time.perf_counter", lambda: next(clock))
    console = Console("job", num_rounds=4, total_steps=400, live=False)
    console.start("header")
    console.sync_point(0, 100)  # 100 steps in 5 s
    console.sync_point(1, 200)  # 200 steps in 10 s: 20 steps/s, 200 left: 10 s
    console.round(1, 1.0, 0.5, np.array([0.4, 0.6]), np.array([0.5, 0.5]))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("[job] sync 2/4  round 2: epoch 1.00  test 0.500")
    assert line.endswith("20.0 steps/s  eta 0:10")


def test_open_mpis_pseudo_terminal_is_not_taken_for_a_person_at_a_terminal(monkeypatch):
    """Open MPI's launcher hands rank 0 a pseudo-terminal even when its output goes to a pipe or
    a log: `--progress auto` must not draw the live display into that log."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.delenv("OMPI_COMM_WORLD_RANK", raising=False)
    assert stdout_is_a_terminal() and Console("job", 4, 400).live
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    plain = Console("job", 4, 400)
    assert not stdout_is_a_terminal() and not plain.live and not plain.out.is_terminal  # no escape codes
    assert Console("job", 4, 400, live=True).live  # --progress live still draws it
    monkeypatch.setattr(sys.stdout, "isatty", lambda: False)
    monkeypatch.delenv("OMPI_COMM_WORLD_RANK")
    assert not stdout_is_a_terminal()


def test_tensorboard_tags_per_worker_and_nan_left_out():
    tags = row_scalars({"test_acc": 0.5, "local_acc": np.array([0.25, math.nan])},
                       {"edge": {"zy_local": np.array([0.1, 0.2]), "xz_averaged": np.array([1.0, 2.0])}},
                       {"bounds/fano_local": np.array([0.3, 0.4])})
    assert tags == {"test/accuracy": 0.5, "local/accuracy/worker_0": 0.25,
                    "mi/edge/I(Z;Y) local/worker_0": 0.1, "mi/edge/I(Z;Y) local/worker_1": 0.2,
                    "mi/edge/I(X;Z) averaged/worker_0": 1.0, "mi/edge/I(X;Z) averaged/worker_1": 2.0,
                    "bounds/fano_local/worker_0": 0.3, "bounds/fano_local/worker_1": 0.4}


def test_missing_tensorboard_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import fails as if not installed
    with pytest.raises(UsageError) as err:
        require("trace.tensorboard")
    assert "needs the tensorboard package" in str(err.value) and 'pip install -e ".[tensorboard]"' in str(err.value)
    assert "\n" not in str(err.value)
