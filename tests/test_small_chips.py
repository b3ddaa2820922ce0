"""The smallest chips and shapes on the Verilator-simulated chip, bit-exact: one-word memories (a 1x1 layer,
8 or fewer columns, rows and columns at most the PE count), rows or columns below the PE count, 1 PE and
64 PEs. Memory depths come from `fit_image` with EIE's interleaved placement, as `eie spmv --placement interleaved`
sizes them (spmv places rows balanced by default), so the chips are the ones users get."""

import numpy as np
import pytest

from conftest import random_inputs, random_layer, scoreboard
from eie import ChipConfig
from eie.cosim.sim import simulate_many
from eie.sw import reference
from eie.sw.image import build_image, fit_image

# The smallest chip of all: every memory one word, one entry per matrix word, one column per pointer word,
# one layer, the shortest queues and the narrowest indices.
TINY = ChipConfig(pes=1, act_depth=1, matrix_words=1, ptr_words=1, max_layers=1, entries_per_word=1,
                  cols_per_ptr_word=1, count_bits=1, queue_depth=2, jobs_depth=2, index_bits=2, weight_index_bits=2)


def one_by_one(rng, c, weight, bias, shift=4, relu=False):
    layer = random_layer(rng, 1, 1, 1.0, c, shift=shift, relu=relu)
    layer.w_index[0, 0] = weight
    layer.codebook[1:] = [9000, -7000, 31000][:c.codebook_size - 1]
    layer.bias[0] = bias
    return layer


def shapes(rng, c, big):
    """(name, layers, inputs) for a chip of `c.pes` PEs: `big` (rows, cols) sizes the chip; the rest fit in it."""
    rows, cols = big
    p = c.pes
    x_big = random_inputs(rng, 4, cols, 0.7, scale=3000)
    cases = [(f"{rows}x{cols}", [random_layer(rng, rows, cols, 0.5, c, shift=8)], x_big)]
    for name, (r, k) in {"1x1": (1, 1), "rows below PEs": (max(1, p // 2 - 1), cols),
                         "cols below PEs": (rows, max(1, p // 2 - 1)), "1 row": (1, cols), "1 col": (rows, 1)}.items():
        cases.append((name, [random_layer(rng, r, k, 0.7, c, shift=6)], random_inputs(rng, 4, k, 0.8)))
    sat = random_layer(rng, rows, cols, 1.0, c, shift=1, scale=30000)
    cases.append(("saturating", [sat], random_inputs(rng, 2, cols, 1.0, scale=30000)))
    if rows <= p and cols <= p:           # a chain through one-word activation banks
        chain = [random_layer(rng, rows, cols, 0.6, c, shift=10, relu=True),
                 random_layer(rng, max(1, p - 1), rows, 0.6, c, shift=10)]
        cases.append(("two chained layers", chain, random_inputs(rng, 3, cols, 0.8)))
    return cases


def check(cases, c):
    images = [build_image(layers, c) for _, layers, _ in cases]
    scoreboard(cases, simulate_many([(image, x) for image, (_, _, x) in zip(images, cases)], stats=True), c)


def test_smallest_chip_runs_1x1_layers_bit_exact(rng):
    c = TINY
    weights = [0, 1, 2, 3]                 # 0: bias only; 3: a large weight that saturates
    cases = []
    for w in weights:
        for relu in (False, True):
            layer = one_by_one(rng, c, w, int(rng.integers(-200, 200)), relu=relu)
            x = np.array([[0], [1], [-1], [32767], [-32768], [1234], [-555]])
            cases.append((f"weight index {w}, relu {relu}", [layer], x))
    check(cases, c)
    outs = np.concatenate([reference.forward([layers[0]], x, c)[0] for _, layers, x in cases])
    assert {c.act_max, c.act_min} <= set(outs.ravel()), "the 1x1 cases must saturate both ways"


def fitted(cases, base):
    """The chip `eie spmv --placement interleaved` would size for the largest of `cases` (fit_image on each, the
    deepest of each)."""
    sized = ("act_depth", "matrix_words", "ptr_words", "count_bits")
    fits = [fit_image(layers, base).config for _, layers, _ in cases]
    return ChipConfig(**{**base.to_dict(), **{f: max(getattr(c, f) for c in fits) for f in sized}})


@pytest.mark.parametrize("pes, big", [(2, (64, 8)), (16, (16, 16)), (5, (5, 3)),
                                      pytest.param(64, (64, 64), marks=pytest.mark.slow)])
def test_fitted_small_chips_with_one_word_memories_are_bit_exact(pes, big, rng):
    """At these shapes (`eie spmv --rows R --cols C --pes N`) at least one memory is one word deep."""
    cases = shapes(rng, ChipConfig(pes=pes), big)
    c = fitted(cases, ChipConfig(pes=pes))
    assert 1 in (c.act_depth, c.matrix_words, c.ptr_words), c
    check(cases, c)
