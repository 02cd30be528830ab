"""Per-layer divergence and drift diversity (fedmpi.divergence): exact values on tiny cases."""

import numpy as np
import pytest

from fedmpi.divergence import layer_divergence
from fedmpi.flat import Slot

SLOTS = (Slot("a", 0, (2,)), Slot("b", 2, (1,)))


def test_exact_values_on_two_workers():
    models = np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0]], dtype=np.float32)  # (W=2, P=3)
    updates = np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]], dtype=np.float32)
    relative, diversity = layer_divergence(models, updates, SLOTS)
    # a: mean (2, 0), each worker 1 away: D = 1 / 2. b: the workers agree: D = 0.
    np.testing.assert_allclose(relative, [0.5, 0.0])
    # a: orthogonal updates, sum of squares 2 over |(1, 1)|^2 = 2: xi = 1. b: the same update: xi = 1/2.
    np.testing.assert_allclose(diversity, [1.0, 0.5])


def test_workers_that_did_not_train_are_left_out_and_zero_denominators_are_nan():
    models = np.array([[1.0, 1.0, 0.0], [np.nan] * 3], dtype=np.float32)
    updates = np.array([[1.0, -1.0, 0.0], [np.nan] * 3], dtype=np.float32)
    relative, diversity = layer_divergence(models, updates, SLOTS)
    assert relative[0] == 0.0 and np.isnan(relative[1])  # b is 0 on average
    assert diversity[0] == pytest.approx(1.0) and np.isnan(diversity[1])  # b did not move
    relative, diversity = layer_divergence(models[1:], updates[1:], SLOTS)
    assert np.isnan(relative).all() and np.isnan(diversity).all()
