"""Non-zero detection: scan the source activations a word (one value per PE) at a time and broadcast the
non-zero ones, lowest column first, one per cycle. A word with nothing left costs one cycle, so zero runs
are skipped N columns at a time, as EIE's leading non-zero detector does across its PEs.

With ``acts_per_cycle=2`` the next non-zero of the word rides along when its column shares the first one's
pointer word (``cols_per_ptr_word`` aligned columns), so one pointer read in each PE serves both."""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from eie.config import ChipConfig

__all__ = ["NonZeroDetector"]


class NonZeroDetector(wiring.Component):
    """Ports: ``start`` (pulse, with ``cols`` stable for the layer), ``addr`` -> ``word`` (the source bank,
    read combinationally), and the broadcast ``valid``/``ready``/``col``/``value``; ``running`` stays high
    until every non-zero activation has been accepted. With ``acts_per_cycle=2``, ``col_b``/``value_b`` carry
    a second activation of the same pointer word; ``value_b`` is 0 when there is none."""

    def __init__(self, config):
        if not isinstance(config, ChipConfig):
            raise TypeError(f"config must be a ChipConfig, not {type(config).__name__}")
        self.config = c = config
        super().__init__({
            "start": In(1), "cols": In(c.dim_bits), "running": Out(1),
            "addr": Out(max(1, (c.act_depth - 1).bit_length())), "word": In(c.pes * c.act_bits),
            "valid": Out(1), "ready": In(1), "col": Out(c.dim_bits), "value": Out(signed(c.act_bits)),
            **({"col_b": Out(c.dim_bits), "value_b": Out(signed(c.act_bits))} if c.acts_per_cycle > 1 else {}),
        })

    def elaborate(self, platform):
        c = self.config
        n = c.pes
        m = Module()
        base = Signal(c.dim_bits + 1)      # column of lane 0 of the current word
        consumed = Signal(n)
        lanes = [self.word.word_select(k, c.act_bits).as_signed() for k in range(n)]
        left = Signal(c.dim_bits + 1)
        m.d.comb += left.eq(self.cols - base)
        pending = Signal(n)
        m.d.comb += pending.eq(Cat(*[(lanes[k] != 0) & (left > k) for k in range(n)]) & ~consumed)

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
            m.d.comb += [col_b.eq(base + second),
                         pair.eq((others != 0) & ((col_b >> shift) == ((base + first) >> shift)))]
            taken = Signal(n)
            m.d.comb += taken.eq(bit | Mux(pair, (Const(1, n) << second)[:n], 0))

        def advance():
            m.d.sync += [self.addr.eq(self.addr + 1), base.eq(base + n), consumed.eq(0)]
            with m.If(base + n >= self.cols):
                m.d.sync += self.running.eq(0)

        with m.If(self.start):
            m.d.sync += [self.running.eq(self.cols != 0), self.addr.eq(0), base.eq(0), consumed.eq(0)]
        with m.Elif(self.running):
            with m.If(pending == 0):
                advance()
            with m.Else():
                m.d.comb += [self.valid.eq(1), self.col.eq(base + first), self.value.eq(Array(lanes)[first])]
                if c.acts_per_cycle > 1:
                    m.d.comb += [self.col_b.eq(col_b), self.value_b.eq(Mux(pair, Array(lanes)[second], 0))]
                with m.If(self.ready):
                    with m.If((pending & ~taken) == 0):
                        advance()
                    with m.Else():
                        m.d.sync += consumed.eq(consumed | taken)
        return m
