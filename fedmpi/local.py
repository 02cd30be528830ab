"""One worker's local training: its clients' models, optimizers, batch order, evaluation.

Shared by the MPI worker and the single-process reference, so the two run the
same algorithm step for step. Data are tensors already on the device and
batched by index; the hot loop does no per-example Python work. What a
client sends and how the sum becomes the global model is the algorithm's
(fedmpi.algorithms); this module only runs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from fedmpi.algorithms import Algorithm, LocalWork, Setting, build_algorithm
from fedmpi.algorithms.base import GradientHook, State
from fedmpi.augment import PAD as PAD_FOR_CROP, crop_flip
from fedmpi.compress import build_compressor
from fedmpi.compressed import Uplink
from fedmpi.flat import FlatParams, FlatSGD
from fedmpi.inputs import Inputs
from fedmpi.models import build_model
from fedmpi.protocol import BOUNDS
from fedmpi.seeding import AUGMENT, INIT, ORDER, int_seed

# Examples per forward pass in evaluation. Small chunks keep a pass's activations in the CPU's
# caches: LeNet evaluates about twice as fast in chunks of 128 as in chunks of 1,000
# (benchmarks/eval_speed.py, docs/performance.md).
EVAL_CHUNK = 128


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    loss: float  # mean cross-entropy, nats
    z_probe: torch.Tensor | None  # (probe_size, D) representation of the first probe_size examples
    # The model's own classifier on the probe (None without a probe): predicted labels (P,) int64
    # and natural-log probabilities of the true labels (P,) float64, for the bounds on I(Z;Y).
    probe_pred: np.ndarray | None = None
    probe_logp: np.ndarray | None = None
    examples: int = 0  # how many examples the accuracy and loss are over


def worker_tensors(dataset, worker_data, device):
    """A worker's shard and evaluation subset on its device.

    Returns x: Inputs (n_k, C, H, W) (uint8 for CIFAR-10, normalised per batch),
    y (n_k,) int64, and the evaluation subset eval_x, eval_y, whose first P
    examples are the probe.
    """
    x = dataset.inputs(dataset.train_x[worker_data.shard]).to(device)
    y = torch.from_numpy(dataset.train_y[worker_data.shard]).to(device)
    return x, y, x[worker_data.eval_positions].for_evaluation(), y[worker_data.eval_positions]


def probe_tensors(dataset, worker_data, eval_x, eval_y: torch.Tensor, probe_size: int, device):
    """A worker's probe: its held-out test examples (`worker_data.probe_test`, data.probe_from:
    test) or the first `probe_size` examples of its evaluation subset. Inputs ready for
    evaluation, labels (P,) int64."""
    if worker_data.held_out_probe:
        idx = worker_data.probe_test
        x = dataset.inputs(dataset.test_x[idx]).to(device).for_evaluation()
        return x, torch.from_numpy(np.asarray(dataset.test_y[idx], dtype=np.int64)).to(device)
    return eval_x[:probe_size], eval_y[:probe_size]


def evaluate_with_probe(group, eval_x, eval_y, probe_x, probe_y, want_z: bool, held_out: bool):
    """(local, averaged) Evaluations of a worker's group: accuracy and loss on the evaluation
    subset; the probe's predictions, log-probabilities and (with `want_z`) Z from the probe, in
    the same forward passes where the probe is the subset's first examples, in two more where it
    is held out."""
    if not held_out:
        return group.evaluate(eval_x, eval_y, len(probe_y), want_z)
    on_subset = group.evaluate(eval_x, eval_y, 0, False)
    on_probe = group.evaluate(probe_x, probe_y, len(probe_y), want_z)
    return tuple(replace(e, z_probe=p.z_probe, probe_pred=p.probe_pred, probe_logp=p.probe_logp)
                 for e, p in zip(on_subset, on_probe))


def new_model(cfg, input_shape, num_classes, device):
    """Every client starts from the same initial weights (same seed), as FedAvg assumes."""
    return build_model(cfg.model.name, input_shape, num_classes, int_seed(cfg.seed, INIT),
                       cfg.model.params).to(device)


def check_plugins(cfg, input_shape, num_classes: int, num_clients: int) -> None:
    """Build the job's model and algorithm once, so that what only the model's shape can
    rule out (a depth the input cannot take, an unknown tensor name) is one UsageError
    naming the key, raised alike on every rank before anything trains."""
    from fedmpi.errors import UsageError
    try:
        model = new_model(cfg, input_shape, num_classes, "cpu")
    except ValueError as exc:
        raise UsageError(f"config: model.{exc}") from None  # plug-in messages start with the key
    try:
        algorithm = new_algorithm(cfg, model, FlatParams(model), num_clients)
    except ValueError as exc:
        raise UsageError(f"config: algorithm.{exc}") from None
    if cfg.data.partition == "shards" and not 1 <= cfg.data.classes_per_client <= num_classes:
        raise UsageError(f"config: data.classes_per_client must be an integer in 1..{num_classes} "
                         f"(the dataset's classes), got {cfg.data.classes_per_client}")
    if cfg.data.augment == "crop-flip" and (len(input_shape) != 3 or min(input_shape[1:]) <= PAD_FOR_CROP):
        raise UsageError(f"config: data.augment 'crop-flip' needs images (C, H, W) larger than "
                         f"{PAD_FOR_CROP} pixels a side, got inputs of shape {tuple(input_shape)}; use none")
    if cfg.compression.name != "none" and not algorithm.compressible:
        raise UsageError(f"config: compression.name {cfg.compression.name!r} needs an algorithm whose "
                         f"contribution is the weighted model (fedavg, fedprox); {cfg.algorithm.name!r} "
                         "also sends control variates. Use compression.name: none with it")


def new_algorithm(cfg, model, flat: FlatParams, num_clients: int) -> Algorithm:
    """The job's algorithm for this model; every rank builds the same one."""
    setting = Setting(flat.size, tuple(flat.slots), tuple(model.final_layers), num_clients)
    return build_algorithm(cfg.algorithm.name, setting, cfg.algorithm.params)


