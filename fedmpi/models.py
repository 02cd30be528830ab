"""Models and their representation Z.

Every model returns `(logits, z)` from `forward_with_representation`, z being
the representation whose information the trace tracks. For LeNet that is the
84-unit output of the last hidden layer, after its ReLU, as in Adilova et al.
2019. A model registers under a name in `MODELS` to be usable as `model.name`.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn


class LeNet(nn.Module):
    """LeNet-5 for 32x32x3 (LeCun et al. 1998): conv 6@5x5, pool, conv 16@5x5, pool, fc 120, 84, classes."""

    representation_dim = 84

    def __init__(self, input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10):
        super().__init__()
        channels, height, width = input_shape
        self.conv1 = nn.Conv2d(channels, 6, 5)
        self.conv2 = nn.Conv2d(6, 16, 5)
        out_h, out_w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
        flat = 16 * out_h * out_w
        self.fc1 = nn.Linear(flat, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, num_classes)

    def forward_with_representation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 6, 14, 14)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 16, 5, 5)
        x = F.relu(self.fc1(x.flatten(1)))  # (B, 120)
        z = F.relu(self.fc2(x))  # (B, 84): the representation Z
        return self.fc3(z), z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_representation(x)[0]


MODELS: dict[str, Callable[..., nn.Module]] = {"lenet": LeNet}


def build_model(name: str, input_shape: tuple[int, ...], num_classes: int, seed: int) -> nn.Module:
    """A freshly initialised model; the same seed gives the same weights on every rank.

    Initialisation draws from torch's global generator, so it runs inside
    `fork_rng` and leaves the caller's RNG state as it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return MODELS[name](input_shape, num_classes)
