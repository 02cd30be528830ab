"""FedProx, SCAFFOLD and FedPVR behind the algorithm contract: exact numbers on tiny problems, no MPI.

Hand-made vectors use dyadic numbers (k / 2^n), so every float32 operation
below is exact or rounds once, and the expected values are the arithmetic
written in the comments.
"""

import copy

import numpy as np
import pytest
import torch

from fedmpi import config, data
from fedmpi.algorithms import ALGORITHMS, LocalWork, Setting, build_algorithm
from fedmpi.algorithms.fedprox import FedProxParams
from fedmpi.algorithms.fedpvr import FedPVRParams
from fedmpi.algorithms.scaffold import cut, merged_ranges, updated_variate
from fedmpi.errors import UsageError
from fedmpi.flat import FlatParams, Slot
from fedmpi.local import ClientGroup, LocalTrainer, worker_tensors
from fedmpi.models import build_model
from fedmpi.plan import WorkerData

from conftest import SMOKE

torch.set_num_threads(1)

F32 = np.float32


def layout(*tensors: tuple[str, int]) -> tuple[Slot, ...]:
    """Slots of 1-d tensors (name, numel) laid out one after another."""
    slots, offset = [], 0
    for name, n in tensors:
        slots.append(Slot(name, offset, (n,)))
        offset += n
    return tuple(slots)


def setting_for(slots, final_layers=(), num_clients=2) -> Setting:
    return Setting(sum(s.numel for s in slots), slots, tuple(final_layers), num_clients)


def vec(*values) -> np.ndarray:
    return np.array(values, dtype=F32)


# Four tensors, P = 11: body.weight [0, 6), body.bias [6, 8), head.weight [8, 10), head.bias [10, 11).
SMALL = layout(("body.weight", 6), ("body.bias", 2), ("head.weight", 2), ("head.bias", 1))
SMALL_HEAD = ("head.weight", "head.bias")


def lenet_setting(num_clients=2) -> Setting:
    model = build_model("lenet", (3, 32, 32), 10, seed=0)
    flat = FlatParams(model)
    return Setting(flat.size, tuple(flat.slots), tuple(model.final_layers), num_clients)


# ------------------------------------------------------------------ registry and sizes

def test_the_three_algorithms_are_registered_beside_fedavg():
    assert {"fedavg", "fedprox", "scaffold", "fedpvr"} <= set(ALGORITHMS.names())
    for name in ("fedprox", "scaffold", "fedpvr"):
        assert ALGORITHMS[name].impl.summable


def test_contribution_sizes_for_lenet():
    # LeNet-5: P = 62006; its head fc3 holds 84 * 10 + 10 = 850 entries.
    s = lenet_setting()
    sizes = {name: build_algorithm(name, s).contribution_size for name in ("fedavg", "fedprox", "scaffold")}
    assert sizes == {"fedavg": 62007, "fedprox": 62007, "scaffold": 2 * 62006 + 1}
    pvr = {layers: build_algorithm("fedpvr", s, FedPVRParams(layers)).contribution_size
           for layers in [("head",), ("all",), (), ("fc3.bias",)]}
    assert pvr == {("head",): 62007 + 850, ("all",): 2 * 62006 + 1, (): 62007, ("fc3.bias",): 62007 + 10}


# ------------------------------------------------------------------ FedProx

