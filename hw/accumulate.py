"""A PE's accumulate stages: decoded entries become accumulator updates (M, A and W of `eie.hw.pe`).

    M   multiply (registered inputs and output: a DSP); read of the accumulator pair holding the entry's row
        (both words registered: the choice between them, and the bypass, is made once in A) and its touched bit
    A   accumulate: accumulator (0 if untouched this layer) + product, written back at the end of the cycle;
        W keeps the sum one more cycle

An entry's accumulator read at M misses the entry in A in that cycle (written at its end); A then takes its
sum from W instead when the rows match (EIE's bypass). Accumulators start at zero lazily: ``clear`` forgets
which rows were touched, and an untouched row reads as 0.
"""

from amaranth import Const, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from eie.config import ChipConfig
from eie.hw.arith import addr_bits
from eie.hw.component import ChipComponent
from eie.hw.entries import entry_layout

__all__ = ["Accumulator", "AccumulateSignature", "PairReadSignature"]


class PairReadSignature(wiring.Signature):
    """An asynchronous read of the accumulator pair that row ``addr`` belongs to: ``even`` is accumulator
    ``addr & ~1``, ``odd`` accumulator ``addr | 1`` (the PE keeps the even and the odd rows in two memories)."""

    def __init__(self, addr_width, shape):
        super().__init__({"addr": Out(addr_width), "even": In(shape), "odd": In(shape)})


class AccumulateSignature(wiring.Signature):
    """``entries``: decoded entries (from `eie.hw.entries.EntryReader`), one per cycle at most; ``acc_rd``: an
    asynchronous read of the accumulator pair of the entry's row in M; ``acc_wr``: the accumulators' write
    port; ``clear``: a new layer; ``touched``: the rows updated since ``clear``, for the output pass."""

    def __init__(self, config: ChipConfig):
        c = config
        rows, A = addr_bits(c.act_depth), signed(c.acc_bits)
        super().__init__({
            "entries": In(stream.Signature(entry_layout(c), always_ready=True)),
            "acc_rd": Out(PairReadSignature(rows, A)),
            "acc_wr": In(memory.WritePort.Signature(addr_width=rows, shape=A)),
            "clear": In(1),
            "touched": Out(c.act_depth),
        })


class Accumulator(ChipComponent):
    """See the module. Parameters: a `ChipConfig`."""

    signature_type = AccumulateSignature

    def elaborate(self, platform):
        c = self.config
        m = Module()
        rb = addr_bits(c.act_depth)
        entry = self.entries.payload
        touched = self.touched
        # M: multiply; read of the row's accumulator pair and touched bit; whether A holds the same row (its sum
        # is written at the end of this cycle, too late for this read). What A adds is decided here: W's sum
        # (`a_hit`), else the even or the odd word if the row was touched this layer, else 0.
        a_valid = Signal()
        a_row = Signal(rb, reset_less=True)
        a_product = Signal(signed(c.act_bits + c.weight_bits), reset_less=True)
        a_even, a_odd = Signal(signed(c.acc_bits), reset_less=True), Signal(signed(c.acc_bits), reset_less=True)
        a_hit, a_use_even, a_use_odd = Signal(reset_less=True), Signal(reset_less=True), Signal(reset_less=True)
        w_sum = Signal(signed(c.acc_bits), reset_less=True)
        hit, row_touched = Signal(), Signal()
        m.d.comb += [self.acc_rd.addr.eq(entry.row), hit.eq(a_valid & (a_row == entry.row)),
                     row_touched.eq(touched.bit_select(entry.row, 1))]
        m.d.sync += a_valid.eq(self.entries.valid)
        with m.If(self.entries.valid):
            m.d.sync += [a_row.eq(entry.row), a_product.eq(entry.weight * entry.value),
                         a_even.eq(self.acc_rd.even), a_odd.eq(self.acc_rd.odd), a_hit.eq(hit),
                         a_use_even.eq(row_touched & ~entry.row[0]), a_use_odd.eq(row_touched & entry.row[0])]

        # A: accumulate, with the previous entry's sum from W when it was the same row; written back at the end
        # of the cycle (W holds the sum one more cycle, for that bypass only)
        total = Signal(signed(c.acc_bits))
        stored = Mux(a_use_even, a_even, 0) | Mux(a_use_odd, a_odd, 0)
        m.d.comb += total.eq(Mux(a_hit, w_sum, stored) + a_product)
        with m.If(a_valid):
            m.d.sync += w_sum.eq(total)
        m.d.comb += [self.acc_wr.en.eq(a_valid), self.acc_wr.addr.eq(a_row), self.acc_wr.data.eq(total)]
        # a shifted one, not a bit select on the left: Yosys turns that into a mux tree over every row
        with m.If(self.clear):
            m.d.sync += touched.eq(0)
        with m.Elif(a_valid):
            m.d.sync += touched.eq(touched | (Const(1, 1) << a_row)[:c.act_depth])
        return m
