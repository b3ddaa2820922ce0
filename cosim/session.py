"""The cocotb test module the simulator runs. The testbench plays the host program on its own
(`eie.cosim.player`); the test waits for it to finish, so Python wakes once per simulator start, and records
how long the simulation took."""

import json
import os
import time

import cocotb
from cocotb.triggers import RisingEdge


@cocotb.test()
async def play(dut):
    t0 = time.perf_counter()
    await RisingEdge(dut.finished)
    seconds = time.perf_counter() - t0
    with open(os.environ["EIE_TIMING"], "w") as f:
        json.dump({"seconds": seconds}, f)
