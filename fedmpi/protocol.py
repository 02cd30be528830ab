"""What both roles agree on: the round buffer, the sync point, the reported metrics, checkpoints.

The coordinator (fedmpi.coordinator) and the workers (fedmpi.worker) each
import this module and neither imports the other; docs/design.md draws the
whole round. Local steps are cut into check points (one every `sync.every`
steps or epochs); the sync policy (fedmpi.sync) makes some of them sync
points, and round i is the local steps up to sync point i. At check point j:

0. Each worker's sampled clients take the steps up to check point j. With a
   policy that has a check collective (`dynamic`), every rank joins
   `policy_collective` with `[its check values | stop]`, and every rank's
   policy decides from the same sum whether check point j is a sync point
   (under `periodic` every one is, without a collective). If it is not, the
   round goes on (a stop request seen there checkpoints in mid-round).
1. At a sync point each worker adds up its sampled clients' contributions
   (fedmpi.algorithms) into `RoundBuffers.payload`.
2. Sync point: `sync_point` sums `[payload | control]` over all ranks (the
   coordinator adds zeros); `control` carries the stop flag, so a signal to
   any rank reaches every rank at the same sync point without another
   message and never passes through an algorithm or a compressor. With a
   compressor, the workers' encoded updates travel as bytes instead and the
   stop flag rides in each message's trailer (fedmpi.compressed).
3. Every rank turns the same sum into the same server state
   (`Algorithm.aggregate`). With a policy that measures after sync points
   (`information`), every rank joins `policy_collective` again with its
   measurement, and every policy state takes the same sum.
4. At logged rounds, workers report `METRICS`, the `BOUNDS` on I(Z;Y) of
   their probe, when due Z of their probe under their local and the
   averaged model, and their `COMM_COUNTS` (`Comm.report`).
5. At `checkpoint_due` check points the coordinator collects every worker's
   state and writes one checkpoint.
"""

from __future__ import annotations

import numpy as np

# Per-worker metrics sent at each logged round, in this order (float64).
METRICS = ("local_acc", "local_loss", "averaged_acc", "averaged_loss", "train_loss",
           "train_seconds", "eval_seconds", "sync_seconds")

# Per-worker bounds on I(Z;Y) of the worker's probe, sent at each logged round (float64, nats;
# fedmpi.info.bounds). They need no estimator: the plug-in label entropy H(Y) (upper), the Fano
# bound from each model's error on the probe (lower), and H(Y) - CE of each model's own classifier
# from Z (the layers after Z), which is a lower bound only on examples the model was not trained on:
# the probe is drawn from the worker's shard, so "head" is optimistic for the models trained on it.
BOUNDS = ("entropy", "entropy_se",
          "error_local", "fano_local", "fano_se_local", "head_local", "head_se_local",
          "error_averaged", "fano_averaged", "fano_se_averaged", "head_averaged", "head_se_averaged")

# What each worker sent and received since its previous report (int64; fedmpi.comm counts them
# from the buffers every collective moves): collectives joined, bytes up, bytes down, and the
# diagnostic bytes up of compression.measure_distortion, kept out of bytes_up.
COMM_COUNTS = ("messages", "bytes_up", "bytes_down", "diagnostic_bytes")

# Slots after the payload in the summed round buffer, float32.
CONTROL = ("stop",)  # stop: > 0 when some rank was asked (SIGTERM/SIGUSR1) to checkpoint and stop


class RoundBuffers:
    """The preallocated send and receive buffers of the sync point: (payload_size + len(CONTROL),) float32."""

    def __init__(self, payload_size: int):
        self.send = np.zeros(payload_size + len(CONTROL), dtype=np.float32)
        self.recv = np.empty_like(self.send)
        self.payload = self.send[:payload_size]  # a view: contributions are written straight into it

    @property
    def summed(self) -> np.ndarray:
        """The summed payload (payload_size,) after the sync point; a view into recv."""
        return self.recv[:len(self.payload)]

    def set_stop(self, requested: bool) -> None:
        self.send[len(self.payload) + CONTROL.index("stop")] = 1.0 if requested else 0.0

    @property
    def stopping(self) -> bool:
        """Whether any rank asked to stop, after the sync point."""
        return bool(self.recv[len(self.payload) + CONTROL.index("stop")] > 0)


