"""The cross-fitted decoder estimators of I(Z;Y) (fedmpi.info.decoder, decoder_mlp).

Exact checks of the pieces on tiny inputs, the contract (errors, determinism,
cross-fitting), and ground truth on small cases with tolerances from the
estimator's own standard error.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import logsumexp

from fedmpi import info
from fedmpi.info import decoder
from fedmpi.info.decoder import InputMap, SoftmaxProblem, mixed_log_prob, stratified_folds


def mixture(n, d, sep, seed):
    """Z|y ~ N(sep * m_y, I_d), 4 equiprobable classes; returns z, y and the exact-posterior MC truth."""
    means = sep * np.random.default_rng(77).standard_normal((4, d))
    rng = np.random.default_rng(seed)

    def draw(m):
        y = rng.integers(0, 4, m)
        return means[y] + rng.standard_normal((m, d)), y

    zt, yt = draw(100_000)
    logits = zt @ means.T - 0.5 * (means ** 2).sum(1)
    truth = math.log(4) + float((logits[np.arange(len(yt)), yt] - logsumexp(logits, axis=1)).mean())
    z, y = draw(n)
    return z, y, truth


# ----- pieces -------------------------------------------------------------------


def test_stratified_folds_deal_each_class_evenly_and_deterministically():
    y = np.array([0] * 7 + [1] * 5 + [2] * 3)
    fold = stratified_folds(y, 3, 3, seed=0)
    # classes are dealt one after the other round-robin: class 0 gets folds 0,1,2,0,1,2,0 (3,2,2),
    # class 1 continues at position 7: 1,2,0,1,2 (1 of fold 0, 2 of 1, 2 of 2), class 2: 0,1,2.
    assert [np.bincount(fold[y == c], minlength=3).tolist() for c in range(3)] == [[3, 2, 2], [1, 2, 2], [1, 1, 1]]
    assert np.bincount(fold).tolist() == [5, 5, 5]
    assert np.array_equal(fold, stratified_folds(y, 3, 3, seed=0))
    assert not np.array_equal(fold, stratified_folds(y, 3, 3, seed=1))


def test_standardize_map_uses_training_statistics_and_clips():
    train = np.array([[0.0, 5.0], [2.0, 5.0], [4.0, 5.0]])
    m, x = InputMap.fit(train, "standardize")
    # column 0: mean 2, std sqrt(8/3) = 1.632993; column 1 constant: std 0 -> 1
    assert np.allclose(x[:, 0], [-1.2247449, 0.0, 1.2247449]) and np.all(x[:, 1] == 0.0)
    out = m(np.array([[3.0, 5.0], [100.0, -7.0]]))
    assert out[0, 0] == pytest.approx(1 / 1.6329932, abs=1e-7)
    assert out[1, 0] == pytest.approx(1.2247449, abs=1e-7)  # clipped to the training maximum
    assert out[1, 1] == 0.0  # the constant column's range is [0, 0]


def test_quantile_map_mid_ranks_with_ties():
    train = np.array([[0.0], [0.0], [1.0], [3.0]])
    m, x = InputMap.fit(train, "quantile")
    # mid-ranks r = #below + #equal / 2: 0 -> 1, 1 -> 2.5, 3 -> 3.5; u = (r + 0.5) / 5 = 0.3, 0.6, 0.8
    from scipy.special import ndtri
    u = ndtri(np.array([0.3, 0.3, 0.6, 0.8]))
    assert np.allclose(x[:, 0], (u - u.mean()) / u.std())
    # a new value 2 has r = 3 + 0 = 3 -> u = 0.7; below everything -> r = 0 -> clipped to the training min
    out = m(np.array([[2.0], [-5.0]]))
    assert out[0, 0] == pytest.approx((ndtri(0.7) - u.mean()) / u.std())
    assert out[1, 0] == pytest.approx(x[:, 0].min())


def test_softmax_fit_satisfies_the_optimality_conditions():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((60, 3))
    x -= x.mean(0)
    y = rng.integers(0, 3, 60)
    alpha = 2.0
    w, b = SoftmaxProblem(x, y, 3).fit(alpha, np.zeros((3, 3)), np.zeros(3), max_iter=500)
    p = np.exp(x @ w + b - logsumexp(x @ w + b, axis=1, keepdims=True))
    residual = p - np.eye(3)[y]
    # d/dW [sum CE + alpha/2 |W|^2] = X^T (P - Y) + alpha W = 0; d/db = sum (P - Y) = 0, per example
    # within the fit's stopping tolerance
    assert np.abs(x.T @ residual + alpha * w).max() / 60 < decoder._GTOL
    assert np.abs(residual.sum(0)).max() / 60 < decoder._GTOL


def test_mixture_with_the_training_prior_floors_the_log_probability():
    log_prior = np.log(np.array([0.5, 0.5]))
    out = mixed_log_prob(np.array([-1e12, 0.0]), np.array([0, 1]), log_prior)
    assert out[0] == pytest.approx(math.log(1e-3 * 0.5))
    assert out[1] == pytest.approx(math.log((1 - 1e-3) + 1e-3 * 0.5))


def test_lda_fit_is_the_bayes_rule_of_its_gaussian_model():
    # Two classes in 2 dims; the fit must give logits x Sigma^-1 mu_y - mu_y Sigma^-1 mu_y / 2 + ln p_y
    # with mu_y shrunk towards the overall mean by n_y / (n_y + kappa), Sigma = (1 - lam) S + lam tr(S)/2 I.
    x = np.array([[0.0, 1.0], [2.0, 1.0], [1.0, 3.0], [3.0, 0.0], [5.0, 2.0]])
    y = np.array([0, 0, 0, 1, 1])
    ts = decoder.TrainingSet(x, x, y, 2, np.log(np.array([0.6, 0.4])), {})
    lam, kappa = 0.25, 2.0
    model = decoder.LdaFamily("standardize", (kappa,), lam).fit(ts, kappa, None)
    m0, m1, center = x[:3].mean(0), x[3:].mean(0), x.mean(0)
    r = np.vstack([x[:3] - m0, x[3:] - m1])
    s_cov = r.T @ r / (5 - 2)
    sigma = (1 - lam) * s_cov + lam * np.trace(s_cov) / 2 * np.eye(2)
    mu = np.stack([center + (m0 - center) * 3 / 5, center + (m1 - center) * 2 / 4])
    inv = np.linalg.inv(sigma)
    want = x @ inv @ mu.T - 0.5 * np.einsum("kd,de,ke->k", mu, inv, mu) + np.log([0.6, 0.4])
    np.testing.assert_allclose(x @ model.w + model.b, want, rtol=1e-10, atol=1e-12)


def test_lda_alone_is_close_to_truth_where_its_model_holds():
    # Gaussian classes with one covariance: lda is well specified (the truth's own family).
    z, y, truth = mixture(2000, 8, 0.6, seed=12)
    value, stderr = info.estimate_with_error("decoder", z, y, models=("lda",))
    assert abs(value - truth) < 3 * stderr + 0.01


def test_lda_never_scores_an_example_it_was_fitted_on():
    rng = np.random.default_rng(13)
    z, y = rng.standard_normal((300, 200)), rng.integers(0, 4, 300)
    value, stderr = info.estimate_with_error("decoder", z, y, models=("lda",), transform="standardize")
    assert -0.05 < value < 2 * stderr


def test_inner_cv_picks_the_family_whose_model_holds():
    # Exponential units at rate 1 (y = 1) or 4 (y = 0): the log-odds are exactly linear, so
    # logistic regression is well specified, while lda's equal-variance Gaussians are not.
    rng = np.random.default_rng(14)
    y = rng.integers(0, 2, 2000)
    z = rng.exponential(1.0, (2000, 5)) / np.where(y == 1, 1.0, 4.0)[:, None]
    kw = dict(transform="standardize")
    both = info.estimate("decoder", z, y, **kw)
    assert both > info.estimate("decoder", z, y, models=("lda",), **kw) + 0.05
    assert both == info.estimate("decoder", z, y, models=("logistic",), **kw)
    # Gaussian classes with one covariance in 84 dims and few examples: lda's model holds and
    # needs fewer examples than logistic regression.
    z, y, _ = mixture(800, 84, 0.25, seed=15)
    both = info.estimate("decoder", z, y, **kw)
    assert both > info.estimate("decoder", z, y, models=("logistic",), **kw) + 0.02
    assert both == pytest.approx(info.estimate("decoder", z, y, models=("lda",), **kw), abs=0.01)


# ----- contract -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["decoder", "decoder_mlp"])
def test_ixz_raises_saying_it_estimates_izy_only(name):
    x = np.random.default_rng(2).standard_normal((50, 3))
    with pytest.raises(ValueError, match=rf"{name} estimates I\(Z;Y\) only.*two float sides"):
        info.estimate(name, x, x[:, :2])
    with pytest.raises(ValueError, match="I\\(Z;Y\\) only"):
        info.estimate_with_error(name, x, x)
    assert info.pairs(name) == ("zy",)


def test_rare_class_names_estimator_class_and_counts_in_one_line():
    z = np.random.default_rng(3).standard_normal((40, 2))
    y = np.array([7] * 20 + [3] * 17 + [9] * 3)
    with pytest.raises(ValueError) as err:
        info.estimate("decoder", z, y)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("decoder: class 9 has 3 example(s), fewer than decoder.folds = 5")
    assert "{3: 17, 7: 20, 9: 3}" in message
    assert info.estimate("decoder", z, y, folds=3) == info.estimate("decoder", z, y, folds=3)


def test_one_class_is_zero_with_zero_error():
    z = np.random.default_rng(4).standard_normal((20, 2))
    assert tuple(info.estimate_with_error("decoder", z, np.full(20, 4))) == (0.0, 0.0)


def test_order_of_arguments_and_determinism():
    z, y, _ = mixture(400, 3, 0.8, seed=5)
    a = info.estimate_with_error("decoder", z, y)
    assert info.estimate_with_error("decoder", y, z) == a
    assert info.estimate_with_error("decoder", z, y) == a
    assert info.estimate("decoder", z, y, seed=1) != a.value
    assert abs(info.estimate("decoder", z, y, seed=1) - a.value) < 2 * a.stderr


def test_no_example_is_scored_by_a_model_that_saw_it():
    # 300 examples in 200 dims, labels independent of Z: a model scored in-sample would separate
    # them (CE ~ 0, estimate ~ H(Y) = ln 4); out of fold it can only lose against the prior.
    rng = np.random.default_rng(6)
    z = rng.standard_normal((300, 200))
    y = rng.integers(0, 4, 300)
    value, stderr = info.estimate_with_error("decoder", z, y, transform="standardize")
    assert -0.05 < value < 2 * stderr


def test_quantile_transform_is_invariant_to_increasing_maps_of_each_unit():
    z, y, _ = mixture(400, 3, 0.8, seed=7)
    warped = np.column_stack([z[:, 0] ** 3, np.exp(z[:, 1]), 2.0 * z[:, 2] - 5.0])
    # exact: increasing maps keep every mid-rank, so the mapped inputs are identical
    assert info.estimate("decoder", warped, y, transform="quantile") == info.estimate("decoder", z, y, transform="quantile")
    # "auto" also tries the standardized inputs, which are not invariant
    assert info.estimate("decoder", warped, y) != info.estimate("decoder", z, y)


def test_inputs_not_modified_and_float32_accepted():
    z, y, _ = mixture(300, 3, 0.8, seed=8)
    z32 = z.astype(np.float32)
    copies = z32.copy(), y.copy()
    info.estimate("decoder", z32, y)
    assert np.array_equal(z32, copies[0]) and np.array_equal(y, copies[1])


# ----- ground truth -------------------------------------------------------------------


@pytest.mark.parametrize("sep", [0.5, 1.0, 2.0])
def test_close_to_truth_in_low_dimension(sep):
    # d = 2, N = 2,000: the linear decoder is well specified and has 12 parameters; its
    # out-of-fold excess loss is O(12 / 1,600) nats, so it must be within 3 SE of the truth
    # and never far above it (a lower bound in expectation).
    z, y, truth = mixture(2000, 2, sep, seed=9)
    value, stderr = info.estimate_with_error("decoder", z, y)
    assert abs(value - truth) < 3 * stderr + 0.01
    assert value < truth + 2 * stderr


def test_monotone_in_separation_and_bounded_by_entropy():
    values = [info.estimate("decoder", *mixture(1000, 5, sep, seed=10)[:2]) for sep in (0.0, 0.3, 0.6, 1.2)]
    assert values == sorted(values)
    assert abs(values[0]) < 0.02
    assert values[-1] < math.log(4)


def test_mlp_decoder_reads_nonlinear_label_information():
    # y = [z1 z2 > 0]: no linear read-out helps (truth near ln 2 for the noiseless rule),
    # a hidden layer does.
    rng = np.random.default_rng(11)
    z = rng.standard_normal((600, 2))
    y = (z[:, 0] * z[:, 1] > 0).astype(np.int64)
    linear = info.estimate("decoder", z, y, transform="standardize")
    mlp, stderr = info.estimate_with_error("decoder_mlp", z, y, hidden=8, l2_grid=(1.0, 0.1), max_iter=200)
    assert linear < 0.05
    assert mlp > 0.3 and mlp < math.log(2) + 2 * stderr


# ----- series: what a run estimates at successive sync points ---------------------


def drifting(steps, seed=3):
    """Z of one model at successive sync points: a 4-class mixture whose units drift a little."""
    z, y, _ = mixture(600, 6, 1.0, seed)
    rng = np.random.default_rng(seed + 1)
    return [z + 0.05 * t * rng.standard_normal(z.shape) for t in range(steps)], y


# Between retunes an iterative fit starts from its last model and stops elsewhere, so its value
# differs from a single estimate's; lda's closed form, with the tuning the inner CV would pick
# again, can give the same value.
@pytest.mark.parametrize("name, params, iterative", [("decoder", {"models": ("logistic",)}, True),
                                                     ("decoder", {}, False), ("decoder_mlp", {}, True)])
def test_series_first_and_retuned_estimates_equal_single_estimates(name, params, iterative):
    zs, y = drifting(5)
    series = info.Series(name, retune=3, **params)
    got = [series.estimate_with_error(z, y) for z in zs]
    for t in (0, 3):  # the inner CV runs at the first estimate and every retune-th after it
        assert got[t] == info.estimate_with_error(name, zs[t], y, **params)
    if iterative:  # in between it reuses the tuning
        assert got[1] != info.estimate_with_error(name, zs[1], y, **params)


def test_series_with_retune_1_is_single_estimates_and_new_labels_start_afresh():
    zs, y = drifting(3)
    every = info.Series("decoder", retune=1)
    assert [every.estimate_with_error(z, y) for z in zs] == [info.estimate_with_error("decoder", z, y) for z in zs]
    series = info.Series("decoder")
    series.estimate_with_error(zs[0], y)
    other = np.roll(y, 1)
    assert series.estimate_with_error(zs[1], other) == info.estimate_with_error("decoder", zs[1], other)


def test_series_between_retunes_stays_within_the_standard_error_of_the_full_estimate():
    zs, y = drifting(4)
    series = info.Series("decoder")
    for z in zs:
        got, full = series.estimate_with_error(z, y), info.estimate_with_error("decoder", z, y)
        assert abs(got.value - full.value) <= full.stderr


def test_series_of_an_estimator_without_memory_is_its_single_estimates():
    zs, y = drifting(2)
    series = info.Series("ksg")
    assert [series.estimate_with_error(z, y).value for z in zs] == [info.estimate("ksg", z, y) for z in zs]


def test_retune_below_one_names_the_key():
    with pytest.raises(ValueError, match="retune"):
        info.Series("decoder", retune=0)


def test_series_never_scores_an_example_with_a_model_that_saw_it():
    # As above, in a series: the model each fold starts from was fitted without that fold.
    rng = np.random.default_rng(6)
    z, y = rng.standard_normal((300, 200)), rng.integers(0, 4, 300)
    series = info.Series("decoder", transform="standardize")
    for t in range(3):
        value, stderr = series.estimate_with_error(z + 0.01 * t * rng.standard_normal(z.shape), y)
        assert -0.05 < value < 2 * stderr


def test_map_rows_from_one_sort_equals_the_input_map_fitted_on_the_training_rows():
    rng = np.random.default_rng(8)
    z = np.maximum(rng.standard_normal((400, 7)), 0.0).round(1)  # ReLU-like: ties and zeros
    train = rng.random(400) < 0.75
    cols = decoder.SortedColumns(z)
    for kind in ("standardize", "quantile"):
        m, x = InputMap.fit(z[train], kind)
        got = decoder.map_rows(z, train, kind, cols)
        np.testing.assert_allclose(got[train], x, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got[~train], m(z[~train]), rtol=0, atol=1e-12)


def test_estimates_run_with_one_blas_thread_and_restore_the_setting(monkeypatch):
    """Outside a run (analyze, direct calls) a thread per core made the decoder 6x slower here."""
    from threadpoolctl import threadpool_info, threadpool_limits

    seen = []
    inner = decoder.cross_fit

    def spy(*args, **kwargs):
        seen.append({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})
        return inner(*args, **kwargs)

    monkeypatch.setattr(decoder, "cross_fit", spy)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(2), 20)
    z = rng.normal(size=(40, 3)) + y[:, None]
    with threadpool_limits(limits=2, user_api="blas"):
        info.estimate_with_error("decoder", z, y)
        info.Series("decoder").estimate_with_error(z, y)
        after = {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}
    assert seen == [{1}, {1}]
    assert after == {2}
