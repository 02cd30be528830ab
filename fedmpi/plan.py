"""What every rank derives identically from the config: shards, subsets, schedule.

The coordinator, each worker and the single-process reference compute the
same `Plan`, so they agree on the check points (one every `sync.every` local
steps or epochs), which clients train in each round and for how many steps,
the learning rate of each round, which sync points are logged, and which
examples form each worker's shard, evaluation subset and probe. Which check
points are sync points is the sync policy's (fedmpi.sync): under `periodic`
every one is, so round i ends at check point i; other policies decide at run
time, identically on every rank, and the functions below that take a sync
index `s` and `final` serve them too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedmpi.errors import UsageError
from fedmpi.partition import partition
from fedmpi.seeding import CLIENTS, SUBSETS, TEST, TEST_PROBE, TEST_SUBSET, rng_for


@dataclass(frozen=True)
class Schedule:
    """The check points of a run: check point j comes after `step(j)` local steps.

    Under `sync.policy: periodic` every check point is a sync point, so round
    i ends at check point i after `step(i)` steps and there are `num_rounds`
    of them; other policies make sync points of some check points at run time
    (`num_checks` of them, the last always one). Steps are counted on the
    largest client. With `sync.unit: batches` every sampled client takes the
    interval's `steps_before(j)`; with `epochs` an interval is a number of
    epochs and client c takes `epoch_steps[c]` steps per epoch
    (`client_steps`), so `sync_every` and `total_steps` are whole epochs of
    the largest client.
    """

    total_steps: int  # local steps (batches) of the largest client over the whole run
    sync_every: int  # local steps of the largest client between sync points
    trace_every: int
    mi_every: int
    activations: bool = False  # trace.activations
    mi_on: bool = False  # any MI estimator configured
    unit: str = "batches"  # sync.unit
    epoch_steps: tuple[int, ...] = ()  # (C,) ceil(n_c / batch_size) per client
    lr: float = 0.01  # train.lr, the rate of round 0
    lr_schedule: str = "constant"  # train.lr_schedule
    lr_step: int = 10  # train.lr_step
    lr_gamma: float = 0.1  # train.lr_gamma

    @property
    def num_checks(self) -> int:
        """Check points of the run; under periodic sync each is a sync point (`num_rounds`)."""
        return math.ceil(self.total_steps / self.sync_every)

    @property
    def num_rounds(self) -> int:
        """Rounds (sync points) under periodic sync: one per check point."""
        return self.num_checks

    def step(self, j: int) -> int:
        """Local steps of the largest client by check point j."""
        return min((j + 1) * self.sync_every, self.total_steps)

    def steps_before(self, j: int) -> int:
        """Local steps between check points j - 1 and j (the last interval may be shorter)."""
        return self.step(j) - (self.step(j - 1) if j > 0 else 0)

    def client_steps(self, j: int) -> tuple[int, ...]:
        """(C,) local steps each client takes between check points j - 1 and j when sampled."""
        if self.unit == "batches":
            return (self.steps_before(j),) * len(self.epoch_steps)
        epochs = self.steps_before(j) // max(self.epoch_steps)  # whole epochs of the largest client
        return tuple(epochs * n for n in self.epoch_steps)

    def learning_rate(self, i: int) -> float:
        """The learning rate of round i's local steps (the round that ends at sync point i):
        train.lr under `constant`; times lr_gamma after every lr_step sync points under
        `step`; under `cosine` (periodic sync only, config refuses it otherwise)
        lr (1 + cos(pi i / num_rounds)) / 2, from lr at round 0 towards 0 at the end."""
        if self.lr_schedule == "step":
            return self.lr * self.lr_gamma ** (i // self.lr_step)
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * i / self.num_rounds))
        return self.lr

    def logs(self, s: int, final: bool) -> bool:
        """Whether sync point s (0-based) is recorded in the trace (a row): every trace_every-th,
        and always the `final` one, at the last check point. Its row is s // trace_every."""
        return (s + 1) % self.trace_every == 0 or final

    def mi_at(self, s: int, final: bool) -> bool:
        """MI is estimated at every mi_every-th logged sync point (the first included) and the last."""
        return self.logs(s, final) and ((s // self.trace_every) % self.mi_every == 0 or final)

    def z_at(self, s: int, final: bool) -> bool:
        """Whether workers send Z at sync point s: to log it, or to estimate MI from it."""
        return self.logs(s, final) and (self.activations or (self.mi_on and self.mi_at(s, final)))


@dataclass(frozen=True)
class WorkerData:
    """Indices into the training set of one worker; probe == eval_positions[:probe_size], unless
    `probe_test` holds the worker's held-out probe (indices into the test set, data.probe_from: test).

    The worker's shard is the union of its simulated clients' shards, client
    after client; `client_slices[j]` is where client `client_ids[j]` lies in it.
    """

    shard: np.ndarray  # (n_k,) int64
    eval_positions: np.ndarray  # (E,) positions within the shard
    probe_positions: np.ndarray  # (P,) positions within the shard
    client_ids: tuple[int, ...]
    client_slices: tuple[slice, ...]
    probe_test: np.ndarray | None = None  # (P,) int64 indices into the test set, or None

    @property
    def held_out_probe(self) -> bool:
        return self.probe_test is not None

    def probe_indices(self) -> np.ndarray:
        """(P,) int64: the probe's indices into the test set (held out) or the training set."""
        return self.probe_test if self.held_out_probe else self.shard[self.probe_positions]


@dataclass(frozen=True)
class Plan:
    num_workers: int
    workers: tuple[WorkerData, ...]
    test_indices: np.ndarray  # (T,) int64
    test_subset: np.ndarray  # (S,) int64 positions in test_indices of the logged rounds before the last; (0,): all
    schedule: Schedule
    probe_size: int
    num_clients: int
    clients_per_round: int
    seed: int

    def full_test(self, final: bool) -> bool:
        """Whether a logged sync point tests on all test_indices (the run's last sync point, `final`,
        or no data.test_subset) rather than on the fixed subset."""
        return len(self.test_subset) == 0 or final

    @property
    def num_examples(self) -> tuple[int, ...]:
        return tuple(len(w.shard) for w in self.workers)

    def sampled(self, i: int) -> np.ndarray:
        """Sorted ids of the clients that train in round i (all of them by default).

        A function of (seed, i) alone, so every rank draws the same clients."""
        if self.clients_per_round == self.num_clients:
            return np.arange(self.num_clients)
        rng = rng_for(self.seed, CLIENTS, i)
        return np.sort(rng.choice(self.num_clients, self.clients_per_round, replace=False))

    def interval_steps(self, j: int, s: int) -> np.ndarray:
        """(C,) int64 local steps each client takes before check point j, which lies in round s
        (the round that ends at sync point s): its steps if sampled in round s, else 0."""
        taken = np.zeros(self.num_clients, dtype=np.int64)
        chosen = self.sampled(s)
        taken[chosen] = np.asarray(self.schedule.client_steps(j), dtype=np.int64)[chosen]
        return taken

    def steps_in(self, i: int) -> np.ndarray:
        """(C,) int64 local steps each client took in round i of periodic sync."""
        return self.interval_steps(i, i)

    def steps_through(self, i: int) -> np.ndarray:
        """(C,) int64 local steps each client took in rounds 0..i of periodic sync (zeros for i < 0)."""
        return sum((self.steps_in(j) for j in range(i + 1)), np.zeros(self.num_clients, dtype=np.int64))


def make_plan(cfg, train_labels: np.ndarray, num_test: int, num_workers: int,
              test_labels: np.ndarray | None = None) -> Plan:
    """test_labels (num_test,): needed with data.probe_from: test, which draws each worker's probe
    from the test set."""
    d = cfg.data
    held_out = d.probe_from == "test"
    num_clients = cfg.clients.total or num_workers
    per_round = cfg.clients.per_round or num_clients
    if num_clients < num_workers:
        raise UsageError(f"config: clients.total={num_clients} but there are {num_workers} workers; every "
                         "worker needs a client: raise clients.total or use fewer ranks")
    if per_round > num_clients:
        raise UsageError(f"config: clients.per_round={per_round} is more than clients.total={num_clients}")
    # Clients, not workers, own data: with one client per worker the two coincide.
    batch = cfg.train.batch_size
    least = d.probe_size if num_clients == num_workers and not held_out else 1
    # A Dirichlet split re-draws until every client also holds one full batch; the other
    # schemes are fixed by the seed, so a client short of a batch is refused below.
    shards = partition(train_labels, num_clients, d.partition, seed=cfg.seed, alpha=d.alpha,
                       samples_per_worker=d.samples_per_worker,
                       min_examples=max(least, batch) if d.partition == "dirichlet" else least,
                       classes_per_client=d.classes_per_client)
    for c, s in enumerate(shards):
        if len(s) < batch:
            raise UsageError(f"config: train.batch_size={batch} is more than the {len(s)} examples of "
                             f"client {c + 1} under partition '{d.partition}'; every client needs one full "
                             "batch: lower train.batch_size, raise data.samples_per_worker or use fewer clients")
    workers = []
    for k, ids in enumerate(np.array_split(np.arange(num_clients), num_workers)):
        parts = [shards[c] for c in ids]
        bounds = np.cumsum([0] + [len(p) for p in parts])
        shard = np.concatenate(parts)
        if len(shard) < d.probe_size and not held_out:
            raise UsageError(f"worker {k + 1} gets {len(shard)} examples, fewer than data.probe_size="
                             f"{d.probe_size}; lower data.probe_size or use fewer workers")
        order = rng_for(cfg.seed, SUBSETS, k).permutation(len(shard))
        size = len(shard) if d.eval_size == 0 else min(d.eval_size, len(shard))
        probe_test = None
        if held_out:
            if test_labels is None:
                raise ValueError("make_plan needs test_labels with data.probe_from: test")
            probe_test = held_out_probe(train_labels[shard], test_labels, d.probe_size,
                                        rng_for(cfg.seed, TEST_PROBE, k), f"worker {k + 1}")
        workers.append(WorkerData(shard, order[:size], order[:min(d.probe_size, len(shard))],
                                  tuple(int(c) for c in ids),
                                  tuple(slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])), probe_test))
    if d.test_size > num_test:
        raise UsageError(f"config: data.test_size={d.test_size} but the test set has {num_test} "
                         "examples; lower it or use 0 for the whole test set")
    test = np.arange(num_test) if d.test_size == 0 else np.sort(
        rng_for(cfg.seed, TEST).permutation(num_test)[:d.test_size])
    if d.test_subset > len(test):
        raise UsageError(f"config: data.test_subset={d.test_subset} but the test set has {len(test)} "
                         "examples; lower it, or use 0 to test on all of them at every logged round")
    subset = np.sort(rng_for(cfg.seed, TEST_SUBSET).permutation(len(test))[:d.test_subset]).astype(np.int64)
    epoch_steps = tuple(math.ceil(len(s) / batch) for s in shards)
    largest = max(epoch_steps)
    t = cfg.train
    schedule = Schedule(t.epochs * largest, cfg.sync.every * (largest if cfg.sync.unit == "epochs" else 1),
                        cfg.trace.every, cfg.mi.every, cfg.trace.activations, bool(cfg.mi.estimators),
                        cfg.sync.unit, epoch_steps, t.lr, t.lr_schedule, t.lr_step, t.lr_gamma)
    return Plan(num_workers, tuple(workers), test, subset, schedule, d.probe_size, num_clients, per_round,
                cfg.seed)


