"""The cocotb test module the simulator runs: load a chip image, run a batch of inputs, save the results.

It is started by `eie.cosim.sim.simulate`, which passes a job file and a result file through the
environment; the comparison with the reference happens on the host side (the scoreboard).
"""

import json
import os
import time

import cocotb
import numpy as np

from ..config import ChipConfig
from ..sw.image import load_image
from .driver import ChipDriver


@cocotb.test()
async def run_job(dut):
    with open(os.environ["EIE_JOB"]) as f:
        job = json.load(f)
    config = ChipConfig.from_dict(job["config"])
    image = load_image(job["image"], config)
    inputs = np.load(job["inputs"])
    chip = ChipDriver(dut, config)
    await chip.start_clock()
    t0 = time.perf_counter()
    await chip.load(image)
    load_s = time.perf_counter() - t0
    outputs, cycles, layer_cycles, pe_stats = [], [], [], []
    t0 = time.perf_counter()
    for x in inputs:
        y, n = await chip.run(x)
        outputs.append(y)
        cycles.append(n)
        if job["stats"]:
            layer_cycles.append(await chip.layer_cycles())
            pe_stats.append(await chip.pe_stats())
    run_s = time.perf_counter() - t0
    np.savez(job["result"] + ".tmp.npz", outputs=np.array(outputs, np.int64), cycles=np.array(cycles, np.int64),
             layer_cycles=np.array(layer_cycles, np.int64), pe_stats=np.array(pe_stats, np.int64),
             load_seconds=load_s, run_seconds=run_s, free_run_seconds=chip.free_run_seconds)
    os.replace(job["result"] + ".tmp.npz", job["result"])
