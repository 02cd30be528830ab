"""Examples as a rank holds them: stored compactly, normalised one batch at a time.

CIFAR-10 images stay uint8 on the rank's device, a quarter of the memory of
float32 (a worker's 25,000-image shard: 77 MB instead of 307 MB), and each
training batch or evaluation chunk is normalised when it is taken. The
normalisation is elementwise and runs the same operations in the same order
as `Dataset.to_tensor` (to float32, / 255, - mean, / std), so a batch equals
the same rows of the normalised whole, bit for bit. Float inputs (the
synthetic dataset, tests) pass through the same path with mean 0, std 1.
"""

from __future__ import annotations

import torch

# A normalised copy of an evaluation set is kept when it is at most this large: evaluated at
# every logged round, such a set would otherwise be normalised and re-laid-out every time
# (a third of LeNet's evaluation time, measured); a larger one (a whole shard) is not worth
# the memory.
EVAL_COPY_BYTES = 100 * 2**20


class Inputs:
    """Stored examples (N, C, H, W) or (N, ...) and how to normalise them."""

    def __init__(self, raw: torch.Tensor, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None):
        self.raw = raw  # (N, ...) uint8 images or float32, on the rank's device
        self.scaled = raw.dtype == torch.uint8  # uint8 pixels are divided by 255 first
        shape = (1, -1) + (1,) * (raw.dim() - 2)  # per channel, broadcast over the rest
        self.mean = None if mean is None else torch.tensor(mean, dtype=torch.float32, device=raw.device).view(shape)
        self.std = None if std is None else torch.tensor(std, dtype=torch.float32, device=raw.device).view(shape)

    @classmethod
    def of(cls, x) -> "Inputs":
        """`x` as Inputs: Inputs pass through; a float tensor is taken as already normalised."""
        return x if isinstance(x, Inputs) else cls(x)

    def __len__(self) -> int:
        return self.raw.shape[0]

    @property
    def device(self) -> torch.device:
        return self.raw.device

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.raw.shape)

    def _normalise(self, part: torch.Tensor) -> torch.Tensor:
        out = part.to(torch.float32)
        if self.scaled:
            out /= 255.0
        if self.mean is not None:
            out = (out - self.mean) / self.std
        return out

    def take(self, idx: torch.Tensor, transform=None) -> torch.Tensor:
        """The normalised examples idx (B,) int64, passed through `transform` (augmentation, on
        (B, C, H, W)) when given: (B, ...) float32 in `layout`, a new tensor."""
        batch = self._normalise(self.raw.index_select(0, idx))
        if transform is not None:
            batch = transform(batch)
        return batch.contiguous(memory_format=self.layout)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """The normalised examples start..stop-1: (stop - start, ...) float32 (a view of the
        stored examples when they need no normalising: read it, do not write it)."""
        return self._normalise(self.raw[start:stop])

    def __getitem__(self, positions) -> "Inputs":
        """The examples at `positions` (a slice: a view; indices: a copy), stored alike."""
        return self.subset(positions)

    def subset(self, positions) -> "Inputs":
        """The examples at `positions`, stored alike (a slice is a view, indices a copy)."""
        out = Inputs.__new__(Inputs)
        out.raw, out.scaled, out.mean, out.std = self.raw[positions], self.scaled, self.mean, self.std
        return out

    def to(self, device) -> "Inputs":
        out = Inputs.__new__(Inputs)
        out.raw, out.scaled = self.raw.to(device), self.scaled
        out.mean = None if self.mean is None else self.mean.to(device)
        out.std = None if self.std is None else self.std.to(device)
        return out

    @property
    def layout(self) -> torch.memory_format:
        """The layout examples go through a model in, training and evaluation alike:
        channels-last for images, else as they are. On a CPU a LeNet training step took 4.21
        against 5.66 ms in NCHW (docs/performance.md) and its evaluation 0.45x the time
        (benchmarks/eval_speed.py)."""
        return torch.channels_last if self.raw.dim() == 4 else torch.contiguous_format

    def chunk(self, start: int, stop: int) -> torch.Tensor:
        """The normalised examples start..stop-1 in `layout`, for a forward pass."""
        return self.rows(start, stop).contiguous(memory_format=self.layout)

    def for_evaluation(self) -> "Inputs":
        """These examples normalised once and kept in `layout`, when that copy is at most
        EVAL_COPY_BYTES; else self. `chunk` gives the same values either way."""
        if self.mean is None and not self.scaled and self.raw.is_contiguous(memory_format=self.layout):
            return self  # already normalised and laid out
        if len(self) * self.raw[:1].numel() * 4 > EVAL_COPY_BYTES:
            return self
        return Inputs(self.all().contiguous(memory_format=self.layout))

    def all(self) -> torch.Tensor:
        """Every example, normalised: (N, ...) float32."""
        return self.rows(0, len(self))
