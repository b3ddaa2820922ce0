"""Arithmetic helpers of the gateware: a fixed-width left shifter, comparisons with constants that stay legal
Verilog at any width, powers of two and address widths.

Amaranth widens a left shift by a signal to cover every possible amount (a 40-bit value shifted by a 6-bit
amount becomes 103 bits), which costs area and makes Verilator fall back to multi-word arithmetic on every
simulated cycle. `shift_left` keeps the declared width: one mux stage per bit of the amount, each stage a
concatenation no wider than the result. A right shift keeps its operand's width in Amaranth already.
"""

from amaranth import Cat, Const, Mux

__all__ = ["shift_left", "above", "at_most", "pow2", "log2", "addr_bits"]


def shift_left(x, amount, width):
    """`x << amount` (sign- or zero-extended, then truncated) at `width` bits."""
    y = x
    if x.shape().signed and len(x) < width:
        y = Cat(x, x[-1].replicate(width - len(x)))
    for i, bit in enumerate(amount):
        s = 1 << i
        shifted = Cat(Const(0, s), y[:width - s]) if s < width else Const(0, width)
        y = Mux(bit, shifted, y)[:width]
    return y[:width].as_signed() if x.shape().signed else y[:width]


def above(x, k):
    """``x > k`` for an unsigned `x` and a constant `k`; constant False where `k` is at or past `x`'s range,
    written as such (Verilator refuses a comparison that is constant by width)."""
    return Const(0, 1) if k >= (1 << len(x)) - 1 else x > k


def at_most(x, k):
    """``x <= k`` for an unsigned `x` and a constant `k`, constant True past `x`'s range (see `above`)."""
    return Const(1, 1) if k >= (1 << len(x)) - 1 else x <= k


def pow2(n):
    """The power of two at or above `n` (a FIFO that deep wraps its pointers by itself)."""
    return 1 << (n - 1).bit_length()


def log2(n):
    """The base-2 logarithm of a power of two `n`."""
    return n.bit_length() - 1


def addr_bits(depth):
    """Address width for `depth` words (at least one bit, so single-word memories still have a port)."""
    return max(1, (depth - 1).bit_length())
