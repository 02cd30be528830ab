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

    @property
    def num_trainable(self) -> int:
        """Entries of the vector that are parameters (they come first; floating buffers follow)."""
        return sum(slot.numel for slot in self.slots if slot.trainable)


class FlatSGD:
    """SGD with momentum and weight decay on the flat parameter vector.

    The update of `torch.optim.SGD` (dampening 0, no Nesterov), element for
    element and bit for bit (tested), as three vector operations over all
    parameters at once:
        g = grad + weight_decay * theta;  buf = g at the first step, else momentum * buf + g;
        theta -= lr * buf
    torch's optimizer imports torch._dynamo when the first one is built, 1.6 CPU
    seconds of every worker's start-up (measured), and walks the parameters one
    by one at every step. The momentum buffer is the optimizer's whole state.
    """

    def __init__(self, flat: "FlatParams", lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        n = flat.num_trainable
        self.theta = flat.vector[:n]  # (n,) views: the parameters part of the vector
        self.grad = flat.attach_grad()[:n]
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buf: torch.Tensor | None = None  # (n,) the momentum buffer; None: no step since a reset

    @torch.no_grad()
    def step(self) -> None:
        g = self.grad
        if self.weight_decay != 0:
            g = g.add(self.theta, alpha=self.weight_decay)
        if self.momentum != 0:
            if self.buf is None:
                self.buf = torch.clone(g).detach()
            else:
                self.buf.mul_(self.momentum).add_(g)
            g = self.buf
        self.theta.add_(g, alpha=-self.lr)

    def reset(self) -> None:
        """Drop the momentum: the next step starts it from its own gradient, as from zero."""
        self.buf = None

    def state(self) -> dict:
        """The momentum buffer and the learning rate now in use (a round may set its own)."""
        return {"momentum_buffer": None if self.buf is None else self.buf.detach().cpu().clone(), "lr": self.lr}

    def load_state(self, state: dict, slots: list[Slot]) -> None:
        """Load `state()`, or the state_dict of a torch.optim.SGD over the same parameters (the
        checkpoints of fedmpi before 2026-12-04): its buffers, one per parameter, in order."""
        if "param_groups" in state:
            buffers = [state["state"].get(j, {}).get("momentum_buffer") for j, slot in enumerate(slots)
                       if slot.trainable]
            self.buf = None if any(b is None for b in buffers) else \
                torch.cat([b.reshape(-1) for b in buffers]).to(self.theta.device)
            self.lr = float(state["param_groups"][0]["lr"])
            return
        buf = state["momentum_buffer"]
        self.buf = None if buf is None else buf.to(self.theta.device).clone()
        self.lr = float(state["lr"])


def layout_arrays(slots: list[Slot]) -> dict[str, np.ndarray]:
    """The layout as plain arrays for the trace: names, offsets, sizes."""
    return {
        "names": np.array([s.name for s in slots], dtype=object),
        "offsets": np.array([s.offset for s in slots], dtype=np.int64),
        "sizes": np.array([s.numel for s in slots], dtype=np.int64),
    }
