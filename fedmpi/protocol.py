"""What both roles agree on: the round buffer, the sync point, the reported metrics, checkpoints.

The coordinator (fedmpi.coordinator) and the workers (fedmpi.worker) each
import this module and neither imports the other; docs/design.md draws the
whole round. One round i:

1. Each worker trains its sampled clients for the round's local steps and
   adds up their contributions (fedmpi.algorithms) into `RoundBuffers.payload`.
2. Sync point: `sync_point` sums `[payload | control]` over all ranks (the
   coordinator adds zeros); `control` carries the stop flag, so a signal to
   any rank reaches every rank at the same sync point without another
   message and never passes through an algorithm or a compressor. With a
   compressor, the workers' encoded updates travel as bytes instead and the
   stop flag rides in each message's trailer (fedmpi.compressed).
3. Every rank turns the same sum into the same server state
   (`Algorithm.aggregate`).
4. At logged rounds, workers report `METRICS`, the `BOUNDS` on I(Z;Y) of
   their probe, when due Z of their probe under their local and the
   averaged model, and their `COMM_COUNTS` (`Comm.report`).
5. At `checkpoint_due` rounds the coordinator collects every worker's state
   and writes one checkpoint.
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


def checkpoint_due(checkpoint_every: int, num_rounds: int, i: int, stopping: bool) -> bool:
    """Checkpoint after round i: on a stop request, or every checkpoint.every rounds (not after the last)."""
    if i == num_rounds - 1:
        return False
    return stopping or (checkpoint_every > 0 and (i + 1) % checkpoint_every == 0)
