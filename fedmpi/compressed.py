"""The compressed sync point: what a worker sends when `compression.name` is not `none`, and
how the coordinator (or every rank) turns the messages into the next global model.

Compressed payloads cannot be summed, so a compressed round does not use the
summed round buffer of fedmpi.protocol. Each worker sends one message of a
fixed length (the compressor's `payload_bytes` are exact), bytes only, no
pickling:

    message = [payload (B,) uint8 | weight <f4 | stop <f4]      (B + 8 bytes)

payload: the compressor's encoding of the worker's update
u_k = theta_k - theta_global (theta_k: the model its sampled clients' weighted
mean stands for, `ClientGroup.local_theta`); weight: their number of examples
(0 when none of its clients was sampled; it then sends u = 0 and has no say);
stop: 1 when the worker was asked to checkpoint and stop (the stop flag never
passes through a compressor).

`compression.collective` picks the path:

- `gather`: the coordinator gathers the W messages, decodes them, combines
  them (`Compressor.combine`, the weighted mean by default) and broadcasts
  [theta_new (P,) float32 | stop] to the workers: the coordinator is the CEO
  of the rate-distortion picture (fedmpi.compress.ratedistortion).
- `allgather`: every rank receives every message and combines them itself;
  the same bytes decoded in the same order give every rank the same bits.

With `compression.measure_distortion: true` the workers also send their
uncompressed update u_k (P,) float32 at logged sync points, in a gather of
its own that is counted apart (`/comm/diagnostic_bytes`). The coordinator
then measures the aggregate's distortion d = ||mean decoded - mean exact||^2 / P,
the variances of the CEO model and the rate-distortion limit at d
(`diagnose`).

Error feedback state (top-k, sign) belongs to the worker and goes into its
checkpoint; the random generator of stochastic schemes is derived from
(seed, worker, sync point), so a resumed run encodes exactly as the original.
Only algorithms whose contribution is the weighted model [w theta, w]
(`Algorithm.compressible`) can be compressed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedmpi.compress import Compressor
from fedmpi.compress import ratedistortion as rd
from fedmpi.seeding import COMPRESSION, rng_for

TRAILER = np.dtype([("weight", "<f4"), ("stop", "<f4")])

# Per logged sync point (float64, NaN when not measured): the bits per model parameter
# that all W workers together sent up for this sync point's update (their whole
# messages, or their round buffers without compression), then, with
# compression.measure_distortion, the aggregate's distortion per element, the CEO
# model's variances and the rate-distortion limit at that distortion (bits per element,
# summed over the workers).
DIAGNOSTICS = ("update_bits", "distortion", "signal_var", "noise_var", "rd_limit_bits")


def message_bytes(compressor: Compressor, num_params: int) -> int:
    """The exact length of every worker's message: payload plus the 8-byte trailer."""
    return compressor.payload_bytes(num_params) + TRAILER.itemsize


class Uplink:
    """One worker's side of compressed sync points: its compressor state and its messages."""

    def __init__(self, compressor: Compressor, num_params: int, seed: int, worker: int):
        self.compressor = compressor
        self.num_params = num_params
        self.seed, self.worker = seed, worker
        self.state = compressor.init_state(num_params)  # error-feedback residual, or {}
        self.update = np.zeros(num_params, dtype=np.float32)  # (P,) this sync point's u_k, uncompressed

    def message(self, local_theta: np.ndarray | None, weight: float, theta_global: np.ndarray,
                sync_index: int, stop: bool) -> np.ndarray:
        """The (message_bytes,) uint8 message of sync point `sync_index`.

        local_theta: (P,) float32 the worker's model after its local steps, or
        None when none of its clients trained (then u = 0, weight 0)."""
        if local_theta is None or weight == 0:
            self.update[:] = 0
            weight = 0.0
        else:
            np.subtract(local_theta, theta_global, out=self.update)
        rng = rng_for(self.seed, COMPRESSION, self.worker, sync_index)
        payload, self.state = self.compressor.encode(self.update, self.state, rng)
        trailer = np.array([(weight, 1.0 if stop else 0.0)], dtype=TRAILER).view(np.uint8)
        return np.concatenate([payload, trailer])


