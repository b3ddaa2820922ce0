"""Balanced row placement: same results once un-permuted, never a busier PE than interleaving."""

import numpy as np
import pytest

from conftest import random_inputs, random_layer, test_chip
from eie import ChipConfig, EieError
from eie.sw.encode import encode_layer
from eie.sw.image import build_image, load_image
from eie.sw.quant import QuantLayer
from eie.sw.placement import balanced_order, can_pair, column_weights, expected_work
from eie.sw.reference import forward

C = ChipConfig(pes=8, act_depth=64, matrix_words=1024, ptr_words=64, count_bits=8)


def skewed_layer(rng, rows, cols, config, **kw):
    """Rows of very different densities, so interleaving leaves some PEs much busier."""
    layer = random_layer(rng, rows, cols, 0.0, config, **kw)
    density = rng.random(rows)[:, None] ** 3
    layer.w_index = rng.integers(1, config.codebook_size, (rows, cols)) * (rng.random((rows, cols)) < density)
    return layer


def chip_outputs_unpermuted(image, x):
    """The reference on what the chip holds (its permuted layers), back in the model's row order."""
    return image.unpermute(forward(image.quant_layers(), x, image.config)[-1])


@pytest.mark.parametrize("pes, rows, cols", [(8, 200, 120), (3, 50, 70), (16, 100, 300), (1, 30, 20)])
def test_permuted_chip_equals_the_unpermuted_reference(rng, pes, rows, cols):
    c = ChipConfig(pes=pes, act_depth=-(-max(rows, cols) // pes), matrix_words=4096, ptr_words=64, count_bits=10)
    for shift in (6, 12):
        layer = skewed_layer(rng, rows, cols, c, shift=shift, relu=shift == 6)
        x = random_inputs(rng, 5, cols, 0.5)
        expect = forward([layer], x, c)[-1]
        for calibration in (None, random_inputs(rng, 20, cols, 0.3)):
            image = build_image([layer], c, placement="balanced", calibration=calibration)
            if pes > 1:
                assert image.layers[0].order is not None, "skewed rows must be moved"
            assert (chip_outputs_unpermuted(image, x) == expect).all()


def test_busiest_pe_never_exceeds_interleaving(rng):
    moved = 0
    for trial in range(12):
        rows, cols = int(rng.integers(20, 300)), int(rng.integers(10, 200))
        c = ChipConfig(pes=int(rng.choice([2, 4, 8, 16])), index_bits=int(rng.choice([4, 5])), act_depth=160,
                       count_bits=10)
        layer = skewed_layer(rng, rows, cols, c) if trial % 2 else random_layer(rng, rows, cols, 0.1, c)
        calibration = random_inputs(rng, 30, cols, rng.random())
        for weights in (None, column_weights(calibration, cols)):
            order = balanced_order(layer.w_index, c, weights)
            base = expected_work(layer.w_index, None, c, weights).max()
            placed = expected_work(layer.w_index, order, c, weights).max()
            assert placed <= base + 1e-9
            moved += placed < base
            if 2 * -(-rows // c.pes) <= c.act_depth:     # pairs fit: either better than interleaving or none
                order = balanced_order(layer.w_index, c, weights, paired=True)
                paired = expected_work(layer.w_index, order, c, weights, paired=True).max()
                assert paired < base or (order == np.arange(rows)).all()
    assert moved >= 12, "balancing should help on most of these layers"


def test_every_column_is_spread_over_the_pes(rng):
    """Rows of one density, so interleaving's totals are already even and balancing totals alone changes little;
    but a PE's work for one input is its entries in that input's non-zero columns, so the placement spreads each
    column's entries evenly over the PEs: the busiest PE for random inputs comes closer to the mean. 16 local rows
    at 4-bit indices: no padding, entries are the weights."""
    c = ChipConfig(pes=16, act_depth=16, count_bits=8)
    w = rng.integers(1, 16, (256, 96)) * (rng.random((256, 96)) < 0.25)
    x = rng.random((300, 96)) < rng.random(96)       # each input's chance of being non-zero varies by column

    def figures(order):
        """(sum of squared deviations of each column's entries per PE, mean busiest PE over the mean - 1)"""
        counts = encode_layer(w if order is None else w[order], c).counts
        work = x @ counts.T
        return ((counts - counts.mean(0)) ** 2).sum(), (work.max(1) / work.mean(1)).mean() - 1
    (spread, above), (base_spread, base_above) = figures(balanced_order(w, c)), figures(None)
    print(f"spread {spread:.0f} vs interleaving's {base_spread:.0f}; busiest +{above:.2%} vs +{base_above:.2%}")
    assert spread < 0.6 * base_spread and above < 0.7 * base_above


def test_calibration_weighs_columns():
    """Every row holds 4 entries, so the matrix alone sees nothing to balance; but interleaving puts the four
    rows of the inputs that are ever non-zero on PE 0, and calibrated placement spreads them."""
    c = ChipConfig(pes=4, act_depth=16)
    w = np.zeros((16, 8), np.int64)
    w[::4, :4] = 5                       # rows 0, 4, 8, 12 (PE 0): inputs 0..3, non-zero in every sample
    w[np.arange(16) % 4 != 0, 4:] = 3    # the other rows: inputs 4..7, always zero
    x = np.zeros((10, 8), np.int64)
    x[:, :4] = 7
    weights = column_weights(x, 8)
    assert (balanced_order(w, c) == np.arange(16)).all()
    assert expected_work(w, None, c, weights).max() == 16
    assert expected_work(w, balanced_order(w, c, weights), c, weights).max() == 4
    layer = QuantLayer(w, np.arange(16), np.zeros(16, np.int64), 0, False)
    assert build_image([layer], c, placement="balanced").layers[0].order is None
    held = build_image([layer], c, placement="balanced", calibration=x).quant_layers()[0].w_index
    assert expected_work(held, None, c, weights).max() == 4


def test_three_layer_chain_with_placement_on_every_layer(rng, tmp_path):
    dims = [90, 120, 70, 30]
    layers = [skewed_layer(rng, dims[i + 1], dims[i], C, shift=12, relu=i < 2) for i in range(3)]
    x = random_inputs(rng, 6, dims[0], 0.6)
    expect = forward(layers, x, C)
    image = build_image(layers, C, placement="balanced", calibration=random_inputs(rng, 40, dims[0], 0.6))
    assert all(d.order is not None for d in image.layers)
    chip = forward(image.quant_layers(), x, C)
    for l in range(3):
        assert (image.unpermute(chip[l], layer=l) == expect[l]).all()
    image.save(tmp_path / "m.npz")
    back = load_image(tmp_path / "m.npz", C)
    assert [d.order for d in back.layers] == [d.order for d in image.layers]
    assert (chip_outputs_unpermuted(back, x) == expect[-1]).all()
    for model, original in zip(back.model_layers(), layers):      # what a re-layout for another chip starts from
        assert (model.w_index == original.w_index).all() and (model.bias == original.bias).all()


def test_edited_row_order_is_refused(rng, tmp_path):
    import json
    image = build_image([skewed_layer(rng, 40, 30, C)], C, placement="balanced")
    image.save(tmp_path / "m.npz")
    z = dict(np.load(tmp_path / "m.npz"))
    header = json.loads(str(z["header"]))
    order = header["layers"][0]["order"]
    order[0], order[1] = order[1], order[0]
    np.savez(tmp_path / "edited.npz", **{**z, "header": np.array(json.dumps(header))})
    with pytest.raises(EieError, match="digest"):
        load_image(tmp_path / "edited.npz")


def test_bad_placement_arguments(rng):
    layer = random_layer(rng, 20, 10, 0.3, C)
    with pytest.raises(EieError, match="placement must be one of interleaved, balanced"):
        build_image([layer], C, placement="random")
    with pytest.raises(EieError, match="only guide placement='balanced'"):
        build_image([layer], C, calibration=np.zeros((2, 10), np.int64))
    with pytest.raises(EieError, match="calibration inputs: expected 10 activations"):
        build_image([layer], C, placement="balanced", calibration=np.zeros((2, 11), np.int64))


def test_fewer_rows_than_pes(rng):
    """Some PEs hold no row at all (10 outputs on 16 PEs): placement still works and stays exact."""
    c = ChipConfig(pes=16, act_depth=8)
    layers = [random_layer(rng, 40, 30, 0.5, c, relu=True), random_layer(rng, 10, 40, 0.5, c)]
    x = random_inputs(rng, 5, 30, 0.6)
    image = build_image(layers, c, placement="balanced")
    assert np.array_equal(image.unpermute(forward(image.quant_layers(), x, c)[-1]), forward(layers, x, c)[-1])


def test_interleaved_stays_the_default(rng):
    layer = skewed_layer(rng, 40, 30, C)
    image = build_image([layer], C)
    assert image.layers[0].order is None and (image.unpermute(np.arange(40)) == np.arange(40)).all()


def test_placed_chain_on_the_simulated_chip(rng):
    """On the Verilated chip: it holds permuted layers; its outputs equal the reference on them, and,
    un-permuted, the reference on the model's layers; the same with every layer paired."""
    from eie.cosim.sim import simulate
    c = test_chip(4)
    dims = [80, 100, 40]
    layers = [skewed_layer(rng, dims[i + 1], dims[i], c, shift=12, relu=i == 0) for i in range(2)]
    x = random_inputs(rng, 3, dims[0], 0.5)
    image = build_image(layers, c, placement="balanced")
    assert all(d.order is not None for d in image.layers)
    out = simulate(image, x).outputs
    assert (out == forward(image.quant_layers(), x, c)[-1]).all()
    assert (image.unpermute(out) == forward(layers, x, c)[-1]).all()
    # the same chain with every layer paired, padding entries included (2 x 25 local rows at 4-bit indices)
    paired = build_image(layers, c, placement="balanced", pairs=True)
    assert all(d.paired for d in paired.layers) and any(pe.n_padding for pe in paired.encoded_layers()[0].pes)
    assert (paired.unpermute(simulate(paired, x).outputs) == forward(layers, x, c)[-1]).all()


def test_pairs_take_what_rows_cannot_balance(rng):
    """Random rows of one density, as in the test above, but 16 rows per PE: even the best row placement leaves
    each PE's work for one input a few percent from the mean. Pairs split every column within a pair, so the
    busiest PE comes closer still, and with 2 x 16 local rows at 5-bit indices they add no padding."""
    c = ChipConfig(pes=16, index_bits=5, act_depth=32, count_bits=8)
    w = rng.integers(1, 16, (256, 512)) * (rng.random((256, 512)) < 0.25)
    x = rng.random((200, 512)) < 0.4

    def above(paired):
        order = balanced_order(w, c, paired=paired)
        enc = encode_layer(w[order], c, paired=paired)
        assert not any(pe.n_padding for pe in enc.pes)
        work = x @ enc.counts.T
        return (work.max(1) / work.mean(1)).mean() - 1
    rows, pairs = above(False), above(True)
    print(f"busiest PE above the mean: +{rows:.2%} placing rows, +{pairs:.2%} with pairs")
    assert pairs < 0.75 * rows


def test_balanced_placement_pairs_where_pairs_add_no_padding(rng):
    """`can_pair`: an even number of PEs, and twice the local rows within the accumulators and within one
    relative index's reach. "balanced" pairs exactly those layers unless told otherwise; interleaving pairs none
    unless told; a pairing that cannot work is refused."""
    c = ChipConfig(pes=4, index_bits=4, act_depth=16, count_bits=8)
    assert can_pair(32, c) and not can_pair(33, c)                 # 2 x 8 local rows <= 16; 2 x 9 > 16
    assert not can_pair(16, c.replace(pes=3, act_depth=22))        # an odd number of PEs
    assert not can_pair(32, c.replace(act_depth=15))               # 16 accumulators needed
    short, tall = (random_layer(rng, rows, 40, 0.4, c) for rows in (30, 60))
    assert [d.paired for d in build_image([short], c, placement="balanced").layers] == [True]
    assert [d.paired for d in build_image([tall], c, placement="balanced").layers] == [False]
    assert [d.paired for d in build_image([short], c).layers] == [False]
    assert [d.paired for d in build_image([short], c, placement="balanced", pairs=False).layers] == [False]
    assert [d.paired for d in build_image([tall], c.replace(act_depth=32), pairs=True).layers] == [True]
    with pytest.raises(EieError, match="layer 0: paired, 60 rows need 30 accumulators per PE but the chip has 16"):
        build_image([tall], c, placement="balanced", pairs=True)
    chain = [short, random_layer(rng, 20, 30, 0.4, c)]
    assert [d.paired for d in build_image(chain, c, pairs=[False, True]).layers] == [False, True]
    with pytest.raises(EieError, match=r"pairs: one per layer \(2\), not 1"):
        build_image(chain, c, pairs=[True])


def test_paired_chain_round_trips(rng, tmp_path):
    """A 3-layer chain, each layer placed and paired: the reference on what the chip holds equals the model's,
    un-permuted, layer by layer, and after a save and load; the model's layers come back from the image."""
    c = ChipConfig(pes=8, index_bits=5, act_depth=32, matrix_words=1024, ptr_words=64, count_bits=8)
    dims = [90, 120, 70, 30]
    layers = [skewed_layer(rng, dims[i + 1], dims[i], c, shift=12, relu=i < 2) for i in range(3)]
    x = random_inputs(rng, 6, dims[0], 0.6)
    expect = forward(layers, x, c)
    image = build_image(layers, c, placement="balanced")
    assert all(d.paired and d.order is not None for d in image.layers)
    chip = forward(image.quant_layers(), x, c)
    for l in range(3):
        assert (image.unpermute(chip[l], layer=l) == expect[l]).all()
    image.save(tmp_path / "m.npz")
    back = load_image(tmp_path / "m.npz", c)
    assert [d.paired for d in back.layers] == [True] * 3
    assert (chip_outputs_unpermuted(back, x) == expect[-1]).all()
    for model, original in zip(back.model_layers(), layers):
        assert (model.w_index == original.w_index).all() and (model.bias == original.bias).all()


def test_placement_load_shows_balanced_placement_evening_an_unbalanced_matrix():
    """`placement_load` (eie compare's load table): a matrix whose rows on PE 0 are dense puts PE 0 far above the
    mean when interleaved; balanced placement brings the busiest PE down, in work and in the model's cycles. A
    matrix of equal rows (2:4) interleaved is already near the mean. Interleaved figures given by the caller are
    the ones it would compute."""
    from eie.sw.perf import layer_perf
    from eie.sw.placement import placement_load
    config = ChipConfig(pes=4, act_depth=64)
    rng = np.random.default_rng(3)
    w = (rng.random((64, 64)) < 0.25).astype(np.int64)
    w[::4] = 1                                              # interleaved: every row of PE 0 dense
    nm = np.zeros((64, 64), np.int64)
    nm.reshape(64, 16, 4)[:, :, :2] = 1                      # 2:4, every row alike
    x = (rng.random((50, 64)) < 0.5).astype(np.int64)
    for matrix in (w, nm):
        layers = [QuantLayer(matrix, np.array([0, 1] + [0] * 14), np.zeros(64, np.int64), 0, False)]
        load = placement_load(layers, [x], config, samples=5)
        if matrix is w:
            assert load["interleaved"]["network"] > 1.5 > load["balanced"]["network"] >= 1
            assert load["balanced"]["cycles_per_image"] < load["interleaved"]["cycles_per_image"]
        else:
            assert load["interleaved"]["network"] < 1.2
        perf = layer_perf(encode_layer(matrix, config), x, config, model_samples=5)
        assert placement_load(layers, [x], config, samples=5, interleaved=[perf]) == load
        assert load["images"] == 50 and load["interleaved"]["busiest_over_mean"] == [load["interleaved"]["network"]]
