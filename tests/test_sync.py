"""Sync policies (fedmpi.sync), in process: each policy's decision with exact values, the contract
every registered policy keeps, their job-file section and bad input, the check points of the
schedule, and a round trained in segments (the training between check points) or resumed in mid-round."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedmpi import config, observe
from fedmpi.console import Console
from fedmpi.errors import UsageError
from fedmpi.local import probe_bounds
from fedmpi.plan import Schedule, make_plan
from fedmpi.protocol import PolicyBuffers, Position
from fedmpi.sync import SYNC_POLICIES, WorkerView, build_policy
from fedmpi.sync.base import FIXED, to_fixed
from fedmpi.sync.dynamic import DynamicParams, squared_distance
from fedmpi.sync.information import InformationParams

from conftest import small_config, small_group


# ------------------------------------------------------------------ periodic


def test_periodic_makes_every_check_point_a_sync_point_without_any_collective():
    policy = build_policy("periodic")
    assert policy.check_values == () and policy.measure_values == () and policy.init_state() == {}
    state = {}
    for final in (False, False, True):
        synced, state = policy.decide(state, np.zeros(0), final)
        assert synced and state == {}


# ------------------------------------------------------------------ dynamic

def _dynamic(delta=1.0):
    return build_policy("dynamic", DynamicParams(delta=delta))


def test_dynamic_signal_counts_clients_beyond_delta_and_sums_their_squared_distances():
    policy = _dynamic(delta=1.0)
    r = np.zeros(4, np.float32)
    near = np.array([0.5, 0, 0, 0], np.float32)  # ||.||^2 = 0.25
    far = np.array([1, 1, 0, 0], np.float32)  # 2.0
    out = np.full(3, -1.0)
    policy.signal(WorkerView((near, far), r), out)
    np.testing.assert_array_equal(out, [1, 2_250_000_000, 2])  # violations, distance in nano-units, clients
    policy.signal(WorkerView((near, np.array([1, 0, 0, 0], np.float32)), r), out)
    np.testing.assert_array_equal(out, [0, 1_250_000_000, 2])  # exactly Delta is no violation
    policy.signal(WorkerView((), r), out)  # none of this worker's clients trains this round
    np.testing.assert_array_equal(out, [0, 0, 0])
    policy.signal(WorkerView((np.array([np.nan, 0, 0, 0], np.float32),), r), out)
    assert out[0] == 1 and out[2] == 1  # a diverged client is a violation


def test_dynamic_decides_from_the_summed_check_and_counts():
    policy = _dynamic(delta=1.0)
    state = policy.init_state()
    assert list(state) == list(policy.state_keys) == ["checks", "violations", "distance"]
    assert math.isnan(state["distance"])
    synced, state = policy.decide(state, np.array([0.0, 1e9, 4.0]), final=False)
    assert not synced and state == {"checks": 1.0, "violations": 0.0, "distance": 0.25}
    synced, state = policy.decide(state, np.array([2.0, 10e9, 4.0]), final=False)
    assert synced and state == {"checks": 2.0, "violations": 2.0, "distance": 2.5}
    synced, state = policy.decide(state, np.array([0.0, 0.0, 0.0]), final=True)  # the last check point
    assert synced and state["checks"] == 3 and state["violations"] == 2 and math.isnan(state["distance"])


def test_squared_distance_is_float64_over_the_whole_vector():
    a = np.array([1e4, 1.0], np.float32)
    assert squared_distance(a, np.zeros(2, np.float32)) == 1e8 + 1.0


@pytest.mark.parametrize("delta", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_dynamic_refuses_a_delta_that_is_no_positive_number(delta):
    with pytest.raises(ValueError, match=r"^delta must be a number > 0"):
        DynamicParams(delta=delta).check()


# ------------------------------------------------------------------ information

def _information(**values):
    return build_policy("information", InformationParams(**values))


def test_information_measures_the_head_bound_lost_by_averaging_and_its_paired_standard_error():
    policy = _information(examples=4)
    local, global_model = np.ones(3, np.float32), np.zeros(3, np.float32)
    asked = []

    def log_q(theta, n):
        asked.append(n)
        # ln q' per example; the differences local - global are 0.1, 0.2, 0.3, 0.4: mean 0.25,
        # sample variance 1/60, standard error^2 = (1/60) / 4.
        return np.log([0.5, 0.4, 0.9, 0.8]) + (np.array([0.1, 0.2, 0.3, 0.4]) if theta is local else 0.0)

    out = np.full(3, -1.0)
    policy.measure(WorkerView((), global_model, local, log_q), out)
    np.testing.assert_array_equal(out, [250_000_000, round(1e9 / 240), 1])
    assert asked == [4, 4]
    policy.measure(WorkerView((), global_model, None, log_q), out)  # no client of it trained
    np.testing.assert_array_equal(out, [0, 0, 0])


def _measured(policy, state, losses, se=0.0):
    """The state after a measurement of these workers' losses, each with standard error se."""
    return policy.measured(state, np.array([sum(to_fixed(x) for x in losses), to_fixed(se * se) * len(losses),
                                            len(losses)]))