class LocalTrainer:
    """One client: its model, optimizer, batch order and augmentation draws."""

    def __init__(self, cfg, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, worker: int):
        self.model = model
        self.flat = FlatParams(model)
        self.grad = self.flat.attach_grad()  # (num_params,): the whole gradient, for algorithms' hooks
        self.x, self.y = Inputs.of(x), y  # (N, C, H, W) stored examples, (N,) int64 on the model's device
        self.batch_size = cfg.train.batch_size
        self.opt = FlatSGD(self.flat, lr=cfg.train.lr, momentum=cfg.train.momentum,
                           weight_decay=cfg.train.weight_decay)
        # Own generators: the batch order and the augmentation are functions of (seed, `worker`)
        # alone, whatever the device; ClientGroup passes the client's id.
        self.gen = torch.Generator().manual_seed(int_seed(cfg.seed, ORDER, worker))
        self.augment_gen = torch.Generator().manual_seed(int_seed(cfg.seed, AUGMENT, worker))
        self.augment = self._augment if cfg.data.augment == "crop-flip" else None  # Inputs.take's transform
        self.perm = torch.empty(0, dtype=torch.int64)
        self.pos = 0
        self.epochs_started = 0

    def _next_batch(self) -> torch.Tensor:
        if self.pos >= len(self.perm):
            self.perm = torch.randperm(len(self.y), generator=self.gen).to(self.x.device)
            self.pos = 0
            self.epochs_started += 1
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def _augment(self, batch: torch.Tensor) -> torch.Tensor:
        return crop_flip(batch, self.augment_gen)

    def state(self) -> dict:
        """Everything needed to continue training exactly: parameters, integer buffers,
        optimizer state, batch-order generator and position. A snapshot (no tensor is
        shared with the live trainer); tensors and plain values only, so it loads with
        torch.load(weights_only=True)."""
        return {"theta": self.flat.vector.detach().cpu().clone(), "buffers": self.flat.int_buffers(),
                "optimizer": self.opt.state(), "generator": self.gen.get_state(),
                "augment_generator": self.augment_gen.get_state(),
                "perm": self.perm.cpu().clone(), "pos": self.pos, "epochs_started": self.epochs_started}

    def load_state(self, state: dict) -> None:
        self.flat.assign(state["theta"])
        self.flat.load_int_buffers(state["buffers"])
        self.opt.load_state(state["optimizer"], self.flat.slots)
        self.gen.set_state(state["generator"])
        if "augment_generator" in state:  # checkpoints written before data.augment existed have none
            self.augment_gen.set_state(state["augment_generator"])
        self.perm = state["perm"].to(self.x.device)
        self.pos = int(state["pos"])
        self.epochs_started = int(state["epochs_started"])

    def set_lr(self, lr: float) -> None:
        self.opt.lr = lr

    def reset_optimizer(self) -> None:
        """A fresh optimizer state: SGD's first step after it starts momentum from the gradient,
        as from a zero buffer."""
        self.opt.reset()

    def train(self, steps: int, hook: GradientHook | None = None) -> float:
        """Run `steps` SGD steps; returns the mean training loss over them.

        `hook(theta, grad)`, when given, runs after each backward pass on the
        whole parameter and gradient vectors (num_params,) and may change grad
        in place: an algorithm's term in the local objective."""
        return self.train_sum(steps, hook) / max(steps, 1)

    def train_sum(self, steps: int, hook: GradientHook | None = None) -> float:
        """`train`, returning the sum of the training losses (a round's steps may come in parts)."""
        self.model.train()
        loss_sum = torch.zeros((), device=self.x.device)
        for _ in range(steps):
            idx = self._next_batch()
            batch = self.x.take(idx, self.augment)  # (B, C, H, W) float32, channels-last for images
            logits = self.model(batch)
            loss = F.cross_entropy(logits, self.y.index_select(0, idx))
            self.grad.zero_()
            loss.backward()
            if hook is not None:
                hook(self.flat.vector, self.grad)
            self.opt.step()
            loss_sum += loss.detach()  # stays on the device: no per-step host sync
        return float(loss_sum)


