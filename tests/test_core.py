"""Pure parts: flat parameter vectors, weighted averaging, partitions, schedule, device choice."""

import numpy as np
import pytest
import torch

from fedmpi.algorithms.fedavg import average_from_sum, pack_contribution
from fedmpi.device import pick_device
from fedmpi.errors import UsageError
from fedmpi.flat import FlatParams, layout_arrays
from fedmpi.models import LeNet, build_model
from fedmpi.partition import partition
from fedmpi.plan import Schedule


# ------------------------------------------------------------------ flat vectors

def test_flat_params_round_trip_keeps_every_tensor():
    model = build_model("lenet", (3, 32, 32), 10, seed=3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    flat = FlatParams(model)
    assert flat.size == sum(p.numel() for p in before.values()) == 62006
    for slot in flat.slots:  # the vector holds each tensor at its slot
        got = flat.vector[slot.offset:slot.offset + slot.numel].view(slot.shape)
        assert torch.equal(got, before[slot.name])
    new = torch.arange(flat.size, dtype=torch.float32)
    flat.assign(new)
    for name, p in model.named_parameters():  # the module sees what the vector holds
        slot = next(s for s in flat.slots if s.name == name)
        assert torch.equal(p.detach().flatten(), new[slot.offset:slot.offset + slot.numel])
    layout = layout_arrays(flat.slots)
    assert layout["sizes"].sum() == flat.size and list(layout["names"][:2]) == ["conv1.weight", "conv1.bias"]


def test_optimizer_updates_the_flat_vector_in_place():
    model = build_model("lenet", (3, 32, 32), 10, seed=0)
    flat = FlatParams(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = flat.vector.clone()
    model(torch.randn(4, 3, 32, 32)).sum().backward()
    opt.step()
    assert not torch.equal(before, flat.vector)


def test_same_seed_same_init_and_global_rng_untouched():
    state = torch.get_rng_state()
    a = FlatParams(build_model("lenet", (3, 32, 32), 10, seed=7)).vector
    b = FlatParams(build_model("lenet", (3, 32, 32), 10, seed=7)).vector
    c = FlatParams(build_model("lenet", (3, 32, 32), 10, seed=8)).vector
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(state, torch.get_rng_state())


def test_lenet_representation_is_84_wide():
    logits, z = LeNet().forward_with_representation(torch.randn(5, 3, 32, 32))
    assert logits.shape == (5, 10) and z.shape == (5, 84) and (z >= 0).all()


# ------------------------------------------------------------------ averaging

def test_weighted_average_exact_values():
    thetas = np.array([[1.0, 2.0, -4.0], [3.0, 6.0, 8.0]], dtype=np.float32)
    weights = [1.0, 3.0]
    summed = sum(pack_contribution(t, w, np.empty(4, np.float32)) for t, w in zip(thetas, weights))
    # (1*1 + 3*3)/4 = 2.5, (1*2 + 3*6)/4 = 5, (1*-4 + 3*8)/4 = 5
    np.testing.assert_array_equal(average_from_sum(summed), [2.5, 5.0, 5.0])


def test_contributions_summed_like_an_allreduce_give_the_average():
    thetas = np.array([[0.5, -1.0], [1.5, 3.0], [2.0, 0.0]], dtype=np.float32)
    weights = [2, 1, 1]
    bufs = [pack_contribution(t, w, np.empty(3, np.float32)) for t, w in zip(thetas, weights)]
    np.testing.assert_array_equal(bufs[0], [1.0, -2.0, 2.0])
    summed = np.zeros(3, np.float32) + bufs[0] + bufs[1] + bufs[2]  # coordinator adds zeros
    np.testing.assert_array_equal(average_from_sum(summed), [(1 + 1.5 + 2) / 4, (-2 + 3) / 4])
    assert thetas[0, 0] == 0.5  # inputs untouched


def test_average_refuses_zero_total_weight():
    with pytest.raises(ValueError, match="total weight"):
        average_from_sum(np.zeros(4, np.float32))


# ------------------------------------------------------------------ partitions

LABELS = np.repeat(np.arange(10), 50)  # 500 examples, 50 per class


@pytest.mark.parametrize("scheme", ["iid", "classes", "dirichlet"])
def test_partition_covers_every_index_once(scheme):
    shards = partition(LABELS, 2, scheme, seed=1, alpha=0.5)
    everything = np.concatenate(shards)
    assert len(everything) == len(LABELS)
    np.testing.assert_array_equal(np.sort(everything), np.arange(len(LABELS)))


@pytest.mark.parametrize("scheme", ["iid", "classes", "dirichlet"])
def test_partition_is_reproducible_and_seed_dependent(scheme):
    a = partition(LABELS, 3, scheme, seed=5, alpha=0.3)
    b = partition(LABELS, 3, scheme, seed=5, alpha=0.3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    if scheme != "classes":  # class groups are fixed by the labels alone
        c = partition(LABELS, 3, scheme, seed=6, alpha=0.3)
        assert any(not np.array_equal(x, y) for x, y in zip(a, c))


def test_iid_halves_are_equal_and_mixed():
    shards = partition(LABELS, 2, "iid", seed=0)
    assert [len(s) for s in shards] == [250, 250]
    assert all(len(np.unique(LABELS[s])) == 10 for s in shards)


def test_class_groups_are_disjoint_five_and_five():
    shards = partition(LABELS, 2, "classes", seed=0)
    classes = [set(np.unique(LABELS[s])) for s in shards]
    assert classes == [{0, 1, 2, 3, 4}, {5, 6, 7, 8, 9}]


def test_classes_partition_refuses_more_workers_than_classes():
    with pytest.raises(UsageError, match="11 workers and 10 classes"):
        partition(LABELS, 11, "classes", seed=0)


def test_dirichlet_small_alpha_skews_labels():
    shards = partition(np.repeat(np.arange(10), 500), 4, "dirichlet", seed=0, alpha=0.05)
    # With alpha 0.05 most of each worker's examples come from few classes.
    top_share = [np.bincount(np.repeat(np.arange(10), 500)[s], minlength=10).max() / len(s) for s in shards]
    assert np.mean(top_share) > 0.4


def test_samples_per_worker_takes_that_many_and_refuses_too_many():
    shards = partition(LABELS, 2, "iid", seed=0, samples_per_worker=100)
    assert [len(s) for s in shards] == [100, 100]
    assert not set(shards[0]) & set(shards[1])
    with pytest.raises(UsageError, match="samples_per_worker=300"):
        partition(LABELS, 2, "iid", seed=0, samples_per_worker=300)


def test_more_workers_than_examples_is_a_usage_error():
    with pytest.raises(UsageError, match="workers but only"):
        partition(np.arange(3), 4, "iid", seed=0)


# ------------------------------------------------------------------ schedule and device

def test_schedule_counts_sync_points_and_the_short_last_interval():
    s = Schedule(total_steps=250, sync_every=100, trace_every=2, mi_every=1)
    assert s.num_rounds == 3
    assert [s.step(i) for i in range(3)] == [100, 200, 250]
    assert [s.steps_before(i) for i in range(3)] == [100, 100, 50]
    assert [i for i in range(3) if s.logs(i, i == 2)] == [1, 2]  # every 2nd, and always the last


def test_mi_every_counts_logged_rounds_and_keeps_the_last():
    s = Schedule(total_steps=1000, sync_every=100, trace_every=1, mi_every=3, mi_on=True)
    assert [i for i in range(10) if s.mi_at(i, i == 9)] == [0, 3, 6, 9]
    assert [i for i in range(10) if s.z_at(i, i == 9)] == [0, 3, 6, 9]


@pytest.mark.parametrize("requested,index,count,expected", [
    ("cpu", 0, 4, "cpu"), ("auto", 0, 0, "cpu"), ("auto", 1, 2, "cuda:1"),
    ("auto", 3, 2, "cuda:1"), ("cuda", 0, 1, "cuda:0"), ("cuda", 2, 1, "cuda:0"),
])
def test_pick_device_follows_node_local_worker_index(requested, index, count, expected):
    assert pick_device(requested, index, count) == expected


def test_pick_device_cuda_without_gpu_is_a_usage_error():
    with pytest.raises(UsageError, match="sees no CUDA GPU"):
        pick_device("cuda", 0, 0)


def test_thread_limit_reaches_blas_libraries_loaded_afterwards():
    # The coordinator limits threads at start; scipy's own OpenBLAS is loaded later, when an
    # MI estimator first runs. Unlimited there, the decoder ran several times slower in a run.
    import subprocess
    import sys
    code = ("import fedmpi.coordinator\n"
            "from fedmpi.device import limit_threads\n"
            "limit_threads(1)\n"
            "import scipy.optimize, scipy.spatial\n"
            "import threadpoolctl\n"
            "print(sorted({d['num_threads'] for d in threadpoolctl.threadpool_info()}))\n")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "[1]", out.stdout + out.stderr


@pytest.mark.parametrize("momentum,weight_decay", [(0.9, 0.0), (0.9, 5e-4), (0.0, 1e-3), (0.0, 0.0)])
def test_flat_sgd_is_torch_sgd_bit_for_bit(momentum, weight_decay):
    from fedmpi.flat import FlatSGD
    torch.manual_seed(0)
    ours, theirs = build_model("lenet", (3, 32, 32), 10, seed=3), build_model("lenet", (3, 32, 32), 10, seed=3)
    flat = FlatParams(ours)
    opt = FlatSGD(flat, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.05, momentum=momentum, weight_decay=weight_decay)
    x, y = torch.randn(16, 3, 32, 32), torch.randint(0, 10, (16,))
    for step in range(4):
        if step == 2:  # a reset (train.optimizer_state: reset) on both
            opt.reset()
            ref.state.clear()
        flat.grad.zero_()
        torch.nn.functional.cross_entropy(ours(x), y).backward()
        opt.step()
        ref.zero_grad()
        torch.nn.functional.cross_entropy(theirs(x), y).backward()
        ref.step()
        for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
            assert torch.equal(a, b), (step, name)


def test_flat_sgd_state_round_trips_and_reads_torch_sgd_checkpoints():
    from fedmpi.flat import FlatSGD
    model = build_model("lenet", (3, 32, 32), 10, seed=1)
    flat = FlatParams(model)
    opt = FlatSGD(flat, lr=0.1, momentum=0.9)
    flat.grad.normal_()
    opt.step()
    opt.lr = 0.025  # a round's own learning rate (train.lr_schedule) is part of the state
    again = FlatSGD(FlatParams(build_model("lenet", (3, 32, 32), 10, seed=1)), lr=0.1, momentum=0.9)
    again.load_state(opt.state(), flat.slots)
    assert torch.equal(again.buf, opt.buf) and again.lr == 0.025
    # A checkpoint of fedmpi before 2026-12-04 holds torch.optim.SGD's state_dict: one buffer per parameter.
    old = {"state": {j: {"momentum_buffer": p.detach().clone() * 0 + j} for j, p in enumerate(model.parameters())},
           "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": list(range(len(list(model.parameters()))))}]}
    again.load_state(old, flat.slots)
    assert again.lr == 0.1
    want = torch.cat([torch.full((p.numel(),), float(j)) for j, p in enumerate(model.parameters())])
    assert torch.equal(again.buf, want)
    again.load_state({"momentum_buffer": None, "lr": 0.5}, flat.slots)
    assert again.buf is None
