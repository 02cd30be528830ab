"""A plain CNN of configurable depth, width and kernel size, for studying depth in FL.

Wang et al. (2023) find that federated accuracy falls with depth because
client divergence accumulates layer by layer, and that wider models and
smaller receptive fields reduce it; this model turns exactly those three
knobs while keeping everything else plain: no normalisation, no skip
connections.

Layout, for `depth` convolutions (1-based index i):

- every conv is `kernel` x `kernel`, stride 1, padding `kernel // 2`, so it
  keeps the map size, followed by ReLU;
- the convs form stages of two, as in VGG (Simonyan & Zisserman 2015); each
  stage ends in a 2x2 max-pool that halves the map; when `depth` is odd the
  last stage has one conv. So pools follow convs 2, 4, 6, ... and the last
  conv, ceil(depth / 2) pools in all;
- stage s (0-based) has `width * 2**min(s, 3)` channels: channels double
  after each pool up to 8x the first, as VGG's 64, 128, 256, 512, 512;
- then a hidden fully connected layer of `hidden` units with ReLU, whose
  output is Z, and the linear head `head` (the final layers).

The deepest net an H x W input supports has one pool per halving of its
shorter side, ceil(depth / 2) <= floor(log2(min(H, W))), i.e.
depth <= 2 * floor(log2(min(H, W))): 10 for 32x32 inputs, where the last
stage sees a 2x2 map and leaves 1x1. Every conv then sees a map of at
least 2x2. The builder knows the input shape and raises ValueError naming
`depth` and that limit.

Initialisation: convs and the hidden layer take He et al. (2015) normal
initialisation (std sqrt(2 / fan_in), zero biases), which keeps the
activation scale through a deep plain ReLU stack; the head keeps PyTorch's
default. The model has no buffers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedmpi.models.base import MODELS, FedModel, relu_max_pool2

MAX_GROWTH = 3  # channels double after at most 3 pools: the last stages have 8x width, as VGG


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class CNNParams:
    depth: int = 4  # conv layers; at most 2 * floor(log2(min(H, W))), 10 for 32x32
    width: int = 32  # channels of the first stage; doubles per stage up to 8x
    kernel: int = 3  # odd conv kernel size; smaller means a smaller receptive field
    hidden: int = 128  # units of the fully connected layer whose output is Z

    def check(self) -> None:
        if not _is_int(self.depth) or self.depth < 1:
            raise ValueError(f"depth must be an integer >= 1, got {self.depth!r}")
        if not _is_int(self.width) or self.width < 1:
            raise ValueError(f"width must be an integer >= 1 (channels of the first conv), got {self.width!r}")
        if not _is_int(self.kernel) or self.kernel < 1 or self.kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd integer >= 1 (so padding kernel // 2 keeps the map size), "
                             f"got {self.kernel!r}")
        if not _is_int(self.hidden) or self.hidden < 1:
            raise ValueError(f"hidden must be an integer >= 1, got {self.hidden!r}")


def max_depth(input_shape: tuple[int, ...]) -> int:
    """The deepest CNN an input (C, H, W) supports: 2 * floor(log2(min(H, W)))."""
    side = min(input_shape[1], input_shape[2])
    return 2 * (int(side).bit_length() - 1)  # bit_length - 1 is floor(log2(side)), exactly, for side >= 1


def stage_channels(params: CNNParams, num_stages: int) -> list[int]:
    """Channels of each stage: width, 2 width, 4 width, 8 width, 8 width, ..."""
    return [params.width * 2 ** min(s, MAX_GROWTH) for s in range(num_stages)]


@MODELS.register("cnn", CNNParams)
class CNN(FedModel):
    final_layers = ("head.weight", "head.bias")

    def __init__(self, params: CNNParams = CNNParams(), input_shape: tuple[int, ...] = (3, 32, 32),
                 num_classes: int = 10):
        super().__init__()
        params.check()
        channels, height, width = input_shape
        limit = max_depth(input_shape)
        if params.depth > limit:
            raise ValueError(f"depth must be at most {limit} for {height}x{width} inputs (a 2x2 max-pool "
                             f"after every two convs: ceil(depth / 2) pools need 2**pools <= {min(height, width)}), "
                             f"got {params.depth}")
        num_stages = (params.depth + 1) // 2
        widths = stage_channels(params, num_stages)
        convs, pool_after, c_in = [], [], channels
        for i in range(params.depth):  # 0-based: conv i belongs to stage i // 2
            c_out = widths[i // 2]
            convs.append(nn.Conv2d(c_in, c_out, params.kernel, padding=params.kernel // 2))
            pool_after.append(i % 2 == 1 or i == params.depth - 1)
            c_in = c_out
        self.convs = nn.ModuleList(convs)
        self.pool_after = tuple(pool_after)
        # max_pool2d floors odd sizes, and floor(floor(n / 2) / 2) = floor(n / 4): the map is n >> stages.
        flat_dim = c_in * (height >> num_stages) * (width >> num_stages)
        self.fc = nn.Linear(flat_dim, params.hidden)
        self.head = nn.Linear(params.hidden, num_classes)
        self.representation_dim = params.hidden
        for layer in (*self.convs, self.fc):
            nn.init.kaiming_normal_(layer.weight, mode="fan_in", nonlinearity="relu")
            nn.init.zeros_(layer.bias)

    def forward_with_representation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for conv, pool in zip(self.convs, self.pool_after):
            # (B, width * 2**min(s, 3), H >> s, W >> s) in stage s
            x = relu_max_pool2(conv(x)) if pool else F.relu(conv(x))
        z = F.relu(self.fc(x.flatten(1)))  # (B, D = hidden): the representation Z
        return self.head(z), z

    def logits_from_representation(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(z)