def test_information_doubles_the_period_while_averaging_is_harmless_and_halves_it_when_not():
    policy = _information(threshold=0.05, z=0.0, min_period=1, max_period=4)
    state = policy.init_state()
    assert state["period"] == 1 and state["since"] == 0 and math.isnan(state["loss"])
    decisions = []

    def check(final=False):
        nonlocal state
        synced, state = policy.decide(state, np.zeros(0), final)
        decisions.append(synced)

    def measured(losses):
        nonlocal state
        state = _measured(policy, state, losses)

    check()
    measured([0.03, 0.01])  # mean 0.02 <= 0.05: harmless
    assert state["period"] == 2 and state["loss"] == pytest.approx(0.02, abs=1e-12) and state["loss_se"] == 0
    check(), check()
    measured([0.0, -0.01])  # averaging helped
    assert state["period"] == 4
    for _ in range(4):
        check()
    measured([0.0])
    assert state["period"] == 4  # max_period
    for _ in range(4):
        check()
    measured([0.2, 0.0])  # mean 0.1 > 0.05: averaging destroyed information
    assert state["period"] == 2 and state["loss"] == pytest.approx(0.1, abs=1e-12)
    check(final=True)  # the last check point is a sync point whatever the period (here 2)
    assert decisions == [True, False, True] + [False, False, False, True] * 2 + [True]
    assert state["measured"] == 4 and state["since"] == 0
    measured([1.0])
    measured([1.0])
    assert state["period"] == 1  # min_period
    before = dict(state)
    state = policy.measured(state, np.array([0.0, 0.0, 0.0]))  # no worker had a say: nothing learnt
    assert state == dict(before, measured=before["measured"] + 1)


def test_information_moves_the_period_only_on_evidence_beyond_z_standard_errors():
    policy = _information(threshold=0.05, z=2.0, min_period=1, max_period=16)
    state = dict(policy.init_state(), period=4.0)
    # Two workers, each loss with standard error 0.02: the mean's is 0.02 / sqrt(2).
    se = 0.02 / math.sqrt(2)
    state = _measured(policy, state, [0.04, 0.04], se=0.02)  # 0.04 + 2 se = 0.068 > 0.05: cannot tell
    assert state["period"] == 4 and state["loss_se"] == pytest.approx(se, rel=1e-6)
    state = _measured(policy, state, [0.07, 0.07], se=0.02)  # 0.07 - 2 se = 0.042 <= 0.05: cannot tell
    assert state["period"] == 4
    state = _measured(policy, state, [0.09, 0.09], se=0.02)  # 0.09 - 2 se = 0.062 > 0.05: harmful
    assert state["period"] == 2
    state = _measured(policy, state, [0.0, 0.01], se=0.01)  # 0.005 + 2 (0.01 / sqrt 2) = 0.019: harmless
    assert state["period"] == 4
    state = _measured(policy, state, [0.06, 0.06], se=0.0)  # no sampling error: the plain rule
    assert state["period"] == 2


@pytest.mark.parametrize("values,key", [
    ({"threshold": 0}, "threshold"), ({"threshold": -0.1}, "threshold"), ({"z": -1.0}, "z"),
    ({"z": float("nan")}, "z"), ({"examples": 1}, "examples"),
    ({"min_period": 0}, "min_period"), ({"min_period": 4, "max_period": 2}, "max_period")])
def test_information_refuses_parameters_out_of_range_naming_them(values, key):
    with pytest.raises(ValueError, match=rf"^{key} must be"):
        InformationParams(**values).check()