def held_out_probe(shard_labels: np.ndarray, test_labels: np.ndarray, size: int, rng: np.random.Generator,
                   who: str) -> np.ndarray:
    """(size,) int64 indices into the test set: a sample without replacement whose label counts
    follow the shard's label proportions (largest remainders), in random order. Every partition
    fedmpi makes skews labels only, so p(x | y) is the same on a shard and on the test set, and
    this is a sample of the shard's own distribution that no model trained on."""
    num_classes = int(max(shard_labels.max(), test_labels.max())) + 1
    share = np.bincount(shard_labels, minlength=num_classes) / len(shard_labels) * size
    quota = np.floor(share).astype(np.int64)
    order = np.lexsort((np.arange(num_classes), -(share - quota)))  # largest remainder first, then label
    quota[order[:size - int(quota.sum())]] += 1
    chosen = []
    for label in range(num_classes):
        pool = np.flatnonzero(test_labels == label)
        if quota[label] > len(pool):
            raise UsageError(f"config: data.probe_from=test: {who}'s probe of data.probe_size={size} needs "
                             f"{quota[label]} test examples of label {label} and the test set has {len(pool)}; "
                             "lower data.probe_size")
        chosen.append(rng.choice(pool, int(quota[label]), replace=False))
    return rng.permutation(np.concatenate(chosen)).astype(np.int64)


def label_counts(plan: Plan, train_labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, K) int64: each client's training examples per label, clients in id order."""
    counts = np.zeros((plan.num_clients, num_classes), dtype=np.int64)
    for w in plan.workers:
        for cid, sl in zip(w.client_ids, w.client_slices):
            counts[cid] = np.bincount(train_labels[w.shard[sl]], minlength=num_classes)
    return counts
