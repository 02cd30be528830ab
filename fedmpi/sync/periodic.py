"""`periodic`: every check point is a sync point (McMahan et al. 2017; the schedule fedmpi had always).

With check points every `sync.every` local steps (or epochs) this is
periodic averaging every `sync.every` steps, the setting of Adilova et al.
(2019). It needs no collective beyond the sync point itself: no check
collective, no measurement, no state, so a run costs and computes exactly
what it did before sync policies existed.
"""

from __future__ import annotations

from fedmpi.sync.base import SYNC_POLICIES, SyncPolicy


@SYNC_POLICIES.register("periodic")
class Periodic(SyncPolicy):
    def decide(self, state, summed, final):
        return True, state

    def describe(self, state):
        return "every check point is a sync point"