def sync_point(comm, bufs: RoundBuffers, collective: str) -> np.ndarray | None:
    """Sync point, every round, on every rank: bufs.recv <- the sum over ranks of bufs.send.

    'allreduce' is one Allreduce. 'gather' gathers every worker's buffer on
    the coordinator, sums them in rank order and broadcasts the sum; the
    coordinator then also gets the gathered (W, payload + control) buffers,
    which per-worker analyses need. Workers get None.
    """
    if collective == "allreduce":
        comm.allreduce_sum(bufs.send, bufs.recv)
        return None
    gathered = comm.gather(bufs.send)
    if comm.is_coordinator:
        np.sum(gathered, axis=0, out=bufs.recv)
    comm.bcast(bufs.recv)
    return gathered


class PolicyBuffers:
    """The send and receive buffers of one of the sync policy's collectives (fedmpi.sync):
    `[values | stop]` float64, (len(names) + 1,), or `[values]` without the stop flag."""

    def __init__(self, size: int, with_stop: bool):
        self.send = np.zeros(size + (1 if with_stop else 0), dtype=np.float64)
        self.recv = np.zeros_like(self.send)
        self.values = self.send[:size]  # a view: the worker's policy writes straight into it
        self.size = size

    @property
    def summed(self) -> np.ndarray:
        """The values summed over ranks (size,), a view into recv."""
        return self.recv[:self.size]

    def set_stop(self, requested: bool) -> None:
        self.send[self.size] = 1.0 if requested else 0.0

    @property
    def stopping(self) -> bool:
        return len(self.recv) > self.size and bool(self.recv[self.size] > 0)


class Position:
    """Where a run stands, alike on every rank: the next check point, the sync points made so far
    and the sync policy's state. Saved in checkpoints (`saved`, `restore`)."""

    def __init__(self, next_check: int, syncs: int, policy_state: dict[str, float]):
        self.next_check = next_check
        self.syncs = syncs
        self.policy_state = policy_state

    @classmethod
    def start(cls, policy) -> "Position":
        return cls(0, 0, policy.init_state())

    def decide(self, policy, summed: np.ndarray, final: bool) -> bool:
        """The policy's decision at check point `next_check`, which is then passed: whether it is a
        sync point (then counted in `syncs`: the sync point under way has index syncs - 1)."""
        synced, self.policy_state = policy.decide(self.policy_state, summed, final)
        self.next_check += 1
        self.syncs += int(synced)
        return synced

    def measured(self, policy, summed: np.ndarray) -> None:
        self.policy_state = policy.measured(self.policy_state, summed)

    def saved(self) -> dict:
        return {"next_check": self.next_check, "syncs": self.syncs, "policy": dict(self.policy_state)}

    @classmethod
    def restore(cls, saved: dict) -> "Position":
        return cls(int(saved["next_check"]), int(saved["syncs"]), {k: float(v) for k, v in saved["policy"].items()})


def policy_collective(comm, bufs: PolicyBuffers) -> None:
    """The sync policy's check collective (at every check point) or measurement collective (after
    every sync point), on every rank: bufs.recv <- the sum over ranks of bufs.send, one Allreduce
    of a few float64 (the coordinator's values are zeros). Counted in /comm like every collective."""
    comm.allreduce_sum(bufs.send, bufs.recv)


def checkpoint_due(checkpoint_every: int, num_checks: int, j: int, stopping: bool) -> bool:
    """Checkpoint at check point j: on a stop request, or every checkpoint.every check points (not at
    the last). Under periodic sync check points are sync points: every checkpoint.every rounds."""
    if j == num_checks - 1:
        return False
    return stopping or (checkpoint_every > 0 and (j + 1) % checkpoint_every == 0)
