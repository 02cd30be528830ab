"""Ground-truth and contract tests for fedmpi.info (MI estimators, nats).

Tolerances come from what each estimator can do (see
docs/mutual-information.md for the measured errors): KSG is accurate at low d;
EDGE is a partition (plug-in) estimator, biased up for independent data and
down at high MI; binning and KDE are not consistent estimators of the
continuous MI, so only the properties they do have are tested.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.special import logsumexp

from fedmpi import info
from fedmpi.info import ESTIMATORS, estimate, prepare


def gaussian_pair(n, d, rho, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d))
    y = rho * x + np.sqrt(1 - rho**2) * rng.standard_normal((n, d))
    return x, y


def true_gaussian_mi(d, rho):
    return -0.5 * d * np.log(1 - rho**2)


def class_gaussians(n, d, sep, s, seed):
    """Z|y ~ N(mu_y, s^2 I), 10 equiprobable labels; returns z, y, true I(Z;Y).

    The truth is H(Y) - H(Y|Z) with E log p(y|z) averaged over a large
    independent Monte-Carlo sample, using the known means.
    """
    rng = np.random.default_rng(seed)
    mu = sep * np.random.default_rng(1234).standard_normal((10, d))  # (10, d) fixed means

    def draw(m):
        y = rng.integers(0, 10, m)
        return mu[y] + s * rng.standard_normal((m, d)), y

    z_mc, y_mc = draw(200_000)
    logits = -((z_mc[:, None, :] - mu[None]) ** 2).sum(-1) / (2 * s**2)  # (M, 10)
    log_post = logits[np.arange(len(y_mc)), y_mc] - logsumexp(logits, axis=1)
    truth = np.log(10) + log_post.mean()
    z, y = draw(n)
    return z, y, truth


# ----- ground truth: KSG ------------------------------------------------------


@pytest.mark.parametrize("rho", [0.5, 0.9, 0.99])
def test_ksg_gaussian_1d(rho):
    x, y = gaussian_pair(2000, 1, rho, seed=1)
    assert estimate("ksg", x, y) == pytest.approx(true_gaussian_mi(1, rho), abs=0.05)


def test_ksg_gaussian_2d():
    x, y = gaussian_pair(2000, 2, 0.9, seed=2)
    assert estimate("ksg", x, y) == pytest.approx(true_gaussian_mi(2, 0.9), abs=0.12)


def test_ksg_independent():
    x, y = gaussian_pair(2000, 2, 0.0, seed=3)
    assert abs(estimate("ksg", x, y)) < 0.03


def test_ksg_labels_class_gaussians():
    z, y, truth = class_gaussians(3000, 2, sep=1.0, s=0.5, seed=4)
    assert 0.5 < truth < np.log(10) - 0.3  # the case is neither trivial nor saturated
    assert estimate("ksg", z, y) == pytest.approx(truth, abs=0.1)
    assert estimate("ksg", y, z) == pytest.approx(estimate("ksg", z, y), abs=1e-6)  # jitter stream differs by position


def test_ksg_labels_independent():
    rng = np.random.default_rng(5)
    z, y = rng.standard_normal((3000, 2)), rng.integers(0, 10, 3000)
    assert abs(estimate("ksg", z, y)) < 0.05


# ----- ground truth: EDGE -----------------------------------------------------


def test_edge_gaussian_1d_close_and_monotone():
    vals = []
    for rho in [0.0, 0.5, 0.9, 0.99]:
        x, y = gaussian_pair(3000, 1, rho, seed=6)
        vals.append(estimate("edge", x, y))
    assert vals[0] < 0.12  # plug-in bias for independent data, measured ~0.08
    assert vals[1] == pytest.approx(true_gaussian_mi(1, 0.5), abs=0.15)
    assert vals[2] == pytest.approx(true_gaussian_mi(1, 0.9), abs=0.15)
    assert true_gaussian_mi(1, 0.99) - 0.6 < vals[3] < true_gaussian_mi(1, 0.99)  # biased low
    assert vals == sorted(vals)


def test_edge_labels_class_gaussians():
    z, y, truth = class_gaussians(3000, 2, sep=1.0, s=0.5, seed=7)
    assert estimate("edge", z, y) == pytest.approx(truth, abs=0.35)


def test_edge_high_dim_x_prepared_vs_representation():
    """X of many dims against a representation of it: positive, finite, <= log N."""
    rng = np.random.default_rng(8)
    x = rng.random((2000, 300)).astype(np.float32)
    z = np.tanh(x[:, :20] @ rng.standard_normal((20, 16)))
    zero = rng.standard_normal((2000, 16))
    dep, ind = estimate("edge", x, z), estimate("edge", x, zero)
    assert 0.0 <= ind < dep <= np.log(2000)


def test_edge_weighted_combine_is_finite_and_distinct():
    x, y = gaussian_pair(2000, 1, 0.9, seed=9)
    w = estimate("edge", x, y, combine="weighted")
    assert np.isfinite(w) and w != estimate("edge", x, y)


def test_edge_weights_satisfy_constraints():
    t = np.geomspace(0.5, 2.0, 6)
    w = info.edge.optimal_weights(t, 3)
    assert w.sum() == pytest.approx(1.0)
    for i in range(1, 4):
        assert w @ t ** (i / 3) == pytest.approx(0.0, abs=1e-9)


def test_edge_cap_u_clips():
    x, y = gaussian_pair(2000, 1, 0.99, seed=10)
    assert estimate("edge", x, y, U=0.1) <= 0.1 + 1e-12 < estimate("edge", x, y)


# ----- binning and KDE: the properties they have ------------------------------


def test_binning_ixz_is_entropy_of_binned_z_and_below_log_n():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2000, 50))
    z = np.tanh(x[:, :8])
    ixz = estimate("binning", x, z)
    codes = info.binning.bin_patterns(z, 30, "global")
    assert ixz == pytest.approx(info._common.entropy_of_codes(codes), abs=1e-12)
    assert 0 < ixz <= np.log(2000) + 1e-12
    coarse = estimate("binning", x, z, bins=2)
    assert coarse < ixz  # fewer bins, fewer patterns


def test_binning_a_distinct_false_is_plugin_mi():
    x, y = gaussian_pair(3000, 1, 0.9, seed=12)
    indep = estimate("binning", x, gaussian_pair(3000, 1, 0.0, seed=13)[1], a_distinct=False, bins=8)
    dep = estimate("binning", x, y, a_distinct=False, bins=8)
    assert indep < 0.05 and dep > 0.5


@pytest.mark.parametrize("name", ["binning", "kde"])
def test_labels_mi_monotone_in_separation_and_small_when_independent(name):
    vals = []
    for sep in [0.0, 0.5, 1.0, 2.0]:
        z, y, _ = class_gaussians(2000, 2, sep=sep, s=0.5, seed=14)
        vals.append(estimate(name, z, y, **({"bins": 10} if name == "binning" else {})))
    assert vals == sorted(vals)
    assert vals[0] < 0.2 * vals[-1]
    assert all(v <= np.log(10) + 1e-9 for v in vals)


def test_kde_bound_range_and_noise_dependence():
    rng = np.random.default_rng(15)
    x = rng.standard_normal((1500, 30))
    z = x[:, :5]
    small, big = estimate("kde", x, z, sigma2=0.01), estimate("kde", x, z, sigma2=1.0)
    assert 0 < big < small <= np.log(1500) + 1e-9
    same = np.zeros((1500, 5))
    assert estimate("kde", x, same) == pytest.approx(0.0, abs=1e-9)


def test_kde_pairwise_bound_matches_dense_formula():
    rng = np.random.default_rng(16)
    z = rng.standard_normal((700, 3))  # > one chunk of rows
    d2 = ((z[:, None] - z[None]) ** 2).sum(-1)
    dense = -np.mean(logsumexp(-d2 / (2 * 0.3), axis=1) - np.log(700))
    assert info.kde.pairwise_bound(z, 0.3) == pytest.approx(dense, rel=1e-10)


# ----- invariance (data processing) ------------------------------------------


@pytest.mark.parametrize("name,tol", [("ksg", 0.12), ("edge", 0.3)])
def test_invertible_map_keeps_label_mi(name, tol):
    z, y, truth = class_gaussians(3000, 2, sep=1.0, s=0.5, seed=17)
    q, _ = np.linalg.qr(np.random.default_rng(18).standard_normal((2, 2)))
    mapped = np.tanh(0.5 * (z @ q)) * 3.0 + 1.0  # rotation, then monotone per unit
    assert estimate(name, mapped, y) == pytest.approx(estimate(name, z, y), abs=tol)


def test_labels_labels_is_plugin_mi_for_all():
    y = np.repeat(np.arange(4), 50)
    for name in ESTIMATORS:
        if info.XZ in info.pairs(name):
            assert estimate(name, y, y) == pytest.approx(np.log(4), abs=1e-12)
        else:  # the decoders take a float Z and labels, nothing else
            with pytest.raises(ValueError, match=rf"{name} estimates I\(Z;Y\) only"):
                estimate(name, y, y)


# ----- contract: prepare, determinism, RNG, mutation, validation --------------


@pytest.mark.parametrize("name", ESTIMATORS)
def test_prepare_equals_raw(name):
    rng = np.random.default_rng(19)
    x = rng.random((600, 64)).astype(np.float32)
    z = np.tanh(x[:, :12] - 0.5)
    y = rng.integers(0, 10, 600)
    if info.XZ in info.pairs(name):
        p = prepare(name, x)
        assert estimate(name, p, z) == estimate(name, x, z)
    seeded = "seed" in {f.name for f in dataclasses.fields(ESTIMATORS[name].params)}
    pz = prepare(name, z, seed=3) if seeded else prepare(name, z)
    kw = {"seed": 3} if seeded else {}
    assert estimate(name, pz, y, **kw) == estimate(name, z, y, **kw)


def test_prepared_mismatch_raises():
    x = np.random.default_rng(20).random((200, 8))
    p = prepare("edge", x)
    with pytest.raises(ValueError, match="edge"):
        estimate("ksg", p, x)
    with pytest.raises(ValueError):
        estimate("edge", p, x, seed=1)
    with pytest.raises(ValueError, match="first argument"):
        estimate("edge", x, p)


@pytest.mark.parametrize("name", ESTIMATORS)
def test_deterministic_no_global_rng_no_mutation(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(21)
    x = rng.standard_normal((500, 20))
    z = np.tanh(x[:, :6]).astype(np.float32)
    y = rng.integers(0, 10, 500)
    copies = [x.copy(), z.copy(), y.copy()]
    np_state, torch_state = np.random.get_state(), torch.get_rng_state()
    pairs = [(x, z), (z, y)] if info.XZ in info.pairs(name) else [(z, y)]
    first = [estimate(name, a, b) for a, b in pairs]
    second = [estimate(name, a, b) for a, b in pairs]
    assert first == second
    after = np.random.get_state()
    assert all(np.array_equal(u, v) for u, v in zip(np_state[1:2], after[1:2]))
    assert np_state[2:] == after[2:]
    assert torch.equal(torch_state, torch.get_rng_state())
    for orig, arr in zip(copies, [x, z, y]):
        assert np.array_equal(orig, arr)
    assert x.flags.writeable


def test_seed_changes_edge_and_ksg():
    x, y = gaussian_pair(1000, 1, 0.9, seed=22)
    assert estimate("edge", x, y, seed=0) != estimate("edge", x, y, seed=1)
    # Jitter only matters where there are ties: rounded data has many.
    xr, yr = np.round(x, 1), np.round(y, 1)
    assert estimate("ksg", xr, yr, seed=0) != estimate("ksg", xr, yr, seed=1)
    assert abs(estimate("ksg", xr, yr, seed=0) - estimate("ksg", x, y)) < 0.1


def test_bad_name_lists_estimators():
    with pytest.raises(ValueError, match="edge.*ksg.*binning.*kde"):
        estimate("mine", np.zeros((5, 1)), np.zeros((5, 1)))


@pytest.mark.parametrize("name,field,bad", [
    ("ksg", "k", 0), ("ksg", "k", 2.5), ("ksg", "jitter", -1.0), ("ksg", "workers", 0),
    ("edge", "gamma", 0.0), ("edge", "L", 0), ("edge", "U", -1.0), ("edge", "combine", "mode"),
    ("edge", "t_max", 0.1), ("edge", "seed", -1), ("edge", "cells_scale", float("nan")),
    ("binning", "bins", 0), ("binning", "range_mode", "local"), ("binning", "a_distinct", "yes"),
    ("kde", "sigma2", 0.0), ("kde", "bound", "both"),
    ("decoder", "folds", 2), ("decoder", "l2_grid", ()), ("decoder", "l2_grid", (1.0, -1.0)),
    ("decoder", "l2_grid", (1.0, 1.0)), ("decoder", "transform", "rank"), ("decoder", "max_iter", 0),
    ("decoder_mlp", "hidden", 0), ("decoder_mlp", "folds", 1), ("decoder_mlp", "l2_grid", (float("inf"),)),
])
def test_bad_params_name_the_field(name, field, bad):
    x = np.zeros((10, 1))
    with pytest.raises(ValueError, match=rf"\b{name}\.{field}"):
        estimate(name, x, x, **{field: bad})
    with pytest.raises(ValueError, match=rf"{name}\.{field}"):
        dataclasses.replace(ESTIMATORS[name].params(), **{field: bad}).check()


def test_describe_is_flat_and_says_what_is_measured():
    for name in ESTIMATORS:
        d = info.describe(name)
        assert d["estimator"] == name and d["units"] == "nats"
        assert {"xz", "zy", "xz_kind", "zy_kind"} <= set(d)
        assert d["xz_kind"] in ("estimate", "lower_bound", "upper_bound", "none")
        assert d["zy_kind"] in ("estimate", "lower_bound", "upper_bound", "none")
        assert all(isinstance(v, (str, int, float)) for v in d.values())
        assert (d["xz_kind"] == "none") == (info.XZ not in info.pairs(name))
    assert info.describe("kde", sigma2=0.25)["noise_sigma"] == pytest.approx(0.5)
    assert info.describe("kde", bound="lower")["xz_kind"] == "lower_bound"
    assert info.describe("decoder")["zy_kind"] == "lower_bound"


@pytest.mark.parametrize("name", ESTIMATORS)
def test_estimate_with_error_value_equals_estimate(name):
    rng = np.random.default_rng(23)
    z = rng.standard_normal((300, 4)) + np.repeat(np.eye(4)[:3], 100, axis=0)
    y = np.repeat(np.arange(3), 100)
    kw = {"max_iter": 30} if name == "decoder_mlp" else {}
    value, stderr = info.estimate_with_error(name, z, y, **kw)
    assert value == estimate(name, z, y, **kw)
    if name.startswith("decoder"):
        assert 0.0 < stderr < 0.1
    else:
        assert np.isnan(stderr)


def test_list_override_of_a_tuple_field_becomes_a_tuple():
    p = info.resolve_params("decoder", l2_grid=[10, 1.0])
    assert p.l2_grid == (10, 1.0) and isinstance(p.l2_grid, tuple)
    hash(p)


def test_unknown_override_and_wrong_params_type():
    x = np.zeros((10, 1))
    with pytest.raises(ValueError, match="nope"):
        estimate("ksg", x, x, nope=1)
    with pytest.raises(ValueError, match="KsgParams"):
        estimate("ksg", x, x, params=ESTIMATORS["edge"].params())


def test_params_defaults_are_trace_friendly_and_frozen():
    for name in ESTIMATORS:
        cls = ESTIMATORS[name].params
        p = cls()
        p.check()
        for value in dataclasses.asdict(p).values():
            assert isinstance(value, (int, float, str, bool, tuple))
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(p, dataclasses.fields(cls)[0].name, 1)


def test_mismatched_lengths_raise():
    with pytest.raises(ValueError, match="same number of samples"):
        estimate("kde", np.zeros((10, 2)), np.zeros((11, 2)))


# ----- KDE: the Bhattacharyya/KL bracket of the noisy representation ------------


def test_kde_two_point_bounds_exact():
    # Two points at distance 2, sigma2 = 0.5: KL distance 4 / (2 * 0.5) = 4, Bhattacharyya 4 / (8 * 0.5) = 1.
    # B = -(1/2) sum_i ln((1 + e^-D) / 2) = ln 2 - ln(1 + e^-D): upper 0.674838, lower 0.379885.
    x = np.zeros((2, 1))
    z = np.array([[0.0], [2.0]])
    assert estimate("kde", x, z, sigma2=0.5) == pytest.approx(np.log(2) - np.log1p(np.exp(-4.0)), abs=1e-12)
    assert estimate("kde", x, z, sigma2=0.5, bound="upper") == estimate("kde", x, z, sigma2=0.5)
    assert estimate("kde", x, z, sigma2=0.5, bound="lower") == pytest.approx(np.log(2) - np.log1p(np.exp(-1.0)),
                                                                              abs=1e-12)


def test_kde_lower_and_upper_bracket_the_monte_carlo_truth():
    # T = z_I + N(0, s2 I), I uniform over 6 points with labels; I(X;T) = H(T) - H(noise) and
    # I(T;Y) = H(T) - H(T|Y) by Monte Carlo over 50,000 draws of T (the mixture densities are exact).
    rng = np.random.default_rng(30)
    z = rng.standard_normal((6, 2)) * 1.5
    y = np.array([0, 0, 1, 1, 2, 2])
    s2 = 0.5
    draw = rng.integers(0, 6, 50_000)
    t = z[draw] + np.sqrt(s2) * rng.standard_normal((50_000, 2))
    log_comp = -((t[:, None, :] - z[None]) ** 2).sum(-1) / (2 * s2) - np.log(2 * np.pi * s2)  # (M, 6)
    log_mix = logsumexp(log_comp, axis=1) - np.log(6)
    h_noise = np.log(2 * np.pi * np.e * s2)
    ixt = -log_mix.mean() - h_noise
    log_cond = np.stack([logsumexp(log_comp[:, y == c], axis=1) - np.log(2) for c in range(3)], 1)
    ity = float(np.mean(log_cond[np.arange(len(draw)), y[draw]] - log_mix))
    x = np.zeros((6, 1))
    lo_x, hi_x = estimate("kde", x, z, sigma2=s2, bound="lower"), estimate("kde", x, z, sigma2=s2, bound="upper")
    lo_y, hi_y = estimate("kde", z, y, sigma2=s2, bound="lower"), estimate("kde", z, y, sigma2=s2, bound="upper")
    mc_se = 0.02  # both MC truths have standard errors below 0.007 at 50,000 draws
    assert lo_x - mc_se < ixt < hi_x + mc_se and lo_x < hi_x
    assert lo_y - mc_se < ity < hi_y + mc_se and lo_y < hi_y
