"""Every registered model against the model contract (fedmpi.models.base), plus the
CNN's and ResNets' own rules. Tiny batches, one thread: seconds in all."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F

from fedmpi import config
from fedmpi.errors import UsageError
from fedmpi.flat import FlatParams
from fedmpi.local import LocalTrainer
from fedmpi.models import MODELS, FedModel, build_model
from fedmpi.models.base import relu_max_pool2
from fedmpi.models.cnn import CNN, CNNParams, max_depth
from fedmpi.models.resnet import BasicBlock, ResNetParams

SHAPE = (3, 32, 32)
NAMES = MODELS.names()
# Every registered model with its defaults, and the BatchNorm variant, whose state has buffers.
CASES = [(name, {}) for name in NAMES] + [("resnet8", {"norm": "batch"})]
CASE_IDS = [name + "".join(f"-{k}={v}" for k, v in kw.items()) for name, kw in CASES]
# resnet56 is only shape-checked: its training steps are the slowest here.
TRAINED = [(c, i) for c, i in zip(CASES, CASE_IDS) if c[0] != "resnet56"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make(name: str, seed: int = 0, shape: tuple[int, ...] = SHAPE, **values) -> FedModel:
    return build_model(name, shape, 10, seed, MODELS.params(name, **values))


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn((n, *SHAPE), generator=torch.Generator().manual_seed(seed))  # (n, 3, 32, 32)


# ------------------------------------------------------------------ the contract, for every model

def test_the_registry_holds_the_new_models():
    assert set(NAMES) >= {"lenet", "cnn", "resnet8", "resnet20", "resnet32", "resnet56"}


@pytest.mark.parametrize("name, values", CASES, ids=CASE_IDS)
def test_builds_with_defaults_and_has_the_promised_shapes(name, values):
    model = make(name, **values)
    assert isinstance(model, FedModel)
    x = images(3)
    for mode in (model.train, model.eval):
        mode()
        logits, z = model.forward_with_representation(x)
        assert logits.shape == (3, 10) and logits.dtype == torch.float32
        assert z.shape == (3, model.representation_dim) and z.dtype == torch.float32
        assert (z >= 0).all()  # Z is taken after a ReLU
        assert torch.equal(model(x), model.forward_with_representation(x)[0])


@pytest.mark.parametrize("name, values", CASES, ids=CASE_IDS)
def test_logits_from_representation_are_the_logits_exactly(name, values):
    model = make(name, **values).eval()
    logits, z = model.forward_with_representation(images(4, seed=1))
    assert torch.equal(model.logits_from_representation(z), logits)


@pytest.mark.parametrize("name, values", CASES, ids=CASE_IDS)
def test_final_layers_are_exactly_the_parameters_after_z(name, values):
    model = make(name, **values)
    names = [n for n, _ in model.named_parameters()]
    assert len(set(model.final_layers)) == len(model.final_layers) and set(model.final_layers) <= set(names)
    z = torch.rand(2, model.representation_dim, generator=torch.Generator().manual_seed(2))
    grads = torch.autograd.grad(model.logits_from_representation(z).sum(), list(model.parameters()),
                                allow_unused=True)
    used = {n for n, g in zip(names, grads) if g is not None}
    assert used == set(model.final_layers)


@pytest.mark.parametrize("name, values", CASES, ids=CASE_IDS)
def test_same_seed_same_init_other_seed_other_init(name, values):
    rng_before = torch.get_rng_state()
    a, b, c = (FlatParams(make(name, seed, **values)).vector for seed in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(rng_before, torch.get_rng_state())  # build_model leaves the caller's RNG alone


@pytest.mark.parametrize("name, values", CASES, ids=CASE_IDS)
def test_flat_vector_holds_every_parameter_and_floating_buffer(name, values):
    model = make(name, **values)
    flat = FlatParams(model)
    floats = [(n, b) for n, b in model.named_buffers() if b.is_floating_point()]
    expected = [(n, p) for n, p in model.named_parameters()] + floats
    assert [s.name for s in flat.slots] == [n for n, _ in expected]
    assert flat.size == sum(t.numel() for _, t in expected)
    base = flat.vector.data_ptr()
    for slot, (_, t) in zip(flat.slots, expected):  # each tensor is a view at its slot
        assert t.data_ptr() == base + 4 * slot.offset and tuple(t.shape) == slot.shape
    assert set(flat.int_buffers()) == {n for n, b in model.named_buffers() if not b.is_floating_point()}


def _trainer(model: FedModel, x: torch.Tensor, y: torch.Tensor) -> LocalTrainer:
    cfg = config.from_dict({"seed": 3, "train": {"batch_size": 4, "lr": 0.05, "momentum": 0.9,
                                                 "weight_decay": 1e-3}})
    return LocalTrainer(cfg, model, x, y, worker=1)


@pytest.mark.parametrize("case", [c for c, _ in TRAINED], ids=[i for _, i in TRAINED])
def test_a_trainer_resumed_from_its_state_continues_bit_identically(case):
    name, values = case
    x, y = images(10, seed=4), torch.arange(10) % 10  # 10 examples, batches of 4: epochs end mid-way
    first = _trainer(make(name, seed=0, **values), x, y)
    first.train(2)
    saved = io.BytesIO()  # through bytes, as a checkpoint does: later steps cannot reach into it
    torch.save(first.state(), saved)
    loss_first = first.train(3)

    fresh = _trainer(make(name, seed=9, **values), x, y)  # other weights: loading must replace all of them
    saved.seek(0)
    fresh.load_state(torch.load(saved, weights_only=True))
    assert fresh.train(3) == loss_first
    assert torch.equal(fresh.flat.vector, first.flat.vector)
    ints_first, ints_fresh = first.flat.int_buffers(), fresh.flat.int_buffers()
    assert ints_first.keys() == ints_fresh.keys()
    for key, value in ints_first.items():
        assert torch.equal(ints_fresh[key], value) and int(value) == 5  # BatchNorm counted all 5 steps
    for n, b in fresh.model.named_buffers():  # BatchNorm statistics moved, inside the vector
        if n.endswith("running_var"):
            slot = next(s for s in fresh.flat.slots if s.name == n)
            assert torch.equal(b.flatten(), fresh.flat.vector[slot.offset:slot.offset + slot.numel])
            assert not torch.equal(b, torch.ones_like(b))


# ------------------------------------------------------------------ bad parameters

def _one_line_error(fn, key: str) -> str:
    with pytest.raises(ValueError) as info:
        fn()
    message = str(info.value)
    assert message.startswith(key + " ") and "\n" not in message, message
    return message


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("width", [0, -1])
def test_width_not_above_zero_is_a_one_line_error_naming_width(name, width):
    _one_line_error(lambda: MODELS.params(name, width=width), "width")


@pytest.mark.parametrize("kernel", [0, 2, 4])
def test_cnn_even_or_zero_kernel_is_an_error_naming_kernel(kernel):
    _one_line_error(lambda: MODELS.params("cnn", kernel=kernel), "kernel")


@pytest.mark.parametrize("key", ["depth", "hidden"])
def test_cnn_depth_or_hidden_below_one_is_an_error_naming_it(key):
    _one_line_error(lambda: MODELS.params("cnn", **{key: 0}), key)


def test_cnn_deeper_than_the_input_allows_is_an_error_naming_depth_and_the_limit():
    message = _one_line_error(lambda: make("cnn", depth=11), "depth")
    assert "at most 10 for 32x32 inputs" in message and message.endswith("got 11")
    message = _one_line_error(lambda: make("cnn", shape=(1, 6, 9), depth=5), "depth")
    assert "at most 4 for 6x9 inputs" in message


def test_resnet_bad_norm_and_groups_are_errors_naming_them():
    _one_line_error(lambda: MODELS.params("resnet20", norm="layer"), "norm")
    _one_line_error(lambda: MODELS.params("resnet20", groups=0), "groups")
    message = _one_line_error(lambda: MODELS.params("resnet20", groups=3), "groups")
    assert "= 16 channels" in message
    _one_line_error(lambda: MODELS.params("resnet20", width=0.75), "groups")  # 12 channels, 8 groups
    MODELS.params("resnet20", width=0.75, norm="batch")  # BatchNorm has no groups to divide


def test_config_reads_the_new_models_and_names_the_key_of_a_bad_value():
    cfg = config.from_dict({"model": {"name": "resnet20", "norm": "batch", "width": 2}})
    assert cfg.model.name == "resnet20" and cfg.model.params == ResNetParams(width=2.0, norm="batch")
    with pytest.raises(UsageError, match=r"^config: model\.kernel must be an odd integer"):
        config.from_dict({"model": {"name": "cnn", "kernel": 4}})
    with pytest.raises(UsageError, match=r"^config: model\.norm must be one of group, batch"):
        config.from_dict({"model": {"name": "resnet8", "norm": "layer"}})


# ------------------------------------------------------------------ the CNN's layout rule

def test_cnn_pools_after_every_second_conv_and_after_the_last():
    expected = {1: (True,), 2: (False, True), 3: (False, True, True), 4: (False, True, False, True),
                5: (False, True, False, True, True)}
    for depth, pools in expected.items():
        assert make("cnn", depth=depth, width=2).pool_after == pools


def test_cnn_channels_double_per_stage_up_to_eight_times_width():
    model = make("cnn", depth=10, width=3)
    assert [conv.out_channels for conv in model.convs] == [3, 3, 6, 6, 12, 12, 24, 24, 24, 24]
    assert model.fc.in_features == 24 * 1 * 1  # five pools take 32x32 to 1x1


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 6, 9), (2, 7, 7)])
def test_cnn_every_depth_the_input_allows_builds_and_runs(shape):
    assert max_depth((3, 32, 32)) == 10 and max_depth((1, 6, 9)) == 4 and max_depth((2, 7, 7)) == 4
    for depth in range(1, max_depth(shape) + 1):
        model = build_model("cnn", shape, 10, 0, CNNParams(depth=depth, width=2, kernel=5, hidden=8))
        logits, z = model.forward_with_representation(torch.randn(2, *shape))
        assert logits.shape == (2, 10) and z.shape == (2, 8)


def test_cnn_default_parameter_count():
    # convs 3->32, 32->32, 32->64, 64->64 (3x3 with bias), fc 64*8*8 -> 128, head 128 -> 10
    expected = (27 * 32 + 32) + (288 * 32 + 32) + (288 * 64 + 64) + (576 * 64 + 64) \
        + (4096 * 128 + 128) + (128 * 10 + 10)
    assert sum(p.numel() for p in CNN().parameters()) == expected == 591274


# ------------------------------------------------------------------ the ResNets' own rules

def test_resnet_parameter_counts_are_the_papers():
    counts = {name: sum(p.numel() for p in make(name).parameters())
              for name in ("resnet8", "resnet20", "resnet32", "resnet56")}
    # He et al. 2016, Table 6: 0.27M, 0.46M, 0.85M for 20, 32, 56 layers (option A shortcuts).
    assert counts == {"resnet8": 75290, "resnet20": 269722, "resnet32": 464154, "resnet56": 853018}


def test_resnet_batchnorm_buffers_two_floats_per_channel_and_a_counter_per_layer():
    model = make("resnet8", norm="batch")
    flat = FlatParams(model)
    channels = 16 + 2 * (16 + 32 + 64)  # stem, then two norms per block, one block per stage
    assert flat.size == 75290 + 2 * channels and len(flat.int_buffers()) == 7


def test_resnet_width_and_groups_set_the_channels():
    model = make("resnet20", width=0.75, groups=4)
    assert model.representation_dim == 48 and model.layer1[0].norm1.num_groups == 4
    assert [model.conv1.out_channels, model.layer2[0].conv1.out_channels, model.fc.in_features] == [12, 24, 48]


def test_option_a_shortcut_subsamples_and_pads_with_zero_channels():
    block = BasicBlock(ResNetParams(groups=1), c_in=2, c_out=4, stride=2)
    x = torch.arange(2 * 2 * 3 * 3, dtype=torch.float32).view(2, 2, 3, 3)  # (B=2, C=2, 3, 3)
    out = block.shortcut(x)
    assert out.shape == (2, 4, 2, 2)
    assert torch.equal(out[:, :2], x[:, :, ::2, ::2]) and torch.equal(out[:, 2:], torch.zeros(2, 2, 2, 2))
    assert out[0, 1].tolist() == [[9.0, 11.0], [15.0, 17.0]]
    names = {n for n, _ in block.named_parameters()}  # two convs, two norms: the shortcut adds nothing
    assert names == {"conv1.weight", "norm1.weight", "norm1.bias", "conv2.weight", "norm2.weight", "norm2.bias"}


def test_groupnorm_resnet_is_stateless_train_and_eval_agree():
    model = make("resnet8")
    assert not list(model.buffers())
    x = images(2, seed=3)
    assert torch.equal(model.train()(x), model.eval()(x))


# ------------------------------------------------------------------ evaluation's fast paths

@pytest.mark.parametrize("shape", [(4, 6, 28, 28), (3, 16, 10, 10), (2, 5, 7, 9), (2, 1, 4, 6)])
@pytest.mark.parametrize("channels_last", [True, False])
def test_relu_max_pool2_is_relu_then_max_pool2d_with_and_without_autograd(shape, channels_last):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(3))
    x[0, :, :2, :2] = 0.5  # ties inside a window
    x[-1, :, 2:4, :2] = -1.0  # a window the ReLU zeroes
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = F.max_pool2d(F.relu(x), 2)
    with torch.inference_mode():
        fast = relu_max_pool2(x)
    assert torch.equal(fast, expected)
    if channels_last:
        assert fast.is_contiguous(memory_format=torch.channels_last)
    # With autograd it is ReLU and F.max_pool2d themselves: the same gradient, a tie's included.
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    relu_max_pool2(a).sum().backward()
    F.max_pool2d(F.relu(b), 2).sum().backward()
    assert torch.equal(a.grad, b.grad)


@pytest.mark.parametrize("name, values", [("lenet", {}), ("lenet", {"width": 0.5}), ("lenet", {"width": 2.0}),
                                          ("cnn", {}), ("resnet8", {"norm": "batch"})],
                         ids=["lenet", "lenet-w0.5", "lenet-w2", "cnn", "resnet8-batch"])
def test_forward_pair_is_each_model_alone(name, values):
    one, other = make(name, seed=0, **values).eval(), make(name, seed=1, **values).eval()
    x = images(37, seed=4).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        pair = one.forward_pair(other, x)
        alone = (one.forward_with_representation(x), other.forward_with_representation(x))
    for (logits, z), (ref_logits, ref_z) in zip(pair, alone):
        # The same sums per output channel; allow for a convolution library's other blocking.
        assert torch.allclose(logits, ref_logits, rtol=0, atol=1e-5)
        assert torch.allclose(z, ref_z, rtol=0, atol=1e-5)
        assert torch.equal(logits.argmax(1), ref_logits.argmax(1))


@pytest.mark.parametrize("width, shape", [(1.0, (3, 32, 32)), (0.5, (3, 32, 32)), (2.0, (3, 32, 32)),
                                          (1.0, (1, 28, 28)), (1.0, (3, 33, 33))])
def test_lenet_conv1_on_column_pairs_is_conv1(width, shape):
    model = make("lenet", shape=shape, width=width).eval()
    x = torch.randn((9, *shape), generator=torch.Generator().manual_seed(7))
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fast = model._conv1(x)
        alone = model.forward_with_representation(x)
    expected = model.conv1(x)
    assert fast.shape == expected.shape and fast.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(fast, expected, rtol=0, atol=1e-5)
    reference = model.forward_with_representation(x)  # with autograd: conv1 itself
    assert torch.allclose(alone[0], reference[0], rtol=0, atol=1e-5)


def test_forward_pair_with_autograd_runs_the_models_one_after_the_other():
    one, other = make("lenet", seed=0), make("lenet", seed=1)
    (logits, _), (other_logits, _) = one.forward_pair(other, images(3))
    (logits.sum() + other_logits.sum()).backward()
    assert one.conv1.weight.grad is not None and other.conv1.weight.grad is not None


def test_evaluate_pair_is_two_evaluations():
    from fedmpi.local import evaluate, evaluate_pair
    one, other = make("lenet", seed=0), make("lenet", seed=1)
    x, y = images(300, seed=5), torch.randint(0, 10, (300,), generator=torch.Generator().manual_seed(6))
    pair = evaluate_pair(one, other, x, y, probe_size=140, want_z=True)
    for got, model in zip(pair, (one, other)):
        ref = evaluate(model, x, y, probe_size=140, want_z=True)
        assert got.examples == ref.examples == 300
        assert got.accuracy == pytest.approx(ref.accuracy, abs=1e-12)
        assert got.loss == pytest.approx(ref.loss, rel=1e-6)
        assert torch.allclose(got.z_probe, ref.z_probe, rtol=0, atol=1e-5) and got.z_probe.shape == (140, 84)
        assert (got.probe_pred == ref.probe_pred).all()
        assert got.probe_logp == pytest.approx(ref.probe_logp, abs=1e-5)
