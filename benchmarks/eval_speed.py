"""Evaluation speed of a model on one core: chunk size and memory layout, measured side by side.

    python benchmarks/eval_speed.py [--model lenet] [--examples 4000] [--repeats 5]

Evaluates `fedmpi.local.evaluate`'s forward pass (logits and Z) over
--examples CIFAR-10-shaped uint8 images, normalised per chunk as fedmpi does
(fedmpi.inputs.Inputs), in chunks of 64, 128, 256 and 1,000 examples, with
the images in the default (NCHW) or the channels-last layout, under
torch.inference_mode, one thread. The variants run in turn, --repeats times,
and each row is the best time (ms per example) and its ratio to the old
setting (chunks of 1,000, NCHW).

A second table times what a worker does at a logged sync point: its local
and its global model on the same --examples, through `fedmpi.local.evaluate`
twice with torch's own layers (ReLU, F.max_pool2d and conv1 as it is: the
code before `fedmpi.models.base.relu_max_pool2` and `LeNet._conv1`), twice as this
version evaluates one model, and once through `evaluate_pair` (LeNet shares
its convolutions between the two models), alternately, best of --repeats,
and the ratio of each to the first.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch.nn.functional as F  # noqa: E402

from fedmpi import local  # noqa: E402
from fedmpi.data import CIFAR10_MEAN, CIFAR10_STD  # noqa: E402
from fedmpi.inputs import Inputs  # noqa: E402
from fedmpi.models import build_model, cnn, lenet  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="lenet")
    parser.add_argument("--examples", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model = build_model(args.model, (3, 32, 32), 10, seed=0).eval()
    raw = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (args.examples, 3, 32, 32), dtype=np.uint8))
    x = Inputs(raw, CIFAR10_MEAN, CIFAR10_STD)
    variants = [(chunk, layout) for chunk in (64, 128, 256, 1000)
                for layout in (torch.contiguous_format, torch.channels_last)]
    best = {v: float("inf") for v in variants}
    for _ in range(args.repeats):
        for chunk, layout in variants:
            start = time.perf_counter()
            with torch.inference_mode():
                for s in range(0, len(x), chunk):
                    model.forward_with_representation(x.rows(s, s + chunk).contiguous(memory_format=layout))
            best[chunk, layout] = min(best[chunk, layout], (time.perf_counter() - start) / len(x) * 1e3)
    base = best[1000, torch.contiguous_format]
    print(f"{args.model}, {args.examples} examples, best of {args.repeats}, 1 thread, torch {torch.__version__}")
    print(f"{'chunk':>6} {'layout':>14} {'ms/example':>11} {'vs 1000 NCHW':>13}")
    for (chunk, layout), ms in best.items():
        name = "channels_last" if layout == torch.channels_last else "NCHW"
        print(f"{chunk:>6} {name:>14} {ms:>11.4f} {ms / base:>13.2f}")
    pair(args, x)


def pair(args, x: Inputs) -> None:
    """The local and the global model on the same examples: two passes or one pair pass."""
    one = build_model(args.model, (3, 32, 32), 10, seed=0)
    other = build_model(args.model, (3, 32, 32), 10, seed=1)
    y = torch.from_numpy(np.random.default_rng(1).integers(0, 10, len(x)))
    x = x.for_evaluation()  # as a worker holds its evaluation subset
    fast, conv1 = lenet.relu_max_pool2, lenet.LeNet._conv1

    def two(pool, first_conv):
        def run():
            lenet.relu_max_pool2 = cnn.relu_max_pool2 = pool
            lenet.LeNet._conv1 = first_conv
            try:
                local.evaluate(one, x, y, 0, False)
                local.evaluate(other, x, y, 0, False)
            finally:
                lenet.relu_max_pool2 = cnn.relu_max_pool2 = fast
                lenet.LeNet._conv1 = conv1
        return run

    variants = {"two passes, torch's layers": two(lambda h: F.max_pool2d(F.relu(h), 2), lambda self, h: self.conv1(h)),
                "two passes, this version": two(fast, conv1),
                "evaluate_pair": lambda: local.evaluate_pair(one, other, x, y, 0, False)}
    best = {name: float("inf") for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], (time.perf_counter() - start) / len(x) * 1e3)
    base = best["two passes, torch's layers"]
    print(f"\nlocal and global model on the same {len(x)} examples (chunks of {local.EVAL_CHUNK}, channels-last)")
    print(f"{'':>26} {'ms/example':>11} {'ratio':>7}")
    for name, ms in best.items():
        print(f"{name:>26} {ms:>11.4f} {ms / base:>7.2f}")


if __name__ == "__main__":
    main()
