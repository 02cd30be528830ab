"""End to end: real `mpiexec -n N python -m fedmpi` runs on synthetic data, checked through the trace."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from fedmpi import config
from fedmpi.algorithms import ALGORITHMS
from fedmpi.compress import COMPRESSORS
from fedmpi.compressed import DIAGNOSTICS
from fedmpi.reference import run_reference
from fedmpi.protocol import BOUNDS
from fedmpi.trace import MI_KEYS, SCHEMA_VERSION, open_trace

from conftest import ROOT, SMOKE, launch, mpiexec, run_ok, smoke_args

pytestmark = pytest.mark.mpi  # launches real MPI jobs: `python -m pytest -m "not mpi"` skips them

PER_ROUND_W = ("metrics/local_acc", "metrics/local_loss", "metrics/averaged_acc", "metrics/averaged_loss",
               "metrics/train_loss", "timing/train_seconds", "timing/eval_seconds", "timing/sync_seconds")


@pytest.fixture(scope="module")
def three_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("run3")
    proc = run_ok(3, smoke_args(out, "t3"))
    return out / "t3.h5", proc


def test_trace_has_the_documented_contents_and_shapes(three_ranks):
    path, proc = three_ranks
    cfg = config.load(str(SMOKE))
    W, P, D = 2, cfg.data.probe_size, 84
    # 2 epochs of 512 examples in batches of 32 = 32 batches; sync every 8 -> 4 sync points.
    R = 4
    with open_trace(str(path)) as f:
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        assert f.attrs["world_size"] == 3 and f.attrs["num_workers"] == W
        assert f.attrs["status"] == "complete"
        stored = config.from_dict(yaml.safe_load(f.attrs["config"]))
        assert stored == config.load(str(SMOKE), ["trace.path=t3.h5"])
        np.testing.assert_array_equal(f["rounds/step"][:], [8, 16, 24, 32])
        np.testing.assert_array_equal(f["rounds/index"][:], [0, 1, 2, 3])
        assert np.all(np.diff(f["rounds/time"][:]) > 0)
        assert f["metrics/test_acc"].shape == (R,)
        for name in PER_ROUND_W:
            assert f[name].shape == (R, W), name
        assert f["activations/local"].shape == f["activations/averaged"].shape == (R, W, P, D)
        assert f["activations/local"].chunks == (1, W, P, D)
        assert f["activations/local"].compression == "gzip"
        assert f["probe/labels"].shape == f["probe/indices"].shape == (W, P)
        assert f["probe/inputs"].shape == (W, P, 3, 32, 32)
        for key in MI_KEYS:
            values = f[f"mi/edge/{key}"][:]
            assert values.shape == (R, W) and np.isfinite(values).all(), key
        assert f["mi/edge"].attrs["units"] == "nats"
        # The validated estimator: I(Z;Y) only, with standard errors, inside its bounds.
        assert f["mi/decoder"].attrs["what_zy_kind"] == "lower_bound"
        assert f["mi/decoder"].attrs["what_xz_kind"] == "none"
        zy, zy_se = f["mi/decoder/zy_averaged"][:], f["mi/decoder/zy_averaged_se"][:]
        assert np.isfinite(zy).all() and (zy_se > 0).all() and np.isnan(f["mi/decoder/xz_local"][:]).all()
        assert (f["mi/decoder/failure"][:] == b"").all()
        for name in BOUNDS:
            assert f[f"bounds/{name}"].shape == (R, W) and np.isfinite(f[f"bounds/{name}"][:]).all(), name
        entropy, fano = f["bounds/entropy"][:], f["bounds/fano_averaged"][:]
        assert ((0 <= f["bounds/error_averaged"][:]) & (f["bounds/error_averaged"][:] <= 1)).all()
        assert (fano <= entropy).all() and (zy > fano - 3 * (zy_se + f["bounds/fano_se_averaged"][:])).all()
        assert (zy < entropy + 3 * zy_se).all()
        assert f["model/final_averaged"].shape == (62006,)
        np.testing.assert_array_equal(f["workers/num_examples"][:], [512, 512])
        acc = f["metrics/local_acc"][:]
        assert ((0 <= acc) & (acc <= 1)).all()
        # With redistribution every local model starts each interval from the average,
        # so after the last sync the final model is the average of the last locals.
        assert f["metrics/test_acc"][-1] > 0.2  # learnable data: above chance (0.1)
    assert "done" in proc.stdout and "test accuracy" in proc.stdout
    assert proc.stderr.strip() == "" or "Traceback" not in proc.stderr


def test_four_ranks_give_three_workers(tmp_path):
    run_ok(4, smoke_args(tmp_path, "t4", "mi.estimators=[]", "trace.every=2"))
    with open_trace(str(tmp_path / "t4.h5")) as f:
        assert f.attrs["num_workers"] == 3
        np.testing.assert_array_equal(f["rounds/index"][:], [1, 3])  # 32 batches / 8 = 4 syncs, every 2nd logged
        assert f["metrics/local_acc"].shape == (2, 3)
        assert "mi" not in f


def test_one_rank_is_a_clear_error_before_anything_runs(tmp_path):
    proc = launch(1, ["-c", str(SMOKE), "-o", str(tmp_path)], timeout=60)
    assert proc.returncode != 0
    assert "needs at least 2 MPI ranks" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_bad_config_stops_every_rank_with_one_line_and_writes_nothing(tmp_path):
    proc = launch(3, smoke_args(tmp_path, "bad", "sync.every=0"), timeout=120)
    assert proc.returncode != 0
    assert proc.stderr.count("fedmpi: error: config: sync.every must be an integer >= 1, got 0") == 1
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "bad.h5").exists()


def test_existing_trace_needs_force(tmp_path):
    (tmp_path / "old.h5").write_bytes(b"precious")
    proc = launch(3, smoke_args(tmp_path, "old", "train.epochs=1"), timeout=120)
    assert proc.returncode != 0 and "already exists; pass --force" in proc.stderr
    assert (tmp_path / "old.h5").read_bytes() == b"precious"


def test_missing_cifar_says_where_to_put_it(tmp_path):
    proc = launch(3, ["-c", str(ROOT / "jobs" / "default.yaml"), "-o", str(tmp_path),
                      "--set", f"data.root={tmp_path / 'nodata'}", "--set", "data.download=false"], timeout=120)
    assert proc.returncode != 0
    assert "CIFAR-10 not found" in proc.stderr and "prepare_cifar10.py" in proc.stderr
    assert list(tmp_path.glob("*.h5")) == []


# ------------------------------------------------------------------ equivalence and reproducibility

def _trace_arrays(path):
    with open_trace(str(path)) as f:
        out = {name.split("/")[-1]: f[name][:] for name in PER_ROUND_W + ("metrics/test_acc", "metrics/test_loss",
                                                                            "metrics/test_examples")}
        out["step"] = f["rounds/step"][:]
        out["final_averaged"] = f["model/final_averaged"][:]
        out["z_local"] = f["activations/local"][:]
        out["z_averaged"] = f["activations/averaged"][:]
        out["bounds"] = np.stack([f[f"bounds/{name}"][:] for name in BOUNDS], axis=-1)  # (R, W, len(BOUNDS))
        out["comm_diagnostics"] = np.stack([f[f"comm/{name}"][:] for name in DIAGNOSTICS], axis=-1)  # (R, 5)
    return out


LOSSY = [c for c in COMPRESSORS if c != "none"]
# Every registered algorithm uncompressed, with and without redistribution; every registered
# compressor (with FedAvg and its distortion measured), and one stateful one without redistribution.
PLUGINS = ([(a, "none", r) for a in ALGORITHMS for r in (True, False)]
           + [("fedavg", c, True) for c in LOSSY] + [("fedavg", "topk", False)])


def _compression(name: str) -> list[str]:
    return [f"compression.name={name}"] + (["compression.measure_distortion=true"] if name != "none" else [])


@pytest.mark.parametrize("algorithm,compression,redistribute", PLUGINS)
def test_mpi_run_equals_single_process_reference(tmp_path, redistribute, algorithm, compression):
    overrides = [f"sync.redistribute={str(redistribute).lower()}", "mi.estimators=[]", "train.epochs=3",
                 f"algorithm.name={algorithm}", *_compression(compression), "data.test_subset=128"]
    run_ok(3, smoke_args(tmp_path, "eq", *overrides))
    got = _trace_arrays(tmp_path / "eq.h5")
    cfg = config.load(str(SMOKE), overrides)
    want = run_reference(cfg, num_workers=2)
    np.testing.assert_array_equal(got["step"], want["step"])
    # data.test_subset: 128 of the 512 test examples at every logged round but the last
    np.testing.assert_array_equal(got["test_examples"], [128] * (len(got["step"]) - 1) + [512])
    np.testing.assert_array_equal(got["test_examples"], want["test_examples"])
    for key in ("test_acc", "test_loss", "local_acc", "local_loss", "averaged_acc", "averaged_loss",
                "train_loss", "final_averaged", "z_local", "z_averaged", "bounds", "comm_diagnostics"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=key)
    if compression != "none":  # the diagnostic mode measured every logged sync point
        assert np.isfinite(got["comm_diagnostics"]).all()
    if not redistribute:  # the locals drift apart from the average: the two runs differ from each other
        assert np.abs(got["local_acc"] - got["averaged_acc"]).max() > 0



def test_held_out_probe_comes_from_the_test_set_and_the_run_equals_the_reference(tmp_path):
    """data.probe_from: test. Each worker's probe is test examples with its shard's label
    proportions (skewed splits: tests/test_data.py), the MI and bounds are computed on it,
    and the MPI run equals the single-process reference; local and averaged accuracy still
    come from the shard's evaluation subset."""
    overrides = ["data.probe_from=test", "train.epochs=2", "mi.estimators=[decoder]"]
    run_ok(3, smoke_args(tmp_path, "held", *overrides))
    got = _trace_arrays(tmp_path / "held.h5")
    cfg = config.load(str(SMOKE), overrides)
    want = run_reference(cfg, num_workers=2)
    for key in ("test_acc", "local_acc", "averaged_acc", "z_local", "z_averaged", "bounds"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=key)
    from fedmpi import data
    from fedmpi.plan import make_plan
    dataset = data.load(cfg.data, 2, cfg.seed)
    plan = make_plan(cfg, dataset.train_y, len(dataset.test_y), 2, dataset.test_y)
    with open_trace(str(tmp_path / "held.h5")) as f:
        indices, labels = f["probe/indices"][:], f["probe/labels"][:]
        inputs = f["probe/inputs"][:]
        decoder = f["mi/decoder/zy_averaged"][:]
    for k, w in enumerate(plan.workers):
        np.testing.assert_array_equal(indices[k], w.probe_test)
        np.testing.assert_array_equal(labels[k], dataset.test_y[indices[k]])
        share = np.bincount(dataset.train_y[w.shard], minlength=10) / len(w.shard)
        counts = np.bincount(labels[k], minlength=10)
        assert counts.sum() == 128 and np.abs(counts - 128 * share).max() < 1  # the shard's label proportions
    expected = dataset.inputs(dataset.test_x[indices[0]]).all().numpy()
    np.testing.assert_allclose(inputs[0], expected, rtol=1e-6, atol=1e-6)  # the probe's inputs: test images
    assert np.isfinite(decoder).all()
    from fedmpi.cli import main as cli_main
    assert cli_main(["analyze", str(tmp_path / "held.h5")]) == 0

