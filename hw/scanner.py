"""Non-zero detection: scan the source activations a word (one value per PE) at a time and broadcast the
non-zero ones, lowest column first, one per cycle. A word with nothing left costs one cycle, so zero runs
are skipped N columns at a time, as EIE's leading non-zero detector does across its PEs.

With ``acts_per_cycle=2`` the next non-zero of the word rides along when its column shares the first one's
pointer word (``cols_per_ptr_word`` aligned columns), so one pointer read in each PE serves both.

Pipelined in two parts joined by a small FIFO of words:

* the fetcher reads words from the source bank (a synchronous read, its data registered), marks the lanes
  that hold a non-zero value inside the layer and pushes word and mask into the FIFO; the first read is issued
  in the ``start`` cycle and a word reaches the FIFO's head three cycles after its read;
* the emitter picks the lowest pending lane of the head word and puts it in the broadcast register
  (``valid``/``col``/``value``), which drives every PE.

Flow control without a combinational path through the PEs: ``room`` (bit j: every PE's queue had room for
j + 1 more broadcasts two cycles ago) is compared with the broadcasts sent since, which the emitter knows.
"""

from amaranth import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, fifo
from amaranth.lib.wiring import In, Out

from eie.config import QUEUE_SLACK, WORD_FIFO_DEPTH, ChipConfig
from eie.hw.arith import above, addr_bits, at_most, pow2
from eie.hw.component import ChipComponent
from eie.hw.spans import ROOM_BITS

__all__ = ["NonZeroDetector"]



