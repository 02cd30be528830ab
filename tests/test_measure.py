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

    def test(self, averaged):
        time.sleep(0.05)
        return super().test(averaged)


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
    last = [res for res in results if res.kind == "mi"][-1].value["edge"]
    want = info.estimate("edge", z[-1][1, 0], probe_y[1], params["edge"])
    assert last["zy_local"][1] == want
