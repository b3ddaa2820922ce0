"""The cocotb test module the simulator runs: for each job, load a chip image, run its inputs, save results.

`eie.cosim.sim.simulate` starts it with a job list in the environment; several images (for one chip
configuration) share one simulator start. The comparison with the reference happens on the host side.
"""

import json
import os

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
    gaps = spec.get("gaps")
    chip = ChipDriver(dut, config, None if gaps is None else np.random.default_rng(gaps))
    await chip.start_clock()
    for job in spec["jobs"]:
        image = load_image(job["image"], config)
        result = await chip.run_job(image, np.load(job["inputs"]), spec["layer_cycles"], spec["pe_stats"])
        tmp = job["result"] + ".tmp.npz"
        np.savez(tmp, **result)
        os.replace(tmp, job["result"])