def test_gather_collective_gives_the_same_run_as_allreduce(tmp_path):
    base = ["mi.estimators=[]", "train.epochs=1", "trace.activations=false"]
    run_ok(3, smoke_args(tmp_path, "ar", *base))
    run_ok(3, smoke_args(tmp_path, "ga", *base, "sync.collective=gather"))
    with open_trace(str(tmp_path / "ar.h5")) as a, open_trace(str(tmp_path / "ga.h5")) as g:
        for name in ("metrics/test_acc", "metrics/local_acc", "metrics/averaged_acc", "model/final_averaged"):
            np.testing.assert_allclose(a[name][:], g[name][:], rtol=1e-6, err_msg=name)
        assert "activations" not in g and "probe/inputs" not in g


def test_same_seed_same_metrics(tmp_path, three_ranks):
    path, _ = three_ranks
    run_ok(3, smoke_args(tmp_path, "again"))
    with open_trace(str(path)) as a, open_trace(str(tmp_path / "again.h5")) as b:
        for name in ("metrics/test_acc", "metrics/local_acc", "metrics/local_loss", "metrics/averaged_acc",
                     "mi/edge/xz_local", "mi/edge/zy_averaged", "activations/local", "model/final_averaged"):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def test_trace_every_and_mi_every(tmp_path):
    run_ok(3, smoke_args(tmp_path, "sparse", "train.epochs=3", "trace.every=2", "mi.every=2",
                         "trace.activations=false"))
    with open_trace(str(tmp_path / "sparse.h5")) as f:
        # 48 batches / 8 = 6 sync points; logged: 2nd, 4th, 6th; MI at logged rows 0 and 2 (the last).
        np.testing.assert_array_equal(f["rounds/index"][:], [1, 3, 5])
        zy = f["mi/edge/zy_local"][:]
        assert np.isfinite(zy[[0, 2]]).all() and np.isnan(zy[1]).all()
        assert "activations" not in f


