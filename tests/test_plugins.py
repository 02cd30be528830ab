"""The plug-in contracts: one test per registry, over every registered name.

A new algorithm, compressor, model or MI estimator is one module plus one
registration; these tests hold each of them to its contract without MPI.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from fedmpi import config
from fedmpi.algorithms import ALGORITHMS, LocalWork
from fedmpi.compress import COMPRESSORS, build_compressor
from fedmpi.errors import UsageError
from fedmpi.flat import FlatParams
from fedmpi.info import ESTIMATORS, estimate
from fedmpi.local import LocalTrainer, arrays, new_algorithm, tensors
from fedmpi.models import MODELS, build_model
from fedmpi.registry import Registry

SECTIONS = {"algorithm": ALGORITHMS, "compression": COMPRESSORS, "model": MODELS}


# ------------------------------------------------------------------ the registry itself

def test_registry_refuses_a_second_entry_and_names_the_choices():
    reg: Registry = Registry("widget")
    reg.register("a")(object())
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a")(object())
    with pytest.raises(KeyError, match="unknown widget 'b'; choose one of a"):
        reg["b"]
    assert list(reg) == ["a"] and "a" in reg and len(reg) == 1


@pytest.mark.parametrize("section", SECTIONS)
def test_every_registered_plugin_is_reachable_from_a_job_file(section):
    registry = SECTIONS[section]
    for name in registry:
        cfg = config.from_dict({section: {"name": name}})
        assert getattr(cfg, section).name == name
        assert getattr(cfg, section).params == registry[name].params()
        again = config.from_dict(config.to_dict(cfg))  # the resolved YAML round-trips
        assert again == cfg
    with pytest.raises(UsageError) as err:
        config.from_dict({section: {"name": "no-such-thing"}})
    assert f"{section}.name must be one of {', '.join(registry)}; got 'no-such-thing'" in str(err.value)
    with pytest.raises(UsageError, match=f"unknown key '{section}.bogus'"):
        config.from_dict({section: {"bogus": 1}})


def test_old_job_files_without_the_new_sections_get_the_defaults():
    cfg = config.from_dict({"model": {"name": "lenet"}, "train": {"lr": 0.1}})
    assert (cfg.algorithm.name, cfg.compression.name, cfg.model.name, cfg.model.width) == \
        ("fedavg", "none", "lenet", 1.0)


# ------------------------------------------------------------------ algorithms

def _tiny_model():
    return build_model("lenet", (3, 32, 32), 10, seed=0)


def _algorithm(name, num_clients=3):
    cfg = config.from_dict({"algorithm": {"name": name}})
    model = _tiny_model()
    return new_algorithm(cfg, model, FlatParams(model), num_clients), model


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_algorithm_contract(name):
    algo, _ = _algorithm(name)
    P = algo.num_params
    rng = np.random.default_rng(0)
    theta0 = rng.normal(size=P).astype(np.float32)
    server = algo.server_init(theta0)
    assert np.array_equal(server["theta"], theta0) and server["theta"] is not theta0
    # Three clients that each moved away from the global model by a different amount.
    thetas = [theta0 + rng.normal(scale=0.01, size=P).astype(np.float32) for _ in range(3)]
    weights = [100.0, 50.0, 25.0]
    summed = np.zeros(algo.contribution_size, np.float32)
    clients = []
    for theta, w in zip(thetas, weights):
        client = algo.client_init()
        before = theta.copy()
        out = np.full(algo.contribution_size, np.nan, np.float32)
        work = LocalWork(theta0, theta, w, steps=10, lr=0.01)
        client = algo.contribute(work, client, server, out)
        assert np.isfinite(out).all() and np.array_equal(theta, before)  # writes all of out, reads theta only
        assert {k: v.shape for k, v in arrays(tensors(client)).items()} == {k: v.shape for k, v in client.items()}
        clients.append(client)
        summed += out
    frozen = summed.copy(), {k: v.copy() for k, v in server.items()}
    new = algo.aggregate(server, summed)
    again = algo.aggregate(server, summed)
    assert np.array_equal(summed, frozen[0]) and all(np.array_equal(server[k], frozen[1][k]) for k in server)
    assert all(np.array_equal(new[k], again[k]) for k in new)  # pure and deterministic
    want = sum(w * t for w, t in zip(weights, thetas)) / sum(weights)  # the example-weighted mean
    np.testing.assert_allclose(new["theta"], want, rtol=1e-5, atol=1e-6)
    assert new["theta"].dtype == np.float32 and new["theta"].shape == (P,)
    # A partial sum stands for its clients' weighted mean (a worker's local model).
    part = np.zeros(algo.contribution_size, np.float32)
    algo.contribute(LocalWork(theta0, thetas[0], weights[0], 10, 0.01), algo.client_init(), server, part)
    np.testing.assert_allclose(algo.local_model(part), thetas[0], rtol=1e-6, atol=1e-7)
    hook = algo.gradient_hook(clients[0], new)
    assert hook is None or callable(hook)
    assert isinstance(algo.summable, bool)


@pytest.mark.parametrize("name", list(ALGORITHMS))
def test_algorithm_gradient_hook_runs_on_the_whole_flat_gradient(name):
    algo, model = _algorithm(name)
    trainer = LocalTrainer(config.from_dict({"train": {"momentum": 0.0}}), model,
                           torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,)), worker=0)
    server = algo.server_init(trainer.flat.vector.numpy())
    seen = []
    hook = algo.gradient_hook(algo.client_init(), server)

    def spy(theta, grad):
        seen.append((theta.shape, grad.shape, grad.data_ptr() == trainer.grad.data_ptr()))
        if hook is not None:
            hook(theta, grad)
    trainer.train(2, spy)
    assert seen == [((algo.num_params,), (algo.num_params,), True)] * 2


def test_a_gradient_hook_changes_the_step_exactly():
    """The hook path itself: a proximal term mu * (theta - anchor) added to the flat gradient."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    reference = torch.nn.Linear(3, 2)
    reference.load_state_dict(model.state_dict())
    cfg = config.from_dict({"train": {"momentum": 0.0, "lr": 0.5, "batch_size": 4}})
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 1, 0])
    trainer = LocalTrainer(cfg, model, x, y, worker=0)
    theta = trainer.flat.vector.clone()  # [weight (2, 3), bias (2,)]
    # The plain gradient of the one batch: all 4 examples (the mean loss ignores their order).
    torch.nn.functional.cross_entropy(reference(x), y).backward()
    g = torch.cat([reference.weight.grad.flatten(), reference.bias.grad.flatten()])
    anchor = torch.full_like(theta, 0.25)
    mu = 0.3
    trainer.train(1, lambda th, gr: gr.add_(th - anchor, alpha=mu))
    # SGD without momentum: theta - lr * (g + mu * (theta - anchor)).
    torch.testing.assert_close(trainer.flat.vector, theta - 0.5 * (g + mu * (theta - anchor)), rtol=0, atol=1e-7)


