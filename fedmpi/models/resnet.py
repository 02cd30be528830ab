"""CIFAR ResNets of He et al. (2016), the 6n+2 family: resnet8, resnet20, resnet32, resnet56.

The network of He et al. 2016, Sec. 4.2: a 3x3 conv of 16 channels, then
three stages of n basic blocks (two 3x3 convs each) on maps of 32x32, 16x16
and 8x8 with 16, 32 and 64 channels, global average pooling and a linear
layer: 6n + 2 weighted layers, n = 1, 3, 5, 9. The first conv of stages 2
and 3 has stride 2. `width` multiplies the channels: stages have c, 2c, 4c
channels with c = round(16 * width), so width 1 is the paper's network.

Shortcuts are option A of the paper, which its CIFAR experiments use:
identity, and where a block changes the shape, the input subsampled by
taking every second pixel and padded with zero channels. They have no
parameters, so the parameter counts are the paper's (0.27M, 0.46M, 0.85M
for resnet20/32/56 at width 1; 75,290 for resnet8) and averaging touches
only convs, norms and the linear layer.

Z is the globally pooled output of the last block (after its ReLU),
(B, 4c) = (B, 64 * width); the final linear layer `fc` is the head.

Normalisation, parameter `norm`:

- `group` (the default): GroupNorm (Wu & He 2018) after every conv. It has
  no buffers and computes the same function in training and evaluation, so
  the model's state is its parameters alone: averaging acts on the whole
  model and resume is exact with nothing else to carry. `groups` defaults
  to 8: Wu & He's 32 groups leave 2 channels per group in the narrowest
  (64-channel) layers of an ImageNet ResNet-50; 8 groups give the same 2 per
  group in the narrowest (16-channel) stage here, and 4 and 8 in the
  others. One group would be LayerNorm and one channel per group
  InstanceNorm, both of which Wu & He found worse than groups in between.
  8 divides every stage whenever it divides round(16 * width).
- `batch`: BatchNorm (Ioffe & Szegedy 2015). Its running mean and variance
  are floating buffers: they live in the flat vector (fedmpi.flat) and are
  averaged like parameters, and `num_batches_tracked` (an integer, unused
  at BatchNorm's default momentum) stays with each client and is
  checkpointed. Two things follow. The average of the clients' running
  variances is not the variance of their pooled features (it misses the
  spread of the client means), and the averaged statistics need not be the
  statistics the averaged weights produce, so the averaged model is
  evaluated with mismatched normalisation; and clients train with batch
  statistics but are measured with running ones. Hsieh et al. (2020)
  report BatchNorm failing under non-iid data, one reason GroupNorm is the
  default.

Measured (benchmarks/model_speed.py, resnet8, two clients from one init,
600 local steps apart on synthetic data, weighted average, test accuracy,
mean of seeds 0 and 1): with an iid split the average scores 0.943 with
GroupNorm and 0.996 with BatchNorm (clients ~0.99 and 1.00); with a classes
0-4 / 5-9 split (clients ~0.50 each) it scores 0.393 with GroupNorm and
0.271 with BatchNorm, and 0.643 once the BatchNorm average's running
statistics are recomputed on the training data: under non-iid data the
averaged statistics, not only the averaged weights, cost BatchNorm
accuracy. On that synthetic data GroupNorm also learns slower: one
resnet8 on 2,048 examples (lr 0.05, seed 0) first scored above 0.98 at
step 500 with GroupNorm and at step 200 with BatchNorm (0.18 with
GroupNorm at step 200).

Initialisation: convs take He et al. (2015) normal initialisation
(std sqrt(2 / fan_in)) and no bias (the norm after each has its own
shift); norms start at weight 1, bias 0; the linear layer keeps PyTorch's
default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from fedmpi.models.base import MODELS, FedModel

NORMS = ("group", "batch")


@dataclass(frozen=True)
class ResNetParams:
    width: float = 1.0  # multiplies the 16/32/64 stage channels; 1 is He et al.'s network
    norm: Literal["group", "batch"] = "group"  # group: stateless, averages exactly; batch: BatchNorm
    groups: int = 8  # GroupNorm groups (norm: group); must divide round(16 * width)

    def check(self) -> None:
        if isinstance(self.width, bool) or not isinstance(self.width, (int, float)) or not self.width > 0 \
                or round(16 * self.width) < 1:
            raise ValueError(f"width must be a number > 0 that leaves the first stage a channel "
                             f"(round(16 * width) >= 1), got {self.width!r}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if isinstance(self.groups, bool) or not isinstance(self.groups, int) or self.groups < 1:
            raise ValueError(f"groups must be an integer >= 1, got {self.groups!r}")
        channels = round(16 * self.width)
        if self.norm == "group" and channels % self.groups:
            raise ValueError(f"groups must divide the first stage's round(16 * width) = {channels} channels "
                             f"(norm: group), got {self.groups}")


def _norm(params: ResNetParams, channels: int) -> nn.Module:
    if params.norm == "batch":
        return nn.BatchNorm2d(channels)
    return nn.GroupNorm(params.groups, channels)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a norm after each; option A shortcut (He et al. 2016)."""

    def __init__(self, params: ResNetParams, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(params, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = _norm(params, c_out)
        self.stride = stride
        self.extra_channels = c_out - c_in

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            # Every second pixel: ceil(H / 2) rows, the size the stride-2, padding-1 conv gives.
            x = x[:, :, ::self.stride, ::self.stride]
        if self.extra_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.extra_channels))  # zero channels after the input's
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(FedModel):
    """ResNet-(6n+2) for CIFAR; `blocks` is n, the basic blocks per stage."""

    final_layers = ("fc.weight", "fc.bias")

    def __init__(self, blocks: int, params: ResNetParams = ResNetParams(),
                 input_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10):
        super().__init__()
        if isinstance(blocks, bool) or not isinstance(blocks, int) or blocks < 1:
            raise ValueError(f"blocks must be an integer >= 1 (n of ResNet-(6n+2)), got {blocks!r}")
        params.check()
        c = round(16 * params.width)
        self.conv1 = nn.Conv2d(input_shape[0], c, 3, padding=1, bias=False)
        self.norm1 = _norm(params, c)
        stages, c_in = [], c
        for s, c_out in enumerate((c, 2 * c, 4 * c)):
            stride = 1 if s == 0 else 2
            stage = [BasicBlock(params, c_in, c_out, stride)]
            stage += [BasicBlock(params, c_out, c_out, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            c_in = c_out
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(4 * c, num_classes)
        self.representation_dim = 4 * c
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")

    def forward_with_representation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.norm1(self.conv1(x)))  # (B, c, H, W)
        x = self.layer1(x)  # (B, c, H, W)
        x = self.layer2(x)  # (B, 2c, H/2, W/2)
        x = self.layer3(x)  # (B, 4c, H/4, W/4)
        z = x.mean(dim=(2, 3))  # (B, D = 4c): global average pool, the representation Z
        return self.fc(z), z

    def logits_from_representation(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc(z)


def _register(name: str, blocks: int) -> None:
    """ResNet-(6n+2) as model `name`: n = `blocks` blocks per stage."""
    def build(params: ResNetParams = ResNetParams(), input_shape: tuple[int, ...] = (3, 32, 32),
              num_classes: int = 10) -> ResNet:
        return ResNet(blocks, params, input_shape, num_classes)
    build.__name__ = build.__qualname__ = name
    build.__doc__ = f"ResNet-{6 * blocks + 2}: n = {blocks} block(s) per stage."
    MODELS.register(name, ResNetParams)(build)


for _name, _blocks in (("resnet8", 1), ("resnet20", 3), ("resnet32", 5), ("resnet56", 9)):
    _register(_name, _blocks)
