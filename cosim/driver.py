"""`ChipDriver`: drives the chip's host port from a cocotb coroutine.

Python touches the chip only to load memories (one host write per word), to write an input, to start it
and to read results; while a layer chain runs, the simulator runs free until ``done``. Inputs change and
outputs are sampled at falling edges, half a cycle away from the rising edges where the chip registers them.
"""

import time

import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from eie.hw.chip import RESET_CYCLES, ReadTarget, Target, layer_layout

__all__ = ["ChipDriver", "pack_lanes", "unpack_lanes"]


def pack_lanes(values, bits):
    """Signed values -> one integer, value k at bits k*bits (two's complement)."""
    mask = (1 << bits) - 1
    return sum((int(v) & mask) << (k * bits) for k, v in enumerate(values))


def unpack_lanes(word, n, bits):
    mask, half = (1 << bits) - 1, 1 << (bits - 1)
    return [((word >> (k * bits)) & mask) - ((word >> (k * bits) & mask) >= half) * (1 << bits) for k in range(n)]


class ChipDriver:
    def __init__(self, dut, config):
        self.dut = dut
        self.config = config
        self.clk = dut.clk
        self._layout = layer_layout(config)
        self.free_run_seconds = 0.0   # host time while the chip ran free (no Python in the loop)

    async def start_clock(self):
        # The GPI clock toggles in C++: no Python on the per-cycle path.
        Clock(self.clk, 10, unit="ns", impl="gpi").start()
        d = self.dut
        for name in ("host__we", "host__start", "host__target", "host__pe", "host__addr", "host__data",
                     "host__rtarget", "host__raddr", "host__n_layers"):
            getattr(d, name).value = 0
        d.rst.value = 1
        await FallingEdge(self.clk)
        await FallingEdge(self.clk)
        d.rst.value = 0
        for _ in range(RESET_CYCLES):   # the chip's reset synchronizer holds reset a little longer
            await FallingEdge(self.clk)

    async def write_many(self, target, words, pe=0, base=0):
        d = self.dut
        d.host__target.value = int(target)
        d.host__pe.value = pe
        for i, w in enumerate(words):
            await FallingEdge(self.clk)
            d.host__we.value = 1
            d.host__addr.value = base + i
            d.host__data.value = int(w)
        await FallingEdge(self.clk)
        d.host__we.value = 0

    def pack_layer(self, desc):
        word = 0
        for name, field in self._layout:
            word |= (int(getattr(desc, name)) & ((1 << field.width) - 1)) << field.offset
        return word

    async def load(self, image):
        """Write every memory of `image` into the chip."""
        c = self.config
        for k in range(c.pes):
            await self.write_many(Target.MATRIX, image.matrix_words(k), pe=k)
            await self.write_many(Target.POINTER, image.pointer_words(k), pe=k)
            await self.write_many(Target.BIAS, [int(b) & ((1 << c.act_bits) - 1)
                                                for b in image.biases[:, k, :].reshape(-1)], pe=k)
        await self.write_many(Target.CODEBOOK, [int(w) & ((1 << c.weight_bits) - 1)
                                                for w in image.codebooks.reshape(-1)])
        await self.write_many(Target.LAYER, [self.pack_layer(d) for d in image.layers])
        self.n_layers = len(image.layers)
        self.out_rows = image.layers[-1].rows

    async def read(self, rtarget, addr):
        d = self.dut
        await FallingEdge(self.clk)
        d.host__rtarget.value = int(rtarget)
        d.host__raddr.value = addr
        await FallingEdge(self.clk)   # the chip has registered the address ...
        await FallingEdge(self.clk)   # ... and the data
        return int(d.host__rdata.value)

    async def run(self, x):
        """One input vector (ints) through every layer; returns (outputs, total cycles)."""
        c, d = self.config, self.dut
        n = c.pes
        words = [pack_lanes(x[i:i + n], c.act_bits) for i in range(0, len(x), n)]
        await self.write_many(Target.ACT0, words)
        d.host__n_layers.value = self.n_layers
        d.host__start.value = 1
        await FallingEdge(self.clk)
        d.host__start.value = 0
        t0 = time.perf_counter()
        await RisingEdge(d.host__done)
        self.free_run_seconds += time.perf_counter() - t0
        await FallingEdge(self.clk)
        cycles = int(d.host__cycles.value)
        bank = ReadTarget.ACT1 if self.n_layers % 2 else ReadTarget.ACT0
        out = []
        for w in range(-(-self.out_rows // n)):
            out += unpack_lanes(await self.read(bank, w), n, c.act_bits)
        return np.array(out[:self.out_rows], np.int64), cycles

    async def layer_cycles(self):
        return [await self.read(ReadTarget.LAYER_CYCLES, l) for l in range(self.n_layers)]

    async def pe_stats(self):
        """(entries read, multiplies) per PE over the last run."""
        words = [await self.read(ReadTarget.PE_STATS, k) for k in range(self.config.pes)]
        return [(w & 0xFFFFFFFF, (w >> 32) & 0xFFFFFFFF) for w in words]