# ------------------------------------------------------------------ compressors

@pytest.mark.parametrize("name", list(COMPRESSORS))
def test_compressor_contract(name):
    comp = build_compressor(name)
    size = 1000
    x = np.random.default_rng(1).normal(size=size).astype(np.float32)
    before = x.copy()
    state = comp.init_state(size)
    state_before = {k: v.copy() for k, v in state.items()}
    payload, new_state = comp.encode(x, state, np.random.default_rng(7))
    assert payload.dtype == np.uint8 and payload.ndim == 1
    assert np.array_equal(x, before)
    assert state.keys() == state_before.keys() and all(np.array_equal(state[k], state_before[k]) for k in state)
    decoded = comp.decode(payload)
    assert decoded.dtype == np.float32 and decoded.shape == (size,)
    again, _ = comp.encode(x, state, np.random.default_rng(7))
    assert np.array_equal(payload, again)  # deterministic for a given generator
    if comp.summable:  # summable payloads add up as they are: only a lossless float32 encoding can
        np.testing.assert_array_equal(decoded, x)
    assert all(isinstance(v, np.ndarray) for v in new_state.values())


# ------------------------------------------------------------------ models

class _BatchNormNet(torch.nn.Module):
    """A model with BatchNorm, so the state has running statistics and an integer buffer."""

    representation_dim = 4
    final_layers = ("head.weight", "head.bias")

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4, 10)

    def forward_with_representation(self, x):
        z = torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3))
        return self.head(z), z

    def forward(self, x):
        return self.forward_with_representation(x)[0]


