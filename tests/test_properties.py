"""Property-based check of the whole chip (hypothesis): chip configurations, shapes, densities, index and
weight-index widths, row placements, host timing and inputs are drawn, the chip runs in Amaranth's simulator
(no Verilator build: small chips, memories fitted as `eie spmv` fits them) and its outputs must equal the
reference's bit for bit, its per-PE counters and cycles the performance model's. Where `eie verify` draws cases from
(seed, case) for replay, hypothesis searches and shrinks: a failure is reported as a smaller example with an
@reproduce_failure blob that replays it at once (every shrinking step is a simulation: shrinking takes minutes).

Each run draws fresh examples from a printed seed; EIE_PROPERTY_SEED=N repeats a run (failure included) and
EIE_PROPERTY_EXAMPLES=N runs more than the default 30."""

import os
import secrets

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings, strategies as st
from hypothesis.extra.numpy import arrays

from eie import ChipConfig
from eie.cosim.hostport import simulate_in_amaranth
from eie.sw import reference
from eie.sw.encode import fits_pairs
from eie.sw.image import build_image, fit_config
from eie.sw.perf import layer_perf
from eie.sw.quant import QuantLayer

SEED = int(os.environ.get("EIE_PROPERTY_SEED", secrets.randbelow(1 << 31)))
PROFILE = settings(max_examples=int(os.environ.get("EIE_PROPERTY_EXAMPLES", 30)), deadline=None, database=None,
                   print_blob=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def layers(draw, config, dims):
    """QuantLayers of `dims[i + 1]` x `dims[i]`: weights kept where a drawn mask says so, any codebook values,
    biases and shifts of the whole range (so outputs saturate, round, or vanish)."""
    c = config
    wmax = (1 << (c.weight_bits - 1)) - 1
    out = []
    for cols, rows in zip(dims, dims[1:]):
        w = draw(arrays(np.int64, (rows, cols), elements=st.integers(1, c.codebook_size - 1)))
        w *= draw(arrays(np.bool_, (rows, cols)))
        cb = draw(arrays(np.int64, c.codebook_size - 1, elements=st.integers(-wmax - 1, wmax)))
        bias = draw(arrays(np.int64, rows, elements=st.integers(c.act_min, c.act_max)))
        shift = draw(st.integers(0, c.acc_bits - c.act_bits - 1))
        out.append(QuantLayer(w, np.concatenate([[0], cb]), bias, shift, draw(st.booleans())))
    return out


@st.composite
def cases(draw):
    """(config, layers, inputs, placement, host-timing seed or None) on a chip of 1-4 PEs."""
    n = draw(st.integers(1, 3))
    # narrow indices in half the draws: zero runs longer than the index holds, so padding entries
    ptr = draw(st.sampled_from([1, 2, 8]))
    config = ChipConfig(pes=draw(st.integers(1, 4)), index_bits=draw(st.integers(2, 3) | st.integers(2, 8)),
                        weight_index_bits=draw(st.integers(2, 5)), entries_per_word=draw(st.sampled_from([1, 2, 4, 8])),
                        cols_per_ptr_word=ptr, queue_depth=draw(st.integers(2, 4)),
                        jobs_depth=draw(st.integers(2, 4)), max_layers=draw(st.integers(n, 4)),
                        acts_per_cycle=draw(st.sampled_from([1, 2])) if ptr > 1 else 1,
                        outputs_per_cycle=draw(st.sampled_from([1, 2])))
    dims = draw(st.lists(st.integers(1, 32), min_size=n + 1, max_size=n + 1))
    found = draw(layers(config, dims))
    x = draw(arrays(np.int64, (draw(st.integers(1, 3)), dims[0]), elements=st.integers(config.act_min, config.act_max)))
    gaps = draw(st.none() | st.integers(0, 1 << 32))
    return config, found, x, draw(st.sampled_from(["interleaved", "balanced"])), draw(st.booleans()), gaps


def check(case):
    """The chip against the reference (outputs) and the performance model (entries read and multiplies per PE
    of a single layer). A case drawn paired runs paired if its chip has an even number of PEs."""
    config, found, x, placement, paired, gaps = case
    fitted = fit_config(found, config, placement=placement)
    room = fitted.replace(act_depth=2 * fitted.act_depth)      # for the partners' rows
    pairs = paired and all(fits_pairs(layer.rows, room) for layer in found) or None
    if pairs:
        fitted = fit_config(found, room, keep=("act_depth",), placement=placement, pairs=True)
    image = build_image(found, fitted, placement, pairs=pairs)
    result = simulate_in_amaranth([(image, x)], stats=True, gaps=gaps)[0]
    expect = reference.forward(found, x, image.config)[-1]
    got = image.unpermute(result.outputs)
    assert got.shape == expect.shape and (got == expect).all(), f"outputs differ at {np.argwhere(got != expect)[:5]}"
    if len(found) == 1:
        perf = layer_perf(image.encoded_layers()[0], x, image.config)
        assert (result.pe_stats[:, :, 0] == perf.work).all(), "entries read per PE"
        assert (result.pe_stats[:, :, 1] == perf.macs).all(), "multiplies per PE"
        assert (result.cycles == perf.model_cycles).all(), f"cycles {result.cycles}, the model's {perf.model_cycles}"


def test_the_chip_computes_what_the_reference_does():
    print(f"\n[hypothesis seed {SEED}: EIE_PROPERTY_SEED={SEED} repeats this run]", end=" ")
    seed(SEED)(PROFILE(given(cases())(check)))()


def test_the_property_catches_a_reference_without_rounding(monkeypatch):
    """The property can fail: with the reference truncating instead of rounding, hypothesis finds a case."""
    def truncating(acc, shift, relu, config):
        y = np.clip(acc >> shift, config.act_min, config.act_max)
        return np.maximum(y, 0) if relu else y

    monkeypatch.setattr(reference, "requantize", truncating)
    quick = settings(PROFILE, max_examples=100, phases=[Phase.generate])    # no shrinking: any failure will do
    with pytest.raises(AssertionError, match="outputs differ"):
        seed(SEED)(quick(given(cases())(check)))()
