"""Damaged chip images are one `EieError` line, whatever the damage: random bit flips anywhere in the file,
truncation at any length, members missing, added, of the wrong type or shape, a damaged header."""

import io
import json
import re

import numpy as np
import pytest

from conftest import random_layer, test_chip
from eie.errors import EieError
from eie.sw.archive import read_npz
from eie.sw.image import build_image, load_image

C = test_chip(2)


@pytest.fixture
def saved(rng, tmp_path):
    layers = [random_layer(rng, 40, 30, 0.3, C), random_layer(rng, 12, 40, 0.3, C)]
    image = build_image(layers, C)
    image.save(tmp_path / "good.npz")
    return image, (tmp_path / "good.npz").read_bytes()


def same(a, b):
    return a._header() == b._header() and all(
        (x.shape == y.shape and (x == y).all()) for x, y in zip(a._arrays().values(), b._arrays().values()))


def load_or_error(data, path):
    """The image from `data`, or the one-line EieError message it raises (any other exception escapes)."""
    path.write_bytes(data)
    try:
        return load_image(path)
    except EieError as e:
        assert "\n" not in str(e), str(e)
        assert str(e).startswith(str(path)), str(e)
        return str(e)


def test_random_bit_flips_anywhere_are_one_line_or_harmless(saved, tmp_path):
    image, data = saved
    rng = np.random.default_rng(2024)
    refused = 0
    for trial in range(600):
        corrupt = bytearray(data)
        for bit in rng.integers(0, 8 * len(data), 1 if trial < 400 else int(rng.integers(2, 16))):
            corrupt[bit // 8] ^= 1 << (bit % 8)
        got = load_or_error(bytes(corrupt), tmp_path / "flipped.npz")
        if isinstance(got, str):
            refused += 1
        else:   # a flip in a field nothing reads (a timestamp in a local header): the image is intact
            assert same(got, image), f"trial {trial}: a damaged image loaded with other contents"
    assert refused >= 500, f"only {refused} of 600 damaged files refused"


def test_truncation_at_any_length_is_one_line(saved, tmp_path):
    _, data = saved
    for length in sorted({*range(0, len(data), max(1, len(data) // 300)), *range(len(data) - 40, len(data))}):
        got = load_or_error(data[:length], tmp_path / "short.npz")
        assert isinstance(got, str) and "not a readable chip image" in got, (length, got)


def rewrite(tmp_path, data, edit):
    """The archive with its members passed through `edit(dict)`, saved with numpy (a valid zip)."""
    with np.load(io.BytesIO(data)) as z:
        members = {name: z[name] for name in z.files}
    edit(members)
    buf = io.BytesIO()
    np.savez(buf, **members)
    return buf.getvalue()


def header_edit(change):
    def edit(members):
        members["header"] = np.array(json.dumps(change(json.loads(str(members["header"])))))
    return edit


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.pop("biases"), "missing: biases"),
    (lambda m: m.update(extra=np.zeros(3, np.int64)), "unexpected: extra"),
    (lambda m: m.update(codebooks=m["codebooks"].astype(np.float64)), "codebooks is float64"),
    (lambda m: m.update(biases=m["biases"][:, :, :-1]), "biases has shape"),
    (lambda m: m.update(entries_1=m["entries_1"][:, :1]), "not .v, z. pairs"),
    (lambda m: m.update(ptr_counts=m["ptr_counts"].reshape(-1)), "ptr_counts is int64 \\(\\d+,\\), not 3-D"),
    (lambda m: m.pop("header"), "no image header"),
    (lambda m: m.update(header=np.array("{not json")), "header is not JSON"),
    (lambda m: m.update(header=np.array("[1, 2]")), "unknown image format"),
    (header_edit(lambda h: {**h, "config": {**h["config"], "lanes": 3}}), "damaged image header .ConfigValueError"),
    (header_edit(lambda h: {**h, "config": {**h["config"], "pes": "two"}}), "damaged image header .ConfigTypeError"),
    (header_edit(lambda h: {**h, "layers": [7]}), "damaged image header .TypeError"),
    (header_edit(lambda h: {k: v for k, v in h.items() if k != "fracs"}), "damaged image header .KeyError"),
    (header_edit(lambda h: {**h, "layers": h["layers"][:1]}), "codebooks has shape"),
    (header_edit(lambda h: {**h, "fracs": [[0, 0, 1]] * 2}), "digest"),
])
def test_wrong_members_or_header_are_one_line(saved, tmp_path, edit, message):
    _, data = saved
    got = load_or_error(rewrite(tmp_path, data, edit), tmp_path / "edited.npz")
    assert isinstance(got, str), "an edited image loaded"
    assert re.search(message, got), got


def test_pickles_non_archives_and_folders_are_one_line(tmp_path):
    np.savez(tmp_path / "objects.npz", header=np.array([{"a": 1}], dtype=object))
    (tmp_path / "text.npz").write_text("hello")
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "folder.npz").mkdir()
    for name, message in (("objects.npz", "Python objects"), ("text.npz", "BadZipFile"),
                          ("empty.npz", "BadZipFile"), ("folder.npz", "is a folder"),
                          ("missing.npz", "no such image file")):
        with pytest.raises(EieError, match=message) as e:
            load_image(tmp_path / name)
        assert "\n" not in str(e.value)


def test_read_npz_reads_what_numpy_writes(tmp_path):
    arrays = {"a": np.arange(12, dtype=np.int16).reshape(3, 4), "f": np.asfortranarray(np.ones((2, 3))),
              "b": np.array([True, False]), "s": np.array("text"), "e": np.zeros((0, 2), np.int64)}
    np.savez_compressed(tmp_path / "x.npz", **arrays)
    got = read_npz(tmp_path / "x.npz", "test archive", "write it again")
    assert set(got) == set(arrays)
    for name, a in arrays.items():
        assert got[name].dtype == a.dtype and got[name].shape == a.shape and (got[name] == a).all(), name
        assert got[name].flags.writeable
