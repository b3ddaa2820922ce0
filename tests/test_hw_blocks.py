"""Unit tests of gateware blocks in Amaranth's own simulator (no Verilator build needed)."""

import random

import pytest
from amaranth import Module, Signal, signed
from amaranth.sim import Simulator

from eie import ChipConfig
from eie.hw.arith import shift_left
from eie.hw.scanner import NonZeroDetector
from eie.sw import reference
from eie.sw.reference import requantize as reference_requantize

import numpy as np


def run_comb(m, bench):
    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


def test_shifter_matches_python():
    m = Module()
    x = Signal(signed(16))
    amount = Signal(6)
    left = Signal(signed(40))
    m.d.comb += left.eq(shift_left(x, amount, 40))
    rng = random.Random(1)

    async def bench(ctx):
        for _ in range(200):
            v, a = rng.randrange(-32768, 32768), rng.randrange(0, 40)
            ctx.set(x, v)
            ctx.set(amount, a)
            expect = (v << a) & ((1 << 40) - 1)
            assert ctx.get(left) == expect - (1 << 40) * (expect >> 39), (v, a)
    run_comb(m, bench)


def test_requantizer_matches_the_reference():
    """The pipelined output arithmetic, a new row every cycle with its own shift and ReLU (as at a layer
    boundary): each result `LATENCY` cycles later equals the reference's requantize of the wrapped sum of
    accumulator, partner's partial sum and shifted bias; sums near the 40-bit limits, where wrapping and the
    one-bit-wider rounding matter, are drawn on purpose."""
    from eie.hw.requant import LATENCY, Requantizer
    c = ChipConfig()
    dut = Requantizer(c)
    rng = random.Random(2)
    top = 1 << (c.acc_bits - 1)
    rows = []
    for _ in range(400):
        s = rng.randrange(0, 24)
        acc = rng.choice([rng.randrange(-top, top) >> rng.randrange(0, 38), top - 1 - rng.randrange(0, 1 << s),
                          -top + rng.randrange(0, 1 << 20)])
        rows.append((acc, rng.choice([0, rng.randrange(-(1 << 30), 1 << 30)]), rng.randrange(-32768, 32768), s,
                     rng.random() < .5))
    for s in (1, 5, 20):      # a total of 2**39 - 1 exactly: the rounding must not wrap it negative
        bias = rng.randrange(-32768, 32768)
        rows.append((top - 1 - (bias << s), 0, bias, s, False))

    def expect(acc, partner, bias, s, relu):
        total = reference.wrap(np.array([acc + partner + (bias << s)]), c.acc_bits)
        return reference_requantize(total, s, relu, c)[0]
    got = []
    gaps = [rng.random() < 0.2 for _ in range(2 * len(rows))]     # cycles without a row: stages hold theirs

    async def bench(ctx):
        sent = []
        cycle = 0
        while len(got) < len(rows) and cycle < 3 * len(rows):
            feed = len(sent) < len(rows) and not gaps[cycle % len(gaps)]
            ctx.set(dut.valid, feed)
            if feed:
                acc, partner, bias, s, relu = rows[len(sent)]
                for port, value in ((dut.acc, acc), (dut.partner, partner), (dut.bias, bias), (dut.shift, s),
                                    (dut.rounding, (1 << s) >> 1), (dut.relu, relu)):
                    ctx.set(port, value)
            if feed:
                sent.append(cycle)
            fed_at = cycle - LATENCY + 1       # the cycle whose row `y` shows after this tick
            await ctx.tick()
            if fed_at >= 0 and history[fed_at]:
                got.append(ctx.get(dut.y))
            history.append(feed)
            cycle += 1
    history = []

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    want = [expect(*r) for r in rows]
    assert got == want
    assert any(gaps) and {c.act_max, c.act_min, 0} <= set(want), "gaps, saturation both ways and ReLU"


def test_rounding_constant():
    from eie.hw.requant import rounding
    c = ChipConfig()
    m = Module()
    shift = Signal(c.shift_bits)
    rnd = Signal(c.acc_bits)
    m.d.comb += rnd.eq(rounding(shift, c))

    async def bench(ctx):
        for s in range(c.acc_bits + 1):
            ctx.set(shift, s)
            assert ctx.get(rnd) == ((1 << s) >> 1) % (1 << c.acc_bits), s
    run_comb(m, bench)


