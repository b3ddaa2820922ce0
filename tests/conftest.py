import contextlib
import io

import numpy as np
import pytest

from eie import ChipConfig
from eie.sw.quant import QuantLayer


def test_chip(pes, index_bits=4):
    """The chip configuration the tests use for a PE count: one Verilator build per PE count serves the
    system tests, the CLI tests and the end-to-end runs (builds are cached by configuration)."""
    # act_depth >= 33 leaves room for zero runs longer than a 5-bit index in every PE's rows; 160 x 2 PEs
    # holds the 300 rows of LeNet-300-100's first layer
    return ChipConfig(pes=pes, index_bits=index_bits, act_depth=max(160, 512 // pes), matrix_words=2048,
                      ptr_words=256, count_bits=8)


test_chip.__test__ = False   # a helper, not a test


def chip_flags(config):
    """`eie` command-line flags naming `config`."""
    return ["--pes", str(config.pes), "--index-bits", str(config.index_bits), "--act-depth", str(config.act_depth),
            "--matrix-words", str(config.matrix_words), "--ptr-words", str(config.ptr_words),
            "--count-bits", str(config.count_bits)]


def random_layer(rng, rows, cols, density, config, shift=10, relu=False, scale=3000):
    """A QuantLayer with random indices, codebook and bias."""
    w = rng.integers(1, config.codebook_size, (rows, cols)) * (rng.random((rows, cols)) < density)
    cb = np.concatenate([[0], rng.integers(-scale, scale, config.codebook_size - 1)])
    bias = rng.integers(-200, 200, rows)
    return QuantLayer(w, cb, bias, shift, relu)


def random_inputs(rng, samples, cols, density, scale=2000):
    return rng.integers(-scale, scale, (samples, cols)) * (rng.random((samples, cols)) < density)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def cli(*argv):
    """Run the `eie` command in-process. A refusal (exit 2) comes back as the one-line EieError it printed, so
    tests can match its message; any other exit status is returned."""
    from eie.cli import main
    from eie.errors import EieError
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    if code == 2:
        raise EieError(err.getvalue().strip().splitlines()[-1])
    return code


def scoreboard(cases, results, config, images=None):
    """The chip's results against the models: outputs bit-exact with the reference on the layers given (so the
    encoder is checked too); for single layers, entries read and multiplies per PE and cycles as the
    performance model has them; for chains, layer cycles adding up. `cases` are (name, layers, inputs);
    `images`, if given, are the images run (placed or paired: outputs are put back in the model's row order,
    and the model times each image's own encoding)."""
    from eie.sw import reference
    from eie.sw.encode import encode_layer
    from eie.sw.perf import layer_perf
    for i, ((name, layers, x), result) in enumerate(zip(cases, results)):
        expect = reference.forward(layers, x, config)[-1]
        got = result.outputs if images is None else images[i].unpermute(result.outputs)
        assert got.shape == expect.shape, name
        assert (got == expect).all(), f"{name}: chip differs from the reference"
        if len(layers) == 1:
            enc = encode_layer(layers[0].w_index, config) if images is None else images[i].encoded_layers()[0]
            perf = layer_perf(enc, x, config)
            assert (result.pe_stats[:, :, 0] == perf.work).all(), f"{name}: entries read per PE"
            assert (result.pe_stats[:, :, 1] == perf.macs).all(), f"{name}: multiplies per PE"
            assert (result.cycles == perf.model_cycles).all(), f"{name}: cycles against the model"
        else:
            assert (result.layer_cycles.sum(axis=1) == result.cycles).all(), name
            if images is None and len(result.layer_cycles):
                # each layer as the model times it, the last one waiting for its outputs to land
                acts = [x] + reference.forward(layers, x, config)[:-1]
                for l, layer in enumerate(layers):
                    perf = layer_perf(encode_layer(layer.w_index, config), acts[l], config,
                                      last=l == len(layers) - 1)
                    assert (result.layer_cycles[:, l] == perf.model_cycles).all(), f"{name}: layer {l} cycles"
