"""Host side of a co-simulation: build (or reuse) the simulator, hand it a job, collect what the chip did."""

from dataclasses import dataclass
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from ..errors import EieError
from ..sw.image import ChipImage
from .build import TOPLEVEL, build

__all__ = ["SimResult", "simulate"]


@dataclass
class SimResult:
    outputs: np.ndarray       # (samples, rows of the last layer) chip outputs
    cycles: np.ndarray        # (samples,) cycles from start to done
    layer_cycles: np.ndarray  # (samples, layers) when stats were asked for, else empty
    pe_stats: np.ndarray      # (samples, pes, 2) entries read and multiplies, when asked for
    load_seconds: float       # host time to load the image through the host port
    run_seconds: float        # host time for the whole batch (inputs, runs, reads)
    free_run_seconds: float   # host time while the chip ran free between start and done
    wall_seconds: float       # everything, simulator start-up included

    @property
    def sim_cycles_per_s(self):
        """Simulation speed of the chip itself (Verilator, no Python in the loop)."""
        return float(self.cycles.sum()) / self.free_run_seconds if self.free_run_seconds else 0.0

    @property
    def samples_per_s(self):
        """Throughput of the whole co-simulation: inputs written, chip run, outputs read."""
        return len(self.cycles) / self.run_seconds if self.run_seconds else 0.0


def simulate(image, inputs, stats=False, waves=None, log=None):
    """Run `inputs` ((samples, cols) ints) through `image` on the Verilator-simulated chip.

    `waves`: a path for an FST waveform of the whole run (builds a tracing simulator).
    """
    if not isinstance(image, ChipImage):
        raise TypeError(f"image must be a ChipImage, not {type(image).__name__}")
    inputs = np.asarray(inputs, np.int64)
    t0 = time.perf_counter()
    root = build(image.config, waves=bool(waves), log=log)
    from cocotb_tools.runner import get_results, get_runner
    with tempfile.TemporaryDirectory(prefix="eie-sim-") as tmp:
        tmp = Path(tmp)
        image.save(tmp / "image.npz")
        np.save(tmp / "inputs.npy", inputs)
        job = {"config": image.config.to_dict(), "image": str(tmp / "image.npz"),
               "inputs": str(tmp / "inputs.npy"), "result": str(tmp / "result.npz"), "stats": stats}
        (tmp / "job.json").write_text(json.dumps(job))
        runner = get_runner("verilator")
        xml = runner.test(test_module="eie.cosim.session", hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                          build_dir=root / "obj",
                          test_dir=tmp, extra_env={"EIE_JOB": str(tmp / "job.json"), "COCOTB_LOG_LEVEL": "WARNING",
                                     # numpy's BLAS threads would spin on the core the simulator needs
                                     "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
                          waves=bool(waves), log_file=tmp / "sim.log", results_xml=str(tmp / "results.xml"))
        _, failed = get_results(xml)
        if failed or not (tmp / "result.npz").exists():
            tail = (tmp / "sim.log").read_text()[-3000:] if (tmp / "sim.log").exists() else ""
            raise EieError(f"the simulation failed:\n{tail}")
        if waves:
            dumps = sorted(tmp.glob("dump.*")) + sorted((root / "obj").glob("dump.*"))
            if not dumps:
                raise EieError("the tracing simulator wrote no waveform")
            os.replace(dumps[0], waves)
        with np.load(tmp / "result.npz") as r:
            return SimResult(r["outputs"], r["cycles"], r["layer_cycles"], r["pe_stats"],
                             float(r["load_seconds"]), float(r["run_seconds"]), float(r["free_run_seconds"]),
                             time.perf_counter() - t0)
