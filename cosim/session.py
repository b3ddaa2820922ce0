"""The cocotb test module the simulator runs. The testbench plays the host program on its own
(`eie.cosim.player`); the test waits for it to finish and records how long the simulation took.

It looks at ``finished`` every `POLL_NS` of simulated time (100,000 time steps) rather than waiting on its edge:
a value-change callback is checked at every simulator time step, a timer costs nothing until it expires. The
testbench's clock stops with the program, so the simulator skips straight to the next look."""

import json
import os
import time

import cocotb
from cocotb.triggers import Timer

POLL_NS = 1_000_000


@cocotb.test()
async def play(dut):
    t0 = time.perf_counter()
    while not dut.finished.value:
        await Timer(POLL_NS, unit="ns")
    seconds = time.perf_counter() - t0
    with open(os.environ["EIE_TIMING"], "w") as f:
        json.dump({"seconds": seconds}, f)
