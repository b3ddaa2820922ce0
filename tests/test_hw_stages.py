# amaranth: UnusedElaboratable=no
"""The PE's stage components (`eie.hw.spans`, `eie.hw.entries`, `eie.hw.accumulate`, `eie.hw.output`), each
alone in Amaranth's simulator with its memories beside it, against what the encoding and the reference say
it must produce; and their signatures."""

import random

import numpy as np
import pytest
from amaranth import Module, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.sim import Simulator

from eie import ChipConfig
from eie.hw.accumulate import Accumulator
from eie.hw.entries import EntryReader
from eie.hw.output import OutputPass
from eie.hw.spans import ROOM_BITS, SpanUnit
from eie.hw.sram import connect_comb_read
from eie.sw.image import build_image
from eie.sw.quant import QuantLayer
from eie.sw.reference import requantize

# a one-PE chip small enough for the simulator, deep enough for long runs of zeros and queues that fill
CONFIG = ChipConfig(pes=1, act_depth=32, matrix_words=64, ptr_words=16, queue_depth=2, jobs_depth=2)


def _layer(seed=7, rows=24, cols=20):
    """A layer with an empty column, a zero run that needs padding, and its image on `CONFIG`."""
    rng = np.random.default_rng(seed)
    w = rng.integers(1, 16, (rows, cols)) * (rng.random((rows, cols)) < 0.3)
    w[:, 4] = 0
    w[rows - 1, 6], w[:rows - 1, 6] = 5, 0
    layer = QuantLayer(w, np.concatenate([[0], rng.integers(-999, 999, 15)]), rng.integers(-99, 99, rows), 5, True)
    return layer, build_image([layer], CONFIG)


def _run(m, bench, cycles=None):
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


def _rom(shape, words, depth):
    """A memory of `depth` words of `shape` holding `words` (the stage's port widths follow the chip's depths)."""
    return memory.Memory(shape=shape, depth=depth, init=[int(w) for w in words])


@pytest.mark.parametrize("component, members", [
    (SpanUnit, {"act": "In", "ptr_base": "In", "room": "Out", "ptr_rd": "In", "jobs": "Out", "busy": "Out"}),
    (EntryReader, {"jobs": "In", "layer": "In", "mat_rd": "In", "codebook": "Out", "entries": "Out", "read": "Out",
                   "busy": "Out"}),
    (Accumulator, {"entries": "In", "acc_rd": "Out", "acc_wr": "In", "clear": "In", "touched": "Out"}),
    (OutputPass, {"out_en": "In", "layer": "In", "paired": "In", "shift": "In", "rounding": "In", "relu": "In",
                  "touched": "In", "a": "Out"}),
])
def test_stage_signatures(component, members):
    """Each stage declares its ports and their directions; it refuses anything but a ChipConfig."""
    sig = component(CONFIG).signature
    assert {name: member.flow.name for name, member in sig.members.items()} == members
    with pytest.raises(TypeError, match="ChipConfig"):
        component(CONFIG.to_dict())


def test_output_pass_has_a_second_lane_with_two_outputs_per_cycle():
    assert "b" in OutputPass(ChipConfig(pes=2, outputs_per_cycle=2)).signature.members
    assert "b" not in OutputPass(CONFIG).signature.members


def test_span_unit_turns_broadcasts_into_the_columns_spans():
    """Broadcasts under the chip's flow control (room seen a cycle late, counting what is in flight) and a
    consumer that takes jobs at random: every non-empty column's span (start = entries before it, its count,
    its activation) comes out once, in order; empty columns give none; the queue never overflows."""
    layer, image = _layer()
    counts = image.encoded_layers()[0].pes[0].counts
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rng = random.Random(3)
    cols = [j for j in range(layer.w_index.shape[1]) if rng.random() < 0.8] * 2    # repeats fill the queue
    values = [rng.randrange(1, 3000) for _ in cols]
    expect = [(int(starts[j]), int(counts[j]), v) for j, v in zip(cols, values) if counts[j]]
    m = Module()
    m.submodules.spans = dut = SpanUnit(CONFIG)
    m.submodules.pointers = ptrs = _rom(unsigned(CONFIG.ptr_word_bits), image.pointer_words(0), CONFIG.ptr_words)
    wiring.connect(m, dut.ptr_rd, ptrs.read_port())
    got = []

    async def bench(ctx):
        sent = [0, 0, 0]              # broadcasts of the last cycles, which `room` does not show yet
        i = 0
        for _ in range(20 * len(cols)):      # ample: a lost span must fail the test, not hang it
            if len(got) == len(expect):
                break
            room = ctx.get(dut.room)
            send = i < len(cols) and room >> sum(sent) & 1 if sum(sent) < ROOM_BITS else False
            ctx.set(dut.act.valid, send)
            if send:
                ctx.set(dut.act.payload.col, cols[i])
                ctx.set(dut.act.payload.value, values[i])
                i += 1
            take = rng.random() < 0.4
            ctx.set(dut.jobs.ready, take)
            if take and ctx.get(dut.jobs.valid):
                job = ctx.get(dut.jobs.payload)
                got.append((job.start, job.count, job.value))
            sent = [int(send)] + sent[:-1]
            await ctx.tick()
        for _ in range(8):
            await ctx.tick()
        assert not ctx.get(dut.busy)
    _run(m, bench)
    assert got == expect


