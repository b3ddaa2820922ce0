"""Host side of a co-simulation: build (or reuse) the simulator, hand it a job, collect what the chip did."""

from dataclasses import dataclass
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from eie.errors import EieError
from eie.sw.image import ChipImage
from eie.cosim.build import TOPLEVEL, build

__all__ = ["SimResult", "simulate", "simulate_many", "simulate_task"]


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


def simulate(image, inputs, stats=False, waves=None, log=None, layer_cycles=None):
    """Run `inputs` ((samples, cols) ints) through `image` on the Verilator-simulated chip.

    `stats` reads per-layer cycles and per-PE counters after every sample (`layer_cycles` alone is cheaper);
    `waves` is a path for a VCD waveform of the whole run (builds a tracing simulator).
    """
    return simulate_many([(image, inputs)], stats=stats, waves=waves, log=log, layer_cycles=layer_cycles)[0]


def simulate_task(task):
    """One simulator start as a campaign task: (image, inputs) -> SimResult with per-layer cycles. A
    module-level function, so Dask workers can import it."""
    image, inputs = task
    return simulate(image, inputs, layer_cycles=True)


def simulate_many(jobs, stats=False, waves=None, log=None, layer_cycles=None, gaps=None):
    """Several (image, inputs) jobs for one chip configuration in one simulator start; one SimResult each.
    `gaps`: a seed for random host timing (idle cycles between writes, a restart right after ``done``)."""
    if not jobs:
        return []
    config = jobs[0][0].config
    for image, _ in jobs:
        if not isinstance(image, ChipImage):
            raise TypeError(f"image must be a ChipImage, not {type(image).__name__}")
        if image.config != config:
            raise EieError("jobs of one simulation must share a chip configuration")
    t0 = time.perf_counter()
    root = build(config, waves=bool(waves), log=log)
    from cocotb_tools.runner import get_results, get_runner
    with tempfile.TemporaryDirectory(prefix="eie-sim-") as tmp:
        tmp = Path(tmp)
        spec = {"config": config.to_dict(), "pe_stats": stats,
                "layer_cycles": stats if layer_cycles is None else layer_cycles, "gaps": gaps, "jobs": []}
        for n, (image, inputs) in enumerate(jobs):
            image.save(tmp / f"image{n}.npz")
            inputs = np.asarray(inputs, np.int64)
            np.save(tmp / f"inputs{n}.npy", inputs.reshape(len(inputs), -1))
            spec["jobs"].append({"image": str(tmp / f"image{n}.npz"), "inputs": str(tmp / f"inputs{n}.npy"),
                                 "result": str(tmp / f"result{n}.npz")})
        (tmp / "jobs.json").write_text(json.dumps(spec))
        runner = get_runner("verilator")
        xml = runner.test(test_module="eie.cosim.session", hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                          build_dir=root / "obj", test_dir=tmp,
                          extra_env={"EIE_JOBS": str(tmp / "jobs.json"), "COCOTB_LOG_LEVEL": "WARNING",
                                     # numpy's BLAS threads would spin on the core the simulator needs
                                     "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
                          waves=bool(waves), log_file=tmp / "sim.log", results_xml=str(tmp / "results.xml"))
        _, failed = get_results(xml)
        results = [Path(j["result"]) for j in spec["jobs"]]
        if failed or not all(r.exists() for r in results):
            tail = (tmp / "sim.log").read_text()[-3000:] if (tmp / "sim.log").exists() else ""
            raise EieError(f"the simulation failed:\n{tail}")
        if waves:
            dumps = sorted(tmp.glob("dump.*")) + sorted((root / "obj").glob("dump.*"))
            if not dumps:
                raise EieError("the tracing simulator wrote no waveform")
            os.replace(dumps[0], waves)
        wall = time.perf_counter() - t0
        out = []
        for r in results:
            with np.load(r) as z:
                out.append(SimResult(z["outputs"], z["cycles"], z["layer_cycles"], z["pe_stats"],
                                     float(z["load_seconds"]), float(z["run_seconds"]),
                                     float(z["free_run_seconds"]), wall))
        return out