@pytest.mark.parametrize("algorithm,compression", [(a, "none") for a in ALGORITHMS]
                         + [("fedavg", "topk"), ("fedavg", "qsgd")])
def test_many_clients_per_rank_equal_the_reference(tmp_path, algorithm, compression):
    overrides = ["clients.total=10", "clients.per_round=4", "data.samples_per_worker=128", "train.epochs=8",
                 "mi.estimators=[]", f"algorithm.name={algorithm}", *_compression(compression)]
    run_ok(3, smoke_args(tmp_path, "clients", *overrides))
    got = _trace_arrays(tmp_path / "clients.h5")
    cfg = config.load(str(SMOKE), overrides)
    want = run_reference(cfg, num_workers=2)
    with open_trace(str(tmp_path / "clients.h5")) as f:
        sampled = f["clients/sampled"][:]
        np.testing.assert_array_equal(f["clients/owner"][:], [0] * 5 + [1] * 5)
        np.testing.assert_array_equal(f["workers/num_examples"][:], [640, 640])
    np.testing.assert_array_equal(sampled, want["sampled"])
    assert sampled.shape == (4, 4) and len({tuple(s) for s in sampled}) > 1  # a new draw each round
    for key in ("test_acc", "local_acc", "local_loss", "averaged_acc", "train_loss", "final_averaged",
                "comm_diagnostics", "z_local", "z_averaged"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=key)
    # A worker none of whose clients was drawn has no local model that round.
    for r, s in enumerate(sampled):
        for k in range(2):
            trained = np.any((s >= 5 * k) & (s < 5 * (k + 1)))
            assert np.isnan(got["local_acc"][r, k]) == (not trained)