class NonZeroDetector(ChipComponent):
    """Ports: ``start`` (pulse; ``cols``, the layer's columns, stable from the cycle before it); ``addr``/``read``
    -> ``word``, the source bank read (``word`` is the data at ``addr`` of two cycles before: the RAM's read and
    its output register);
    the broadcast register ``valid``/``col``/``value`` (with ``acts_per_cycle=2`` also ``col_b``/``value_b``,
    ``value_b`` 0 when there is none); ``room`` from the PEs (see the module); ``running`` until every non-zero
    activation has been sent, and ``settled``: not running and nothing sent in the last three cycles, so every
    broadcast is in a queue that the PEs' ``quiet`` (two cycles late) has seen."""

    @staticmethod
    def signature_type(c: ChipConfig) -> dict:
        return {
            "start": In(1), "cols": In(c.dim_bits), "running": Out(1), "settled": Out(1),
            "addr": Out(addr_bits(c.act_depth)), "read": Out(1), "word": In(c.pes * c.act_bits),
            "room": In(ROOM_BITS),
            "valid": Out(1), "col": Out(c.dim_bits), "value": Out(signed(c.act_bits)),
            **({"col_b": Out(c.dim_bits), "value_b": Out(signed(c.act_bits))} if c.acts_per_cycle > 1 else {}),
        }

    def elaborate(self, platform):
        c = self.config
        n = c.pes
        m = Module()
        entry = data.StructLayout({"word": c.pes * c.act_bits, "mask": n, "base": c.dim_bits + 1, "last": 1})
        # the words fetched ahead: the head word in registers (`cur`), the others in a FIFO behind it
        m.submodules.words = words = fifo.SyncFIFO(width=entry.size, depth=pow2(WORD_FIFO_DEPTH - 1))
        cur = Signal(entry, reset_less=True)
        cur_valid = Signal()

        # -- fetcher ------------------------------------------------------------------------------------------
        f_base = Signal(c.dim_bits + 1)          # column of lane 0 of the next word to read
        f_left = Signal(c.dim_bits + 1)          # the layer's columns from there on (while f_more)
        f_addr = Signal.like(self.addr)
        f_more = Signal()
        r1_valid, r2_valid = Signal(), Signal()   # a read's data arrives; its registered data
        r1_base, r2_base = Signal.like(f_base), Signal.like(f_base)
        r1_left = Signal.like(f_left)
        r2_last, r2_inside = Signal(), Signal(n)  # the layer's last word; its lanes inside the layer
        issue = Signal()
        # places for words not taken by one in flight, in the FIFO or in the head register
        credit = Signal(range(WORD_FIFO_DEPTH + 1), init=WORD_FIFO_DEPTH)
        # what the layer's first cycle needs of `cols`, registered ahead (`cols` is stable from the cycle before
        # `start`), so that no subtraction or comparison sits behind the chip's decision to start a layer
        s_cols, s_left = Signal.like(self.cols, name="start_cols"), Signal.like(f_left, name="start_left")
        s_any, s_more = Signal(name="start_any"), Signal(name="start_more")
        m.d.sync += [s_cols.eq(self.cols), s_left.eq(self.cols - n), s_any.eq(self.cols != 0),
                     s_more.eq(above(self.cols, n))]
        with m.If(self.start):
            m.d.comb += [issue.eq(s_any), self.addr.eq(0)]
            m.d.sync += [f_base.eq(n), f_addr.eq(1), f_left.eq(s_left), f_more.eq(s_more)]
        with m.Else():
            m.d.comb += [issue.eq(f_more & (credit != 0)), self.addr.eq(f_addr)]
            with m.If(issue):
                m.d.sync += [f_base.eq(f_base + n), f_addr.eq(f_addr + 1), f_left.eq(f_left - n),
                             f_more.eq(above(f_left, n))]
        m.d.comb += self.read.eq(issue)
        m.d.sync += [r1_valid.eq(issue), r1_base.eq(Mux(self.start, 0, f_base)),
                     r1_left.eq(Mux(self.start, s_cols, f_left)),
                     r2_valid.eq(r1_valid), r2_base.eq(r1_base), r2_last.eq(at_most(r1_left, n)),
                     r2_inside.eq(Cat(above(r1_left, k) for k in range(n)))]
        r2_word = self.word
        lanes_in = [r2_word.word_select(k, c.act_bits) for k in range(n)]
        pushed = Signal(entry)
        m.d.comb += [pushed.word.eq(r2_word), pushed.base.eq(r2_base), pushed.last.eq(r2_last),
                     pushed.mask.eq(Cat(lanes_in[k] != 0 for k in range(n)) & r2_inside)]

        # -- emitter --------------------------------------------------------------------------------------------
        pending = Signal(n)
        m.d.comb += pending.eq(Mux(cur_valid, cur.mask, 0))

        def lowest(bits, name):
            """The lowest set bit of `bits`, one-hot (a carry chain), and its lane number (an OR per bit: the
            input is one-hot)."""
            hot = Signal(n, name=f"{name}_hot")
            m.d.comb += hot.eq(bits & (~bits + 1)[:n])
            lane = Signal(range(max(n, 2)), name=name)
            m.d.comb += lane.eq(Cat(Cat(hot[k] for k in range(n) if k >> i & 1).any()
                                    for i in range(len(lane))))
            return hot, lane

        def select(lane):
            """The value in `lane` (a multiplexer in gates, one shift of the word in a simulator; an AND-OR over
            the one-hot lanes would be shallower in gates but a bit operation per lane and bit when simulated)."""
            return cur.word.word_select(lane, c.act_bits).as_signed()

        def column(lane):
            if n & (n - 1) == 0:      # the base is a multiple of n: the lane is its low bits
                return Cat(lane, cur.base[(n - 1).bit_length():]) if n > 1 else cur.base
            return cur.base + lane

        bit, first = lowest(pending, "first")
        taken = bit
        if c.acts_per_cycle > 1:
            others = Signal(n)
            m.d.comb += others.eq(pending & ~bit)
            bit_b, second = lowest(others, "second")
            pair = Signal()
            shift = (c.cols_per_ptr_word - 1).bit_length()
            m.d.comb += pair.eq((others != 0) & ((column(second) >> shift) == (column(first) >> shift)))
            taken = Signal(n)
            m.d.comb += taken.eq(bit | Mux(pair, bit_b, 0))

        # broadcasts sent in the last three cycles (the broadcast register and two before it): the ones that
        # `room`, two cycles old, has not seen in the queues yet
        sent = Cat(self.valid, Signal(QUEUE_SLACK - 1, name="sent_before"))
        m.d.sync += sent[1:].eq(sent[:-1])
        in_flight = Signal(range(QUEUE_SLACK + 1))
        m.d.comb += in_flight.eq(sum(sent[i] for i in range(QUEUE_SLACK)))
        ready = Signal()
        m.d.comb += [ready.eq(self.room.bit_select(in_flight, 1)), self.settled.eq(~self.running & (sent == 0))]

        emit = Signal()
        pop = Signal()
        with m.If(cur_valid):
            with m.If(pending == 0):
                m.d.comb += pop.eq(1)
            with m.Elif(ready):
                m.d.comb += [emit.eq(1), pop.eq((pending & ~taken) == 0)]
        # the head register refills from the FIFO, or straight from the fetcher when the FIFO is empty
        bypass = Signal()
        with m.If(pop | ~cur_valid):
            with m.If(words.r_rdy):
                m.d.comb += words.r_en.eq(1)
                m.d.sync += [cur.eq(words.r_data), cur_valid.eq(1)]
            with m.Else():
                m.d.comb += bypass.eq(r2_valid)
                m.d.sync += [cur.eq(pushed), cur_valid.eq(r2_valid)]
        with m.Elif(emit):
            m.d.sync += cur.mask.eq(cur.mask & ~taken)
        m.d.comb += [words.w_en.eq(r2_valid & ~bypass), words.w_data.eq(pushed)]
        m.d.sync += credit.eq(credit - issue + pop)
        m.d.sync += [self.valid.eq(emit), self.col.eq(column(first)), self.value.eq(select(first))]
        if c.acts_per_cycle > 1:
            m.d.sync += [self.col_b.eq(column(second)), self.value_b.eq(Mux(pair, select(second), 0))]

        with m.If(self.start):
            m.d.sync += self.running.eq(s_any)
        with m.Elif(pop & cur.last):
            m.d.sync += self.running.eq(0)
        return m
