"""The output pass's arithmetic, O3..O7 of `eie.hw.pe`: an accumulator (plus a partner PE's partial sum and the
row's bias) becomes an activation, one row per cycle, one carry chain or shifter per stage.

    O3  bias << shift; accumulator + partner          O6  arithmetic right shift
    O4  + shifted bias (wraps at acc_bits)             O7  saturate, ReLU
    O5  + rounding constant (acc_bits + 1 wide, no wrap)

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
    """The shifted accumulator clamped to the activation range, then ReLU'd if `relu`."""
    c = config
    y = Signal(signed(c.act_bits))
    with m.If(shifted > c.act_max):
        m.d.comb += y.eq(c.act_max)
    with m.Elif(shifted < c.act_min):
        m.d.comb += y.eq(c.act_min)
    with m.Else():
        m.d.comb += y.eq(shifted)
    return Mux(relu & y[-1], 0, y)


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
        # the parameters of the row in O4, O5, O6, O7
        at = {k: Signal(params, name=f"o{k}_params", reset_less=True) for k in range(4, 8)}
        valid = {3: self.valid, **{k: Signal(name=f"o{k}_valid") for k in range(4, 8)}}
        m.d.sync += [valid[k + 1].eq(valid[k]) for k in range(3, 7)]

        def stage(k, *assignments):
            """The registers that row k's stage loads, while it holds a row."""
            with m.If(valid[k]):
                m.d.sync += list(assignments)
        bias4, sum4 = Signal(A, reset_less=True), Signal(A, reset_less=True)
        stage(3, at[4].shift.eq(self.shift), at[4].rounding.eq(self.rounding), at[4].relu.eq(self.relu),
              bias4.eq(shift_left(self.bias, self.shift, c.acc_bits)), sum4.eq(self.acc + self.partner))
        total5 = Signal(A, reset_less=True)
        stage(4, at[5].eq(at[4]), total5.eq(sum4 + bias4))
        rounded6 = Signal(signed(c.acc_bits + 1), reset_less=True)
        stage(5, at[6].eq(at[5]), rounded6.eq(total5 + at[5].rounding))
        shifted7 = Signal(signed(c.acc_bits + 1), reset_less=True)
        stage(6, at[7].eq(at[6]), shifted7.eq(rounded6 >> at[6].shift))
        stage(7, self.y.eq(saturate(m, shifted7, at[7].relu, c)))
        return m