def test_one_client_per_worker_is_the_default_behaviour(tmp_path, three_ranks):
    path, _ = three_ranks
    run_ok(3, smoke_args(tmp_path, "explicit", "clients.total=2", "clients.per_round=2"))
    with open_trace(str(path)) as a, open_trace(str(tmp_path / "explicit.h5")) as b:
        for name in ("metrics/local_acc", "metrics/averaged_acc", "model/final_averaged"):
            np.testing.assert_array_equal(a[name][:], b[name][:], err_msg=name)


def test_run_through_a_host_file(tmp_path):
    from conftest import mpiexec
    openmpi = "--oversubscribe" in mpiexec()
    hostfile = ["--hostfile", str(ROOT / "hostfiles" / "localhost.openmpi")] if openmpi else \
        ["-f", str(ROOT / "hostfiles" / "localhost")]
    run_ok(3, smoke_args(tmp_path, "hosts", "train.epochs=1", "mi.estimators=[]"), launcher_args=hostfile)
    with open_trace(str(tmp_path / "hosts.h5")) as f:
        assert f.attrs["status"] == "complete"


# ------------------------------------------------------------------ live feedback

def test_each_logged_round_reaches_the_trace_before_the_next_is_reached(tmp_path):
    """Rounds of 128 steps (about a second), every 2nd logged: a row must be in the trace, and seen
    by a reader, while the workers train towards the next logged round, not when it arrives."""
    args = smoke_args(tmp_path, "live", "train.epochs=64", "sync.every=128", "trace.every=2",
                      "trace.activations=false") + ["--progress", "plain"]
    cmd = [*mpiexec(), "-n", "3", sys.executable, "-m", "fedmpi", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = set()
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        try:
            with open_trace(str(tmp_path / "live.h5")) as f:
                seen.add(len(f["rounds/step"]))
        except (OSError, KeyError):
            pass  # not created or not in SWMR mode yet
        time.sleep(0.1)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    with open_trace(str(tmp_path / "live.h5")) as f:
        when = f["rounds/time"][:]  # seconds since start at each logged round's sync point
        latency = f["timing/row_latency_seconds"][:]  # from that sync point to the row in the trace
    assert len(when) == 4  # 1024 steps / 128 = 8 rounds, every 2nd logged
    for r in range(len(when) - 1):
        assert latency[r] < when[r + 1] - when[r], (r, latency, when)
    assert {1, 2, 3} <= seen  # a reader saw the rows one at a time while the run went on
    assert out.count("[smoke] sync") >= 2 and "eta" in out


def test_tensorboard_scalars_live_and_exported_match_the_trace(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    board = tmp_path / "board"
    run_ok(3, smoke_args(tmp_path, "tb", f"trace.tensorboard={board}"))
    from fedmpi.cli import main as cli_main
    assert cli_main(["analyze", str(tmp_path / "tb.h5"), "--tensorboard", str(tmp_path / "export")]) == 0

    def scalars(folder):
        acc = EventAccumulator(str(folder))
        acc.Reload()
        return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    live, exported = scalars(board / "smoke"), scalars(tmp_path / "export" / "smoke")
    assert live == exported
    with open_trace(str(tmp_path / "tb.h5")) as f:
        steps = f["rounds/step"][:].tolist()
        want = {"test/accuracy": f["metrics/test_acc"][:], "averaged/loss/worker_1": f["metrics/averaged_loss"][:, 1],
                "mi/edge/I(Z;Y) averaged/worker_0": f["mi/edge/zy_averaged"][:, 0]}
    for tag, values in want.items():
        assert [s for s, _ in live[tag]] == steps
        np.testing.assert_allclose([v for _, v in live[tag]], values, rtol=1e-6)  # event files hold float32


# ------------------------------------------------------------------ communication

def test_compressed_payloads_gathered_or_allgathered_give_one_run_and_exact_byte_counts(tmp_path):
    base = ["mi.estimators=[]", "train.epochs=1", "trace.activations=false", "compression.name=qsgd"]
    run_ok(3, smoke_args(tmp_path, "ga", *base))
    run_ok(3, smoke_args(tmp_path, "ag", *base, "compression.collective=allgather"))
    run_ok(3, smoke_args(tmp_path, "plain", *base[:-1]))
    with open_trace(str(tmp_path / "ga.h5")) as g, open_trace(str(tmp_path / "ag.h5")) as a, \
            open_trace(str(tmp_path / "plain.h5")) as p:
        for name in ("metrics/test_acc", "metrics/local_acc", "metrics/averaged_acc", "model/final_averaged"):
            np.testing.assert_array_equal(g[name][:], a[name][:], err_msg=name)
        P = int(g["model"].attrs["num_params"])
        message = int(g["comm"].attrs["message_bytes"])
        assert message == 16 + -(-P * 5 // 8) + 8  # header, 5 bits per entry (s = 15), weight and stop
        assert g["comm"].attrs["compression"] == "qsgd" and a["comm"].attrs["collective"] == "allgather"
        report = 8 * 8 + 12 * 8 + 4 * 8  # metrics, bounds, counts (no Z: activations and MI off)
        # Rows after the first (which also holds start-up): one sync point each, then the report.
        np.testing.assert_array_equal(g["comm/bytes_up"][1:], message + report)
        np.testing.assert_array_equal(g["comm/bytes_down"][1:], 4 * (P + 1))  # [theta | stop] broadcast
        np.testing.assert_array_equal(a["comm/bytes_down"][1:], 2 * message)  # the other two ranks' messages
        np.testing.assert_array_equal(g["comm/messages"][1:], 2 + 3)  # gather + bcast, three report gathers
        np.testing.assert_array_equal(a["comm/messages"][1:], 1 + 3)
        np.testing.assert_array_equal(p["comm/bytes_up"][1:], 4 * (P + 2) + report)  # [w theta, w | stop]
        np.testing.assert_array_equal(g["comm/diagnostic_bytes"][:], 0)
        np.testing.assert_allclose(g["comm/update_bits"][:], 8 * message * 2 / P)
        assert np.isnan(g["comm/distortion"][:]).all()  # measured only with compression.measure_distortion
        assert (g["comm/bytes_up"][0] > message + report).all()  # start-up: placement and probes


def test_compression_refuses_an_algorithm_with_control_variates(tmp_path):
    proc = launch(3, smoke_args(tmp_path, "bad", "algorithm.name=scaffold", "compression.name=topk"))
    assert proc.returncode == 2
    line = [x for x in proc.stderr.splitlines() if "compression.name" in x]
    assert line and "'topk'" in line[0] and "scaffold" in line[0] and "fedavg" in line[0]
    assert list(tmp_path.glob("*.h5")) == []


def test_divergence_per_layer_equals_the_reference_and_is_counted_apart(tmp_path):
    overrides = ["trace.divergence=true", "mi.estimators=[]", "train.epochs=2", "trace.activations=false",
                 "data.partition=dirichlet", "data.alpha=0.3"]
    run_ok(3, smoke_args(tmp_path, "div", *overrides))
    want = run_reference(config.load(str(SMOKE), overrides), num_workers=2)
    with open_trace(str(tmp_path / "div.h5")) as f:
        names = [n.decode() for n in f["model/layout/names"][:]]
        assert f["divergence/relative"].shape == (len(f["rounds/step"]), len(names))
        for name in ("relative", "drift_diversity"):
            np.testing.assert_allclose(f[f"divergence/{name}"][:], want[f"divergence_{name}"], rtol=1e-5,
                                       equal_nan=True, err_msg=name)
        assert (f["divergence/relative"][:] > 0).all()  # two workers on different data drift apart
        assert (f["divergence/drift_diversity"][:] >= 0.5 - 1e-6).all()  # at least 1/K: Cauchy-Schwarz
        P = int(f["model"].attrs["num_params"])
        np.testing.assert_array_equal(f["comm/diagnostic_bytes"][:], 2 * P * 4)  # [model | update], float32


def test_standard_setups_equal_the_reference(tmp_path):
    """Augmentation, epochs of each client's own data (4 clients), optimizer reset, a step lr
    schedule and uniform weighting, all in one run: MPI = reference. (Clients of different sizes
    and the shards partition need more synthetic data than a quick run: tests/test_setups.py.)"""
    overrides = ["mi.estimators=[]", "data.augment=crop-flip", "clients.total=4", "data.samples_per_worker=96",
                 "sync.unit=epochs", "sync.every=1", "train.epochs=2", "train.optimizer_state=reset", "train.lr_schedule=step",
                 "train.lr_step=1", "train.lr_gamma=0.5", "clients.weighting=uniform", "data.probe_size=32",
                 "data.eval_size=64"]
    run_ok(3, smoke_args(tmp_path, "setups", *overrides))
    got = _trace_arrays(tmp_path / "setups.h5")
    cfg = config.load(str(SMOKE), overrides)
    want = run_reference(cfg, num_workers=2)
    np.testing.assert_array_equal(got["step"], want["step"])
    for key in ("test_acc", "test_loss", "local_acc", "averaged_acc", "train_loss", "final_averaged",
                "z_local", "z_averaged"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=key)
    from fedmpi import data
    from fedmpi.plan import label_counts, make_plan
    dataset = data.load(cfg.data, 4, cfg.seed)
    plan = make_plan(cfg, dataset.train_y, len(dataset.test_y), 2)
    with open_trace(str(tmp_path / "setups.h5")) as f:
        steps, counts = f["clients/steps"][:], f["clients/label_counts"][:]
    np.testing.assert_array_equal(counts, label_counts(plan, dataset.train_y, dataset.num_classes))
    np.testing.assert_array_equal(counts.sum(axis=1), [96] * 4)
    np.testing.assert_array_equal(steps, [[3] * 4, [6] * 4])  # ceil(96 / 32) steps per epoch, one epoch a round
    from fedmpi.cli import main as cli_main
    assert cli_main(["analyze", str(tmp_path / "setups.h5")]) == 0


# ------------------------------------------------------------------ sync policies

# Parameters that make each policy skip some check points and sync at others on the smoke job.
POLICY_SETS = {"periodic": ["sync.policy.name=periodic"],
               "dynamic": ["sync.policy.name=dynamic", "sync.policy.delta=0.05"],
               "information": ["sync.policy.name=information", "sync.policy.threshold=0.02",
                               "sync.policy.max_period=4"]}


def _sync_arrays(path):
    with open_trace(str(path)) as f:
        return {name: f[f"sync/{name}"][:] for name in f["sync"]}, dict(f["sync"].attrs)


@pytest.mark.parametrize("policy,clients", [(p, False) for p in POLICY_SETS] + [("dynamic", True),
                                                                                 ("information", True)])
def test_every_sync_policy_equals_the_reference_and_counts_its_collectives(tmp_path, policy, clients):
    """The MPI run of each registered policy equals the single-process reference (decisions, state,
    metrics, final model), also with simulated clients sampled per round; its check and measurement
    collectives are counted in /comm, byte for byte."""
    from fedmpi.sync import SYNC_POLICIES
    assert set(POLICY_SETS) == set(SYNC_POLICIES)  # a new policy needs its line here
    overrides = ["mi.estimators=[]", "train.epochs=4", "trace.activations=false", *POLICY_SETS[policy]]
    if clients:
        overrides += ["clients.total=6", "clients.per_round=3", "data.samples_per_worker=128", "train.epochs=12"]
    run_ok(3, smoke_args(tmp_path, "pol", *overrides))
    got = _trace_arrays_without_z(tmp_path / "pol.h5")
    want = run_reference(config.load(str(SMOKE), overrides), num_workers=2)
    sync, attrs = _sync_arrays(tmp_path / "pol.h5")
    assert attrs["policy"] == policy and attrs["check_every"] == 8
    checks = int(attrs["num_checks"])
    np.testing.assert_array_equal(got["index"], want["index"])
    np.testing.assert_array_equal(got["step"], want["step"])
    np.testing.assert_array_equal(sync["check_index"], want["check_index"])
    for key in sync:
        if key != "check_index":
            np.testing.assert_array_equal(sync[key], want[f"sync_{key}"], err_msg=key)
    for key in ("test_acc", "test_loss", "local_acc", "local_loss", "averaged_acc", "averaged_loss",
                "train_loss", "final_averaged", "bounds"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, equal_nan=True, err_msg=key)
    if clients:
        np.testing.assert_array_equal(got["sampled"], want["sampled"])
    syncs = want["syncs"]
    assert len(got["index"]) == syncs and sync["check_index"][-1] == checks - 1  # every one logged; the last
    if policy == "periodic":
        assert syncs == checks
    else:  # the policy really decided: some check points were sync points and some were not
        assert 1 < syncs < checks, (syncs, checks)
    # What crossed MPI in each row after the first (start-up): the check collectives since the
    # previous row ([values | stop] float64 up and down), the sync point, the measurement
    # collective ([values] float64) and the report (metrics, bounds, counts).
    P = int(got["num_params"])
    report = 8 * 8 + 12 * 8 + 4 * 8
    from fedmpi.sync import build_policy
    rule = build_policy(policy)
    n_check = len(rule.check_values) + 1 if rule.check_values else 0  # float64 values and the stop flag
    n_measure = len(rule.measure_values)
    assert (n_check, n_measure) == {"periodic": (0, 0), "dynamic": (4, 0), "information": (0, 3)}[policy]
    collectives = np.diff(sync["check_index"]) if n_check else np.zeros(syncs - 1, np.int64)
    up = 4 * (P + 2) + 8 * n_check * collectives + 8 * n_measure + report
    down = 4 * (P + 2) + 8 * n_check * collectives + 8 * n_measure
    np.testing.assert_array_equal(got["bytes_up"][1:], np.repeat(up[:, None], 2, axis=1))
    np.testing.assert_array_equal(got["bytes_down"][1:], np.repeat(down[:, None], 2, axis=1))
    np.testing.assert_array_equal(got["messages"][1:], np.repeat(
        (1 + collectives + (n_measure > 0) + 3)[:, None], 2, axis=1))
    from fedmpi.cli import main as cli_main
    assert cli_main(["analyze", str(tmp_path / "pol.h5")]) == 0


def _trace_arrays_without_z(path):
    with open_trace(str(path)) as f:
        out = {name.split("/")[-1]: f[name][:] for name in PER_ROUND_W + ("metrics/test_acc", "metrics/test_loss")}
        out["step"], out["index"] = f["rounds/step"][:], f["rounds/index"][:]
        out["final_averaged"] = f["model/final_averaged"][:]
        out["bounds"] = np.stack([f[f"bounds/{name}"][:] for name in BOUNDS], axis=-1)
        out["sampled"] = f["clients/sampled"][:]
        out["num_params"] = f["model"].attrs["num_params"]
        for name in ("messages", "bytes_up", "bytes_down"):
            out[name] = f[f"comm/{name}"][:]
    return out


def test_a_bad_sync_policy_parameter_stops_every_rank_with_one_line(tmp_path):
    proc = launch(3, smoke_args(tmp_path, "bad", "sync.policy.name=dynamic", "sync.policy.delta=0"), timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("fedmpi: error: config: sync.policy.delta must be a number > 0") == 1
    assert "Traceback" not in proc.stderr and list(tmp_path.iterdir()) == []
