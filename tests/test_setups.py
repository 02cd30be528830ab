"""The field's standard setups (issue 15), in process: augmentation, the epoch unit of sync.every,
optimizer reset, learning-rate schedules, uniform weighting, the shards partition and their bad input."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fedmpi import config
from fedmpi.augment import crop_flip
from fedmpi.errors import UsageError
from fedmpi.local import check_plugins
from fedmpi.partition import partition
from fedmpi.plan import Schedule, label_counts, make_plan

from conftest import small_config, small_group


# ------------------------------------------------------------------ augmentation


def test_crop_flip_keeps_the_shape_and_draws_from_the_generator_alone():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    a = crop_flip(x, torch.Generator().manual_seed(5))
    b = crop_flip(x, torch.Generator().manual_seed(5))
    assert a.shape == x.shape and a.dtype == x.dtype
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(x, torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8))  # input unchanged


def test_crop_flip_is_exactly_a_crop_of_the_reflected_image_then_a_flip():
    x = torch.arange(4 * 1 * 5 * 6, dtype=torch.float32).reshape(4, 1, 5, 6)  # (B, C, H, W)
    got = crop_flip(x, torch.Generator().manual_seed(0), pad=2)
    # The same draws, in the documented order: offsets (2, B) in [0, 2 pad], then flip bits (B,).
    gen = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 5, (2, 4), generator=gen)
    flips = torch.randint(0, 2, (4,), generator=gen).bool()
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    for b in range(4):
        top, left = int(offsets[0, b]), int(offsets[1, b])
        want = padded[b, :, top:top + 5, left:left + 6]
        if flips[b]:
            want = want.flip(-1)
        torch.testing.assert_close(got[b], want, rtol=0, atol=0)
    assert flips.any() and not flips.all()  # seed 0 exercises both branches


def test_crop_flip_without_padding_only_flips():
    x = torch.arange(8 * 2 * 3 * 3, dtype=torch.float32).reshape(8, 2, 3, 3)
    got = crop_flip(x, torch.Generator().manual_seed(1), pad=0)
    for b in range(8):
        assert torch.equal(got[b], x[b]) or torch.equal(got[b], x[b].flip(-1))
    assert not torch.equal(got, x)


# ------------------------------------------------------------------ a small worker, in process

def _cfg(**sections) -> config.Config:
    return small_config(4, 32, **sections)


def _group(cfg, sizes=(100,)):
    """One worker holding clients of the given sizes (in id order), on synthetic data."""
    return small_group(cfg, sizes, 8, 4)


def test_augmentation_changes_training_but_never_evaluation():
    plain, ex, ey = _group(_cfg())
    augmented, _, _ = _group(_cfg(data={"augment": "crop-flip"}))
    out = np.empty(plain.algorithm.contribution_size, np.float32)
    plain.train_round({0}, 2, out, "w")
    a = out.copy()
    augmented.train_round({0}, 2, out, "w")
    assert not np.array_equal(a, out)  # the batches differed
    drawn = augmented.clients[0].augment_gen.get_state()
    first = augmented.evaluate(ex, ey, 4, want_z=True)
    again = augmented.evaluate(ex, ey, 4, want_z=True)
    assert torch.equal(augmented.clients[0].augment_gen.get_state(), drawn)  # evaluation draws nothing
    assert first[1].accuracy == again[1].accuracy and torch.equal(first[1].z_probe, again[1].z_probe)
    # The same global model evaluates alike with and without augmentation configured.
    plain.server = {"theta": augmented.server["theta"].copy()}
    plain.local_theta = augmented.local_theta
    for p, q in zip(plain.evaluate(ex, ey, 4, True), first):
        assert p.accuracy == q.accuracy and p.loss == q.loss and torch.equal(p.z_probe, q.z_probe)


def test_augmentation_generator_is_in_the_checkpoint_state_so_resume_is_exact():
    cfg = _cfg(data={"augment": "crop-flip"})
    straight, _, _ = _group(cfg)
    out = np.empty(straight.algorithm.contribution_size, np.float32)
    straight.train_round({0}, 3, out, "w")
    saved = straight.state()
    straight.train_round({0}, 3, out, "w")
    resumed, _, _ = _group(cfg)
    resumed.load_state(saved)
    again = np.empty_like(out)
    resumed.train_round({0}, 3, again, "w")
    np.testing.assert_array_equal(again, out)
    assert "augment_generator" in saved["clients"][0]


def test_crop_flip_on_inputs_that_are_no_images_is_one_line_naming_the_key():
    with pytest.raises(UsageError, match="data.augment 'crop-flip' needs images"):
        check_plugins(_cfg(data={"augment": "crop-flip"}), (3, 4, 4), 10, 1)


# ------------------------------------------------------------------ the epoch unit

def _plan(cfg, labels, num_workers=2):
    return make_plan(cfg, labels, 16, num_workers)


def test_epoch_unit_a_client_of_100_at_batch_32_takes_4_steps_per_epoch():
    cfg = _cfg(data={"samples_per_worker": 100}, train={"epochs": 3}, sync={"unit": "epochs", "every": 1})
    plan = _plan(cfg, np.repeat(np.arange(10), 30))
    s = plan.schedule
    assert s.epoch_steps == (4, 4) and s.num_rounds == 3
    assert [s.step(i) for i in range(3)] == [4, 8, 12]
    assert s.client_steps(0) == (4, 4)
    group, _, _ = _group(cfg, (100,))
    out = np.empty(group.algorithm.contribution_size, np.float32)
    client = group.clients[0]
    group.train_round({0}, s.client_steps(0), out, "w")
    assert (client.epochs_started, client.pos) == (1, 128)  # 4 batches: exactly one pass over the 100
    group.train_round({0}, s.client_steps(1), out, "w")
    assert (client.epochs_started, client.pos) == (2, 128)


def test_epoch_unit_clients_of_different_sizes_in_one_worker_take_their_own_steps():
    labels = np.array([0] * 100 + [1] * 40)  # shards with one class each: clients of 100 and 40 examples
    cfg = _cfg(data={"partition": "shards", "classes_per_client": 1}, clients={"total": 2},
               train={"epochs": 4}, sync={"unit": "epochs", "every": 2})
    plan = _plan(cfg, labels, num_workers=1)
    assert [len(plan.workers[0].shard[sl]) for sl in plan.workers[0].client_slices] == [100, 40]
    s = plan.schedule
    assert s.epoch_steps == (4, 2) and s.num_rounds == 2 and s.step(1) == 16
    assert s.client_steps(0) == (8, 4)
    np.testing.assert_array_equal(plan.steps_through(1), [16, 8])
    group, _, _ = _group(cfg, (100, 40))
    out = np.empty(group.algorithm.contribution_size, np.float32)
    group.train_round({0, 1}, s.client_steps(0), out, "w")
    assert [(c.epochs_started, c.pos) for c in group.clients] == [(2, 128), (2, 64)]


def test_batches_unit_is_the_old_schedule():
    cfg = _cfg(data={"samples_per_worker": 100}, train={"epochs": 3}, sync={"every": 5})
    s = _plan(cfg, np.repeat(np.arange(10), 30)).schedule
    assert (s.total_steps, s.sync_every, s.num_rounds) == (12, 5, 3)
    assert [s.client_steps(i) for i in range(3)] == [(5, 5), (5, 5), (2, 2)]


# ------------------------------------------------------------------ optimizer state, lr, weighting

def test_optimizer_reset_leaves_no_momentum_after_a_sync_point():
    for mode, fresh in (("keep", False), ("reset", True)):
        group, _, _ = _group(_cfg(train={"optimizer_state": mode}))
        out = np.empty(group.algorithm.contribution_size, np.float32)
        group.train_round({0}, 2, out, "w")
        buffer = group.clients[0].opt.buf  # the momentum of every parameter, one vector
        if fresh:  # nothing left: the next step starts momentum from its own gradient, as from zero
            assert buffer is None
        else:
            slots = [slot for slot in group.clients[0].flat.slots if slot.trainable]
            assert buffer is not None
            assert all(buffer[slot.offset:slot.offset + slot.numel].abs().sum() > 0 for slot in slots)


def test_reset_optimizer_round_equals_a_fresh_client_from_the_same_model():
    cfg = _cfg(train={"optimizer_state": "reset"})
    group, _, _ = _group(cfg)
    out = np.empty(group.algorithm.contribution_size, np.float32)
    group.train_round({0}, 2, out, "w")
    group.aggregate(out)
    fresh, _, _ = _group(cfg)
    fresh.load_state(group.state())
    fresh.clients[0].opt.reset()
    a, b = np.empty_like(out), np.empty_like(out)
    group.train_round({0}, 2, a, "w")
    fresh.train_round({0}, 2, b, "w")
    np.testing.assert_array_equal(a, b)


def test_lr_schedules_give_exact_values():
    base = dict(total_steps=100, sync_every=10, trace_every=1, mi_every=1, lr=0.1)
    constant = Schedule(**base)
    assert [constant.learning_rate(i) for i in range(10)] == [0.1] * 10
    step = Schedule(**base, lr_schedule="step", lr_step=3, lr_gamma=0.5)
    assert [step.learning_rate(i) for i in range(7)] == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]
    cosine = Schedule(total_steps=40, sync_every=10, trace_every=1, mi_every=1, lr=0.1, lr_schedule="cosine")
    np.testing.assert_allclose([cosine.learning_rate(i) for i in range(4)],
                               [0.1, 0.1 * (1 + math.sqrt(0.5)) / 2, 0.05, 0.1 * (1 - math.sqrt(0.5)) / 2],
                               rtol=1e-15)


def test_round_lr_reaches_the_optimizer_and_local_work():
    seen = []
    group, _, _ = _group(_cfg(algorithm={"name": "scaffold"}))
    contribute = group.algorithm.contribute
    group.algorithm.contribute = lambda work, *a: (seen.append(work.lr), contribute(work, *a))[1]
    out = np.empty(group.algorithm.contribution_size, np.float32)
    group.train_round({0}, 1, out, "w", lr=0.0125)
    assert seen == [0.0125] and group.clients[0].opt.lr == 0.0125


def test_uniform_weighting_gives_every_sampled_client_weight_one():
    sums = {}
    for weighting in ("examples", "uniform"):
        group, _, _ = _group(_cfg(clients={"total": 2, "weighting": weighting}), (100, 40))
        out = np.empty(group.algorithm.contribution_size, np.float32)
        group.train_round({0, 1}, 1, out, "w")
        thetas = [c.flat.vector.detach().numpy() for c in group.clients]
        sums[weighting] = out[-1]
        w = (100, 40) if weighting == "examples" else (1, 1)
        want = np.float32(w[0]) * thetas[0]
        want += np.float32(w[1]) * thetas[1]
        np.testing.assert_array_equal(out[:-1], want)
    assert sums == {"examples": 140.0, "uniform": 2.0}


# ------------------------------------------------------------------ shards ("#C=k") and label counts

LABELS = np.repeat(np.arange(10), 50)


@pytest.mark.parametrize("k", [1, 2, 5])
def test_shards_give_each_client_k_classes_and_cover_every_class(k):
    shards = partition(LABELS, 10, "shards", seed=4, classes_per_client=k)
    assert [len(np.unique(LABELS[s])) for s in shards] == [k] * 10
    everything = np.concatenate(shards)
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(LABELS)))  # 10 clients hold every class
    again = partition(LABELS, 10, "shards", seed=4, classes_per_client=k)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again))


def test_label_counts_follow_the_plan():
    cfg = _cfg(data={"partition": "shards", "classes_per_client": 2}, clients={"total": 4}, train={"batch_size": 8})
    plan = _plan(cfg, LABELS)
    counts = label_counts(plan, LABELS, 10)
    assert counts.shape == (4, 10) and counts.dtype == np.int64
    assert ((counts > 0).sum(axis=1) == 2).all()
    for w in plan.workers:
        for cid, sl in zip(w.client_ids, w.client_slices):
            assert counts[cid].sum() == sl.stop - sl.start



def test_analyze_prints_each_client_with_its_worker_counted_from_one():
    """The label table counts clients and workers from 1, as the console and every message do."""
    import io
    import types

    from rich.console import Console

    from fedmpi.analysis.summary import print_label_counts
    counts = np.array([[3, 0], [0, 5], [1, 1]], dtype=np.int64)
    trace = types.SimpleNamespace(label_counts=counts, client_owner=np.array([0, 0, 1]),
                                  client_steps=np.array([[4, 6, 2]]), rounds=[0])
    buf = io.StringIO()
    print_label_counts(trace, Console(file=buf, width=120))
    rows = [line.strip("│ ").split() for line in buf.getvalue().splitlines() if line.startswith("│")]
    assert [r[0] for r in rows] == ["1", "2", "3"]  # clients
    assert [r[2] for r in rows] == ["1", "1", "2"]  # their workers (owner + 1)
    assert [r[4] for r in rows] == ["3", "5", "2"]  # examples


# ------------------------------------------------------------------ bad input

@pytest.mark.parametrize("raw,message", [
    ({"sync": {"unit": "hours"}}, "config: sync.unit must be one of batches, epochs; got 'hours'"),
    ({"data": {"augment": "mixup"}}, "config: data.augment must be one of none, crop-flip; got 'mixup'"),
    ({"data": {"probe_from": "train"}}, "config: data.probe_from must be one of shard, test; got 'train'"),
    ({"train": {"lr_schedule": "linear"}}, "config: train.lr_schedule must be one of constant, step, cosine"),
    ({"train": {"optimizer_state": "zero"}}, "config: train.optimizer_state must be one of keep, reset"),
    ({"clients": {"weighting": "loss"}}, "config: clients.weighting must be one of examples, uniform"),
    ({"train": {"lr_step": 0}}, "config: train.lr_step must be an integer >= 1, got 0"),
    ({"train": {"lr_gamma": 1.5}}, "config: train.lr_gamma must be a number in (0, 1], got 1.5"),
    ({"data": {"classes_per_client": 0}}, "config: data.classes_per_client must be an integer >= 1, got 0"),
])
def test_bad_setup_keys_are_one_line_naming_the_key(raw, message):
    with pytest.raises(UsageError) as err:
        config.from_dict(raw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_classes_per_client_above_the_classes_is_one_line_naming_the_key():
    cfg = _cfg(data={"partition": "shards", "classes_per_client": 11})
    with pytest.raises(UsageError, match=r"data.classes_per_client must be an integer in 1\.\.10 .*got 11"):
        check_plugins(cfg, (3, 32, 32), 10, 2)
    with pytest.raises(UsageError, match=r"data.classes_per_client must be an integer in 1\.\.10 .*got 11"):
        _plan(cfg, LABELS)


def test_a_client_too_small_for_one_batch_is_one_line_naming_the_key():
    cfg = _cfg(data={"samples_per_worker": 40}, train={"batch_size": 64})
    with pytest.raises(UsageError, match="train.batch_size=64 is more than the 40 examples of client 1"):
        _plan(cfg, LABELS)
