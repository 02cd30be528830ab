"""LeNet-5 for 32x32 colour images (LeCun et al. 1998), with a width multiplier.

conv 6@5x5, max-pool, conv 16@5x5, max-pool, fc 120, fc 84, fc classes, ReLU
after every hidden layer; `width` multiplies every hidden width (6, 16, 120,
84), rounded, so width 1 is the network of Adilova et al. 2019. Z is the
output of the last hidden layer (84 units at width 1) after its ReLU; the
final layer `fc3` is the classifier head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedmpi.models.base import MODELS, FedModel, cpu_inference, relu_max_pool2


@dataclass(frozen=True)
class LeNetParams:
    width: float = 1.0  # multiplies every hidden width; 1 is LeNet-5

    def check(self) -> None:
        if not self.width > 0 or round(6 * self.width) < 1:
            raise ValueError(f"width must be a number > 0 that leaves every layer a unit "
                             f"(>= {1 / 6:.3f}), got {self.width!r}")


@MODELS.register("lenet", LeNetParams)
class LeNet(FedModel):
    final_layers = ("fc3.weight", "fc3.bias")

    def __init__(self, params: LeNetParams = LeNetParams(), input_shape: tuple[int, ...] = (3, 32, 32),
                 num_classes: int = 10):
        super().__init__()
        params.check()
        c1, c2, h1, h2 = (max(1, round(n * params.width)) for n in (6, 16, 120, 84))
        channels, height, width = input_shape
        self.representation_dim = h2
        self.conv1 = nn.Conv2d(channels, c1, 5)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        out_h, out_w = ((height - 4) // 2 - 4) // 2, ((width - 4) // 2 - 4) // 2
        self.fc1 = nn.Linear(c2 * out_h * out_w, h1)
        self.fc2 = nn.Linear(h1, h2)
        self.fc3 = nn.Linear(h2, num_classes)

    def forward_with_representation(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = relu_max_pool2(self._conv1(x))  # (B, 6w, 14, 14)
        x = relu_max_pool2(self.conv2(x))  # (B, 16w, 5, 5)
        return self._dense(x)

    def _conv1(self, x: torch.Tensor) -> torch.Tensor:
        """conv1(x). Without autograd on a CPU, for a channels-last input whose output width is
        even, as a convolution that computes two neighbouring output columns at each position:
        filters 5 x 6 at column stride 2, the first c of them the 5 x 5 filters with a zero
        column after, the other c with a zero column before. Its 2c output channels at column j
        are columns 2j and 2j + 1 of the c channels, so the result is a view of the same memory,
        channels-last. The same products are summed (plus exact zeros). With oneDNN's AVX-512
        kernels LeNet's 6 filters cost what 16 do, and this takes 0.65 of the time of conv1;
        with its AVX2 kernels (ONEDNN_MAX_CPU_ISA=AVX2) the two take the same time
        (benchmarks/eval_speed.py, docs/performance.md)."""
        conv = self.conv1
        b, _, _, w = x.shape
        out_w = w - conv.kernel_size[1] + 1
        if not cpu_inference(x) or out_w % 2 or 2 * conv.out_channels > 16:
            return conv(x)
        c, kh, kw = conv.out_channels, *conv.kernel_size
        pair = conv.weight.new_zeros((2 * c, conv.in_channels, kh, kw + 1))
        pair[:c, :, :, :kw] = conv.weight
        pair[c:, :, :, 1:] = conv.weight
        y = F.conv2d(x, pair, torch.cat([conv.bias, conv.bias]), stride=(1, 2))  # (B, 2c, H', W'/2)
        # channels-last memory (B, H', W'/2, 2c) is (B, H', W', c): column pairs side by side
        return y.permute(0, 2, 3, 1).reshape(b, y.shape[2], out_w, c).permute(0, 3, 1, 2)

    def _dense(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.relu(self.fc1(x.flatten(1)))  # (B, 120w)
        z = F.relu(self.fc2(x))  # (B, D = 84w): the representation Z
        return self.fc3(z), z

    def forward_pair(self, other: FedModel, x: torch.Tensor):
        """Both models' convolutions as one: conv1 with both sets of filters side by side
        (oneDNN's AVX-512 kernels compute LeNet's 6 filters in the time of 16, so a pair costs
        one conv1; with AVX2 kernels 12 filters take 0.76 of two sixes), conv2 as a grouped
        convolution over the pair. Each output channel sums the same products as alone.
        Without autograd only; else one model after the other."""
        if (torch.is_grad_enabled() or not isinstance(other, LeNet)
                or other.conv1.weight.shape != self.conv1.weight.shape):
            return super().forward_pair(other, x)
        c2 = self.conv2.out_channels
        both = [(self.conv1, other.conv1), (self.conv2, other.conv2)]
        (w1, b1), (w2, b2) = ((torch.cat([a.weight, b.weight]), torch.cat([a.bias, b.bias])) for a, b in both)
        x = relu_max_pool2(F.conv2d(x, w1, b1))  # (B, 2 * 6w, 14, 14): this model's channels first
        x = relu_max_pool2(F.conv2d(x, w2, b2, groups=2))  # (B, 2 * 16w, 5, 5)
        return self._dense(x[:, :c2]), other._dense(x[:, c2:])

    def logits_from_representation(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc3(z)
