"""Job files: typed sections, defaults, overrides, and one clear line per mistake."""

import subprocess
import sys

import pytest

from fedmpi import config
from fedmpi.errors import UsageError

from conftest import ROOT


def load_text(tmp_path, text, overrides=()):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    return config.load(str(path), overrides)


def test_default_job_is_the_papers_setup():
    cfg = config.load(str(ROOT / "jobs" / "default.yaml"))
    assert (cfg.data.name, cfg.data.partition, cfg.model.name) == ("cifar10", "iid", "lenet")
    assert (cfg.train.batch_size, cfg.train.epochs, cfg.sync.every, cfg.sync.redistribute) == (32, 20, 100, True)


def test_every_job_file_is_valid():
    paths = sorted((ROOT / "jobs").glob("*.yaml"))
    names = {p.stem for p in paths}
    assert {"default", "smoke", "cifar-quick", "paper-iid-periodic", "paper-noniid-nosendback"} <= names, names
    for path in paths:
        config.load(str(path))


def test_resolved_yaml_round_trips(tmp_path):
    cfg = load_text(tmp_path, "train: {lr: 1e-3}\nmi: {estimators: [edge, ksg], ksg: {k: 5}}\n")
    assert cfg.train.lr == 0.001 and cfg.mi.ksg.k == 5
    again = load_text(tmp_path, config.to_yaml(cfg))
    assert again == cfg


def test_overrides_apply_and_are_checked(tmp_path):
    cfg = load_text(tmp_path, "sync: {every: 10}\n", ["sync.every=1000", "sync.redistribute=false",
                                                        "data.partition=classes", "mi.edge.gamma=2"])
    assert (cfg.sync.every, cfg.sync.redistribute, cfg.data.partition, cfg.mi.edge.gamma) == \
        (1000, False, "classes", 2.0)
    with pytest.raises(UsageError, match="sync.every must be an integer >= 1, got 0"):
        load_text(tmp_path, "", ["sync.every=0"])
    with pytest.raises(UsageError, match="--set takes section.key=value"):
        load_text(tmp_path, "", ["sync.every"])


@pytest.mark.parametrize("text,message", [
    ("trian: {lr: 0.1}\n", "unknown key 'trian'; allowed keys in the job file: seed, data"),
    ("train: {learning_rate: 0.1}\n", "unknown key 'train.learning_rate'; allowed keys in train: batch_size"),
    ("train: {batch_size: 3.5}\n", "train.batch_size must be an integer, got 3.5"),
    ("train: {lr: fast}\n", "train.lr must be a number, got 'fast'"),
    ("train: {lr: -0.1}\n", "train.lr must be a number > 0, got -0.1"),
    ("sync: {redistribute: maybe}\n", "sync.redistribute must be true or false, got 'maybe'"),
    ("sync: {collective: broadcast}\n", "sync.collective must be one of allreduce, gather; got 'broadcast'"),
    ("data: {partition: random}\n", "data.partition must be one of iid, classes, dirichlet"),
    ("data: {probe_size: 100, eval_size: 50}\n", "data.eval_size must be 0 (whole shard) or an integer >= data.probe_size"),
    ("model: {name: resnet}\n", "model.name must be one of lenet"),
    ("device: tpu\n", "device must be one of auto, cpu, cuda"),
    ("mi: {estimators: [edge, magic]}\n", "mi.estimators must be a list drawn from"),
    ("mi: {ksg: {k: 0}}\n", "mi.ksg: ksg.k must be an integer >= 1, got 0"),
    ("train: 5\n", "train must be a mapping"),
    ("- just\n- a list\n", "must hold a mapping of sections"),
    ("train: {lr: [0.1\n", "is not valid YAML at line"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    with pytest.raises(UsageError) as err:
        load_text(tmp_path, text)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_job_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        config.load(str(tmp_path / "nope.yaml"))


def test_check_command_exit_codes(tmp_path):
    good = subprocess.run([sys.executable, "-m", "fedmpi", "check", str(ROOT / "jobs" / "smoke.yaml")],
                          capture_output=True, text=True, cwd=ROOT)
    assert good.returncode == 0 and "valid" in good.stdout and "synthetic" in good.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("sync: {every: -1}\n")
    proc = subprocess.run([sys.executable, "-m", "fedmpi", "check", str(bad)], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "fedmpi: error: config: sync.every must be an integer >= 1, got -1"
    assert proc.stdout == ""


def test_help_documents_the_commands():
    out = subprocess.run([sys.executable, "-m", "fedmpi", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for word in ("run", "check", "analyze", "mpirun -n 3 python -m fedmpi"):
        assert word in out.stdout
    run = subprocess.run([sys.executable, "-m", "fedmpi", "run", "--help"], capture_output=True, text=True,
                         cwd=ROOT)
    for flag in ("--config", "--set", "--out", "--force"):
        assert flag in run.stdout


@pytest.mark.parametrize("overrides,message", [
    (["algorithm.name=fedpvr", "algorithm.layers=[fc9.weight]"],
     "config: algorithm.layers: unknown tensor 'fc9.weight'; the model's tensors are conv1.weight"),
    (["algorithm.name=fedprox", "algorithm.mu=-1"], "config: algorithm.mu must be a number >= 0"),
    (["model.width=-2"], "config: model.width must be a number > 0"),
])
def test_check_builds_the_model_and_algorithm_and_names_the_key(overrides, message):
    cmd = [sys.executable, "-m", "fedmpi", "check", str(ROOT / "jobs" / "smoke.yaml")]
    for o in overrides:
        cmd += ["--set", o]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedmpi: error: " + message), proc.stderr