class Tiny(torch.nn.Module):
    """Three parameters, two classes: logits = [x . weight + bias, 0]."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2))
        self.bias = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):  # x (B, 2) -> (B, 2)
        z = x @ self.weight + self.bias
        return torch.stack([z, torch.zeros_like(z)], dim=1)


def tiny_trainer(lr: float) -> LocalTrainer:
    cfg = config.from_dict({"train": {"batch_size": 4, "lr": lr, "momentum": 0.0, "weight_decay": 0.0}})
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.25, -2.0], [3.0, 1.0]])  # (4, 2)
    y = torch.tensor([0, 1, 1, 0])
    return LocalTrainer(cfg, Tiny(), x, y, worker=0)


def test_fedprox_one_sgd_step_adds_mu_times_the_distance_to_the_global_model():
    # One full-batch step, momentum 0, lr = 1/2, mu = 1/4, from theta0 != theta_g:
    #   mu (theta0 - theta_g) = 1/4 * ([1/2, -1/4, 1] - [1, 3/4, -1]) = [-1/8, -1/4, 1/2]   (exact)
    #   theta1 = theta0 - lr (g + mu (theta0 - theta_g)), g the plain cross-entropy gradient.
    # Both products by powers of two are exact, so each side rounds once per add: bit-equal.
    lr, mu = 0.5, 0.25
    theta0, theta_g = vec(0.5, -0.25, 1.0), vec(1.0, 0.75, -1.0)
    trainer = tiny_trainer(lr)
    algo = build_algorithm("fedprox", setting_for(layout(("weight", 2), ("bias", 1))), FedProxParams(mu))
    trainer.flat.assign(torch.from_numpy(theta0))
    prox = algo.gradient_hook({}, {"theta": theta_g})
    seen = []

    def hook(theta, grad):
        seen.append(grad.detach().numpy().copy())  # g before the proximal term
        prox(theta, grad)
        np.testing.assert_array_equal(grad.numpy(), seen[0] + vec(-0.125, -0.25, 0.5))

    trainer.train(1, hook)
    g = seen[0]
    assert np.abs(g).min() > 0  # a real gradient on every parameter
    want = theta0 - F32(lr) * (g + F32(mu) * (theta0 - theta_g))
    np.testing.assert_array_equal(trainer.flat.vector.numpy(), want)
    np.testing.assert_array_equal(theta_g, vec(1.0, 0.75, -1.0))  # the server's model is only read


def test_fedprox_with_mu_zero_adds_no_hook_and_contributes_like_fedavg():
    s = setting_for(layout(("w", 3)))
    prox, avg = build_algorithm("fedprox", s, FedProxParams(0.0)), build_algorithm("fedavg", s)
    assert prox.gradient_hook({}, {"theta": vec(1, 2, 3)}) is None
    work = LocalWork(vec(1, 2, 3), vec(0.5, -1, 2), 3.0, 4, 0.1)
    a, b = np.empty(4, F32), np.empty(4, F32)
    prox.contribute(work, {}, {}, a)
    avg.contribute(work, {}, {}, b)
    np.testing.assert_array_equal(a, [1.5, -3, 6, 3])  # [w theta, w]
    np.testing.assert_array_equal(a, b)


def test_fedprox_rejects_a_negative_mu_naming_the_key():
    with pytest.raises(ValueError, match=r"^mu must be a number >= 0"):
        FedProxParams(-0.5).check()
    with pytest.raises(UsageError) as err:
        config.load(str(SMOKE), ["algorithm.name=fedprox", "algorithm.mu=-0.5"])
    assert str(err.value) == "config: algorithm.mu must be a number >= 0 (0 = FedAvg), got -0.5"
    with pytest.raises(UsageError, match=r"^config: algorithm\.mu must be"):
        config.load(str(SMOKE), ["algorithm.name=fedprox", "algorithm.mu=.nan"])


# ------------------------------------------------------------------ SCAFFOLD, by hand

def test_updated_variate_is_option_two():
    # c_i+ = (c_i - c) + (x - y) / (K eta), K eta = 2 * 1/4 = 1/2:
    #   ([1, -1] - [0, 1/2]) + ([5/4, 11/8] - [1, 15/8]) / (1/2) = [1, -3/2] + [1/2, -1] = [3/2, -5/2]
    got = updated_variate(vec(1, -1), vec(0, 0.5), vec(1.25, 1.375), vec(1.0, 1.875), steps=2, lr=0.25)
    np.testing.assert_array_equal(got, [1.5, -2.5])
    assert got.dtype == np.float32
    # No step taken: the variate stays.
    np.testing.assert_array_equal(updated_variate(vec(1, -1), vec(0, 0.5), vec(1, 2), vec(1, 2), 0, 0.25), [1, -1])


def test_scaffold_control_variates_for_two_clients_over_two_rounds():
    # P = 2, N = 2 clients with weights 1 and 3, K = 2 steps at eta = 1/4 (K eta = 1/2).
    algo = build_algorithm("scaffold", setting_for(layout(("w", 2)), num_clients=2))
    assert algo.contribution_size == 5  # [w y (2) | w | delta_c (2)]
    server = algo.server_init(vec(1, 2))
    c1, c2 = algo.client_init(), algo.client_init()
    np.testing.assert_array_equal(server["c"], [0, 0])
    out1, out2 = np.empty(5, F32), np.empty(5, F32)

    # Round 0. c = c_1 = c_2 = 0, x = [1, 2].
    #   client 1: y = [1/2, 5/2]:  c_1+ = ([1, 2] - [1/2, 5/2]) / (1/2) = [1, -1]
    #   client 2: y = [3/2, 1]:    c_2+ = ([1, 2] - [3/2, 1]) / (1/2)   = [-1, 2]
    c1 = algo.contribute(LocalWork(vec(1, 2), vec(0.5, 2.5), 1.0, 2, 0.25), c1, server, out1)
    c2 = algo.contribute(LocalWork(vec(1, 2), vec(1.5, 1.0), 3.0, 2, 0.25), c2, server, out2)
    np.testing.assert_array_equal(out1, [0.5, 2.5, 1, 1, -1])  # [1 * y_1, 1, delta_c_1]
    np.testing.assert_array_equal(out2, [4.5, 3.0, 3, -1, 2])  # [3 * y_2, 3, delta_c_2]
    np.testing.assert_array_equal(c1["c"], [1, -1])
    np.testing.assert_array_equal(c2["c"], [-1, 2])
    #   x = [1/2 + 9/2, 5/2 + 3] / 4 = [5/4, 11/8];  c = 0 + ([1, -1] + [-1, 2]) / 2 = [0, 1/2]
    server = algo.aggregate(server, out1 + out2)
    np.testing.assert_array_equal(server["theta"], [1.25, 1.375])
    np.testing.assert_array_equal(server["c"], [0, 0.5])

    # Round 1: each client's gradient gets c - c_i.
    #   client 1: [0, 1/2] - [1, -1] = [-1, 3/2];  client 2: [0, 1/2] - [-1, 2] = [1, -3/2]
    for state, want in ((c1, [-0.5, 2.0]), (c2, [1.5, -1.0])):
        theta, grad = torch.tensor([7.0, 8.0]), torch.tensor([0.5, 0.5])
        algo.gradient_hook(state, server)(theta, grad)
        np.testing.assert_array_equal(grad.numpy(), want)  # [1/2, 1/2] + (c - c_i)
        np.testing.assert_array_equal(theta.numpy(), [7, 8])
    #   client 1: y = [1, 15/8]:   c_1+ = [1, -1] - [0, 1/2] + ([5/4, 11/8] - [1, 15/8]) * 2 = [3/2, -5/2]
    #   client 2: y = [3/2, 9/8]:  c_2+ = [-1, 2] - [0, 1/2] + ([5/4, 11/8] - [3/2, 9/8]) * 2 = [-3/2, 2]
    x = server["theta"]
    c1 = algo.contribute(LocalWork(x, vec(1.0, 1.875), 1.0, 2, 0.25), c1, server, out1)
    c2 = algo.contribute(LocalWork(x, vec(1.5, 1.125), 3.0, 2, 0.25), c2, server, out2)
    np.testing.assert_array_equal(c1["c"], [1.5, -2.5])
    np.testing.assert_array_equal(c2["c"], [-1.5, 2.0])
    np.testing.assert_array_equal(out1[3:], [0.5, -1.5])  # delta_c_1 = [3/2, -5/2] - [1, -1]
    np.testing.assert_array_equal(out2[3:], [-0.5, 0.0])  # delta_c_2 = [-3/2, 2] - [-1, 2]
    #   x = [1 + 9/2, 15/8 + 27/8] / 4 = [11/8, 21/16];  c = [0, 1/2] + [0, -3/2] / 2 = [0, -1/4]
    server = algo.aggregate(server, out1 + out2)
    np.testing.assert_array_equal(server["theta"], [1.375, 1.3125])
    np.testing.assert_array_equal(server["c"], [0, -0.25])
    np.testing.assert_array_equal(server["c"], (c1["c"] + c2["c"]) / 2)  # c is the mean of the c_i


def test_scaffold_divides_the_summed_deltas_by_all_clients_not_the_participants():
    # N = 4 clients, 2 trained: c <- c + (1/N) sum delta_c = [1, 1] + ([2, -4] + [2, 0]) / 4 = [2, 0]
    algo = build_algorithm("scaffold", setting_for(layout(("w", 2)), num_clients=4))
    server = {"theta": vec(0, 0), "c": vec(1, 1)}
    summed = vec(6, 8, 4, 4, -4)  # [sum w y | sum w | sum delta_c]
    got = algo.aggregate(server, summed)
    np.testing.assert_array_equal(got["theta"], [1.5, 2])  # [6, 8] / 4
    np.testing.assert_array_equal(got["c"], [2, 0])
    np.testing.assert_array_equal(server["c"], [1, 1])  # the old state is untouched
    np.testing.assert_array_equal(algo.local_model(summed), [1.5, 2])


def test_scaffold_contribution_starts_with_fedavgs_numerators():
    s = setting_for(layout(("a", 2), ("b", 1)), num_clients=3)
    scaffold, avg = build_algorithm("scaffold", s), build_algorithm("fedavg", s)
    work = LocalWork(vec(0.1, 0.2, 0.3), vec(0.7, -0.3, 1.9), 37.0, 3, 0.01)
    a, b = np.empty(7, F32), np.empty(4, F32)
    scaffold.contribute(work, scaffold.client_init(), scaffold.server_init(work.start), a)
    avg.contribute(work, {}, {}, b)
    np.testing.assert_array_equal(a[:4], b)
    np.testing.assert_array_equal(a[4:], (work.start - work.theta) / F32(3 * 0.01))  # c_i = c = 0


def test_contribute_leaves_the_callers_arrays_alone():
    algo = build_algorithm("scaffold", setting_for(layout(("w", 2))))
    client, server = {"c": vec(1, -1)}, {"theta": vec(1, 2), "c": vec(0, 0.5)}
    work = LocalWork(vec(1, 2), vec(0.5, 2.5), 1.0, 2, 0.25)
    before = copy.deepcopy((client, server, work.start, work.theta))
    new = algo.contribute(work, client, server, np.empty(5, F32))
    algo.gradient_hook(client, server)(torch.zeros(2), torch.zeros(2))
    for got, want in zip((client, server), before[:2]):
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_array_equal(work.start, before[2])
    np.testing.assert_array_equal(work.theta, before[3])
    assert new["c"] is not client["c"]


# ------------------------------------------------------------------ FedPVR, by hand

def test_merged_ranges_and_cut_follow_the_flat_order():
    assert merged_ranges(SMALL, SMALL_HEAD) == ((8, 11),)  # head.weight and head.bias are adjacent
    assert merged_ranges(SMALL, ("head.bias", "body.bias")) == ((6, 8), (10, 11))
    assert merged_ranges(SMALL, ()) == ()
    v = np.arange(11, dtype=F32)
    np.testing.assert_array_equal(cut(v, ((6, 8), (10, 11))), [6, 7, 10])
    np.testing.assert_array_equal(cut(v, ((8, 11),)), [8, 9, 10])
    assert cut(v, ()).shape == (0,)


def test_fedpvr_head_is_the_models_final_layers():
    algo = build_algorithm("fedpvr", setting_for(SMALL, SMALL_HEAD), FedPVRParams())
    assert algo.params.layers == ("head",)
    assert algo.variate_names == SMALL_HEAD and algo.ranges == ((8, 11),)
    assert algo.contribution_size == 11 + 1 + 3
    assert algo.client_init()["c"].shape == (3,)


def test_fedpvr_corrects_and_uploads_only_the_chosen_tensors():
    # V = body.bias [6, 8) + head.bias [10, 11); |V| = 3. K = 1 step, eta = 1/2.
    algo = build_algorithm("fedpvr", setting_for(SMALL, SMALL_HEAD), FedPVRParams(("head.bias", "body.bias")))
    assert algo.variate_names == ("body.bias", "head.bias")
    server = {"theta": np.zeros(11, F32), "c": vec(1, 2, 3)}
    client = {"c": vec(0.5, 0.5, 0.5)}
    grad = torch.ones(11)
    algo.gradient_hook(client, server)(torch.zeros(11), grad)
    # grad = 1 + (c - c_i) on V, = 1 elsewhere: c - c_i = [1/2, 3/2, 5/2]
    np.testing.assert_array_equal(grad.numpy(), [1, 1, 1, 1, 1, 1, 1.5, 2.5, 1, 1, 3.5])
    # x = 0, y = -k/4 at entry k: on V, (x - y) / (1/2) = [6, 7, 10] / 2 = [3, 7/2, 5];
    # c_i+ = (c_i - c) + that = [-1/2, -3/2, -5/2] + [3, 7/2, 5] = [5/2, 2, 5/2]; delta = c_i+ - c_i = [2, 3/2, 2]
    theta = -0.25 * np.arange(11, dtype=F32)
    out = np.empty(algo.contribution_size, F32)
    new = algo.contribute(LocalWork(np.zeros(11, F32), theta, 2.0, 1, 0.5), client, server, out)
    np.testing.assert_array_equal(new["c"], [2.5, 2, 2.5])
    np.testing.assert_array_equal(out, np.concatenate([2 * theta, [2], [2, 1.5, 2]]))
    # Server, N = 2: c = [1, 2, 3] + [2, 3/2, 2] / 2 = [2, 11/4, 4]; theta = (2 theta) / 2.
    got = algo.aggregate(server, out)
    np.testing.assert_array_equal(got["c"], [2, 2.75, 4])
    np.testing.assert_array_equal(got["theta"], theta)


def test_fedpvr_with_no_tensors_has_no_hook_and_fedavgs_layout():
    algo = build_algorithm("fedpvr", setting_for(SMALL, SMALL_HEAD), FedPVRParams(()))
    assert algo.contribution_size == 12  # [w theta (11) | w]
    assert algo.gradient_hook(algo.client_init(), algo.server_init(np.zeros(11))) is None


def test_fedpvr_layer_names_are_checked_against_the_model():
    s = lenet_setting()
    with pytest.raises(UsageError) as err:
        build_algorithm("fedpvr", s, FedPVRParams(("fc3.weight", "fc9.weight")))
    msg = str(err.value)
    assert msg.startswith("config: algorithm.layers: unknown tensor 'fc9.weight'; the model's tensors are "
                          "conv1.weight, conv1.bias, conv2.weight")
    assert "fc3.bias" in msg and "\n" not in msg
    # A word that is also a tensor's own name is ambiguous.
    clash = setting_for(layout(("head", 2), ("all", 1)), ("head",))
    for word in ("head", "all"):
        with pytest.raises(UsageError, match=rf"^config: algorithm\.layers: '{word}' is both a word"):
            build_algorithm("fedpvr", clash, FedPVRParams((word,)))
    assert build_algorithm("fedpvr", clash, FedPVRParams(())).contribution_size == 4
    # `head` of a model that names no final layer is an error, not a silent FedAvg.
    with pytest.raises(UsageError, match=r"^config: algorithm\.layers: the model's final layers \[\]"):
        build_algorithm("fedpvr", setting_for(SMALL), FedPVRParams())


def test_fedpvr_parameters_are_checked_by_config():
    with pytest.raises(UsageError) as err:
        config.load(str(SMOKE), ["algorithm.name=fedpvr", "algorithm.layers=[head, head]"])
    assert str(err.value) == "config: algorithm.layers must be a list without repeats, got ['head', 'head']"
    with pytest.raises(UsageError, match=r"^config: algorithm\.layers must be a list"):
        config.load(str(SMOKE), ["algorithm.name=fedpvr", "algorithm.layers=head"])
    cfg = config.load(str(SMOKE), ["algorithm.name=fedpvr", "algorithm.layers=[]"])
    assert cfg.algorithm.layers == ()
    assert config.load(str(SMOKE), ["algorithm.name=fedpvr"]).algorithm.layers == ("head",)


# ------------------------------------------------------------------ a tiny federation, in process

SIZES = (20, 36, 52)  # examples of clients 0, 1 (worker 0) and 2 (worker 1)


def federate(algorithm: dict, rounds: int = 4, sampled=None, steps: int = 5) -> list[dict]:
    """Run 3 clients of different sizes on 2 workers through `ClientGroup`, as fedmpi.reference does.

    Returns, per round, copies of the summed payload, the server state and
    every client's model and algorithm state."""
    cfg = config.from_dict({
        "seed": 3, "model": {"name": "lenet", "width": 0.5}, "algorithm": algorithm,
        "data": {"name": "synthetic", "probe_size": 1, "eval_size": 0},
        "train": {"batch_size": 8, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.001}, "device": "cpu"})
    dataset = data.synthetic(sum(SIZES), 4, seed=3)
    bounds = np.cumsum((0,) + SIZES)
    owners = ((0, 1), (2,))
    groups = []
    for k, ids in enumerate(owners):
        lo, hi = bounds[ids[0]], bounds[ids[-1] + 1]
        slices = tuple(slice(int(bounds[c] - lo), int(bounds[c + 1] - lo)) for c in ids)
        wd = WorkerData(np.arange(lo, hi, dtype=np.int64), np.arange(hi - lo), np.arange(1), ids, slices)
        x, y, _, _ = worker_tensors(dataset, wd, "cpu")
        groups.append(ClientGroup(cfg, dataset, wd, x, y, "cpu", num_clients=len(SIZES), worker=k))
    size = groups[0].algorithm.contribution_size
    history = []
    for i in range(rounds):
        chosen = set(range(len(SIZES))) if sampled is None else set(sampled[i])
        payloads = np.empty((len(groups), size), F32)  # (W, contribution_size): each worker's sum
        for k, g in enumerate(groups):
            g.train_round(chosen, steps, payloads[k], f"worker {k + 1}")
        summed = np.zeros(size, F32)
        for payload in payloads:  # in rank order, as the collective and the reference do
            summed += payload
        for g in groups:
            g.aggregate(summed)
        history.append({
            "summed": summed.copy(), "server": copy.deepcopy(groups[0].server),
            "thetas": [c.flat.vector.numpy().copy() for g in groups for c in g.clients],
            "clients": copy.deepcopy([s for g in groups for s in g.client_states])})
        for key, value in groups[1].server.items():  # every rank holds the same server state
            np.testing.assert_array_equal(value, groups[0].server[key])
    return history


