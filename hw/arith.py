"""Fixed-width shifters.

Amaranth widens a left shift by a signal to cover every possible amount (a 40-bit value shifted by a 6-bit
amount becomes 103 bits), which costs area and makes Verilator fall back to multi-word arithmetic on every
simulated cycle. `shift_left` keeps the declared width: one mux stage per bit of the amount, each stage a
concatenation no wider than the result. A right shift keeps its operand's width in Amaranth already.
"""

from amaranth import Cat, Const, Mux, Signal, signed, unsigned

__all__ = ["shift_left", "shift_right"]


def shift_left(m, x, amount, width, name="shl"):
    """`x << amount` (sign- or zero-extended, then truncated) at `width` bits."""
    shape = signed(width) if x.shape().signed else unsigned(width)
    y = Signal(shape, name=f"{name}_in")
    m.d.comb += y.eq(x)
    for i, bit in enumerate(amount):
        s = 1 << i
        shifted = Cat(Const(0, s), y[:width - s]) if s < width else Const(0, width)
        nxt = Signal(shape, name=f"{name}_{i}")
        m.d.comb += nxt.eq(Mux(bit, shifted, y))
        y = nxt
    return y


def shift_right(m, x, amount, name="shr"):
    """`x >> amount` at `x`'s width (arithmetic for signed `x`)."""
    y = Signal(x.shape(), name=name)
    m.d.comb += y.eq(x >> amount)
    return y
