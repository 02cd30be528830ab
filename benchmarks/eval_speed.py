"""Evaluation speed of a model on one core: chunk size and memory layout, measured side by side.

    python benchmarks/eval_speed.py [--model lenet] [--examples 4000] [--repeats 5]

Evaluates `fedmpi.local.evaluate`'s forward pass (logits and Z) over
--examples CIFAR-10-shaped uint8 images, normalised per chunk as fedmpi does
(fedmpi.inputs.Inputs), in chunks of 64, 128, 256 and 1,000 examples, with
the images in the default (NCHW) or the channels-last layout, under
torch.inference_mode, one thread. The variants run in turn, --repeats times,
and each row is the best time (ms per example) and its ratio to the old
setting (chunks of 1,000, NCHW).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedmpi.data import CIFAR10_MEAN, CIFAR10_STD  # noqa: E402
from fedmpi.inputs import Inputs  # noqa: E402
from fedmpi.models import build_model  # noqa: E402


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


if __name__ == "__main__":
    main()
