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

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, wiring
from amaranth.lib.wiring import In, Out

from eie.config import ChipConfig
from eie.hw.pe import QUEUE_SLACK, ROOM_BITS

__all__ = ["NonZeroDetector", "WORD_FIFO_DEPTH"]

WORD_FIFO_DEPTH = 4   # words fetched ahead: three in flight keep one word per cycle coming


class NonZeroDetector(wiring.Component):
    """Ports: ``start`` (pulse, with ``cols`` stable for the layer); ``addr``/``read`` -> ``word``, a synchronous
    read of the source bank (``word`` is the data of the previous cycle's ``addr``); the broadcast register
    ``valid``/``col``/``value`` (with ``acts_per_cycle=2`` also ``col_b``/``value_b``, ``value_b`` 0 when there
    is none); ``room`` from the PEs (see the module); ``running`` until every non-zero activation has been sent,
    and ``settled``: not running and nothing sent in the last three cycles, so every broadcast is in a queue
    that the PEs' ``quiet`` (two cycles late) has seen."""

    def __init__(self, config: ChipConfig):
        if not isinstance(config, ChipConfig):
            raise TypeError(f"config must be a ChipConfig, not {type(config).__name__}")
        self.config = c = config
        super().__init__({
            "start": In(1), "cols": In(c.dim_bits), "running": Out(1), "settled": Out(1),
            "addr": Out(max(1, (c.act_depth - 1).bit_length())), "read": Out(1), "word": In(c.pes * c.act_bits),
            "room": In(ROOM_BITS),
            "valid": Out(1), "col": Out(c.dim_bits), "value": Out(signed(c.act_bits)),
            **({"col_b": Out(c.dim_bits), "value_b": Out(signed(c.act_bits))} if c.acts_per_cycle > 1 else {}),
        })

    def elaborate(self, platform):
        c = self.config
        n = c.pes
        m = Module()
        entry = data.StructLayout({"word": c.pes * c.act_bits, "mask": n, "base": c.dim_bits + 1})
        m.submodules.words = words = fifo.SyncFIFO(width=entry.size, depth=WORD_FIFO_DEPTH)

        # -- fetcher ------------------------------------------------------------------------------------------
        f_base = Signal(c.dim_bits + 1)          # column of lane 0 of the next word to read
        f_addr = Signal.like(self.addr)
        f_more = Signal()
        r1_valid, r2_valid = Signal(), Signal()   # a read's data arrives; its registered data
        r1_base, r2_base = Signal.like(f_base), Signal.like(f_base)
        r2_word = Signal(n * c.act_bits, reset_less=True)
        issue = Signal()
        with m.If(self.start):
            m.d.comb += [issue.eq(self.cols != 0), self.addr.eq(0)]
            m.d.sync += [f_base.eq(n), f_addr.eq(1), f_more.eq(n < self.cols)]
        with m.Else():
            m.d.comb += [issue.eq(f_more & (words.level + r1_valid + r2_valid < WORD_FIFO_DEPTH)),
                         self.addr.eq(f_addr)]
            with m.If(issue):
                m.d.sync += [f_base.eq(f_base + n), f_addr.eq(f_addr + 1), f_more.eq(f_base + n < self.cols)]
        m.d.comb += self.read.eq(issue)
        m.d.sync += [r1_valid.eq(issue), r1_base.eq(Mux(self.start, 0, f_base)),
                     r2_valid.eq(r1_valid), r2_base.eq(r1_base), r2_word.eq(self.word)]
        lanes_in = [r2_word.word_select(k, c.act_bits) for k in range(n)]
        left = Signal(c.dim_bits + 1)
        m.d.comb += left.eq(self.cols - r2_base)
        pushed = entry(words.w_data)
        m.d.comb += [words.w_en.eq(r2_valid), pushed.word.eq(r2_word), pushed.base.eq(r2_base),
                     pushed.mask.eq(Cat((lanes_in[k] != 0) & (left > k) for k in range(n)))]

        # -- emitter --------------------------------------------------------------------------------------------
        head = entry(words.r_data)
        lanes = [head.word.word_select(k, c.act_bits).as_signed() for k in range(n)]
        consumed = Signal(n)
        pending = Signal(n)
        m.d.comb += pending.eq(Mux(words.r_rdy, head.mask, 0) & ~consumed)

        def lowest(bits, name):
            lane = Signal(range(max(n, 2)), name=name)
            for k in reversed(range(n)):    # the last assignment wins: lowest set lane
                with m.If(bits[k]):
                    m.d.comb += lane.eq(k)
            return lane

        first = lowest(pending, "first")
        bit = Signal(n)
        m.d.comb += bit.eq((Const(1, n) << first)[:n])
        taken = bit
        if c.acts_per_cycle > 1:
            others = Signal(n)
            m.d.comb += others.eq(pending & ~bit)
            second = lowest(others, "second")
            col_b = Signal(c.dim_bits + 1)
            pair = Signal()
            shift = (c.cols_per_ptr_word - 1).bit_length()
            m.d.comb += [col_b.eq(head.base + second),
                         pair.eq((others != 0) & ((col_b >> shift) == ((head.base + first) >> shift)))]
            taken = Signal(n)
            m.d.comb += taken.eq(bit | Mux(pair, (Const(1, n) << second)[:n], 0))

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
        with m.If(words.r_rdy):
            with m.If(pending == 0):
                m.d.comb += pop.eq(1)
            with m.Elif(ready):
                m.d.comb += [emit.eq(1), pop.eq((pending & ~taken) == 0)]
        m.d.comb += words.r_en.eq(pop)
        with m.If(pop):
            m.d.sync += consumed.eq(0)
        with m.Elif(emit):
            m.d.sync += consumed.eq(consumed | taken)
        m.d.sync += [self.valid.eq(emit), self.col.eq(head.base + first), self.value.eq(Array(lanes)[first])]
        if c.acts_per_cycle > 1:
            m.d.sync += [self.col_b.eq(col_b), self.value_b.eq(Mux(pair, Array(lanes)[second], 0))]

        with m.If(self.start):
            m.d.sync += self.running.eq(self.cols != 0)
        with m.Elif(pop & (head.base + n >= self.cols)):
            m.d.sync += self.running.eq(0)
        return m
