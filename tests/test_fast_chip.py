"""The whole chip in Amaranth's simulator (no Verilog, no Verilator build), driven by the same host code as the
co-simulation (`eie.cosim.hostport.ChipHost`): bit-exact against the reference, counters and cycles against
the performance model. The cases are chosen so that each known way of getting the datapath wrong shows
(`tests/mutants.py` checks that they do): back-to-back updates of one row (the accumulator bypass), outputs
saturating both ways and outputs between 2**14 and 2**15 (saturation width), several samples and chained
layers (accumulators cleared between them), rounding, padding entries (2-bit indices), the row decoder."""

import numpy as np
import pytest

from conftest import random_inputs, random_layer, scoreboard
from eie import ChipConfig
from eie.cosim.hostport import simulate_in_amaranth
from eie.sw import reference
from eie.sw.encode import encode_layer
from eie.sw.image import build_image
from eie.sw.quant import QuantLayer

# 2 PEs, 2-bit relative indices (a run of more than 3 zeros needs padding), the shortest queues (stalls).
FAST = ChipConfig(pes=2, index_bits=2, act_depth=16, matrix_words=64, ptr_words=16, count_bits=6,
                  queue_depth=2, jobs_depth=2, max_layers=4)


def fast_cases(rng, c=FAST):
    """(name, layers, inputs)."""
    cases = []
    # One row per PE, every column: each entry updates the row the previous one did (bypass path).
    cases.append(("back-to-back rows", [random_layer(rng, 2, 12, 1.0, c, shift=10, scale=300)],
                  random_inputs(rng, 3, 12, 0.8)))
    # Tall and sparse: zero runs longer than 3 in a PE's rows, so padding entries.
    cases.append(("padding", [random_layer(rng, 30, 16, 0.12, c, shift=9, scale=2000)],
                  random_inputs(rng, 3, 16, 0.9)))
    sat = random_layer(rng, 8, 8, 1.0, c, shift=2, scale=30000)
    cases.append(("saturating", [sat], random_inputs(rng, 2, 8, 1.0, scale=30000)))
    # Exact outputs between 2**14 and 2**15 - 1 in magnitude: +-20000, 30000, -25000 (shift 0, no bias).
    mid = QuantLayer(np.diag([1, 2, 3, 4]), np.array([0, 100, -100, 150, -125]), np.zeros(4, np.int64), 0, False)
    mid.codebook = np.concatenate([mid.codebook, np.zeros(c.codebook_size - 5, np.int64)])
    cases.append(("mid-range outputs", [mid], np.full((2, 4), 200)))
    cases.append(("rounding", [random_layer(rng, 20, 14, 0.5, c, shift=9, scale=1000)],
                  random_inputs(rng, 3, 14, 0.7)))
    # The first columns heavy for PE 0 (eight entries each) and light for PE 1, the last ones the other way
    # round: PE 0's queue fills and holds back the broadcasts PE 1 waits for, so the cycles show exactly how
    # many broadcasts a queue takes.
    heavy = random_layer(rng, 16, 24, 1.0, c, shift=12, scale=400)
    heavy.w_index[1::2, :12] *= rng.random((8, 12)) < 0.15
    heavy.w_index[0::2, 12:] *= rng.random((8, 12)) < 0.15
    cases.append(("queues fill", [heavy], random_inputs(rng, 2, 24, 1.0, scale=400)))
    # Shifts and ReLU differ between the layers: a layer's last rows are still in the output pass when the next
    # layer starts, and must keep their own.
    dims = [16, 20, 12, 6]
    chain = [random_layer(rng, dims[i + 1], dims[i], 0.4, c, shift=(11, 9, 12)[i], relu=i < 2) for i in range(3)]
    cases.append(("three chained layers", chain, random_inputs(rng, 3, 16, 0.8)))
    return cases


@pytest.fixture(scope="module")
def fast_run():
    cases = fast_cases(np.random.default_rng(4321))
    results = simulate_in_amaranth([(build_image(layers, FAST), x) for _, layers, x in cases], stats=True)
    return cases, results


def test_cases_cover_what_they_claim():
    """The mutants are caught only if the cases really exercise each mechanism."""
    c = FAST
    cases = {name: (layers, x) for name, layers, x in fast_cases(np.random.default_rng(4321))}
    outs = {name: reference.forward(layers, x, c)[-1] for name, (layers, x) in cases.items()}
    assert {c.act_max, c.act_min} <= set(outs["saturating"].ravel())
    assert (np.abs(outs["mid-range outputs"]) >= 1 << 14).all() and (np.abs(outs["mid-range outputs"]) < c.act_max).all()
    padding = encode_layer(cases["padding"][0][0].w_index, c)
    assert sum(pe.n_padding for pe in padding.pes) >= 4
    from eie.sw.perf import layer_perf
    layer, x = cases["queues fill"][0][0], cases["queues fill"][1]
    cycles = {q: layer_perf(encode_layer(layer.w_index, c.replace(queue_depth=q)), x,
                            c.replace(queue_depth=q)).model_cycles.tolist() for q in (c.queue_depth, c.queue_depth + 1)}
    assert cycles[c.queue_depth] != cycles[c.queue_depth + 1], "queues fill: one more place must change the cycles"
    for name in ("back-to-back rows", "rounding", "padding"):
        layer, x = cases[name][0][0], cases[name][1]
        assert len(x) >= 2 and (outs[name] != 0).mean() > 0.5, f"{name}: outputs mostly zero"
        assert (np.abs(outs[name]) < c.act_max).all(), f"{name}: saturation would hide errors"
        acc = (layer.bias << layer.shift) + x @ np.asarray(layer.codebook)[layer.w_index].T
        assert (acc & ((1 << layer.shift) - 1) >= 1 << (layer.shift - 1)).any(), f"{name}: rounding never matters"