def test_fixed_point_values_sum_exactly_in_any_order():
    """What lets MPI's reduction tree and the reference's loop agree bit for bit."""
    rng = np.random.default_rng(0)
    values = np.array([to_fixed(x) for x in rng.normal(0, 1.0, 50)])
    sums = {float(np.sum(rng.permutation(values))) for _ in range(20)}
    assert len(sums) == 1 and all(v == int(v) for v in values)
    assert to_fixed(0.25) == 250_000_000 and FIXED == 1e-9


# ------------------------------------------------------------------ every registered policy

@pytest.mark.parametrize("name", list(SYNC_POLICIES))
def test_policy_contract(name):
    policy = build_policy(name)
    state = policy.init_state()
    assert list(state) == list(policy.state_keys) and all(isinstance(v, float) for v in state.values())
    frozen = dict(state)
    rng = np.random.default_rng(1)
    models = tuple(rng.normal(0, 1, 10).astype(np.float32) for _ in range(2))
    view = WorkerView(models, np.zeros(10, np.float32), models[0], lambda theta, n: np.log(np.abs(theta[:4]) + 0.1))
    signal = np.full(len(policy.check_values), np.nan)
    policy.signal(view, signal)
    measure = np.full(len(policy.measure_values), np.nan)
    policy.measure(view, measure)
    for values in (signal, measure):  # integers only: exact sums in any order
        assert np.isfinite(values).all() and (values == np.rint(values)).all()
    synced, after = policy.decide(state, signal, final=True)
    assert synced and list(after) == list(policy.state_keys)
    assert policy.decide(state, signal, final=True) == (synced, after)  # deterministic
    after = policy.measured(after, measure)
    assert list(after) == list(policy.state_keys)
    assert state == frozen  # the caller's state is never changed in place
    assert isinstance(policy.describe(after), str)


# ------------------------------------------------------------------ the job file

def test_sync_policy_section_names_a_registered_policy_with_its_parameters():
    assert config.from_dict({}).sync.policy.name == "periodic"
    cfg = config.from_dict({"sync": {"every": 4, "policy": {"name": "dynamic", "delta": 0.5}}})
    assert (cfg.sync.policy.name, cfg.sync.policy.delta, cfg.sync.every) == ("dynamic", 0.5, 4)
    assert config.from_dict(config.to_dict(cfg)) == cfg  # the resolved YAML round-trips
    assert config.from_dict({"sync": {"policy": "information"}}).sync.policy.params == InformationParams()
    cfg = config.load(None, ["sync.policy.name=information", "sync.policy.threshold=0.1"])
    assert cfg.sync.policy.threshold == 0.1
    for name in SYNC_POLICIES:
        assert config.from_dict({"sync": {"policy": name}}).sync.policy.params == SYNC_POLICIES[name].params()


@pytest.mark.parametrize("raw,message", [
    ({"policy": "sometimes"}, "config: sync.policy.name must be one of periodic, dynamic, information; "
                              "got 'sometimes'"),
    ({"policy": {"name": "dynamic", "delta": 0}}, "config: sync.policy.delta must be a number > 0"),
    ({"policy": {"name": "dynamic", "delta": -2}}, "config: sync.policy.delta must be a number > 0"),
    ({"policy": {"name": "dynamic", "delta": "far"}}, "config: sync.policy.delta must be a number, got 'far'"),
    ({"policy": {"name": "information", "threshold": 0}}, "config: sync.policy.threshold must be a number > 0"),
    ({"policy": {"name": "information", "min_period": 3, "max_period": 2}},
     "config: sync.policy.max_period must be an integer >= min_period (3), got 2"),
    ({"policy": {"name": "periodic", "delta": 1}}, "config: unknown key 'sync.policy.delta' for sync.policy "
                                                   "'periodic'; allowed: name"),
])
def test_bad_sync_policy_input_is_one_line_naming_the_key(raw, message):
    with pytest.raises(UsageError) as err:
        config.from_dict({"sync": raw})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_a_cosine_schedule_needs_periodic_sync():
    config.from_dict({"train": {"lr_schedule": "cosine"}})
    with pytest.raises(UsageError, match="train.lr_schedule 'cosine' needs the number of sync points in advance, "
                                         "and sync.policy 'dynamic'"):
        config.from_dict({"train": {"lr_schedule": "cosine"}, "sync": {"policy": "dynamic"}})


def test_information_needs_a_probe_of_two_examples():
    with pytest.raises(UsageError, match="data.probe_size must be at least 2 with sync.policy 'information'"):
        config.from_dict({"data": {"probe_size": 1, "eval_size": 0}, "sync": {"policy": "information"}})


