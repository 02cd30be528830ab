"""Datasets held in memory as arrays and batched by index.

- `cifar10`: the standard `cifar-10-batches-py` layout under `data.root`
  (Krizhevsky 2009). If it is missing, `ensure_available` downloads the
  official archive and checks its md5; offline it says where to put the data.
- `synthetic`: class-conditional images (a smooth random prototype per class
  plus Gaussian noise), learnable by LeNet in a few hundred steps,
  deterministic from the seed, of any size; for smoke runs and tests.

Images stay uint8 (CIFAR) on every rank: a rank copies the examples it uses
(`Dataset.inputs`) and normalises each batch as it takes it
(`fedmpi.inputs.Inputs`).

The first run on a CIFAR-10 folder also writes its arrays as `.npy` files
into `cifar-10-fedmpi/` beside `cifar-10-batches-py/` (on the coordinator,
before the other ranks load; files renamed into place, a manifest of the
source files' sizes and times last). Later runs map those files into memory
instead of unpickling the batches: every rank shares one copy in the page
cache and reads only the pages it touches, and `Dataset.release` hands them
back once the rank has copied its examples. A read-only data folder, or a
cache that does not match the batches, is passed over: the batches are read
as before.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import pickle
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass, field

import numpy as np

from fedmpi.errors import UsageError
from fedmpi.seeding import SYNTHETIC, rng_for

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CACHE_DIR = "cifar-10-fedmpi"  # beside CIFAR10_DIR: the arrays as .npy files, mapped into memory
CACHE_ARRAYS = ("train_x", "train_y", "test_x", "test_y")
CACHE_MANIFEST = "manifest.json"  # written last: the source files' sizes and times, the arrays' shapes
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
    maps: tuple = field(default=(), compare=False, repr=False)  # memory maps behind the arrays, if any

    def release(self) -> None:
        """Hand back the pages of the mapped arrays this rank has read (after copying what it
        uses): they stay in the page cache for the other ranks, and a later read maps them again."""
        for m in self.maps:
            m.madvise(mmap.MADV_DONTNEED)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.train_x.shape[1:])

    def inputs(self, x: np.ndarray):
        """Selected examples as `fedmpi.inputs.Inputs`: stored as they are (uint8 images stay
        uint8), normalised per batch."""
        import torch

        from fedmpi.inputs import Inputs
        return Inputs(torch.from_numpy(np.ascontiguousarray(x)), self.mean, self.std)

    def to_tensor(self, x: np.ndarray):
        """Normalised float32 torch tensor (N, C, H, W) of selected examples."""
        return self.inputs(x).all()


def ensure_available(data_cfg) -> None:
    """Make sure the dataset can be loaded, downloading CIFAR-10 if allowed.

    Called on one rank before the others load, so a download happens once.
    """
    if data_cfg.name != "cifar10":
        return
    folder = os.path.join(data_cfg.root, CIFAR10_DIR)
    missing = [f for f in CIFAR10_FILES if not os.path.isfile(os.path.join(folder, f))]
    if not missing:
        write_cache(data_cfg.root)
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
    write_cache(data_cfg.root)


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
    cached = _open_cache(root)
    if cached is not None:
        return cached
    train_x, train_y, test_x, test_y = _read_batches(root)
    return Dataset("cifar10", train_x, train_y, test_x, test_y, 10, CIFAR10_MEAN, CIFAR10_STD)


def _read_batches(root: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """train_x (50000, 3, 32, 32) uint8, train_y (50000,) int64, test_x, test_y from the pickled batches."""
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
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]), test_x, test_y


def _source_stamp(root: str) -> list:
    """[name, size, mtime_ns] of each CIFAR-10 batch: what a cache was made from."""
    folder = os.path.join(root, CIFAR10_DIR)
    out = []
    for name in CIFAR10_FILES:
        st = os.stat(os.path.join(folder, name))
        out.append([name, st.st_size, st.st_mtime_ns])
    return out


def write_cache(root: str) -> None:
    """Write the batches as .npy files under root/CACHE_DIR unless a matching cache is there.

    Runs on one rank before the others load. Every file is written under a
    temporary name and renamed into place, the manifest last, so a reader
    sees either a complete cache or none that matches. A folder that cannot
    be written is left alone: the batches are then read at every start.
    """
    if _open_cache(root, check_only=True):
        return
    cache = os.path.join(root, CACHE_DIR)
    try:
        arrays = dict(zip(CACHE_ARRAYS, _read_batches(root)))
        os.makedirs(cache, exist_ok=True)
        for name, array in arrays.items():
            fd, tmp = tempfile.mkstemp(dir=cache, prefix=f".{name}.", suffix=".npy")
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, array)
            os.chmod(tmp, 0o644)  # readable like the batches it copies (mkstemp makes it private)
            os.replace(tmp, os.path.join(cache, f"{name}.npy"))
        manifest = {"sources": _source_stamp(root), "shapes": {k: list(v.shape) for k, v in arrays.items()}}
        fd, tmp = tempfile.mkstemp(dir=cache, prefix=".manifest.", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            json.dump(manifest, fh)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(cache, CACHE_MANIFEST))
    except OSError:
        return  # read-only or full: the batches are read each time instead


def _open_cache(root: str, check_only: bool = False):
    """The cached CIFAR-10 as a Dataset of memory-mapped arrays (True with check_only), or None
    when there is no cache matching the batches."""
    cache = os.path.join(root, CACHE_DIR)
    try:
        with open(os.path.join(cache, CACHE_MANIFEST)) as fh:
            manifest = json.load(fh)
        if manifest.get("sources") != _source_stamp(root):
            return None
        arrays, maps = {}, []
        for name in CACHE_ARRAYS:
            array, m = _map_npy(os.path.join(cache, f"{name}.npy"))
            if list(array.shape) != manifest["shapes"][name]:
                return None
            arrays[name] = array
            maps.append(m)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if check_only:
        return True
    return Dataset("cifar10", arrays["train_x"], arrays["train_y"], arrays["test_x"], arrays["test_y"], 10,
                   CIFAR10_MEAN, CIFAR10_STD, maps=tuple(maps))


def _map_npy(path: str) -> tuple[np.ndarray, mmap.mmap]:
    """A read-only array over a memory map of an .npy file, and the map (ValueError if damaged)."""
    with open(path, "rb") as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"{path}: .npy format {version} not written by fedmpi")
        offset = fh.tell()
        if fortran or dtype not in (np.dtype(np.uint8), np.dtype(np.int64)):
            raise ValueError(f"{path}: unexpected array layout")
        size = int(np.prod(shape)) * dtype.itemsize
        if os.fstat(fh.fileno()).st_size != offset + size:
            raise ValueError(f"{path}: {os.fstat(fh.fileno()).st_size} bytes, expected {offset + size}")
        m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    return np.ndarray(shape, dtype=dtype, buffer=m, offset=offset), m


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
