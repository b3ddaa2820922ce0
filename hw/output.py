"""A PE's output pass: accumulators become activations, one local row (two with ``outputs_per_cycle=2``) per
cycle, `OUTPUT_LATENCY` = 9 stages (O1..O9 of `eie.hw.pe`).

    O1      accumulator pair (read by the PE: the row's and the partner share's) and bias reads of the row; its
            touched bits looked up
    O2      bias registered (the RAM's output register); the share crosses to the partner PE, registered there
    O3..O9  `eie.hw.requant.Requantizer`: left shift and right shift in two stages each, sums, rounding, saturate, ReLU

In a paired layer (`eie.sw.encode`) row ``s`` is accumulator ``2s`` plus the partner PE's accumulator
``2s + 1``: each PE hands its partner that partial sum (``share``) and adds the partner's (``partner``).
"""

from amaranth import Module, Mux, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from eie.config import ChipConfig
from eie.hw.arith import addr_bits
from eie.hw.component import ChipComponent
from eie.hw.requant import Requantizer, row_params

__all__ = ["OutputPass", "OutputSignature", "OutputLaneSignature"]


class OutputLaneSignature(wiring.Signature):
    """One row a cycle: its accumulator ``slot`` and the pair of accumulators it belongs to, ``even`` (``slot &
    ~1``) and ``odd`` (``slot | 1``, the share in a paired layer), read through the ports the accumulate stage
    shares; the bias read; the partner's share in, this PE's share out (zero until touched and
    in unpaired layers), and the activation ``y``, `OUTPUT_LATENCY` cycles after the row was asked for."""

    def __init__(self, config: ChipConfig):
        c = config
        rows, A = addr_bits(c.act_depth), signed(c.acc_bits)
        super().__init__({
            "slot": In(rows), "even": In(A), "odd": In(A),
            "bias_rd": In(memory.ReadPort.Signature(addr_width=addr_bits(c.max_layers * c.act_depth),
                                                    shape=signed(c.act_bits))),
            "partner": In(A), "share": Out(A), "y": Out(signed(c.act_bits)),
        })


class OutputSignature(wiring.Signature):
    """``out_en``: rows are asked for this cycle (in lane ``a``, and ``b`` with ``outputs_per_cycle=2``); the
    layer's ``layer``, ``paired``, ``shift``, ``rounding`` and ``relu``, read as each row enters; ``touched``:
    the accumulators updated this layer (`eie.hw.accumulate.Accumulator`)."""

    def __init__(self, config: ChipConfig):
        c = config
        super().__init__({
            "out_en": In(1), "layer": In(addr_bits(c.max_layers)), "paired": In(1),
            "shift": In(c.shift_bits), "rounding": In(c.acc_bits), "relu": In(1),
            "touched": In(c.act_depth),
            "a": Out(OutputLaneSignature(c)),
            **({"b": Out(OutputLaneSignature(c))} if c.outputs_per_cycle > 1 else {}),
        })


class OutputPass(ChipComponent):
    """See the module. Parameters: a `ChipConfig`."""

    signature_type = OutputSignature

    def elaborate(self, platform):
        c = self.config
        m = Module()
        # the layer's shift, rounding constant and ReLU travel with each row: the next layer may start (and the
        # chip's layer parameters change) while this layer's last rows are still in O2..O9
        params = row_params(c)
        o2, o3 = Signal(params, name="o2_params", reset_less=True), Signal(params, name="o3_params", reset_less=True)
        o2_valid, o3_valid = Signal(), Signal()
        m.d.sync += [o2_valid.eq(self.out_en), o3_valid.eq(o2_valid)]
        with m.If(self.out_en):
            m.d.sync += [o2.shift.eq(self.shift), o2.rounding.eq(self.rounding), o2.relu.eq(self.relu)]
        with m.If(o2_valid):
            m.d.sync += o3.eq(o2)
        for name in ("a", "b")[:c.outputs_per_cycle]:
            m.submodules[f"requant_{name}"] = rq = Requantizer(c)
            m.d.comb += [rq.valid.eq(o3_valid), rq.shift.eq(o3.shift), rq.rounding.eq(o3.rounding),
                         rq.relu.eq(o3.relu)]
            self._lane(m, getattr(self, name), rq, o2_valid, f"o_{name}")
        return m

    def _lane(self, m, lane, rq, o2_valid, name):
        """O1: the bias read of the lane's row, the touched bits looked up beside the accumulator pair; O2: their
        registers, the row's word picked from the pair and its touched bit applied before the Requantizer's
        input register, the share's before it crosses to the partner."""
        c = self.config
        A = signed(c.acc_bits)
        m.d.comb += lane.bias_rd.addr.eq(self.layer * c.act_depth + lane.slot)
        even2 = Signal(A, name=f"{name}2_even", reset_less=True)
        odd2 = Signal(A, name=f"{name}2_odd", reset_less=True)
        odd_row2 = Signal(name=f"{name}2_odd_row", reset_less=True)
        touched2, share_touched2 = Signal(name=f"{name}2_touched"), Signal(name=f"{name}2_share_touched")
        with m.If(self.out_en):
            m.d.sync += [even2.eq(lane.even), odd2.eq(lane.odd), odd_row2.eq(lane.slot[0]),
                         touched2.eq(self.touched.bit_select(lane.slot, 1)),
                         share_touched2.eq(self.paired & self.touched.bit_select(lane.slot | 1, 1))]
        m.d.comb += lane.share.eq(Mux(share_touched2, odd2, 0))
        acc2 = Mux(odd_row2, odd2, even2)
        # O2's registers (reset-less, so that the bias's can be the RAM's own output register)
        bias3, acc3, partner3 = (Signal(shape, name=f"{name}3_{what}", reset_less=True)
                                 for shape, what in ((signed(c.act_bits), "bias"), (A, "acc"), (A, "partner")))
        with m.If(o2_valid):
            m.d.sync += [bias3.eq(lane.bias_rd.data), acc3.eq(Mux(touched2, acc2, 0)), partner3.eq(lane.partner)]
        m.d.comb += [rq.bias.eq(bias3), rq.acc.eq(acc3), rq.partner.eq(partner3), lane.y.eq(rq.y)]
