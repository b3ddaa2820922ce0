"""Non-zero detection: scan the source activations a word (one value per PE) at a time and broadcast the
non-zero ones, lowest column first, one per cycle. A word with nothing left costs one cycle, so zero runs
are skipped N columns at a time, as EIE's leading non-zero detector does across its PEs."""

from amaranth import Array, Cat, Const, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from eie.config import ChipConfig

__all__ = ["NonZeroDetector"]


class NonZeroDetector(wiring.Component):
    """Ports: ``start`` (pulse, with ``cols`` stable for the layer), ``addr`` -> ``word`` (the source bank,
    read combinationally), and the broadcast ``valid``/``ready``/``col``/``value``; ``running`` stays high
    until every non-zero activation has been accepted."""

    def __init__(self, config):
        if not isinstance(config, ChipConfig):
            raise TypeError(f"config must be a ChipConfig, not {type(config).__name__}")
        self.config = c = config
        super().__init__({
            "start": In(1), "cols": In(c.dim_bits), "running": Out(1),
            "addr": Out(max(1, (c.act_depth - 1).bit_length())), "word": In(c.pes * c.act_bits),
            "valid": Out(1), "ready": In(1), "col": Out(c.dim_bits), "value": Out(signed(c.act_bits)),
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
        first = Signal(range(max(n, 2)))
        for k in reversed(range(n)):        # the last assignment wins: lowest pending lane
            with m.If(pending[k]):
                m.d.comb += first.eq(k)

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
                with m.If(self.ready):
                    bit = (Const(1, n) << first)[:n]
                    rest = pending & ~bit
                    with m.If(rest == 0):
                        advance()
                    with m.Else():
                        m.d.sync += consumed.eq(consumed | bit)
        return m
