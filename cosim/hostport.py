"""The host's side of the chip, written once over a host port (as Glasgow's applets run over any interface).

`ChipHost` is the protocol: load a chip image word by word, write an input, pulse ``start``, wait for
``done``, read the outputs and the counters. It touches the chip only through a *port*, an object with

* ``drive(name, value)``: set host input ``name`` (``we``, ``target``, ``pe``, ``addr``, ``data``, ``rtarget``,
  ``raddr``, ``start``, ``n_layers``, and ``rst``); the chip registers it at the next rising clock edge;
* ``sample(name)``: the current value of host output ``name`` (``rdata``, ``cycles``);
* ``await step()``: one clock cycle, to the next moment inputs may change (just after the edge where the
  chip registers them);
* ``await run_until_done()``: let the chip run free until ``done`` rises, then `step` once.

`AmaranthPort` here runs it in Amaranth's own simulator (no Verilog, no Verilator build: small chips in
seconds, which is what the fast tests use). Under Verilator and cocotb the protocol is recorded as a program
that the testbench plays back and then replayed over the captured samples (`eie.cosim.player`), so no Python
runs per cycle. Whatever runs on one runs, cycle for cycle, on the other.
"""

from dataclasses import dataclass
import time

import numpy as np

from eie.hw.chip import RESET_CYCLES, ReadTarget, Target, layer_layout

__all__ = ["ChipHost", "AmaranthPort", "SimResult", "simulate_in_amaranth", "pack_lanes", "unpack_lanes", "HOST_INPUTS"]

HOST_INPUTS = ("we", "target", "pe", "addr", "data", "rtarget", "raddr", "start", "n_layers")


@dataclass
class SimResult:
    """What one simulator backend gives for one job (`eie.cosim.sim` under Verilator, `simulate_in_amaranth`)."""
    outputs: np.ndarray       # (samples, rows of the last layer) chip outputs
    cycles: np.ndarray        # (samples,) cycles from start to done
    layer_cycles: np.ndarray  # (samples, layers) when stats were asked for, else empty
    pe_stats: np.ndarray      # (samples, pes, 2) entries read and multiplies, when asked for
    sim_seconds: float        # the simulator's time for its whole start (every job, host traffic included)
    sim_cycles: int           # clock cycles the whole start simulated (loads, inputs, runs, reads)
    wall_seconds: float       # everything, build check and simulator start-up included

    @property
    def sim_cycles_per_s(self):
        """Simulation speed: every clock cycle of the start over the simulator's time."""
        return self.sim_cycles / self.sim_seconds if self.sim_seconds else 0.0


def pack_lanes(values, bits):
    """Signed values -> one integer, value k at bits k*bits (two's complement)."""
    if bits in (8, 16, 32, 64):    # the usual widths: through bytes, without a Python loop per lane
        return int.from_bytes(np.asarray(values, np.int64).astype(f"<u{bits // 8}").tobytes(), "little")
    mask = (1 << bits) - 1
    return sum((int(v) & mask) << (k * bits) for k, v in enumerate(values))


def unpack_lanes(word, n, bits):
    mask, half = (1 << bits) - 1, 1 << (bits - 1)
    return [((word >> (k * bits)) & mask) - ((word >> (k * bits) & mask) >= half) * (1 << bits) for k in range(n)]


