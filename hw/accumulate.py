"""A PE's accumulate stages: decoded entries become accumulator updates (M, A and W of `eie.hw.pe`).

    M   multiply (registered inputs and output: a DSP); accumulator and touched-bit read of the entry's row
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
from eie.hw.sram import CombReadSignature

__all__ = ["Accumulator", "AccumulateSignature"]


class AccumulateSignature(wiring.Signature):
    """``entries``: decoded entries (from `eie.hw.entries.EntryReader`), one per cycle at most; ``acc_rd``: an
    asynchronous read of the accumulators (its address is the entry's row in M); ``acc_wr``: their write
    port; ``clear``: a new layer; ``touched``: the rows updated since ``clear``, for the output pass."""

    def __init__(self, config: ChipConfig):
        c = config
        rows, A = addr_bits(c.act_depth), signed(c.acc_bits)
        super().__init__({
            "entries": In(stream.Signature(entry_layout(c), always_ready=True)),
            "acc_rd": Out(CombReadSignature(rows, A)),
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
        # M: multiply; accumulator and touched-bit read of the row; whether A holds the same row (its sum is
        # written at the end of this cycle, too late for this read)
        a_valid = Signal()
        a_row = Signal(rb, reset_less=True)
        a_product = Signal(signed(c.act_bits + c.weight_bits), reset_less=True)
        a_acc = Signal(signed(c.acc_bits), reset_less=True)
        a_touched, a_hit = Signal(reset_less=True), Signal(reset_less=True)
        w_sum = Signal(signed(c.acc_bits), reset_less=True)
        m.d.comb += self.acc_rd.addr.eq(entry.row)
        m.d.sync += a_valid.eq(self.entries.valid)
        with m.If(self.entries.valid):
            m.d.sync += [a_row.eq(entry.row), a_product.eq(entry.weight * entry.value),
                         a_acc.eq(self.acc_rd.data), a_touched.eq(touched.bit_select(entry.row, 1)),
                         a_hit.eq(a_valid & (a_row == entry.row))]

        # A: accumulate, with the previous entry's sum from W when it was the same row; written back at the end
        # of the cycle (W holds the sum one more cycle, for that bypass only)
        total = Signal(signed(c.acc_bits))
        m.d.comb += total.eq(Mux(a_hit, w_sum, Mux(a_touched, a_acc, 0)) + a_product)
        with m.If(a_valid):
            m.d.sync += w_sum.eq(total)
        m.d.comb += [self.acc_wr.en.eq(a_valid), self.acc_wr.addr.eq(a_row), self.acc_wr.data.eq(total)]
        # a shifted one, not a bit select on the left: Yosys turns that into a mux tree over every row
        with m.If(self.clear):
            m.d.sync += touched.eq(0)
        with m.Elif(a_valid):
            m.d.sync += touched.eq(touched | (Const(1, 1) << a_row)[:c.act_depth])
        return m
