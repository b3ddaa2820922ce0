import numpy as np
import pytest

from eie.sw.quant import QuantLayer


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
