import gzip
import struct

import numpy as np
import pytest
import torch

from eie.errors import EieError
from eie.sw import data


def idx_bytes(array):
    array = np.asarray(array, np.uint8)
    return struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_folder(folder, train=12, test=5, size=6, gz=True):
    """A tiny MNIST-format data set: images whose label is their mean brightness bucket."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    parts = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (train, size, size)),
        "train-labels-idx1-ubyte": rng.integers(0, 10, train),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (test, size, size)),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, test),
    }
    for stem, array in parts.items():
        raw = idx_bytes(array)
        if gz:
            (folder / f"{stem}.gz").write_bytes(gzip.compress(raw))
        else:
            (folder / stem).write_bytes(raw)
    return parts


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder_loads_as_unit_floats(tmp_path, gz):
    parts = write_idx_folder(tmp_path, gz=gz)
    d = data.load_dataset("mnist", tmp_path)
    assert d.x_train.shape == (12, 1, 6, 6) and d.x_test.shape == (5, 1, 6, 6)
    assert d.x_train.dtype == torch.float32 and 0 <= d.x_train.min() and d.x_train.max() <= 1
    assert torch.equal(d.y_train, torch.from_numpy(parts["train-labels-idx1-ubyte"].astype(np.int64)))
    assert torch.allclose(d.x_test[:, 0] * 255, torch.from_numpy(parts["t10k-images-idx3-ubyte"].astype(np.float32)))


def test_torchvision_raw_layout(tmp_path):
    write_idx_folder(tmp_path / "FashionMNIST" / "raw")
    assert data.load_dataset("fashion-mnist", tmp_path).location.endswith("FashionMNIST/raw")


def test_truncated_and_corrupt_files_are_one_line_errors(tmp_path):
    write_idx_folder(tmp_path, gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(EieError, match="truncated") as e:
        data.load_dataset("mnist", tmp_path)
    assert "\n" not in str(e.value)

    write_idx_folder(tmp_path / "gz")
    gz = tmp_path / "gz" / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(EieError, match="corrupt or truncated gzip"):
        data.load_dataset("mnist", tmp_path / "gz")

    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"PK\x03\x04 not idx at all")
    with pytest.raises(EieError, match="not an IDX file"):
        data.read_idx(bad)


def test_mismatched_labels(tmp_path):
    write_idx_folder(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3)))
    with pytest.raises(EieError, match="do not match"):
        data.load_dataset("mnist", tmp_path)


def test_missing_data_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    with pytest.raises(EieError, match="apt-get install dataset-fashion-mnist"):
        data.load_dataset("fashion-mnist")
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    with pytest.raises(EieError, match=r"give its folder \(data_dir\)"):
        data.load_dataset("mnist")
    with pytest.raises(EieError, match="unknown data set 'cifar'"):
        data.load_dataset("cifar")
    with pytest.raises(EieError, match="not a folder"):
        data.load_dataset("mnist", tmp_path / "missing")


def test_find_datasets(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    found = {name.split()[0]: (loc, fix) for name, loc, fix in data.find_datasets()}
    assert found["fashion-mnist"] == (None, data.FASHION_MNIST_FIX)
    assert found["digits"][0] and found["digits"][1] is None
    assert found["mnist"] == (None, None)  # optional and not configured
    write_idx_folder(tmp_path / "m")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path / "m"))
    found = {name.split()[0]: (loc, fix) for name, loc, fix in data.find_datasets()}
    assert found["mnist"] == (str(tmp_path / "m"), None)
    assert data.load_dataset("mnist").x_train.shape[0] == 12


def test_digits_split_is_fixed():
    a, b = data.load_dataset("digits"), data.load_dataset("digits")
    assert a.x_train.shape == (1437, 1, 8, 8) and a.x_test.shape == (360, 1, 8, 8)
    assert torch.equal(a.y_test, b.y_test) and a.classes == 10
    assert a.x_train.max() == 1.0