def test_chip_in_amaranth_is_bit_exact(fast_run):
    scoreboard(*fast_run, FAST)


def test_pe_statistics_read_back_from_every_group_of_four():
    """Six PEs: the host reads each PE's counters through a pick among four, then among the fours (the second
    group only half full); every PE's entries and multiplies as the model counts them."""
    c = FAST.replace(pes=6)
    rng = np.random.default_rng(66)
    cases = [("six PEs", [random_layer(rng, 12, 10, 0.6, c, shift=10, scale=300)], random_inputs(rng, 2, 10, 0.8))]
    results = simulate_in_amaranth([(build_image(layers, c), x) for _, layers, x in cases], stats=True)
    work = list(results[0].pe_stats[0, :, 0])
    assert len(set(work[:4])) > 1 and work[4:] != work[:2]     # counts that differ: a wrong pick shows
    scoreboard(cases, results, c)


def test_amaranth_and_verilator_agree_cycle_for_cycle(fast_run):
    """The same host code on both simulators: identical outputs, cycles, layer cycles and PE counters."""
    from eie.cosim.sim import simulate_many
    cases, fast = fast_run
    slow = simulate_many([(build_image(layers, FAST), x) for _, layers, x in cases], stats=True)
    for (name, _, _), a, v in zip(cases, fast, slow):
        for field in ("outputs", "cycles", "layer_cycles", "pe_stats"):
            assert (getattr(a, field) == getattr(v, field)).all(), f"{name}: {field}"


@pytest.mark.parametrize("change, faster", [
    ({"acts_per_cycle": 2}, {"back-to-back rows", "mid-range outputs"}),        # bound by the broadcast
    ({"outputs_per_cycle": 2}, {"padding", "rounding", "three chained layers"}),   # several rows per PE
])
def test_two_per_cycle(fast_run, change, faster):
    """The same cases with two activations broadcast or two outputs put out per cycle: bit-exact, counters and
    cycles as the model has them, and fewer cycles where the broadcast or the output pass was the bound."""
    c = FAST.replace(**change)
    cases = fast_cases(np.random.default_rng(4321), c)
    results = simulate_in_amaranth([(build_image(layers, c), x) for _, layers, x in cases], stats=True)
    scoreboard(cases, results, c)
    single = {name: r.cycles for (name, _, _), r in zip(*fast_run)}
    sped_up = {name for (name, _, _), r in zip(cases, results) if (r.cycles < single[name]).all()}
    assert faster <= sped_up, sped_up


def test_idle_host_cycles_change_nothing(fast_run):
    """Random idle cycles between host writes: the same outputs, cycles and counters."""
    cases, steady = fast_run
    some = [0, 2, 5]
    idle = simulate_in_amaranth([(build_image(cases[i][1], FAST), cases[i][2]) for i in some], stats=True, gaps=9)
    for i, a in zip(some, idle):
        for field in ("outputs", "cycles", "layer_cycles", "pe_stats"):
            assert (getattr(a, field) == getattr(steady[i], field)).all(), f"{cases[i][0]}: {field}"


def test_host_writes_with_gaps_write_each_word_once():
    """ChipHost over a recording port: with gaps, idle cycles (we low) come between writes, and every word is
    written exactly once, at its address, in order."""
    import asyncio
    from eie.cosim.hostport import ChipHost

    class Recorder:
        def __init__(self):
            self.now, self.inputs, self.writes, self.idle = 0, {}, [], 0

        def drive(self, name, value):
            self.inputs[name] = value

        async def step(self):          # the chip registers the inputs at this edge
            if self.inputs.get("we"):
                self.writes.append((self.inputs["target"], self.inputs["addr"], self.inputs["data"]))
            else:
                self.idle += 1
            self.now += 1

    idle = []
    for gaps in (None, np.random.default_rng(3)):
        port = Recorder()
        asyncio.run(ChipHost(port, FAST, gaps).write_many(3, [11, 22, 33, 44] * 4, base=6))
        assert port.writes == [(3, 6 + i, w) for i, w in enumerate([11, 22, 33, 44] * 4)]
        idle.append(port.idle)
    assert idle[0] == 1 and idle[1] >= 8, f"idle cycles without and with gaps: {idle}"


@pytest.mark.parametrize("change", [{}, {"outputs_per_cycle": 2}, {"pes": 4}])
def test_paired_layers(change):
    """Every case with its layers paired (PEs 0 and 1 share rows, at 4 PEs 0 and 2, 1 and 3; 32 accumulators hold
    twice the 16 local rows): bit-exact, with padding entries (2-bit indices), counters and cycles as the model
    has them."""
    c = FAST.replace(act_depth=32, **change)
    cases = fast_cases(np.random.default_rng(4321), c)
    images = [build_image(layers, c, "balanced", pairs=True) for _, layers, _ in cases]
    assert all(d.paired for image in images for d in image.layers)
    assert any(pe.n_padding for image in images for pe in image.encoded_layers()[0].pes)
    results = simulate_in_amaranth([(image, x) for image, (_, _, x) in zip(images, cases)], stats=True)
    scoreboard(cases, results, c, images)