class _Tally:
    """One model's evaluation, added up chunk by chunk (on the device: no host sync per chunk)."""

    def __init__(self, device, probe_size: int, want_z: bool):
        self.probe_size, self.want_z = probe_size, want_z
        self.correct = torch.zeros((), dtype=torch.int64, device=device)
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        self.zs, self.preds, self.logps = [], [], []

    def add(self, start: int, logits: torch.Tensor, z: torch.Tensor, target: torch.Tensor) -> None:
        """The chunk of examples start.. : logits (B, classes), z (B, D), target (B,)."""
        self.correct += (logits.argmax(1) == target).sum()
        self.loss_sum += F.cross_entropy(logits, target, reduction="sum").double()
        if start < self.probe_size:
            head = logits[:self.probe_size - start]
            self.preds.append(head.argmax(1))
            self.logps.append(F.log_softmax(head.double(), dim=1).gather(1, target[:len(head), None])[:, 0])
            if self.want_z:
                self.zs.append(z[:self.probe_size - start])

    def result(self, examples: int) -> Evaluation:
        n, probe = max(examples, 1), self.probe_size
        z_probe = torch.cat(self.zs).float().cpu() if probe and self.want_z else None
        pred = torch.cat(self.preds).cpu().numpy() if probe else None
        logp = torch.cat(self.logps).cpu().numpy() if probe else None
        return Evaluation(int(self.correct) / n, float(self.loss_sum) / n, z_probe, pred, logp, examples)


def _evaluate(forward, count: int, x, y: torch.Tensor, probe_size: int, want_z: bool) -> list[Evaluation]:
    """`count` models' Evaluations on (x, y); forward(chunk) -> [(logits, z)] * count."""
    x = Inputs.of(x)  # images go through the convolutions in channels-last layout (Inputs.chunk)
    tallies = [_Tally(x.device, probe_size, want_z) for _ in range(count)]
    for start in range(0, len(y), EVAL_CHUNK):
        outputs = forward(x.chunk(start, start + EVAL_CHUNK))
        target = y[start:start + EVAL_CHUNK]
        for tally, (logits, z) in zip(tallies, outputs):
            tally.add(start, logits, z, target)
    return [tally.result(len(y)) for tally in tallies]


@torch.inference_mode()
def evaluate(model: torch.nn.Module, x, y: torch.Tensor, probe_size: int = 0,
             want_z: bool = True) -> Evaluation:
    """Accuracy and mean loss on (x, y) (x: Inputs or a normalised float tensor); for the first
    `probe_size` examples (the probe) the predictions and log-probabilities of the true labels,
    and Z when `want_z`."""
    model.eval()
    return _evaluate(lambda chunk: [model.forward_with_representation(chunk)], 1, x, y, probe_size, want_z)[0]


