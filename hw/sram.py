"""On-chip memories of any depth the chip configuration allows, one word included.

Amaranth gives the ports of a one-word `memory.Memory` zero-width addresses, which its Yosys backend writes
as ``wire [-1:0]`` and Verilator refuses. A one-word memory is a register anyway, so that is what it becomes
here: the same ports (with a one-bit address, ignored and optimized away), the same timing, no reset (a
memory keeps its contents and its read registers through reset, and so does this).
"""

from amaranth import Elaboratable, Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["sram", "OneWord", "CombReadSignature", "connect_comb_read"]


def sram(shape, depth):
    """A memory of `depth` words of `shape`, empty (zero) at start, with `memory.Memory`'s port methods.

    ``no_rw_check``: the chip never reads a word in the cycle another port writes it (loads precede runs; the
    next layer's detector reads an output word the cycle after it is written at the earliest), so synthesis
    need not build the logic that settles such a collision between a block RAM's ports."""
    return (memory.Memory(shape=shape, depth=depth, init=[], attrs={"no_rw_check": 1}) if depth > 1
            else OneWord(shape))


class CombReadSignature(wiring.Signature):
    """An asynchronous read as its reader sees it: an address out, the word in the same cycle (a LUT RAM's).
    `memory.ReadPort.Signature` cannot stand for it: its enable is constant on an asynchronous port."""

    def __init__(self, addr_width, shape):
        super().__init__({"addr": Out(addr_width), "data": In(shape)})


def connect_comb_read(m, reader, mem):
    """A new asynchronous read port of `mem` serving `reader` (a `CombReadSignature` interface)."""
    port = mem.read_port(domain="comb")
    m.d.comb += [port.addr.eq(reader.addr), reader.data.eq(port.data)]
    return port


class OneWord(Elaboratable):
    """A one-word memory as a register, with the ports of `memory.Memory` (no transparency, no granularity:
    the chip uses neither)."""

    depth = 1

    def __init__(self, shape):
        self.shape = shape
        self._read_ports, self._write_ports = [], []

    def read_port(self, *, domain="sync"):
        port = memory.ReadPort(memory.ReadPort.Signature(addr_width=1, shape=self.shape), memory=None,
                               domain=domain)
        self._read_ports.append(port)
        return port

    def write_port(self, *, domain="sync"):
        port = memory.WritePort(memory.WritePort.Signature(addr_width=1, shape=self.shape), memory=None,
                                domain=domain)
        self._write_ports.append(port)
        return port

    def elaborate(self, platform):
        m = Module()
        word = Signal(self.shape, name="word", reset_less=True)
        for wp in self._write_ports:
            with m.If(wp.en):
                m.d[wp.domain] += word.eq(wp.data)
        for rp in self._read_ports:
            if rp.domain == "comb":
                m.d.comb += rp.data.eq(word)
            else:   # a memory's read register keeps its value through reset too
                q = Signal(self.shape, name="read_q", reset_less=True)
                with m.If(rp.en):
                    m.d[rp.domain] += q.eq(word)
                m.d.comb += rp.data.eq(q)
        return m
