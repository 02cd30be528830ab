"""`python -m fedmpi analyze` on traces made by real short MPI runs of jobs/smoke.yaml.

Two runs for the whole file (about 7 s each): `full` with redistribution, MI by
EDGE and binning and logged activations; `bare` without redistribution, one
epoch, EDGE only and no activations. Tests that change a trace work on a copy.
"""

from __future__ import annotations

import csv
import io
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from fedmpi.cli import main as cli_main
from fedmpi.trace import MI_KEYS, SCHEMA_VERSION

from conftest import ROOT, run_ok, smoke_args

pytestmark = pytest.mark.mpi  # launches real MPI jobs: `python -m pytest -m "not mpi"` skips them

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run_job(out: Path, name: str, *overrides: str) -> Path:
    run_ok(3, smoke_args(out, name.removesuffix(".h5"), *overrides), timeout=180)
    return out / name


@pytest.fixture(scope="module")
def traces(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("runs")
    return {
        "full": _run_job(out, "full.h5", "mi.estimators=[edge,binning]"),
        "bare": _run_job(out, "bare.h5", "sync.redistribute=false", "trace.activations=false", "train.epochs=1"),
    }


def analyze(capsys, *argv) -> tuple[int, str, str]:
    rc = cli_main(["analyze", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def assert_usage_error(rc: int, out: str, err: str, *fragments: str) -> None:
    assert rc == 2
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedmpi: error: "), err
    for fragment in fragments:
        assert fragment in lines[0]


def read(path: Path) -> dict:
    with h5py.File(path, "r", swmr=True, libver="latest") as f:
        R = len(f["rounds/step"])
        data = {name: f[name][:R] for group in ("metrics", "timing") for name in
                (f"{group}/{n}" for n in f[group])}
        data.update({f"mi/{e}/{k}": f[f"mi/{e}/{k}"][:R] for e in f["mi"] for k in MI_KEYS})
        data.update({f"mi/{e}/{k}_se": f[f"mi/{e}/{k}_se"][:R] for e in f["mi"] for k in MI_KEYS
                     if f"mi/{e}/{k}_se" in f})
        data.update({f"bounds/{n}": f[f"bounds/{n}"][:R] for n in f.get("bounds", {})})
        data.update({f"comm/{n}": f[f"comm/{n}"][:R] for n in f.get("comm", {})})
        data.update({f"sync/{n}": f[f"sync/{n}"][:R] for n in f.get("sync", {})})
        data.update(R=R, index=f["rounds/index"][:R], step=f["rounds/step"][:R], attrs=dict(f.attrs))
    return data


def fingerprint(path: Path, group: str) -> dict:
    """Bytes of every dataset and attribute under group."""
    found = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            key = f"{group}/{name}"
            found[key + "@attrs"] = {k: np.asarray(v).tobytes() for k, v in obj.attrs.items()}
            if isinstance(obj, h5py.Dataset):
                data = obj[()]
                found[key] = (obj.shape, obj.dtype.str,
                              repr(data.tolist()) if obj.dtype.kind == "O" else np.asarray(data).tobytes())
        f[group].visititems(visit)
        found[group + "@attrs"] = {k: np.asarray(v).tobytes() for k, v in f[group].attrs.items()}
    return found


# ---------------------------------------------------------------- summary

def test_summary_matches_trace(traces, capsys):
    rc, out, err = analyze(capsys, traces["full"])
    assert rc == 0, err
    t = read(traces["full"])
    test_acc, local_acc = t["metrics/test_acc"], t["metrics/local_acc"]
    for text in ("smoke", "synthetic, iid partition, 2 workers", "every 8 local batches, with redistribution",
                 "complete", f"{t['R']} logged",
                 f"final {test_acc[-1]:.4f}  best {test_acc.max():.4f} (sync point {test_acc.argmax() + 1})",
                 f"final {local_acc[-1, 0]:.4f} {local_acc[-1, 1]:.4f}",
                 f"{t['mi/edge/zy_local'][-1, 0]:.4f}", f"{t['mi/binning/xz_averaged'][-1, 1]:.4f}"):
        assert text in out, text


def test_an_estimate_outside_its_bounds_is_flagged(traces, tmp_path, capsys):
    """Every trace stores [Fano, H(Y)] per worker and model; an I(Z;Y) beyond it (here one
    injected above H(Y) and one below Fano) is flagged with where it is, the rest is not."""
    import h5py
    import shutil
    path = tmp_path / "injected.h5"
    shutil.copy(traces["full"], path)
    rc, out, _ = analyze(capsys, path)
    assert rc == 0 and "every I(Z;Y) estimate inside [Fano, H(Y)]" in out and "outside" not in out.split("┘")[-1]
    with h5py.File(path, "r+") as f:
        entropy, fano = f["bounds/entropy"][:], f["bounds/fano_local"][:]
        f["mi/edge/zy_averaged"][1, 0] = entropy[1, 0] + 0.5
        f["mi/binning/zy_local"][-1, 1] = fano[-1, 1] - 0.5 if fano[-1, 1] > 0.5 else -0.5
    rc, out, _ = analyze(capsys, path)
    assert rc == 0
    assert "! edge: 1 I(Z;Y) estimate(s) outside [Fano, H(Y)]" in out and "sync point 2 worker 1 averaged: above" in out
    assert "! binning: 1 I(Z;Y) estimate(s) outside" in out and "worker 2 local: below" in out


def test_a_schema_1_trace_reads_as_before(traces, tmp_path, capsys):
    """Traces written before schema 2 have no /bounds, standard errors or failures: they
    summarise, compare and export as before, and say that they cannot be checked."""
    import h5py
    import shutil
    path = tmp_path / "old.h5"
    shutil.copy(traces["full"], path)
    with h5py.File(path, "r+") as f:
        del f["bounds"]
        del f["comm"]  # schema 3
        for est in f["mi"]:
            for key in [k for k in f[f"mi/{est}"] if k.endswith("_se") or k == "failure"]:
                del f[f"mi/{est}/{key}"]
            for key in [k for k in f[f"mi/{est}"].attrs if k.startswith("what_")]:
                del f[f"mi/{est}"].attrs[key]
        f.attrs["schema_version"] = 1
    rc, out, _ = analyze(capsys, path)
    assert rc == 0 and "has no /bounds" in out
    assert f"{read(path)['mi/edge/zy_local'][-1, 0]:.4f}" in out
    rc, out, _ = analyze(capsys, path, "--csv", "-")
    assert rc == 0 and "bounds/" not in out and "mi/edge/zy" in out
    rc, out, _ = analyze(capsys, path, path)
    assert rc == 0


def test_sync_policy_line_and_a_trace_from_before_sync_policies(traces, tmp_path, capsys):
    """The summary says which policy made the sync points; a trace written before sync.policy
    (no /sync, no policy in its config) reads as periodic."""
    import yaml
    rc, out, _ = analyze(capsys, traces["full"])
    assert rc == 0 and "periodic: 4 sync points at 4 of 4 check points (one every 8 local batches)" in out
    rc, out, _ = analyze(capsys, traces["full"], "--csv", "-")
    assert rc == 0 and ",sync/check_index,3\n" in out
    path = tmp_path / "old.h5"
    shutil.copy(traces["full"], path)
    with h5py.File(path, "r+") as f:
        del f["sync"]
        raw = yaml.safe_load(f.attrs["config"])
        del raw["sync"]["policy"]
        f.attrs["config"] = yaml.safe_dump(raw)
    rc, out, _ = analyze(capsys, path)
    assert rc == 0 and "periodic: every check point a sync point, 4 so far" in out
    rc, out, _ = analyze(capsys, path, "--csv", "-")
    assert rc == 0 and "sync/" not in out
    rc, out, _ = analyze(capsys, path, traces["full"])
    assert rc == 0 and out.count("periodic") >= 2


def test_comparison_table_has_a_row_per_trace(traces, capsys):
    rc, out, err = analyze(capsys, traces["full"], traces["bare"])
    assert rc == 0, err
    rows = {name: [line for line in out.splitlines() if str(path) in line] for name, path in traces.items()}
    assert len(rows["full"]) == 1 and len(rows["bare"]) == 1
    bare = read(traces["bare"])
    assert " yes " in rows["full"][0] and " no " in rows["bare"][0]
    assert f" {bare['R']} " in rows["bare"][0] and f"{bare['metrics/test_acc'][-1]:.4f}" in rows["bare"][0]
    assert "edge I(Z;Y) loc/avg" in out and "binning I(X;Z) loc/avg" in out


# ---------------------------------------------------------------- CSV

def expected_rows(t: dict) -> dict:
    """(round, step, worker, model, metric) -> value, built from the trace independently."""
    rows = {}
    for r in range(t["R"]):
        head = (str(t["index"][r]), str(t["step"][r]))
        for name, values in t.items():
            group, _, metric = name.partition("/")
            if group in ("metrics", "timing"):
                model = ("averaged" if metric.startswith(("test_", "averaged_")) else
                         "local" if metric.startswith(("local_", "train_loss")) else "")
                if values.ndim == 1:
                    rows[head + ("", model, metric)] = values[r]
                else:
                    for k in range(values.shape[1]):
                        rows[head + (str(k), model, metric)] = values[r, k]
            elif group == "mi":
                est, key = metric.split("/")
                side, model, *se = key.split("_")  # zy_local, or zy_local_se: a standard error
                for k in range(values.shape[1]):
                    if not math.isnan(values[r, k]) and not (se and math.isnan(t[name[:-3]][r, k])):
                        rows[head + (str(k), model, f"mi/{est}/{side}" + ("_se" if se else ""))] = values[r, k]
            elif group == "bounds":  # fano_se_local -> model local, metric bounds/fano_se
                model = metric.rsplit("_", 1)[1] if metric.endswith(("_local", "_averaged")) else ""
                what = metric[:-len(model) - 1] if model else metric
                for k in range(values.shape[1]):
                    rows[head + (str(k), model, f"bounds/{what}")] = values[r, k]
            elif group == "sync":  # the policy's check point and state per row, left out when NaN
                if not math.isnan(values[r]):
                    rows[head + ("", "", name)] = values[r]
            elif group == "comm":  # counts per worker; diagnostics per row, left out when NaN
                if values.ndim == 2:
                    for k in range(values.shape[1]):
                        rows[head + (str(k), "", name)] = values[r, k]
                elif not math.isnan(values[r]):
                    rows[head + ("", "", name)] = values[r]
    return rows


def test_csv_rows_and_values_match_trace(traces, tmp_path, capsys):
    path = tmp_path / "full.csv"
    rc, out, err = analyze(capsys, traces["full"], "--csv", path)
    assert rc == 0, err
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["round", "step", "worker", "model", "metric", "value"]
    got = {tuple(row[:5]): float(row[5]) for row in rows[1:]}
    assert len(got) == len(rows) - 1  # no duplicate keys
    t = read(traces["full"])
    expected = expected_rows(t)
    assert got.keys() == expected.keys()
    assert all(got[key] == expected[key] for key in expected)  # exact: floats are written with repr
    R, W = t["R"], 2
    assert sum(key[4].startswith("mi/") for key in got) == R * W * 4 * 2  # 2 estimators, none NaN, no se
    assert {key[3] for key in got if key[4] in ("test_acc", "averaged_acc")} == {"averaged"}
    assert {key[2] for key in got if key[4] == "test_acc"} == {""}
    assert f"({len(rows) - 1} rows)" in out


def test_csv_of_several_traces_has_trace_column(traces, capsys):
    rc, out, err = analyze(capsys, traces["full"], traces["bare"], "--csv", "-")
    assert rc == 0, err
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["trace", "round", "step", "worker", "model", "metric", "value"]
    for name, path in traces.items():
        mine = {tuple(row[1:6]): float(row[6]) for row in rows[1:] if row[0] == str(path)}
        assert mine == expected_rows(read(path))


# ---------------------------------------------------------------- figures

def test_plots_are_written_as_png(traces, tmp_path, capsys):
    folder = tmp_path / "figures"
    rc, out, err = analyze(capsys, traces["full"], traces["bare"], "--plots", folder)
    assert rc == 0, err
    # Both traces come from job "smoke": their file names tell them apart.
    expected = [f"smoke-full-{kind}.png" for kind in
                ("accuracy", "mi-edge", "infoplane-edge", "mi-binning", "infoplane-binning")]
    # The decoder estimates I(Z;Y) only: its MI figure, but no information plane.
    expected += [f"smoke-bare-{kind}.png" for kind in ("accuracy", "mi-decoder", "mi-edge", "infoplane-edge")]
    # Communication per trace, and accuracy against bits across traces.
    expected += ["smoke-full-communication.png", "smoke-bare-communication.png", "compare-accuracy-bits.png"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)
    for name in expected:
        data = (folder / name).read_bytes()
        assert len(data) > 1000 and data.startswith(PNG_SIGNATURE), name
    assert sorted(Path(line).name for line in out.split()) == sorted(expected)


def test_communication_in_summary_csv_comparison_and_plots(traces, tmp_path, capsys):
    path = _run_job(tmp_path, "topk.h5", "compression.name=topk", "compression.fraction=0.05",
                    "compression.measure_distortion=true", "mi.estimators=[]", "train.epochs=1",
                    "trace.activations=false", "trace.divergence=true")
    with h5py.File(path, "r") as f:
        up, down = f["comm/bytes_up"][:], f["comm/bytes_down"][:]
        ratio = np.mean(f["comm/update_bits"][:] / f["comm/rd_limit_bits"][:])
        bits = f["comm/update_bits"][0]
    rc, out, err = analyze(capsys, path)
    assert rc == 0, err
    assert "topk (fraction=0.05)" in out and f"{bits:.3f} bits per parameter" in out
    assert f"up {up.sum() / 1e6:.2f} MB, down {down.sum() / 1e6:.2f} MB" in out
    assert f"bits / R_sum limit at it: {ratio:.2f}" in out
    assert "largest relative divergence" in out
    rc, out, _ = analyze(capsys, path, "--csv", "-")
    rows = [line.split(",") for line in out.splitlines() if ",comm/bytes_up," in line]
    assert [int(r[-1]) for r in rows] == up.ravel().tolist()
    assert any(",comm/rd_limit_bits," in line for line in out.splitlines())
    assert any(",divergence/relative/conv1.weight," in line for line in out.splitlines())
    rc, out, _ = analyze(capsys, path, traces["bare"])  # a compressed and an uncompressed run side by side
    assert rc == 0 and "topk (fraction=0.05)" in out and "none" in out
    rc, out, _ = analyze(capsys, path, traces["bare"], "--plots", tmp_path / "figs")
    assert rc == 0 and "compare-accuracy-bits.png" in out and "topk-communication.png" in out
    assert "topk-divergence.png" in out


# ---------------------------------------------------------------- MI re-estimation

def test_reestimate_and_write_new_group(traces, tmp_path, capsys):
    trace = tmp_path / "copy.h5"
    shutil.copy(traces["full"], trace)
    before = fingerprint(trace, "mi")
    rc, out, err = analyze(capsys, trace, "--estimator", "edge", "--write")
    assert rc == 0, err
    assert "I(Z;Y) averaged" in out and "wrote /analysis/mi/edge-" in out
    with h5py.File(trace, "r") as f:
        (group,) = f["analysis/mi"].keys()
        assert group.startswith("edge-")
        g = f[f"analysis/mi/{group}"]
        assert g.attrs["estimator"] == "edge" and g.attrs["units"] == "nats" and g.attrs["L"] == 5
        for key in MI_KEYS:  # same estimator, same parameters, same activations: the run's values
            np.testing.assert_array_equal(g[key][:], f[f"mi/edge/{key}"][:])
    assert fingerprint(trace, "mi") == before

    rc, out, err = analyze(capsys, trace, "--estimator", "edge", "--write")
    assert_usage_error(rc, out, err, f"/analysis/mi/{group}", "--overwrite")
    rc, out, err = analyze(capsys, trace, "--estimator", "edge", "--write", "--overwrite")
    assert rc == 0, err

    rc, out, err = analyze(capsys, trace, "--estimator", "binning", "--param", "bins=10", "--write")
    assert rc == 0, err
    with h5py.File(trace, "r") as f:
        groups = sorted(f["analysis/mi"].keys())
        binning = next(g for g in groups if g.startswith("binning-"))
        assert f[f"analysis/mi/{binning}"].attrs["bins"] == 10
        assert len(groups) == 2
    assert fingerprint(trace, "mi") == before
    rc, out, err = analyze(capsys, trace)
    assert rc == 0 and f"{binning} (re-estimated)" in out


def test_reestimate_prints_without_writing(traces, capsys):
    before = fingerprint(traces["full"], "/")
    rc, out, err = analyze(capsys, traces["full"], "--estimator", "kde", "--param", "sigma2=0.5")
    assert rc == 0, err
    assert "kde (sigma2=0.5, bound=saxe)" in out
    assert fingerprint(traces["full"], "/") == before


@pytest.mark.parametrize("argv, fragment", [
    (["--estimator", "nope"], "unknown MI estimator 'nope'"),
    (["--estimator", "edge", "--param", "k=3"], "unknown edge parameter"),
    (["--estimator", "binning", "--param", "bins=0"], "binning.bins"),
    (["--estimator", "ksg", "--param", "k"], "KEY=VALUE"),
    (["--write"], "need --estimator"),
])
def test_reestimate_bad_arguments(traces, capsys, argv, fragment):
    assert_usage_error(*analyze(capsys, traces["full"], *argv), fragment)


def test_reestimate_needs_activations(traces, capsys):
    assert_usage_error(*analyze(capsys, traces["bare"], "--estimator", "edge"), "no logged activations")


# ---------------------------------------------------------------- bad files

def make_bad(kind: str, tmp_path: Path, source: Path) -> Path:
    path = tmp_path / f"{kind}.h5"
    if kind == "text":
        path.write_text("not a trace\n")
    elif kind == "foreign":
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
    elif kind == "newer":
        shutil.copy(source, path)
        with h5py.File(path, "r+") as f:
            f.attrs["schema_version"] = SCHEMA_VERSION + 1
    elif kind == "truncated":
        data = source.read_bytes()
        path.write_bytes(data[:len(data) // 2])
    return path  # "missing": never created


@pytest.mark.parametrize("kind, fragment", [
    ("text", "not an HDF5 file"), ("foreign", "not a fedmpi trace"), ("newer", f"schema version {SCHEMA_VERSION + 1}"),
    ("truncated", "truncated"), ("missing", "does not exist")])
def test_bad_files_give_one_line(traces, tmp_path, capsys, kind, fragment):
    path = make_bad(kind, tmp_path, traces["full"])
    assert_usage_error(*analyze(capsys, path), fragment)
    assert_usage_error(*analyze(capsys, path, "--csv", tmp_path / "x.csv"), fragment)


def damage(source: Path, path: Path, where: str, layout: Path) -> Path:
    """A copy of source with one flipped byte: in the object header of /metrics/test_acc (HDF5
    metadata, checksummed by HDF5) or in the first chunk of its data (Fletcher-32). Offsets are
    read from `layout`, a closed trace with the same layout."""
    data = bytearray(source.read_bytes())
    with h5py.File(layout, "r") as f:
        ds = f["metrics/test_acc"]
        offset = h5py.h5o.get_info(ds.id).addr + 20 if where == "metadata" else \
            ds.id.get_chunk_info(0).byte_offset + 3
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("where", ["metadata", "data"])
@pytest.mark.parametrize("writer", ["closed", "crashed"])
def test_damaged_trace_gives_one_line_and_no_wait(traces, tmp_path, where, writer):
    """A damaged copy used to keep analyze inside HDF5's SWMR metadata retries for minutes."""
    source = tmp_path / "source.h5"
    shutil.copy(traces["full"], source)
    if writer == "crashed":  # flagged as open for writing, as a trace whose run was killed
        proc = subprocess.Popen([sys.executable, "-c", "import h5py, sys; f = h5py.File(sys.argv[1], 'r+', "
                                 "libver='latest'); f.swmr_mode = True; print('ready', flush=True); "
                                 "sys.stdin.read()", str(source)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        proc.kill()
        proc.wait(timeout=30)
    bad = damage(source, tmp_path / "bad.h5", where, layout=traces["full"])
    for extra in ([], ["--csv", "-"]):
        # A hang is the failure this guards against; the timeout only bounds it.
        proc = subprocess.run([sys.executable, "-m", "fedmpi", "analyze", str(bad), *extra], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert_usage_error(proc.returncode, proc.stdout, proc.stderr, "is truncated or corrupt")


# ---------------------------------------------------------------- running and crashed traces

def test_crashed_trace_reads_complete_rounds(traces, tmp_path, capsys):
    """A crash after the per-round datasets grew and before /rounds/* did: one extra junk row."""
    trace = tmp_path / "crashed.h5"
    shutil.copy(traces["full"], trace)
    t = read(traces["full"])
    R = t["R"]
    with h5py.File(trace, "r+") as f:
        for group in ("metrics", "timing", "activations", "mi/edge", "mi/binning"):
            for ds in f[group].values():
                ds.resize(R + 1, axis=0)
                ds[R] = 99.0
        f["mi/edge/xz_local"][R - 1] = np.nan  # the last round's EDGE estimate not written yet
        f["mi/edge/zy_local"][R - 1] = np.nan
        f["mi/edge/xz_averaged"][R - 1] = np.nan
        f["mi/edge/zy_averaged"][R - 1] = np.nan
        f.attrs["status"] = "running"
        del f.attrs["finished"]
    rc, out, err = analyze(capsys, trace)
    assert rc == 0, err
    assert "running or interrupted" in out and f"{R} logged" in out
    assert re.search(r"(?<![\w./-])(99(\.\d|%)|9900)", out) is None  # no junk value (the path may hold pytest-99/)
    assert f"{t['mi/edge/zy_local'][R - 2, 0]:.4f}" in out  # latest EDGE row is the one before
    rc, out, err = analyze(capsys, trace, "--csv", "-")
    assert rc == 0, err
    rows = list(csv.reader(io.StringIO(out)))[1:]
    assert {int(row[0]) for row in rows} == set(range(R))
    assert all(float(row[5]) != 99.0 for row in rows)
    last = [row for row in rows if int(row[0]) == R - 1]
    assert not any(row[4].startswith("mi/edge/") for row in last)
    assert sum(row[4].startswith("mi/binning/") for row in last) == 2 * 4


def test_trace_open_by_a_swmr_writer(traces, tmp_path, capsys):
    """Readable while a writer holds it (as during a run) and after that writer is killed (a crash)."""
    trace = tmp_path / "live.h5"
    shutil.copy(traces["full"], trace)
    writer = subprocess.Popen(
        [sys.executable, "-c", "import h5py, sys; f = h5py.File(sys.argv[1], 'r+', libver='latest'); "
         "f.swmr_mode = True; print('ready', flush=True); sys.stdin.read()", str(trace)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        rc, out, err = analyze(capsys, trace)
        assert rc == 0 and f"{read(traces['full'])['R']} logged" in out, err
        assert_usage_error(*analyze(capsys, trace, "--estimator", "edge", "--write"), "open for writing")
    finally:
        writer.kill()
        writer.wait(timeout=30)
    rc, out, err = analyze(capsys, trace, "--csv", "-")
    assert rc == 0 and len(out.splitlines()) > 1, err
    assert_usage_error(*analyze(capsys, trace, "--estimator", "edge", "--write"), "h5clear")


# ---------------------------------------------------------------- the real command line

def test_command_line(traces, tmp_path):
    def fedmpi(*argv):
        return subprocess.run([sys.executable, "-m", "fedmpi", *map(str, argv)], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
    proc = fedmpi("analyze", traces["full"])
    assert proc.returncode == 0, proc.stderr
    assert "smoke" in proc.stdout and "latest MI estimates" in proc.stdout
    bad = make_bad("truncated", tmp_path, traces["full"])
    proc = fedmpi("analyze", bad)
    assert_usage_error(proc.returncode, proc.stdout, proc.stderr, "truncated")
    proc = fedmpi("analyze", "--help")
    assert proc.returncode == 0 and "--estimator" in proc.stdout and "--plots" in proc.stdout


def test_import_is_cheap():
    code = ("import sys, fedmpi.analysis.cli; "
            "print(' '.join(m for m in ('torch', 'matplotlib', 'mpi4py', 'h5py') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "", proc.stdout + proc.stderr
