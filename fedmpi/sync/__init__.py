"""Sync policies: when a check point is a sync point. The contract (fedmpi.sync.base) and one module each.

A new policy is one module that registers itself with
`@SYNC_POLICIES.register(name, Params)` plus its import here; the order
below is the order users see. The job file selects it as
`sync: {policy: {name: dynamic, delta: 0.5}}` (or `sync.policy: periodic`).
"""

from fedmpi.sync.base import SYNC_POLICIES, SyncPolicy, WorkerView, build_policy
# Each module registers itself in SYNC_POLICIES.
from fedmpi.sync import periodic, dynamic, information  # noqa: F401,I001

__all__ = ["SYNC_POLICIES", "SyncPolicy", "WorkerView", "build_policy"]
