"""Datasets held in memory as arrays and batched by index.

- `cifar10`: the standard `cifar-10-batches-py` layout under `data.root`
  (Krizhevsky 2009). If it is missing, `ensure_available` downloads the
  official archive and checks its md5; offline it says where to put the data.
- `synthetic`: class-conditional images (a smooth random prototype per class
  plus Gaussian noise), learnable by LeNet in a few hundred steps,
  deterministic from the seed, of any size; for smoke runs and tests.

Images stay uint8 (CIFAR) until a rank selects the examples it uses;
`to_tensor` then normalises them once, so the training loop only indexes.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass

import numpy as np

from fedmpi.errors import UsageError
from fedmpi.seeding import SYNTHETIC, rng_for

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
# Per-channel statistics of the CIFAR-10 training set (official release).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

SYNTHETIC_TRAIN = 50_000  # training examples when data.samples_per_worker is 0
SYNTHETIC_TEST = 10_000  # test examples when data.test_size is 0


@dataclass(frozen=True)
class Dataset:
    """Arrays of one dataset; x is (N, C, H, W) uint8 or float32, y is (N,) int64."""
    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    mean: tuple[float, ...]  # per channel, applied by to_tensor
    std: tuple[float, ...]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def to_tensor(self, x: np.ndarray):
        """Normalised float32 torch tensor (N, C, H, W) of selected examples."""
        import torch
        out = torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32)
        if self.train_x.dtype == np.uint8:
            out /= 255.0
        mean = torch.tensor(self.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(1, -1, 1, 1)
        return (out - mean) / std


def ensure_available(data_cfg) -> None:
    """Make sure the dataset can be loaded, downloading CIFAR-10 if allowed.

    Called on one rank before the others load, so a download happens once.
    """
    if data_cfg.name != "cifar10":
        return
    folder = os.path.join(data_cfg.root, CIFAR10_DIR)
    missing = [f for f in CIFAR10_FILES if not os.path.isfile(os.path.join(folder, f))]
    if not missing:
        return
    where = (f"put the python version of CIFAR-10 in {folder}/ (e.g. "
             f"`python ../shared/data/prepare_cifar10.py {data_cfg.root}`, or unpack "
             f"cifar-10-python.tar.gz into {data_cfg.root}) or set data.root")
    if not data_cfg.download:
        raise UsageError(f"CIFAR-10 not found ({missing[0]} missing under {folder}) and "
                         f"data.download is false: {where}")
    try:
        _download_cifar10(data_cfg.root)
    except OSError as exc:
        raise UsageError(f"CIFAR-10 not found under {folder} and downloading {CIFAR10_URL} failed "
                         f"({exc}): {where}") from None


def _download_cifar10(root: str) -> None:
    os.makedirs(root, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = os.path.join(tmp, "cifar-10-python.tar.gz")
        with urllib.request.urlopen(CIFAR10_URL, timeout=30) as resp, open(archive, "wb") as fh:
            shutil.copyfileobj(resp, fh)
        digest = hashlib.md5()
        with open(archive, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != CIFAR10_MD5:
            raise OSError(f"md5 mismatch: got {digest.hexdigest()}, expected {CIFAR10_MD5}")
        with tarfile.open(archive) as tar:
            tar.extractall(tmp, filter="data")
        # Rename into place last, so an interrupted download leaves nothing half-written.
        os.replace(os.path.join(tmp, CIFAR10_DIR), os.path.join(root, CIFAR10_DIR))


# Input shape and number of classes of each dataset, known without loading it.
SHAPES = {"cifar10": ((3, 32, 32), 10), "synthetic": ((3, 32, 32), 10)}


def load(data_cfg, num_clients: int, seed: int) -> Dataset:
    if data_cfg.name == "cifar10":
        return load_cifar10(data_cfg.root)
    if data_cfg.name == "synthetic":
        n_train = data_cfg.samples_per_worker * num_clients or SYNTHETIC_TRAIN
        n_test = data_cfg.test_size or SYNTHETIC_TEST
        return synthetic(n_train, n_test, seed)
    raise UsageError(f"config: data.name must be cifar10 or synthetic, got {data_cfg.name!r}")


def load_cifar10(root: str) -> Dataset:
    folder = os.path.join(root, CIFAR10_DIR)

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as fh:
                batch = pickle.load(fh, encoding="latin1")
            x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch["labels"], dtype=np.int64)
        except (OSError, pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
            raise UsageError(f"cannot read CIFAR-10 batch {path} ({type(exc).__name__}: {exc}); "
                             "replace it with an intact copy of cifar-10-batches-py") from None
        if len(x) != len(y):
            raise UsageError(f"CIFAR-10 batch {path} has {len(x)} images but {len(y)} labels")
        return x, y

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = read("test_batch")
    return Dataset("cifar10", np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                   test_x, test_y, 10, CIFAR10_MEAN, CIFAR10_STD)


def synthetic(n_train: int, n_test: int, seed: int, num_classes: int = 10) -> Dataset:
    """Class-conditional images: smooth prototype of the class + N(0, 1) pixel noise."""
    rng = rng_for(seed, SYNTHETIC)
    # 8x8 prototypes upsampled 4x: spatial structure a convolution can pick up.
    protos = rng.normal(0.0, 1.0, size=(num_classes, 3, 8, 8)).repeat(4, axis=2).repeat(4, axis=3)

    def draw(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, num_classes, size=n).astype(np.int64)
        x = 0.35 * protos[y] + rng.standard_normal(size=(n, 3, 32, 32))
        return x.astype(np.float32), y

    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return Dataset("synthetic", train_x, train_y, test_x, test_y, num_classes, (0.0,) * 3, (1.0,) * 3)
