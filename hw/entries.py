"""A PE's sparse-matrix reader: jobs become decoded entries (S, D0, D1, D2 of `eie.hw.pe`).

    S    sparse-matrix read (block RAM), one entry per cycle, the next span without a bubble
    D0   the matrix word registered (the RAM's output register)
    D1   entry select
    D2   index decode (row = previous row + zeros + 1), codebook lookup

Each real (non-padding) entry leaves in registers: its row, its weight and the activation it multiplies.
"""

from amaranth import Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from eie.config import ChipConfig
from eie.hw.arith import addr_bits, log2
from eie.hw.component import ChipComponent
from eie.hw.spans import job_layout, span_layout
from eie.hw.sram import CombReadSignature

__all__ = ["EntryReader", "EntrySignature", "entry_layout"]


def entry_layout(config: ChipConfig) -> data.StructLayout:
    """A decoded entry: the local row it adds to, its weight and the activation it multiplies."""
    c = config
    return data.StructLayout({"row": addr_bits(c.act_depth), "weight": signed(c.weight_bits),
                              "value": signed(c.act_bits)})


class EntrySignature(wiring.Signature):
    """``jobs``: spans to read (from `eie.hw.spans.SpanUnit`); ``mat_rd``: the matrix memory's read port;
    ``codebook``: an asynchronous read of the codebooks (entry ``layer * codebook_size + index``); ``entries``:
    real entries, registered; ``read``: an entry (padding included) in D1, for the PE's counter; ``busy``: a
    span or an entry in S, D0 or D1."""

    def __init__(self, config: ChipConfig):
        c = config
        super().__init__({
            "jobs": In(stream.Signature(job_layout(c))),
            "layer": In(addr_bits(c.max_layers)),
            "mat_rd": In(memory.ReadPort.Signature(addr_width=addr_bits(c.matrix_words),
                                                   shape=unsigned(c.matrix_word_bits))),
            "codebook": Out(CombReadSignature(addr_bits(c.max_layers * c.codebook_size), signed(c.weight_bits))),
            "entries": Out(stream.Signature(entry_layout(c), always_ready=True)),
            "read": Out(1),
            "busy": Out(1),
        })


class EntryReader(ChipComponent):
    """See the module. Parameters: a `ChipConfig`."""

    signature_type = EntrySignature

    def elaborate(self, platform):
        m = Module()
        s_valid, s_value, s_first, s_slot, b_valid = self._matrix_read(m)
        d0_valid, d1_valid = self._decode(m, s_valid, s_value, s_first, s_slot)
        m.d.comb += [self.read.eq(d1_valid), self.busy.eq(b_valid | s_valid | d0_valid | d1_valid)]
        return m

    def _matrix_read(self, m):
        """S: one entry per cycle; the next span starts in the cycle after the last entry of this one."""
        c = self.config
        E = c.entries_per_word
        dual = c.acts_per_cycle > 1
        s_active = Signal()
        s_addr = Signal(c.entry_addr_bits, reset_less=True)
        s_left = Signal(c.count_bits, reset_less=True)
        s_value = Signal(signed(c.act_bits), reset_less=True)
        s_first = Signal(reset_less=True)
        next_job = self.jobs.payload
        m.d.comb += self.mat_rd.addr.eq(s_addr >> log2(E))

        s_last = Signal(reset_less=True)      # the entry read this cycle is the span's last (s_left == 1)
        last = ~s_active | s_last
        with m.If(s_active):
            m.d.sync += [s_addr.eq(s_addr + 1), s_left.eq(s_left - 1), s_first.eq(0), s_last.eq(s_left == 2)]

        def start_span(span):
            m.d.sync += [s_addr.eq(span.start), s_left.eq(span.count), s_value.eq(span.value), s_first.eq(1),
                         s_last.eq(span.count == 1)]

        def take_job():
            m.d.comb += self.jobs.ready.eq(1)
            m.d.sync += s_active.eq(self.jobs.valid)
            start_span(next_job)

        b_valid = Const(0, 1)
        if dual:
            # the job's second span waits here while S reads the first
            b_valid = Signal()
            b_job = Signal(span_layout(c), reset_less=True)
            with m.If(last):
                with m.If(b_valid):
                    m.d.sync += [s_active.eq(1), b_valid.eq(0)]
                    start_span(b_job)
                with m.Else():
                    take_job()
                    m.d.sync += [b_valid.eq(self.jobs.valid & (next_job.count_b != 0)),
                                 b_job.start.eq(next_job.start_b), b_job.count.eq(next_job.count_b),
                                 b_job.value.eq(next_job.value_b)]
        else:
            with m.If(last):
                take_job()
        return s_active, s_value, s_first, (s_addr[:log2(E)] if E > 1 else Const(0, 1)), b_valid

    def _decode(self, m, s_valid, s_value, s_first, s_slot):
        """D0, D1, D2; returns the valid bits of D0 and D1."""
        c = self.config
        rb = addr_bits(c.act_depth)
        # D0: the RAM's data belongs to the address of the previous cycle; its companions wait a cycle beside it
        r_valid = Signal()
        r_slot, r_value = Signal(len(s_slot), reset_less=True), Signal(signed(c.act_bits), reset_less=True)
        r_first = Signal(reset_less=True)
        m.d.sync += r_valid.eq(s_valid)
        with m.If(s_valid):
            m.d.sync += [r_slot.eq(s_slot), r_value.eq(s_value), r_first.eq(s_first)]
        d_valid = Signal()
        d_word = Signal(c.matrix_word_bits, reset_less=True)
        d_slot, d_value = Signal(len(s_slot), reset_less=True), Signal(signed(c.act_bits), reset_less=True)
        d_first = Signal(reset_less=True)
        m.d.sync += d_valid.eq(r_valid)
        with m.If(r_valid):
            m.d.sync += [d_word.eq(self.mat_rd.data), d_slot.eq(r_slot), d_value.eq(r_value), d_first.eq(r_first)]

        # D1: entry select
        entry = d_word.word_select(d_slot, c.entry_bits)
        e_valid = Signal()
        e_v, e_z = Signal(c.weight_index_bits, reset_less=True), Signal(c.index_bits, reset_less=True)
        e_value, e_first = Signal(signed(c.act_bits), reset_less=True), Signal(reset_less=True)
        m.d.sync += e_valid.eq(d_valid)
        with m.If(d_valid):
            m.d.sync += [e_v.eq(entry[:c.weight_index_bits]), e_z.eq(entry[c.weight_index_bits:]),
                         e_value.eq(d_value), e_first.eq(d_first)]

        # D2: row decode (the first entry of a span counts zeros from row 0), codebook lookup; a padding entry
        # (index 0) goes no further
        prev_row = Signal(rb, reset_less=True)
        row = Signal(rb)
        m.d.comb += row.eq(Mux(e_first, e_z, prev_row + e_z + 1))
        with m.If(e_valid):
            m.d.sync += prev_row.eq(row)
        m.d.comb += self.codebook.addr.eq(self.layer * c.codebook_size + e_v)
        out = Signal(entry_layout(c), reset_less=True)
        out_valid = Signal()
        m.d.sync += out_valid.eq(e_valid & (e_v != 0))
        with m.If(e_valid):
            m.d.sync += [out.row.eq(row), out.weight.eq(self.codebook.data), out.value.eq(e_value)]
        m.d.comb += [self.entries.valid.eq(out_valid), self.entries.payload.eq(out)]
        return r_valid, d_valid
