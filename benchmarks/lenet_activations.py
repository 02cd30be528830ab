"""Representations Z of a LeNet trained in the repo, for checking MI estimators on real activations.

Trains `fedmpi.models.build_model("lenet", (3, 32, 32), 10, seed)` with plain
SGD on one iid half of the CIFAR-10 training set (25,000 images, as one
worker of the paper's job: batch 32, lr 0.01, momentum 0.9) and, at chosen
step counts, records for two probe sets of P images each

- "shard": the first P images of the training half (what fedmpi logs: the
  probe is part of the worker's own data), and
- "test": the first P images of the CIFAR-10 test set (held out),

the representation Z (P, 84) float32 (last hidden layer, after its ReLU),
the labels (P,) int64, the model's predictions (P,) int64 and its
log-probability of the true label (P,) float64 -- what the Fano bound and
the model's own head bound (H(Y) - CE) need. The truth I(Z;Y) is unknown;
the bounds are not.

Results are cached in an .npz file (training takes a few minutes on 2 CPU
cores). Used by benchmarks/mi_accuracy.py; run alone to (re)build the cache:

    PYTHONPATH=. python benchmarks/lenet_activations.py --out /tmp/fedmpi-lenet-z.npz
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

DEFAULT_STEPS = (0, 200, 800, 2400, 7820, 15640)  # 7,820 steps = 10 epochs of 25,000 at batch 32
DEFAULT_CACHE = "/tmp/fedmpi-lenet-z.npz"


def build(root: str, steps=DEFAULT_STEPS, probe: int = 2000, seed: int = 0, threads: int = 2) -> dict:
    """Train and snapshot; returns {key: array} with keys `<set>_<what>_<step>` (see module doc)."""
    import torch
    import torch.nn.functional as F

    from fedmpi.data import load_cifar10
    from fedmpi.models import build_model

    torch.set_num_threads(threads)
    ds = load_cifar10(root)
    order = np.random.default_rng(seed).permutation(len(ds.train_y))
    shard = order[:len(order) // 2]  # one iid half, as one of the paper's two workers
    x = ds.to_tensor(ds.train_x[shard])  # (25000, 3, 32, 32) float32
    y = torch.from_numpy(ds.train_y[shard])
    probes = {"shard": (x[:probe], y[:probe]),
              "test": (ds.to_tensor(ds.test_x[:probe]), torch.from_numpy(ds.test_y[:probe]))}
    model = build_model("lenet", (3, 32, 32), 10, seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, np.ndarray] = {"steps": np.asarray(steps, dtype=np.int64)}
    done, perm, pos = 0, torch.randperm(len(y), generator=gen), 0
    t0 = time.perf_counter()
    for target in sorted(steps):
        model.train()
        while done < target:
            if pos + 32 > len(perm):
                perm, pos = torch.randperm(len(y), generator=gen), 0
            idx = perm[pos:pos + 32]
            pos += 32
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
        model.eval()
        with torch.no_grad():
            for name, (px, py) in probes.items():
                logits, z = model.forward_with_representation(px)
                logp = torch.log_softmax(logits.double(), dim=1)
                out[f"{name}_z_{target}"] = z.numpy().astype(np.float32)
                out[f"{name}_y_{target}"] = py.numpy().astype(np.int64)
                out[f"{name}_pred_{target}"] = logits.argmax(1).numpy().astype(np.int64)
                out[f"{name}_logp_{target}"] = logp[torch.arange(len(py)), py].numpy()
        acc = {n: float((out[f"{n}_pred_{target}"] == out[f"{n}_y_{target}"]).mean()) for n in probes}
        print(f"step {target:6d}: probe accuracy shard {acc['shard']:.3f}, test {acc['test']:.3f} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return out


def load_or_build(path: str, root: str, **kw) -> dict:
    """The cached snapshots at `path`, built (and saved) first if missing."""
    if not os.path.exists(path):
        np.savez_compressed(path, **build(root, **kw))
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=DEFAULT_CACHE)
    ap.add_argument("--data", default="/work/data", help="folder holding cifar-10-batches-py/")
    ap.add_argument("--probe", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    np.savez_compressed(args.out, **build(args.data, probe=args.probe, seed=args.seed, threads=args.threads))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