class ChipHost:
    """The host protocol over `port` for a chip of `config`. With `gaps` (a numpy Generator), the host idles
    0-2 cycles at random before each write, as a slower or busier host would, and sometimes restarts a run the
    cycle after ``done``: nothing the chip computes may change."""

    def __init__(self, port, config, gaps=None):
        self.port = port
        self.config = config
        self.gaps = gaps
        self._layout = layer_layout(config)

    async def reset(self):
        """All host inputs low, ``rst`` for two cycles, then the cycles the reset synchronizer holds on."""
        for name in HOST_INPUTS:
            self.port.drive(name, 0)
        self.port.drive("rst", 1)
        await self.port.step()
        await self.port.step()
        self.port.drive("rst", 0)
        for _ in range(RESET_CYCLES):
            await self.port.step()

    async def write_many(self, target, words, pe=0, base=0):
        p = self.port
        p.drive("target", int(target))
        p.drive("pe", pe)
        for i, w in enumerate(words):
            await p.step()
            if self.gaps is not None:
                p.drive("we", 0)
                for _ in range(int(self.gaps.integers(0, 3))):
                    await p.step()
            p.drive("we", 1)
            p.drive("addr", base + i)
            p.drive("data", int(w))
        await p.step()
        p.drive("we", 0)

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
        p = self.port
        await p.step()
        p.drive("rtarget", int(rtarget))
        p.drive("raddr", addr)
        await p.step()   # the chip has registered the address,
        await p.step()   # read every source at it,
        await p.step()   # registered what each read,
        await p.step()   # and registered the one asked for
        return p.sample("rdata")

    async def run(self, x):
        """One input vector (ints) through every layer; returns (outputs, total cycles)."""
        c, p = self.config, self.port
        n = c.pes
        await self.write_many(Target.ACT0, [pack_lanes(x[i:i + n], c.act_bits) for i in range(0, len(x), n)])
        p.drive("n_layers", self.n_layers)
        # With gaps, a one-layer image (its input bank untouched) sometimes starts again the cycle after
        # ``done``: the second run must give what the first did.
        runs = 1 + (self.gaps is not None and self.n_layers == 1 and self.gaps.random() < 0.25)
        for _ in range(runs):
            p.drive("start", 1)
            await p.step()
            p.drive("start", 0)
            await p.run_until_done()
        cycles = p.sample("cycles")
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

    async def run_job(self, image, inputs, layer_cycles=False, pe_stats=False):
        """Load `image`, run every row of `inputs`; a dict of the chip's results (`SimResult`)."""
        await self.load(image)
        outputs, cycles, per_layer, stats = [], [], [], []
        for x in inputs:
            y, n = await self.run(x)
            outputs.append(y)
            cycles.append(n)
            if layer_cycles:
                per_layer.append(await self.layer_cycles())
            if pe_stats:
                stats.append(await self.pe_stats())
        return {"outputs": np.array(outputs, np.int64).reshape(len(inputs), -1),
                "cycles": np.array(cycles, np.int64), "layer_cycles": np.array(per_layer, np.int64),
                "pe_stats": np.array(stats, np.int64)}

    async def run_jobs(self, jobs, layer_cycles=False, pe_stats=False):
        """Reset, then each (image, inputs) job of this chip configuration back to back; one `run_job` dict each."""
        await self.reset()
        results = []
        for image, inputs in jobs:
            if image.config != self.config:
                raise ValueError("jobs of one simulation must share a chip configuration")
            results.append(await self.run_job(image, np.asarray(inputs, np.int64).reshape(len(inputs), -1),
                                              layer_cycles, pe_stats))
        return results


class AmaranthPort:
    """The chip's host port in Amaranth's simulator, from an async testbench's context `ctx`; counts the
    clock cycles it lets pass."""

    def __init__(self, ctx, chip, domain="host"):
        self.ctx, self.chip, self.domain = ctx, chip, domain
        self.cycles = 0

    def _signal(self, name):
        return self.chip.rst if name == "rst" else getattr(self.chip.host, name)

    def drive(self, name, value):
        self.ctx.set(self._signal(name), value)

    def sample(self, name):
        return int(self.ctx.get(self._signal(name)))

    async def step(self):
        await self.ctx.tick(self.domain)
        self.cycles += 1

    async def run_until_done(self):
        # ``done`` of the previous run falls once the chip sees ``start``; then wait for it to rise
        while self.sample("done"):
            await self.step()
        while not self.sample("done"):
            await self.step()


def _clocked(chip, domain):
    """A top level that clocks `chip` (which owns its clock domain) from a simulator clock domain."""
    from amaranth import ClockDomain, ClockSignal, Module
    m = Module()
    m.domains += ClockDomain(domain, reset_less=True)
    m.submodules.chip = chip
    m.d.comb += chip.clk.eq(ClockSignal(domain))
    return m


def simulate_in_amaranth(jobs, stats=False, gaps=None):
    """Several (image, inputs) jobs of one chip configuration through `ChipHost` in Amaranth's simulator, one
    after another without a reset; one `SimResult` each. Slow per cycle, but nothing to build:
    for small chips and fast tests. `gaps`: a seed for random host timing."""
    from amaranth.sim import Simulator
    from eie.hw.chip import Chip
    if not jobs:
        return []
    config = jobs[0][0].config
    t0 = time.perf_counter()
    chip = Chip(config)
    sim = Simulator(_clocked(chip, "host"))
    sim.add_clock(1e-8, domain="host")
    results, ports = [], []

    async def bench(ctx):
        ports.append(AmaranthPort(ctx, chip))
        host = ChipHost(ports[0], config, None if gaps is None else np.random.default_rng(gaps))
        results.extend(await host.run_jobs(jobs, layer_cycles=stats, pe_stats=stats))

    sim.add_testbench(bench)
    sim.run()
    wall = time.perf_counter() - t0
    return [SimResult(sim_seconds=wall, sim_cycles=ports[0].cycles, wall_seconds=wall, **r) for r in results]
