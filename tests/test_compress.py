"""Tests of fedmpi.compress: the contract for every registered compressor, each scheme's
exact behaviour on tiny inputs, unbiasedness where it is promised, error feedback, and
the rate-distortion limit.

Statistical tests use fixed seeds; their tolerances come from each scheme's own
variance (derivations next to each test), at 5 standard errors, so a correct
implementation fails with probability below 1e-5 for any seed.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pytest

from fedmpi.compress import COMPRESSORS, build_compressor
from fedmpi.compress import _wire, ratedistortion
from fedmpi.compress.randk import random_subset, splitmix64
from fedmpi.compress.ratedistortion import (aggregate_distortion, ceo_distortion, ceo_sum_rate,
                                            estimate_variances, min_distortion)
from fedmpi.compress.topk import kept

NAMES = COMPRESSORS.names()
LOSSY = tuple(n for n in NAMES if n != "none")
SIZES = (1, 8, 257, 70_000)  # 257: first size past uint8 indices; 70,000: past uint16
EPS32 = 2.0**-24  # unit roundoff of float32


def update(size, seed=0):
    """(size,) float32 with entries of several magnitudes and both signs."""
    rng = np.random.default_rng([seed, size])
    return (rng.standard_normal(size) * 10.0 ** rng.integers(-4, 1, size)).astype(np.float32)


def sparse(name, fraction):
    """The parameters of `name`, with `fraction` set where the scheme has one."""
    fields = COMPRESSORS[name].params.__dataclass_fields__
    return COMPRESSORS.params(name, **({"fraction": fraction} if "fraction" in fields else {}))


def run(comp, vector, state, seed):
    return comp.encode(vector, state, np.random.default_rng(seed))


# ---------------------------------------------------------------- the contract, every scheme

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", SIZES)
def test_contract(name, size):
    comp = build_compressor(name)
    u = update(size)
    u_before = u.copy()
    state = comp.init_state(size)
    state_before = {k: v.copy() for k, v in state.items()}

    payload, new_state = run(comp, u, state, 7)

    assert isinstance(payload, np.ndarray) and payload.dtype == np.uint8 and payload.ndim == 1
    assert len(payload) == comp.payload_bytes(size)
    assert comp.bits_per_element(size) == 8 * len(payload) / size
    # inputs untouched, and nothing returned shares their memory
    np.testing.assert_array_equal(u, u_before)
    assert state.keys() == state_before.keys()
    for k in state:
        np.testing.assert_array_equal(state[k], state_before[k])
    assert new_state is not state and set(new_state) == set(state)
    for v in new_state.values():
        assert not np.shares_memory(v, u) and not any(np.shares_memory(v, s) for s in state.values())
    assert not np.shares_memory(payload, u)

    decoded = comp.decode(payload)
    assert decoded.dtype == np.float32 and decoded.shape == (size,)
    assert not np.shares_memory(decoded, payload)

    # deterministic for a fixed seed
    payload2, state2 = run(comp, u, state, 7)
    np.testing.assert_array_equal(payload2, payload)
    for k in new_state:
        np.testing.assert_array_equal(state2[k], new_state[k])


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trips_through_a_checkpoint(name):
    """Saving the state as arrays mid-run and loading it gives the same later payloads."""
    comp = build_compressor(name, sparse(name, 0.1))
    size = 300
    state = comp.init_state(size)
    for r in range(2):
        _, state = run(comp, update(size, r), state, r)
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf) as f:
        loaded = {k: f[k] for k in f.files}
    for r in range(2, 5):
        p_a, state = run(comp, update(size, r), state, r)
        p_b, loaded = run(comp, update(size, r), loaded, r)
        np.testing.assert_array_equal(p_a, p_b)


@pytest.mark.parametrize("name", NAMES)
def test_only_stochastic_schemes_draw_from_rng(name):
    comp = build_compressor(name)
    rng = np.random.default_rng(3)
    before = rng.bit_generator.state
    comp.encode(update(50), comp.init_state(50), rng)
    assert (rng.bit_generator.state != before) == comp.stochastic
    assert comp.stochastic == (name in ("qsgd", "randk"))


@pytest.mark.parametrize("name", LOSSY)
def test_decode_refuses_other_schemes_and_lengths(name):
    comp = build_compressor(name)
    payload, _ = run(comp, update(40), comp.init_state(40), 0)
    with pytest.raises(ValueError, match="bytes"):
        comp.decode(payload[:-1])
    with pytest.raises(ValueError, match="bytes"):
        comp.decode(np.concatenate([payload, np.zeros(1, np.uint8)]))
    for other in LOSSY:
        if other != name:
            theirs, _ = run(build_compressor(other), update(40), build_compressor(other).init_state(40), 0)
            with pytest.raises(ValueError, match=f"made by {other}, not {name}"):
                comp.decode(theirs)
    with pytest.raises(ValueError, match="uint8"):
        comp.decode(payload.astype(np.int16))


@pytest.mark.parametrize("name", NAMES)
def test_encode_refuses_what_is_not_a_float32_vector(name):
    comp = build_compressor(name)
    for bad in (np.zeros(4), np.zeros((2, 2), np.float32), np.zeros(0, np.float32)):
        with pytest.raises(ValueError):
            comp.encode(bad, comp.init_state(4), np.random.default_rng(0))


@pytest.mark.parametrize("name", LOSSY)
def test_lossy_encode_refuses_non_finite_updates(name):
    comp = build_compressor(name)
    u = np.array([1.0, np.nan, 2.0], np.float32)
    with pytest.raises(ValueError, match="non-finite"):
        comp.encode(u, comp.init_state(3), np.random.default_rng(0))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "sign-majority"])
def test_default_combine_is_the_weighted_mean(name):
    comp = build_compressor(name)
    a = np.array([1.0, -2.0, 4.0], np.float32)
    b = np.array([3.0, 2.0, 0.0], np.float32)
    decoded = [a, b]
    out = comp.combine(decoded, np.array([1.0, 3.0]))
    # (1*1 + 3*3)/4 = 2.5, (1*-2 + 3*2)/4 = 1, (1*4 + 0)/4 = 1
    np.testing.assert_array_equal(out, np.array([2.5, 1.0, 1.0], np.float32))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(a, [1.0, -2.0, 4.0])
    with pytest.raises(ValueError, match="weights"):
        comp.combine(decoded, np.array([1.0]))
    with pytest.raises(ValueError, match="weights"):
        comp.combine(decoded, np.array([0.0, 0.0]))
    with pytest.raises(ValueError, match="decoded"):
        comp.combine([a, b[:2]], np.array([1.0, 1.0]))


@pytest.mark.parametrize("name", NAMES)
def test_every_compressor_is_reachable_from_a_job_file(name):
    from fedmpi import config
    cfg = config.from_dict({"compression": {"name": name}})
    assert cfg.compression.name == name
    assert isinstance(build_compressor(name, cfg.compression.params), COMPRESSORS[name].impl)


@pytest.mark.parametrize("name, key, bad", [("qsgd", "levels", 0), ("qsgd", "levels", 2**15),
                                            ("topk", "fraction", 0.0), ("topk", "fraction", 1.5),
                                            ("randk", "fraction", -0.1)])
def test_bad_parameters_name_their_field(name, key, bad):
    with pytest.raises(ValueError, match=f"^{key} must be"):
        COMPRESSORS.params(name, **{key: bad})
    from fedmpi import config
    from fedmpi.errors import UsageError
    with pytest.raises(UsageError, match=f"compression.{key} must be"):
        config.from_dict({"compression": {"name": name, key: bad}})


# ---------------------------------------------------------------- none, fp16

def test_none_is_exact_bit_for_bit():
    comp = build_compressor("none")
    u = np.array([0.0, -0.0, 1e-45, -3.5, 3.4e38, np.inf, np.nan], np.float32)
    payload, state = comp.encode(u, {}, np.random.default_rng(0))
    assert state == {} and len(payload) == 28
    np.testing.assert_array_equal(comp.decode(payload).view(np.uint32), u.view(np.uint32))
    assert payload[:4].tolist() == [0, 0, 0, 0] and payload[12:16].tolist() == [0, 0, 0x60, 0xC0]  # -3.5


def test_fp16_error_is_within_half_an_ulp():
    comp = build_compressor("fp16")
    rng = np.random.default_rng(1)
    u = np.clip(rng.standard_normal(20_000) * 10.0 ** rng.uniform(-9, 4.5, 20_000), -65504, 65504).astype(np.float32)
    d = comp.decode(comp.encode(u, {}, rng)[0])
    err = np.abs(d.astype(np.float64) - u)
    # round to nearest binary16: half of the spacing 2**(e - 10) at |u| in [2**e, 2**(e+1)),
    # i.e. <= 2**-11 |u|, and half the subnormal spacing 2**-24 below 2**-14
    bound = np.maximum(2.0**-11 * np.abs(u.astype(np.float64)), 2.0**-25)
    assert np.all(err <= bound)
    assert np.any(err > 0.5 * bound)  # the bound is tight, not vacuous


def test_fp16_exact_values_and_layout():
    comp = build_compressor("fp16")
    u = np.array([0.5, -1024.0, 3.25, 65504.0], np.float32)
    payload, _ = comp.encode(u, {}, np.random.default_rng(0))
    assert len(payload) == 16 + 8
    assert payload[:8].tolist() == [1, 1, 0, 0, 4, 0, 0, 0]  # tag fp16, version 1, aux 0, size 4
    np.testing.assert_array_equal(comp.decode(payload), u)
    assert payload[16:18].tolist() == [0x00, 0x38]  # 0.5 = 0x3800 in binary16
    with pytest.raises(ValueError, match="65504"):
        comp.encode(np.array([1.0, 70000.0], np.float32), {}, np.random.default_rng(0))


# ---------------------------------------------------------------- qsgd

def test_qsgd_exact_levels_and_bits():
    """u = (3, -4), ||u|| = 5, s = 5: r = (3, 4) are integers, so the result is exact."""
    comp = build_compressor("qsgd", COMPRESSORS.params("qsgd", levels=5))
    u = np.array([3.0, -4.0], np.float32)
    payload, _ = comp.encode(u, {}, np.random.default_rng(0))
    # b = ceil(log2 6) = 3 level bits + 1 sign bit; codes 3 = 0b0011 and 4 + 8 = 0b1100,
    # least significant bit first: stream 1100 0011 -> byte 0b11000011 = 195
    assert payload[16:].tolist() == [195]
    assert len(payload) == comp.payload_bytes(2) == 16 + 1
    h = _wire.read_header(payload, "qsgd")
    assert (int(h["aux"]), int(h["size"]), float(h["scale"])) == (5, 2, 5.0)
    np.testing.assert_array_equal(comp.decode(payload), u)


@pytest.mark.parametrize("levels, bits", [(1, 2), (2, 3), (3, 3), (4, 4), (15, 5), (255, 9), (32767, 16)])
def test_qsgd_payload_size(levels, bits):
    comp = build_compressor("qsgd", COMPRESSORS.params("qsgd", levels=levels))
    for size in (1, 7, 1001):
        assert comp.payload_bytes(size) == 16 + math.ceil(size * bits / 8)
        payload, _ = comp.encode(update(size), {}, np.random.default_rng(size))
        assert len(payload) == comp.payload_bytes(size)
        assert np.all(np.abs(comp.decode(payload)) <= np.float32(np.linalg.norm(update(size))) * (1 + 1e-6))


def test_qsgd_edges_zero_and_one_hot():
    comp = build_compressor("qsgd", COMPRESSORS.params("qsgd", levels=3))
    zero = np.zeros(9, np.float32)
    np.testing.assert_array_equal(comp.decode(comp.encode(zero, {}, np.random.default_rng(0))[0]), zero)
    one_hot = np.array([0.0, 0.0, -1e-3, 0.0], np.float32)  # r = (0, 0, 3, 0): the top level, exactly
    for seed in range(20):
        np.testing.assert_array_equal(comp.decode(comp.encode(one_hot, {}, np.random.default_rng(seed))[0]),
                                      one_hot)


def test_qsgd_is_unbiased_with_the_papers_variance():
    """Mean of N decodings against u, per entry and all entries together.

    Entry i is ||u|| (l_i / s) sign(u_i) with l_i = floor(r_i) + Bernoulli(p_i),
    p_i = frac(r_i), so Var = (||u|| / s)^2 p_i (1 - p_i) and the mean of N
    independent draws has standard error se_i = sqrt(Var / N). Where
    N p_i (1 - p_i) >= 25 the binomial count is close to normal, so
    z_i = (mean_i - u_i) / se_i is ~N(0, 1), independently across entries
    (independent uniforms): |z_i| < 5 each, and sum z_i^2 ~ chi^2_m, mean m,
    sd sqrt(2m), checked at 5 sd; together they test the mean and the
    variance formula.
    """
    s, size, n = 7, 40, 4000
    comp = build_compressor("qsgd", COMPRESSORS.params("qsgd", levels=s))
    rng = np.random.default_rng(5)
    u = (rng.choice([-1.0, 1.0], size) * rng.uniform(0.2, 1.0, size)).astype(np.float32)
    draws = np.stack([comp.decode(comp.encode(u, {}, rng)[0]) for _ in range(n)]).astype(np.float64)
    norm = float(np.float32(np.linalg.norm(u.astype(np.float64))))
    r = s * np.abs(u.astype(np.float64)) / norm
    p = r - np.floor(r)
    se = (norm / s) * np.sqrt(p * (1 - p) / n)
    z = (draws.mean(axis=0) - u) / se
    normal = n * p * (1 - p) >= 25
    m = int(normal.sum())
    assert m >= 30
    assert np.max(np.abs(z[normal])) < 5
    assert abs(np.sum(z[normal] ** 2) - m) < 5 * math.sqrt(2 * m)
    # every draw is one of the two levels around r_i
    levels = np.abs(draws) * s / norm
    assert np.all(np.isclose(levels, np.floor(r)) | np.isclose(levels, np.floor(r) + 1))


# ---------------------------------------------------------------- topk

def test_topk_keeps_exactly_the_largest_entries():
    comp = build_compressor("topk", COMPRESSORS.params("topk", fraction=0.5))
    u = np.array([0.1, -5.0, 3.0, 0.2, -4.0, 1.0], np.float32)
    payload, state = comp.encode(u, comp.init_state(6), np.random.default_rng(0))
    # k = round(0.5 * 6) = 3: |-5|, |-4|, |3|
    np.testing.assert_array_equal(comp.decode(payload), [0.0, -5.0, 3.0, 0.0, -4.0, 0.0])
    np.testing.assert_array_equal(state["residual"], np.array([0.1, 0.0, 0.0, 0.2, 0.0, 1.0], np.float32))
    # 16 + 3 * (4 bytes of value + 1 byte of index, P <= 256)
    assert len(payload) == 31
    assert payload[28:].tolist() == [1, 2, 4]  # indices, increasing
    np.testing.assert_array_equal(payload[16:28].view("<f4"), [-5.0, 3.0, -4.0])
    # error feedback: next round with u = 0 sends the largest of what is left
    payload, state = comp.encode(np.zeros(6, np.float32), state, np.random.default_rng(0))
    np.testing.assert_array_equal(comp.decode(payload), np.array([0.1, 0, 0, 0.2, 0, 1.0], np.float32))
    np.testing.assert_array_equal(state["residual"], np.zeros(6, np.float32))


def test_topk_keeps_the_largest_on_random_data():
    size = 70_000
    comp = build_compressor("topk", COMPRESSORS.params("topk", fraction=0.01))
    u = np.random.default_rng(2).permutation(np.arange(1, size + 1)).astype(np.float32)  # distinct |u_i|
    u[::2] *= -1
    d = comp.decode(comp.encode(u, comp.init_state(size), np.random.default_rng(0))[0])
    kept_idx = np.flatnonzero(d)
    assert len(kept_idx) == 700
    assert np.abs(u[kept_idx]).min() == size - 699  # exactly the 700 largest magnitudes
    np.testing.assert_array_equal(d[kept_idx], u[kept_idx])


def test_sparsifiers_round_k_half_up():
    assert kept(0.25, 10) == 3  # 2.5 -> 3
    assert kept(0.01, 10) == 1  # 0.1 -> 0, at least 1
    assert kept(0.01, 62_006) == 620  # 620.06
    assert kept(1.0, 5) == 5
    topk = build_compressor("topk", COMPRESSORS.params("topk", fraction=0.01))
    # k = 3, 3, 655, 655; index width 1, 2, 2, 4 bytes; 4 bytes per value
    assert [topk.payload_bytes(p) for p in (256, 257, 65_536, 65_537)] == \
           [16 + 3 * 5, 16 + 3 * 6, 16 + 655 * 6, 16 + 655 * 8]
    randk = build_compressor("randk", COMPRESSORS.params("randk", fraction=0.01))
    assert randk.payload_bytes(62_006) == 16 + 8 + 620 * 4  # header, seed, values


@pytest.mark.parametrize("name", ["topk", "sign"])
def test_error_feedback_carries_the_residual(name):
    """sum_t decoded_t = sum_t u_t - e_T, up to float32 rounding.

    Each round rounds c = u + e once (and sign rounds e' = c - decoded once), each
    error at most EPS32 |value| per entry; the telescoped sum gathers at most 2 of
    them per round, bounded by 2 T EPS32 max|value|.
    """
    size, rounds = 500, 20
    comp = build_compressor(name, sparse(name, 0.05))
    state = comp.init_state(size)
    sent = np.zeros(size)
    given = np.zeros(size)
    biggest = 0.0
    for t in range(rounds):
        u = update(size, t)
        payload, state = comp.encode(u, state, np.random.default_rng(t))
        d = comp.decode(payload)
        sent += d
        given += u
        biggest = max(biggest, float(np.abs(u).max() + np.abs(state["residual"]).max() + np.abs(d).max()))
    assert np.abs(sent - (given - state["residual"])).max() <= 2 * rounds * EPS32 * biggest
    assert np.abs(state["residual"]).max() > 0


# ---------------------------------------------------------------- randk

def test_splitmix64_matches_the_published_outputs():
    # SplitMix64 (Steele, Lea, Flood 2014) started at 0, and at 1234567 (the common test vector)
    assert splitmix64(0, 2).tolist() == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]
    assert splitmix64(1234567, 3).tolist() == [6457827717110365317, 3203168211198807973, 9817491932198370423]


def test_randk_payload_and_subset():
    comp = build_compressor("randk", COMPRESSORS.params("randk", fraction=0.3))
    u = np.arange(1, 11, dtype=np.float32)  # P = 10, k = 3
    payload, _ = comp.encode(u, {}, np.random.default_rng(4))
    assert len(payload) == 16 + 8 + 12
    seed = int(payload[16:24].view("<u8")[0])
    idx = random_subset(seed, 10, 3)
    keys = splitmix64(seed, 10)
    assert set(idx.tolist()) == set(np.argsort(keys)[:3].tolist()) and np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(payload[24:].view("<f4"), u[idx])
    expected = np.zeros(10, np.float32)
    expected[idx] = (u[idx].astype(np.float64) * 10 / 3).astype(np.float32)
    np.testing.assert_array_equal(comp.decode(payload), expected)
    full = build_compressor("randk", COMPRESSORS.params("randk", fraction=1.0))
    np.testing.assert_array_equal(full.decode(full.encode(u, {}, np.random.default_rng(0))[0]), u)


def test_randk_is_unbiased():
    """Entry i decodes to (P / k) u_i with probability k / P, else 0.

    Mean (P/k)(k/P) u_i = u_i; Var = u_i^2 (P / k - 1); the mean of N draws has
    se = |u_i| sqrt((P / k - 1) / N). Each index's count of selections is
    Binomial(N, k / P), se sqrt(N (k/P)(1 - k/P)). Both checked at 5 se.
    """
    size, frac, n = 40, 0.2, 4000
    k = kept(frac, size)
    comp = build_compressor("randk", COMPRESSORS.params("randk", fraction=frac))
    u = update(size, 9)
    rng = np.random.default_rng(21)
    draws = np.stack([comp.decode(comp.encode(u, {}, rng)[0]) for _ in range(n)]).astype(np.float64)
    se = np.abs(u.astype(np.float64)) * math.sqrt((size / k - 1) / n)
    assert np.all(np.abs(draws.mean(axis=0) - u) < 5 * se + 4 * EPS32 * np.abs(u) * size / k)
    counts = (draws != 0).sum(axis=0)
    q = k / size
    assert np.all(np.abs(counts - n * q) < 5 * math.sqrt(n * q * (1 - q)))
    assert np.all((draws != 0).sum(axis=1) == k)


# ---------------------------------------------------------------- sign, sign-majority

def test_sign_scale_bits_and_residual():
    comp = build_compressor("sign")
    u = np.array([1.0, -2.0, 0.0, 3.0], np.float32)
    payload, state = comp.encode(u, comp.init_state(4), np.random.default_rng(0))
    # scale = (1 + 2 + 0 + 3) / 4 = 1.5; bits (>= 0) = 1, 0, 1, 1 -> 0b1101 = 13
    assert len(payload) == 16 + 1 and payload[16] == 13
    assert float(_wire.read_header(payload, "sign")["scale"]) == 1.5
    np.testing.assert_array_equal(comp.decode(payload), [1.5, -1.5, 1.5, 1.5])
    np.testing.assert_array_equal(state["residual"], [-0.5, -0.5, -1.5, 1.5])


@pytest.mark.parametrize("name", ["sign", "sign-majority"])
def test_sign_payload_is_a_bit_per_entry_plus_header(name):
    comp = build_compressor(name)
    for size in (1, 8, 9, 62_006):
        assert comp.payload_bytes(size) == math.ceil(size / 8) + 16
        assert len(comp.encode(update(size), comp.init_state(size), np.random.default_rng(0))[0]) == \
               math.ceil(size / 8) + 16


def test_sign_majority_combine_is_the_vote():
    comp = build_compressor("sign-majority")
    us = [np.array([1, -1, 2, -2], np.float32),   # a = 1.5, signs + - + -
          np.array([-1, -1, 1, 3], np.float32),   # a = 1.5, signs - - + +
          np.array([3, 1, -1, -3], np.float32)]   # a = 2,   signs + + - -
    decoded = [comp.decode(comp.encode(u, {}, np.random.default_rng(0))[0]) for u in us]
    np.testing.assert_array_equal(decoded[2], [2, 2, -2, -2])
    # equal weights: majority +, -, +, -; scale (1.5 + 1.5 + 2) / 3
    np.testing.assert_array_equal(comp.combine(decoded, np.ones(3)),
                                  np.float32(5 / 3) * np.array([1, -1, 1, -1], np.float32))
    # weights (1, 1, 3): votes (3, 1, -1, -3); scale (1.5 + 1.5 + 6) / 5 = 1.8
    np.testing.assert_array_equal(comp.combine(decoded, np.array([1.0, 1.0, 3.0])),
                                  np.float32(1.8) * np.array([1, 1, -1, -1], np.float32))
    # two workers split evenly on entries 0 and 3: those stay 0
    np.testing.assert_array_equal(comp.combine(decoded[:2], np.ones(2)), [0.0, -1.5, 1.5, 0.0])
    # a worker whose update is 0 casts no vote (its bits would all read +)
    zero = comp.decode(comp.encode(np.zeros(4, np.float32), {}, np.random.default_rng(0))[0])
    np.testing.assert_array_equal(comp.combine([zero, decoded[2]], np.ones(2)), [1, 1, -1, -1])


# ---------------------------------------------------------------- rate-distortion

def test_ceo_sum_rate_hand_values():
    # K = 10, sigma_X^2 = 1, sigma_N^2 = 10, so sigma_N^2 / K = 1.
    # d = 2:  -(10/2) log2(1 - 10/20) + (1/2) log2(1 + 1/2) = 5 + 0.5 * 0.5849625 = 5.2924813
    assert ceo_sum_rate(2.0, 10, 1.0, 10.0) == pytest.approx(5 + 0.5 * math.log2(1.5), rel=1e-14)
    assert round(ceo_sum_rate(2.0, 10, 1.0, 10.0), 2) == 5.29
    # d = 10: -5 log2(0.9) + 0.5 log2(1.1) = 5 * 0.1520031 + 0.5 * 0.1375035 = 0.7600155 + 0.0687518 = 0.8287672
    assert ceo_sum_rate(10.0, 10, 1.0, 10.0) == pytest.approx(-5 * math.log2(0.9) + 0.5 * math.log2(1.1), rel=1e-14)
    assert round(ceo_sum_rate(10.0, 10, 1.0, 10.0), 2) == 0.83
    # at or below sigma_N^2 / K = 1 no rate is enough
    assert ceo_sum_rate(1.0, 10, 1.0, 10.0) == math.inf
    assert ceo_sum_rate(0.5, 10, 1.0, 10.0) == math.inf
    assert ceo_sum_rate(math.inf, 10, 1.0, 10.0) == 0.0
    assert min_distortion(10, 10.0) == 1.0
    # arrays keep their shape; K = 1, no noise: (1/2) log2(1 + 3/1) = 1
    np.testing.assert_allclose(ceo_sum_rate(np.array([[1.0, 3.0]]), 1, 3.0, 0.0), [[1.0, 0.5]], rtol=1e-14)
    with pytest.raises(ValueError, match="num_workers"):
        ceo_sum_rate(2.0, 0, 1.0, 1.0)
    with pytest.raises(ValueError, match="noise_var"):
        ceo_sum_rate(2.0, 3, 1.0, -1.0)


def test_ceo_distortion_inverts_the_rate():
    for rate in (0.01, 0.8287672291002173, 5.29, 30.0):
        d = ceo_distortion(rate, 10, 1.0, 10.0)
        assert ceo_sum_rate(d, 10, 1.0, 10.0) == pytest.approx(rate, rel=1e-9)
    assert ceo_distortion(5 + 0.5 * math.log2(1.5), 10, 1.0, 10.0) == pytest.approx(2.0, rel=1e-12)
    assert ceo_distortion(0.0, 10, 1.0, 10.0) == math.inf


def test_variance_estimators_exact():
    # m = (1, 2, 5, 6); across workers (ddof 1): (2, 0, 2, 0) -> sigma_N^2 = 1
    # across entries of m (ddof 1): (6.25 + 2.25 + 2.25 + 6.25) / 3 = 17/3; sigma_X^2 = 17/3 - 1/2 = 31/6
    v = estimate_variances(np.array([[0, 2, 4, 6], [2, 2, 6, 6]], np.float32))
    assert (v.noise_var, v.mean_var, v.num_workers) == (1.0, pytest.approx(17 / 3, rel=1e-15), 2)
    assert v.signal_var == pytest.approx(31 / 6, rel=1e-15)
    # workers disagree and their mean is flat: all noise, the signal clips at 0
    v = estimate_variances(np.array([[1, 2, 3], [3, 2, 1]], np.float32))
    assert (v.noise_var, v.mean_var, v.signal_var) == (pytest.approx(4 / 3, rel=1e-15), 0.0, 0.0)
    with pytest.raises(ValueError, match="K >= 2"):
        estimate_variances(np.zeros((1, 5)))


def test_variance_estimators_recover_the_model():
    """G ~ N(0, 1), N_k ~ N(0, 10), K = 10, P = 20,000.

    noise_var averages P sample variances with K - 1 = 9 dof, each of variance
    2 sigma_N^4 / 9: se = sqrt(2 * 100 / 9 / P) = 0.033. mean_var is a sample
    variance of P draws of N(0, 2): se = sqrt(2 * 4 / P) = 0.020; signal_var
    subtracts noise_var / K (se 0.0033, independent of the mean for Gaussians):
    se = 0.0203. Both checked at 5 se.
    """
    k, p = 10, 20_000
    rng = np.random.default_rng(8)
    g = rng.standard_normal(p)
    updates = (g + math.sqrt(10) * rng.standard_normal((k, p))).astype(np.float32)
    v = estimate_variances(updates)
    assert abs(v.noise_var - 10) < 5 * math.sqrt(200 / 9 / p)
    assert abs(v.signal_var - 1) < 5 * math.sqrt(8 / p + (200 / 9 / p) / k**2)
    assert abs(v.mean_var - 2) < 5 * math.sqrt(8 / p)


def test_aggregate_distortion():
    # ((1 - 0)^2 + (0 - 2)^2 + (3 - 3)^2 + (-1 - 0)^2) / 4 = 6 / 4
    assert aggregate_distortion(np.array([1, 0, 3, -1], np.float32), np.array([0, 2, 3, 0], np.float32)) == 1.5
    with pytest.raises(ValueError, match="one length"):
        aggregate_distortion(np.zeros(3), np.zeros(4))


# ---------------------------------------------------------------- the compressed sync point

def test_messages_combine_to_the_weighted_mean_model_with_their_stop_flags():
    from fedmpi.compressed import TRAILER, Uplink, blank_message, combine, message_bytes
    comp = build_compressor("fp16")
    P = 6
    theta_g = np.arange(P, dtype=np.float32)
    locals_ = [theta_g + 0.5, theta_g - 0.25]
    links = [Uplink(comp, P, seed=0, worker=k) for k in range(2)]
    msgs = np.stack([links[0].message(locals_[0], 3.0, theta_g, 0, False),
                     links[1].message(locals_[1], 1.0, theta_g, 0, True)])
    assert msgs.shape == (2, message_bytes(comp, P)) == (2, 16 + 2 * P + TRAILER.itemsize)
    out = combine(comp, msgs, theta_g)
    np.testing.assert_array_equal(out.weights, [3.0, 1.0])
    np.testing.assert_allclose(out.theta, theta_g + (3 * 0.5 - 0.25) / 4, rtol=0, atol=1e-6)
    assert out.stop
    np.testing.assert_array_equal(links[0].update, np.full(P, 0.5, np.float32))
    # A worker none of whose clients trained sends u = 0 with weight 0: it has no say.
    idle = Uplink(comp, P, seed=0, worker=2).message(None, 5.0, theta_g, 0, False)
    out = combine(comp, np.stack([msgs[0], idle]), theta_g)
    np.testing.assert_allclose(out.theta, theta_g + 0.5, atol=1e-6)
    assert not out.stop
    blank = blank_message(msgs.shape[1], True)
    assert blank[:-TRAILER.itemsize].sum() == 0 and blank[-TRAILER.itemsize:].view(TRAILER)["stop"][0] == 1


def test_stochastic_messages_depend_on_seed_worker_and_sync_point_only():
    from fedmpi.compressed import Uplink
    comp = build_compressor("qsgd")
    theta_g = np.zeros(500, np.float32)
    local = np.random.default_rng(1).normal(size=500).astype(np.float32)
    a = Uplink(comp, 500, seed=3, worker=1).message(local, 1.0, theta_g, 7, False)
    b = Uplink(comp, 500, seed=3, worker=1).message(local, 1.0, theta_g, 7, False)
    np.testing.assert_array_equal(a, b)  # a resumed run draws the same
    for other in (Uplink(comp, 500, seed=3, worker=0).message(local, 1.0, theta_g, 7, False),
                  Uplink(comp, 500, seed=3, worker=1).message(local, 1.0, theta_g, 8, False)):
        assert not np.array_equal(a, other)


def test_diagnosis_of_a_sync_point_exact_values():
    from fedmpi.compressed import Combined, diagnose
    updates = np.array([[1.0, 0.0, 2.0, -1.0], [3.0, 0.0, 0.0, 1.0]], dtype=np.float32)  # (W=2, P=4)
    weights = np.array([1.0, 1.0])
    exact = updates.mean(axis=0)  # [2, 0, 1, 0]
    update = (exact + np.array([0.5, -0.5, 0.0, 0.0])).astype(np.float32)
    d, signal, noise, limit = diagnose(Combined(update, update, weights, False), updates)
    assert d == pytest.approx(0.5 / 4)
    v = ratedistortion.estimate_variances(updates)
    assert (signal, noise) == (pytest.approx(v.signal_var), pytest.approx(v.noise_var))
    # The limit is R_sum at the exact mean's own error plus d (ratedistortion.limit_bits).
    assert limit == pytest.approx(ratedistortion.ceo_sum_rate(v.noise_var / 2 + d, 2, v.signal_var, v.noise_var))
    # One worker with a say: no variances across workers, no limit.
    d1, *rest = diagnose(Combined(update, update, np.array([1.0, 0.0]), False), updates)
    assert d1 == pytest.approx(float(np.mean((update - updates[0]) ** 2))) and np.isnan(rest).all()


def test_limit_bits_is_finite_for_any_loss_and_infinite_only_for_none():
    v = ratedistortion.UpdateVariances(signal_var=1.0, noise_var=10.0, mean_var=2.0, num_workers=10)
    assert ratedistortion.limit_bits(1.0, v) == pytest.approx(5.29, abs=0.005)  # R_sum(d = 1 + 1 = 2)
    assert np.isfinite(ratedistortion.limit_bits(1e-9, v)) and ratedistortion.limit_bits(0.0, v) == np.inf