def _decode(pe, cols):
    """(row, weight index) of every real entry of columns `cols`, in order, from the encoding."""
    out = []
    start = np.concatenate([[0], np.cumsum(pe.counts)])
    for j in cols:
        row = -1
        for k in range(start[j], start[j + 1]):
            row = pe.z[k] if row < 0 else row + pe.z[k] + 1
            if pe.v[k]:
                out.append((int(row), int(pe.v[k])))
    return out


def test_entry_reader_decodes_the_spans_entries():
    """Jobs offered at random, back to back or with gaps: each real entry comes out once with its row (zeros
    skipped counted from the column's first entry), its codebook weight and its activation; padding entries
    are read (``read``) but go no further."""
    layer, image = _layer(seed=11)
    pe = image.encoded_layers()[0].pes[0]
    starts = np.concatenate([[0], np.cumsum(pe.counts)[:-1]])
    rng = random.Random(5)
    cols = [j for j in range(layer.w_index.shape[1]) if pe.counts[j]]
    values = {j: rng.randrange(-3000, 3000) for j in cols}
    codebook = [int(w) for w in image.codebooks[0]]
    expect = [(row, codebook[v], values[j]) for j in cols for row, v in _decode(pe, [j])]
    m = Module()
    m.submodules.reader = dut = EntryReader(CONFIG)
    m.submodules.matrix = mat = _rom(unsigned(CONFIG.matrix_word_bits), image.matrix_words(0), CONFIG.matrix_words)
    m.submodules.codebook = cb = _rom(signed(CONFIG.weight_bits), codebook, CONFIG.max_layers * CONFIG.codebook_size)
    wiring.connect(m, dut.mat_rd, mat.read_port())
    connect_comb_read(m, dut.codebook, cb)
    got, read = [], [0]

    async def bench(ctx):
        i = 0
        for _ in range(400):
            offer = i < len(cols) and rng.random() < 0.7
            ctx.set(dut.jobs.valid, offer)
            if offer:
                j = cols[i]
                ctx.set(dut.jobs.payload.start, int(starts[j]))
                ctx.set(dut.jobs.payload.count, int(pe.counts[j]))
                ctx.set(dut.jobs.payload.value, values[j])
            if ctx.get(dut.entries.valid):
                e = ctx.get(dut.entries.payload)
                got.append((e.row, e.weight, e.value))
            read[0] += ctx.get(dut.read)
            i += bool(offer and ctx.get(dut.jobs.ready))
            await ctx.tick()
        assert not ctx.get(dut.busy)
    _run(m, bench)
    assert got == expect
    assert read[0] == int(pe.counts.sum())


def test_accumulator_sums_every_entry_through_the_bypass():
    """Entries with rows drawn from a few, so that the same row comes back to back (the bypass) and a cycle
    apart (the write-back), with gaps between them; two layers with a clear between: each accumulator equals
    its sum modulo 2**40, untouched rows read 0, and ``touched`` marks the rows of this layer only."""
    c = CONFIG
    rng = random.Random(9)
    m = Module()
    m.submodules.accum = dut = Accumulator(c)
    m.submodules.accs = accs = memory.Memory(shape=signed(c.acc_bits), depth=c.act_depth, init=[])
    even, odd = accs.read_port(domain="comb"), accs.read_port(domain="comb")    # the pair of the entry's row
    m.d.comb += [even.addr.eq(dut.acc_rd.addr & ~1), odd.addr.eq(dut.acc_rd.addr | 1),
                 dut.acc_rd.even.eq(even.data), dut.acc_rd.odd.eq(odd.data)]
    wiring.connect(m, dut.acc_wr, accs.write_port())
    probe = accs.read_port(domain="comb")
    wrap = lambda v: (v + (1 << 39)) % (1 << 40) - (1 << 39)

    async def bench(ctx):
        for layer in range(2):
            rows = rng.sample(range(c.act_depth), 3)
            sums = {}
            ctx.set(dut.clear, 1)
            await ctx.tick()
            ctx.set(dut.clear, 0)
            for _ in range(300):
                valid = rng.random() < 0.8
                ctx.set(dut.entries.valid, valid)
                if valid:
                    row = rng.choice(rows)
                    weight, value = rng.randrange(-32768, 32768), rng.randrange(-32768, 32768)
                    ctx.set(dut.entries.payload.row, row)
                    ctx.set(dut.entries.payload.weight, weight)
                    ctx.set(dut.entries.payload.value, value)
                    sums[row] = wrap(sums.get(row, 0) + weight * value)
                await ctx.tick()
            ctx.set(dut.entries.valid, 0)
            await ctx.tick().repeat(3)
            touched = ctx.get(dut.touched)
            assert {r for r in range(c.act_depth) if touched >> r & 1} == set(sums)
            for r, total in sums.items():
                ctx.set(probe.addr, r)
                assert ctx.get(probe.data) == total, (layer, r)
    _run(m, bench)


