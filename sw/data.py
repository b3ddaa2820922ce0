"""Data sets: MNIST-format IDX folders (Fashion-MNIST from Debian's package by default) and scikit-learn's
8x8 `digits` for runs that must take seconds.

Images come back as float32 tensors in [0, 1] shaped (N, 1, H, W), labels as int64 tensors. torch is imported
inside the loaders so `eie doctor` can list data sets without it.
"""

from dataclasses import dataclass
import gzip
import importlib.metadata
import os
from pathlib import Path
from typing import TYPE_CHECKING
import zlib

import numpy as np

from eie.errors import EieError

if TYPE_CHECKING:        # the annotations only: torch is imported where the data set is loaded
    import torch

__all__ = ["Dataset", "DATASETS", "FASHION_MNIST_DIR", "find_datasets", "load_dataset", "read_idx"]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FIX = "sudo apt-get install dataset-fashion-mnist"
DATA_DIR_ENV = "EIE_DATA_DIR"
DATASETS = ("fashion-mnist", "mnist", "digits")

# torchvision's raw file names; each may also be gzipped.
_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# IDX type byte -> big-endian numpy dtype.
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass
class Dataset:
    name: str
    x_train: "torch.Tensor"
    y_train: "torch.Tensor"
    x_test: "torch.Tensor"
    y_test: "torch.Tensor"
    classes: int
    location: str

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def regression(self) -> bool:
        """Float targets: a regressor's data set (trained on squared error, scored by R²)."""
        return self.y_train.is_floating_point()

    @property
    def outputs(self) -> int:
        """The outputs a network of this data set gives: one per class, or per target of a regressor's."""
        if self.regression:
            return 1 if self.y_train.ndim == 1 else self.y_train.shape[1]
        return self.classes

    def identity(self):
        """What a run folder records to load this data set again (`load_dataset(**identity)`)."""
        return {"name": self.name, "data_dir": None if self.name == "digits" else str(self.location)}


def read_idx(path):
    """The array in one IDX file (gzipped or not); every way the file can be wrong is an `EieError`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except OSError as e:
        raise EieError(f"cannot read {path}: {e.strerror or e}") from None
    except (EOFError, zlib.error) as e:
        raise EieError(f"{path} is a corrupt or truncated gzip file ({e}); reinstall or re-download it") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_TYPES or raw[3] == 0:
        raise EieError(f"{path} is not an IDX file (bad header {raw[:4].hex() or 'empty'}); "
                       "point --data-dir at a folder of MNIST-format files")
    dtype, ndim = np.dtype(_IDX_TYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise EieError(f"{path} is truncated inside its header; reinstall or re-download it")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", ndim, 4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        state = "truncated" if len(raw) - header < expected else "longer than its header says"
        raise EieError(f"{path} is {state}: {len(raw) - header} data bytes for shape {shape}, expected "
                       f"{expected}; reinstall or re-download it")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def _idx_folder(folder):
    """The folder under `folder` that holds the four IDX files (itself, raw/, or torchvision's */raw/)."""
    folder = Path(folder)
    for candidate in (folder, folder / "raw", *sorted(folder.glob("*/raw"))):
        if _idx_paths(candidate):
            return candidate
    return None


def _idx_paths(folder):
    """{part: path} when `folder` holds all four files, else None."""
    paths = {}
    for part, stem in _FILES.items():
        found = [p for p in (folder / stem, folder / f"{stem}.gz") if p.is_file()]
        if not found:
            return None
        paths[part] = found[0]
    return paths


def _load_idx(name, folder, fix):
    import torch
    root = _idx_folder(folder)
    if root is None:
        wanted = ", ".join(f"{stem}[.gz]" for stem in _FILES.values())
        raise EieError(f"no {name} data in {folder} (needs {wanted}): {fix}")
    arrays = {part: read_idx(path) for part, path in _idx_paths(root).items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise EieError(f"{root}: {split} images {images.shape} and labels {labels.shape} do not match "
                           "(want N x H x W images and N labels)")
        if images.dtype != np.uint8:
            raise EieError(f"{root}: {split} images are {images.dtype}, expected unsigned bytes")
        if len(labels) and (labels.min() < 0 or labels.max() > 255):
            raise EieError(f"{root}: {split} labels outside 0..255")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise EieError(f"{root}: train and test images differ in size")

    def images(a):
        return torch.from_numpy(a.astype(np.float32) / 255.0).unsqueeze(1)

    def labels(a):
        return torch.from_numpy(a.astype(np.int64))

    classes = int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1
    return Dataset(name, images(arrays["train_images"]), labels(arrays["train_labels"]),
                   images(arrays["test_images"]), labels(arrays["test_labels"]), classes, str(root))


def _load_digits():
    """scikit-learn's 1797 8x8 digits, split 80/20 by a fixed permutation (the same split every time)."""
    import torch
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise EieError("the digits data set needs scikit-learn: pip install scikit-learn") from None
    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    split = len(x) * 4 // 5
    train, test = order[:split], order[split:]
    return Dataset("digits", x[train], y[train], x[test], y[test], 10, "scikit-learn (bundled)")


def load_dataset(name, data_dir=None):
    """Load `name` ("fashion-mnist", "mnist" or "digits"); `data_dir` names an MNIST-format folder instead of
    the default location (for "mnist" it is required, or set $EIE_DATA_DIR)."""
    if name not in DATASETS:
        raise EieError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)} "
                       "(mnist takes any MNIST-format folder)")
    if name == "digits":
        if data_dir is not None:
            raise EieError("the digits data set ships with scikit-learn: give no data folder (data_dir), or "
                              "pick another data set")
        return _load_digits()
    if data_dir is not None:
        if not Path(data_dir).is_dir():
            raise EieError(f"data folder {data_dir} is not a folder")
        return _load_idx(name, data_dir, "give a folder of MNIST-format IDX files")
    if name == "fashion-mnist":
        return _load_idx(name, FASHION_MNIST_DIR, f"install it with '{FASHION_MNIST_FIX}'")
    env = os.environ.get(DATA_DIR_ENV)
    if not env:
        raise EieError(f"the mnist data set needs a folder of IDX files: give its folder (data_dir) or "
                       f"set {DATA_DIR_ENV}")
    return _load_idx(name, env, f"fix {DATA_DIR_ENV} to point at a folder of MNIST-format IDX files")


def find_datasets():
    """(name, location or None, fix or None) for `eie doctor`; fix None when nothing is found means optional."""
    found = []
    root = _idx_folder(FASHION_MNIST_DIR) if FASHION_MNIST_DIR.is_dir() else None
    found.append(("fashion-mnist", str(root) if root else None, None if root else FASHION_MNIST_FIX))
    try:
        version = importlib.metadata.version("scikit-learn")
        found.append(("digits", f"scikit-learn {version} (bundled)", None))
    except importlib.metadata.PackageNotFoundError:
        found.append(("digits", None, "pip install scikit-learn"))
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        root = _idx_folder(env) if Path(env).is_dir() else None
        found.append((f"mnist (${DATA_DIR_ENV})", str(root) if root else None,
                      None if root else f"point {DATA_DIR_ENV} at a folder with MNIST-format IDX files"))
    else:
        found.append((f"mnist (${DATA_DIR_ENV})", None, None))
    return found