def test_every_job_file_without_a_policy_is_periodic():
    from conftest import ROOT
    for path in sorted((ROOT / "jobs").glob("*.yaml")):
        assert config.load(str(path)).sync.policy.name == "periodic", path


# ------------------------------------------------------------------ check points of the schedule

def test_runtime_logging_of_sync_points_matches_the_periodic_schedule():
    for trace_every, mi_every, total in ((1, 1, 10), (2, 1, 7), (3, 2, 20), (1, 3, 10)):
        s = Schedule(total_steps=total, sync_every=1, trace_every=trace_every, mi_every=mi_every, mi_on=True)
        n = s.num_rounds
        logged = [i for i in range(n) if (i + 1) % trace_every == 0 or i == n - 1]  # every k-th and the last
        for i in range(s.num_rounds):
            final = i == s.num_rounds - 1
            assert s.logs(i, final) == (i in logged)
            assert s.mi_at(i, final) == (i in logged and (logged.index(i) % mi_every == 0 or final))
            if s.logs(i, final):
                assert logged.index(i) == i // trace_every  # the row of a logged sync point


def test_dynamic_runs_log_the_sync_points_they_make():
    s = Schedule(total_steps=100, sync_every=10, trace_every=2, mi_every=2, mi_on=True)
    assert s.num_checks == 10
    # Sync points made at run time, say 0..4; the 5th is at the last check point.
    assert [i for i in range(5) if s.logs(i, final=i == 4)] == [1, 3, 4]
    assert [i for i in range(5) if s.mi_at(i, final=i == 4)] == [1, 4]  # rows 0 and 2 (the last)


def test_interval_steps_count_the_sampled_clients_of_the_round_under_way():
    cfg = config.from_dict({"data": {"name": "synthetic", "samples_per_worker": 64, "probe_size": 8},
                            "clients": {"total": 4, "per_round": 2}, "train": {"batch_size": 8, "epochs": 2},
                            "sync": {"every": 3}})
    plan = make_plan(cfg, np.repeat(np.arange(10), 100), 100, 2)
    steps = plan.interval_steps(5, 1)  # check point 5 in round 1: the last interval, 16 - 15 = 1 step
    np.testing.assert_array_equal(np.flatnonzero(steps), plan.sampled(1))
    assert set(steps[steps > 0]) == {1}
    np.testing.assert_array_equal(plan.steps_in(2), plan.interval_steps(2, 2))


def test_position_counts_check_points_and_sync_points_and_survives_a_checkpoint():
    policy = _information(min_period=2)
    position = Position.start(policy)
    assert [position.decide(policy, np.zeros(0), final=False) for _ in range(4)] == [False, True, False, True]
    assert (position.next_check, position.syncs) == (4, 2)
    position.measured(policy, np.array([0.0, 0.0, 1.0]))
    again = Position.restore(position.saved())
    assert (again.next_check, again.syncs, again.policy_state) == (4, 2, position.policy_state)
    bufs = PolicyBuffers(3, with_stop=True)
    bufs.values[:] = 1
    bufs.set_stop(True)
    assert bufs.send.tolist() == [1, 1, 1, 1] and not bufs.stopping
    bufs.recv[:] = bufs.send
    assert bufs.stopping and bufs.summed.tolist() == [1, 1, 1]


def test_console_counts_steps_and_sync_points_when_the_policy_decides_them(capsys, monkeypatch):
    clock = iter([0.0, 0.0, 5.0, 10.0, 10.0])
    monkeypatch.setattr("fedmpi.console.time.perf_counter", lambda: next(clock))
    console = Console("job", num_rounds=None, total_steps=400, live=False)
    console.start("header")
    console.check_point(100)
    console.sync_point(0, 200)
    console.round(0, 1.0, 0.5, np.array([0.4, 0.6]), np.array([0.5, 0.5]))
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("[job] step 200/400, 1 sync points  round 1: epoch 1.00  test 0.500")
    assert line.endswith("20.0 steps/s  eta 0:10")


# ------------------------------------------------------------------ a round in segments

def _cfg(**sections) -> config.Config:
    return small_config(16, 16, **sections)


def _group(cfg, sizes=(64, 48)):
    return small_group(cfg, sizes, 32, 16)


