"""`ChipDriver`: the host protocol of `eie.cosim.hostport.ChipHost` over the Verilator-simulated chip's ports,
from a cocotb coroutine.

Python touches the chip only to load memories (one host write per word), to write an input, to start it
and to read results; while a layer chain runs, the simulator runs free until ``done``. Inputs change and
outputs are sampled at falling edges, half a cycle away from the rising edges where the chip registers them.
"""

from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from eie.cosim.hostport import ChipHost

__all__ = ["ChipDriver", "CocotbPort"]


class CocotbPort:
    """The chip's host port (``host__*``, ``rst``) on a cocotb handle, for `ChipHost`."""

    def __init__(self, dut):
        self.dut = dut
        self.clk = dut.clk
        self._handles = {}

    def _handle(self, name):
        if name not in self._handles:
            self._handles[name] = getattr(self.dut, name if name == "rst" else f"host__{name}")
        return self._handles[name]

    def drive(self, name, value):
        self._handle(name).value = value

    def sample(self, name):
        return int(self._handle(name).value)

    async def step(self):
        await FallingEdge(self.clk)

    async def run_until_done(self):
        await RisingEdge(self._handle("done"))
        await FallingEdge(self.clk)


class ChipDriver(ChipHost):
    def __init__(self, dut, config, gaps=None):
        super().__init__(CocotbPort(dut), config, gaps)
        self.dut = dut

    async def start_clock(self):
        """Start the clock and reset the chip. The GPI clock toggles in C++: no Python on the per-cycle path."""
        Clock(self.dut.clk, 10, unit="ns", impl="gpi").start()
        await self.reset()