@pytest.mark.parametrize("paired", [False, True])
def test_output_pass_requantizes_each_row(paired):
    """A row asked for every cycle (with gaps), half of them untouched: ``y`` equals the reference's requantize
    of accumulator (0 if untouched) + partner's share + bias << shift, `OUTPUT_LATENCY` cycles later; the
    share handed to the partner is accumulator ``slot | 1`` when touched in a paired layer, else 0."""
    from eie.config import OUTPUT_LATENCY
    c = CONFIG
    rng = random.Random(13 + paired)
    shift, relu, layer = 7, rng.random() < 0.5, 1
    accs = [rng.randrange(-(1 << 21), 1 << 21) for _ in range(c.act_depth)]
    bias = [rng.randrange(-9999, 9999) for _ in range(c.max_layers * c.act_depth)]
    touched = rng.getrandbits(c.act_depth)
    m = Module()
    m.submodules.outpass = dut = OutputPass(c)
    m.submodules.bias = bias_mem = _rom(signed(c.act_bits), bias, c.max_layers * c.act_depth)
    wiring.connect(m, dut.a.bias_rd, bias_mem.read_port())
    asked, got, shares = [], [], []
    wrap = lambda v: (v + (1 << 39)) % (1 << 40) - (1 << 39)

    async def bench(ctx):
        for name, v in (("layer", layer), ("paired", paired), ("shift", shift), ("rounding", (1 << shift) >> 1),
                        ("relu", relu), ("touched", touched)):
            ctx.set(getattr(dut, name), v)
        for t in range(80 + OUTPUT_LATENCY):
            ask = t < 80 and rng.random() < 0.8
            slot = rng.randrange(c.act_depth)
            partner = rng.randrange(-(1 << 21), 1 << 21)
            ctx.set(dut.out_en, ask)
            ctx.set(dut.a.slot, slot)
            ctx.set(dut.a.even, accs[slot & ~1])     # the PE's read of the slot's accumulator pair, this cycle
            ctx.set(dut.a.odd, accs[slot | 1])
            asked.append((ask, slot))
            if t >= 1 and asked[t - 1][0]:       # the share of the row asked a cycle ago, as the partner sees it
                s = asked[t - 1][1] | 1
                shares.append((ctx.get(dut.a.share), accs[s] if paired and touched >> s & 1 else 0))
                ctx.set(dut.a.partner, partner)
                asked[t - 1] = (True, asked[t - 1][1], partner)
            await ctx.tick()
            a = t + 1 - OUTPUT_LATENCY          # the row asked for that many cycles before the next one
            if a >= 0 and asked[a][0]:
                _, r, p = asked[a]
                total = wrap((accs[r] if touched >> r & 1 else 0) + p + (bias[layer * c.act_depth + r] << shift))
                got.append((ctx.get(dut.a.y), int(requantize(total, shift, relu, c))))
    _run(m, bench)
    assert [g for g, _ in got] == [e for _, e in got] and len(got) > 40
    assert [g for g, _ in shares] == [e for _, e in shares]


def test_every_component_refuses_anything_but_a_chip_config():
    """The check comes before any signature reads the config: one TypeError, not an AttributeError inside."""
    from eie.hw.chip import Chip, PeInstance
    from eie.hw.pe import ProcessingElement
    from eie.hw.requant import Requantizer
    from eie.hw.scanner import NonZeroDetector
    for make in (Chip, ProcessingElement, Requantizer, NonZeroDetector, SpanUnit, EntryReader, Accumulator,
                 OutputPass, lambda config: PeInstance(config, "eie_pe")):
        with pytest.raises(TypeError, match="config must be a ChipConfig, not dict"):
            make(CONFIG.to_dict())
