"""The output pass's arithmetic, O3..O9 of `eie.hw.pe`: an accumulator (plus a partner PE's partial sum and the
row's bias) becomes an activation, one row per cycle, one carry chain or shifter per stage.

    O3  bias << the shift's low bits; accumulator + partner       O7  arithmetic right shift by the low bits
    O4  ... << its high bits (multiples of 8)                     O8  ... and by the high bits
    O5  + shifted bias (wraps at acc_bits)                        O9  saturate, ReLU
    O6  + rounding constant (acc_bits + 1 wide, no wrap)

Each shift takes two stages of 8-way multiplexers (two LUT levels each on an ECP5) and saturation is a test
that the bits above the activation's all equal its sign (a tree of LUTs, no carry chain), so that no stage
holds more than about three LUT levels, as a 150 MHz clock needs.

The result equals `eie.sw.reference.requantize` of ``wrap(acc + partner + (bias << shift))``: the accumulator
contract of `eie.config`, with the bias added last (sums modulo 2**acc_bits do not depend on the order).
"""

from amaranth import Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from eie.config import REQUANT_LATENCY as LATENCY, ChipConfig
from eie.hw.arith import shift_left
from eie.hw.component import ChipComponent

__all__ = ["Requantizer", "RequantSignature", "LATENCY", "row_params", "rounding", "saturate"]



def row_params(config):
    """The layer parameters a row carries through the output pass (its layer may end before the row does)."""
    return data.StructLayout({"shift": config.shift_bits, "rounding": config.acc_bits, "relu": 1})


def rounding(shift, config):
    """Half of ``1 << shift``, the constant added before shifting. It depends on the layer only, so the chip
    computes it once for all its PEs."""
    return (shift_left(Const(1, config.acc_bits + 1), shift, config.acc_bits + 1) >> 1)[:config.acc_bits]


def saturate(m, shifted, relu, config):
    """The shifted accumulator clamped to the activation range, then ReLU'd if `relu`. It is in range when
    every bit from the activation's sign bit up equals the sign: an AND tree of LUTs instead of two compares."""
    c = config
    sign = shifted[-1]
    inside = Signal()
    m.d.comb += inside.eq((shifted[c.act_bits - 1:] == sign.replicate(len(shifted) - c.act_bits + 1)))
    y = Signal(signed(c.act_bits))
    m.d.comb += y.eq(Mux(inside, shifted[:c.act_bits], Mux(sign, c.act_min, c.act_max)))
    return Mux(relu & sign, 0, y)


class RequantSignature(wiring.Signature):
    """Inputs of one row (``rounding`` is half of ``1 << shift``, 0 for shift 0) while ``valid``, and ``y``, its
    activation, `LATENCY` cycles later. A stage without a valid row keeps its registers (a simulator skips it)."""

    def __init__(self, config: ChipConfig):
        c = config
        super().__init__({
            "valid": In(1), "acc": In(signed(c.acc_bits)), "partner": In(signed(c.acc_bits)),
            "bias": In(signed(c.act_bits)),
            "shift": In(c.shift_bits), "rounding": In(c.acc_bits), "relu": In(1),
            "y": Out(signed(c.act_bits)),
        })


class Requantizer(ChipComponent):
    """See the module. The row's shift, rounding constant and ReLU travel with it through the stages, so the
    inputs may change every cycle (the next layer's rows follow the last ones of this layer)."""

    signature_type = RequantSignature

    def elaborate(self, platform):
        c = self.config
        m = Module()
        A = signed(c.acc_bits)
        params = row_params(c)
        # the parameters of the row in O3 (the inputs) .. O9
        at = {k: Signal(params, name=f"o{k}_params", reset_less=True) for k in range(3, 10)}
        m.d.comb += [at[3].shift.eq(self.shift), at[3].rounding.eq(self.rounding), at[3].relu.eq(self.relu)]
        valid = {3: self.valid, **{k: Signal(name=f"o{k}_valid") for k in range(4, 10)}}
        m.d.sync += [valid[k + 1].eq(valid[k]) for k in range(3, 9)]

        def stage(k, *assignments):
            """The registers that row k's stage loads, while it holds a row; the row's parameters move along."""
            with m.If(valid[k]):
                m.d.sync += [*assignments, *([at[k + 1].eq(at[k])] if k + 1 in at else [])]
        # shifts in two steps: by the amount's low bits, then by the rest (multiples of 8)
        low = 3
        bias4, sum4 = Signal(A, name="bias4", reset_less=True), Signal(A, name="sum4", reset_less=True)
        stage(3, bias4.eq(shift_left(self.bias, self.shift[:low], c.acc_bits)), sum4.eq(self.acc + self.partner))
        bias5, sum5 = Signal(A, name="bias5", reset_less=True), Signal(A, name="sum5", reset_less=True)
        stage(4, bias5.eq(shift_left(bias4, at[4].shift[low:] << low, c.acc_bits)), sum5.eq(sum4))
        total6 = Signal(A, reset_less=True)
        stage(5, total6.eq(sum5 + bias5))
        rounded7 = Signal(signed(c.acc_bits + 1), reset_less=True)
        stage(6, rounded7.eq(total6 + at[6].rounding))
        part8 = Signal(signed(c.acc_bits + 1), reset_less=True)
        stage(7, part8.eq(rounded7 >> at[7].shift[:low]))
        shifted9 = Signal(signed(c.acc_bits + 1), reset_less=True)
        stage(8, shifted9.eq(part8 >> (at[8].shift[low:] << low)))
        stage(9, self.y.eq(saturate(m, shifted9, at[9].relu, c)))
        return m