@pytest.mark.parametrize("acts", [1, 2])
def test_non_zero_detector_broadcasts_in_order_and_stalls(acts):
    """Every non-zero once, in column order, through the broadcast register; never more than a queue fed as a
    PE's is fed holds (its level reaches the detector two cycles late, as the chip's registered `room`); with two
    per cycle, pairs exactly where `eie.sw.perf.broadcasts` (the performance model) puts them: consecutive
    non-zeros of one source word (4 columns) and one pointer word (2 columns)."""
    from eie.config import QUEUE_SLACK
    from eie.hw.pe import ROOM_BITS
    from eie.sw.perf import broadcasts
    c = ChipConfig(pes=4, act_depth=8, cols_per_ptr_word=2, acts_per_cycle=acts, queue_depth=2)
    depth = c.queue_depth + QUEUE_SLACK
    dut = NonZeroDetector(c)
    rng = random.Random(3)
    values = [rng.choice([0, rng.randrange(-99, 99)]) for _ in range(27)]   # 27 columns, last word partial
    words = [sum((v & 0xFFFF) << (16 * k) for k, v in enumerate(values[w * 4:w * 4 + 4])) for w in range(7)]
    got = []
    levels = [0, 0]      # the queue's level two and one cycles ago
    worst = [0]

    async def bench(ctx):
        ctx.set(dut.cols, len(values))      # stable from the cycle before start
        await ctx.tick()
        ctx.set(dut.start, 1)
        reads = [None, None]     # the addresses read two cycles and one cycle ago: the RAM and its register
        level = 0
        for cycle in range(150):
            ctx.set(dut.word, words[reads[0]] if reads[0] is not None and reads[0] < len(words) else 0)
            ctx.set(dut.room, sum(1 << j for j in range(ROOM_BITS) if levels[0] <= depth - 1 - j))
            reads = [reads[1], ctx.get(dut.addr) if ctx.get(dut.read) else None]
            if ctx.get(dut.valid):
                got.append([(ctx.get(dut.col), ctx.get(dut.value))])
                if acts > 1 and ctx.get(dut.value_b):
                    got[-1].append((ctx.get(dut.col_b), ctx.get(dut.value_b)))
            popped = level > 0 and rng.random() < 0.3       # a slow consumer: the queue fills
            levels[:] = [levels[1], level]
            level += ctx.get(dut.valid) - popped
            worst[0] = max(worst[0], level)
            if cycle > 0 and ctx.get(dut.settled):
                break
            await ctx.tick()
            ctx.set(dut.start, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    nonzero = [(j, v) for j, v in enumerate(values) if v]
    assert [a for group in got for a in group] == nonzero
    starts = broadcasts([j for j, _ in nonzero], c)
    assert [len(group) for group in got] == np.diff(np.r_[starts, len(nonzero)]).tolist()
    assert max(len(group) for group in got) == acts, "the case must pair some columns"
    assert worst[0] == depth, "the queue must fill up, and never overflow"


def test_processing_element_computes_its_rows():
    """One PE alone: load its memories through the load port, broadcast the non-zero activations, drain,
    then read every row through the output path; compare with the reference."""
    from eie.config import OUTPUT_LATENCY
    from eie.hw.pe import ProcessingElement
    from eie.sw.image import build_image
    from eie.sw.quant import QuantLayer
    from eie.sw.reference import forward

    c = ChipConfig(pes=1, act_depth=32, matrix_words=64, ptr_words=16, queue_depth=2, jobs_depth=2)
    rng = np.random.default_rng(7)
    w = rng.integers(1, 16, (24, 20)) * (rng.random((24, 20)) < 0.3)
    w[:, 4] = 0                                   # an empty column
    w[23, 6], w[:23, 6] = 5, 0                    # a zero run that needs padding
    layer = QuantLayer(w, np.concatenate([[0], rng.integers(-999, 999, 15)]), rng.integers(-99, 99, 24), 5, True)
    image = build_image([layer], c)
    x = rng.integers(-300, 300, 20) * (rng.random(20) < 0.6)
    x[6] = 77
    expect = forward([layer], x, c)[0][0]
    dut = ProcessingElement(c)
    got = []

    async def bench(ctx):
        async def load(strobe, words, base=0):
            for i, word in enumerate(words):
                ctx.set(strobe, 1)
                ctx.set(dut.load.addr, base + i)
                ctx.set(dut.load.data, int(word) & ((1 << len(dut.load.data)) - 1))
                await ctx.tick()
            ctx.set(strobe, 0)
        ctx.set(dut.load.sel, 1)
        await load(dut.load.matrix_we, image.matrix_words(0))
        await load(dut.load.ptr_we, image.pointer_words(0))
        await load(dut.load.codebook_we, image.codebooks[0])
        await load(dut.load.bias_we, image.biases[0, 0])
        ctx.set(dut.shift, layer.shift)
        ctx.set(dut.rounding, (1 << layer.shift) >> 1)
        ctx.set(dut.relu, 1)
        ctx.set(dut.clear, 1)
        ctx.set(dut.new_run, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        ctx.set(dut.new_run, 0)
        for j in np.flatnonzero(x):
            # `act_room` is a cycle old and the last broadcast may not show in it yet: ask for room for two
            while not ctx.get(dut.act_room) & 2:
                ctx.set(dut.act_valid, 0)
                await ctx.tick()
            ctx.set(dut.act_valid, 1)
            ctx.set(dut.act_col, int(j))
            ctx.set(dut.act_value, int(x[j]))
            await ctx.tick()
        ctx.set(dut.act_valid, 0)
        await ctx.tick()
        await ctx.tick()
        while not ctx.get(dut.quiet):
            await ctx.tick()
        await ctx.tick().repeat(2)                  # the chip sees `quiet` two cycles late
        for r in range(24 + OUTPUT_LATENCY):
            ctx.set(dut.out_en, r < 24)
            ctx.set(dut.out_slot, r % 24)
            await ctx.tick()
            if r >= OUTPUT_LATENCY - 1 and len(got) < 24:
                got.append(ctx.get(dut.out_data))
        assert ctx.get(dut.macs) == np.count_nonzero(w[:, x != 0])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == list(expect)


def test_one_word_memory_behaves_like_a_memory():
    """`sram(shape, 1)` (a register) against `memory.Memory` at address 0: writes, synchronous reads with and
    without enable, combinational reads, contents kept through a domain reset, signed data."""
    from amaranth import ClockDomain
    from amaranth.lib import memory
    from eie.hw.sram import OneWord, sram

    one, ref = sram(signed(12), 1), memory.Memory(shape=signed(12), depth=2, init=[])
    assert isinstance(one, OneWord)
    m = Module()
    m.domains.sync = sync = ClockDomain()
    m.submodules.one, m.submodules.ref = one, ref
    we, data, en = Signal(), Signal(signed(12)), Signal()
    ports = []
    for mem in (one, ref):
        wp, sync_rd, comb_rd = mem.write_port(), mem.read_port(), mem.read_port(domain="comb")
        m.d.comb += [wp.en.eq(we), wp.data.eq(data), sync_rd.en.eq(en)]
        ports.append((sync_rd.data, comb_rd.data))
    rng = random.Random(4)

    async def bench(ctx):
        stale = False   # Amaranth's simulator clears a Memory's read register on reset, Verilog does not
        for cycle in range(300):
            reset, read = rng.random() < 0.05, rng.random() < 0.7
            ctx.set(we, rng.random() < 0.4)
            ctx.set(data, rng.randrange(-2048, 2048))
            ctx.set(en, read)
            ctx.set(sync.rst, reset)
            await ctx.tick()
            stale = reset or (stale and not read)
            (a_sync, a_comb), (b_sync, b_comb) = ports
            assert ctx.get(a_comb) == ctx.get(b_comb), cycle
            assert stale or ctx.get(a_sync) == ctx.get(b_sync), cycle

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
