import numpy as np
import pytest

from conftest import random_layer
from eie import ChipConfig, EieError
from eie.sw.image import build_image, load_image

C = ChipConfig(pes=4, act_depth=16, matrix_words=64, ptr_words=16)


def chain(rng, config=C):
    return [random_layer(rng, 40, 50, 0.3, config), random_layer(rng, 20, 40, 0.3, config)]


def test_image_round_trip(rng, tmp_path):
    layers = chain(rng)
    image = build_image(layers, C)
    image.save(tmp_path / "m.npz")
    back = load_image(tmp_path / "m.npz", C).quant_layers()
    for a, b in zip(layers, back):
        assert (a.w_index == b.w_index).all() and (a.codebook == b.codebook).all() and (a.bias == b.bias).all()
        assert (a.shift, a.relu) == (b.shift, b.relu)


def test_edited_truncated_or_foreign_images_are_refused(rng, tmp_path):
    image = build_image(chain(rng), C)
    image.save(tmp_path / "m.npz")
    data = (tmp_path / "m.npz").read_bytes()
    (tmp_path / "short.npz").write_bytes(data[:len(data) // 2])
    with pytest.raises(EieError, match="not a readable chip image"):
        load_image(tmp_path / "short.npz")
    image.entries[1][0, 0] ^= 1
    np.savez(tmp_path / "edited.npz", header=np.load(tmp_path / "m.npz")["header"], **image._arrays())
    with pytest.raises(EieError, match="digest"):
        load_image(tmp_path / "edited.npz")
    with pytest.raises(EieError, match="pes=4 \\(chip has 8\\)"):
        load_image(tmp_path / "m.npz", ChipConfig(pes=8, act_depth=16, matrix_words=64, ptr_words=16))
    with pytest.raises(EieError, match="no such image"):
        load_image(tmp_path / "missing.npz")


def test_too_large_for_the_chip(rng):
    small = ChipConfig(pes=4, act_depth=16, matrix_words=4, ptr_words=16)
    with pytest.raises(EieError, match=r"needs \d+ sparse-matrix words per PE .* chip has 4"):
        build_image(chain(rng, small), small)
    with pytest.raises(EieError, match="layer 1 takes 50 inputs but layer 0 gives 20"):
        build_image(chain(rng)[::-1], C)
    with pytest.raises(EieError, match="layer table holds 1"):
        build_image(chain(rng), ChipConfig(pes=4, act_depth=16, max_layers=1))
