"""The coordinator's measurement thread: in order, bounded, nothing lost."""

import time

import numpy as np
import torch

from fedmpi import info
from fedmpi.flat import FlatParams
from fedmpi.measure import Measurements
from fedmpi.models import build_model


class SlowMeasurements(Measurements):
    """Each test evaluation takes 50 ms, far longer than a submit: the queue must fill."""

    def test(self, averaged, full=True):
        time.sleep(0.05)
        return super().test(averaged, full)


def test_falling_behind_waits_says_so_and_loses_no_round():
    rng = np.random.default_rng(0)
    W, P = 2, 200
    probe_x = rng.normal(size=(W, P, 3, 32, 32)).astype(np.float32)
    probe_y = rng.integers(0, 10, size=(W, P))
    model = build_model("lenet", (3, 32, 32), 10, seed=0)
    test_x, test_y = torch.randn(64, 3, 32, 32), torch.randint(0, 10, (64,))
    params = {"edge": info.ESTIMATORS["edge"].params()}
    m = SlowMeasurements(model, test_x, test_y, params, probe_x, probe_y, max_pending=1)
    theta = FlatParams(build_model("lenet", (3, 32, 32), 10, seed=1)).vector.numpy()
    waits = []
    rounds = 4
    z = [rng.random(size=(W, 2, P, 84)).astype(np.float32) for _ in range(rounds)]
    for r in range(rounds):
        m.submit(r, theta, z[r], waits.append)
    results = m.poll() + m.close()
    assert waits and "behind" in waits[0]
    tests = [res.row for res in results if res.kind == "test"]
    mis = [res.row for res in results if res.kind == "mi"]
    assert tests == list(range(rounds)) and mis == list(range(rounds))  # every round, in order
    # The thread measured what was submitted: same numbers as estimating directly.
    last, failure = [res for res in results if res.kind == "mi"][-1].value["edge"]
    want = info.estimate("edge", z[-1][1, 0], probe_y[1], params["edge"])
    assert last["zy_local"][1] == want and failure == ""
    assert np.isnan(last["zy_local_se"]).all()  # EDGE has no standard error


def test_a_failing_estimate_is_nan_with_its_reason_and_others_go_on():
    """The decoder needs examples of each class in every fold: a class seen twice fails
    that worker's estimate, in words naming the estimator and the class; the other worker's
    estimate, and I(X;Z) (which the decoder does not estimate: NaN, no failure), are unaffected."""
    rng = np.random.default_rng(1)
    W, P = 2, 300
    probe_x = rng.normal(size=(W, P, 3, 32, 32)).astype(np.float32)
    probe_y = rng.integers(0, 3, size=(W, P))
    probe_y[0, :2] = 7  # worker 1: class 7 twice
    model = build_model("lenet", (3, 32, 32), 10, seed=0)
    test_x, test_y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    params = {"decoder": info.ESTIMATORS["decoder"].params(transform="standardize")}
    m = Measurements(model, test_x, test_y, params, probe_x, probe_y)
    z = rng.normal(size=(W, 2, P, 8)).astype(np.float32)
    z[:, :, :, 0] += probe_y[:, None, :]  # Z holds label information
    m.submit(0, FlatParams(model).vector.numpy(), z, lambda _: None)
    (values, failure), = [res.value["decoder"] for res in m.close() if res.kind == "mi"]
    assert np.isnan(values["zy_local"][0]) and np.isnan(values["zy_averaged"][0])
    assert "worker 1 zy_local" in failure and "decoder" in failure and "7" in failure
    assert "worker 2" not in failure
    assert 0.1 < values["zy_local"][1] < np.log(3) and values["zy_local_se"][1] > 0
    assert np.isnan(values["xz_local"]).all() and np.isnan(values["xz_local_se"]).all()
