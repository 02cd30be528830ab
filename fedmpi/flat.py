"""A model's parameters living in one flat float32 vector.

`FlatParams` re-points every parameter (and floating buffer) of a module at a
slice of one contiguous vector, so the optimizer updates the vector in place
and a sync point reads or writes the whole model with one copy: no state-dict
pickling, no per-tensor messages. The layout (name, offset, shape per tensor)
is stored in the trace so per-layer analyses can cut the vector again.

Integer buffers (BatchNorm's `num_batches_tracked`) cannot live in a float
vector and are not averaged: they stay as they are, and `int_buffers()` /
`load_int_buffers()` carry them through checkpoints, so a resumed model is
the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Slot:
    name: str
    offset: int
    shape: tuple[int, ...]
    trainable: bool = True  # a parameter (False: a floating buffer, e.g. BatchNorm running statistics)

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


class FlatParams:
    """Parameters and floating buffers of `module` as views into `self.vector` (num_params,) float32."""

    def __init__(self, module: nn.Module):
        tensors = [(n, p) for n, p in module.named_parameters()]
        tensors += [(n, b) for n, b in module.named_buffers() if b.is_floating_point()]
        self._int_buffers = [(n, b) for n, b in module.named_buffers() if not b.is_floating_point()]
        self.slots: list[Slot] = []
        offset = 0
        num_parameters = len(list(module.parameters()))
        for j, (name, t) in enumerate(tensors):
            self.slots.append(Slot(name, offset, tuple(t.shape), trainable=j < num_parameters))
            offset += t.numel()
        device = tensors[0][1].device if tensors else torch.device("cpu")
        self.vector = torch.empty(offset, dtype=torch.float32, device=device)  # (num_params,)
        for slot, (name, t) in zip(self.slots, tensors):
            view = self.vector[slot.offset:slot.offset + slot.numel].view(slot.shape)
            view.copy_(t.detach())
            t.data = view  # the module now reads and writes the vector
        self._params = [p for _, p in module.named_parameters()]
        self.grad: torch.Tensor | None = None

    def attach_grad(self) -> torch.Tensor:
        """Make every parameter's .grad a view into one vector (num_params,) and return it.

        Autograd then accumulates into the vector in place, so a gradient hook
        sees the whole gradient as one vector. Zero it with `grad.zero_()`
        before each backward pass; `optimizer.zero_grad()` would detach the views.
        """
        if self.grad is None:
            self.grad = torch.zeros_like(self.vector)  # (num_params,); slots of buffers stay 0
            for slot, p in zip(self.slots, self._params):  # parameters come first in the slots
                p.grad = self.grad[slot.offset:slot.offset + slot.numel].view(slot.shape)
        return self.grad

    @property
    def size(self) -> int:
        return self.vector.numel()

    def assign(self, values: torch.Tensor) -> None:
        """Overwrite every parameter and floating buffer with `values` (num_params,), in place."""
        self.vector.copy_(values)

    def int_buffers(self) -> dict[str, torch.Tensor]:
        """Copies of the integer buffers, on the CPU, by name."""
        return {name: b.detach().cpu().clone() for name, b in self._int_buffers}

    def load_int_buffers(self, values: dict[str, torch.Tensor]) -> None:
        for name, b in self._int_buffers:
            b.copy_(values[name])


def layout_arrays(slots: list[Slot]) -> dict[str, np.ndarray]:
    """The layout as plain arrays for the trace: names, offsets, sizes."""
    return {
        "names": np.array([s.name for s in slots], dtype=object),
        "offsets": np.array([s.offset for s in slots], dtype=np.int64),
        "sizes": np.array([s.numel for s in slots], dtype=np.int64),
    }