def test_integer_buffers_travel_with_the_state_so_resume_is_exact():
    cfg = config.from_dict({"train": {"batch_size": 4}})
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 10, (16,))
    torch.manual_seed(0)
    a = LocalTrainer(cfg, _BatchNormNet(), x, y, worker=0)
    a.train(3)
    state = a.state()
    assert int(state["buffers"]["bn.num_batches_tracked"]) == 3
    torch.manual_seed(1)  # a different fresh model: everything must come from the state
    b = LocalTrainer(cfg, _BatchNormNet(), x, y, worker=0)
    b.load_state(state)
    a.train(5)
    b.train(5)
    assert torch.equal(a.flat.vector, b.flat.vector)
    assert int(b.model.bn.num_batches_tracked) == int(a.model.bn.num_batches_tracked) == 8
    names = [s.name for s in a.flat.slots]
    assert "bn.running_mean" in names and "bn.running_var" in names  # averaged with the parameters
    assert "bn.num_batches_tracked" not in names


@pytest.mark.parametrize("name", list(MODELS))
def test_model_contract(name):
    model = build_model(name, (3, 32, 32), 10, seed=0)
    x = torch.randn(2, 3, 32, 32)
    logits, z = model.forward_with_representation(x)
    assert logits.shape == (2, 10) and z.shape == (2, model.representation_dim)
    assert torch.equal(model.logits_from_representation(z), logits)
    assert torch.equal(model(x), logits)
    params = dict(model.named_parameters())
    assert model.final_layers and all(n in params for n in model.final_layers)
    flat = FlatParams(model)
    covered = {s.name for s in flat.slots}
    assert set(params) <= covered
    assert {n for n, b in model.named_buffers() if b.is_floating_point()} <= covered
    assert flat.size == sum(t.numel() for n, t in [*model.named_parameters(), *model.named_buffers()]
                            if t.is_floating_point())
    same = FlatParams(build_model(name, (3, 32, 32), 10, seed=0)).vector
    other = FlatParams(build_model(name, (3, 32, 32), 10, seed=1)).vector
    assert torch.equal(flat.vector, same) and not torch.equal(flat.vector, other)


def test_lenet_width_scales_every_hidden_layer():
    wide = build_model("lenet", (3, 32, 32), 10, seed=0, params=MODELS.params("lenet", width=2.0))
    assert (wide.conv1.out_channels, wide.conv2.out_channels, wide.fc1.out_features, wide.representation_dim) \
        == (12, 32, 240, 168)
    with pytest.raises(UsageError, match="model.width must be a number > 0"):
        config.from_dict({"model": {"name": "lenet", "width": 0}})


# ------------------------------------------------------------------ MI estimators

@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_estimator_contract(name):
    params = ESTIMATORS[name].params()
    params.check()
    assert dataclasses.is_dataclass(params)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(params, dataclasses.fields(params)[0].name, 1)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 400)
    z = rng.normal(size=(400, 6)) + 2.0 * np.eye(6)[y]  # labels are decodable from z
    value = estimate(name, z, y, params)
    assert np.isfinite(value) and 0 < value <= np.log(4) + 0.05
    section = config.from_dict({"mi": {"estimators": [name]}}).mi
    assert getattr(section, name) == params  # config has a section for it, from the registry


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_estimator_declares_what_it_imports_late(name):
    """`Estimator.modules` lists what an estimator imports where it uses it: after `info.load`
    (which the coordinator's measuring thread runs as it starts) an estimate imports no more
    of scipy, so the first sync point does not pay for it. A fresh interpreter, so that what
    other tests imported does not hide a missing entry."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from fedmpi import info\n"
        f"info.load([{name!r}])\n"
        "before = {m for m in sys.modules if m.startswith('scipy')}\n"
        "rng = np.random.default_rng(0)\n"
        "y = rng.integers(0, 4, 400)\n"
        "z = rng.normal(size=(400, 6)) + 2.0 * np.eye(6)[y]\n"
        f"info.estimate_with_error({name!r}, z, y)\n"
        "new = {m for m in sys.modules if m.startswith('scipy') and m not in before}\n"
        "print(sorted({'.'.join(m.split('.')[:2]) for m in new}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"{name} imported {out.strip()} after info.load: add them to its modules"
