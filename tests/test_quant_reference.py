import numpy as np
import pytest

from eie import ChipConfig, EieError
from eie.sw.quant import QuantLayer, frac_for, layer_from_matrix, quantize_network, to_fixed
from eie.sw.reference import forward, requantize, wrap

C = ChipConfig(pes=2, act_depth=64)


def test_to_fixed_rounds_half_up_and_saturates():
    assert list(to_fixed([0.5, 1.5, -0.5, -1.5, 2.25], 0, 16)) == [1, 2, 0, -1, 2]
    assert list(to_fixed([1e9, -1e9], 0, 16)) == [32767, -32768]


def test_frac_for_uses_the_whole_range():
    assert frac_for(1.0, 16) == 14          # 1.0 * 2^14 = 16384 fits, 2^15 does not
    assert frac_for(0.999, 16) == 15
    assert frac_for(300.0, 16) == 6
    with pytest.raises(EieError):
        frac_for(float("nan"), 16)


def test_requantize_contract():
    acc = np.array([5, 6, 7, -5, -6, -7, 1 << 30, -(1 << 30)])
    # shift 2: (acc + 2) >> 2, floor; then saturate
    assert list(requantize(acc, 2, False, C)) == [1, 2, 2, -1, -1, -2, 32767, -32768]   # -1.5 -> -1, -1.75 -> -2
    assert list(requantize(acc, 2, True, C)) == [1, 2, 2, 0, 0, 0, 32767, 0]
    assert list(requantize(np.array([3, -3]), 0, False, C)) == [3, -3]


def test_accumulator_wraps():
    assert wrap(np.array([1 << 39]), 40)[0] == -(1 << 39)
    assert wrap(np.array([-(1 << 39) - 1]), 40)[0] == (1 << 39) - 1


def test_forward_matches_a_direct_computation(rng):
    w = rng.integers(0, 16, (5, 7))
    cb = np.concatenate([[0], rng.integers(-100, 100, 15)])
    layer = QuantLayer(w, cb, rng.integers(-50, 50, 5), 3, True).check(C)
    x = rng.integers(-100, 100, 7)
    acc = (layer.bias << 3) + cb[w] @ x
    expect = np.maximum(np.clip((acc + 4) >> 3, -32768, 32767), 0)
    assert (forward([layer], x, C)[0][0] == expect).all()


def test_quantized_network_tracks_floats(rng):
    layers = []
    dims = [30, 20, 10]
    for i in range(2):
        w_index = rng.integers(0, 16, (dims[i + 1], dims[i]))
        layers.append((w_index, np.concatenate([[0], np.linspace(-0.4, 0.4, 15)]), rng.normal(0, 0.1, dims[i + 1]),
                       i == 0))
    x = rng.random((50, 30))
    q = quantize_network(layers, x, C)
    out = forward(q, to_fixed(x, q[0].in_frac, 16), C)[-1] / 2.0 ** q[-1].out_frac
    ref = x
    for w_index, cents, b, relu in layers:
        ref = ref @ cents[w_index].T + b
        ref = np.maximum(ref, 0) if relu else ref
    assert np.abs(out - ref).max() < 0.01 * np.abs(ref).max()


def test_integer_matrices_are_used_exactly(rng):
    w = rng.integers(-3, 4, (6, 9))
    x = rng.integers(-50, 50, 9)
    layer, x_int = layer_from_matrix(w, x, C)
    y = forward([layer], x_int, C)[0][0]
    assert (y * 2 ** -layer.out_frac == w @ x).all()


def test_layer_checks():
    bad = QuantLayer(np.ones((2, 2), np.int64), np.ones(16, np.int64), np.zeros(2, np.int64), 0, False)
    with pytest.raises(EieError, match="entry 0"):
        bad.check(C)
    bad.codebook[0] = 0
    bad.shift = 40
    with pytest.raises(EieError, match="shift"):
        bad.check(C)