def assert_same_run(a: list[dict], b: list[dict], keys=("theta",)):
    assert len(a) == len(b)
    for i, (ra, rb) in enumerate(zip(a, b)):
        for key in keys:
            np.testing.assert_array_equal(ra["server"][key], rb["server"][key], err_msg=f"round {i} {key}")
        for j, (ta, tb) in enumerate(zip(ra["thetas"], rb["thetas"])):
            np.testing.assert_array_equal(ta, tb, err_msg=f"round {i} client {j}")


@pytest.fixture(scope="module")
def fedavg_run():
    return federate({"name": "fedavg"})


@pytest.fixture(scope="module")
def scaffold_run():
    return federate({"name": "scaffold"})


def test_fedpvr_with_every_tensor_is_scaffold_step_for_step(scaffold_run):
    pvr = federate({"name": "fedpvr", "layers": ["all"]})
    assert_same_run(pvr, scaffold_run, keys=("theta", "c"))
    for ra, rb in zip(pvr, scaffold_run):
        np.testing.assert_array_equal(ra["summed"], rb["summed"])
        for ca, cb in zip(ra["clients"], rb["clients"]):
            np.testing.assert_array_equal(ca["c"], cb["c"])


def test_fedpvr_with_no_tensor_is_fedavg_step_for_step(fedavg_run):
    pvr = federate({"name": "fedpvr", "layers": []})
    assert_same_run(pvr, fedavg_run)
    for ra, rb in zip(pvr, fedavg_run):
        np.testing.assert_array_equal(ra["summed"], rb["summed"])