@dataclass(frozen=True)
class Combined:
    theta: np.ndarray  # (P,) float32, the next global model
    update: np.ndarray  # (P,) float32, the combined update theta - theta_global
    weights: np.ndarray  # (W,) float64, each worker's weight
    stop: bool  # some worker was asked to stop


def _trailers(messages: np.ndarray) -> np.ndarray:
    body = messages.shape[1] - TRAILER.itemsize
    return np.ascontiguousarray(messages[:, body:]).view(TRAILER)[:, 0]


def combine(compressor: Compressor, messages: np.ndarray, theta_global: np.ndarray) -> Combined:
    """The next global model from the W workers' messages (W, message_bytes) uint8, in worker order."""
    body = messages.shape[1] - TRAILER.itemsize
    trailer = _trailers(messages)  # (W,)
    weights = trailer["weight"].astype(np.float64)
    decoded = [compressor.decode(np.ascontiguousarray(m[:body])) for m in messages]
    update = compressor.combine(decoded, weights)
    return Combined(theta_global + update, update, weights, bool(np.any(trailer["stop"] > 0)))


def blank_message(length: int, stop: bool) -> np.ndarray:
    """The coordinator's part in a message collective: no payload, its own stop flag."""
    out = np.zeros(length, dtype=np.uint8)
    out[-TRAILER.itemsize:] = np.array([(0.0, 1.0 if stop else 0.0)], dtype=TRAILER).view(np.uint8)
    return out


def worker_sync(comm, collective: str, compressor: Compressor, message: np.ndarray,
                theta_global: np.ndarray, down: np.ndarray) -> tuple[np.ndarray, bool]:
    """A worker's compressed sync point: (the next global model (P,) float32, stop).

    down: (P + 1,) float32 scratch for the broadcast of [theta | stop] (gather path)."""
    if collective == "allgather":
        rows = comm.allgather(message)  # (W + 1, B + 8): the coordinator's row first
        combined = combine(compressor, rows[1:], theta_global)
        return combined.theta, combined.stop or bool(_trailers(rows[:1])["stop"][0] > 0)
    comm.gather(message)
    comm.bcast(down)
    return down[:-1].copy(), bool(down[-1] > 0)


def coordinator_sync(comm, collective: str, compressor: Compressor, length: int, stop: bool,
                     theta_global: np.ndarray, down: np.ndarray) -> Combined:
    """The coordinator's compressed sync point: every worker's message, combined."""
    mine = blank_message(length, stop)
    if collective == "allgather":
        rows = comm.allgather(mine)
        combined = combine(compressor, rows[1:], theta_global)
        return Combined(combined.theta, combined.update, combined.weights, combined.stop or stop)
    combined = combine(compressor, comm.gather(mine), theta_global)
    down[:-1] = combined.theta
    down[-1] = 1.0 if (combined.stop or stop) else 0.0
    comm.bcast(down)
    return Combined(combined.theta, combined.update, combined.weights, bool(down[-1] > 0))


def uplink_bits(message_length: int, num_workers: int, num_params: int) -> float:
    """Bits per model parameter that `num_workers` messages of `message_length` bytes carry."""
    return 8.0 * message_length * num_workers / num_params


def diagnose(combined: Combined, updates: np.ndarray) -> tuple[float, float, float, float]:
    """(distortion, signal_var, noise_var, rd_limit_bits) of one sync point.

    updates: (W, P) float32 the workers' uncompressed updates, gathered in the
    diagnostic mode. The exact aggregate is their weighted mean. The CEO
    variances come from the workers with a positive weight (at least two are
    needed; else NaN). The CEO distortion is the error about the common
    update G, of which the exact mean is itself sigma_N^2 / K away, so the limit
    is R_sum(sigma_N^2 / K + d) (fedmpi.compress.ratedistortion.limit_bits).
    """
    w = combined.weights
    exact = (w[:, None] * updates.astype(np.float64)).sum(axis=0) / w.sum()  # (P,) float64
    d = rd.aggregate_distortion(combined.update, exact)
    active = updates[w > 0]
    if len(active) < 2:
        return d, math.nan, math.nan, math.nan
    v = rd.estimate_variances(active)
    return d, v.signal_var, v.noise_var, rd.limit_bits(d, v)