@pytest.mark.parametrize("algorithm", ["fedavg", "scaffold"])
def test_a_round_in_segments_is_the_round_in_one_piece(algorithm):
    cfg = _cfg(algorithm={"name": algorithm})
    whole, _, _ = _group(cfg)
    parts, _, _ = _group(cfg)
    a = np.empty(whole.algorithm.contribution_size, np.float32)
    b = np.empty_like(a)
    for _ in range(2):  # two rounds, so SCAFFOLD's variates of the first (K = 8 steps) are used in the second
        loss_whole = whole.train_round({0, 1}, 8, a, "w", lr=0.05)
        parts.begin_round({0, 1}, lr=0.05)
        parts.train_segment(3, "w")
        assert parts.in_round and len(parts.round_models()) == 2
        parts.train_segment(5, "w")
        loss_parts = parts.finish_round(b)
        np.testing.assert_array_equal(a, b)
        assert loss_parts == pytest.approx(loss_whole, rel=1e-6) and not parts.in_round


def test_a_checkpoint_in_mid_round_resumes_exactly():
    cfg = _cfg(train={"optimizer_state": "reset"}, algorithm={"name": "scaffold"})
    straight, _, _ = _group(cfg)
    out = np.empty(straight.algorithm.contribution_size, np.float32)
    straight.train_round({0, 1}, 4, out, "w")
    straight.begin_round({1}, lr=0.02)
    straight.train_segment(3, "w")
    saved = straight.state()
    assert saved["round"]["clients"] == [1] and saved["round"]["steps"] == [3]
    straight.train_segment(2, "w")
    loss = straight.finish_round(out)
    resumed, _, _ = _group(cfg)
    resumed.load_state(saved)
    assert resumed.in_round
    resumed.train_segment(2, "w")
    again = np.empty_like(out)
    assert resumed.finish_round(again) == loss
    np.testing.assert_array_equal(again, out)
    assert "round" not in resumed.state()


def test_the_views_a_worker_shows_its_policy():
    group, ex, ey = _group(_cfg())
    out = np.empty(group.algorithm.contribution_size, np.float32)
    group.begin_round({0, 1})
    group.train_segment(2, "w")
    view = observe.check_view(group)
    assert len(view.models) == 2 and view.global_model is group.server["theta"]
    group.finish_round(out)
    group.aggregate(out)
    view = observe.sync_view(group, ex[:16], ey[:16])
    np.testing.assert_array_equal(view.local, group.local_theta.numpy())
    local, avg = group.evaluate(ex, ey, 16, want_z=False)
    plain = dict(zip(("head_local", "head_averaged"), probe_bounds(ey[:16].numpy(), local, avg)[[5, 10]]))
    labels = ey[:16].numpy()
    from fedmpi.info.bounds import variational_bound
    head = {which: variational_bound(view.log_q(theta, 16), labels).value
            for which, theta in (("head_local", view.local), ("head_averaged", view.global_model))}
    if len(np.unique(labels)) == 10:  # every class present: the trace's head bound (/bounds/head_*)
        assert head == pytest.approx(plain, abs=1e-12)
    else:  # restricted to the labels present: a valid bound, never below the plain one
        assert all(head[k] >= plain[k] - 1e-12 for k in plain)
    np.testing.assert_array_equal(view.log_q(view.global_model, 100), view.log_q(view.global_model, 16))  # all
    assert len(view.log_q(view.global_model, 8)) == 8


def test_the_head_bound_is_restricted_to_the_labels_present():
    logits = torch.tensor([[0.0, math.log(3.0), 0.0], [0.0, 0.0, 5.0]], dtype=torch.float64)
    # Labels {0, 1} present: softmax over classes 0 and 1 only; class 2 is left out.
    np.testing.assert_allclose(observe.restricted_log_prob(logits, np.array([0, 1])),
                               [math.log(0.25), math.log(0.5)], rtol=1e-15)
    np.testing.assert_allclose(observe.restricted_log_prob(logits, np.array([1, 1])), [0.0, 0.0])
    full = torch.log_softmax(logits.double(), dim=1)
    np.testing.assert_allclose(observe.restricted_log_prob(logits, np.array([0, 2])),
                               [math.log(0.5), float(full[1, 2] - torch.logsumexp(full[1, [0, 2]], 0))],
                               rtol=1e-12)
    every = torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    np.testing.assert_array_equal(observe.restricted_log_prob(every, np.array([2, 0, 1])),
                                  torch.log_softmax(every, dim=1)[[0, 1, 2], [2, 0, 1]].numpy())
