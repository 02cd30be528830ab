"""Typed job configuration: YAML sections mapped onto frozen dataclasses.

A job file (`jobs/*.yaml`) has the sections `seed`, `data`, `model`,
`algorithm`, `compression`, `train`, `sync`, `clients`, `mi`, `trace`,
`checkpoint`, `device` (docs/design.md). Every key is optional and falls back
to the default written next to its field here. `model`, `algorithm`,
`compression` and `sync.policy` name a registered plug-in and hold that
plug-in's parameters (`model: {name: lenet, width: 2}`); `mi` holds a
section per registered estimator. Unknown keys, names, wrong types and out-of-range values raise
`UsageError` naming the key and what is allowed. `--set section.key=value` overrides go through the same checks. The
resolved config (`to_yaml`) is stored in every trace, so a run can be redone
from its trace alone.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

from fedmpi.algorithms import ALGORITHMS
from fedmpi.compress import COMPRESSORS
from fedmpi.errors import UsageError
from fedmpi.info import ESTIMATORS
from fedmpi.models import MODELS
from fedmpi.registry import Registry
from fedmpi.sync import SYNC_POLICIES


@dataclass(frozen=True)
class DataConfig:
    name: Literal["cifar10", "synthetic"] = "cifar10"
    root: str = "data"  # folder that holds (or receives) cifar-10-batches-py/
    download: bool = True  # fetch the official CIFAR-10 archive if root has none
    partition: Literal["iid", "classes", "dirichlet", "shards"] = "iid"
    alpha: float = 0.5  # Dirichlet concentration, used by partition: dirichlet
    classes_per_client: int = 2  # labels each client holds ("#C=k"), used by partition: shards
    samples_per_worker: int = 0  # examples per worker (per client with clients.total); 0: split everything
    probe_size: int = 1000  # examples per worker whose representation Z is logged
    # Where each worker's probe comes from: "shard", the first probe_size examples of its
    # evaluation subset (training examples); "test", held-out test examples drawn with the label
    # proportions of the worker's shard (a sample of its own distribution it never trained on).
    probe_from: Literal["shard", "test"] = "shard"
    eval_size: int = 2000  # shard examples behind local_acc/averaged_acc; 0: the whole shard
    test_size: int = 0  # test examples behind test_acc; 0: the whole test set
    # Test examples behind test_acc at logged rounds before the last: a fixed random subset of
    # the test_size examples (the last logged round always uses all of them); 0: all, every time.
    test_subset: int = 0
    augment: Literal["none", "crop-flip"] = "none"  # per training batch (fedmpi.augment); never in evaluation

    def check(self) -> None:
        _require(self.alpha > 0, "data.alpha", "a number > 0", self.alpha)
        # The upper end (the dataset's number of classes) is checked where the data are known.
        _require(self.classes_per_client >= 1, "data.classes_per_client", "an integer >= 1",
                 self.classes_per_client)
        _require(self.samples_per_worker >= 0, "data.samples_per_worker",
                 "an integer >= 0 (0 = split the whole training set)", self.samples_per_worker)
        _require(self.probe_size >= 1, "data.probe_size", "an integer >= 1", self.probe_size)
        _require(self.eval_size == 0 or self.eval_size >= self.probe_size or self.probe_from == "test",
                 "data.eval_size",
                 f"0 (whole shard) or an integer >= data.probe_size ({self.probe_size}): with "
                 "data.probe_from: shard the probe is part of the evaluation subset", self.eval_size)
        _require(self.test_size >= 0, "data.test_size", "an integer >= 0 (0 = whole test set)",
                 self.test_size)
        _require(self.test_subset >= 0 and (self.test_size == 0 or self.test_subset <= self.test_size),
                 "data.test_subset", "an integer >= 0 (0 = no subset) and at most data.test_size",
                 self.test_subset)


@dataclass(frozen=True)
class Choice:
    """A section that names a registered plug-in and holds its parameters.

    `cfg.model.name` is the name; `cfg.model.width` reads the parameter of that
    name (`cfg.model.params` is the whole parameter dataclass).
    """

    name: str
    params: Any
    common: Any = None  # the section's keys shared by every plug-in (COMMON), or None

    def __getattr__(self, key: str) -> Any:
        if key in ("name", "params", "common") or key.startswith("__"):  # not set yet (copy, unpickling)
            raise AttributeError(key)
        if self.common is not None and key in {f.name for f in dataclasses.fields(self.common)}:
            return getattr(self.common, key)
        return getattr(self.params, key)


@dataclass(frozen=True)
class CompressionCommon:
    """Keys of `compression` that hold for every compressor (fedmpi.compressed)."""

    # Also gather the uncompressed updates at logged sync points, to measure the aggregate's
    # distortion and the rate-distortion limit; their bytes go to /comm/diagnostic_bytes.
    measure_distortion: bool = False
    # How compressed payloads travel: gathered on the coordinator, which decodes them and
    # broadcasts the new model, or all-gathered so that every rank decodes them.
    collective: Literal["gather", "allgather"] = "gather"


# The sections that are a Choice, the registry each one chooses from, and the keys
# a section has beside its plug-in's parameters.
CHOICES: dict[str, Registry] = {"model": MODELS, "algorithm": ALGORITHMS, "compression": COMPRESSORS,
                                "sync.policy": SYNC_POLICIES}
COMMON: dict[str, type] = {"compression": CompressionCommon}


def _choice(section: str, name: str) -> Choice:
    common = COMMON[section]() if section in COMMON else None
    return Choice(name, CHOICES[section][name].params(), common)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32  # the paper's mini-batch size
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 0.0
    epochs: int = 20  # local epochs of the whole run, counted on the largest shard (sync.unit: epochs: on each)
    threads: int = 1  # torch and BLAS threads per rank; 1 keeps co-located ranks off each other's cores
    optimizer_state: Literal["keep", "reset"] = "keep"  # reset: fresh momentum at every sync point
    # The round's learning rate over sync points (plan.learning_rate): constant, `step` (times
    # lr_gamma every lr_step sync points) or `cosine` (from lr down towards 0 at the last sync point).
    lr_schedule: Literal["constant", "step", "cosine"] = "constant"
    lr_step: int = 10  # sync points between decays, used by lr_schedule: step
    lr_gamma: float = 0.1  # factor of each decay, used by lr_schedule: step

    def check(self) -> None:
        _require(self.batch_size >= 1, "train.batch_size", "an integer >= 1", self.batch_size)
        _require(self.lr > 0, "train.lr", "a number > 0", self.lr)
        _require(0 <= self.momentum < 1, "train.momentum", "a number in [0, 1)", self.momentum)
        _require(self.weight_decay >= 0, "train.weight_decay", "a number >= 0", self.weight_decay)
        _require(self.epochs >= 1, "train.epochs", "an integer >= 1", self.epochs)
        _require(self.threads >= 1, "train.threads", "an integer >= 1", self.threads)
        _require(self.lr_step >= 1, "train.lr_step", "an integer >= 1", self.lr_step)
        _require(0 < self.lr_gamma <= 1, "train.lr_gamma", "a number in (0, 1]", self.lr_gamma)


@dataclass(frozen=True)
class SyncConfig:
    every: int = 100  # local batches (or epochs, see unit) between check points (sync points under periodic)
    # batches: every client takes `every` steps per round; epochs: each client runs `every` epochs
    # of its own data, ceil(n_c / batch_size) steps each, so clients of different sizes differ.
    unit: Literal["batches", "epochs"] = "batches"
    redistribute: bool = True  # false: workers keep their own models (the paper's "without sending back")
    collective: Literal["allreduce", "gather"] = "allreduce"  # gather: coordinator sees every local model
    # Which check points (one every `every` units) are sync points (fedmpi.sync): periodic (all of
    # them), dynamic (a client drifted more than delta from the last average), information (the
    # average lost label information: sync sooner; else later). `policy: {name: dynamic, delta: 0.5}`.
    policy: Choice = field(default_factory=lambda: _choice("sync.policy", "periodic"))

    def check(self) -> None:
        _require(self.every >= 1, "sync.every", "an integer >= 1", self.every)


def _mi_check(self) -> None:
    for name in self.estimators:
        _require(name in ESTIMATORS, "mi.estimators", f"a list drawn from {list(ESTIMATORS)}", name)
    _require(len(set(self.estimators)) == len(self.estimators), "mi.estimators",
             "a list without repeats", list(self.estimators))
    _require(self.every >= 1, "mi.every", "an integer >= 1", self.every)


# `mi` has a section per registered estimator (`mi.edge`, `mi.ksg`, ...), made
# from the registry, so a new estimator needs no field here.
MIConfig = dataclasses.make_dataclass(
    "MIConfig",
    [("estimators", tuple[str, ...], field(default=("decoder",))),  # any subset of fedmpi.info.ESTIMATORS; [] = off
     ("every", int, field(default=1))]  # estimate at every k-th logged round
    + [(name, Any, field(default_factory=ESTIMATORS[name].params)) for name in ESTIMATORS],
    frozen=True, namespace={"check": _mi_check, "params": lambda self, name: getattr(self, name),
                            "__module__": __name__})


@dataclass(frozen=True)
class TraceConfig:
    path: str = "{job}.h5"  # trace file; relative to --out; {job} is the job file's name
    activations: bool = True  # log Z of the probe set for local and averaged models
    every: int = 1  # log every k-th round (the last one is always logged)
    tensorboard: str = ""  # a folder: TensorBoard scalars of each row as it is written (needs the extra); "": off
    divergence: bool = False  # per-layer divergence and drift diversity (fedmpi.divergence); gathers every model

    def check(self) -> None:
        _require(self.path.strip() != "", "trace.path", "a file name such as '{job}.h5'", self.path)
        _require(self.every >= 1, "trace.every", "an integer >= 1", self.every)


@dataclass(frozen=True)
class ClientsConfig:
    total: int = 0  # simulated clients spread over the workers; 0: one per worker
    per_round: int = 0  # clients sampled before each sync point; 0: all of them
    weighting: Literal["examples", "uniform"] = "examples"  # a client's weight in the average: n_c, or 1

    def check(self) -> None:
        _require(self.total >= 0, "clients.total", "an integer >= 0 (0 = one client per worker)", self.total)
        _require(self.per_round >= 0, "clients.per_round", "an integer >= 0 (0 = all clients)", self.per_round)
        _require(self.total == 0 or self.per_round <= self.total, "clients.per_round",
                 f"at most clients.total ({self.total})", self.per_round)


@dataclass(frozen=True)
class CheckpointConfig:
    every: int = 10  # check points (sync points under periodic sync) between checkpoints; 0: only on a signal

    def check(self) -> None:
        _require(self.every >= 0, "checkpoint.every", "an integer >= 0 (0 = only on a signal)", self.every)


@dataclass(frozen=True)
class Config:
    seed: int = 0  # one seed for data, partition, probes, init and batch order
    data: DataConfig = field(default_factory=DataConfig)
    model: Choice = field(default_factory=lambda: _choice("model", "lenet"))  # fedmpi.models
    algorithm: Choice = field(default_factory=lambda: _choice("algorithm", "fedavg"))  # fedmpi.algorithms
    compression: Choice = field(default_factory=lambda: _choice("compression", "none"))  # fedmpi.compress
    train: TrainConfig = field(default_factory=TrainConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    mi: MIConfig = field(default_factory=MIConfig)
    trace: TraceConfig = field(default_factory=TraceConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    clients: ClientsConfig = field(default_factory=ClientsConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: a GPU per worker when CUDA is there

    def check(self) -> None:
        _require(self.seed >= 0, "seed", "an integer >= 0", self.seed)
        # A cosine schedule is a function of the number of sync points, which only periodic knows ahead.
        if self.train.lr_schedule == "cosine" and self.sync.policy.name != "periodic":
            raise UsageError(f"config: train.lr_schedule 'cosine' needs the number of sync points in advance, "
                             f"and sync.policy {self.sync.policy.name!r} decides them at run time; use "
                             "train.lr_schedule constant or step with it")
        if self.sync.policy.name == "information" and self.data.probe_size < 2:
            raise UsageError(f"config: data.probe_size must be at least 2 with sync.policy 'information', which "
                             f"scores the models' heads on the probe; got {self.data.probe_size}")


def _require(ok: bool, key: str, allowed: str, got: Any) -> None:
    if not ok:
        raise UsageError(f"config: {key} must be {allowed}, got {got!r}")


# ---------------------------------------------------------------- parsing

def from_dict(raw: Any) -> Config:
    """Build and check a Config from a YAML-shaped dict (missing keys take defaults)."""
    if raw is None:
        raw = {}
    return _build(Config, raw, "")


def _build(cls: type, raw: Any, prefix: str) -> Any:
    where = prefix.rstrip(".") or "the job file"
    if not isinstance(raw, dict):
        raise UsageError(f"config: {where} must be a mapping of keys to values, got {raw!r}")
    hints = typing.get_type_hints(cls)
    defaults = {f.name: _default_of(f) for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in defaults:
            raise UsageError(f"config: unknown key '{prefix}{key}'; allowed keys in {where}: "
                             f"{', '.join(defaults)}")
    values = {key: _coerce(raw[key], hints[key], defaults[key], prefix + key) for key in raw}
    obj = cls(**values)
    if hasattr(obj, "check"):
        try:
            obj.check()
        except ValueError as exc:  # plug-in parameters (an estimator's) say what is wrong as ValueError
            raise UsageError(f"config: {where}: {exc}") from None
    return obj


def _build_choice(section: str, raw: Any, default: Choice) -> Choice:
    """A Choice section: `name` picks the registered plug-in, the other keys are its parameters."""
    registry = CHOICES[section]
    if isinstance(raw, str):  # `model: lenet` is short for `model: {name: lenet}`
        raw = {"name": raw}
    if not isinstance(raw, dict):
        raise UsageError(f"config: {section} must be a mapping with a name and that {registry.kind}'s "
                         f"parameters, got {raw!r}")
    raw = dict(raw)
    name = raw.pop("name", default.name)
    if name not in registry:
        raise UsageError(f"config: {section}.name must be one of {', '.join(registry)}; got {name!r}")
    common = None
    if section in COMMON:
        shared = {f.name for f in dataclasses.fields(COMMON[section])}
        common = _build(COMMON[section], {k: raw.pop(k) for k in list(raw) if k in shared}, section + ".")
    cls = registry[name].params
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            extra = sorted(f.name for f in dataclasses.fields(COMMON[section])) if section in COMMON else []
            allowed = ", ".join(["name", *sorted(fields), *extra])
            raise UsageError(f"config: unknown key '{section}.{key}' for {section} {name!r}; allowed: {allowed}")
    hints = typing.get_type_hints(cls)
    defaults = {f.name: _default_of(f) for f in dataclasses.fields(cls)}
    values = {k: _coerce(v, hints[k], defaults[k], f"{section}.{k}") for k, v in raw.items()}
    params = cls(**values)
    try:
        params.check()
    except ValueError as exc:
        raise UsageError(f"config: {section}.{exc}") from None
    return Choice(name, params, common)


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory()


def _coerce(value: Any, hint: Any, default: Any, key: str) -> Any:
    if isinstance(default, Choice):
        return _build_choice(key, value, default)
    if dataclasses.is_dataclass(default):  # a nested section, typed by its default
        return _build(type(default), value, key + ".")
    origin = typing.get_origin(hint)
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise UsageError(f"config: {key} must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"config: {key} must be a list, got {value!r}")
        return tuple(_coerce(v, item, None, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is bool:
        if not isinstance(value, bool):
            raise UsageError(f"config: {key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UsageError(f"config: {key} must be an integer, got {value!r}")
        return value
    if hint is float:
        # YAML 1.1 reads `1e-3` (no dot) as a string; accept any number spelled out.
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"config: {key} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise UsageError(f"config: {key} must be a string, got {value!r}")
        return value
    raise TypeError(f"fedmpi.config cannot parse {key} of type {hint}")


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one `--set section.key=value` to a YAML-shaped dict, in place."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"--set takes section.key=value, got {assignment!r}")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UsageError(f"--set {key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def load(path: str | None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a job file (or the defaults, when path is None) and apply `--set` overrides."""
    raw: Any = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as fh:
                raw = yaml.safe_load(fh)
        except FileNotFoundError:
            raise UsageError(f"job file {path} does not exist; give an existing file with -c "
                             "(examples are in jobs/)") from None
        except OSError as exc:
            raise UsageError(f"cannot read job file {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(exc, "problem", None) or "not valid YAML"
            raise UsageError(f"job file {path} is not valid YAML{where}: {problem}") from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise UsageError(f"job file {path} must hold a mapping of sections, got {type(raw).__name__}")
    for assignment in overrides:
        apply_override(raw, assignment)
    return from_dict(raw)


def to_dict(cfg: Config) -> dict:
    def plain(v: Any) -> Any:
        if isinstance(v, Choice):
            return {"name": v.name, **plain(v.params), **(plain(v.common) if v.common is not None else {})}
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v
    return plain(cfg)


def to_yaml(cfg: Config) -> str:
    """The resolved config as YAML; `load` of this text gives back an equal Config."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def differences(a: Config, b: Config) -> list[str]:
    """'key: a -> b' for every field where two configs differ, in file order."""
    out: list[str] = []

    def walk(x: Any, y: Any, prefix: str) -> None:
        if isinstance(x, Choice) and isinstance(y, Choice):
            if x.name != y.name:
                out.append(f"{prefix}name: {x.name!r} -> {y.name!r}")
            else:
                walk(x.params, y.params, prefix)
            if x.common is not None and y.common is not None:
                walk(x.common, y.common, prefix)
        elif dataclasses.is_dataclass(x) and type(x) is type(y):
            for f in dataclasses.fields(x):
                walk(getattr(x, f.name), getattr(y, f.name), prefix + f.name + ".")
        elif x != y:
            out.append(f"{prefix.rstrip('.')}: {x!r} -> {y!r}")
    walk(a, b, "")
    return out


def job_name(path: str | None) -> str:
    return os.path.splitext(os.path.basename(path))[0] if path else "default"