@torch.inference_mode()
def evaluate_pair(model: torch.nn.Module, other: torch.nn.Module, x, y: torch.Tensor, probe_size: int = 0,
                  want_z: bool = True) -> tuple[Evaluation, Evaluation]:
    """`evaluate` of two models of one architecture on the same examples, in the same passes
    (`FedModel.forward_pair`: LeNet shares its convolutions between the two)."""
    model.eval()
    other.eval()
    local, averaged = _evaluate(lambda chunk: model.forward_pair(other, chunk), 2, x, y, probe_size, want_z)
    return local, averaged


def probe_bounds(labels: np.ndarray, local: Evaluation, averaged: Evaluation) -> np.ndarray:
    """The `protocol.BOUNDS` of one worker's probe (len(BOUNDS),) float64: H(Y), and per model
    its error, Fano bound and head bound H(Y) - CE, with standard errors (NaN for a model
    that did not run, such as the local model of a worker none of whose clients trained)."""
    from fedmpi.info import bounds  # here, not at import: fedmpi.info loads scipy (0.5 s of start-up)
    values = {"entropy": bounds.label_entropy(labels), "entropy_se": bounds.label_entropy_stderr(labels)}
    for which, ev in (("local", local), ("averaged", averaged)):
        if ev.probe_pred is None or math.isnan(ev.accuracy):
            values.update({f"{key}_{which}": math.nan for key in ("error", "fano", "fano_se", "head", "head_se")})
            continue
        band = bounds.label_bounds(labels, ev.probe_pred)
        head = bounds.variational_bound(ev.probe_logp, labels)
        values.update({f"error_{which}": band.error_rate, f"fano_{which}": band.fano,
                       f"fano_se_{which}": band.fano_stderr, f"head_{which}": head.value,
                       f"head_se_{which}": head.stderr})
    return np.array([values[key] for key in BOUNDS], dtype=np.float64)


