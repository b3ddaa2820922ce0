"""The cocotb test module the simulator runs: for each job, load a chip image, run its inputs, save results.

`eie.cosim.sim.simulate` starts it with a job list in the environment; several images (for one chip
configuration) share one simulator start. The comparison with the reference happens on the host side.
"""

import json
import os
import time

import cocotb
import numpy as np

from eie.config import ChipConfig
from eie.sw.image import load_image
from eie.cosim.driver import ChipDriver


@cocotb.test()
async def run_jobs(dut):
    with open(os.environ["EIE_JOBS"]) as f:
        spec = json.load(f)
    config = ChipConfig.from_dict(spec["config"])
    chip = ChipDriver(dut, config)
    await chip.start_clock()
    for job in spec["jobs"]:
        image = load_image(job["image"], config)
        inputs = np.load(job["inputs"])
        t0 = time.perf_counter()
        await chip.load(image)
        load_s = time.perf_counter() - t0
        chip.free_run_seconds = 0.0
        outputs, cycles, layer_cycles, pe_stats = [], [], [], []
        t0 = time.perf_counter()
        for x in inputs:
            y, n = await chip.run(x)
            outputs.append(y)
            cycles.append(n)
            if spec["layer_cycles"]:
                layer_cycles.append(await chip.layer_cycles())
            if spec["pe_stats"]:
                pe_stats.append(await chip.pe_stats())
        run_s = time.perf_counter() - t0
        tmp = job["result"] + ".tmp.npz"
        np.savez(tmp, outputs=np.array(outputs, np.int64).reshape(len(inputs), -1),
                 cycles=np.array(cycles, np.int64), layer_cycles=np.array(layer_cycles, np.int64),
                 pe_stats=np.array(pe_stats, np.int64), load_seconds=load_s, run_seconds=run_s,
                 free_run_seconds=chip.free_run_seconds)
        os.replace(tmp, job["result"])
