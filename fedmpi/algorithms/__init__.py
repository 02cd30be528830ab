"""Aggregation algorithms: the contract (fedmpi.algorithms.base) and one module each.

A new algorithm is one module that registers itself with
`@ALGORITHMS.register(name, Params)` plus its import here.
"""

from fedmpi.algorithms.base import ALGORITHMS, Algorithm, LocalWork, Setting, build_algorithm
from fedmpi.algorithms import fedavg  # noqa: F401  (registers "fedavg")
from fedmpi.algorithms import fedprox  # noqa: F401  (registers "fedprox")
from fedmpi.algorithms import scaffold  # noqa: F401  (registers "scaffold")
from fedmpi.algorithms import fedpvr  # noqa: F401  (registers "fedpvr")

__all__ = ["ALGORITHMS", "Algorithm", "LocalWork", "Setting", "build_algorithm"]