def test_fedprox_with_mu_zero_is_fedavg_and_mu_above_zero_is_not(fedavg_run):
    assert_same_run(federate({"name": "fedprox", "mu": 0.0}), fedavg_run)
    prox = federate({"name": "fedprox", "mu": 0.5}, rounds=1)
    # The proximal term is zero at the first step (theta = theta_g) and not after it.
    assert not np.array_equal(prox[0]["server"]["theta"], fedavg_run[0]["server"]["theta"])


def test_scaffold_first_round_is_fedavgs_then_the_variates_act(fedavg_run, scaffold_run):
    np.testing.assert_array_equal(scaffold_run[0]["server"]["theta"], fedavg_run[0]["server"]["theta"])
    np.testing.assert_array_equal(scaffold_run[0]["summed"][:fedavg_run[0]["summed"].size],
                                  fedavg_run[0]["summed"])
    assert not np.array_equal(scaffold_run[1]["server"]["theta"], fedavg_run[1]["server"]["theta"])
    # Full participation: c stays the mean of the clients' c_i (up to float32 rounding of the sums).
    for r in scaffold_run:
        mean = np.mean([c["c"] for c in r["clients"]], axis=0, dtype=np.float64)
        scale = max(np.abs(c["c"]).max() for c in r["clients"])
        np.testing.assert_allclose(r["server"]["c"], mean, rtol=0, atol=1e-6 * scale)


