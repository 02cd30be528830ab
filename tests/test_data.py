"""Datasets: the CIFAR-10 reader and its memory-mapped cache, and inputs normalised per batch."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from fedmpi import data
from fedmpi.errors import UsageError
from fedmpi.inputs import Inputs


def fake_cifar(root, per_batch=6, seed=0):
    """A cifar-10-batches-py folder of tiny batches (per_batch images each) under root."""
    rng = np.random.default_rng(seed)
    folder = root / data.CIFAR10_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name in data.CIFAR10_FILES:
        batch = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in rng.integers(0, 10, per_batch)]}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)
    return root


def arrays(ds):
    return [np.asarray(getattr(ds, k)) for k in data.CACHE_ARRAYS]


def test_cache_holds_the_batches_exactly_and_is_mapped(tmp_path):
    root = fake_cifar(tmp_path)
    from_batches = data.load_cifar10(str(root))  # no cache yet: read from the pickles
    assert from_batches.maps == ()
    data.write_cache(str(root))
    cached = data.load_cifar10(str(root))
    assert len(cached.maps) == len(data.CACHE_ARRAYS)
    for a, b in zip(arrays(cached), arrays(from_batches)):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert cached.train_x.shape == (30, 3, 32, 32) and cached.test_x.shape == (6, 3, 32, 32)
    cached.release()  # pages handed back; reading maps them again
    assert np.array_equal(cached.train_x, from_batches.train_x)


def test_cache_of_changed_batches_is_passed_over_and_rewritten(tmp_path):
    root = fake_cifar(tmp_path, seed=1)
    data.write_cache(str(root))
    fake_cifar(tmp_path, seed=2)  # new batches under the same names (new sizes or times)
    os.utime(root / data.CIFAR10_DIR / "test_batch", ns=(1, 1))
    fresh = data._read_batches(str(root))
    assert data._open_cache(str(root)) is None  # stale: not used
    assert np.array_equal(data.load_cifar10(str(root)).train_x, fresh[0])
    data.write_cache(str(root))
    assert np.array_equal(data._open_cache(str(root)).train_x, fresh[0])


def test_damaged_cache_is_passed_over(tmp_path):
    root = fake_cifar(tmp_path)
    data.write_cache(str(root))
    path = root / data.CACHE_DIR / "train_x.npy"
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    assert data._open_cache(str(root)) is None
    assert data.load_cifar10(str(root)).train_x.shape == (30, 3, 32, 32)
    data.write_cache(str(root))  # repaired
    assert data._open_cache(str(root)) is not None


def test_unwritable_cache_folder_is_passed_over(tmp_path):
    # Where the cache cannot be written (here a file blocks its folder; elsewhere a read-only
    # data folder), the batches are read at every start and nothing fails.
    root = fake_cifar(tmp_path)
    (root / data.CACHE_DIR).write_text("in the way")
    data.write_cache(str(root))
    assert (root / data.CACHE_DIR).read_text() == "in the way"
    assert data.load_cifar10(str(root)).train_x.shape == (30, 3, 32, 32)


def test_unreadable_batch_is_one_line_naming_it(tmp_path):
    root = fake_cifar(tmp_path)
    (root / data.CIFAR10_DIR / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(UsageError, match="cannot read CIFAR-10 batch .*data_batch_3"):
        data.write_cache(str(root))


def test_inputs_normalise_each_batch_exactly_as_the_whole():
    root_ds = data.Dataset("cifar10", np.random.default_rng(3).integers(0, 256, (40, 3, 32, 32), dtype=np.uint8),
                           np.zeros(40, np.int64), np.zeros((1, 3, 32, 32), np.uint8), np.zeros(1, np.int64), 10,
                           data.CIFAR10_MEAN, data.CIFAR10_STD)
    whole = root_ds.to_tensor(root_ds.train_x)  # (40, 3, 32, 32) float32
    x = root_ds.inputs(root_ds.train_x)
    assert x.raw.dtype == torch.uint8 and len(x) == 40
    idx = torch.tensor([7, 0, 39, 7])
    batch = x.take(idx)
    assert torch.equal(batch, whole.index_select(0, idx))
    assert batch.is_contiguous(memory_format=torch.channels_last)  # the layout training runs fastest in
    flipped = x.take(idx, lambda b: b.flip(3))  # augmentation sees (B, C, H, W) before the layout
    assert torch.equal(flipped, whole.index_select(0, idx).flip(3))
    assert flipped.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x.rows(5, 17), whole[5:17])
    sub = x[torch.tensor([3, 9])]
    assert torch.equal(sub.all(), whole[[3, 9]])
    assert torch.equal(x[2:6].all(), whole[2:6])


def test_float_inputs_pass_through():
    t = torch.randn(8, 3, 4, 4)
    x = Inputs.of(t)
    assert torch.equal(x.take(torch.tensor([1, 5])), t[[1, 5]])
    assert torch.equal(x.rows(0, 8), t)
    assert Inputs.of(x) is x


def test_test_subset_is_fixed_and_the_last_round_tests_on_everything():
    from fedmpi import config
    from fedmpi.plan import make_plan
    cfg = config.from_dict({"data": {"name": "synthetic", "samples_per_worker": 64, "probe_size": 16,
                                     "eval_size": 32, "test_size": 300, "test_subset": 50},
                            "train": {"epochs": 2, "batch_size": 16}, "sync": {"every": 2}})
    labels = np.zeros(128, np.int64)
    plan = make_plan(cfg, labels, 1000, 2)
    again = make_plan(cfg, labels, 1000, 2)
    assert len(plan.test_subset) == 50 and np.array_equal(plan.test_subset, again.test_subset)
    assert np.all(np.diff(plan.test_subset) > 0) and plan.test_subset.max() < 300
    assert [plan.full_test(final) for final in (False, True)] == [False, True]
    off = make_plan(config.from_dict({**config.to_dict(cfg), "data": {**config.to_dict(cfg)["data"],
                                                                     "test_subset": 0}}), labels, 1000, 2)
    assert len(off.test_subset) == 0 and off.full_test(False)


@pytest.mark.parametrize("data_cfg", [{"test_subset": -1}, {"test_size": 100, "test_subset": 101}])
def test_bad_test_subset_names_the_key(data_cfg):
    from fedmpi import config
    with pytest.raises(UsageError, match="data.test_subset") as err:
        config.from_dict({"data": data_cfg})
    assert "\n" not in str(err.value)


def test_evaluation_copy_gives_the_same_chunks_and_is_kept_only_when_small(monkeypatch):
    from fedmpi import inputs
    raw = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (20, 3, 8, 8), dtype=np.uint8))
    x = Inputs(raw, data.CIFAR10_MEAN, data.CIFAR10_STD)
    kept = x.for_evaluation()
    assert kept is not x and kept.raw.dtype == torch.float32
    assert kept.raw.is_contiguous(memory_format=torch.channels_last)
    for a, b in ((0, 7), (7, 20)):
        assert torch.equal(kept.chunk(a, b), x.chunk(a, b))
        assert x.chunk(a, b).is_contiguous(memory_format=torch.channels_last)
    assert kept.for_evaluation() is kept
    monkeypatch.setattr(inputs, "EVAL_COPY_BYTES", 20 * 3 * 8 * 8 * 4 - 1)  # one byte short
    assert x.for_evaluation() is x


def _held_out_cfg(probe_size: int, partition: str = "classes"):
    from fedmpi import config
    return config.from_dict({"data": {"name": "synthetic", "partition": partition, "probe_size": probe_size,
                                      "eval_size": 32, "probe_from": "test"},
                             "train": {"epochs": 1, "batch_size": 16}})


def test_held_out_probe_follows_each_shards_label_proportions():
    """data.probe_from: test. Worker 1 holds classes 0-4 and worker 2 classes 5-9, 31/24/20/15/10
    examples of them: each probe is test examples of its own worker's classes in the shard's
    proportions (30 x those = 9.3, 7.2, 6, 4.5, 3: the one left over goes to the largest
    remainder), without repeats, in random order, the same on every call."""
    from fedmpi.plan import make_plan
    train = np.repeat(np.arange(10), [31, 24, 20, 15, 10] * 2)
    test = np.repeat(np.arange(10), 100)
    plan = make_plan(_held_out_cfg(30), train, len(test), 2, test)
    again = make_plan(_held_out_cfg(30), train, len(test), 2, test)
    for k, w in enumerate(plan.workers):
        assert w.held_out_probe and len(w.probe_test) == 30 and len(np.unique(w.probe_test)) == 30
        np.testing.assert_array_equal(w.probe_test, again.workers[k].probe_test)
        np.testing.assert_array_equal(w.probe_indices(), w.probe_test)
        counts = np.bincount(test[w.probe_test], minlength=10)
        np.testing.assert_array_equal(counts[5 * k:5 * k + 5], [9, 7, 6, 5, 3])
        assert counts.sum() == 30
        assert not np.all(np.diff(test[w.probe_test]) >= 0)  # shuffled, not grouped by label


def test_held_out_probe_larger_than_a_class_of_the_test_set_is_one_line():
    from fedmpi.plan import make_plan
    train = np.repeat(np.arange(10), 20)
    test = np.repeat(np.arange(10), 5)  # 5 test examples per class; worker 1's probe needs 10 of each
    with pytest.raises(UsageError, match="data.probe_from=test") as err:
        make_plan(_held_out_cfg(50), train, len(test), 2, test)
    assert "data.probe_size" in str(err.value) and "\n" not in str(err.value)


def test_shard_probe_is_the_evaluation_subsets_first_examples():
    from fedmpi import config
    from fedmpi.plan import make_plan
    cfg = config.from_dict({"data": {"name": "synthetic", "probe_size": 8, "eval_size": 32},
                            "train": {"epochs": 1, "batch_size": 16}})
    plan = make_plan(cfg, np.repeat(np.arange(10), 20), 100, 2)
    for w in plan.workers:
        assert not w.held_out_probe
        np.testing.assert_array_equal(w.probe_indices(), w.shard[w.eval_positions[:8]])


def test_a_held_out_probe_may_be_larger_than_the_evaluation_subset():
    from fedmpi import config
    cfg = config.from_dict({"data": {"probe_size": 500, "eval_size": 100, "probe_from": "test"}})
    assert cfg.data.eval_size == 100
    with pytest.raises(UsageError, match="data.eval_size"):
        config.from_dict({"data": {"probe_size": 500, "eval_size": 100}})
