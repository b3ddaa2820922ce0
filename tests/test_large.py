"""The vectorized paths that let large matrices fit in memory, against their plain definitions."""

import numpy as np

from conftest import random_layer
from eie import ChipConfig
from eie.sw.image import build_image
from eie.sw.quant import QuantLayer, layer_from_matrix, linear_codebook
from eie.sw.reference import forward


def test_linear_codebook_is_the_nearest_level_lower_on_ties(rng):
    """Equal to an argmin over every level (the dense definition), ties and repeated levels included."""
    ulp = np.spacing(1.0)
    cases = [rng.standard_normal((30, 40)) * (rng.random((30, 40)) < 0.3),
             np.round(rng.standard_normal((20, 20)) * 4) / 4,                   # values on and between levels
             np.where(rng.random((10, 10)) < 0.5, 1.0, 0),                        # one value: every level
             1.0 + ulp * rng.integers(0, 9, (4, 30))]                             # levels closer than an ulp
    levels7 = np.linspace(-1, 1, 7)
    cases.append(np.concatenate([levels7, (levels7[1:] + levels7[:-1]) / 2])[None, :])        # exact midpoints
    for w in cases:
        for size in (8, 16):
            w_index, centroids = linear_codebook(w, size)
            levels = centroids[1:]
            expect = np.where(w != 0, np.abs(w[..., None] - levels).argmin(axis=-1) + 1, 0)
            assert (w_index == expect).all()


def test_layer_from_matrix_matches_the_dense_definition(rng):
    """Index matrix, codebook and output scale as dense float arithmetic defines them (the scale follows the
    largest exact output, here computed from the non-zeros alone), for float32 and float64 matrices."""
    from eie.sw.quant import frac_for, from_fixed
    c = ChipConfig(pes=4, act_depth=32)
    for dtype, relu in ((np.float32, False), (np.float64, True)):
        w = (rng.standard_normal((50, 70)) * (rng.random((50, 70)) < 0.2)).astype(dtype)
        w[3] *= 40                                     # one large row decides the output scale
        x = rng.uniform(-1, 1, 70)
        layer, x_int = layer_from_matrix(w, x, c, relu=relu)
        w_index, centroids = linear_codebook(w, c.codebook_size)
        assert (layer.w_index == w_index).all()
        y = centroids[w_index] @ from_fixed(x_int, layer.in_frac)
        y = np.maximum(y, 0) if relu else y
        assert layer.out_frac == min(frac_for(np.abs(y).max(), c.act_bits), layer.in_frac + 2 * c.weight_bits)


def _unpack(words, widths):
    """Plain bit slicing: the definition of the packed layout."""
    out = []
    for word in words:
        fields, at = [], 0
        for width in widths:
            fields.append((word >> at) & ((1 << width) - 1))
            at += width
        assert word >> at == 0
        out.append(fields)
    return np.array(out, np.int64)


def test_memory_words_unpack_to_the_image(rng):
    """Matrix and pointer words, including pointer words wider than 64 bits, slice back into the image."""
    for c in (ChipConfig(pes=3, act_depth=32, matrix_words=256, ptr_words=32, count_bits=8, index_bits=5),
              ChipConfig(pes=2, act_depth=64, matrix_words=1024, ptr_words=32, weight_index_bits=3,
                         entries_per_word=4, cols_per_ptr_word=16, count_bits=7)):
        assert c.ptr_word_bits > 64
        image = build_image([random_layer(rng, 60, 90, 0.3, c), random_layer(rng, 20, 60, 0.5, c)], c)
        for k in range(c.pes):
            e = image.entries[k]
            got = _unpack(image.matrix_words(k), [c.weight_index_bits, c.index_bits] * c.entries_per_word)
            assert (got.reshape(-1, 2)[:len(e)] == e).all() and not got.reshape(-1, 2)[len(e):].any()
            ptr = _unpack(image.pointer_words(k), [c.entry_addr_bits] + [c.count_bits] * c.cols_per_ptr_word)
            assert (ptr[:, 0] == image.ptr_base[k]).all() and (ptr[:, 1:] == image.ptr_counts[k]).all()


def test_reference_wraps_like_the_accumulator(rng):
    """The sparse product equals Python's exact integers wrapped to acc_bits, overflow included."""
    c = ChipConfig(pes=1, act_bits=16, weight_bits=16, acc_bits=32, act_depth=256)
    w = rng.integers(1, 16, (6, 200))
    layer = QuantLayer(w, np.concatenate([[0], np.full(15, 32767)]), rng.integers(-100, 100, 6), 0, False).check(c)
    x = np.full((1, 200), 32767)
    got = forward([layer], x, c)[0][0]
    for i in range(6):
        acc = int(layer.bias[i]) + sum(int(layer.codebook[v]) * 32767 for v in w[i])
        acc = (acc + (1 << 31)) % (1 << 32) - (1 << 31)
        assert got[i] == max(min(acc, 32767), -32768)
    assert (np.abs(layer.codebook[w].astype(object) @ x[0].astype(object)) >= 1 << 31).all()   # it did wrap