def test_fedpvr_head_round_zero_is_fedavgs_then_the_head_variates_act(fedavg_run):
    pvr = federate({"name": "fedpvr"}, rounds=2)
    s = pvr[0]["server"]
    assert s["c"].shape == (42 * 10 + 10,)  # fc3 of LeNet at width 1/2
    np.testing.assert_array_equal(s["theta"], fedavg_run[0]["server"]["theta"])  # round 0: c = c_i = 0
    assert not np.array_equal(pvr[1]["server"]["theta"], fedavg_run[1]["server"]["theta"])


def test_partial_participation_fedpvr_all_is_scaffold_and_c_stays_the_mean():
    sampled = [(0, 2), (1,), (0, 1, 2), (2,)]
    scaffold = federate({"name": "scaffold"}, sampled=sampled)
    assert_same_run(federate({"name": "fedpvr", "layers": ["all"]}, sampled=sampled), scaffold, keys=("theta", "c"))
    # c <- c + (1/N) sum over the sampled clients keeps c = (1/N) sum over all N clients.
    for r in scaffold:
        mean = np.mean([c["c"] for c in r["clients"]], axis=0, dtype=np.float64)
        scale = max(np.abs(c["c"]).max() for c in r["clients"])
        np.testing.assert_allclose(r["server"]["c"], mean, rtol=0, atol=1e-6 * scale)
    # Round 1 trains client 1 alone: the others' variates did not move.
    for j in (0, 2):
        np.testing.assert_array_equal(scaffold[1]["clients"][j]["c"], scaffold[0]["clients"][j]["c"])
