"""System tests: random and corner-case layers on the Verilator-simulated chip, bit-exact against the
reference, cycles against the performance model."""

import numpy as np
import pytest

from conftest import random_inputs, random_layer, test_chip
from eie.cosim.sim import simulate_many
from eie.sw import reference
from eie.sw.encode import encode_layer
from eie.sw.image import build_image
from eie.sw.perf import layer_perf


def corner_cases(rng, c):
    """(name, layers, inputs) covering the cases a sparse datapath gets wrong."""
    rows, cols = min(c.max_dim, 96), min(c.max_dim, 80)
    cases = []
    for density in (0.01, 0.1, 0.5, 1.0):
        layer = random_layer(rng, rows, cols, density, c, relu=density < 0.5)
        cases.append((f"density {density}", [layer], random_inputs(rng, 3, cols, 0.35)))
    layer = random_layer(rng, rows, cols, 0.2, c)
    cases.append(("all-zero input", [layer], np.zeros((1, cols), np.int64)))
    layer = random_layer(rng, rows, cols, 0.2, c)
    layer.w_index[:, 3] = 0
    layer.w_index[:, -1] = 0
    cases.append(("all-zero columns", [layer], random_inputs(rng, 2, cols, 1.0)))
    layer = random_layer(rng, c.max_dim, 12, 0.02, c)
    layer.w_index[:, 5] = 0
    layer.w_index[-1, 5] = 7                     # one entry after the longest zero run: padding
    cases.append(("long zero runs", [layer], random_inputs(rng, 2, 12, 0.8)))
    layer = random_layer(rng, rows, cols, 0.05, c)
    layer.w_index[7] = rng.integers(1, 16, cols)  # a dense row
    cases.append(("dense row", [layer], random_inputs(rng, 2, cols, 0.5)))
    layer = random_layer(rng, rows, cols, 0.6, c, shift=2, scale=30000)
    cases.append(("saturating", [layer], random_inputs(rng, 2, cols, 0.9, scale=32000)))
    layer = random_layer(rng, rows, cols, 0.3, c, shift=12)
    layer.codebook[1:] = -np.abs(layer.codebook[1:])
    cases.append(("negative", [layer], -np.abs(random_inputs(rng, 2, cols, 0.6))))
    dims = [cols, rows, 48, 10]
    layers = [random_layer(rng, dims[i + 1], dims[i], 0.25, c, shift=12, relu=i < 2) for i in range(3)]
    cases.append(("three chained layers", layers, random_inputs(rng, 3, cols, 0.5)))
    return cases


# 64 PEs take a 4-5 minute Verilator build, so they run with `make test-slow` (and in `make bench`).
@pytest.mark.parametrize("pes, index_bits", [(1, 4), (2, 5), (4, 4), (8, 5), (16, 4),
                                             pytest.param(64, 5, marks=pytest.mark.slow)])
def test_random_and_corner_layers_are_bit_exact(pes, index_bits, rng):
    c = test_chip(pes, index_bits)
    cases = corner_cases(rng, c)
    images = [build_image(layers, c) for _, layers, _ in cases]
    long_runs = next(layers[0] for name, layers, _ in cases if name == "long zero runs")
    padded = sum(pe.n_padding for pe in encode_layer(long_runs.w_index, c).pes)
    assert padded > 0, "the long-zero-run case must exercise padding entries"
    results = simulate_many([(image, x) for image, (_, _, x) in zip(images, cases)], stats=True)
    for (name, layers, x), image, result in zip(cases, images, results):
        outs = reference.forward(image.quant_layers(), x, c)
        assert (result.outputs == outs[-1]).all(), f"{name}: chip differs from the reference"
        if len(layers) == 1:
            perf = layer_perf(encode_layer(layers[0].w_index, c), x, c)
            assert (result.pe_stats[:, :, 0] == perf.work).all(), f"{name}: entries read per PE"
            assert (result.pe_stats[:, :, 1] == perf.macs).all(), f"{name}: multiplies per PE"
            assert (abs(result.cycles - perf.model_cycles) <= 0.02 * result.cycles).all(), name
        else:
            assert (result.layer_cycles.sum(axis=1) == result.cycles).all()


def test_a_wrong_weight_or_rounding_is_caught(rng, monkeypatch):
    """The check can fail: a corrupted image and a reference that truncates both show mismatches."""
    c = test_chip(4)
    layer = random_layer(rng, 64, 64, 0.3, c, shift=16)     # no output saturates: every change shows
    x = random_inputs(rng, 4, 64, 1.0)
    good = build_image([layer], c)
    corrupt = build_image([layer], c)
    real = np.flatnonzero(corrupt.entries[0][:, 0])[0]
    corrupt.entries[0][real, 0] = corrupt.entries[0][real, 0] % 15 + 1      # one weight index changed
    ok, bad = simulate_many([(good, x), (corrupt, x)])
    expect = reference.forward(good.quant_layers(), x, c)[-1]
    assert (ok.outputs == expect).all()
    assert (bad.outputs != expect).any()

    def truncating(acc, shift, relu, config):
        y = np.clip(acc >> shift, config.act_min, config.act_max)
        return np.maximum(y, 0) if relu else y
    monkeypatch.setattr(reference, "requantize", truncating)
    assert (ok.outputs != reference.forward(good.quant_layers(), x, c)[-1]).any()
