"""Size and training speed of every registered model; and what averaging does to BatchNorm.

    python benchmarks/model_speed.py [--repeats 5] [--seconds 1.0] [--skip-averaging]
                                     [--avg-steps 600] [--avg-seeds 0 1]

Speed: for every registered model with its default parameters (plus the
BatchNorm ResNet-20 and the deepest CNN a 32x32 input allows) prints the
parameter count, the flat vector size (parameters and floating buffers),
the integer buffers, D (the width of Z), and training steps per second at
batch 32 on one thread. A step is what a worker runs: `LocalTrainer.train`
(index a batch, forward, cross-entropy, backward into the flat gradient,
SGD with momentum). Each model is warmed up, then timed in `--repeats` runs
of about `--seconds` each; the median and the best run are printed.

Averaging (Ioffe & Szegedy 2015 BatchNorm against Wu & He 2018 GroupNorm,
fedmpi.models.resnet): two clients start from the same resnet8, train
`--avg-steps` steps apart on their halves of a synthetic training set
(fedmpi.data.synthetic), and their flat vectors are averaged, weighted by
shard size, as FedAvg's first sync point does. With BatchNorm the running
statistics are averaged with the weights (the fedmpi contract). Printed:
test accuracy of each client and of the average, for an iid split and for
the paper's non-iid split (classes 0-4 / 5-9); for BatchNorm also the
average re-measured after recomputing its running statistics on the whole
training set in one pass, which tells the statistics' share of the loss
apart from the weights'. One line per seed, then the mean.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedmpi import config  # noqa: E402
from fedmpi.data import synthetic  # noqa: E402
from fedmpi.flat import FlatParams  # noqa: E402
from fedmpi.local import LocalTrainer, evaluate  # noqa: E402
from fedmpi.models import MODELS, build_model  # noqa: E402

BATCH = 32
SHAPE = (3, 32, 32)
EXAMPLES = 640  # random images the speed runs index batches from: 20 batches per epoch


def speed_cases() -> list[tuple[str, str, dict]]:
    cases = [(name, name, {}) for name in MODELS]
    cases.append(("resnet20 norm=batch", "resnet20", {"norm": "batch"}))
    cases.append(("cnn depth=10", "cnn", {"depth": 10}))
    return cases


def trainer_for(name: str, values: dict, x: torch.Tensor, y: torch.Tensor, seed: int,
                lr: float = 0.01, worker: int = 1) -> LocalTrainer:
    cfg = config.from_dict({"seed": seed, "train": {"batch_size": BATCH, "lr": lr, "momentum": 0.9}})
    model = build_model(name, x.shape[1:], 10, seed, MODELS.params(name, **values))
    return LocalTrainer(cfg, model, x, y, worker)


def time_steps(trainer: LocalTrainer, repeats: int, seconds: float) -> tuple[float, float]:
    """(median, best) steps per second over `repeats` runs of about `seconds` each."""
    trainer.train(2)  # warm-up: first-call allocations, lazy kernels
    t0 = time.perf_counter()
    trainer.train(3)
    per_step = (time.perf_counter() - t0) / 3
    steps = max(3, round(seconds / per_step))
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        trainer.train(steps)
        rates.append(steps / (time.perf_counter() - t0))
    return statistics.median(rates), max(rates)


def run_speed(repeats: int, seconds: float) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((EXAMPLES, *SHAPE), generator=gen)  # (N, 3, 32, 32) float32
    y = torch.randint(0, 10, (EXAMPLES,), generator=gen)  # (N,) int64
    print(f"training steps per second, batch {BATCH}, {torch.get_num_threads()} thread(s), "
          f"{repeats} runs of ~{seconds:g} s (median, best)")
    header = (f"{'model':<20} {'params':>10} {'flat':>10} {'int buf':>7} {'D':>4} "
              f"{'steps/s':>8} {'best':>8} {'ms/step':>8}")
    print(header)
    print("-" * len(header))
    for label, name, values in speed_cases():
        trainer = trainer_for(name, values, x, y, seed=0)
        params = sum(p.numel() for p in trainer.model.parameters())
        median, best = time_steps(trainer, repeats, seconds)
        print(f"{label:<20} {params:>10,} {trainer.flat.size:>10,} {len(trainer.flat.int_buffers()):>7} "
              f"{trainer.model.representation_dim:>4} {median:>8.1f} {best:>8.1f} {1000 / median:>8.1f}", flush=True)


@torch.no_grad()
def recompute_batchnorm_stats(model: nn.Module, x: torch.Tensor) -> None:
    """Replace every BatchNorm's running statistics by those of `x`, in one pass, in place.

    momentum=None makes BatchNorm keep a cumulative average over the batches
    seen since the reset, so one pass over x in batches of BATCH gives the mean
    of the per-batch statistics of x under the model's current weights."""
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for start in range(0, len(x), BATCH):
        model(x[start:start + BATCH])
    for m, momentum in zip(norms, saved):
        m.momentum = momentum