class ClientGroup:
    """One worker's simulated clients (one by default): train the sampled ones, add up what they send.

    Each client keeps its own model, optimizer state, batch order and
    algorithm state across rounds. Before training, a sampled client starts
    from the global model (`sync.redistribute: true`) or from its own model.
    The worker's payload at the sync point is the sum of its sampled clients'
    contributions, so one Allreduce per round serves any number of clients.
    Its "local model" is the model that partial sum stands for (the client
    itself when there is one). Every rank holds the same `server` state: the
    algorithm computes it from the same sum everywhere.
    """

    def __init__(self, cfg, dataset, worker_data, x: torch.Tensor, y: torch.Tensor, device, num_clients: int,
                 worker: int):
        self.redistribute = cfg.sync.redistribute
        self.reset_optimizer = cfg.train.optimizer_state == "reset"
        self.ids = worker_data.client_ids
        self.clients = [LocalTrainer(cfg, new_model(cfg, dataset.input_shape, dataset.num_classes, device),
                                     x[sl], y[sl], cid)
                        for cid, sl in zip(worker_data.client_ids, worker_data.client_slices)]
        # A client's weight in the average: its number of examples (FedAvg), or 1 for each.
        self.weights = [len(c.y) if cfg.clients.weighting == "examples" else 1 for c in self.clients]
        self.evaluator = new_model(cfg, dataset.input_shape, dataset.num_classes, device)
        self.eval_flat = FlatParams(self.evaluator)
        # The global model's copy for evaluation beside the local one (evaluate_pair).
        self.global_evaluator = new_model(cfg, dataset.input_shape, dataset.num_classes, device)
        self.global_flat = FlatParams(self.global_evaluator)
        self.size = self.eval_flat.size
        self.algorithm = algorithm = new_algorithm(cfg, self.evaluator, self.eval_flat, num_clients)
        self.client_states: list[State] = [algorithm.client_init() for _ in self.clients]
        # Every client starts from the same initial model, which is also the first global one.
        self.server: State = algorithm.server_init(self.eval_flat.vector.detach().cpu().numpy())
        self.local_theta: torch.Tensor | None = None  # this round's local model, (num_params,) float32 CPU
        self.local_start: np.ndarray | None = None  # the model its clients started the round from
        self.round: _Round | None = None  # the round under way, between begin_round and finish_round
        self._hooks: dict = {}  # the algorithm's gradient hook of each client in the round
        self._part = np.empty(algorithm.contribution_size, dtype=np.float32)
        # With a compressor, what this worker sends at sync points (fedmpi.compressed).
        self.uplink = None if cfg.compression.name == "none" else Uplink(
            build_compressor(cfg.compression.name, cfg.compression.params), self.size, cfg.seed, worker)

    def train_round(self, sampled, steps, out: np.ndarray, where: str, lr: float | None = None) -> float:
        """Train this worker's sampled clients; write the sum of their contributions into out.

        `steps` is one number for every client, or a sequence indexed by client id
        (`Schedule.client_steps`); `lr` the round's learning rate (None: train.lr).
        With `train.optimizer_state: reset` each trained client's optimizer state is
        dropped after its local steps, so every round starts from fresh momentum.
        Returns their mean training loss (NaN when none of them was sampled).
        The same as `begin_round`, `train_segment` and `finish_round` in turn."""
        self.begin_round(sampled, lr)
        self.train_segment(steps, where)
        return self.finish_round(out)

    def begin_round(self, sampled, lr: float | None = None) -> None:
        """Start a round: its sampled clients (ids) start from the global model (with
        `sync.redistribute`) at the round's learning rate `lr` (None: train.lr)."""
        self.round = _Round()
        for j, (cid, client) in enumerate(zip(self.ids, self.clients)):
            if cid not in sampled:
                continue
            if self.redistribute:
                client.flat.assign(torch.from_numpy(self.server["theta"]))
            if lr is not None:
                client.set_lr(lr)
            self.round.start[j] = client.flat.vector.detach().cpu().numpy().copy()
            self.round.loss[j], self.round.steps[j] = 0.0, 0
            self.round.rate[j] = client.opt.lr
        self._hooks = self._round_hooks()

    def _round_hooks(self) -> dict:
        """The algorithm's gradient hook of each client training in the round under way."""
        return {j: self.algorithm.gradient_hook(self.client_states[j], self.server) for j in self.round.start}

    @property
    def in_round(self) -> bool:
        return self.round is not None

    def train_segment(self, steps, where: str) -> None:
        """The round's clients take `steps` more local steps (one number, or a sequence indexed by
        client id): the steps up to the next check point; a round is one or more segments."""
        for j in self.round.start:
            client, cid = self.clients[j], self.ids[j]
            n = steps if isinstance(steps, int) else int(steps[cid])
            loss = client.train_sum(n, self._hooks[j])
            self.round.loss[j] += loss
            self.round.steps[j] += n
            if not (np.isfinite(loss) and np.isfinite(client.flat.vector.detach().cpu().numpy()).all()):
                raise NonFiniteError(f"{where}, client {cid + 1}: loss or parameters are not finite; "
                                     "lower train.lr or check the data")

    def round_models(self) -> tuple[np.ndarray, ...]:
        """(num_params,) float32 of each client training in the current round, as it is now (views)."""
        return tuple(self.clients[j].flat.vector.detach().cpu().numpy() for j in self.round.start)

    def finish_round(self, out: np.ndarray) -> float:
        """End the round: write the sum of its clients' contributions into out; their mean
        training loss over the round (NaN when none of them was sampled)."""
        out[:] = 0
        losses, thetas, starts, weights = [], [], [], []
        for j, start in self.round.start.items():
            client, w, n = self.clients[j], self.weights[j], self.round.steps[j]
            if self.reset_optimizer:
                client.reset_optimizer()
            theta = client.flat.vector.detach().cpu().numpy()
            work = LocalWork(start, theta, w, n, self.round.rate[j])
            self.client_states[j] = self.algorithm.contribute(work, self.client_states[j], self.server, self._part)
            out += self._part
            losses.append(self.round.loss[j] / max(n, 1))
            thetas.append(theta)
            starts.append(start)
            weights.append(w)
        self.round = None
        # The model this worker's clients started the round from, weighted as the local model.
        self.local_start = None if not starts else starts[0] if len(starts) == 1 else \
            (np.tensordot(np.asarray(weights, np.float64), np.stack(starts), 1) / sum(weights)).astype(np.float32)
        if not thetas:
            self.local_theta = None
        elif len(thetas) == 1:  # exact, not (w * theta) / w
            self.local_theta = torch.from_numpy(thetas[0].copy())
        else:
            self.local_theta = torch.from_numpy(self.algorithm.local_model(out))
        return float(np.mean(losses)) if losses else float("nan")

    def aggregate(self, summed: np.ndarray) -> None:
        """The server state after a sync point, from the sum of every contribution."""
        self.server = self.algorithm.aggregate(self.server, summed)

    def message(self, summed_own: np.ndarray, sync_index: int, stop: bool) -> np.ndarray:
        """This worker's compressed message (fedmpi.compressed) after `train_round` wrote
        the sum of its clients' contributions [w theta, w] into `summed_own`."""
        theta = None if self.local_theta is None else self.local_theta.numpy()
        return self.uplink.message(theta, float(summed_own[-1]), self.server["theta"], sync_index, stop)

    def divergence_row(self, out: np.ndarray) -> np.ndarray:
        """[local model | its update over the round] (2 num_params,) float32 into `out`, for
        fedmpi.divergence; NaN when none of this worker's clients trained."""
        if self.local_theta is None:
            out[:] = np.nan
        else:
            theta = self.local_theta.numpy()
            out[:self.size] = theta
            np.subtract(theta, self.local_start, out=out[self.size:])
        return out

    def set_global(self, theta: np.ndarray) -> None:
        """The server state after a compressed sync point: the combined model."""
        self.server = {"theta": np.array(theta, dtype=np.float32, copy=True)}

    def evaluate(self, x: torch.Tensor, y: torch.Tensor, probe_size: int,
                 want_z: bool) -> tuple[Evaluation, Evaluation]:
        """The local model (NaN when no client trained) and the global one, on (x, y); the
        first `probe_size` examples are the probe (Z only when `want_z`)."""
        self.global_flat.assign(torch.from_numpy(self.server["theta"]))
        if self.local_theta is None:
            z = torch.full((probe_size, self.evaluator.representation_dim), float("nan")) if want_z else None
            local = Evaluation(float("nan"), float("nan"), z)
            return local, evaluate(self.global_evaluator, x, y, probe_size, want_z)
        self.eval_flat.assign(self.local_theta)
        return evaluate_pair(self.evaluator, self.global_evaluator, x, y, probe_size, want_z)

    def state(self) -> dict:
        out = {"clients": [c.state() for c in self.clients],
               "algorithm": [tensors(s) for s in self.client_states], "server": tensors(self.server)}
        if self.uplink is not None:
            out["compressor"] = tensors(self.uplink.state)
        if self.round is not None:  # a checkpoint at a check point inside a round (fedmpi.sync)
            r = self.round
            out["round"] = {"clients": list(r.start), "start": [torch.from_numpy(v.copy()) for v in r.start.values()],
                            "loss": list(r.loss.values()), "steps": list(r.steps.values()),
                            "rate": list(r.rate.values())}
        return out

    def load_state(self, state: dict) -> None:
        for client, s in zip(self.clients, state["clients"]):
            client.load_state(s)
        self.client_states = [arrays(s) for s in state["algorithm"]]
        self.server = arrays(state["server"])
        if self.uplink is not None:
            self.uplink.state = arrays(state["compressor"])
        self.round = None
        if "round" in state:
            saved = state["round"]
            self.round = _Round({j: v.numpy().copy() for j, v in zip(saved["clients"], saved["start"])},
                                dict(zip(saved["clients"], saved["loss"])), dict(zip(saved["clients"], saved["steps"])),
                                dict(zip(saved["clients"], saved["rate"])))
            self._hooks = self._round_hooks()


@dataclass
class _Round:
    """A round under way in a ClientGroup, keyed by the index of each training client in the group:
    the model it started from (num_params,) float32, its summed training loss, steps and lr so far."""

    start: dict[int, np.ndarray] = field(default_factory=dict)
    loss: dict[int, float] = field(default_factory=dict)
    steps: dict[int, int] = field(default_factory=dict)
    rate: dict[int, float] = field(default_factory=dict)


def tensors(state: State) -> dict[str, torch.Tensor]:
    """An algorithm state as CPU tensors, which checkpoints load without unpickling code."""
    return {k: torch.from_numpy(np.array(v, copy=True)) for k, v in state.items()}


def arrays(state: dict[str, torch.Tensor]) -> State:
    return {k: v.numpy().copy() for k, v in state.items()}


class NonFiniteError(RuntimeError):
    pass
