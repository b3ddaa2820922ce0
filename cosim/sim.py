"""Host side of a co-simulation: build (or reuse) the simulator, hand it a job, collect what the chip did."""

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from eie.errors import EieError
from eie.sw.image import ChipImage
from eie.cosim.build import RAW_BINARY, build
from eie.cosim.hostport import ChipHost, SimResult
from eie.cosim.player import TESTBENCH, OpLayout, RecordingPort, ReplayPort, read_captures, run_sync

__all__ = ["SimResult", "simulate", "simulate_many", "simulate_task", "HARNESSES"]


def simulate(image, inputs, stats=False, waves=None, log=None, layer_cycles=None, harness="cocotb"):
    """Run `inputs` ((samples, cols) ints) through `image` on the Verilator-simulated chip.

    `stats` reads per-layer cycles and per-PE counters after every sample (`layer_cycles` alone is cheaper);
    `waves` is a path for a VCD waveform of the whole run (builds a tracing simulator).
    """
    return simulate_many([(image, inputs)], stats=stats, waves=waves, log=log, layer_cycles=layer_cycles,
                         harness=harness)[0]


def simulate_task(task):
    """One simulator start as a campaign task: (image, inputs) -> SimResult with per-layer cycles. A
    module-level function, so Dask workers can import it."""
    image, inputs = task
    return simulate(image, inputs, layer_cycles=True)


HARNESSES = ("cocotb", "raw")


def simulate_many(jobs, stats=False, waves=None, log=None, layer_cycles=None, gaps=None, harness="cocotb"):
    """Several (image, inputs) jobs for one chip configuration in one simulator start; one SimResult each.

    The host's work is recorded as a program that the testbench plays (`eie.cosim.player`): under cocotb
    (the co-simulation path) or, with ``harness="raw"``, under a bare C++ main, a benchmark instrument.
    `gaps`: a seed for random host timing (idle cycles between writes, a restart right after ``done``).
    """
    if not jobs:
        return []
    if harness not in HARNESSES:
        raise EieError(f"harness must be one of {', '.join(HARNESSES)}, not {harness!r}")
    config = jobs[0][0].config
    for image, _ in jobs:
        if not isinstance(image, ChipImage):
            raise TypeError(f"image must be a ChipImage, not {type(image).__name__}")
        if image.config != config:
            raise EieError("jobs of one simulation must share a chip configuration")
    jobs = [(image, np.asarray(x, np.int64).reshape(len(x), -1)) for image, x in jobs]
    layer_cycles = stats if layer_cycles is None else layer_cycles
    t0 = time.perf_counter()
    root = build(config, waves=bool(waves), log=log)

    def run_host(port):
        """Every job through ChipHost over `port`, with the same timing draws each time (record, replay)."""
        host = ChipHost(port, config, None if gaps is None else np.random.default_rng(gaps))
        return run_sync(host.run_jobs(jobs, layer_cycles, stats))

    with tempfile.TemporaryDirectory(prefix="eie-sim-") as tmp:
        tmp = Path(tmp)
        recorder = RecordingPort(OpLayout(config), bytearray())
        run_host(recorder)
        recorder.close()
        (tmp / "program.bin").write_bytes(recorder.program)
        plusargs = [f"+program={tmp / 'program.bin'}", f"+captures={tmp / 'captures.txt'}"]
        seconds = (_run_raw if harness == "raw" else _run_cocotb)(root, tmp, plusargs, waves)
        captures, sim_cycles = read_captures(tmp / "captures.txt")
        results = run_host(ReplayPort(captures))
        wall = time.perf_counter() - t0
        return [SimResult(sim_seconds=seconds, sim_cycles=sim_cycles, wall_seconds=wall, **r) for r in results]


def _failed(tmp, log_name, what):
    log = tmp / log_name
    tail = log.read_text()[-3000:] if log.exists() else ""
    return EieError(f"the {what} failed:\n{tail}")


def _run_cocotb(root, tmp, plusargs, waves):
    from cocotb_tools.runner import get_results, get_runner
    runner = get_runner("verilator")
    xml = runner.test(test_module="eie.cosim.session", hdl_toplevel=TESTBENCH, hdl_toplevel_lang="verilog",
                      build_dir=root / "obj", test_dir=tmp, plusargs=plusargs,
                      extra_env={"EIE_TIMING": str(tmp / "timing.json"), "COCOTB_LOG_LEVEL": "WARNING",
                                 # numpy's BLAS threads would spin on the core the simulator needs
                                 "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
                      waves=bool(waves), log_file=tmp / "sim.log", results_xml=str(tmp / "results.xml"))
    _, failed = get_results(xml)
    if failed or not (tmp / "timing.json").exists():
        raise _failed(tmp, "sim.log", "simulation")
    if waves:
        dumps = sorted(tmp.glob("dump.*")) + sorted((root / "obj").glob("dump.*"))
        if not dumps:
            raise EieError("the tracing simulator wrote no waveform")
        os.replace(dumps[0], waves)
    return json.loads((tmp / "timing.json").read_text())["seconds"]


def _run_raw(root, tmp, plusargs, waves):
    import subprocess
    if waves:
        raise EieError("the raw harness writes no waveform: use the cocotb harness for --waves")
    out = subprocess.run([str(root / RAW_BINARY), *plusargs], cwd=tmp, capture_output=True, text=True)
    (tmp / "raw.log").write_text(out.stdout + out.stderr)
    if out.returncode != 0:
        raise _failed(tmp, "raw.log", "raw harness")
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
