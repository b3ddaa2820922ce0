"""Fixed-width barrel shifters.

Amaranth widens a shift by a signal to cover every possible amount (a 40-bit value shifted by a 6-bit
amount becomes 103 bits), which costs area and makes Verilator fall back to multi-word arithmetic. These
keep the declared width: one mux stage per bit of the amount.
"""

from amaranth import Mux, Signal, signed, unsigned

__all__ = ["shift_left", "shift_right"]


def _stages(m, y, amount, step_fn, name):
    for i, bit in enumerate(amount):
        nxt = Signal(y.shape(), name=f"{name}_{i}")
        m.d.comb += nxt.eq(Mux(bit, step_fn(y, 1 << i), y))
        y = nxt
    return y


def shift_left(m, x, amount, width, name="shl"):
    """`x << amount` (sign- or zero-extended, then truncated) at `width` bits."""
    y = Signal(signed(width) if x.shape().signed else unsigned(width), name=f"{name}_in")
    m.d.comb += y.eq(x)
    return _stages(m, y, amount, lambda v, s: (v << s)[:width], name)


def shift_right(m, x, amount, name="shr"):
    """`x >> amount` at `x`'s width (arithmetic for signed `x`)."""
    y = Signal(x.shape(), name=f"{name}_in")
    m.d.comb += y.eq(x)
    return _stages(m, y, amount, lambda v, s: v >> s, name)
