"""fedmpi.info.bounds: H(Y), the Fano bound, H(Y) - CE and the band check, on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedmpi.info import bounds


def test_entropy_balanced_has_zero_delta_method_error():
    # p = (1/2, 1/2): H = ln 2 = 0.693147; psi_i = -ln(1/2) - ln 2 = 0 for every example.
    y = np.array([0, 0, 1, 1])
    assert bounds.label_entropy(y) == pytest.approx(0.6931471806, abs=1e-10)
    assert bounds.label_entropy_stderr(y) == 0.0


def test_entropy_unbalanced_and_its_stderr():
    # p = (3/4, 1/4): H = 0.75 * 0.287682 + 0.25 * 1.386294 = 0.562335.
    # psi = -ln p_y - H: class 0 -> -0.274653 (3 times), class 1 -> 0.823959.
    # sum psi^2 = 3 * 0.075434 + 0.678909 = 0.905212; SE = sqrt(0.905212 / (4 * 3)) = 0.274653.
    y = np.array([5, 5, 5, 9])
    assert bounds.label_entropy(y) == pytest.approx(0.5623351446, abs=1e-9)
    assert bounds.label_entropy_stderr(y) == pytest.approx(0.2746530722, abs=1e-9)


def test_fano_ten_balanced_classes_error_quarter():
    # The brief's number: H = ln 10 = 2.302585, h(0.25) = 0.562335, 0.25 ln 9 = 0.549306:
    # bound = 2.302585 - 0.562335 - 0.549306 = 1.190944.
    # SE: balanced, so only the Pe part: slope = ln(0.75/0.25) + ln 9 = 3.295837,
    # SE = 3.295837 * sqrt(0.25 * 0.75 / 19) = 0.327408 (N = 20, ddof 1).
    y = np.repeat(np.arange(10), 2)
    pred = y.copy()
    pred[:5] = (y[:5] + 1) % 10  # 5 errors, all naming a present class
    lb = bounds.label_bounds(y, pred)
    assert lb.error_rate == 0.25 and lb.alternatives == 9 and lb.n == 20
    assert lb.fano == pytest.approx(1.1909443, abs=1e-6)
    assert bounds.fano_bound(y, pred) == lb.fano
    assert lb.fano_stderr == pytest.approx(0.3274080, abs=1e-6)
    assert lb.entropy == pytest.approx(math.log(10), abs=1e-12) and lb.entropy_stderr == 0.0


def test_fano_alternatives_depend_on_whether_a_wrong_answer_names_an_absent_class():
    y = np.array([0, 0, 1, 1])
    # errors only among present classes: M = m - 1 = 1, ln 1 = 0: ln 2 - h(0.25) = 0.693147 - 0.562335 = 0.130812
    inside = bounds.label_bounds(y, np.array([0, 1, 1, 1]))
    assert inside.alternatives == 1
    assert inside.fano == pytest.approx(0.1308120, abs=1e-6)
    # a wrong prediction of class 2 (absent): M = m = 2: 0.693147 - 0.562335 - 0.25 ln 2 = -0.042475 -> 0
    outside = bounds.label_bounds(y, np.array([0, 2, 1, 1]))
    assert outside.alternatives == 2
    assert outside.fano == 0.0


def test_fano_with_no_errors_is_the_entropy():
    y = np.array([0, 0, 0, 1])
    lb = bounds.label_bounds(y, y)
    assert lb.fano == pytest.approx(lb.entropy, abs=1e-12)
    assert lb.fano_stderr == pytest.approx(lb.entropy_stderr, abs=1e-12)


def test_fano_stderr_matches_the_spread_over_resampled_examples():
    # The delta-method SE of the bound against its standard deviation over 2,000 fresh samples
    # of N = 1,000 from one fixed population (10 unbalanced classes, error rate 0.3).
    rng = np.random.default_rng(0)
    prior = np.exp(-0.2 * np.arange(10))
    prior /= prior.sum()

    def draw(n):
        y = rng.choice(10, n, p=prior)
        wrong = rng.random(n) < 0.3
        return y, np.where(wrong, (y + 1 + rng.integers(0, 9, n)) % 10, y)

    values = [bounds.fano_bound(*draw(1000)) for _ in range(2000)]
    se = bounds.label_bounds(*draw(1000)).fano_stderr
    # The spread of a standard deviation from 2,000 draws is ~1.6%; the SE itself varies a little per sample.
    assert se == pytest.approx(np.std(values), rel=0.08)


def test_variational_bound_hand_values():
    # p = (1/2, 1/2); terms = ln q - ln p = (ln .5 - ln .5, ln .25 - ln .5) = (0, -0.693147):
    # value -0.346574, SE = sqrt(2 * 0.346574^2 / (2 * 1)) = 0.346574.
    est = bounds.variational_bound(np.log([0.5, 0.25]), np.array([3, 4]))
    assert est.value == pytest.approx(-0.3465735903, abs=1e-10)
    assert est.stderr == pytest.approx(0.3465735903, abs=1e-10)
    perfect = bounds.variational_bound(np.zeros(4), np.array([0, 1, 2, 3]))
    assert perfect.value == pytest.approx(math.log(4)) and perfect.stderr == pytest.approx(0.0, abs=1e-15)


def test_variational_bound_input_checks_and_zero_probability():
    with pytest.raises(ValueError, match="natural-log probabilities"):
        bounds.variational_bound(np.array([0.1, -0.2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="shape"):
        bounds.variational_bound(np.zeros(3), np.array([0, 1]))
    value, stderr = bounds.variational_bound(np.array([0.0, -np.inf]), np.array([0, 1]))
    assert value == -np.inf and np.isnan(stderr)


def test_compare_to_bounds_sides_and_excess():
    # below: excess 1.19 - 0.9 = 0.29, combined SE sqrt(0.05^2 + 0.1^2) = 0.111803 -> 2.594 SE > 2
    chk = bounds.compare_to_bounds(0.9, 0.05, 1.19, 0.1, 2.3, 0.0)
    assert chk.side == "below"
    assert chk.excess == pytest.approx(0.29) and chk.excess_se == pytest.approx(2.5938, abs=1e-4)
    # 0.19 below is 1.699 SE: not significant, reported as inside with its distance
    chk = bounds.compare_to_bounds(1.0, 0.05, 1.19, 0.1, 2.3, 0.0)
    assert chk.side == "inside" and chk.excess == pytest.approx(0.19)
    # an estimator without SE (NaN): only the bound's 0.1 counts -> 2.9 SE
    chk = bounds.compare_to_bounds(0.9, math.nan, 1.19, 0.1, 2.3, 0.0)
    assert chk.side == "below" and chk.excess_se == pytest.approx(2.9)
    # above: 2.5 - 2.3 = 0.2 over sqrt(0.05^2 + 0.01^2) = 0.050990 -> 3.922 SE
    chk = bounds.compare_to_bounds(2.5, 0.05, 1.19, 0.1, 2.3, 0.01)
    assert chk.side == "above" and chk.excess_se == pytest.approx(3.9223, abs=1e-4)
    # no error anywhere: any excess is significant
    assert bounds.compare_to_bounds(2.31, 0.0, 0.0, 0.0, 2.3, 0.0).excess_se == math.inf
    assert bounds.compare_to_bounds(1.5, 0.05, 1.19, 0.1, 2.3, 0.0) == ("inside", 0.0, 0.0)
    assert bounds.compare_to_bounds(math.nan, 0.05, 1.19, 0.1, 2.3, 0.0).side == "unknown"


def test_bad_labels_and_shapes():
    with pytest.raises(ValueError, match="1-D integer"):
        bounds.label_entropy(np.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="at least 2"):
        bounds.label_entropy(np.array([1]))
    with pytest.raises(ValueError, match="shape"):
        bounds.label_bounds(np.array([0, 1]), np.array([0, 1, 1]))


def test_inputs_not_modified():
    y = np.array([0, 1, 1, 2])
    pred = np.array([0, 1, 2, 2])
    lq = np.log(np.array([0.5, 0.5, 0.25, 0.9]))
    copies = [y.copy(), pred.copy(), lq.copy()]
    bounds.label_bounds(y, pred)
    bounds.variational_bound(lq, y)
    assert all(np.array_equal(a, b) for a, b in zip(copies, [y, pred, lq]))
