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