def run_averaging(steps: int, seeds: list[int]) -> None:
    n_train, n_test = 4096, 2000
    print(f"\naveraging two resnet8 clients after {steps} local steps each (batch {BATCH}, lr 0.05, "
          f"momentum 0.9), synthetic data, {n_train // 2} training examples per client, {n_test} test examples")
    header = (f"{'split':<9} {'norm':<6} {'seed':>4} {'client 0':>9} {'client 1':>9} {'average':>9} "
              f"{'avg, stats recomputed':>22}")
    print(header)
    print("-" * len(header))
    results: dict[tuple[str, str], list[tuple[float, ...]]] = {}
    for seed in seeds:
        data = synthetic(n_train, n_test, seed)
        train_x, test_x = data.to_tensor(data.train_x), data.to_tensor(data.test_x)  # (N, 3, 32, 32)
        train_y, test_y = torch.from_numpy(data.train_y), torch.from_numpy(data.test_y)
        order = np.random.default_rng([seed, 99]).permutation(n_train)
        splits = {"iid": (order[: n_train // 2], order[n_train // 2:]),
                  "classes": (np.flatnonzero(data.train_y < 5), np.flatnonzero(data.train_y >= 5))}
        for split, shards in splits.items():
            for norm in ("group", "batch"):
                clients = [trainer_for("resnet8", {"norm": norm}, train_x[torch.from_numpy(s)],
                                       train_y[torch.from_numpy(s)], seed, lr=0.05, worker=k)
                           for k, s in enumerate(shards)]
                for c in clients:
                    c.train(steps)
                weights = torch.tensor([len(s) for s in shards], dtype=torch.float64)
                thetas = torch.stack([c.flat.vector.double() for c in clients])  # (2, num_params) float64
                average = ((weights[:, None] * thetas).sum(0) / weights.sum()).float()  # (num_params,)
                accs = [evaluate(c.model, test_x, test_y).accuracy for c in clients]
                evaluator = build_model("resnet8", SHAPE, 10, seed, MODELS.params("resnet8", norm=norm))
                flat = FlatParams(evaluator)
                flat.assign(average)
                accs.append(evaluate(evaluator, test_x, test_y).accuracy)
                if norm == "batch":
                    recompute_batchnorm_stats(evaluator, train_x)
                    accs.append(evaluate(evaluator, test_x, test_y).accuracy)
                results.setdefault((split, norm), []).append(tuple(accs))
                recomputed = f"{accs[3]:>22.3f}" if norm == "batch" else f"{'(no statistics)':>22}"
                print(f"{split:<9} {norm:<6} {seed:>4} {accs[0]:>9.3f} {accs[1]:>9.3f} {accs[2]:>9.3f} {recomputed}",
                      flush=True)
    print("mean over seeds")
    for (split, norm), rows in results.items():
        mean = np.mean(np.array(rows), axis=0)
        recomputed = f"{mean[3]:>22.3f}" if norm == "batch" else f"{'':>22}"
        print(f"{split:<9} {norm:<6} {'all':>4} {mean[0]:>9.3f} {mean[1]:>9.3f} {mean[2]:>9.3f} {recomputed}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one timed run")
    ap.add_argument("--skip-averaging", action="store_true")
    ap.add_argument("--avg-steps", type=int, default=600, help="local steps per client before averaging")
    ap.add_argument("--avg-seeds", type=int, nargs="+", default=[0, 1])
    args = ap.parse_args()
    torch.set_num_threads(1)
    run_speed(args.repeats, args.seconds)
    if not args.skip_averaging:
        run_averaging(args.avg_steps, args.avg_seeds)


if __name__ == "__main__":
    main()
