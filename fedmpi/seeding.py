"""Named random streams derived from the one job seed.

Each purpose gets its own stream, `np.random.default_rng([seed, PURPOSE, ...])`,
so adding randomness in one place never shifts another (the partition does not
change when the probe size does). Nothing here touches global RNG state.
"""

from __future__ import annotations

import numpy as np

# Stream tags: fixed forever, part of what makes a trace reproducible.
PARTITION = 1
SUBSETS = 2  # per-worker probe / evaluation subsets
ORDER = 3  # per-worker batch order
INIT = 4  # model initialisation
SYNTHETIC = 5
TEST = 6  # test subset
CLIENTS = 7  # per-round client sampling
COMPRESSION = 8  # per-worker, per-sync-point draws of stochastic compressors
AUGMENT = 9  # per-client training-time augmentation (data.augment)
TEST_SUBSET = 10  # the test examples of logged rounds before the last (data.test_subset)
TEST_PROBE = 11  # per-worker held-out probes drawn from the test set (data.probe_from: test)


def rng_for(seed: int, *tags: int) -> np.random.Generator:
    return np.random.default_rng([seed, *tags])


def int_seed(seed: int, *tags: int) -> int:
    """A 63-bit integer seed for libraries that take one (torch.Generator)."""
    return int(rng_for(seed, *tags).integers(0, 2**63 - 1))
