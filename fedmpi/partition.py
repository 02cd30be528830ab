"""Splitting a training set over workers: pure functions of labels and a seed.

Every rank calls `partition` with the same labels and seed and so gets the
same shards; no data is sent. Schemes:
- `iid`: a seeded permutation cut into equal parts.
- `classes`: disjoint groups of classes, one group per worker (the non-iid case
  of Adilova et al. 2019: CIFAR-10's classes as 5 + 5 over two workers).
- `dirichlet`: per class, proportions over workers drawn from Dir(alpha)
  (Hsu, Qi, Brown 2019); small alpha gives skewed label mixes.
- `shards`: each worker holds `classes_per_client` labels ("#C=k", Li, Diao,
  Chen, He 2022, after McMahan et al. 2017): worker k gets class k mod K and
  k - 1 more drawn without repeats; each class is cut into equal parts among
  the workers that hold it. A class nobody holds is left out.
"""

from __future__ import annotations

import numpy as np

from fedmpi.errors import UsageError
from fedmpi.seeding import PARTITION, rng_for

# Re-draws before a Dirichlet split that leaves a worker too few examples is an error.
_DIRICHLET_TRIES = 100


def partition(labels: np.ndarray, num_workers: int, scheme: str, *, seed: int,
              alpha: float = 0.5, samples_per_worker: int = 0,
              min_examples: int = 1, classes_per_client: int = 2) -> list[np.ndarray]:
    """Shards of example indices, one sorted int64 array per worker.

    With samples_per_worker == 0 the shards cover every index exactly once
    (under `shards`, every index of a class some worker holds);
    otherwise each shard keeps the first `samples_per_worker` of its seeded
    order. A worker left with fewer than `min_examples` is a UsageError.
    """
    labels = np.asarray(labels)
    n = len(labels)
    if num_workers < 1:
        raise ValueError("num_workers must be >= 1")
    if num_workers > n:
        raise UsageError(f"{num_workers} workers but only {n} training examples; "
                         "use fewer ranks (mpirun -n) or a larger dataset")
    rng = rng_for(seed, PARTITION)
    if scheme == "iid":
        shards = np.array_split(rng.permutation(n), num_workers)
    elif scheme == "classes":
        shards = _by_class_groups(labels, num_workers, rng)
    elif scheme == "dirichlet":
        shards = _dirichlet(labels, num_workers, alpha, rng, max(min_examples, samples_per_worker))
    elif scheme == "shards":
        shards = _shards(labels, num_workers, classes_per_client, rng)
    else:
        raise UsageError(f"config: data.partition must be one of iid, classes, dirichlet, shards; got {scheme!r}")
    if samples_per_worker:
        short = [k for k, s in enumerate(shards) if len(s) < samples_per_worker]
        if short:
            raise UsageError(
                f"data.samples_per_worker={samples_per_worker} but worker {short[0] + 1} has only "
                f"{len(shards[short[0]])} examples under partition '{scheme}'; lower it or use fewer workers")
        shards = [s[:samples_per_worker] for s in shards]
    for k, s in enumerate(shards):
        if len(s) < min_examples:
            raise UsageError(f"worker {k + 1} gets {len(s)} examples under partition '{scheme}', "
                             f"fewer than the {min_examples} it needs; use fewer workers or another partition")
    return [np.sort(s).astype(np.int64) for s in shards]


def _by_class_groups(labels: np.ndarray, num_workers: int, rng: np.random.Generator) -> list[np.ndarray]:
    classes = np.unique(labels)
    if num_workers > len(classes):
        raise UsageError(f"partition 'classes' gives each worker its own classes, but there are "
                         f"{num_workers} workers and {len(classes)} classes; use fewer workers or "
                         "partition: dirichlet")
    groups = np.array_split(classes, num_workers)
    return [rng.permutation(np.flatnonzero(np.isin(labels, g))) for g in groups]


def _dirichlet(labels: np.ndarray, num_workers: int, alpha: float, rng: np.random.Generator,
               min_examples: int) -> list[np.ndarray]:
    classes = np.unique(labels)
    for _ in range(_DIRICHLET_TRIES):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_workers)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            share = rng.dirichlet(np.full(num_workers, alpha))
            cuts = (np.cumsum(share)[:-1] * len(idx)).astype(np.int64)
            for k, piece in enumerate(np.split(idx, cuts)):
                parts[k].append(piece)
        shards = [rng.permutation(np.concatenate(p)) for p in parts]
        if min(len(s) for s in shards) >= min_examples:
            return shards
    raise UsageError(f"partition 'dirichlet' with alpha={alpha} left a worker with fewer than "
                     f"{min_examples} examples in {_DIRICHLET_TRIES} draws; raise data.alpha or use fewer workers")


def _shards(labels: np.ndarray, num_workers: int, k: int, rng: np.random.Generator) -> list[np.ndarray]:
    classes = np.unique(labels)
    if not 1 <= k <= len(classes):
        raise UsageError(f"config: data.classes_per_client must be an integer in 1..{len(classes)} "
                         f"(the dataset's classes), got {k}")
    held = []  # (num_workers, k): the classes each worker holds
    for w in range(num_workers):
        first = classes[w % len(classes)]  # round robin first, so that with W >= K every class is held
        rest = rng.permutation(classes[classes != first])[:k - 1]
        held.append(np.concatenate([[first], rest]))
    parts: list[list[np.ndarray]] = [[] for _ in range(num_workers)]
    for c in classes:
        holders = [w for w in range(num_workers) if c in held[w]]
        if not holders:
            continue
        for w, piece in zip(holders, np.array_split(rng.permutation(np.flatnonzero(labels == c)), len(holders))):
            parts[w].append(piece)
    return [rng.permutation(np.concatenate(p)) for p in parts]
