"""The model contract, and the registry `model.name` looks models up in.

A fedmpi model is an `nn.Module` that also says where its representation Z
is and which tensors are its final layers:

- `representation_dim`: D, the width of Z.
- `forward_with_representation(x) -> (logits (B, classes), z (B, D))`: Z is
  the representation whose information the trace tracks (the last hidden
  layer, after its nonlinearity, as in Adilova et al. 2019).
- `logits_from_representation(z) -> logits`: the layers after Z, so the
  model's own classifier can be scored on a logged Z.
- `final_layers`: the names of the parameter tensors that form the
  classifier head (FedPVR's "final layers", Li et al. 2023).
- `forward_pair(other, x)`, optional: the forward passes of this model and
  `other` (the same architecture, other weights) on the same inputs, as
  ((logits, z), (logits, z)). A worker evaluates its local and its global
  model on the same examples at every logged sync point; a model can share
  the work of the two (LeNet does). The default runs one after the other.
- Its state is its parameters and buffers. Floating-point buffers (e.g.
  BatchNorm running statistics) live in the flat vector beside the
  parameters (fedmpi.flat) and are averaged with them; integer buffers (e.g.
  BatchNorm's `num_batches_tracked`) stay with each client and are saved in
  checkpoints, so resume is exact.

A model registers a builder `(params, input_shape, num_classes) -> model`
under its name, with a frozen parameter dataclass whose `check()` raises
ValueError naming the field.
"""

from __future__ import annotations

import abc
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from fedmpi.registry import Registry

MODELS: Registry[Callable[..., "FedModel"]] = Registry("model")


class FedModel(nn.Module, metaclass=abc.ABCMeta):
    representation_dim: int
    final_layers: tuple[str, ...]

    @abc.abstractmethod
    def forward_with_representation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, classes), z (B, D))."""

    @abc.abstractmethod
    def logits_from_representation(self, z: torch.Tensor) -> torch.Tensor:
        """The layers after Z: logits (B, classes) from z (B, D)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_representation(x)[0]

    def forward_pair(self, other: "FedModel", x: torch.Tensor):
        """((logits, z) of this model, (logits, z) of `other`) on the same x."""
        return self.forward_with_representation(x), other.forward_with_representation(x)


def relu_max_pool2(x: torch.Tensor) -> torch.Tensor:
    """F.max_pool2d(F.relu(x), 2) on a map (B, C, H, W), the same values.

    Without autograd on a CPU, a channels-last map of even height and width is
    pooled as two elementwise maxima over views of its memory (B, H/2, 2, W/2,
    2C), and the ReLU runs after the pool, in place, on a quarter of the map
    (ReLU and max commute). F.max_pool2d is slow on few channels: on LeNet's
    first map (6 channels) it took about a third of an evaluation
    (benchmarks/eval_speed.py). With autograd (training) it is ReLU, then
    F.max_pool2d, whose backward is the faster one and routes a tie's
    gradient as it always has.
    """
    return _pooled_views(x).relu_() if _views_apply(x) else F.max_pool2d(F.relu(x), 2)


def cpu_inference(x: torch.Tensor) -> bool:
    """Whether a layer may take its CPU evaluation path on x: no autograd (training keeps
    torch's own layers and their gradients), a CPU tensor, channels-last."""
    return (not torch.is_grad_enabled() and x.device.type == "cpu"
            and x.is_contiguous(memory_format=torch.channels_last))


def _views_apply(x: torch.Tensor) -> bool:
    _, _, h, w = x.shape
    return cpu_inference(x) and h % 2 == 0 and w % 2 == 0


def _pooled_views(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(b, h // 2, 2, w // 2, 2 * c)  # a view: pixel pairs side by side
    half = torch.maximum(rows[:, :, 0], rows[:, :, 1])  # (B, H/2, W/2, 2C): max over row pairs
    return torch.maximum(half[..., :c], half[..., c:]).permute(0, 3, 1, 2)  # (B, C, H/2, W/2) channels-last, new


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, seed: int,
                params: object | None = None) -> FedModel:
    """A freshly initialised model; the same seed gives the same weights on every rank.

    Initialisation draws from torch's global generator, so it runs inside
    `fork_rng` and leaves the caller's RNG state as it was.
    """
    entry = MODELS[name]
    params = entry.params() if params is None else params
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return entry.impl(params, tuple(input_shape), num_classes)
